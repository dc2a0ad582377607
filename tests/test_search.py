"""A whole Step-1 search (steps/step1.py) through the in-process runner, Ray Tune and Optuna's TPE:
same seed, same table; failures recorded; interrupted searches resumed, not restarted."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
from conftest import PLUGINS, TINY, compose_grid
from services import missing

from scaling_search.steps.step1 import run_search

pytestmark = pytest.mark.slow

SAME = ["trial_id", "status", "params", "macs", "resolution_px", "final_top1", "best_top1",
        "final_val_loss", "epochs"]


# TINY on tests/plugins/gated_backbone.py: with SCALING_SEARCH_TEST_GATE set, the third and later
# trials wait, so a test's kill or Ctrl-C lands while they do, never after the search ended.
GATED = (*TINY, "imports=[gated_backbone]", "backbone.name=gated_net")


def _env() -> dict:
    """The installed package, as a user runs it, with the tests' plugin modules importable."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")])}


def _wait_at_the_gate(out_dir, gate, timeout=240):
    """Until two trials are recorded and a third waits at the gate."""
    deadline = time.time() + timeout
    while time.time() < deadline and (len(list((out_dir / "trials").glob("*.json"))) < 2
                                      or not list(gate.glob("built-2-*"))):
        time.sleep(0.1)
    assert list(gate.glob("built-2-*")), "no trial reached the gate"


def _run(settings):
    out = io.StringIO()
    outcome = run_search(settings, out)
    return outcome, out.getvalue()


def test_ray_and_local_runner_give_the_same_table(tmp_path, ray_session):
    local, _ = _run(compose_grid(tmp_path / "local", *TINY, "runner=local"))
    ray_run, log = _run(compose_grid(tmp_path / "ray", *TINY, "runner=ray"))
    a = pd.read_parquet(local.run_dir / "results.parquet")
    b = pd.read_parquet(ray_run.run_dir / "results.parquet")
    assert len(a) == 4 and (a["status"] == "ok").all()
    pd.testing.assert_frame_equal(a[SAME], b[SAME])
    ea, eb = (pd.read_parquet(o.run_dir / "epochs.parquet") for o in (local, ray_run))
    pd.testing.assert_frame_equal(ea[["trial_id", "epoch", "train/loss", "val/top1"]],
                                  eb[["trial_id", "epoch", "train/loss", "val/top1"]])
    assert (ray_run.run_dir / "ray" / "tune").is_dir()
    assert "[  4/4]" in log and "winner" in log
    # The winner is frozen and its Step-2 family emitted with the core's emitter.
    coefficients = (ray_run.run_dir / "coefficients.yaml").read_text()
    assert f"depth_coef: {ray_run.winner['depth_coef']:g}" in coefficients
    assert len(list((ray_run.run_dir / "step2" / "model").glob("resnet18_phi*.yaml"))) == 7


def test_every_trial_is_in_the_optuna_study(tmp_path):
    outcome, _ = _run(compose_grid(tmp_path, *TINY, "runner=local", "trainer.epochs=1"))
    study = optuna.load_study(study_name=None,
                              storage=f"sqlite:///{outcome.run_dir / 'optuna.db'}")
    trials = study.get_trials()
    results = pd.read_csv(outcome.run_dir / "results.csv")
    assert sorted(t.user_attrs["trial_id"] for t in trials) == sorted(results["trial_id"])
    for t in trials:
        row = results.set_index("trial_id").loc[t.user_attrs["trial_id"]]
        assert t.state == optuna.trial.TrialState.COMPLETE and t.value == pytest.approx(row["final_top1"])
        assert t.params["depth_coef"] == pytest.approx(row["depth_coef"])
        assert t.intermediate_values == {1: pytest.approx(row["final_top1"])}


