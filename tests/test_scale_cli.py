"""``python -m scaling_search.scale`` as a user runs it: the outputs of a run, and bad input
as one line on stderr with exit status 2, no traceback, and nothing written."""

import pandas as pd
import pytest
from omegaconf import OmegaConf

from scaling_search.cli import preflight
from scaling_search.scale import validate

PROG = "scaling_search.scale"


def test_emits_configs_tables_and_published_comparison(run_cli, tmp_path):
    out = tmp_path / "out"
    r = run_cli(PROG, f"out_dir={out}", "phis=[0,1,2]")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (out / "model").iterdir()) == [
        f"efficientnet_b0_phi{i}.yaml" for i in range(3)]
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["resolution_px"]) == [224, 258, 296]
    # pycls dev/model_complexity.json, EN-B0: 385,825,092 multiply-adds, less the bias adds it
    # also counts (9,340 in the squeeze-and-excitation convs, 1,000 in the classifier)
    assert summary.loc[0, "macs"] == 385_825_092 - 9_340 - 1_000
    cfg = OmegaConf.load(out / "model" / "efficientnet_b0_phi1.yaml")
    assert cfg.resolution_px == 258 and cfg.cost.macs == summary.loc[1, "macs"]
    assert [s.repeats for s in cfg.stages] == [2, 3, 3, 4, 4, 5, 2]  # B2's
    published = pd.read_csv(out / "published.csv")
    assert published.loc[1, "formula_architecture"] == "b2"
    assert OmegaConf.load(out / "coefficients.yaml") == {
        "depth_coef": 1.2, "width_coef": 1.1, "resolution_coef": 1.15}
    assert OmegaConf.load(out / "config.yaml").phis == [0.0, 1.0, 2.0]
    assert "efficientnet_b0_phi2" in r.stdout  # the summary is printed too
    assert list(tmp_path.iterdir()) == [out]  # Hydra wrote nothing of its own


def test_other_backbone_and_rerun_replaces_output(run_cli, tmp_path):
    out = tmp_path / "out"
    (out / "model").mkdir(parents=True)
    (out / "model" / "stale.yaml").write_text("old: 1\n")
    r = run_cli(PROG, f"out_dir={out}", "backbone=resnet18", "phis=[-1,1]", "rounding=plain")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (out / "model").iterdir()) == ["resnet18_phi1.yaml", "resnet18_phim1.yaml"]
    assert not (out / "published.csv").exists()


@pytest.mark.parametrize("args,message", [
    (["coefficients.depth_coef=0.9"], "coefficients.depth_coef must be >= 1"),
    (["coefficients.width_coef=nan"], "coefficients.width_coef must be finite"),
    (["resolution_px=0"], "resolution_px must be a positive integer"),
    (["backbone.name=nope"], "unknown backbone 'nope'; known: efficientnet_b0"),
    (["backbone=nope"], "Could not find 'backbone/nope'"),
    (["phis=[1,2"], "no viable alternative"),
    (["foo=1"], "Could not override 'foo'"),
    (["rounding=bogus"], "Could not find 'rounding/bogus'"),
    (["rounding.channel_divisor=1", "rounding.channel_min=0", "rounding.channel_min_fraction=0",
      "phis=[-60]"], "rounds the stem (32 channels) to 0 channels"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(run_cli, tmp_path, args, message):
    out = tmp_path / "out"
    r = run_cli(PROG, f"out_dir={out}", *args)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{PROG}: error: ") and message in lines[0], r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args,message", [
    (["num_classes=ten"], "num_classes: Value 'ten' of type 'str' could not be converted to Integer"),
    (["phis=2"], "phis: Invalid value assigned: int is not a ListConfig, list or tuple."),
    (["phis=[1,x]"], "phis[1]: Value 'x' of type 'str' could not be converted to Float"),
    (["+coefficients.phi=1"], "coefficients.phi: Key 'phi' not in 'CoefficientsConfig'"),
    (["train=true", "runner.grace_period=0"], "runner.grace_period must be a positive integer, got 0"),
    # phi=100 walked 8e7 blocks per stage and never ended; phi=1e10 overflowed a float
    (["phis=[1,100]"], "phis: at phi=100 the depth grows by 1.2^100 = 8.28e+07x, over the limit of 1,000x; "
                       "keep phis <= 37.9 with these coefficients"),
    # alpha*beta^2*gamma^2 = 1.2*1.1^2*1.15^2 = 1.92027, and 1.92027^11 = 1,309: the depth-only
    # baseline matched to the compound member's MACs would be 1,309 times as deep
    (["train=true", "phis=[11]"], "phis: at phi=11 the depth of the depth-only baseline grows by 1.92027^11 = "
                                  "1.31e+03x, over the limit of 1,000x; keep phis <= 10.6 with these "
                                  "coefficients, or leave that baseline out"),
    (["train=2"], "train must be true or false, got 2"),
])
def test_the_schema_and_the_settings_name_the_bad_key(capsys, tmp_path, args, message):
    """The preflight as the app runs it, in this process: one line, exit status 2."""
    with pytest.raises(SystemExit) as e:
        preflight(PROG, "scale", [*args, f"out_dir={tmp_path / 'out'}"], validate)
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines() == [f"{PROG}: error: {message}"]


def test_an_out_dir_that_is_a_file_is_refused_and_kept(capsys, tmp_path):
    """The emission once replaced a file given as out_dir; training gave a traceback."""
    notes = tmp_path / "notes.txt"
    notes.write_text("a user's notes\n")
    for args in ([], ["train=true", "runner=local"]):
        with pytest.raises(SystemExit) as e:
            preflight(PROG, "scale", [*args, f"out_dir={notes}"], validate)
        assert e.value.code == 2
        assert capsys.readouterr().err.splitlines() == [
            f"{PROG}: error: out_dir {str(notes)!r} is a file, not a folder; give the path of a new folder "
            "or of a run's folder"]
    assert notes.read_text() == "a user's notes\n"


def test_failed_run_keeps_the_previous_output(run_cli, tmp_path):
    out = tmp_path / "out"
    assert run_cli(PROG, f"out_dir={out}", "phis=[1]", "compare_published=false").returncode == 0
    before = sorted(p.name for p in out.rglob("*"))
    assert run_cli(PROG, f"out_dir={out}", "backbone.name=nope").returncode == 2
    assert sorted(p.name for p in out.rglob("*")) == before


def test_multirun_checks_every_job_before_the_first_runs(run_cli, tmp_path):
    r = run_cli(PROG, "--multirun", "backbone.name=resnet18,nope", "phis=[0]")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"{PROG}: error: unknown backbone 'nope'; known: " + r.stderr.split("known: ")[1].strip()]
    assert list(tmp_path.iterdir()) == []  # not even job 0's output, nor Hydra's sweep folder


def test_multirun_writes_one_folder_per_job(run_cli, tmp_path):
    r = run_cli(PROG, "--multirun", "backbone=resnet18,mobilenet_v2", "phis=[0]")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "results" / "scale").iterdir()) == ["mobilenet_v2", "resnet18"]


