"""The Step-1 grid (space.py) against the paper's constraint, Eq. 3, with exact arithmetic.

Golden facts: the paper's (1.2, 1.1, 1.15) (Section 3.3) must be a candidate; the issue's
default space (alpha in [1, 2], beta, gamma in [1, 1.5], step 0.05, |product - 2| <= 0.1) holds
109 points by exact counting, which the brute-force count below re-derives independently with
integers (hundredths) rather than with the module's Fractions.
"""

from __future__ import annotations

from fractions import Fraction

import pytest

from scaling_search.models.scaling import Multipliers
from scaling_search.plan.space import SearchSpace, build_candidates, enumerate_coefficients, nearest_products


def _integer_count(step=5, tol=10) -> int:
    """Counts in hundredths: a, b, g are integers 100..200 / 100..150, product in 1e-8 units."""
    axis = lambda lo, hi: range(lo, hi + 1, step)  # noqa: E731
    return sum(1 for a in axis(100, 200) for b in axis(100, 150) for g in axis(100, 150)
               if abs(a * b * b * g * g - 2 * 10**10) <= tol * 10**8)


def test_default_space_has_109_candidates():
    coefficients = enumerate_coefficients(SearchSpace())
    assert len(coefficients) == 109 == _integer_count()
    assert len(set(coefficients)) == 109


def test_boundary_is_inclusive_and_exact(reference):
    coefficients = set(enumerate_coefficients(SearchSpace()))
    # (1.9, 1, 1): product exactly 1.9, on the boundary. In floats 2 - 1.9 > 0.1 and it is lost.
    assert (Fraction("1.9"), Fraction(1), Fraction(1)) in coefficients
    assert abs(1.9 * 1.0 * 1.0 - 2.0) > 0.1  # why exact arithmetic matters
    paper = reference["compound_scaling"]
    assert tuple(Fraction(str(paper[k])) for k in ("alpha", "beta", "gamma")) in coefficients


def test_values_are_exact_multiples_of_the_step():
    space = SearchSpace.from_values(step=0.05)
    for a, b, g in enumerate_coefficients(space):
        for v in (a, b, g):
            assert ((v - 1) / Fraction(1, 20)).denominator == 1


def test_strict_filter_of_the_public_reproduction_loses_boundary_points():
    # A strict |p - 2| < 0.1 (what the public example meant) drops the boundary points we keep.
    space = SearchSpace()
    strict = [c for c in enumerate_coefficients(space)
              if abs(c[0] * c[1] ** 2 * c[2] ** 2 - 2) < Fraction(1, 10)]
    assert len(strict) < 109 == _integer_count()
    assert _integer_count(tol=10) - len(strict) == sum(
        1 for c in enumerate_coefficients(space) if abs(c[0] * c[1] ** 2 * c[2] ** 2 - 2) == Fraction(1, 10))


def test_identical_networks_are_merged_and_costs_attached():
    space = SearchSpace.from_values(step=0.1)
    cands, base = build_candidates(space, "efficientnet_b0", Multipliers(0.5, 0.5), 32, num_classes=10)
    ids = [c.candidate_id for c in cands]
    merged = [m for c in cands for m in c.merged]
    assert len(ids) + len(merged) == len(enumerate_coefficients(space))
    assert not set(ids) & set(merged)
    for c in cands:
        assert c.macs_ratio == pytest.approx(c.cost.macs / base.macs)
        assert c.model.resolution_px == round(32 * c.coefficients.resolution_coef)


def test_merged_points_build_the_same_network():
    space = SearchSpace.from_values(step=0.1)
    cands, _ = build_candidates(space, "efficientnet_b0", Multipliers(0.5, 0.5), 32, num_classes=10)
    from scaling_search.models.backbones import get_backbone

    merged = next(c for c in cands if c.merged)
    other_id = merged.merged[0]
    a, b, g = (float(x[1:]) for x in other_id.split("_"))
    other = get_backbone("efficientnet_b0").scale(Multipliers(0.5 * a, 0.5 * b, g), resolution_px=32)
    shapes = lambda m: [tuple(v.shape) for v in m.build(10, device="meta").state_dict().values()]  # noqa: E731
    assert shapes(other) == shapes(merged.model) and other.resolution_px == merged.model.resolution_px
    # ... while two kept candidates never do.
    keys = [(tuple(shapes(c.model)), c.model.resolution_px) for c in cands]
    assert len(set(keys)) == len(keys)


def test_measured_filter_uses_the_rounded_networks_macs():
    space = SearchSpace.from_values(step=0.1, tolerance=0.3, filter_on="measured")
    cands, _ = build_candidates(space, "resnet18", num_classes=10)
    assert cands
    assert all(abs(c.macs_ratio - 2) <= 0.3 for c in cands)


def test_empty_space_names_the_nearest_products():
    space = SearchSpace.from_values(step=0.5, target=2.6, tolerance=0.01)
    with pytest.raises(ValueError, match="nearest products: 2.25") as e:
        build_candidates(space, "resnet18", num_classes=10)
    assert "space.tolerance" in str(e.value)
    assert nearest_products(space)[0][3] == pytest.approx(2.25)


@pytest.mark.parametrize("kwargs, message", [
    ({"step": 0}, "space.step must be > 0"),
    ({"depth_range": [0.5, 2]}, "1 <= low <= high"),
    ({"width_range": [1.5, 1]}, "1 <= low <= high"),
    ({"tolerance": -1}, "tolerance must be >= 0"),
    ({"step": "abc"}, "space.step must be a number"),
    ({"filter_on": "flops"}, "filter_on"),
])
def test_bad_space_settings_say_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SearchSpace.from_values(**kwargs)
