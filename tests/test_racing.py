"""Seed racing (steps.racing): who trains on which seed, when the race stops, and a real race
through the grid app that resumes and hands its trials to a full grid."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, compose_grid

from scaling_search.analysis.report import grid_page
from scaling_search.steps import racing, step1
from scaling_search.steps.step1 import run_search
from scaling_search.train.records import TrialStore

IMAGES = 200


class Field:
    """Candidates whose final models got the first ``right[cid][seed]`` of 200 images right;
    ``train`` records them seed by seed, as a runner would, and ``standing`` reads them back."""

    def __init__(self, right: dict[str, list[int]], baseline: str | None = "base", no_correctness=()):
        self.right, self.baseline, self.no_correctness = right, baseline, set(no_correctness)
        self.trained: list[tuple[int, tuple[str, ...]]] = []
        self.rows: list[dict] = []

    def train(self, ids: list[str], seed: int, first: bool) -> None:
        ids = list(ids) + ([self.baseline] if first and self.baseline else [])
        self.trained.append((seed, tuple(ids)))
        for cid in ids:
            right = self.right[cid][seed]
            self.rows.append({"candidate_id": cid, "role": "baseline" if cid == self.baseline else "candidate",
                              "trial_id": f"{cid}_s{seed}", "seed": seed, "status": "ok", "final_top1": right / IMAGES,
                              "depth_coef": 1.0, "width_coef": 1.0, "resolution_coef": 1.0, "product": 1.0,
                              "resolution_px": 16, "params": 10, "macs": 100, "macs_ratio": 1.0,
                              "train_time_s": 1.0})

    def standing(self) -> tuple[pd.DataFrame, dict]:
        correct = {r["trial_id"]: np.arange(IMAGES) < round(r["final_top1"] * IMAGES)
                   for r in self.rows if r["candidate_id"] not in self.no_correctness}
        return pd.DataFrame(self.rows), correct

    def race(self, seeds=(0, 1, 2), budget=None) -> list[racing.Round]:
        return racing.race([c for c in self.right if c != self.baseline], list(seeds), self.train, self.standing,
                           lambda ids, first: 100.0 * (len(ids) + (first and self.baseline is not None)), budget)


# a: 190 of 200; b: 186 (4 discordant images, McNemar p = 0.125: tied); c: 120 (70 discordant: not).
CLOSE = {"a": [190, 188, 191], "b": [186, 187, 185], "c": [120, 125, 118], "base": [100, 100, 100]}


def test_only_the_candidates_tied_with_the_best_get_another_seed():
    field = Field(CLOSE)
    rounds = field.race()
    assert field.trained == [(0, ("a", "b", "c", "base")), (1, ("a", "b"))]
    assert [(r.entrants, r.tied, r.best) for r in rounds] == [(("a", "b", "c"), ("a", "b"), "a"),
                                                              (("a", "b"), ("a", "b"), "a")]
    # two seeds: paired over seeds (differences 0.02, 0.005: a t-interval holding 0): still tied,
    # so the tied set stopped shrinking and the third seed is never spent
    assert [r.stop for r in rounds] == ["", racing.NOT_SHRINKING]
    assert [r.train_macs for r in rounds] == [400.0, 200.0]


def test_the_race_stops_at_the_seed_budget_first():
    rounds = Field(CLOSE).race(seeds=(0, 1))
    assert [r.stop for r in rounds] == ["", racing.SEED_BUDGET]


def test_a_race_that_leaves_one_candidate_ends_there():
    field = Field({"a": [190], "b": [150], "c": [120]}, baseline=None)
    rounds = field.race()
    assert field.trained == [(0, ("a", "b", "c"))] and rounds[-1].stop == racing.ONE_LEFT


def test_no_round_starts_past_the_compute_budget():
    field = Field(CLOSE)
    rounds = field.race(budget=599.0)  # round 1 costs 400 (3 candidates + baseline), round 2 would take it to 600
    assert field.trained == [(0, ("a", "b", "c", "base"))]
    assert len(rounds) == 1 and rounds[0].stop == racing.COMPUTE_BUDGET
    assert len(Field(CLOSE).race(budget=600.0)) == 2


def test_a_candidate_without_paired_evidence_stays_in_the_race():
    field = Field(CLOSE, no_correctness={"c"})  # one seed and no per-image record: nothing to judge it by
    rounds = field.race()
    assert "c" in rounds[0].tied and field.trained[1] == (1, ("a", "b", "c"))


def test_the_first_round_never_stops_for_not_shrinking():
    """One seed may not separate what a second does: a first round that ties everyone goes on."""
    field = Field({"a": [190, 190, 190], "b": [189, 150, 150]}, baseline=None)
    rounds = field.race()
    assert rounds[0].tied == ("a", "b") and rounds[0].stop == ""
    assert field.trained[1] == (1, ("a", "b"))


def test_the_ranking_of_a_race_ties_only_its_finalists():
    """``c`` is out after seed 0 (184 of 200 against the round's best ``a``'s 190: 6 discordant
    images, McNemar p = 0.031). ``b`` ends best over the two seeds the race ran (it stopped when
    the tied set did not shrink), and on seed 0 alone ``c`` is tied with it (184 against 189,
    p = 0.0625); the race's tied set, and the ranking's, still leave ``c`` out: the race ruled it
    out and never gave it the seeds to come back."""
    field = Field({"a": [190, 180, 180], "b": [189, 195, 195], "c": [184, 184, 184], "base": [100, 100, 100]})
    rounds = field.race()
    assert [(r.entrants, r.best) for r in rounds] == [(("a", "b", "c"), "a"), (("a", "b"), "b")]
    results, correct = field.standing()
    table, among = step1.ranked(results, correct, raced=True)
    table = table.set_index("candidate_id")
    assert table.loc["c", "paired_by"] == f"{IMAGES} images" and table.loc["c", "p_mcnemar"] == pytest.approx(0.0625)
    tied = table.index[(table["role"] == "candidate") & table["tied_with_best"].fillna(False)]
    assert sorted(tied) == sorted(rounds[-1].tied) == ["a", "b"]
    unraced, _ = step1.ranked(results, correct, raced=False)  # judged on its own evidence, c would tie
    assert bool(unraced.set_index("candidate_id").loc["c", "tied_with_best"])


@pytest.mark.slow
def test_a_real_race_resumes_and_a_full_grid_reuses_its_trials(tmp_path):
    """Through the grid app (runner=local): the race's rounds are written, its winner is one of
    its finalists, a re-run trains nothing, and a full grid in the same folder trains only the rest."""
    common = (*TINY, "runner=local", "seeds_per_candidate=3", "trainer.epochs=1", "data.num_images=300",
              "report=false")
    out = io.StringIO()
    outcome = run_search(compose_grid(tmp_path, *common, "racing.enabled=true"), out)
    run = outcome.run_dir
    table = pd.read_csv(run / "racing.csv")
    results = pd.read_csv(run / "results.csv")
    assert table["trials"].sum() == len(results)
    assert "seed racing:" in out.getvalue() and f"of the {4 * 3} trials of a full 3-seed grid" in out.getvalue()
    per_seed = results.groupby("seed")["candidate_id"].apply(set)
    assert per_seed[0] == set(results["candidate_id"])  # the first seed: everyone, the baseline too
    for r in table.itertuples():  # a later seed: exactly the candidates still tied after the one before
        if r.round > 1:
            before = table.loc[table["round"] == r.round - 1, "tied_ids"].iloc[0].split()
            assert per_seed[r.seed] == set(before)
    most = results.groupby("candidate_id").size()
    assert most[outcome.winner["candidate_id"]] == most.max()
    ranking = pd.read_csv(run / "ranking.csv")  # its tied set is the last round's, its frozen row the winner
    cands = ranking[ranking["role"] == "candidate"]
    assert set(cands.loc[cands["tied_with_best"].fillna(False).astype(bool), "candidate_id"]) == \
        set(table["tied_ids"].iloc[-1].split())
    assert list(ranking.loc[ranking["frozen"], "candidate_id"]) == [outcome.winner["candidate_id"]]

    page = grid_page(run)  # the report: a note and the rounds' table
    assert any(n.startswith("Seed racing:") and "of a full 3-seed grid" in n for n in page.notes)
    assert "racing" in [name for name, _, _ in page.tables]

    records = len(TrialStore(run).load())
    again = io.StringIO()
    run_search(compose_grid(tmp_path, *common, "racing.enabled=true"), again)
    assert len(TrialStore(run).load()) == records and "0 to run" in again.getvalue()

    full = io.StringIO()
    run_search(compose_grid(tmp_path, *common), full)
    assert len(TrialStore(run).load()) == 4 * 3
    assert f"{records} already done, {12 - records} to run" in full.getvalue()
