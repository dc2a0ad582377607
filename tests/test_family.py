"""Step 2's plan: compound members at each φ and other scaling rules' members at matched MACs."""

import math

import pytest
from torch import nn

from scaling_search.models.backbones import get_backbone, register_backbone, unregister_backbone
from scaling_search.models.scaling import PAPER_COEFFICIENTS, Coefficients, Multipliers, Rounding
from scaling_search.plan.family import DIMENSIONS, match_macs, plan_family
from scaling_search.plan.rules import FIXED

SMALL = dict(base=Multipliers(0.5, 0.5), resolution_px=32, num_classes=10)


def _macs(backbone, multipliers, px=None, num_classes=1000):
    return get_backbone(backbone).scale(multipliers, Rounding(), px).cost(num_classes).macs


def test_resolution_alone_needs_about_twice_the_pixels_for_four_times_the_macs():
    """Conv MACs grow with pixels per side squared, so 4x the cost is ~2x the side (the paper's
    Table 3 scales resolution by r=2 for its ~4x models)."""
    target = 4 * _macs("resnet50", Multipliers())
    factor, model, cost = match_macs("resnet50", "resolution", target)
    assert 430 <= model.resolution_px <= 460
    assert model.multipliers.depth_mult == 1 and model.multipliers.width_mult == 1
    assert abs(cost.macs / target - 1) < 0.02


def test_width_alone_needs_about_twice_the_channels_for_four_times_the_macs():
    target = 4 * _macs("resnet50", Multipliers())
    factor, model, cost = match_macs("resnet50", "width", target)
    assert 1.85 <= factor <= 2.1  # channels^2, less the unscaled input conv and classifier
    assert abs(cost.macs / target - 1) < 0.03


@pytest.mark.parametrize("dimension", DIMENSIONS)
def test_the_match_is_the_nearest_network_along_its_dimension(dimension):
    """No other factor along the dimension gives a network whose MACs are closer to the target."""
    target = _macs("efficientnet_b0", Multipliers(0.5 * 1.2, 0.5 * 1.1, 1.15), 32, 10)
    factor, model, cost = match_macs("efficientnet_b0", dimension, target, **SMALL)
    error = abs(math.log(cost.macs / target))
    for k in range(1, 400):
        f = factor * (0.5 + k / 200)  # 0.5x .. 2.5x the match
        other = _macs("efficientnet_b0", Multipliers(**{
            "depth_mult": 0.5, "width_mult": 0.5, "resolution_mult": 1.0,
            **{f"{dimension}_mult": {"depth": 0.5, "width": 0.5, "resolution": 1.0}[dimension] * f}}), 32, 10)
        assert abs(math.log(other / target)) >= error - 1e-12


def test_plan_holds_compound_members_and_matched_baselines():
    members = plan_family("efficientnet_b0", PAPER_COEFFICIENTS, [2, 0, 1, 1], **SMALL)
    ids = [m.member_id for m in members]
    assert ids == ["compound_phi0", "compound_phi1", "depth_phi1", "width_phi1", "resolution_phi1",
                   "compound_phi2", "depth_phi2", "width_phi2", "resolution_phi2"]
    by_id = {m.member_id: m for m in members}
    c2 = by_id["compound_phi2"]
    assert c2.scale.depth_mult == pytest.approx(1.44) and c2.scale.resolution_mult == pytest.approx(1.3225)
    assert c2.model.multipliers.width_mult == pytest.approx(0.5 * 1.21)  # on the base network
    assert c2.model.resolution_px == round(32 * 1.3225)
    for dim in DIMENSIONS:
        m = by_id[f"{dim}_phi2"]
        others = [d for d in DIMENSIONS if d != dim]
        assert all(getattr(m.scale, f"{d}_mult") == 1.0 for d in others)
        assert getattr(m.scale, f"{dim}_mult") > 1.0
        assert m.target_macs == c2.cost.macs and abs(m.macs_mismatch) < 0.2
        assert m.macs_ratio == pytest.approx(m.cost.macs / by_id["compound_phi0"].cost.macs)
        # its per-phi coefficient, raised to phi, gives back its scale
        c = m.per_phi_coefficients(PAPER_COEFFICIENTS)
        assert getattr(c, f"{dim}_coef") ** 2 == pytest.approx(getattr(m.scale, f"{dim}_mult"))


def test_plan_for_mobilenet_and_a_subset_of_baselines():
    members = plan_family("mobilenet_v2", PAPER_COEFFICIENTS, [1], baselines=["width"], **SMALL)
    assert [m.member_id for m in members] == ["compound_phi1", "width_phi1"]
    with pytest.raises(ValueError, match="unknown scaling rule 'height'; give depth, width, resolution"):
        plan_family("mobilenet_v2", PAPER_COEFFICIENTS, [1], baselines=["height"])


@pytest.mark.parametrize("backbone,kw", [("efficientnet_b0", SMALL), ("resnet50", dict(num_classes=10)),
                                         ("mobilenet_v2", dict(resolution_px=96, num_classes=10))])
def test_the_single_dimension_rules_are_the_baselines_of_before(backbone, kw):
    """The depth, width and resolution rules give the networks, MACs and factors that the
    single-dimension search (``match_macs``, the path these baselines took before rules) finds
    for the compound member's MACs: the same numbers, to the bit."""
    members = plan_family(backbone, PAPER_COEFFICIENTS, [-1, 1, 2, 3], regularisation=FIXED, **kw)
    by = {m.member_id: m for m in members}
    base = kw.get("base", Multipliers())
    for phi in ("m1", "1", "2", "3"):
        compound = by[f"compound_phi{phi}"]
        for dim in DIMENSIONS:
            m = by[f"{dim}_phi{phi}"]
            factor, model, cost = match_macs(backbone, dim, compound.cost.macs, base, kw.get("resolution_px"),
                                             num_classes=kw["num_classes"])
            assert m.model == model and m.cost == cost, (dim, phi)
            assert getattr(m.scale, f"{dim}_mult") == factor
            assert [getattr(m.scale, f"{d}_mult") for d in DIMENSIONS if d != dim] == [1.0, 1.0]


def test_negative_phi_matches_downwards():
    members = plan_family("resnet18", Coefficients(1.2, 1.1, 1.15), [-1], num_classes=10)
    for m in members:
        assert m.cost.macs < _macs("resnet18", Multipliers(), None, 10)
    assert {m.member_id for m in members} == {"compound_phim1", "depth_phim1", "width_phim1",
                                              "resolution_phim1"}


def test_a_dimension_a_builder_ignores_is_refused_with_a_fix():
    @register_backbone("fixed_depth_net", resolution_px=32)
    def fixed_depth_net(depth_mult, width_mult, num_classes):  # ignores depth_mult
        c = max(8, int(16 * width_mult))
        return nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(c, num_classes))
    try:
        target = 2 * _macs("fixed_depth_net", Multipliers(), None, 10)
        with pytest.raises(ValueError, match="scaling depth alone does not reach .* leave 'depth' out of baselines"):
            match_macs("fixed_depth_net", "depth", target, num_classes=10)
        _, model, _ = match_macs("fixed_depth_net", "resolution", target, num_classes=10)
        assert model.resolution_px > 32
    finally:
        unregister_backbone("fixed_depth_net")
