"""The results of a search: one record per finished trial, then tables, ranking and Pareto front.

Each finished trial is written at once, atomically, to ``<run>/trials/<trial_id>.json`` (its
spec, final row and per-epoch history), so an interrupted search loses at most the trials that
were running, and a re-run skips every trial already recorded as ``ok`` or ``stopped`` (failed
ones run again). The tables are built from these records alone, as pycls's sweep analysis
builds its from the logs.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from scaling_search.files import atomic_write_text
from scaling_search.train.trial import OK, STOPPED

# Two-sided 95% Student-t quantiles by degrees of freedom (scipy.stats.t.ppf(0.975, df)).
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
        9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}


def t95(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (table, then normal)."""
    if df < 1:
        return math.nan
    if df in _T95:
        return _T95[df]
    below = max(k for k in _T95 if k < df)
    return _T95[below] if df <= 30 else 1.96


class TrialStore:
    """The ``trials/`` folder of one run."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / "trials"

    def save(self, spec: dict, row: dict, history: list[dict], candidate: dict) -> None:
        """Writes one ended trial; ``candidate`` holds its coefficients and cost columns."""
        record = {"spec": spec, "candidate": candidate, "row": row, "history": history}
        atomic_write_text(self.dir / f"{spec['trial_id']}.json", json.dumps(record, indent=1))

    def load(self) -> list[dict]:
        if not self.dir.is_dir():
            return []
        return [json.loads(p.read_text()) for p in sorted(self.dir.glob("*.json"))]

    def finished_ids(self) -> set[str]:
        """Trials that need no re-run: finished or stopped early by the scheduler."""
        return {r["row"]["trial_id"] for r in self.load() if r["row"]["status"] in (OK, STOPPED)}


RESULT_COLUMNS = [
    "candidate_id", "role", "trial_id", "seed", "depth_coef", "width_coef", "resolution_coef", "product",
    "depth_mult", "width_mult", "resolution_mult", "resolution_px", "params", "macs",
    "activations", "macs_ratio", "final_top1", "best_top1", "final_val_loss", "epochs",
    "status", "error", "train_time_s", "images_per_s", "wall_time_s", "merged",
]


def results_frame(records: Iterable[dict], columns: list[str] = RESULT_COLUMNS) -> pd.DataFrame:
    """One row per trial: the candidate's coefficients and cost beside the trial's outcome."""
    rows = []
    for r in records:
        spec, row = r["spec"], r["row"]
        rows.append({**r["candidate"], "candidate_id": spec["candidate_id"],
                     "trial_id": spec["trial_id"], "seed": spec["seed"],
                     **{k: v for k, v in row.items() if k != "traceback"}})
    df = pd.DataFrame(rows)
    for col in columns:
        if col not in df:
            df[col] = np.nan
    return df[columns].sort_values(["candidate_id", "seed"], ignore_index=True)


def epochs_frame(records: Iterable[dict]) -> pd.DataFrame:
    """The per-epoch curves: one row per (trial, epoch)."""
    rows = [{"candidate_id": r["spec"]["candidate_id"], "trial_id": r["spec"]["trial_id"],
             "seed": r["spec"]["seed"], **h} for r in records for h in r["history"]]
    cols = ["candidate_id", "trial_id", "seed", "epoch", "train/loss", "val/loss", "val/top1",
            "lr", "time_s", "images_per_s"]
    df = pd.DataFrame(rows, columns=cols)
    return df.sort_values(["trial_id", "epoch"], ignore_index=True)


GRID_KEYS = ("candidate_id", "role", "depth_coef", "width_coef", "resolution_coef", "product",
             "resolution_px", "params", "macs", "macs_ratio")


def rank(results: pd.DataFrame, metric: str = "final_top1", keys: tuple[str, ...] = GRID_KEYS) -> pd.DataFrame:
    """Candidates ranked by mean ``metric`` over their ``ok`` seeds, best first.

    Columns: mean, standard deviation and 95% interval half-width (Student's t) of the metric
    over seeds, top-1 per MAC (``top1_per_mmacs``: mean top-1 per million MACs), the rank by
    each, and whether the candidate lies on the Pareto front of top-1 against MACs. ``keys``
    are the columns that identify a candidate (and are carried into the table).
    """
    ok = results[results["status"] == OK]
    if ok.empty:
        raise ValueError("no trial finished; see the error column of results.csv")
    g = ok.groupby(list(keys), dropna=False)[metric]
    table = g.agg(top1_mean="mean", top1_std="std", seeds="count").reset_index()
    table["top1_std"] = table["top1_std"].where(table["seeds"] > 1)
    table["top1_ci95"] = [s * t95(n - 1) / math.sqrt(n) if n > 1 else math.nan
                          for s, n in zip(table["top1_std"], table["seeds"])]
    table["top1_per_mmacs"] = table["top1_mean"] / (table["macs"] / 1e6)
    table["rank_top1"] = table["top1_mean"].rank(ascending=False, method="min").astype(int)
    table["rank_top1_per_mmacs"] = table["top1_per_mmacs"].rank(ascending=False, method="min").astype(int)
    table["pareto"] = pareto_mask(table["macs"].to_numpy(), table["top1_mean"].to_numpy())
    return table.sort_values(["top1_mean", "macs", "candidate_id"], ascending=[False, True, True],
                             ignore_index=True)


def pareto_mask(macs: np.ndarray, top1: np.ndarray) -> np.ndarray:
    """True where no other point has MACs ≤ and top-1 ≥ with one of them strict."""
    macs, top1 = np.asarray(macs, float), np.asarray(top1, float)
    mask = np.ones(len(macs), bool)
    for i in range(len(macs)):
        dominated = (macs <= macs[i]) & (top1 >= top1[i]) & ((macs < macs[i]) | (top1 > top1[i]))
        mask[i] = not dominated.any()
    return mask
