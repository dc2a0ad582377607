"""The default Step-2 experiment end to end, as a user runs it: wall time against the 15-minute
target, parallel efficiency, and what the report costs.

Runs ``python -m scaling_search.scale experiment=step2_demo`` (or any preset and overrides given)
as a subprocess into a fresh ``results/bench_step2/<name>`` and reports

- wall time of the whole command (Ray start-up, data, training, tables, plots and report),
- parallel efficiency: the trials' own epoch time over (workers x wall time),
- per-method training throughput (images/s, training only) and the report's own time.

    python benchmarks/bench_step2.py                                   # the default Step-2 experiment
    python benchmarks/bench_step2.py experiment=step2_table3           # the Table-3 preset
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "results" / "bench_step2"


def main() -> None:
    overrides = sys.argv[1:] or ["experiment=step2_demo"]
    name = "_".join(o.split("=")[-1] for o in overrides if o.startswith("experiment=")) or "custom"
    out = OUT / name
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "scaling_search.scale", *overrides, f"out_dir={out}"],
                       cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        sys.exit(f"the run failed:\n{r.stderr[-3000:]}")
    results = pd.read_parquet(out / "results.parquet")
    epochs = pd.read_parquet(out / "epochs.parquet")
    t1 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "scaling_search.report", str(out)], cwd=REPO, check=True,
                   capture_output=True)
    report_s = time.perf_counter() - t1
    workers = min(len(results), os.cpu_count() or 1)
    trial_s = epochs["time_s"].sum()
    print(f"{name}: {len(results)} trials, wall {wall:.0f} s ({wall / 60:.1f} min, target < 15 min), "
          f"trial time {trial_s:.0f} s over {workers} workers: efficiency {trial_s / (workers * wall):.2f}; "
          f"report {report_s:.1f} s (its own process, plots included)")
    by = results.groupby("role").agg(trials=("trial_id", "count"), train_time_s=("train_time_s", "sum"),
                                     images_per_s=("images_per_s", "mean"), macs=("macs", "mean"))
    print(by.to_markdown(floatfmt=".0f"))
    print((out / "comparison.md").read_text())


if __name__ == "__main__":
    main()
