"""Typed, validated settings built from plain dicts (what an entry point's Hydra config becomes).

Entry points call ``OmegaConf.to_container(cfg, resolve=True)`` once and pass the dict here;
everything below them sees frozen dataclasses only. Every error is a ``ValueError`` whose
message names the offending field.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from scaling_search.scaling import Coefficients, Rounding


def _mapping(d: object, where: str) -> Mapping:
    if not isinstance(d, Mapping):
        raise ValueError(f"{where} must be a mapping, got {d!r}")
    return d


def _build(cls, d: object, where: str):
    """``cls(**d)`` that names unknown or missing fields instead of a TypeError."""
    d = _mapping(d, where)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(names))}")
    try:
        return cls(**d)
    except TypeError as e:
        raise ValueError(f"{where}: {e}") from None
    except ValueError as e:
        raise ValueError(f"{where}.{e}") from None


def coefficients_from(d: object, require_at_least_one: bool = True) -> Coefficients:
    """α, β, γ from ``{depth_coef, width_coef, resolution_coef}``."""
    coefficients = _build(Coefficients, d, "coefficients")
    if require_at_least_one:
        try:
            coefficients.require_at_least_one()
        except ValueError as e:
            raise ValueError(f"coefficients.{e}") from None
    return coefficients


def rounding_from(d: object) -> Rounding:
    return _build(Rounding, d, "rounding")


def _positive_int(value: object, name: str, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def import_plugins(modules: object) -> tuple[str, ...]:
    """Imports user modules (e.g. ones that call ``register_backbone``) named in ``imports``."""
    if modules is None:
        return ()
    if isinstance(modules, str) or not isinstance(modules, (list, tuple)):
        raise ValueError(f"imports must be a list of module names, got {modules!r}")
    for name in modules:
        try:
            importlib.import_module(str(name))
        except ImportError as e:
            raise ValueError(f"imports: cannot import {name!r} ({e}); is it on PYTHONPATH?") from None
    return tuple(str(m) for m in modules)


@dataclass(frozen=True)
class ScaleSettings:
    """Settings of ``python -m scaling_search.scale`` (Step-2 emission)."""

    backbone: str
    coefficients: Coefficients
    phis: tuple[float, ...]
    rounding: Rounding
    resolution_px: int | None
    num_classes: int
    out_dir: Path
    imports: tuple[str, ...] = ()
    compare_published: bool = True

    @classmethod
    def from_dict(cls, d: Mapping) -> ScaleSettings:
        d = dict(_mapping(d, "config"))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        imports = import_plugins(d.get("imports"))
        from scaling_search.backbones import get_backbone  # after plugins have registered

        backbone = d.get("backbone")
        if not isinstance(backbone, str):
            raise ValueError(f"backbone must be a registry name, got {backbone!r}")
        get_backbone(backbone)
        phis = d.get("phis")
        if isinstance(phis, (int, float)) and not isinstance(phis, bool):
            phis = [phis]
        if not isinstance(phis, (list, tuple)) or not phis:
            raise ValueError(f"phis must be a non-empty list of numbers, got {phis!r}")
        for phi in phis:
            if isinstance(phi, bool) or not isinstance(phi, (int, float)):
                raise ValueError(f"phis must be numbers, got {phi!r} in {phis!r}")
        out_dir = d.get("out_dir")
        if not out_dir or not isinstance(out_dir, str):
            raise ValueError(f"out_dir must be a folder path, got {out_dir!r}")
        return cls(
            backbone=backbone,
            coefficients=coefficients_from(d.get("coefficients")),
            phis=tuple(float(p) for p in phis),
            rounding=rounding_from(d.get("rounding", {})),
            resolution_px=_positive_int(d.get("resolution_px"), "resolution_px", optional=True),
            num_classes=_positive_int(d.get("num_classes", 1000), "num_classes"),
            out_dir=Path(out_dir).expanduser().resolve(),
            imports=imports,
            compare_published=bool(d.get("compare_published", True)),
        )
