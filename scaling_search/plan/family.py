"""Step 2's training plan: the compound-scaled family and single-dimension baselines at equal cost.

The paper's claim (Tan & Le, Figure 3, Figure 8 and Table 3) is that scaling depth, width and
resolution together beats scaling any one of them to the same multiply-adds. So for each φ the
plan holds the compound member (depth α^φ, width β^φ, resolution γ^φ on a base network) and,
for each of depth, width and resolution alone, the network whose *measured* MACs come closest
to the compound member's. Matching is on measured cost, after channel, repeat and pixel
rounding, because the formula's 2^φ is not what rounded networks cost (see experiments/).

The cost of a network is a non-decreasing step function of one multiplier, so the match is a
bisection in log-space down to the step where the cost crosses the target; of the networks on
either side of that step, the closer one (in log MACs) is kept and its mismatch is reported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from scaling_search.models.backbones import ScaledModel, get_backbone
from scaling_search.models.cost import Cost
from scaling_search.models.scaling import REFERENCE_ROUNDING, Coefficients, Multipliers, Rounding

COMPOUND = "compound"
DIMENSIONS = ("depth", "width", "resolution")
METHODS = (COMPOUND, *DIMENSIONS)
MAX_SCALE = 2.0**16  # a dimension that cannot reach the target below this never will
BISECTION_STEPS = 48


@dataclass(frozen=True)
class Member:
    """One network of Step 2: a member of the compound family, or a baseline matched to one.

    The one member type of Step 2: what is emitted as a config (``plan.emit``) and what is
    trained (``steps.step2``) are both lists of these.

    Attributes:
        member_id: ``compound_phi2``, ``width_phi2``, ``depth_phim1`` (safe as a file name).
        method: ``compound`` or the one dimension scaled (``depth``, ``width``, ``resolution``).
        phi: the compound φ this member is compared at (φ = 0 is the base network).
        scale: multipliers over the base network (compound: α^φ, β^φ, γ^φ; one dimension:
            that dimension's factor, 1 for the others).
        model: the base scaled by ``scale``, rounded.
        cost: its params, MACs and activations.
        macs_ratio: its MACs over the base network's.
        target_macs: the compound member's MACs at this φ (what a baseline is matched to).
        formula_macs_ratio: (α·β²·γ²)^φ, the cost growth the formula promises at this φ.
    """

    member_id: str
    method: str
    phi: float
    scale: Multipliers
    model: ScaledModel
    cost: Cost
    macs_ratio: float
    target_macs: int
    formula_macs_ratio: float

    @property
    def macs_mismatch(self) -> float:
        """MACs over the target, minus 1 (0 for compound members)."""
        return self.cost.macs / self.target_macs - 1.0

    @property
    def config_name(self) -> str:
        """The emitted config's name: ``efficientnet_b0_phi1`` (compound), ``resnet50_width_phi2``."""
        prefix = self.model.backbone if self.method == COMPOUND else f"{self.model.backbone}_{self.method}"
        return f"{prefix}_{phi_tag(self.phi)}"

    def per_phi_coefficients(self, coefficients: Coefficients) -> Coefficients:
        """The (α, β, γ) that reach this member at its φ: the run's own for compound members;
        for a one-dimension member, that dimension's factor^(1/φ) and 1 for the others."""
        if self.method == COMPOUND or self.phi == 0:
            return coefficients
        s = self.scale
        return Coefficients(s.depth_mult ** (1 / self.phi), s.width_mult ** (1 / self.phi),
                            s.resolution_mult ** (1 / self.phi))

    def columns(self) -> dict:
        """What a member's records, tables and plots carry (``role`` is its method)."""
        m = self.model.multipliers
        return {"candidate_id": self.member_id, "role": self.method, "phi": self.phi,
                "depth_scale": self.scale.depth_mult, "width_scale": self.scale.width_mult,
                "resolution_scale": self.scale.resolution_mult, "resolution_px": self.model.resolution_px,
                "params": self.cost.params, "macs": self.cost.macs, "activations": self.cost.activations,
                "macs_ratio": self.macs_ratio, "target_macs": self.target_macs,
                "macs_mismatch": self.macs_mismatch, "formula_macs_ratio": self.formula_macs_ratio,
                "depth_mult": m.depth_mult, "width_mult": m.width_mult, "resolution_mult": m.resolution_mult}


def phi_tag(phi: float) -> str:
    """``phi1``, ``phi0p5``, ``phim1``: φ in a file name."""
    return f"phi{phi:g}".replace(".", "p").replace("-", "m")


def member_id(method: str, phi: float) -> str:
    return f"{method}_{phi_tag(phi)}"


def _along(dimension: str, factor: float) -> Multipliers:
    return Multipliers(**{f"{dimension}_mult": factor})


def match_macs(backbone: str, dimension: str, target_macs: int, base: Multipliers = Multipliers(),
               resolution_px: int | None = None, rounding: Rounding = REFERENCE_ROUNDING,
               num_classes: int = 1000) -> tuple[float, ScaledModel, Cost]:
    """The factor along one ``dimension`` whose rounded network's MACs are closest to the target.

    Returns:
        (factor over the base, the scaled model, its cost).

    Raises:
        ValueError: if scaling this dimension alone cannot reach the target (a builder
            backbone that ignores ``depth_mult``, say).
    """
    if dimension not in DIMENSIONS:
        raise ValueError(f"dimension must be one of {', '.join(DIMENSIONS)}, got {dimension!r}")
    bb = get_backbone(backbone)
    cache: dict[float, tuple[ScaledModel, Cost]] = {}

    def at(factor: float) -> tuple[ScaledModel, Cost]:
        if factor not in cache:
            model = bb.scale(base * _along(dimension, factor), rounding, resolution_px)
            cache[factor] = (model, model.cost(num_classes))
        return cache[factor]

    if at(1.0)[1].macs == target_macs:
        return (1.0, *at(1.0))
    up = at(1.0)[1].macs < target_macs
    lo = hi = 1.0
    while (at(hi)[1].macs < target_macs) if up else (at(lo)[1].macs > target_macs):
        if up:
            lo, hi = hi, hi * 2
        else:
            hi, lo = lo, lo / 2
        if hi > MAX_SCALE or lo < 1 / MAX_SCALE:
            raise ValueError(f"{backbone}: scaling {dimension} alone does not reach {target_macs:,} "
                             f"MACs (is {dimension}_mult used by this backbone?); leave {dimension!r} "
                             "out of baselines")
    for _ in range(BISECTION_STEPS):  # invariant: macs(lo) < target <= macs(hi)
        mid = math.sqrt(lo * hi)
        if at(mid)[1].macs < target_macs:
            lo = mid
        else:
            hi = mid
    candidates = [f for f in (lo, hi) if at(f)[1].macs > 0]
    best = min(candidates, key=lambda f: (abs(math.log(at(f)[1].macs / target_macs)), f))
    return (best, *at(best))


def plan_family(backbone: str, coefficients: Coefficients, phis: Sequence[float],
                baselines: Sequence[str] = DIMENSIONS, base: Multipliers = Multipliers(),
                resolution_px: int | None = None, rounding: Rounding = REFERENCE_ROUNDING,
                num_classes: int = 1000) -> list[Member]:
    """The compound member at each φ and, for φ ≠ 0, each of ``baselines`` matched to its MACs.

    ``baselines=()`` gives the compound family alone (what ``scale`` emits without training).
    Members come ordered by φ (duplicates dropped), then by method (compound, depth, width,
    resolution).
    """
    if not len(phis):
        raise ValueError("phis is empty; give at least one phi, e.g. phis=[1,2,3]")
    if not all(math.isfinite(float(p)) for p in phis):
        raise ValueError(f"phis must be finite numbers, got {list(phis)}")
    unknown = [b for b in baselines if b not in DIMENSIONS]
    if unknown:
        raise ValueError(f"baselines must be among {', '.join(DIMENSIONS)}, got {', '.join(map(str, unknown))}")
    bb = get_backbone(backbone)
    base_macs = bb.scale(base, rounding, resolution_px).cost(num_classes).macs
    members = []
    for phi in sorted({float(p) for p in phis}):
        scale = coefficients.multipliers(phi)
        model = bb.scale(base * scale, rounding, resolution_px)
        cost = model.cost(num_classes)
        formula = coefficients.formula_macs_ratio(phi)
        members.append(Member(member_id(COMPOUND, phi), COMPOUND, phi, scale, model, cost,
                              cost.macs / base_macs, cost.macs, formula))
        if phi == 0:
            continue  # every method's φ = 0 is the base network itself
        for dim in DIMENSIONS:
            if dim not in baselines:
                continue
            factor, single, single_cost = match_macs(backbone, dim, cost.macs, base, resolution_px,
                                                     rounding, num_classes)
            members.append(Member(member_id(dim, phi), dim, phi, _along(dim, factor), single,
                                  single_cost, single_cost.macs / base_macs, cost.macs, formula))
    return members
