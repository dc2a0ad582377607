"""The published EfficientNet family (B0–B7 and beyond) as data, and as scaled models.

Source: ``efficientnet_reference.json``, a copy of the project's reference facts: the
coefficients of the authors' TF reference (``efficientnet_builder.efficientnet_params``) and
Table 2 of Tan & Le (arXiv:1905.11946). The published family is *not* α^φ, β^φ, 224·γ^φ:
each model's depth, width and resolution were set by hand, so each implies a different φ
in each dimension (see ``implied_phi``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

from scaling_search.models.backbones import ScaledModel, get_backbone
from scaling_search.models.scaling import Coefficients, Multipliers

BASELINE = "efficientnet_b0"
_SUFFIX = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9}


@cache
def load_reference() -> dict:
    """The reference facts as a dict (parsed once)."""
    text = resources.files("scaling_search.models").joinpath("efficientnet_reference.json").read_text()
    return json.loads(text)


def parse_count(text: str | None) -> float | None:
    """'0.39B' → 3.9e8, '5.3M' → 5.3e6; None stays None."""
    if text is None:
        return None
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMBG]?)\s*", str(text))
    if not m:
        raise ValueError(f"cannot parse a count from {text!r}")
    return float(m.group(1)) * _SUFFIX.get(m.group(2), 1.0)


@dataclass(frozen=True)
class PublishedModel:
    """One published EfficientNet: its coefficients and, for B0–B7, its Table 2 row."""

    name: str  # "b0" .. "b7", "b8", "l2"
    depth_coef: float
    width_coef: float
    resolution_px: int
    dropout: float
    stage_channels: tuple[int, ...]
    stage_repeats: tuple[int, ...]
    stem_channels: int
    head_channels: int
    top1: float | None = None
    params: float | None = None  # Table 2, as published (e.g. 5.3e6)
    macs: float | None = None  # Table 2 "FLOPs" (multiply-adds), as published

    @property
    def multipliers(self) -> Multipliers:
        base = get_backbone(BASELINE).table.resolution_px
        return Multipliers(self.depth_coef, self.width_coef, self.resolution_px / base)

    def scaled(self) -> ScaledModel:
        """B0's stage table scaled with this model's published coefficients."""
        return get_backbone(BASELINE).scale(self.multipliers)

    def implied_phi(self, coefficients: Coefficients) -> dict[str, float]:
        """The φ this model implies in each dimension under the given α, β, γ."""
        return coefficients.implied_phi(self.multipliers)


def published_efficientnets() -> list[PublishedModel]:
    """B0, B1, …, in published order, with Table 2 numbers where the paper gives them."""
    ref = load_reference()
    table2 = {row["model"].removeprefix("EfficientNet-").lower(): row for row in ref["table2"]}
    out = []
    for name, c in ref["official_coefficients"].items():
        row = table2.get(name, {})
        out.append(PublishedModel(
            name=name,
            depth_coef=c["depth_coefficient"],
            width_coef=c["width_coefficient"],
            resolution_px=c["resolution"],
            dropout=c["dropout_rate"],
            stage_channels=tuple(c["stage_out_channels"]),
            stage_repeats=tuple(c["stage_repeats"]),
            stem_channels=c["stem_channels"],
            head_channels=c["head_channels"],
            top1=row.get("top1"),
            params=parse_count(row.get("params")),
            macs=parse_count(row.get("flops")),
        ))
    return out
