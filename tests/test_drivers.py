"""Two drivers of one run folder, as two users (or one user, twice) start them: real processes of
``python -m scaling_search.grid`` on one out_dir and one Optuna study.

The first driver is held mid-training by tests/plugins/held_backbone.py until the test releases
it, so the second certainly starts while the first holds the folder, and the first certainly
finishes after the second was refused: no sleep decides the order.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
from conftest import PLUGINS, TINY

pytestmark = pytest.mark.slow

PROG = "scaling_search.grid"
HELD = (*TINY, "imports=[held_backbone]", "backbone.name=held_net", "runner=local", "trainer.epochs=1",
        "data.num_images=200", "report=false")


def _env(**extra: str) -> dict:
    """The installed package, as a user runs it, with the tests' plugin modules importable."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGINS), os.environ.get("PYTHONPATH", "")]), **extra}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


def _tree(folder) -> dict:
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def _wait_for(first: subprocess.Popen, hold, timeout: float = 240) -> None:
    """Until the first driver trains (and so holds the folder's lock), or has died."""
    deadline = time.time() + timeout
    while not list(hold.glob("held-*")):
        if first.poll() is not None:
            pytest.fail(f"the first driver ended before it trained: {first.communicate()[1][-2000:]}")
        assert time.time() < deadline, "the first driver never started training"
        time.sleep(0.05)


def test_a_second_driver_on_one_out_dir_is_refused_and_the_study_has_no_duplicates(tmp_path):
    out_dir, hold = tmp_path / "run", tmp_path / "hold"
    hold.mkdir()
    study = f"sqlite:///{tmp_path / 'study.db'}"
    args = [sys.executable, "-m", PROG, *HELD, f"out_dir={out_dir}", f"study.storage={study}"]
    first = subprocess.Popen(args, cwd=tmp_path, env=_env(SCALING_SEARCH_TEST_HOLD=str(hold)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(first, hold)
        before = _tree(out_dir)
        second = subprocess.run(args, cwd=tmp_path, env=_env(SCALING_SEARCH_TEST_HOLD=str(hold)),
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr[-2000:]
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
        assert lines[0].startswith(f"{PROG}: error: out_dir {str(out_dir)!r} is in use by another run "
                                   f"(pid {first.pid} on "), lines[0]
        assert lines[0].endswith("wait for it to end, or choose another out_dir"), lines[0]
        assert _tree(out_dir) == before  # the refused driver touched nothing
        (hold / "release").touch()
        stdout, stderr = first.communicate(timeout=300)
    finally:
        (hold / "release").touch()
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, stderr[-2000:]
    assert "winner" in stdout
    results = pd.read_csv(out_dir / "results.csv")
    assert len(results) == 4 and results["trial_id"].is_unique and (results["status"] == "ok").all()
    trials = optuna.load_study(study_name=None, storage=study).get_trials()
    ids = sorted(t.user_attrs["trial_id"] for t in trials)
    assert ids == sorted(results["trial_id"])  # each trial exactly once
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert not (out_dir / ".lock.json").exists()  # the first released the folder when it ended
