"""Seed racing against a full k-seed grid: does it reach the same tied set, for what share of the
trial time?

1. **The full grid**: ``python -m scaling_search.grid seeds_per_candidate=K out_dir=FULL``
   (plus ``--override``s), run here unless FULL already holds a finished search.
2. **The race**: the same with ``racing.enabled=true out_dir=RACE``, run here unless RACE holds
   a finished one (``--no-race``: skip it).
3. **The replay**: ``steps.racing.race`` over FULL's records, a round "training" its trials by
   revealing their records. Training is deterministic per seed on one machine and thread count,
   so the replay makes the real race's decisions on the same numbers; where both exist the
   script says whether their rounds agree.

Reported, side by side: each one's tied set (``steps.step1.ranked``, the tables' own rule),
whether the race's equals the full grid's, its trials, training MACs and trial time (the sum of
the trials' ``train_time_s``; for the replay, the full grid's times of the same trials), and the
wall time of the runs this script ran. Also the least share any race can reach: every network
trains on the first seed, and each of the T candidates it ends with tied needs the seeds that tie
them, so a race over N networks and k seeds that ends with the full grid's T trains at least
(N + (k - 1) T) / (N k) of its trials: half only where T <= N (k/2 - 1) / (k - 1), a quarter of
the grid at k = 3.

    python benchmarks/bench_racing.py --full /tmp/full3 --race /tmp/race3          # the default demo
    python benchmarks/bench_racing.py --full /tmp/full3 --no-race --override trainer.epochs=4
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from scaling_search.analysis.results import correctness, results_frame
from scaling_search.steps import racing
from scaling_search.steps.step1 import CANDIDATE_ROLE, ranked
from scaling_search.train.records import TrialStore
from scaling_search.train.status import OK


def finished(run_dir: Path) -> bool:
    return (run_dir / "coefficients.yaml").is_file()


def run_grid(run_dir: Path, seeds: int, overrides: list[str], race: bool) -> float:
    """Runs the grid app into ``run_dir``; its wall time in seconds."""
    args = [sys.executable, "-m", "scaling_search.grid", f"seeds_per_candidate={seeds}", f"out_dir={run_dir}",
            "report=false", *(["racing.enabled=true"] if race else []), *overrides]
    print("$", " ".join(args[1:]), flush=True)
    start = time.perf_counter()
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def standing_of(run_dir: Path) -> tuple[pd.DataFrame, dict]:
    records = TrialStore(run_dir).load()
    return results_frame(records), correctness(records)


def tied_set(results: pd.DataFrame, correct: dict, raced: bool) -> tuple[str, list[str]]:
    """The frozen (best) candidate and the candidates tied with it, by the tables' own rule."""
    table, among = ranked(results, correct, raced)
    cands = table[table["role"] == CANDIDATE_ROLE]
    tied = cands.loc[cands["tied_with_best"].fillna(False).astype(bool), "candidate_id"]
    return table[among].iloc[0]["candidate_id"], sorted(tied)


def replay(results: pd.DataFrame, correct: dict, seeds: list[int]) -> tuple[list[racing.Round], pd.DataFrame]:
    """The race that the full grid's records imply, and the records it revealed."""
    shown = results.iloc[0:0]
    candidates = sorted(results.loc[results["role"] == CANDIDATE_ROLE, "candidate_id"].unique())
    macs = results.groupby("candidate_id")["macs"].first()
    baseline = sorted(results.loc[results["role"] != CANDIDATE_ROLE, "candidate_id"].unique())

    def chosen(ids: list[str], first: bool) -> list[str]:
        return list(ids) + (baseline if first else [])

    def train(ids: list[str], seed: int, first: bool) -> None:
        nonlocal shown
        more = results[(results["seed"] == seed) & results["candidate_id"].isin(chosen(ids, first))]
        shown = pd.concat([shown, more], ignore_index=True)

    def standing() -> tuple[pd.DataFrame, dict]:
        return shown, {t: correct[t] for t in shown["trial_id"] if t in correct}

    rounds = racing.race(candidates, seeds, train, standing, lambda ids, first: float(macs[chosen(ids, first)].sum()))
    return rounds, shown


