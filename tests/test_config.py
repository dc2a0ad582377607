"""settings.py: the schemas reject unknown keys and wrong types, naming the key; building the
frozen settings checks ranges and fields that depend on each other, and names the field."""

import os
from dataclasses import asdict, fields

import pytest
from conftest import compose_grid
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from scaling_search.cli import CONF_DIR, _describe, boolean_keys, preflight
from scaling_search.grid import validate as grid_validate
from scaling_search.models.scaling import Rounding
from scaling_search.plan.space import MAX_GRID_POINTS, SearchSpace
from scaling_search.settings import (
    DataConfig,
    DataSettings,
    GridConfig,
    GridSettings,
    RaySettings,
    RoundingConfig,
    RunnerConfig,
    ScaleConfig,
    ScaleSettings,
    TrainConfig,
    TrainSettings,
    coefficients_from,
)

GOOD = {  # the rest from the schema's defaults
    "backbone": {"name": "efficientnet_b0"},
    "coefficients": {"depth_coef": 1.2, "width_coef": 1.1, "resolution_coef": 1.15},
    "phis": [1, 2],
    "rounding": {"channel_divisor": 8},
    "num_classes": 10,
    "out_dir": "results/x",
}


def test_good_settings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = ScaleSettings.from_config(GOOD)
    assert s.phis == (1.0, 2.0) and s.num_classes == 10 and s.resolution_px is None
    assert s.out_dir == tmp_path / "results" / "x"  # absolute, from the launch folder
    assert s.rounding == Rounding() and s.data is None  # emission alone builds no training settings


@pytest.mark.parametrize("change,message", [
    ({"sede": 1}, "Key 'sede' not in 'ScaleConfig'"),
    ({"coefficients": {"phi": 1}}, "coefficients.phi: Key 'phi' not in"),
    ({"rounding": {"divisor": 8}}, "rounding.divisor: Key 'divisor' not in"),
    ({"num_classes": True}, "num_classes: Value 'True' of type 'bool' could not be converted to Integer"),
    ({"resolution_px": "big"}, "resolution_px: Value 'big'"),
    ({"phis": ["a"]}, "phis[0]: Value 'a'"),
    ({"phis": 2}, "phis: "),
    ({"imports": "mymod"}, "imports: "),
    ({"trainer": {"epochs": 1.5}}, "trainer.epochs: Value '1.5' of type 'float' could not be converted"),
    ({"runner": {"cpus_per_trial": "x"}}, "runner.cpus_per_trial: Value 'x'"),
    ({"train": "maybe"}, "train: Value 'maybe' is not a valid bool"),
])
def test_the_schema_rejects_unknown_keys_and_wrong_types_naming_the_key(change, message):
    with pytest.raises(OmegaConfBaseException) as e:
        ScaleSettings.from_config({**GOOD, **change})
    assert _describe(e.value).startswith(message), _describe(e.value)


