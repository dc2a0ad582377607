"""The Step-1 search space: every (α, β, γ) on a grid that satisfies α·β²·γ² ≈ target.

Tan & Le, Section 3.3, Step 1: fix φ = 1, assume twice the resources are available, and do a
small grid search of α, β, γ under Eq. 3 (α·β²·γ² ≈ 2, α, β, γ ≥ 1).

Grid values and the constraint use exact rational arithmetic (``fractions.Fraction`` built from
the decimal text of each bound and step), so 1 + 18 × 0.05 is exactly 1.9, the boundary
``|product − target| ≤ tolerance`` is inclusive, and the default space (α ∈ [1, 2],
β, γ ∈ [1, 1.5], step 0.05, 2 ± 0.1) holds exactly 109 candidates, (1.9, 1, 1) and the
paper's (1.2, 1.1, 1.15) among them. A grid of more than ``MAX_GRID_POINTS`` is refused when
the space is built, its size counted from the ranges and the step, never by enumerating it.

Each candidate is then scaled (φ = 1 on the proxy baseline) and costed; candidates whose
rounded network and resolution are identical are merged into one, so nothing is trained twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

from scaling_search.models.backbones import ScaledModel, get_backbone
from scaling_search.models.cost import Cost
from scaling_search.models.scaling import REFERENCE_ROUNDING, Coefficients, Multipliers, Rounding

FilterOn = Literal["formula", "measured"]
# 40x the paper's grid of 2,541 points. Enumerating this many takes seconds; with
# filter_on=measured, costing them all takes about a minute.
MAX_GRID_POINTS = 100_000


def exact(value: float | int | str, name: str) -> Fraction:
    """The exact rational a config value means: ``0.05`` is 1/20, not 0.05000000000000000277."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        q = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    return q


@dataclass(frozen=True)
class SearchSpace:
    """Ranges, step and constraint of the grid; values are exact rationals.

    Attributes:
        depth_range, width_range, resolution_range: inclusive (low, high) bounds of α, β, γ.
        step: grid spacing, the same on every axis.
        target: the product α·β²·γ² aims at (2: cost about doubles per unit of φ).
        tolerance: keep candidates with |product − target| ≤ tolerance (inclusive).
        filter_on: ``formula`` applies the tolerance to α·β²·γ²; ``measured`` to the MACs of
            the rounded φ = 1 network over the baseline's.
    """

    depth_range: tuple[Fraction, Fraction] = (Fraction(1), Fraction(2))
    width_range: tuple[Fraction, Fraction] = (Fraction(1), Fraction(3, 2))
    resolution_range: tuple[Fraction, Fraction] = (Fraction(1), Fraction(3, 2))
    step: Fraction = Fraction(1, 20)
    target: Fraction = Fraction(2)
    tolerance: Fraction = Fraction(1, 10)
    filter_on: FilterOn = "formula"

    @classmethod
    def from_values(cls, depth_range: Sequence = (1, 2), width_range: Sequence = (1, 1.5),
                    resolution_range: Sequence = (1, 1.5), step: float | str = 0.05,
                    target: float | str = 2, tolerance: float | str = 0.1,
                    filter_on: str = "formula") -> SearchSpace:
        """Builds a space from config numbers, checking each one."""
        ranges = {}
        for name, r in (("depth_range", depth_range), ("width_range", width_range),
                        ("resolution_range", resolution_range)):
            if isinstance(r, (str, bytes)) or not isinstance(r, Sequence) or len(r) != 2:
                raise ValueError(f"space.{name} must be [low, high], got {r!r}")
            lo, hi = exact(r[0], f"space.{name}"), exact(r[1], f"space.{name}")
            if lo < 1 or hi < lo:
                raise ValueError(f"space.{name} must satisfy 1 <= low <= high, got {list(r)}")
            ranges[name] = (lo, hi)
        step_q = exact(step, "space.step")
        if step_q <= 0:
            raise ValueError(f"space.step must be > 0, got {step}")
        target_q, tol_q = exact(target, "space.target"), exact(tolerance, "space.tolerance")
        if target_q < 1:
            raise ValueError(f"space.target must be >= 1 (alpha, beta, gamma >= 1), got {target}")
        if tol_q < 0:
            raise ValueError(f"space.tolerance must be >= 0, got {tolerance}")
        if filter_on not in ("formula", "measured"):
            raise ValueError(f"space.filter_on must be 'formula' or 'measured', got {filter_on!r}")
        space = cls(**ranges, step=step_q, target=target_q, tolerance=tol_q, filter_on=filter_on)
        if space.size > MAX_GRID_POINTS:
            counts = " x ".join(f"{space.axis_length(r):,}" for r in space.ranges)
            raise ValueError(f"space.step={step} makes a grid of {counts} = {space.size:,} points "
                             f"(alpha x beta x gamma), over the limit of {MAX_GRID_POINTS:,}; "
                             "use a coarser space.step or narrower ranges")
        return space

    @property
    def ranges(self) -> tuple[tuple[Fraction, Fraction], ...]:
        return self.depth_range, self.width_range, self.resolution_range

    def axis_length(self, bounds: tuple[Fraction, Fraction]) -> int:
        """How many values ``axis(bounds)`` holds, counted without listing them."""
        lo, hi = bounds
        return math.floor((hi - lo) / self.step) + 1

    def axis(self, bounds: tuple[Fraction, Fraction]) -> list[Fraction]:
        """low, low + step, ... up to and including high when it lies on the grid."""
        return [bounds[0] + k * self.step for k in range(self.axis_length(bounds))]

    @property
    def size(self) -> int:
        """Grid points before the constraint."""
        return math.prod(self.axis_length(r) for r in self.ranges)

    @property
    def decimals(self) -> int:
        """Decimal places that print every grid value exactly (capped at 6)."""
        values = (self.step, self.depth_range[0], self.width_range[0], self.resolution_range[0])
        for places in range(7):
            if all((v * 10 ** places).denominator == 1 for v in values):
                return max(places, 2)
        return 6


