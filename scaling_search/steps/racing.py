"""Seed racing: Step 1's grid over seeds, with more seeds only where they can change the answer.

A full k-seed grid trains every candidate k times, most of them candidates that the first seed
already tells apart from the best. Racing (Maron & Moore's Hoeffding races; Birattari et al.'s
F-race, 2002; successive rejection) spends the seeds where the verdict is still open:

1. every candidate (and the unscaled baseline) trains on the first seed;
2. the best of the round's entrants by mean top-1, and the entrants tied with it at 95%, go on
   to the next seed; the rest are out (their trials stay in every table). "Tied" is
   ``analysis.results.compare``, the comparison every table uses: over the validation images
   (McNemar's exact test) with one common seed, over the seeds (Student's t) with more. An
   entrant with no paired evidence stays in;
3. the race stops when a round leaves as many entrants tied as it started with (the tied set
   stopped shrinking; never after the first round, whose single seed may not separate what a
   second does), when one is left, at the seed budget (``seeds_per_candidate``), or before a
   round whose training would pass the compute budget (``racing.budget_train_macs``).

Every decision is a function of the trial records alone (``race`` asks ``standing`` after each
round), so a killed race resumes where it stopped, a full grid in the same folder reuses the
race's trials, and ``benchmarks/bench_racing.py`` replays a race over a full grid's records. The
runners are the grid's own, so racing composes with ASHA: a trial ASHA stops is out of its round.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import pandas as pd

from scaling_search.analysis.results import rank, with_ties
from scaling_search.train.status import OK

# Why a race ended after its last round (the ``stop`` column; empty where it went on).
SEED_BUDGET, ONE_LEFT, NOT_SHRINKING, COMPUTE_BUDGET = (
    "seed budget", "one candidate left", "tied set stopped shrinking", "compute budget")


@dataclass(frozen=True)
class Round:
    """One seed of a race: who trained on it, who is still tied with the best after it."""

    number: int  # 1-based
    seed: int
    entrants: tuple[str, ...]  # the candidates trained on this seed
    tied: tuple[str, ...]  # the entrants still tied with the best after it (the next round's)
    best: str | None  # the best entrant by mean top-1 over its seeds so far
    train_macs: float  # the training MACs of this round's trials (the baseline's included)
    stop: str = ""  # why the race ended here (one of the constants above); "" if it went on

    def row(self) -> dict:
        return {"round": self.number, "seed": self.seed, "entrants": len(self.entrants),
                "tied_after": len(self.tied), "best": self.best, "train_macs": self.train_macs,
                "stop": self.stop, "tied_ids": " ".join(self.tied)}


def judge(results: pd.DataFrame, correct: dict, entrants: list[str]) -> tuple[str | None, list[str]]:
    """The best of ``entrants`` by mean top-1 over their ``ok`` trials, and the entrants tied
    with it at 95% (itself included; one with no paired evidence counts as tied)."""
    ok = results[(results["status"] == OK) & results["candidate_id"].isin(entrants)]
    if ok.empty:
        return None, []
    table = with_ties(rank(ok), ok, correct)
    tied = table.loc[table["tied_with_best"].fillna(True).astype(bool), "candidate_id"]
    return table.iloc[0]["candidate_id"], list(tied)


def race(candidates: list[str], seeds: list[int], train: Callable[[list[str], int, bool], None],
         standing: Callable[[], tuple[pd.DataFrame, dict]], train_macs: Callable[[list[str], bool], float],
         budget_train_macs: float | None = None) -> list[Round]:
    """Races ``candidates`` over ``seeds`` (in order); the rounds run, the last one's ``stop`` set.

    Args:
        train: trains the given candidates on one seed (``first``: the first round, which also
            trains the baseline) and returns once their trials are recorded.
        standing: every recorded trial (``results_frame``) and their per-image correctness.
        train_macs: the training MACs of one seed of the given candidates (``first`` as in ``train``).
        budget_train_macs: no round starts that would take the race past this many training MACs
            (the first always runs: without it there is no ranking).
    """
    rounds: list[Round] = []
    entrants, spent = list(candidates), 0.0
    for number, seed in enumerate(seeds, start=1):
        cost = train_macs(entrants, number == 1)
        if rounds and budget_train_macs is not None and spent + cost > budget_train_macs:
            rounds[-1] = replace(rounds[-1], stop=COMPUTE_BUDGET)
            break
        train(entrants, seed, number == 1)
        spent += cost
        results, correct = standing()
        best, tied = judge(results, correct, entrants)
        stop = (SEED_BUDGET if number == len(seeds) else ONE_LEFT if len(tied) <= 1
                else NOT_SHRINKING if number > 1 and len(tied) >= len(entrants) else "")
        rounds.append(Round(number, seed, tuple(entrants), tuple(tied), best, cost, stop))
        if stop:
            break
        entrants = tied
    return rounds


def race_table(rounds: list[Round], results: pd.DataFrame) -> pd.DataFrame:
    """One row per round, with the trials it ran and their summed training time (``train_time_s``
    of the records; the baseline's in the first round)."""
    rows = []
    for r in rounds:
        ran = results[(results["seed"] == r.seed)
                      & (results["candidate_id"].isin(r.entrants)
                         | ((r.number == 1) & (results["role"] == "baseline")))]
        rows.append({**r.row(), "trials": len(ran), "trial_time_s": float(ran["train_time_s"].fillna(0).sum())})
    table = pd.DataFrame(rows)
    cols = ["round", "seed", "entrants", "tied_after", "trials", "train_macs", "trial_time_s", "best", "stop",
            "tied_ids"]
    return table[cols] if len(table) else pd.DataFrame(columns=cols)


def against_full_grid(table: pd.DataFrame, networks: int, seeds: int, full_train_macs: float) -> dict:
    """The race's trials and training MACs against those of a full ``seeds``-seed grid over the
    same ``networks`` (candidates and baseline)."""
    trials, macs = int(table["trials"].sum()), float(table["train_macs"].sum())
    return {"trials": trials, "full_trials": networks * seeds, "trial_share": trials / (networks * seeds),
            "train_macs": macs, "full_train_macs": full_train_macs,
            "macs_share": macs / full_train_macs if full_train_macs else float("nan")}


def race_line(rounds: list[Round], cmp: dict, seeds: int) -> str:
    """``seed racing: 2 rounds (tied set stopped shrinking), 26 of 51 trials of the full 3-seed
    grid, 48% of its training MACs``."""
    last = rounds[-1] if rounds else None
    why = f" ({last.stop})" if last and last.stop else ""
    return (f"seed racing: {len(rounds)} round(s){why}, {cmp['trials']} of the {cmp['full_trials']} trials "
            f"of a full {seeds}-seed grid, {cmp['macs_share']:.0%} of its training MACs")
