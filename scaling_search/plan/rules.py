"""Scaling rules: how a growth in cost is split between depth, width and resolution.

A rule is a split of the cost exponent, (e_d, e_w, e_r) with e_d + e_w + e_r = 1, as in Dollár,
Singh and Girshick, "Fast and Accurate Model Scaling" (CVPR 2021; pycls ``models/scaler.py``):
for a cost factor s, depth grows by d = s^e_d, width by w = s^(e_w/2) and resolution by
r = s^(e_r/2), so that d·w²·r² = s (conv MACs grow with depth, width squared and pixels per side
squared). Every strategy Step 2 compares is one of these:

- ``compound``: the shares of α, β, γ, (ln α, 2 ln β, 2 ln γ) / ln(α·β²·γ²). At s = (α·β²·γ²)^φ
  it gives back α^φ, β^φ, γ^φ; the paper's (1.2, 1.1, 1.15) is (0.279, 0.292, 0.428).
- ``depth``, ``width``, ``resolution``: one dimension alone (the paper's Figure 3 baselines).
- ``uniform``: a third each. ``fast``: pycls's recommended ``d1_w8_r1`` (e_w = 0.8), whose
  activations grow about as √s, where the others' grow about as s.
- a user's split: pycls notation (``d1_w8_r1``, ``d1_w2``, ``dw``) or weights
  (``{depth: 1, width: 8, resolution: 1}``), normalised to sum to 1.

Any rule may carry a resolution cap in px (``fast_max480``; EfficientNetV2 caps at 480 px, and
ResNet-RS found large resolutions give diminishing returns): above the cap, the cost the
resolution would have taken goes to depth and width in proportion to their shares, so d·w²·r²
is still s. The rounding and the matching to measured MACs are not here but in ``plan.family``,
the same for every rule.

Regularisation that grows with the model (``Regularisation``) lives here too: it is the other
thing a member's cost decides.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cache

from scaling_search.models.backbones import ScaledModel
from scaling_search.models.reference import published_efficientnets
from scaling_search.models.scaling import REFERENCE_ROUNDING, Coefficients, Multipliers, Rounding

COMPOUND = "compound"
DIMENSIONS = ("depth", "width", "resolution")
# e_d, e_w, e_r of the named rules other than compound (which depends on the coefficients).
NAMED = {"depth": (1.0, 0.0, 0.0), "width": (0.0, 1.0, 0.0), "resolution": (0.0, 0.0, 1.0),
         "uniform": (1 / 3, 1 / 3, 1 / 3), "fast": (0.1, 0.8, 0.1)}
_LETTERS = {"d": "depth", "w": "width", "r": "resolution"}
_NUMBER = r"\d+(?:[.p]\d+)?"
_TOKEN = re.compile(rf"([dwrg])({_NUMBER})")
_CAP = re.compile(r"^(.+)_max(\d+)$")
SPEC_HELP = ("depth, width, resolution, uniform, fast, compound (with a cap), pycls notation such as d1_w8_r1, "
             "or weights {depth: 1, width: 8, resolution: 1}; any of them with a cap, e.g. fast_max480")


@dataclass(frozen=True)
class ScalingRule:
    """A split of the cost exponent between depth, width and resolution, with an optional cap.

    Attributes:
        name: what tables, plots and member ids call it (letters, digits and ``_``).
        depth, width, resolution: e_d, e_w, e_r; each >= 0, normalised to sum to 1.
        max_resolution_px: the largest input side the rule grows to, or None for no cap.
    """

    name: str
    depth: float
    width: float
    resolution: float
    max_resolution_px: int | None = None

    def __post_init__(self) -> None:
        shares = []
        for dim in DIMENSIONS:
            value = getattr(self, dim)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0:
                raise ValueError(f"rule {self.name!r}: the {dim} weight must be a finite number >= 0, got {value!r}")
            shares.append(float(value))
        total = sum(shares)
        if total <= 0:
            raise ValueError(f"rule {self.name!r}: the weights of depth, width and resolution are all 0; "
                             "give at least one a positive weight")
        for dim, value in zip(DIMENSIONS, shares):
            object.__setattr__(self, dim, value if total == 1 else value / total)
        if not re.fullmatch(r"[A-Za-z0-9_]+", self.name or ""):
            raise ValueError(f"a rule's name must be letters, digits or '_', got {self.name!r}")
        cap = self.max_resolution_px
        if cap is not None:
            if isinstance(cap, bool) or int(cap) != cap or cap < 1:
                raise ValueError(f"rule {self.name!r}: the resolution cap must be a positive integer of px, "
                                 f"got {cap!r}")
            object.__setattr__(self, "max_resolution_px", int(cap))
            if self.depth + self.width == 0:
                raise ValueError(f"rule {self.name!r} grows resolution alone, so a resolution cap leaves it "
                                 "nothing to grow; drop the cap or give depth or width a share")

    @property
    def shares(self) -> tuple[float, float, float]:
        """(e_d, e_w, e_r), summing to 1."""
        return self.depth, self.width, self.resolution

    @property
    def lead(self) -> float:
        """The exponent of s of the fastest-growing dimension: max(e_d, e_w/2, e_r/2).

        ``plan.family`` bisects on that dimension's factor t = s^lead, so a single-dimension
        rule's search is the same search, to the bit, as the factor along that dimension."""
        return max(self.depth, self.width / 2, self.resolution / 2)

    def multipliers(self, s: float, base_px: int | None = None,
                    rounding: Rounding = REFERENCE_ROUNDING) -> Multipliers:
        """d = s^e_d, w = s^(e_w/2), r = s^(e_r/2) for a cost factor ``s`` (d·w²·r² = s), the
        cap applied (it needs the base network's ``base_px``)."""
        s = _positive("the cost factor s", s)
        return self._capped((s ** self.depth, s ** (self.width / 2), s ** (self.resolution / 2)),
                            base_px, rounding)

    def along_lead(self, t: float, base_px: int | None = None,
                   rounding: Rounding = REFERENCE_ROUNDING) -> Multipliers:
        """The multipliers at which the fastest-growing dimension is ``t`` (s = t^(1/lead))."""
        t, lead = _positive("the factor t", t), self.lead
        return self._capped((t ** (self.depth / lead), t ** (self.width / 2 / lead),
                             t ** (self.resolution / 2 / lead)), base_px, rounding)

    def _capped(self, dwr: tuple[float, float, float], base_px: int | None, rounding: Rounding) -> Multipliers:
        d, w, r = dwr
        cap = self.max_resolution_px
        if cap is not None and base_px is not None:
            top = cap // rounding.resolution_divisor * rounding.resolution_divisor  # a px rounding keeps
            if top < base_px:
                raise ValueError(f"rule {self.name!r}: its resolution cap of {cap} px is below the base "
                                 f"network's {base_px} px; raise the cap or leave it out")
            r_cap = top / base_px
            if r > r_cap:
                # The cost the resolution cannot take, (r / r_cap)^2, goes to depth and width in
                # proportion to their shares: d·w²·r² is unchanged.
                excess = (r / r_cap) ** 2
                dw = self.depth + self.width
                d, w, r = d * excess ** (self.depth / dw), w * excess ** (self.width / dw / 2), r_cap
        return Multipliers(d, w, r)

    @property
    def notation(self) -> str:
        """pycls's notation of the split, shares in percent: ``d10_w80_r10``."""
        return "_".join(f"{letter}{_number(100 * getattr(self, dim))}" for letter, dim in _LETTERS.items())

    def describe(self) -> str:
        """``fast: e_d=0.100 e_w=0.800 e_r=0.100, resolution capped at 480 px``."""
        cap = f", resolution capped at {self.max_resolution_px} px" if self.max_resolution_px else ""
        return (f"{self.name}: e_d={self.depth:.3f} e_w={self.width:.3f} e_r={self.resolution:.3f}{cap}")

    def as_dict(self) -> dict:
        return {"name": self.name, "depth": self.depth, "width": self.width, "resolution": self.resolution,
                "max_resolution_px": self.max_resolution_px}