def seconds(results: pd.DataFrame) -> float:
    return float(results["train_time_s"].fillna(0).sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--full", type=Path, required=True, help="the full k-seed grid's folder (run here if unfinished)")
    p.add_argument("--race", type=Path, help="the real race's folder (run here if unfinished)")
    p.add_argument("--no-race", action="store_true", help="replay only; run no race")
    p.add_argument("--seeds", type=int, default=3, help="k: the full grid's seeds, the race's seed budget")
    p.add_argument("--override", action="append", default=[], help="a grid override for both runs")
    a = p.parse_args()
    walls = {}
    if not finished(a.full):
        walls["full"] = run_grid(a.full, a.seeds, a.override, race=False)
    full, correct = standing_of(a.full)
    if (full["status"] != OK).any():
        sys.exit(f"{a.full} holds failed trials; the comparison needs every trial")
    seeds = sorted(full["seed"].unique())
    if len(seeds) < 2:
        sys.exit(f"{a.full} trained {len(seeds)} seed; a race needs a full grid of 2 or more")
    rows = []
    best, tied = tied_set(full, correct, raced=False)
    rows.append({"run": f"full {len(seeds)}-seed grid", "trials": len(full), "trial_time_s": seconds(full),
                 "wall_s": walls.get("full"), "frozen": best, "tied": len(tied), "same_tied_set": True})
    rounds, shown = replay(full, correct, seeds)
    r_best, r_tied = tied_set(shown, correct, raced=True)
    rows.append({"run": f"race, replayed ({len(rounds)} rounds: {rounds[-1].stop})", "trials": len(shown),
                 "trial_time_s": seconds(shown), "wall_s": None, "frozen": r_best, "tied": len(r_tied),
                 "same_tied_set": r_tied == tied})
    real = None
    if a.race and not a.no_race:
        if not finished(a.race):
            walls["race"] = run_grid(a.race, len(seeds), a.override, race=True)
        real, real_correct = standing_of(a.race)
        q_best, q_tied = tied_set(real, real_correct, raced=True)
        table = pd.read_csv(a.race / "racing.csv")
        rows.append({"run": f"race, run ({len(table)} rounds: {table['stop'].iloc[-1]})", "trials": len(real),
                     "trial_time_s": seconds(real), "wall_s": walls.get("race"), "frozen": q_best,
                     "tied": len(q_tied), "same_tied_set": q_tied == tied})
        same_rounds = ([sorted(str(t).split()) for t in table["tied_ids"].fillna("")]
                       == [sorted(r.tied) for r in rounds])
        print(f"the real race's rounds {'match' if same_rounds else 'DIFFER from'} the replay's "
              f"(entrants per round: {list(table['entrants'])} vs {[len(r.entrants) for r in rounds]})")
    out = pd.DataFrame(rows)
    out["trial_share"] = out["trials"] / len(full)
    out["time_share"] = out["trial_time_s"] / seconds(full)
    print(out.to_markdown(index=False, floatfmt=".3f"))
    networks, k = full["candidate_id"].nunique(), len(seeds)
    floor = (networks + (k - 1) * len(tied)) / (networks * k)
    print(f"\nthe least trial share of a race that ends with the full grid's {len(tied)} tied on all {k} seeds: "
          f"({networks} + {k - 1} x {len(tied)}) / ({networks} x {k}) = {floor:.2f}; one that stops a round "
          f"early with them: {(networks + (k - 2) * len(tied)) / (networks * k):.2f}")
    print(f"\nfull grid's tied set ({len(tied)}): {' '.join(tied)}")
    print(f"replayed race's tied set ({len(r_tied)}): {' '.join(r_tied)}")
    for r in rounds:
        print(f"  round {r.number} (seed {r.seed}): {len(r.entrants)} entrants -> {len(r.tied)} tied; "
              f"best {r.best}{'; stop: ' + r.stop if r.stop else ''}")


if __name__ == "__main__":
    main()
