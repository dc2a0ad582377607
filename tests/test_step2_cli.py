"""``python -m scaling_search.scale train=true``: Step 2 trained as a user runs it."""

import json
import os
import subprocess
import sys

import optuna
import pandas as pd
import pytest
from omegaconf import OmegaConf

from scaling_search.plan.emit import model_from_config

PROG = "scaling_search.scale"
# ResNet-18 at half depth, quarter width and 16 px; phi 0 and 1: 5 networks of 2 epochs.
TINY = ("train=true", "backbone=resnet18", "base.depth_mult=0.5", "base.width_mult=0.25", "resolution_px=16",
        "phis=[0,1]", "trainer.epochs=2", "data.num_images=400", "report=false")


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("step2")
    env = dict(os.environ)  # the installed package, as a user runs it
    env.pop("HYDRA_FULL_ERROR", None)

    def run(*args):
        return subprocess.run([sys.executable, "-m", PROG, *TINY, f"out_dir={tmp / 'run'}", *args], cwd=tmp,
                              env=env, capture_output=True, text=True, timeout=600)

    first = run("runner=local")
    assert first.returncode == 0, first.stderr[-3000:]
    return tmp / "run", first, run


@pytest.mark.slow  # a whole Step-2 training run (the module's first use trains it)
def test_family_and_baselines_are_trained_and_tabled(local_run):
    out, r, _ = local_run
    family = pd.read_csv(out / "family.csv")
    assert list(family["candidate_id"]) == ["compound_phi0", "compound_phi1", "depth_phi1", "width_phi1",
                                            "resolution_phi1"]
    assert set(family.columns) >= {"macs", "params", "activations", "top1_mean", "macs_mismatch", "pareto"}
    results = pd.read_csv(out / "results.csv")
    assert (results["status"] == "ok").all() and len(results) == 5
    # the family table is the mean of the trials, member by member
    for _, row in family.iterrows():
        assert row["top1_mean"] == results.loc[results["candidate_id"] == row["candidate_id"], "final_top1"].mean()
    comparison = pd.read_csv(out / "comparison.csv")
    assert len(comparison) == 1 and comparison.loc[0, "phi"] == 1
    singles = family[family["phi"] == 1].set_index("role")["top1_mean"]
    assert comparison.loc[0, "best_single"] == singles.drop("compound").idxmax()
    assert "phi=1: compound (top-1" in r.stdout and "at matched MACs" in r.stdout
    # every trained network is the one its emitted config describes
    cfg = OmegaConf.load(out / "configs" / "model" / "resnet18_phi1.yaml")
    compound1 = family.set_index("candidate_id").loc["compound_phi1"]
    assert model_from_config(cfg).cost(10).macs == compound1["macs"] == cfg.cost.macs
    assert cfg.num_classes == 10
    # each trial trained with its member's dropout: the base's 0.2 (ResNet's own is 0), more at phi=1
    members = pd.read_csv(out / "members.csv").set_index("candidate_id")
    assert members.loc["compound_phi0", "dropout"] == 0.2
    assert (members.loc[["compound_phi1", "depth_phi1", "width_phi1", "resolution_phi1"], "dropout"]
            == members.loc["compound_phi1", "dropout"]).all() and members.loc["compound_phi1", "dropout"] > 0.2
    specs = [json.loads(p.read_text())["spec"] for p in (out / "trials").glob("*.json")]
    assert specs and {sp["candidate_id"]: sp["dropout"] for sp in specs} == members["dropout"].to_dict()