def compound_rule(coefficients: Coefficients, max_resolution_px: int | None = None) -> ScalingRule:
    """The split α, β, γ make: (ln α, 2 ln β, 2 ln γ) / ln(α·β²·γ²).

    Raises:
        ValueError: if a coefficient is below 1 (a negative share) or α·β²·γ² is 1 (no growth).
    """
    c = coefficients
    logs = (math.log(c.depth_coef), 2 * math.log(c.width_coef), 2 * math.log(c.resolution_coef))
    if min(logs) < 0 or sum(logs) <= 0:
        raise ValueError(f"coefficients ({c.depth_coef:g}, {c.width_coef:g}, {c.resolution_coef:g}) make no "
                         "split of the cost: each must be >= 1 and alpha*beta^2*gamma^2 > 1")
    name = COMPOUND if max_resolution_px is None else f"{COMPOUND}_max{max_resolution_px}"
    return ScalingRule(name, *logs, max_resolution_px=max_resolution_px)


def parse_rule(spec: str | Mapping, coefficients: Coefficients | None = None) -> ScalingRule:
    """A rule from a name, pycls notation or weights, with an optional ``_max<px>`` cap.

    ``coefficients`` are what ``compound`` splits (the run's own).

    Raises:
        ValueError: one line naming the spec and the forms accepted.
    """
    if isinstance(spec, ScalingRule):
        return spec
    if isinstance(spec, Mapping):
        return _from_weights(spec)
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"a scaling rule must be a name or weights ({SPEC_HELP}), got {spec!r}")
    cap, base = None, spec
    if m := _CAP.fullmatch(spec):
        base, cap = m.group(1), int(m.group(2))
    if base == COMPOUND:
        if coefficients is None:
            raise ValueError("the compound rule needs the coefficients it splits")
        return compound_rule(coefficients, cap)
    if base in NAMED:
        return ScalingRule(spec, *NAMED[base], max_resolution_px=cap)
    weights = _pycls(base)
    if weights is None:
        raise ValueError(f"unknown scaling rule {spec!r}; give {SPEC_HELP}")
    return ScalingRule(spec.replace(".", "p"), *weights, max_resolution_px=cap)


