"""The backbone registry, and the protocol for a backbone the project does not ship.

A backbone is registered in one of two ways:

1. **A stage table** (``StageTable``) built from the block kinds of ``stages.py``. Everything
   then works: scaling, building, and the analytic cost that needs no module.
2. **A builder** ``(depth_mult, width_mult, num_classes) -> nn.Module``, for any network
   (e.g. a torchvision model). The builder owns how multipliers become layers and channels;
   the cost is counted on the module built on the meta device, and resolution scaling is
   applied to the input the registry records for it.

>>> @register_backbone("my_net", resolution_px=224)
... def my_net(depth_mult, width_mult, num_classes): ...
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scaling_search.models.cost import Cost, count_cost, estimate_cost
from scaling_search.models.scaling import REFERENCE_ROUNDING, Multipliers, Rounding
from scaling_search.models.stages import ScaledNetwork, StageTable, scale_resolution, scale_table

if TYPE_CHECKING:
    import torch
    from torch import nn

# torch is imported where a module is built, not here: scaling, the analytic cost and the apps'
# checks of their input (bad input answered in about a second, not after torch's import) need none.
Builder = Callable[[float, float, int], "nn.Module"]


@dataclass(frozen=True)
class ScaledModel:
    """A backbone at given multipliers: what to build, at which resolution, and its cost.

    Attributes:
        backbone: registry name of the baseline.
        multipliers: depth, width and resolution multipliers applied to it.
        resolution_px: input pixels per side after rounding.
        network: the scaled stage table; None for a builder-registered backbone.
    """

    backbone: str
    multipliers: Multipliers
    resolution_px: int
    network: ScaledNetwork | None
    builder: Builder | None = None
    in_channels: int = 3

    def build(self, num_classes: int = 1000, device: torch.device | str | None = None,
              zero_init_residual: bool = True) -> nn.Module:
        """Builds the module; ``device="meta"`` allocates nothing. ``zero_init_residual`` starts
        each residual block of a stage-table network as the identity (a builder owns its init)."""
        import torch

        from scaling_search.models.network import build_network

        if self.network is not None:
            return build_network(self.network, num_classes, device, zero_init_residual)
        with torch.device(device) if device is not None else nullcontext():
            return self.builder(self.multipliers.depth_mult, self.multipliers.width_mult,
                                num_classes)

    def estimate_cost(self, num_classes: int = 1000) -> Cost | None:
        """Analytic cost from the stage table; None for a builder-registered backbone."""
        return estimate_cost(self.network, num_classes) if self.network is not None else None

    def count_cost(self, num_classes: int = 1000) -> Cost:
        """Cost counted on the module built on the meta device."""
        return count_cost(self.build(num_classes, device="meta"), self.resolution_px,
                          self.in_channels)

    def cost(self, num_classes: int = 1000) -> Cost:
        """The analytic cost where a stage table exists (fast), else the counted one."""
        estimate = self.estimate_cost(num_classes)
        return estimate if estimate is not None else self.count_cost(num_classes)


@dataclass(frozen=True)
class Backbone:
    """A registered baseline: a stage table, or a builder with its base resolution."""

    name: str
    table: StageTable | None = None
    builder: Builder | None = None
    resolution_px: int = 224
    in_channels: int = 3

    def scale(self, multipliers: Multipliers = Multipliers(),
              rounding: Rounding = REFERENCE_ROUNDING,
              resolution_px: int | None = None) -> ScaledModel:
        """Applies the multipliers; ``resolution_px`` overrides the baseline resolution."""
        if self.table is not None:
            net = scale_table(self.table, multipliers, rounding, resolution_px)
            return ScaledModel(self.name, multipliers, net.resolution_px, net,
                               in_channels=self.in_channels)
        px = scale_resolution(self.resolution_px if resolution_px is None else resolution_px,
                              multipliers, rounding)
        return ScaledModel(self.name, multipliers, px, None, self.builder, self.in_channels)


_REGISTRY: dict[str, Backbone] = {}


def register_backbone(table_or_name: StageTable | str, *, builder: Builder | None = None,
                      resolution_px: int = 224, in_channels: int = 3, overwrite: bool = False):
    """Registers a backbone by stage table, or a builder function by name.

    ``register_backbone(table)`` registers a ``StageTable`` under ``table.name``.
    ``register_backbone("name", builder=fn)`` registers a builder; without ``builder`` it
    returns a decorator, so ``@register_backbone("name")`` works on the function.

    Returns:
        The registered ``Backbone`` (or, as a decorator, the function unchanged).
    """
    if isinstance(table_or_name, StageTable):
        return _add(Backbone(table_or_name.name, table=table_or_name,
                             resolution_px=table_or_name.resolution_px,
                             in_channels=table_or_name.in_channels), overwrite)
    name = table_or_name
    if builder is None:
        def decorator(fn: Builder) -> Builder:
            register_backbone(name, builder=fn, resolution_px=resolution_px,
                              in_channels=in_channels, overwrite=overwrite)
            return fn
        return decorator
    if not callable(builder):
        raise ValueError(f"builder for backbone {name!r} must be callable, got {builder!r}")
    return _add(Backbone(name, builder=builder, resolution_px=resolution_px,
                         in_channels=in_channels), overwrite)


def _add(backbone: Backbone, overwrite: bool) -> Backbone:
    if not backbone.name or not backbone.name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"backbone name must be letters, digits, '_' or '-'; got {backbone.name!r}")
    if backbone.name in _REGISTRY and not overwrite:
        raise ValueError(f"backbone {backbone.name!r} is already registered; "
                         "pass overwrite=True to replace it")
    _REGISTRY[backbone.name] = backbone
    return backbone


def get_backbone(name: str) -> Backbone:
    """The registered backbone called ``name``; the error lists the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(list_backbones())}") from None


def list_backbones() -> list[str]:
    return sorted(_REGISTRY)


def unregister_backbone(name: str) -> None:
    """Removes a backbone (for tests and interactive sessions)."""
    _REGISTRY.pop(name, None)


def import_plugins(modules: object) -> tuple[str, ...]:
    """Imports user modules (e.g. ones that call ``register_backbone``) named in ``imports``."""
    if modules is None:
        return ()
    if isinstance(modules, str) or not isinstance(modules, (list, tuple)):
        raise ValueError(f"imports must be a list of module names, got {modules!r}")
    for name in modules:
        try:
            importlib.import_module(str(name))
        except ModuleNotFoundError as e:
            if e.name is not None and str(name).startswith(e.name):  # the plugin itself, not one it imports
                raise ValueError(f"imports: cannot import {name!r} ({e}); is it on PYTHONPATH?") from None
            raise ValueError(f"imports: {name!r} failed while importing ({e}); fix the module") from None
        except SyntaxError as e:
            raise ValueError(f"imports: {name!r} has a syntax error ({e.msg}, {e.filename} line {e.lineno}); "
                             "fix the module") from None
        except SystemExit as e:  # a plugin must not end the app: its exit status would be taken as ours
            raise ValueError(f"imports: {name!r} called sys.exit({e.code!r}) while importing; a plugin "
                             "module must only define and register") from None
        except Exception as e:  # noqa: BLE001 - the user's code: one line naming it, no traceback
            raise ValueError(f"imports: {name!r} failed while importing ({type(e).__name__}: {e}); "
                             "fix the module") from None
    return tuple(str(m) for m in modules)