@pytest.mark.parametrize("change,message", [
    ({"coefficients": {"depth_coef": 0.9, "width_coef": 1.1, "resolution_coef": 1.15}},
     "coefficients.depth_coef must be >= 1"),
    ({"coefficients": {"depth_coef": 1.5, "width_coef": 1.1, "resolution_coef": 1.15}},
     "coefficients break the constraint"),
    ({"backbone": {"name": "vgg"}}, "unknown backbone 'vgg'; known:"),
    ({"phis": []}, "phis must be a non-empty list"),
    ({"resolution_px": 0}, "resolution_px must be a positive integer"),
    ({"num_classes": 0}, "num_classes must be a positive integer"),
    ({"base": {"width_mult": 0}}, "base.width_mult must be a number > 0"),
    ({"rounding": {"repeats": "floor"}}, "rounding.repeats rounding must be"),
    ({"imports": ["no_such_module_xyz"]}, "cannot import 'no_such_module_xyz'"),
    ({"out_dir": ""}, "out_dir must be a folder path"),
    ({"train": True, "seeds_per_member": 0}, "seeds_per_member must be a positive integer"),
    ({"train": True, "runner": {"kind": "optuna_tpe"}}, "runner.kind must be ray or local for Step 2"),
    ({"train": True, "data": {"name": "cifar10"}}, "data.root must name the folder holding cifar10"),
    ({"train": True, "study": {"storage": "optuna.db"}}, "study.storage must be an SQLAlchemy URL"),
])
def test_bad_values_name_the_field(change, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        ScaleSettings.from_config({**GOOD, **change})


@pytest.mark.parametrize("gpus_per_trial", [None, 0.5])  # None, the default, once skipped the checks
@pytest.mark.parametrize("change,message", [
    ({"max_concurrent": 0}, "runner.max_concurrent must be a positive integer"),
    ({"grace_period": 0}, "runner.grace_period must be a positive integer"),
    ({"reduction_factor": 1}, "runner.reduction_factor must be >= 2"),
    ({"cpus_per_trial": 0}, "runner.cpus_per_trial must be a number > 0"),
])
def test_runner_settings_are_checked_whatever_gpus_per_trial_is(gpus_per_trial, change, message):
    with pytest.raises(ValueError, match=message):
        RaySettings(gpus_per_trial=gpus_per_trial, **change)


def test_bad_runner_settings_fail_the_grid_config_too(tmp_path):
    with pytest.raises(ValueError, match="runner.max_concurrent must be a positive integer"):
        compose_grid(tmp_path, "runner.max_concurrent=0")


@pytest.mark.parametrize("schema,settings", [(DataConfig, DataSettings), (TrainConfig, TrainSettings),
                                             (RoundingConfig, Rounding)])
def test_a_settings_schema_has_its_fields_and_defaults(schema, settings):
    assert [f.name for f in fields(schema)] == [f.name for f in fields(settings)]
    assert OmegaConf.to_container(OmegaConf.structured(schema)) == asdict(settings())


def test_the_runner_schema_is_ray_settings_and_the_runner_choice():
    names = [f.name for f in fields(RunnerConfig)]
    assert names == [f.name for f in fields(RaySettings)] + ["kind", "n_trials", "executor"]


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))


def _every_option(app: str, experiments: list[str]) -> list[str]:
    jobs = [f"experiment={e}" for e in experiments]
    for group in ("backbone", "data", "rounding", "trainer", "runner") + (("space",) if app == "grid" else ()):
        jobs += [f"{group}={option}" for option in _options(group)
                 if not (app == "scale" and option == "optuna_tpe")]  # a Step-1 runner
    return jobs


