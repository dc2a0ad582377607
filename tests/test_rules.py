"""Scaling rules (splits of the cost exponent, with an optional resolution cap) and the
regularisation that grows with a member's cost. The golden numbers are computed by hand, not
by the code under test: 4^0.1 = 1.1487, 4^0.4 = 1.7411, 4^0.05 = 1.0718; ln 1.2 = 0.18232,
2 ln 1.1 = 0.19062, 2 ln 1.15 = 0.27952, their sum ln 1.92027 = 0.65246."""

import math

import pytest
from torch import nn

from scaling_search.models.backbones import get_backbone
from scaling_search.models.reference import published_efficientnets
from scaling_search.models.scaling import PAPER_COEFFICIENTS, Coefficients, Rounding
from scaling_search.plan.family import plan_family
from scaling_search.plan.rules import FIXED, Regularisation, compound_rule, parse_rule, regularised


def _dwr(m):
    return m.depth_mult, m.width_mult, m.resolution_mult


def test_pycls_fast_rule_at_a_cost_factor_of_4():
    for spec in ("d1_w8_r1", "fast", {"depth": 1, "width": 8, "resolution": 1}, "d0.1_w0.8_r0.1"):
        rule = parse_rule(spec)
        assert rule.shares == pytest.approx((0.1, 0.8, 0.1))
        assert _dwr(rule.multipliers(4)) == pytest.approx((1.1487, 1.7411, 1.0718), abs=1e-4)
    d, w, r = _dwr(parse_rule("fast").multipliers(4))
    assert d * w**2 * r**2 == pytest.approx(4)


def test_the_paper_coefficients_are_a_split_of_the_cost():
    rule = compound_rule(PAPER_COEFFICIENTS)
    assert rule.name == "compound"
    assert rule.shares == pytest.approx((0.2794, 0.2922, 0.4284), abs=1e-4)
    # at s = (alpha beta^2 gamma^2)^phi the split gives back alpha^phi, beta^phi, gamma^phi
    assert _dwr(rule.multipliers(1.92027**2)) == pytest.approx((1.44, 1.21, 1.3225), rel=1e-4)
    assert parse_rule("compound", PAPER_COEFFICIENTS).shares == rule.shares


@pytest.mark.parametrize("spec,shares,name", [
    ("depth", (1, 0, 0), "depth"), ("width", (0, 1, 0), "width"), ("resolution", (0, 0, 1), "resolution"),
    ("uniform", (1 / 3, 1 / 3, 1 / 3), "uniform"), ("dw", (0.5, 0.5, 0), "dw"), ("d1_w2", (1 / 3, 2 / 3, 0), "d1_w2"),
    ("w3_r1", (0, 0.75, 0.25), "w3_r1"), ("d0.5_w1_r0.5", (0.25, 0.5, 0.25), "d0p5_w1_r0p5"),
    ({"width": 2, "resolution": 2}, (0, 0.5, 0.5), "w2_r2"),
    ({"depth": 1, "width": 1, "resolution": 1, "max_resolution_px": 300}, (1 / 3,) * 3, "d1_w1_r1_max300"),
    ("fast_max480", (0.1, 0.8, 0.1), "fast_max480"),
])
def test_rules_by_name_pycls_notation_and_weights(spec, shares, name):
    rule = parse_rule(spec, PAPER_COEFFICIENTS)
    assert rule.shares == pytest.approx(shares) and rule.name == name
    assert parse_rule(rule.name, PAPER_COEFFICIENTS).shares == pytest.approx(rule.shares)  # the name reads back


