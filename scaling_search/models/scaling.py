"""Compound-scaling coefficients, multipliers at φ, and the rounding rules (one place).

Implements Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
Networks" (arXiv:1905.11946), Section 3.3, Eq. 3: depth d = α^φ, width w = β^φ and
resolution r = γ^φ, with α·β²·γ² ≈ 2 so that multiply-adds grow about 2^φ.

The rounding rules reproduce the authors' TensorFlow reference (tensorflow/tpu,
``efficientnet_model.round_filters`` / ``round_repeats``): channels go to a multiple of 8 and
never more than 10% below the exact value; stage repeats go up (ceil). Every part of the
project rounds through the functions below and nowhere else.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

RepeatRounding = Literal["ceil", "round"]
ResolutionRounding = Literal["nearest", "floor", "ceil"]


def _check_finite(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _validate_positive(obj: object, names: tuple[str, ...]) -> None:
    """Checks each named field of a frozen dataclass is a finite number > 0; stores floats."""
    for name in names:
        value = _check_finite(name, getattr(obj, name))
        if value <= 0:
            raise ValueError(f"{name} must be > 0, got {value}")
        object.__setattr__(obj, name, value)


@dataclass(frozen=True)
class Coefficients:
    """The per-dimension bases of compound scaling.

    Attributes:
        depth_coef: α, the depth base (layers multiply by α^φ).
        width_coef: β, the width base (channels multiply by β^φ).
        resolution_coef: γ, the resolution base (pixels per side multiply by γ^φ).
    """

    depth_coef: float
    width_coef: float
    resolution_coef: float

    def __post_init__(self) -> None:
        _validate_positive(self, ("depth_coef", "width_coef", "resolution_coef"))

    @property
    def product(self) -> float:
        """α·β²·γ²: the formula's multiply-add growth per unit of φ."""
        return self.depth_coef * self.width_coef**2 * self.resolution_coef**2

    def require_at_least_one(self) -> Coefficients:
        """Checks α, β, γ ≥ 1, as the paper's Step-1 search requires; returns self."""
        for name in ("depth_coef", "width_coef", "resolution_coef"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"{name} must be >= 1 for compound scaling, got {getattr(self, name)}"
                )
        return self

    def formula_macs_ratio(self, phi: float) -> float:
        """(α·β²·γ²)^φ: the cost growth the formula promises, before any rounding."""
        return self.product ** _check_finite("phi", phi)

    def multipliers(self, phi: float) -> Multipliers:
        """Depth, width and resolution multipliers at φ (any real; negative scales down)."""
        phi = _check_finite("phi", phi)
        return Multipliers(
            depth_mult=self.depth_coef**phi,
            width_mult=self.width_coef**phi,
            resolution_mult=self.resolution_coef**phi,
        )

    def implied_phi(self, multipliers: Multipliers) -> dict[str, float]:
        """The φ that would produce each of the given multipliers, one per dimension.

        A dimension whose base is 1 implies no φ (NaN) unless its multiplier is also 1 (φ = 0).
        """
        out = {}
        for dim, coef, mult in (
            ("depth", self.depth_coef, multipliers.depth_mult),
            ("width", self.width_coef, multipliers.width_mult),
            ("resolution", self.resolution_coef, multipliers.resolution_mult),
        ):
            if coef == 1.0:
                out[dim] = 0.0 if mult == 1.0 else math.nan
            else:
                out[dim] = math.log(mult) / math.log(coef)
        return out


# The coefficients the paper's Step-1 grid search found (Section 4.2).
PAPER_COEFFICIENTS = Coefficients(depth_coef=1.2, width_coef=1.1, resolution_coef=1.15)


