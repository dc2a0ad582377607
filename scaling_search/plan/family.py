"""Step 2's training plan: the compound-scaled family and other scaling rules at equal cost.

The paper's claim (Tan & Le, Figure 3, Figure 8 and Table 3) is that scaling depth, width and
resolution together beats scaling any one of them to the same multiply-adds. So for each φ the
plan holds the compound member (depth α^φ, width β^φ, resolution γ^φ on a base network) and,
for each scaling rule it is compared with (``plan.rules``: depth, width or resolution alone,
pycls's ``fast``, ``uniform``, a user's split, with or without a resolution cap), the network
of that rule whose *measured* MACs come closest to the compound member's. Matching is on
measured cost, after channel, repeat and pixel rounding, because the formula's 2^φ is not what
rounded networks cost (see experiments/).

The cost of a network is a non-decreasing step function of the rule's growth, so the match is a
bisection in log-space down to the step where the cost crosses the target; of the networks on
either side of that step, the closer one (in log MACs) is kept and its mismatch is reported.
Every rule goes through the same bisection, on the factor of its fastest-growing dimension: for
a single-dimension rule that is the factor along its dimension (``match_macs``), bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from scaling_search.models.backbones import ScaledModel, get_backbone
from scaling_search.models.cost import Cost
from scaling_search.models.scaling import REFERENCE_ROUNDING, Coefficients, Multipliers, Rounding
from scaling_search.plan.rules import COMPOUND, DIMENSIONS, Regularisation, ScalingRule, parse_rule

METHODS = (COMPOUND, *DIMENSIONS)  # the order of the paper's methods in tables; other rules follow
MAX_SCALE = 2.0**16  # a dimension that cannot reach the target below this never will
BISECTION_STEPS = 48


@dataclass(frozen=True)
class Member:
    """One network of Step 2: a member of the compound family, or another rule's matched to one.

    The one member type of Step 2: what is emitted as a config (``plan.emit``) and what is
    trained (``steps.step2``) are both lists of these.

    Attributes:
        member_id: ``compound_phi2``, ``width_phi2``, ``depth_phim1`` (safe as a file name).
        method: ``compound`` or the scaling rule's name (``depth``, ``width``, ``resolution``,
            ``fast``, ``uniform``, ``d1_w8_r1``, ``fast_max480``...).
        phi: the compound φ this member is compared at (φ = 0 is the base network).
        scale: multipliers over the base network (compound: α^φ, β^φ, γ^φ; another rule: its
            split of the cost factor that matches the compound member's MACs).
        model: the base scaled by ``scale``, rounded, its dropout (and drop-path) set by the
            plan's regularisation for this φ's cost.
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
        for another rule's, each dimension's factor^(1/φ) (1 for a dimension it does not grow)."""
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
                "depth_mult": m.depth_mult, "width_mult": m.width_mult, "resolution_mult": m.resolution_mult,
                "dropout": net.dropout if (net := self.model.network) is not None else None,
                "drop_path": net.drop_path if net is not None else None}


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
    return _bisect(lambda f: bb.scale(base * _along(dimension, f), rounding, resolution_px), target_macs,
                   num_classes, f"{backbone}: scaling {dimension} alone does not reach {target_macs:,} MACs "
                   f"(is {dimension}_mult used by this backbone?); leave {dimension!r} out of baselines")


def match_rule(backbone: str, rule: ScalingRule, target_macs: int, base: Multipliers = Multipliers(),
               resolution_px: int | None = None, rounding: Rounding = REFERENCE_ROUNDING,
               num_classes: int = 1000) -> tuple[Multipliers, ScaledModel, Cost]:
    """The network of ``rule`` whose rounded MACs are closest to the target.

    Bisects on the factor t of the rule's fastest-growing dimension (``ScalingRule.along_lead``),
    so a single-dimension rule finds what ``match_macs`` along that dimension finds.

    Returns:
        (multipliers over the base, the scaled model, its cost).

    Raises:
        ValueError: if the rule cannot reach the target (it grows only dimensions a builder
            backbone ignores, say), or its resolution cap is below the base network's.
    """
    bb = get_backbone(backbone)
    base_px = bb.scale(base, rounding, resolution_px).resolution_px
    t, model, cost = _bisect(lambda t: bb.scale(base * rule.along_lead(t, base_px, rounding), rounding,
                                                resolution_px),
                             target_macs, num_classes,
                             f"{backbone}: the {rule.name} rule does not reach {target_macs:,} MACs (does this "
                             f"backbone use the dimensions it grows?); leave {rule.name!r} out of baselines")
    return rule.along_lead(t, base_px, rounding), model, cost


def _bisect(scaled: Callable[[float], ScaledModel], target_macs: int, num_classes: int,
            unreachable: str) -> tuple[float, ScaledModel, Cost]:
    """The factor f (of ``scaled(f)``, non-decreasing in cost) whose MACs are closest to the target."""
    cache: dict[float, tuple[ScaledModel, Cost]] = {}

    def at(factor: float) -> tuple[ScaledModel, Cost]:
        if factor not in cache:
            model = scaled(factor)
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
            raise ValueError(unreachable)
    for _ in range(BISECTION_STEPS):  # invariant: macs(lo) < target <= macs(hi)
        mid = math.sqrt(lo * hi)
        if at(mid)[1].macs < target_macs:
            lo = mid
        else:
            hi = mid
    candidates = [f for f in (lo, hi) if at(f)[1].macs > 0]
    best = min(candidates, key=lambda f: (abs(math.log(at(f)[1].macs / target_macs)), f))
    return (best, *at(best))


def rules_of(baselines: Sequence[str | Mapping | ScalingRule], coefficients: Coefficients) -> list[ScalingRule]:
    """The rules a plan compares with the compound family: parsed, the three single dimensions
    first in their usual order, then the others as given.

    Raises:
        ValueError: for an unknown rule, two rules of one name, or ``compound`` without a cap
            (that is the family itself).
    """
    rules = [parse_rule(b, coefficients) for b in baselines]
    names = [r.name for r in rules]
    if COMPOUND in names:
        raise ValueError("compound is the family every rule is compared with; leave it out of baselines "
                         "(compound_max<px>, the compound split with a resolution cap, is a rule)")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"baselines name {', '.join(twice)} twice; name each rule once")
    seen: dict[tuple, str] = {}
    for r in rules:  # one split under two names would train the same networks twice
        split = (round(r.depth, 9), round(r.width, 9), round(r.resolution, 9), r.max_resolution_px)
        if split in seen:
            raise ValueError(f"baselines {seen[split]} and {r.name} are the same rule (depth, width, resolution "
                             f"shares {r.depth:g}, {r.width:g}, {r.resolution:g}); keep one of them")
        seen[split] = r.name
    return sorted(rules, key=lambda r: DIMENSIONS.index(r.name) if r.name in DIMENSIONS else len(DIMENSIONS))


def plan_family(backbone: str, coefficients: Coefficients, phis: Sequence[float],
                baselines: Sequence[str | Mapping | ScalingRule] = DIMENSIONS, base: Multipliers = Multipliers(),
                resolution_px: int | None = None, rounding: Rounding = REFERENCE_ROUNDING,
                num_classes: int = 1000, regularisation: Regularisation = Regularisation()) -> list[Member]:
    """The compound member at each φ and, for φ ≠ 0, each rule of ``baselines`` matched to its MACs.

    ``baselines`` are scaling rules (``plan.rules.parse_rule``: names such as ``depth`` or
    ``fast``, pycls notation, weights, or ``ScalingRule``); ``baselines=()`` gives the compound
    family alone (what ``scale`` emits without training). Members come ordered by φ
    (duplicates dropped), then by method (compound, depth, width, resolution, then the other
    rules as given). Every member at a φ gets the dropout (and drop-path) ``regularisation``
    sets for the compound member's MACs over the base network's, so that the methods compared
    at a φ are regularised alike.
    """
    if not len(phis):
        raise ValueError("phis is empty; give at least one phi, e.g. phis=[1,2,3]")
    if not all(math.isfinite(float(p)) for p in phis):
        raise ValueError(f"phis must be finite numbers, got {list(phis)}")
    rules = rules_of(baselines, coefficients)
    bb = get_backbone(backbone)
    base_macs = bb.scale(base, rounding, resolution_px).cost(num_classes).macs
    members = []
    for phi in sorted({float(p) for p in phis}):
        scale = coefficients.multipliers(phi)
        model = bb.scale(base * scale, rounding, resolution_px)
        cost = model.cost(num_classes)
        formula = coefficients.formula_macs_ratio(phi)
        ratio = cost.macs / base_macs
        members.append(Member(member_id(COMPOUND, phi), COMPOUND, phi, scale, regularisation.apply(model, ratio),
                              cost, ratio, cost.macs, formula))
        if phi == 0:
            continue  # every method's φ = 0 is the base network itself
        for rule in rules:
            multipliers, matched, matched_cost = match_rule(backbone, rule, cost.macs, base, resolution_px,
                                                            rounding, num_classes)
            members.append(Member(member_id(rule.name, phi), rule.name, phi, multipliers,
                                  regularisation.apply(matched, ratio), matched_cost,
                                  matched_cost.macs / base_macs, cost.macs, formula))
    return members