@pytest.mark.parametrize("spec,message", [
    ("height", "unknown scaling rule 'height'"),
    ("d1_g8_w8_r1", "scales groups (g)"),
    ("d1_d2", "names a dimension twice"),
    ("resolution_max300", "grows resolution alone, so a resolution cap leaves it nothing to grow"),
    ({"depth": -1, "width": 1}, "the depth weight must be a finite number >= 0"),
    ({"depth": 0}, "are all 0"),
    ({"depth": 1, "height": 2}, "got height"),
    ("compound", "needs the coefficients"),
])
def test_a_bad_rule_is_refused_with_what_to_write(spec, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_rule(spec)


def test_compound_of_coefficients_below_one_makes_no_split():
    with pytest.raises(ValueError, match="make no split of the cost"):
        compound_rule(Coefficients(0.9, 1.1, 1.15))


def test_a_capped_rule_never_exceeds_its_cap_and_keeps_the_cost():
    rule = parse_rule("uniform_max300")
    for k in range(1, 60):
        s = 1.25**k
        d, w, r = _dwr(rule.multipliers(s, 224))
        assert 224 * r <= 300 + 1e-9
        assert d * w**2 * r**2 == pytest.approx(s)  # the excess went to depth and width
        if 224 * s ** (1 / 6) > 300:  # the cap binds: depth and width share the excess alike
            assert math.log(d) == pytest.approx(2 * math.log(w))
    # a rounding to multiples of 8 keeps it under the cap too (296, not 304)
    by8 = Rounding(resolution_divisor=8)
    assert get_backbone("efficientnet_b0").scale(rule.multipliers(1000, 224, by8), by8).resolution_px == 296
    with pytest.raises(ValueError, match="its resolution cap of 200 px is below the base network's 224 px"):
        parse_rule("fast_max200").multipliers(2, 224)


def test_capped_rules_in_a_family_stay_under_the_cap_at_matched_macs():
    """The paper's family reaches 600 px by φ = 7; capped at 300 px, the same MACs go to depth and width."""
    members = plan_family("efficientnet_b0", PAPER_COEFFICIENTS, [1, 3, 5, 7], ["compound_max300", "fast_max240"],
                          num_classes=10, regularisation=FIXED)
    by = {(m.method, m.phi): m for m in members}
    assert by[("compound", 7)].model.resolution_px > 500
    for m in members:
        if m.method != "compound":
            assert m.model.resolution_px <= (300 if m.method == "compound_max300" else 240)
            assert abs(m.macs_mismatch) < 0.05
    capped = by[("compound_max300", 7)].model.multipliers
    assert capped.depth_mult > 1.2**7 and capped.width_mult > 1.1**7  # the pixels' share moved there


@pytest.mark.parametrize("backbone", ["efficientnet_b0", "resnet50"])
def test_the_pycls_rules_are_matched_to_the_compound_macs(backbone):
    members = plan_family(backbone, PAPER_COEFFICIENTS, [1, 2], ["fast", "uniform", "d1_w2_r1"], num_classes=10,
                          regularisation=FIXED)
    assert [m.member_id for m in members] == [
        "compound_phi1", "fast_phi1", "uniform_phi1", "d1_w2_r1_phi1",
        "compound_phi2", "fast_phi2", "uniform_phi2", "d1_w2_r1_phi2"]
    for m in members[1:4] + members[5:]:
        assert abs(m.macs_mismatch) < 0.1, m.member_id
        d, w, r = _dwr(m.scale)  # on the rule's split: the width factor of fast is s^0.4, depth s^0.1
        rule = parse_rule(m.method)
        s = d ** (1 / rule.depth)
        assert (w, r) == pytest.approx((s ** (rule.width / 2), s ** (rule.resolution / 2)))


def test_compound_without_a_cap_is_the_family_itself():
    with pytest.raises(ValueError, match="compound is the family every rule is compared with"):
        plan_family("resnet18", PAPER_COEFFICIENTS, [1], ["depth", "compound"])
    with pytest.raises(ValueError, match="baselines name fast twice"):
        plan_family("resnet18", PAPER_COEFFICIENTS, [1], ["fast", "d1_w8_r1", "fast"])


# --- regularisation that grows with the model

def test_the_default_dropout_rule_gives_the_published_efficientnets_their_dropout():
    """B0..B7 at their published MACs (Table 2) get their published dropout (the reference's
    dropout_rate: 0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.5, 0.5) within 0.05; so do the networks
    built from their published coefficients, at their measured MACs."""
    published = [p for p in published_efficientnets() if p.macs is not None]
    assert [p.name for p in published] == [f"b{k}" for k in range(8)]
    b0 = published[0]
    built_b0 = b0.scaled().cost().macs
    rule = Regularisation()
    got = []
    for p in published:
        dropout, drop_path = rule.at(p.macs / b0.macs)
        assert drop_path is None  # the backbone's own unless the config sets it
        assert abs(dropout - p.dropout) <= 0.05, (p.name, dropout, p.dropout)
        assert abs(rule.at(p.scaled().cost().macs / built_b0)[0] - p.dropout) <= 0.05, p.name
        got.append(dropout)
    assert got[0] == 0.2 and got[-1] == pytest.approx(0.5) and got == sorted(got)


def test_dropout_is_clamped_below_the_base_and_above_the_end():
    rule = Regularisation(dropout=(0.2, 0.5), drop_path=(0.1, 0.3), end_macs_ratio=100)
    assert rule.at(0.25) == (0.2, 0.1)  # phi < 0: the base's
    assert rule.at(1e6) == (0.5, 0.3)  # beyond the end: the end's
    assert rule.at(10) == pytest.approx((0.35, 0.2))  # half way in log cost
    assert FIXED.at(10) == (None, None)
    with pytest.raises(ValueError, match=r"regularisation.dropout must be \[start, end\], each a number in \[0, 1\)"):
        Regularisation(dropout=(0.2, 1.5))
    with pytest.raises(ValueError, match="regularisation.end_macs_ratio must be a finite number > 1"):
        Regularisation(end_macs_ratio=1)


def test_family_members_carry_the_dropout_of_their_phi_and_build_with_it():
    members = plan_family("efficientnet_b0", PAPER_COEFFICIENTS, [-1, 0, 3, 7], ["width"], num_classes=10)
    by = {m.member_id: m for m in members}
    assert by["compound_phim1"].model.network.dropout == 0.2 == by["compound_phi0"].model.network.dropout
    assert by["compound_phi7"].model.network.dropout == 0.5  # 1.92^7 = 96x, past B7's 94.9x
    d3 = by["compound_phi3"].model.network.dropout
    assert 0.3 < d3 < 0.4 and by["width_phi3"].model.network.dropout == d3  # alike at a φ
    module = by["compound_phi3"].model.build(10, device="meta")
    assert [m.p for m in module.modules() if isinstance(m, nn.Dropout)] == [d3]


def test_regularised_sets_only_what_it_is_given():
    model = get_backbone("efficientnet_b0").scale()
    assert regularised(model, None) is model
    both = regularised(model, 0.4, 0.1).network
    assert (both.dropout, both.drop_path) == (0.4, 0.1)
    assert regularised(model, None, 0.3).network.dropout == model.network.dropout == 0.2