def enumerate_grid(space: SearchSpace) -> Iterator[tuple[Fraction, Fraction, Fraction, Fraction]]:
    """Every (α, β, γ, α·β²·γ²) on the grid, constrained or not, in α, β, γ order."""
    for a in space.axis(space.depth_range):
        for b in space.axis(space.width_range):
            for g in space.axis(space.resolution_range):
                yield a, b, g, a * b * b * g * g


def enumerate_coefficients(space: SearchSpace) -> list[tuple[Fraction, Fraction, Fraction]]:
    """The (α, β, γ) whose formula product is within tolerance of the target (inclusive)."""
    return [(a, b, g) for a, b, g, p in enumerate_grid(space)
            if abs(p - space.target) <= space.tolerance]


def nearest_products(space: SearchSpace, n: int = 3) -> list[tuple[float, float, float, float]]:
    """The ``n`` grid points whose product is closest to the target (for an empty search)."""
    points = sorted(enumerate_grid(space), key=lambda t: (abs(t[3] - space.target), t[:3]))
    return [tuple(float(x) for x in t) for t in points[:n]]


@dataclass(frozen=True)
class Candidate:
    """One network to train in Step 1: coefficients at φ = 1 on the proxy baseline.

    Attributes:
        candidate_id: ``d1.20_w1.10_r1.15`` (α, β, γ), stable across runs.
        coefficients: α, β, γ as floats (nearest to the exact grid values).
        product: α·β²·γ², exact.
        model: the proxy baseline scaled by these coefficients, rounded.
        cost: its params, MACs and activations.
        macs_ratio: its MACs over the unscaled proxy baseline's (measured, after rounding).
        merged: ids of other grid points that round to this same network and resolution.
    """

    candidate_id: str
    coefficients: Coefficients
    product: Fraction
    model: ScaledModel
    cost: Cost
    macs_ratio: float
    merged: tuple[str, ...] = field(default=())

    def columns(self, role: str = "candidate") -> dict:
        """What a candidate's records, tables and plots carry beside each trial's outcome."""
        c, m = self.coefficients, self.model.multipliers
        return {"role": role, "depth_coef": c.depth_coef, "width_coef": c.width_coef,
                "resolution_coef": c.resolution_coef, "product": float(self.product),
                "depth_mult": m.depth_mult, "width_mult": m.width_mult, "resolution_mult": m.resolution_mult,
                "resolution_px": self.model.resolution_px, "params": self.cost.params, "macs": self.cost.macs,
                "activations": self.cost.activations, "macs_ratio": self.macs_ratio,
                "merged": ";".join(self.merged)}