def _pycls(text: str) -> tuple[float, float, float] | None:
    """pycls's ``scale_type``: ``d1_w8_r1`` (weights per letter, absent ones 0) or ``dw`` (1 each)."""
    if re.fullmatch(r"[dwrg]{1,4}", text) and len(set(text)) == len(text):
        tokens = [(letter, 1.0) for letter in text]
    else:
        parts = text.split("_")
        matches = [_TOKEN.fullmatch(p) for p in parts]
        if not all(matches):
            return None
        tokens = [(m.group(1), float(m.group(2).replace("p", "."))) for m in matches]
        if len({t for t, _ in tokens}) != len(tokens):
            raise ValueError(f"scaling rule {text!r} names a dimension twice; name each of d, w, r once")
    if any(letter == "g" and weight for letter, weight in tokens):
        raise ValueError(f"scaling rule {text!r} scales groups (g), which these backbones do not have; "
                         "use d, w and r only")
    weights = dict.fromkeys(DIMENSIONS, 0.0)
    weights.update({_LETTERS[letter]: weight for letter, weight in tokens if letter != "g"})
    return weights["depth"], weights["width"], weights["resolution"]


def _from_weights(spec: Mapping) -> ScalingRule:
    allowed = {*DIMENSIONS, "max_resolution_px"}
    unknown = sorted(map(str, set(spec) - allowed))
    if unknown:
        raise ValueError(f"a scaling rule's weights may hold {', '.join(sorted(allowed))}; got {', '.join(unknown)}")
    weights = [spec.get(dim, 0.0) for dim in DIMENSIONS]
    cap = spec.get("max_resolution_px")
    rule = ScalingRule("weights", *weights, max_resolution_px=cap)
    # Named by its split, so that a name means one split: a resumed run cannot mix two.
    name = "_".join(f"{letter}{_number(w)}" for letter, w in zip("dwr", weights) if w) \
        + ("" if cap is None else f"_max{rule.max_resolution_px}")
    return replace(rule, name=name.replace(".", "p"))


def _number(x: float) -> str:
    return f"{round(float(x), 4):g}".replace(".", "p")


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value}")
    return value


# ---------------------------------------------------------------------------------------------
# Regularisation that grows with the model.

@cache
def published_end_macs_ratio() -> float:
    """EfficientNet-B7's published MACs over B0's (Table 2: 37B / 0.39B = 94.9)."""
    by_name = {p.name: p for p in published_efficientnets()}
    return by_name["b7"].macs / by_name["b0"].macs