@pytest.mark.slow  # a Step-2 training run of 6 networks
def test_any_rules_are_trained_tabled_and_reported(run_cli, tmp_path):
    """Rules beside the single dimensions, each matched to the compound member's MACs: trained,
    in family.csv and comparison.csv under their names, and in the report."""
    out = tmp_path / "run"
    r = run_cli(PROG, *TINY[:-1], "runner=local", "baselines=[width,fast,d1_w2_r1,uniform_max20]", f"out_dir={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    family = pd.read_csv(out / "family.csv")
    assert list(family["role"]) == ["compound", "compound", "width", "d1_w2_r1", "fast", "uniform_max20"]
    assert (family["macs_mismatch"].abs() < 0.2).all()
    assert family.loc[family["role"] == "uniform_max20", "resolution_px"].item() <= 20
    comparison = pd.read_csv(out / "comparison.csv").iloc[0]
    others = {m: comparison[f"{m}_top1"] for m in ("width", "d1_w2_r1", "fast", "uniform_max20")}
    assert comparison["best_single"] == "width"  # the only single dimension
    assert comparison["best_rule"] == max(others, key=others.get)
    assert comparison["compound_rule_margin"] == pytest.approx(comparison["compound_top1"] - max(others.values()))
    html = (out / "report.html").read_text()
    assert all(name in html for name in ("fast_phi1", "d1_w2_r1_phi1", "uniform_max20_phi1"))
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{out / 'optuna.db'}")
    assert {t.params["method"] for t in study.get_trials()} == {"compound", "width", "fast", "d1_w2_r1",
                                                                "uniform_max20"}


@pytest.mark.slow  # a whole Step-2 training run (the module's first use trains it)
def test_every_trial_is_in_the_optuna_study(local_run):
    out, _, _ = local_run
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{out / 'optuna.db'}")
    trials = study.get_trials()
    assert len(trials) == 5 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert {(t.params["method"], t.params["phi"]) for t in trials} == {
        ("compound", 0.0), ("compound", 1.0), ("depth", 1.0), ("width", 1.0), ("resolution", 1.0)}
    results = pd.read_csv(out / "results.csv").set_index("trial_id")
    for t in trials:
        assert t.value == results.loc[t.user_attrs["trial_id"], "final_top1"]
        assert len(t.intermediate_values) == 2


@pytest.mark.slow  # a whole Step-2 training run (the module's first use trains it)
def test_a_rerun_resumes_and_other_settings_are_refused(local_run):
    out, _, run = local_run
    before = {p.name: p.stat().st_mtime_ns for p in (out / "trials").iterdir()}
    again = run("runner=local")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "5 already done, 0 to run" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (out / "trials").iterdir()} == before
    changed = run("runner=local", "trainer.epochs=3")
    assert changed.returncode == 2
    assert changed.stderr.strip().endswith("choose another out_dir (or delete that folder) to start anew")
    assert "holds a Step-2 run with different trainer" in changed.stderr
    # another rule added to a finished run: refused up front, no file of the run rewritten
    # (it used to resume, rewrite config.yaml and members.csv, train, then fail in Optuna)
    files = {p.relative_to(out): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    added = run("runner=local", "baselines=[depth,width,resolution,fast]")
    assert added.returncode == 2 and "holds a Step-2 run with different baselines" in added.stderr
    assert {p.relative_to(out): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == files


@pytest.mark.slow  # a whole Step-2 training run (the module's first use trains it)
def test_ray_tune_trains_the_same_numbers_as_the_local_runner(local_run, tmp_path):
    out, _, run = local_run
    ray_out = tmp_path / "ray_run"
    r = run("runner=ray", "runner.num_cpus=2", f"out_dir={ray_out}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (ray_out / "ray" / "tune").is_dir()  # Ray Tune's experiment, restorable
    local = pd.read_csv(out / "family.csv").set_index("candidate_id")["top1_mean"]
    ray = pd.read_csv(ray_out / "family.csv").set_index("candidate_id")["top1_mean"]
    pd.testing.assert_series_equal(local, ray)


def test_dry_run_lists_the_members_and_writes_nothing(run_cli, tmp_path):
    r = run_cli(PROG, "experiment=step2_table3", "dry_run=true", f"out_dir={tmp_path / 'run'}")
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("| ") and "_phi" in line]
    assert [row.split("|")[1].strip() for row in rows] == [
        "compound_phi0", "compound_phi2", "depth_phi2", "width_phi2", "resolution_phi2"]
    assert "5 networks, 3 seed(s)" in r.stdout
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # a subprocess planning 8 networks
def test_dry_run_lists_any_rules_matched_to_the_compound_macs(run_cli, tmp_path):
    """``baselines`` is a list of scaling rules: names, pycls notation, weights, capped or not."""
    r = run_cli(PROG, "experiment=step2_demo", "dry_run=true", "phis=[0,2]",
                "baselines=[width,fast,uniform,d1_w2_r1,fast_max40,{depth:2,resolution:1}]",
                f"out_dir={tmp_path / 'run'}")
    assert r.returncode == 0, r.stderr
    rows = [line.split("|") for line in r.stdout.splitlines() if line.startswith("| ") and "_phi" in line]
    assert [row[1].strip() for row in rows] == [
        "compound_phi0", "compound_phi2", "width_phi2", "fast_phi2", "uniform_phi2", "d1_w2_r1_phi2",
        "fast_max40_phi2", "d2_r1_phi2"]
    mismatch = [float(row[13]) for row in rows]  # macs_mismatch: every rule matched to compound_phi2's MACs
    assert all(abs(x) < 0.1 for x in mismatch)
    assert int(rows[6][7]) <= 40  # resolution_px under the cap
    assert not (tmp_path / "run").exists()


STEP1_COEFFICIENTS = """# Step-1 winner of results/grid/x (resnet18 proxy on digits):
# d1.20_w1.10_r1.15, validation top-1 0.9800 over 1 seed(s)
depth_coef: 1.2
width_coef: 1.1
resolution_coef: 1.15
"""


def test_coefficients_come_from_a_step1_run_folder(run_cli, tmp_path):
    (tmp_path / "step1").mkdir()
    (tmp_path / "step1" / "coefficients.yaml").write_text(STEP1_COEFFICIENTS.replace("1.15", "1.2"))
    # (coefficients.* given beside the file is refused: tests/test_bad_input.py)
    r = run_cli(PROG, f"coefficients_file={tmp_path / 'step1'}", "phis=[1]", f"out_dir={tmp_path / 'out'}",
                "backbone=resnet18")  # the backbone the file was found with
    assert r.returncode == 0, r.stderr
    assert OmegaConf.load(tmp_path / "out" / "coefficients.yaml") == {
        "depth_coef": 1.2, "width_coef": 1.1, "resolution_coef": 1.2}
    assert "coefficients from" in r.stdout and (tmp_path / "out" / "report.html").is_file()


@pytest.mark.parametrize("content,message", [
    (None, "does not exist; give a Step-1 run's coefficients.yaml"),
    ("depth_coef: [1.2\n", "is not valid YAML"),
    ("depth_coef: 1.2\nwidth_coef: 1.1\n", "must hold exactly depth_coef, width_coef, resolution_coef"),
    ("- 1.2\n- 1.1\n- 1.15\n", "must hold exactly depth_coef, width_coef, resolution_coef (got list)"),
    (STEP1_COEFFICIENTS.replace("1.1\n", "wide\n"), "width_coef must be a number, got 'wide'"),
    (STEP1_COEFFICIENTS.replace("1.2\n", "0.8\n"), "depth_coef must be >= 1"),
    (STEP1_COEFFICIENTS.replace("1.2\n", "2.0\n"), "break the constraint: alpha*beta^2*gamma^2 = 2*1.1^2*1.15^2 = 3.2"),
])
def test_a_bad_coefficients_file_is_one_line_exit_2_nothing_written(run_cli, tmp_path, content, message):
    path = tmp_path / "coefficients.yaml"
    if content is not None:
        path.write_text(content)
    r = run_cli(PROG, f"coefficients_file={path}", f"out_dir={tmp_path / 'out'}", *TINY)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{PROG}: error: coefficients_file ") and message in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,message", [
    (["coefficients.depth_coef=1.5"], "coefficients break the constraint"),
    (["baselines=[height]"], "baselines must be a list drawn from the scaling rules: unknown scaling rule 'height'"),
    (["runner=optuna_tpe"], "runner.kind must be ray or local for Step 2"),
    (["seeds_per_member=0"], "seeds_per_member must be a positive integer"),
    (["base.width_mult=0"], "base.width_mult must be a number > 0"),
    (["runner.gpus_per_trial=1"], "no CUDA GPU"),
])
def test_bad_training_input_is_one_line_exit_2_nothing_written(run_cli, tmp_path, args, message):
    r = run_cli(PROG, f"out_dir={tmp_path / 'out'}", *TINY, *args)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{PROG}: error: ") and message in lines[0], r.stderr
    assert not (tmp_path / "out").exists()


def test_off_constraint_coefficients_scale_when_the_check_is_off(run_cli, tmp_path):
    r = run_cli(PROG, "coefficients.depth_coef=1.5", "constraint.tolerance=null", "phis=[1]",
                f"out_dir={tmp_path / 'out'}", "report=false")
    assert r.returncode == 0, r.stderr
    assert json.loads(json.dumps(OmegaConf.to_container(OmegaConf.load(tmp_path / "out" / "coefficients.yaml")))) \
        == {"depth_coef": 1.5, "width_coef": 1.1, "resolution_coef": 1.15}


@pytest.mark.slow
def test_a_multirun_of_training_jobs_gets_one_summary_and_report(run_cli, tmp_path):
    r = run_cli(PROG, "--multirun", "seed=0,1", *TINY[:-1], "trainer.epochs=1", "baselines=[width]",
                "runner=local", f"hydra.sweep.dir={tmp_path / 'sweep'}", f"out_dir={tmp_path}/runs/s${{seed}}")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = pd.read_csv(tmp_path / "sweep" / "multirun_summary.csv")
    assert list(summary["seed"]) == [0, 1] and list(summary["trials"]) == [3, 3]
    for seed in (0, 1):
        margin = pd.read_csv(tmp_path / "runs" / f"s{seed}" / "comparison.csv").loc[0, "compound_margin"]
        assert summary.loc[seed, "phi1_compound_margin"] == margin
    md = (tmp_path / "sweep" / "multirun_summary.md").read_text()
    assert md.count("resnet18 on digits (seed") == 2
    assert (tmp_path / "sweep" / "report.html").read_text().count('<details class="job"') == 2
