"""config.py: plain dicts (resolved Hydra configs) become typed settings, or one ValueError
that names the field."""

import pytest
from omegaconf import OmegaConf

from scaling_search.settings import ScaleSettings, coefficients_from, rounding_from

GOOD = {
    "backbone": "efficientnet_b0",
    "coefficients": {"depth_coef": 1.2, "width_coef": 1.1, "resolution_coef": 1.15},
    "phis": [1, 2],
    "rounding": {"channel_divisor": 8},
    "resolution_px": None,
    "num_classes": 10,
    "out_dir": "results/x",
    "imports": [],
}


def test_good_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = ScaleSettings.from_dict(GOOD)
    assert s.phis == (1.0, 2.0) and s.num_classes == 10
    assert s.out_dir == tmp_path / "results" / "x"  # absolute, from the launch folder


@pytest.mark.parametrize("change,message", [
    ({"coefficients": {"depth_coef": 0.9, "width_coef": 1.1, "resolution_coef": 1.15}},
     "coefficients.depth_coef must be >= 1"),
    ({"coefficients": {"depth_coef": 1.2, "width_coef": 1.1}}, "coefficients: .*resolution_coef"),
    ({"coefficients": {"depth_coef": 1.2, "width_coef": 1.1, "resolution_coef": 1.15, "phi": 1}},
     "coefficients has unknown field"),
    ({"backbone": "vgg"}, "unknown backbone 'vgg'; known:"),
    ({"phis": []}, "phis must be a non-empty list"),
    ({"phis": ["a"]}, "phis must be numbers"),
    ({"resolution_px": 0}, "resolution_px must be a positive integer"),
    ({"num_classes": True}, "num_classes must be a positive integer"),
    ({"rounding": {"repeats": "floor"}}, "rounding.repeats rounding must be"),
    ({"rounding": {"divisor": 8}}, "rounding has unknown field"),
    ({"imports": "mymod"}, "imports must be a list"),
    ({"imports": ["no_such_module_xyz"]}, "cannot import 'no_such_module_xyz'"),
    ({"out_dir": ""}, "out_dir must be a folder path"),
    ({"sede": 1}, "config has unknown key\\(s\\) sede"),
])
def test_bad_settings_name_the_field(change, message):
    with pytest.raises(ValueError, match=message):
        ScaleSettings.from_dict({**GOOD, **change})


def test_coefficients_may_allow_below_one_where_no_search_needs_it():
    assert coefficients_from({"depth_coef": 0.5, "width_coef": 1, "resolution_coef": 1},
                             require_at_least_one=False).depth_coef == 0.5


def test_rounding_defaults_are_the_reference():
    assert rounding_from({}).channel_divisor == 8


def test_every_built_in_backbone_has_a_config_group_file():
    from scaling_search.models.backbones import list_backbones
    from scaling_search.cli import CONF_DIR

    for name in list_backbones():
        cfg = OmegaConf.load(CONF_DIR / "backbone" / f"{name}.yaml")
        assert cfg.name == name and cfg.tag