@dataclass(frozen=True)
class Multipliers:
    """Depth, width and resolution multipliers applied to a baseline network."""

    depth_mult: float = 1.0
    width_mult: float = 1.0
    resolution_mult: float = 1.0

    def __post_init__(self) -> None:
        _validate_positive(self, ("depth_mult", "width_mult", "resolution_mult"))

    def __mul__(self, other: Multipliers) -> Multipliers:
        """Both applied in turn, dimension by dimension: a scale on top of a base network."""
        if not isinstance(other, Multipliers):
            return NotImplemented
        return Multipliers(self.depth_mult * other.depth_mult, self.width_mult * other.width_mult,
                           self.resolution_mult * other.resolution_mult)


@dataclass(frozen=True)
class Rounding:
    """How exact multipliers become integer channels, repeats and pixels.

    Defaults reproduce the TF reference. ``channel_divisor=1, channel_min=1,
    channel_min_fraction=0`` gives plain rounding to the nearest integer.

    Attributes:
        channel_divisor: channels are rounded to a multiple of this.
        channel_min: smallest channel count allowed; None means ``channel_divisor``.
        channel_min_fraction: if rounding lands below this fraction of the exact value, add
            one more divisor (the reference's "never more than 10% below").
        repeats: "ceil" (reference) or "round" (to nearest, halves up).
        resolution: "nearest", "floor" or "ceil" to a multiple of ``resolution_divisor``.
        resolution_divisor: pixels per side are rounded to a multiple of this.
    """

    channel_divisor: int = 8
    channel_min: int | None = None
    channel_min_fraction: float = 0.9
    repeats: RepeatRounding = "ceil"
    resolution: ResolutionRounding = "nearest"
    resolution_divisor: int = 1

    def __post_init__(self) -> None:
        if int(self.channel_divisor) != self.channel_divisor or self.channel_divisor < 1:
            raise ValueError(f"channel_divisor must be a positive integer, got {self.channel_divisor}")
        if self.channel_min is not None and self.channel_min < 0:
            raise ValueError(f"channel_min must be >= 0, got {self.channel_min}")
        if not 0 <= self.channel_min_fraction < 1:
            raise ValueError(
                f"channel_min_fraction must be in [0, 1), got {self.channel_min_fraction}"
            )
        if self.repeats not in ("ceil", "round"):
            raise ValueError(f"repeats rounding must be 'ceil' or 'round', got {self.repeats!r}")
        if self.resolution not in ("nearest", "floor", "ceil"):
            raise ValueError(
                f"resolution rounding must be 'nearest', 'floor' or 'ceil', got {self.resolution!r}"
            )
        if int(self.resolution_divisor) != self.resolution_divisor or self.resolution_divisor < 1:
            raise ValueError(
                f"resolution_divisor must be a positive integer, got {self.resolution_divisor}"
            )

    def channels(self, channels: float) -> int:
        """Rounds an exact channel count: the reference's ``round_filters``.

        ``max(min, int(c + d/2) // d * d)``, plus ``d`` if that fell below 90% of ``c``.
        """
        d = self.channel_divisor
        floor = d if self.channel_min is None else self.channel_min
        rounded = max(floor, int(channels + d / 2) // d * d)
        if rounded < self.channel_min_fraction * channels:
            rounded += d
        return int(rounded)

    def repeats_of(self, repeats: float) -> int:
        """Rounds an exact number of block repeats (the reference's ``round_repeats``)."""
        if self.repeats == "ceil":
            # A tolerance keeps 3 * 1.1**0 style float noise from adding a layer.
            return int(math.ceil(repeats - 1e-9))
        return int(math.floor(repeats + 0.5))

    def resolution_of(self, resolution_px: float) -> int:
        """Rounds an exact resolution (pixels per side) to a multiple of the divisor."""
        q = resolution_px / self.resolution_divisor
        if self.resolution == "nearest":
            q = math.floor(q + 0.5)
        elif self.resolution == "floor":
            q = math.floor(q + 1e-9)
        else:
            q = math.ceil(q - 1e-9)
        return int(q) * self.resolution_divisor


REFERENCE_ROUNDING = Rounding()
