"""The summary of a ``--multirun``: does the Step-1 winner change with the seed or the data; does
compound scaling win in every Step-2 job?

A Hydra callback of both apps: each job's return value is collected as the job ends, and at the
end of the sweep ``multirun_summary.csv`` / ``.md`` and one ``report.html`` for the whole sweep
are written to the sweep folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from hydra.experimental.callback import Callback

from scaling_search.files import atomic_output, atomic_write_text
from scaling_search.tables import markdown


def step2_summary_frame(jobs: list[dict]) -> pd.DataFrame:
    """One row per Step-2 job: its outer settings and, per φ, whether compound scaling won."""
    rows = []
    for job in jobs:
        row = {k: job.get(k) for k in ("backbone", "data", "seed", "trials", "failed")}
        for c in job.get("comparison") or []:
            row[f"phi{c['phi']:g}_compound_margin"] = c.get("compound_margin")
        rows.append({**row, "out_dir": job["out_dir"]})
    return pd.DataFrame(rows)


def summary_frame(jobs: list[dict]) -> pd.DataFrame:
    """One row per job: its outer settings, its winner and the baseline it was compared with."""
    if jobs and all(job.get("step") == 2 for job in jobs):
        return step2_summary_frame(jobs)
    rows = []
    for job in jobs:
        win, base = job.get("winner") or {}, job.get("baseline") or {}
        rows.append({"backbone": job["backbone"], "data": job["data"], "seed": job["seed"],
                     "winner": win.get("candidate_id"), "depth_coef": win.get("depth_coef"),
                     "width_coef": win.get("width_coef"), "resolution_coef": win.get("resolution_coef"),
                     "top1": win.get("top1_mean"), "macs": win.get("macs"),
                     "baseline_top1": base.get("top1_mean"), "trials": job["trials"],
                     "failed": job["failed"], "out_dir": job["out_dir"]})
    return pd.DataFrame(rows)


def stability(df: pd.DataFrame) -> list[str]:
    """Sentences: per data, does the winner change with the seed; per seed, with the data?"""
    lines = []
    if "winner" not in df:  # Step 2: say where compound scaling lost
        margins = [c for c in df if c.endswith("_compound_margin")]
        for _, r in df.iterrows():
            lost = [c.split("_")[0] for c in margins if r[c] == r[c] and r[c] <= 0]
            lines.append(f"{r['backbone']} on {r['data']} (seed {r['seed']}): compound scaling "
                         + (f"does not win at {', '.join(lost)}" if lost else "wins at every phi"))
        return lines
    for axis, other in (("data", "seed"), ("seed", "data")):
        for value, group in df.groupby(axis):
            if len(group) < 2:
                continue
            winners = sorted(set(group["winner"].dropna()))
            verdict = "the same winner" if len(winners) == 1 else f"{len(winners)} different winners"
            lines.append(f"{axis}={value}: {verdict} across {other} ({', '.join(winners)})")
    return lines


class SummaryCallback(Callback):
    """Collects each job's outcome; at the sweep's end writes and prints the summary, names each
    failed job with its line, and exits with the failed jobs' status (1 or 2) where any failed."""

    def __init__(self) -> None:
        self.jobs: list[dict] = []
        self.failed: list[dict] = []
        self.overrides: list[list[str]] = []  # every job's, to name a failed one by what varies

    def on_job_end(self, config, job_return, **kwargs) -> None:
        self.overrides.append(list(job_return.overrides or []))
        try:
            value = job_return.return_value
        except Exception:  # noqa: BLE001 - a failed job has no return value; Hydra reports it
            return
        if isinstance(value, dict):
            if "job_failed" in value:
                self.failed.append({**value, "overrides": self.overrides[-1]})
            else:
                self.jobs.append(value)

    def _name(self, overrides: list[str]) -> str:
        """A job by the overrides that differ between the sweep's jobs (``trainer.lr=1e6``)."""
        varying = [o for o in overrides if sum(o in job for job in self.overrides) < len(self.overrides)]
        return " ".join(varying or overrides) or "(no overrides)"

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        failures = [f"job {self._name(f['overrides'])} failed: {f['job_failed']}" for f in self.failed]
        if failures:
            failures.append(f"{len(self.failed)} of {len(self.failed) + len(self.jobs)} jobs failed"
                            + ("; the others ran to their end" if self.jobs else ""))
        if self.jobs:
            self._summarise(config, sweep_dir, failures)
        if failures:
            print("\n".join(failures), file=sys.stderr, flush=True)
            raise SystemExit(max(f["exit_status"] for f in self.failed))

    def _summarise(self, config, sweep_dir: Path, failures: list[str]) -> None:
        fidelity = all("kendall_tau" in job for job in self.jobs)
        df = pd.DataFrame(self.jobs) if fidelity else summary_frame(self.jobs)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        with atomic_output(sweep_dir / "multirun_summary.csv") as tmp:
            df.to_csv(tmp, index=False)
        lines = [] if fidelity else stability(df)
        formats = {"top1": "{:.4f}", "baseline_top1": "{:.4f}", "macs": "{:,.0f}"}
        formats.update({c: "{:+.4f}" for c in df if c.endswith("_compound_margin")})
        text = markdown(df, formats)
        atomic_write_text(sweep_dir / "multirun_summary.md", text + "\n" + "\n".join([*lines, *failures]) + "\n")
        print(text + "\n".join(lines), flush=True)
        print(f"multirun summary: {sweep_dir / 'multirun_summary.md'}", flush=True)
        if config.get("report", True) and not fidelity:
            from scaling_search.analysis.report import report_after_run  # lazy: matplotlib, only for a sweep's page

            report_after_run(sweep_dir, "multirun", "multirun report")