def candidate_id(a: Fraction, b: Fraction, g: Fraction, decimals: int = 2) -> str:
    return f"d{float(a):.{decimals}f}_w{float(b):.{decimals}f}_r{float(g):.{decimals}f}"


def _structure_key(model: ScaledModel, num_classes: int) -> tuple:
    """Two candidates with equal keys build the same network at the same resolution."""
    if model.network is not None:
        net = model.network
        return (net.architecture(), net.dropout, net.drop_path, net.in_channels)
    module = model.build(num_classes, device="meta")
    return (tuple((k, tuple(v.shape)) for k, v in module.state_dict().items()), model.resolution_px)


def build_candidates(space: SearchSpace, backbone: str, base: Multipliers = Multipliers(),
                     resolution_px: int | None = None, rounding: Rounding = REFERENCE_ROUNDING,
                     num_classes: int = 10) -> tuple[list[Candidate], Cost]:
    """The constrained, costed, de-duplicated candidates, and the baseline's cost.

    Args:
        space: the grid and constraint.
        backbone: registry name.
        base: multipliers of the proxy baseline (all 1: the backbone itself, as in the paper).
        resolution_px: baseline resolution; None = the backbone's own.

    Raises:
        ValueError: no candidate satisfies the constraint; the message shows the nearest products.
    """
    bb = get_backbone(backbone)

    def scaled(a: float, b: float, g: float) -> ScaledModel:
        return bb.scale(base * Multipliers(a, b, g), rounding, resolution_px)

    base_cost = scaled(1.0, 1.0, 1.0).cost(num_classes)
    points = (enumerate_coefficients(space) if space.filter_on == "formula"
              else [(a, b, g) for a, b, g, _ in enumerate_grid(space)])
    by_structure: dict[tuple, list[Candidate]] = {}
    for a, b, g in points:
        model = scaled(float(a), float(b), float(g))
        cost = model.cost(num_classes)
        ratio = cost.macs / base_cost.macs
        if space.filter_on == "measured" and abs(Fraction(ratio) - space.target) > space.tolerance:
            continue
        c = Candidate(candidate_id(a, b, g, space.decimals),
                      Coefficients(float(a), float(b), float(g)), a * b * b * g * g, model, cost, ratio)
        by_structure.setdefault(_structure_key(model, num_classes), []).append(c)
    if not by_structure:
        near = ", ".join(f"{p:.4g} at (alpha={a:g}, beta={b:g}, gamma={g:g})"
                         for a, b, g, p in nearest_products(space))
        what = "alpha*beta^2*gamma^2" if space.filter_on == "formula" else "the measured MACs ratio"
        raise ValueError(
            f"no candidate has {what} within {float(space.tolerance):g} of {float(space.target):g} "
            f"on this grid; nearest products: {near}; widen space.tolerance or refine space.step")
    candidates = []
    for group in by_structure.values():
        # Keep the grid point whose formula product is nearest the target; list the others.
        group.sort(key=lambda c: (abs(c.product - space.target), c.candidate_id))
        keep = group[0]
        merged = tuple(sorted(c.candidate_id for c in group[1:]))
        candidates.append(Candidate(keep.candidate_id, keep.coefficients, keep.product, keep.model,
                                    keep.cost, keep.macs_ratio, merged))
    candidates.sort(key=lambda c: c.candidate_id)
    return candidates, base_cost
