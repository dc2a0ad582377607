"""A whole Step-1 search on Ray: parallel efficiency, and the same search with ASHA against without.

Runs the default search (``python -m scaling_search.grid``'s cpu_demo preset, or any overrides
given) twice into fresh folders under ``results/bench_search/``: once as configured, once with
``runner.asha=true``. Reports

- parallel efficiency: the sum of the trials' own wall times over (workers x the search's wall
  time, Ray start-up, data loading and tables included), so 1.0 means no overhead at all;
- ASHA: epochs trained and trial time against the full search, and whether the winner is the same.

    python benchmarks/bench_search.py                       # the default demo, 2 workers
    python benchmarks/bench_search.py trainer.epochs=4      # any grid override
    python benchmarks/bench_search.py --layouts             # channels-last against NCHW (the old trainer)
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import time
from pathlib import Path

import pandas as pd
from hydra import compose, initialize_config_dir

from scaling_search.cli import CONF_DIR
from scaling_search.settings import GridSettings
from scaling_search.steps.step1 import run_search

OUT = Path(__file__).resolve().parent.parent / "results" / "bench_search"


def settings(name: str, overrides: list[str]) -> GridSettings:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("grid", overrides=[f"out_dir={OUT / name}", *overrides])
    return GridSettings.from_config(cfg)


def run(name: str, overrides: list[str]) -> dict:
    s = settings(name, overrides)
    shutil.rmtree(s.out_dir, ignore_errors=True)
    t0 = time.perf_counter()
    outcome = run_search(s, io.StringIO())
    wall = time.perf_counter() - t0
    results = pd.read_parquet(s.out_dir / "results.parquet")
    epochs = pd.read_parquet(s.out_dir / "epochs.parquet")
    workers = min(len(results), int((s.runner.num_cpus or os.cpu_count()) // s.runner.cpus_per_trial))
    trial_s = epochs["time_s"].sum()  # training + validation of every epoch, stopped trials included
    return {"search": name, "trials": len(results), "stopped": int((results["status"] == "stopped").sum()),
            "epochs_trained": len(epochs), "trial_time_s": trial_s, "wall_s": wall, "workers": workers,
            "efficiency": trial_s / (workers * wall), "winner": outcome.winner["candidate_id"],
            "winner_top1": outcome.winner["top1_mean"]}


def layouts(overrides: list[str]) -> None:
    """The default search with the trainer's NCHW layout (what it did before) and as configured
    (channels-last), one after the other on one machine."""
    rows = [run("nchw", [*overrides, "trainer.channels_last=false"]), run("channels_last", overrides)]
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f"))
    before, after = rows
    print(f"\nwall time {after['wall_s']:.0f} s vs {before['wall_s']:.0f} s: "
          f"{1 - after['wall_s'] / before['wall_s']:.0%} shorter ({before['wall_s'] / after['wall_s']:.2f}x)")


def main() -> None:
    overrides = sys.argv[1:]
    if "--layouts" in overrides:
        return layouts([o for o in overrides if o != "--layouts"])
    rows = [run("full", overrides), run("asha", [*overrides, "runner.asha=true"])]
    df = pd.DataFrame(rows)
    print(df.to_markdown(index=False, floatfmt=".3f"))
    full, asha = rows
    print(f"\nASHA trained {asha['epochs_trained']} of {full['epochs_trained']} epochs "
          f"({1 - asha['epochs_trained'] / full['epochs_trained']:.0%} less), trial time "
          f"{asha['trial_time_s']:.0f} s vs {full['trial_time_s']:.0f} s; winner "
          f"{'the same' if asha['winner'] == full['winner'] else 'different'} "
          f"({full['winner']} vs {asha['winner']})")


if __name__ == "__main__":
    main()
