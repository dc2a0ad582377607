"""scaling.py: the rounding rules and multipliers, against the TF reference's published
coefficients (B0–B8, L2) and the paper's α, β, γ (../shared/reference/efficientnet.json)."""

import math

import pytest

from scaling_search.models.scaling import PAPER_COEFFICIENTS, Coefficients, Multipliers, Rounding

REF = Rounding()


def _published(reference):
    return list(reference["official_coefficients"].items())


def test_paper_coefficients_match_reference(reference):
    c = reference["compound_scaling"]
    assert (PAPER_COEFFICIENTS.depth_coef, PAPER_COEFFICIENTS.width_coef,
            PAPER_COEFFICIENTS.resolution_coef) == (c["alpha"], c["beta"], c["gamma"])
    assert PAPER_COEFFICIENTS.product == pytest.approx(c["product"], abs=1e-5)


@pytest.mark.parametrize("phi", [-2, -0.5, 0, 1, 2.5, 7])
def test_multipliers_are_powers_and_cost_grows_by_product(phi):
    m = PAPER_COEFFICIENTS.multipliers(phi)
    assert m.depth_mult == pytest.approx(1.2**phi)
    assert m.width_mult == pytest.approx(1.1**phi)
    assert m.resolution_mult == pytest.approx(1.15**phi)
    assert PAPER_COEFFICIENTS.formula_macs_ratio(phi) == pytest.approx(
        m.depth_mult * m.width_mult**2 * m.resolution_mult**2)


def test_negative_phi_scales_down():
    m = PAPER_COEFFICIENTS.multipliers(-1)
    assert m.depth_mult < 1 and m.width_mult < 1 and m.resolution_mult < 1


def test_channel_rounding_reproduces_every_published_stage_width(reference):
    b0 = reference["official_coefficients"]["b0"]
    for name, c in _published(reference):
        w = c["width_coefficient"]
        got = [REF.channels(ch * w) for ch in b0["stage_out_channels"]]
        assert got == c["stage_out_channels"], name
        assert REF.channels(b0["stem_channels"] * w) == c["stem_channels"], name
        assert REF.channels(b0["head_channels"] * w) == c["head_channels"], name


def test_repeat_rounding_reproduces_every_published_depth(reference):
    b0 = reference["official_coefficients"]["b0"]
    for name, c in _published(reference):
        got = [REF.repeats_of(n * c["depth_coefficient"]) for n in b0["stage_repeats"]]
        assert got == c["stage_repeats"], name


def test_channel_rule_never_more_than_ten_percent_below():
    for exact in [x / 4 for x in range(4, 4000)]:
        c = REF.channels(exact)
        assert c % 8 == 0 and c >= 8
        assert c >= 0.9 * exact
    # The bump: 9.5 rounds to 8, which is 84% of 9.5, so one more divisor makes 16;
    # 8.8 rounds to 8, 91% of it, and stays.
    assert REF.channels(9.5) == 16 and REF.channels(8.8) == 8 and REF.channels(13) == 16
    assert Rounding(channel_divisor=8).channels(36 * 0.5) == 24  # 18 -> 16 is 89% -> 24


def test_repeats_round_option_and_float_noise():
    assert REF.repeats_of(3 * 1.0) == 3 and REF.repeats_of(3.0000000001) == 3
    assert REF.repeats_of(2.01) == 3
    r = Rounding(repeats="round")
    assert [r.repeats_of(x) for x in (1.2, 2.5, 3.6)] == [1, 3, 4]


def test_resolution_rounding_modes(reference):
    # The reference's note: phi=1 with the searched coefficients gives 258 px.
    assert REF.resolution_of(224 * 1.15) == 258
    assert Rounding(resolution="floor").resolution_of(257.6) == 257
    assert Rounding(resolution="ceil").resolution_of(257.2) == 258
    assert Rounding(resolution_divisor=32).resolution_of(257.6) == 256
    assert Rounding(resolution="ceil", resolution_divisor=32).resolution_of(257.6) == 288


@pytest.mark.parametrize("field", ["depth_coef", "width_coef", "resolution_coef"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 0, -1.2, "x"])
def test_coefficients_reject_bad_values_naming_the_field(field, bad):
    kwargs = {"depth_coef": 1.2, "width_coef": 1.1, "resolution_coef": 1.15, field: bad}
    with pytest.raises(ValueError, match=field):
        Coefficients(**kwargs)


def test_search_requires_coefficients_at_least_one():
    with pytest.raises(ValueError, match="depth_coef must be >= 1"):
        Coefficients(0.9, 1.1, 1.15).require_at_least_one()
    assert Coefficients(1.0, 1.0, 1.0).require_at_least_one().product == 1.0


def test_phi_must_be_finite():
    with pytest.raises(ValueError, match="phi"):
        PAPER_COEFFICIENTS.multipliers(float("nan"))


@pytest.mark.parametrize("kwargs,field", [
    ({"channel_divisor": 0}, "channel_divisor"), ({"channel_min_fraction": 1.0}, "channel_min_fraction"),
    ({"repeats": "floor"}, "repeats"), ({"resolution": "up"}, "resolution"),
    ({"resolution_divisor": 2.5}, "resolution_divisor"), ({"channel_min": -1}, "channel_min"),
])
def test_rounding_rejects_bad_settings(kwargs, field):
    with pytest.raises(ValueError, match=field):
        Rounding(**kwargs)


def test_implied_phi_inverts_multipliers():
    m = PAPER_COEFFICIENTS.multipliers(2.5)
    phi = PAPER_COEFFICIENTS.implied_phi(m)
    assert phi == pytest.approx({"depth": 2.5, "width": 2.5, "resolution": 2.5})
    flat = Coefficients(1.0, 1.1, 1.15).implied_phi(Multipliers(1.2, 1.0, 1.0))
    assert math.isnan(flat["depth"]) and flat["width"] == 0.0