@pytest.mark.slow  # a whole emission in a subprocess
def test_emits_the_family_of_another_rule_at_the_compound_macs(run_cli, tmp_path):
    """``rule=fast``: at each φ, pycls's fast rule's network matched to the compound member's MACs."""
    out = tmp_path / "out"
    r = run_cli(PROG, f"out_dir={out}", "phis=[0,1,2]", "rule=fast_max256", "report=false")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (out / "model").iterdir()) == [
        "efficientnet_b0_fast_max256_phi1.yaml", "efficientnet_b0_fast_max256_phi2.yaml", "efficientnet_b0_phi0.yaml"]
    summary = pd.read_csv(out / "summary.csv")
    assert (summary["resolution_px"] <= 256).all()
    cfg = OmegaConf.load(out / "model" / "efficientnet_b0_fast_max256_phi2.yaml")
    assert cfg.rule == "fast_max256" and abs(cfg.cost.macs / cfg.target_macs - 1) < 0.05
    assert cfg.width_mult > cfg.depth_mult > 1  # most of the cost goes to width
    assert 0.2 < cfg.dropout < 0.5
    assert not (out / "published.csv").exists()  # the published B0-B7 are the compound family's


@pytest.mark.parametrize("args,message", [
    (["rule=nope"], "rule: unknown scaling rule 'nope'; give depth, width, resolution, uniform, fast"),
    (["train=true", "rule=fast"], "rule=fast names the emitted family; with train=true the compound family is "
                                  "trained: add fast to baselines instead and leave rule=compound"),
    (["train=true", "baselines=[depth,compound]"], "baselines must be a list drawn from the scaling rules: "
                                                   "compound is the family every rule is compared with"),
    (["train=true", "baselines=[d1_g1]"], "baselines must be a list drawn from the scaling rules: scaling rule "
                                          "'d1_g1' scales groups (g)"),
    (["train=true", "baselines=[fast_max100]"], "its resolution cap of 100 px is below the base network's 224 px"),
    (["regularisation.dropout=[0.2,1.5]"], "regularisation.dropout must be [start, end], each a number in [0, 1)"),
    (["regularisation.end_macs_ratio=0.5"], "regularisation.end_macs_ratio must be a finite number > 1"),
    (["train=true", "baselines=[fast]", "phis=[30]"], "phis: at phi=30 the width of the fast baseline grows by "
                                                      "1.29821^30"),  # 1.92027^0.4
])
def test_bad_rules_and_regularisation_are_one_line(capsys, tmp_path, args, message):
    with pytest.raises(SystemExit) as e:
        preflight(PROG, "scale", [*args, f"out_dir={tmp_path / 'out'}"], validate)
    assert e.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"{PROG}: error: ") and message in err[0], err


def test_an_emission_into_a_run_folder_is_refused_and_its_family_kept(run_cli, tmp_path):
    """A search's step2/ holds its winner's family; emitting the paper's over it lost that."""
    run = tmp_path / "search"
    (run / "step2" / "model").mkdir(parents=True)
    (run / "search.json").write_text("{}")
    (run / "step2" / "model" / "winner_phi1.yaml").write_text("depth_mult: 1.2\n")
    r = run_cli(PROG, f"out_dir={run / 'step2'}", "phis=[1]")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert f"lies inside the run folder {run}" in lines[0]
    assert sorted(p.name for p in (run / "step2" / "model").iterdir()) == ["winner_phi1.yaml"]
