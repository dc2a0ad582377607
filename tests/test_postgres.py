"""Searches from many machines into one Optuna study in PostgreSQL, on a real throwaway server.

The ``postgres`` fixture (conftest, tests/services.py) starts Debian's PostgreSQL as an
unprivileged user on a socket in a temporary folder. ``.ci/run`` installs it and sets
SCALING_SEARCH_REQUIRE_SERVICES=1, so there these tests fail rather than skip without it.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys

import optuna
import pandas as pd
import pytest
from conftest import TINY, _pythonpath
from services import optuna_dashboard

from scaling_search.train.study import open_study

SEARCH = (*TINY, "runner=local", "trainer.epochs=1", "data.num_images=200", "report=false")
STUDY = "shared"


def _grid(url: str, seed: int, out_dir) -> list[str]:
    """The command line of one machine's share of the work: the seed it trains."""
    return [sys.executable, "-m", "scaling_search.grid", *SEARCH, f"seed={seed}",
            f"study.storage='{url}'", f"study.name={STUDY}", f"out_dir={out_dir}"]  # quoted: the URL has '='


def _env() -> dict:
    env = {**os.environ, "PYTHONPATH": _pythonpath()}  # the installed package, as a user runs it
    env.pop("HYDRA_FULL_ERROR", None)
    return env


@pytest.fixture(scope="module")
def shared(postgres, tmp_path_factory):
    """Two Step-1 searches (seeds 0 and 1), started together on a new database, into one study."""
    url, tmp = postgres.create_database("searches"), tmp_path_factory.mktemp("postgres")
    runs = [tmp / "seed0", tmp / "seed1"]
    procs = [subprocess.Popen(_grid(url, seed, out), cwd=tmp, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed, out in enumerate(runs)]
    ended = [p.communicate(timeout=300) for p in procs]
    for p, (_stdout, stderr) in zip(procs, ended):
        assert p.returncode == 0, stderr[-3000:]
    return url, runs, tmp


def _study_trials(url: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=STUDY, storage=url).get_trials()


def _results(runs) -> pd.DataFrame:
    return pd.concat([pd.read_csv(run / "results.csv") for run in runs], ignore_index=True)


@pytest.mark.slow
def test_two_searches_at_once_put_every_trial_in_the_study_once(shared):
    url, runs, _ = shared
    results, trials = _results(runs), _study_trials(url)
    by_run = [set(pd.read_csv(run / "results.csv")["trial_id"]) for run in runs]
    assert len(by_run[0]) == len(by_run[1]) == 4 and not by_run[0] & by_run[1]  # two shares of the work
    assert sorted(t.user_attrs["trial_id"] for t in trials) == sorted(results["trial_id"])  # none lost, none twice
    rows = results.set_index("trial_id")
    for t in trials:
        row = rows.loc[t.user_attrs["trial_id"]]
        assert t.state == optuna.trial.TrialState.COMPLETE and t.value == pytest.approx(row["final_top1"])
        assert t.params["depth_coef"] == pytest.approx(row["depth_coef"])
    # Whether the two searches' trials interleave in time is up to the scheduler (one CI run had
    # them one after the other), so it is not asserted; the start-up race both hit is made
    # deterministic by the barrier test below.


@pytest.mark.slow
def test_optuna_dashboard_reads_the_study_back(shared):
    url, runs, _ = shared
    with optuna_dashboard(url) as get:
        (study,) = get("/api/studies")["study_summaries"]
        assert study["study_name"] == STUDY
        detail = get(f"/api/studies/{study['study_id']}")
    shown = [next(a["value"] for a in t["user_attrs"] if a["key"] == "trial_id") for t in detail["trials"]]
    assert sorted(shown) == sorted(_results(runs)["trial_id"])
    assert {t["state"] for t in detail["trials"]} == {"Complete"}


@pytest.mark.slow
def test_a_rerun_adds_nothing_to_the_study(shared):
    url, runs, tmp = shared
    before = {t.number: (t.user_attrs["trial_id"], t.value) for t in _study_trials(url)}
    rerun = subprocess.run(_grid(url, 0, runs[0]), cwd=tmp, env=_env(), capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "4 already done, 0 to run" in rerun.stdout
    assert {t.number: (t.user_attrs["trial_id"], t.value) for t in _study_trials(url)} == before


def _open_at_once(barrier, urls, answers) -> None:
    """One process: for each new database, waits for the others, then opens the study at once."""
    for url in urls:
        barrier.wait(timeout=120)
        try:
            open_study(url, STUDY)
            answers.put("ok")
        except Exception as e:  # noqa: BLE001 - reported to the test
            answers.put(f"{type(e).__name__}: {e}")


def test_searches_opening_a_new_database_at_once_all_get_its_study(postgres):
    """PostgreSQL's CREATE TABLE is not atomic: several processes creating Optuna's tables in a
    new database at the same moment must all still get the one study."""
    urls = [postgres.create_database(f"race{i}") for i in range(6)]
    fork = multiprocessing.get_context("fork")  # seconds faster than a fresh interpreter importing torch
    barrier, answers = fork.Barrier(3), fork.Queue()
    procs = [fork.Process(target=_open_at_once, args=(barrier, urls, answers)) for _ in range(3)]
    for p in procs:
        p.start()
    got = [answers.get(timeout=180) for _ in range(len(urls) * len(procs))]
    for p in procs:
        p.join(timeout=60)
    assert got == ["ok"] * len(got), [g for g in got if g != "ok"][0]
    for url in urls:
        assert [s.study_name for s in optuna.get_all_study_summaries(url)] == [STUDY]


def test_a_server_that_accepts_but_never_answers_is_named_after_the_connect_timeout(monkeypatch):
    """A listening socket that never speaks PostgreSQL's protocol: the open gives up after the
    connect timeout with one line naming the URL, instead of hanging."""
    import socket
    import time

    import scaling_search.train.study as study

    pytest.importorskip("psycopg2")
    monkeypatch.setattr(study, "CONNECT_TIMEOUT_S", 2)  # libpq's least
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        url = f"postgresql+psycopg2://nobody@127.0.0.1:{server.getsockname()[1]}/db"
        t0 = time.monotonic()
        with pytest.raises(ValueError, match=r"cannot open the Optuna storage .postgresql\+psycopg2://.*timeout"):
            open_study(url, "s")
        assert time.monotonic() - t0 < 30