def test_optuna_dashboard_opens_the_study(tmp_path):
    """The real optuna-dashboard server, over HTTP, lists the search's study and its trials."""
    import json
    import shutil
    import socket
    import urllib.request

    dashboard = shutil.which("optuna-dashboard", path=os.path.dirname(sys.executable)) or shutil.which(
        "optuna-dashboard")
    if dashboard is None:
        missing("optuna-dashboard is not installed (pip install -e '.[dev]')")
    outcome, _ = _run(compose_grid(tmp_path, *TINY, "runner=local", "trainer.epochs=1"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([dashboard, f"sqlite:///{outcome.run_dir / 'optuna.db'}", "--port", str(port),
                               "--host", "127.0.0.1", "--quiet"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        deadline, studies = time.time() + 60, None
        while time.time() < deadline and studies is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as r:
                    studies = json.loads(r.read())["study_summaries"]
            except OSError:
                time.sleep(0.3)
        assert studies is not None, "optuna-dashboard did not answer"
        (study,) = studies  # one study per run folder, named after what the search computes
        assert study["study_name"].startswith("search-")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{study['study_id']}",
                                    timeout=10) as r:
            detail = json.loads(r.read())
        assert len(detail["trials"]) == outcome.trials == 4
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_failing_trial_is_recorded_and_the_search_finishes(tmp_path, ray_session):
    settings = compose_grid(tmp_path, "imports=[flaky_backbone]", "backbone.name=flaky_net",
                            "backbone.tag=flaky", "proxy.depth_mult=1", "proxy.width_mult=1",
                            "proxy.resolution_px=16", "space=coarse",
                            "space.tolerance=0.02", "trainer.epochs=1", "runner=ray")
    outcome, log = _run(settings)
    results = pd.read_csv(outcome.run_dir / "results.csv")
    wide = results["width_mult"] > 1.05
    assert wide.any() and (~wide).any()
    assert (results.loc[wide, "status"] == "failed").all()
    assert results.loc[wide, "error"].str.contains("cannot train wider").all()
    assert (results.loc[~wide, "status"] == "ok").all()
    assert outcome.failed == wide.sum() and "failed" in log
    assert outcome.winner is not None and outcome.winner["width_coef"] <= 1.05
    study = optuna.load_study(study_name=None,
                              storage=f"sqlite:///{outcome.run_dir / 'optuna.db'}")
    states = [t.state for t in study.get_trials()]
    assert states.count(optuna.trial.TrialState.FAIL) == wide.sum()


def test_rerun_retrains_nothing_that_finished(tmp_path):
    settings = compose_grid(tmp_path, *TINY, "runner=local")
    first, _ = _run(settings)
    trials = sorted((first.run_dir / "trials").glob("*.json"))
    kept = {p.name: p.read_text() for p in trials[1:]}
    trials[0].unlink()  # as if the search had been interrupted before this trial ended
    second, log = _run(settings)
    assert "3 already done, 1 to run" in log
    for name, text in kept.items():
        assert (second.run_dir / "trials" / name).read_text() == text
    assert len(pd.read_csv(second.run_dir / "results.csv")) == 4


def test_a_changed_search_does_not_resume_into_the_old_folder(tmp_path):
    _run(compose_grid(tmp_path, *TINY, "runner=local", "trainer.epochs=1"))
    with pytest.raises(ValueError, match="different trainer"):
        run_search(compose_grid(tmp_path, *TINY, "runner=local", "trainer.epochs=2"), io.StringIO())


def test_killed_ray_search_resumes_where_it_stopped(tmp_path):
    """kill -9 of the whole search mid-way, then the same command again."""
    out_dir = tmp_path / "run"
    args = [sys.executable, "-m", "scaling_search.grid", *GATED,
            "trainer.epochs=2", "runner=ray", "runner.checkpoint=true", f"out_dir={out_dir}"]
    env = _env()
    proc = subprocess.Popen(args, cwd=tmp_path, env={**env, "SCALING_SEARCH_TEST_GATE": str(tmp_path)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    _wait_at_the_gate(out_dir, tmp_path)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p.name: p.read_text() for p in (out_dir / "trials").glob("*.json")}
    assert len(before) == 2  # the gate held the third
    assert not (out_dir / "results.csv").exists()  # the tables come at the end
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    results = pd.read_csv(out_dir / "results.csv")
    assert (results["status"] == "ok").all()
    total = len(results)
    assert f"{total - len(before)} to run" in done.stdout or f"{len(before)} already done" in done.stdout
    for name, text in before.items():  # finished trials were not trained again
        assert (out_dir / "trials" / name).read_text() == text


def test_ctrl_c_stops_without_ranking_and_the_rerun_finishes(tmp_path):
    out_dir = tmp_path / "run"
    args = [sys.executable, "-m", "scaling_search.grid", *GATED, "runner=local",
            f"out_dir={out_dir}"]
    env = _env()
    proc = subprocess.Popen(args, cwd=tmp_path, env={**env, "SCALING_SEARCH_TEST_GATE": str(tmp_path)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_at_the_gate(out_dir, tmp_path)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert [line for line in stderr.splitlines() if line.strip()][-1].startswith(
        "scaling_search.grid: interrupted")
    assert "Traceback" not in stderr
    assert not (out_dir / "results.csv").exists() and not (out_dir / "coefficients.yaml").exists()
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(re.search(r"(\d+) already done", done.stdout).group(1)) == 2  # the gate held the third
    assert (out_dir / "coefficients.yaml").is_file()


def test_optuna_tpe_samples_on_the_constraint_and_continues(tmp_path):
    settings = compose_grid(tmp_path, *TINY, "runner=optuna_tpe", "runner.executor=local",
                            "runner.n_trials=3", "trainer.epochs=1")
    outcome, _ = _run(settings)
    results = pd.read_csv(outcome.run_dir / "results.csv")
    assert len(results) == 3 and (results["status"] == "ok").all()
    product = results["depth_coef"] * results["width_coef"] ** 2 * results["resolution_coef"] ** 2
    assert product.to_numpy() == pytest.approx(2.0)
    assert ((results["resolution_coef"] >= 1) & (results["resolution_coef"] <= 1.5)).all()
    more = compose_grid(tmp_path, *TINY, "runner=optuna_tpe", "runner.executor=local",
                        "runner.n_trials=4", "trainer.epochs=1")
    _, log = _run(more)
    assert "3 of 4 trials trained so far" in log
    assert len(pd.read_csv(outcome.run_dir / "results.csv")) == 4


def test_asha_stops_poor_trials_early(tmp_path, ray_session):
    settings = compose_grid(tmp_path, *TINY, "space.tolerance=0.1", "trainer.epochs=4", "runner=ray",
                            "runner.asha=true", "runner.grace_period=1", "runner.reduction_factor=2")
    outcome, _ = _run(settings)
    results = pd.read_csv(outcome.run_dir / "results.csv")
    assert set(results["status"]) <= {"ok", "stopped"}
    stopped = results[results["status"] == "stopped"]
    assert len(stopped) >= 1
    epochs = pd.read_csv(outcome.run_dir / "epochs.csv")
    trained = epochs.groupby("trial_id")["epoch"].max()
    assert (trained[stopped["trial_id"]] < 4).all()
    assert outcome.winner["candidate_id"] in set(results.loc[results["status"] == "ok", "candidate_id"])


FAST = (*TINY, "runner=local", "trainer.epochs=1", "data.num_images=200")


def test_two_run_folders_with_the_same_seed_add_each_trial_to_a_shared_study_once(tmp_path, monkeypatch):
    """Two machines, one study: the second driver took its view of the study before the first
    recorded anything (as when both start together), and the first finishes meanwhile; then a
    third runs after both. The study used to hold every trial twice."""
    from scaling_search.steps import pipeline

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second, third = (compose_grid(tmp_path / name, *FAST, f"study.storage={url}") for name in "abc")
    make_runner = pipeline.make_runner

    class FirstFinishesMeanwhile:
        """The second driver's runner: the first driver's whole search runs before it trains."""

        def __init__(self, runner):
            self.runner, self.concurrency = runner, runner.concurrency

        def run(self, *args, **kwargs):
            _run(first)
            self.runner.run(*args, **kwargs)

    monkeypatch.setattr(pipeline, "make_runner", lambda kind, settings, out_dir: (
        FirstFinishesMeanwhile if out_dir == second.out_dir else lambda r: r)(make_runner(kind, settings, out_dir)))
    _run(second)
    _run(third)
    ids = [t.user_attrs["trial_id"] for t in optuna.load_study(study_name=None, storage=url).get_trials()]
    assert len(ids) == 4 and len(set(ids)) == 4, sorted(ids)
    for s in (first, second, third):  # each run folder holds its own records of all four
        assert len(pd.read_csv(s.out_dir / "results.csv")) == 4


def test_a_run_killed_before_it_wrote_search_json_is_taken_over(tmp_path):
    """What a driver killed between taking the lock and writing its identity leaves: the lock,
    its holder, a temporary file. The same command resumes the folder rather than refusing it."""
    settings = compose_grid(tmp_path, *FAST)
    settings.out_dir.mkdir()
    (settings.out_dir / ".lock").touch()
    (settings.out_dir / ".lock.json").write_text('{"pid": 4194999, "host": "gone", "started": "2026-01-01"}')
    (settings.out_dir / ".search.json.k3j9x.tmp").write_text('{"back')
    outcome, log = _run(settings)
    assert "took over the lock of pid 4194999 on gone" in log
    assert len(pd.read_csv(outcome.run_dir / "results.csv")) == 4
    assert (outcome.run_dir / "coefficients.yaml").is_file()


def test_a_ray_already_running_here_is_judged_by_its_own_cpus(ray_session, monkeypatch):
    """The local CPU check judges the Ray it would start; one this process already runs (2 CPUs
    here) is left to check_cluster, even where this machine reports fewer cores."""
    from scaling_search.settings import RaySettings
    from scaling_search.train.runners.ray_tune import check_cluster, check_local_resources

    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    check_local_resources(RaySettings(cpus_per_trial=2))  # not refused: the running Ray has 2
    check_cluster(RaySettings(cpus_per_trial=2))
    with pytest.raises(ValueError, match="the Ray cluster has 2 CPUs"):
        check_cluster(RaySettings(cpus_per_trial=3))


def test_a_study_holds_one_search_and_another_search_is_refused_before_it_writes(tmp_path):
    """Two searches with other settings given one ``study.name`` were mixed in one study (TPE
    then sampled on top of the other's trials); a run of the same settings in another folder
    still shares it."""
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    shared = (f"study.storage={url}", "study.name=mine")
    _run(compose_grid(tmp_path / "a", *FAST, *shared))
    other = compose_grid(tmp_path / "b", *FAST, "trainer.lr=0.02", *shared)
    with pytest.raises(ValueError, match=r"study.name='mine' in study.storage holds the trials of another "
                                         r"search \(other settings; first run in '.*/a/run'\)"):
        _run(other)
    assert not (tmp_path / "b" / "run").exists()
    again, _ = _run(compose_grid(tmp_path / "c", *FAST, *shared))  # the same search on another machine
    assert len(pd.read_csv(again.run_dir / "results.csv")) == 4
    assert len(optuna.load_study(study_name="mine", storage=url).get_trials()) == 4