@pytest.mark.parametrize("app,settings,experiments", [
    ("grid", GridSettings, ["cpu_demo", "paper_step1"]),
    ("scale", ScaleSettings, ["step2_demo", "step2_table3"]),
])
def test_every_config_file_fits_the_schema_and_builds_settings(tmp_path, app, settings, experiments):
    """Each option of each group, and each preset, composes against the schema and passes the
    settings' own checks: no config file holds a key the schema lacks or a value it refuses."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for job in _every_option(app, experiments):
            cfg = compose(app, overrides=[job, "data.root=/data", "dry_run=true", f"out_dir={tmp_path}"])
            assert OmegaConf.get_type(cfg).__name__ == f"{app.capitalize()}Config", job
            s = settings.from_config(cfg)
            assert s.data is not None and s.runner_kind == cfg.runner.kind, job


def test_coefficients_may_allow_below_one_where_no_search_needs_it():
    assert coefficients_from({"depth_coef": 0.5, "width_coef": 1, "resolution_coef": 1},
                             require_at_least_one=False).depth_coef == 0.5


def test_every_built_in_backbone_has_a_config_group_file():
    from scaling_search.models.backbones import list_backbones

    for name in list_backbones():
        cfg = OmegaConf.load(CONF_DIR / "backbone" / f"{name}.yaml")
        assert cfg.name == name and cfg.tag


GRID_BOOLEANS = {"dry_run", "report", "include_baseline", "data.download", "data.verify", "data.flip",
                 "trainer.amp", "trainer.zero_init_residual", "trainer.channels_last", "trainer.compile",
                 "trainer.cudnn_benchmark", "trainer.cuda_graphs", "trainer.cuda_channels_last",
                 "runner.asha", "runner.checkpoint", "racing.enabled"}


def test_the_preflight_knows_every_boolean_of_each_schema():
    assert boolean_keys(GridConfig) == GRID_BOOLEANS
    scale_only = {"compare_published", "train"}
    assert boolean_keys(ScaleConfig) == GRID_BOOLEANS - {"include_baseline", "racing.enabled"} | scale_only


def test_booleans_spelled_as_words_are_read_as_booleans(tmp_path, capsys):
    """``dry_run=no`` once did a dry run (a plain cast of a non-empty string), and
    ``include_baseline=no`` kept the baseline; the words are accepted and mean what they say."""
    words = ["dry_run=no", "include_baseline=no", "trainer.amp=off", "data.flip=yes", "runner.asha=1",
             "report=False"]
    preflight("scaling_search.grid", "grid", [*words, f"out_dir={tmp_path / 'run'}"], grid_validate)  # no exit
    s = compose_grid(tmp_path, *words)
    assert (s.dry_run, s.include_baseline, s.trainer.amp, s.data.flip, s.runner.asha, s.report) == (
        False, False, False, True, True, False)
    assert capsys.readouterr().err == ""


def test_phi_is_bounded_by_how_far_a_dimension_grows(tmp_path):
    """1.2^37 = 850 and 1.2^38 = 1,020 (depth at the paper's alpha): 37 is the largest whole phi
    within the 1,000x limit."""
    at = {**GOOD, "out_dir": str(tmp_path / "out")}
    assert ScaleSettings.from_config({**at, "phis": [-50, 37]}).phis == (-50.0, 37.0)
    with pytest.raises(ValueError, match=r"at phi=38 the depth grows by 1.2\^38 = 1.02e\+03x, over the limit "
                                         r"of 1,000x; keep phis <= 37.9 with these coefficients"):
        ScaleSettings.from_config({**at, "phis": [1, 38]})


def test_the_grid_size_is_counted_not_enumerated():
    """100,000 points pass, one more is refused, and a grid of 10^27 points is refused at once
    (enumerating it would never end)."""
    at_limit = SearchSpace.from_values(depth_range=("1", "100.999"), width_range=(1, 1), resolution_range=(1, 1),
                                       step="0.001", target=2, tolerance=0.1)
    assert at_limit.size == MAX_GRID_POINTS == 100_000
    with pytest.raises(ValueError, match=r"100,001 x 1 x 1 = 100,001 points \(alpha x beta x gamma\), over the "
                                         r"limit of 100,000; use a coarser space.step or narrower ranges"):
        SearchSpace.from_values(depth_range=("1", "101"), width_range=(1, 1), resolution_range=(1, 1),
                                step="0.001", target=2, tolerance=0.1)
    with pytest.raises(ValueError, match="1,000,000,001 x 500,000,001 x 500,000,001 = "):
        SearchSpace.from_values(step="1e-9")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder; test_bad_input "
                                              "refuses /proc/self, which root cannot write either")
def test_an_out_dir_this_user_cannot_write_is_refused(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(ValueError, match=f"out_dir '{locked / 'run'}' cannot be created: '{locked}' is not "
                                             "writable by this user"):
            compose_grid(locked)  # out_dir=locked/run
        with pytest.raises(ValueError, match=f"out_dir '{locked}' is not writable by this user"):
            ScaleSettings.from_config({**GOOD, "train": True, "out_dir": str(locked)})
        # Emission puts a new folder in place of out_dir: the folder holding it is what is written.
        assert ScaleSettings.from_config({**GOOD, "out_dir": str(locked)}).out_dir == locked
        with pytest.raises(ValueError, match=f"cannot be created: '{locked}' is not writable"):
            ScaleSettings.from_config({**GOOD, "out_dir": str(locked / "family")})
    finally:
        locked.chmod(0o755)