@dataclass(frozen=True)
class Regularisation:
    """Dropout (and optionally the stochastic-depth rate) set by a member's cost.

    The paper raises dropout from 0.2 (B0) to 0.5 (B7). Here it is linear in log(MACs over the
    base network's), from ``start`` at the base to ``end`` at ``end_macs_ratio`` (default: B7's
    published cost over B0's, 94.9), and clamped to [start, end]: a member below the base
    (φ < 0) gets ``start``, one above the end gets ``end``. It gives each published B0–B7, at
    its published MACs, its published dropout within 0.05 (0.2, 0.24, 0.26, 0.30, 0.36, 0.41,
    0.46, 0.5 against 0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.5, 0.5). Linear in log cost, not in φ,
    because cost is what every rule's members share: at each φ they are matched to it.

    Attributes:
        dropout: (start, end) of the dropout before the classifier; None keeps the backbone's.
        drop_path: (start, end) of the stochastic-depth rate; None keeps the backbone's.
        end_macs_ratio: the MACs over the base's at which ``end`` is reached (> 1); None: B7's.
    """

    dropout: tuple[float, float] | None = (0.2, 0.5)
    drop_path: tuple[float, float] | None = None
    end_macs_ratio: float | None = None

    def __post_init__(self) -> None:
        for name in ("dropout", "drop_path"):
            pair = getattr(self, name)
            if pair is None:
                continue
            try:
                pair = tuple(float(v) for v in pair)
            except (TypeError, ValueError):
                raise ValueError(f"regularisation.{name} must be [start, end] (numbers in [0, 1)) or null, "
                                 f"got {pair!r}") from None
            if len(pair) != 2 or not all(0 <= v < 1 for v in pair):
                raise ValueError(f"regularisation.{name} must be [start, end], each a number in [0, 1), "
                                 f"got {list(pair)}")
            object.__setattr__(self, name, pair)
        end = self.end_macs_ratio
        if end is not None:
            if isinstance(end, bool) or not isinstance(end, (int, float)) or not math.isfinite(end) or end <= 1:
                raise ValueError(f"regularisation.end_macs_ratio must be a finite number > 1 (or null for "
                                 f"B7's 94.9), got {end!r}")
            object.__setattr__(self, "end_macs_ratio", float(end))

    @property
    def end_ratio(self) -> float:
        return self.end_macs_ratio if self.end_macs_ratio is not None else published_end_macs_ratio()

    def fraction(self, macs_ratio: float) -> float:
        """How far along from start (0) to end (1) a member at ``macs_ratio`` is, clamped."""
        macs_ratio = _positive("macs_ratio", macs_ratio)
        return min(1.0, max(0.0, math.log(macs_ratio) / math.log(self.end_ratio)))

    def at(self, macs_ratio: float) -> tuple[float | None, float | None]:
        """(dropout, drop_path) at ``macs_ratio``, to 4 decimals (what a config shows is what
        trains); None where the backbone's own is kept."""
        f = self.fraction(macs_ratio)
        return tuple(None if pair is None else round(pair[0] + (pair[1] - pair[0]) * f, 4)
                     for pair in (self.dropout, self.drop_path))

    def apply(self, model: ScaledModel, macs_ratio: float) -> ScaledModel:
        """``model`` with its dropout and drop-path set for ``macs_ratio`` (a builder-registered
        backbone, which has no stage table, keeps its own)."""
        return regularised(model, *self.at(macs_ratio))

    def as_dict(self) -> dict:
        return {"dropout": None if self.dropout is None else list(self.dropout),
                "drop_path": None if self.drop_path is None else list(self.drop_path),
                "end_macs_ratio": self.end_ratio}


FIXED = Regularisation(dropout=None, drop_path=None)  # every member keeps its backbone's own


def regularised(model: ScaledModel, dropout: float | None, drop_path: float | None = None) -> ScaledModel:
    """``model`` with the given dropout and drop-path rate (None keeps the model's own)."""
    net = model.network
    if net is None or (dropout is None and drop_path is None):
        return model
    changes = {k: v for k, v in (("dropout", dropout), ("drop_path", drop_path)) if v is not None}
    return replace(model, network=replace(net, **changes))
