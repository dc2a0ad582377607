"""The results of a run, from its trial records (``train.records``): tables, ranking, Pareto front.

The tables are built from the records alone, as pycls's sweep analysis builds its from the logs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import pandas as pd

from scaling_search.train.records import unpack_correct
from scaling_search.train.status import OK


def t95(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom (NaN when ``df`` < 1):
    the factor of a two-sided 95% interval, ``scipy.stats.t.ppf(0.975, df)``."""
    # Lazy, for start-up time: scipy.stats costs about 0.7 s to import, and the apps that
    # import this module need it only once their trials have run.
    from scipy import stats

    return float(stats.t.ppf(0.975, df)) if df >= 1 else math.nan


def ci95(std: float, n: int) -> float:
    """Half-width of the 95% interval of the mean of ``n`` values whose sample standard
    deviation is ``std`` (NaN for a single value)."""
    return std * t95(n - 1) / math.sqrt(n) if n > 1 else math.nan


RESULT_COLUMNS = [
    "candidate_id", "role", "trial_id", "seed", "depth_coef", "width_coef", "resolution_coef", "product",
    "depth_mult", "width_mult", "resolution_mult", "resolution_px", "params", "macs",
    "activations", "macs_ratio", "final_top1", "best_top1", "final_val_loss", "epochs",
    "status", "error", "setup_time_s", "train_time_s", "images_per_s", "wall_time_s", "peak_gpu_mib", "step",
    "node", "node_id", "merged",
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
    table["top1_ci95"] = [ci95(s, n) for s, n in zip(table["top1_std"], table["seeds"])]
    table["top1_per_mmacs"] = table["top1_mean"] / (table["macs"] / 1e6)
    table["rank_top1"] = table["top1_mean"].rank(ascending=False, method="min").astype(int)
    table["rank_top1_per_mmacs"] = table["top1_per_mmacs"].rank(ascending=False, method="min").astype(int)
    table["pareto"] = pareto_mask(table["macs"].to_numpy(), table["top1_mean"].to_numpy())
    return table.sort_values(["top1_mean", "macs", "candidate_id"], ascending=[False, True, True],
                             ignore_index=True)


def correctness(records: Iterable[dict]) -> dict[str, np.ndarray]:
    """Each trial's per-image validation correctness (``trial_id`` -> bool array), where recorded."""
    found = {}
    for r in records:
        got = unpack_correct(r["row"].get("val_correct", ""))
        if got is not None:
            found[r["spec"]["trial_id"]] = got
    return found


def paired_over_seeds(diffs: np.ndarray) -> tuple[float, float, float]:
    """Mean of per-seed differences and its 95% t-interval (a paired comparison over seeds)."""
    d = np.asarray(diffs, float)
    mean = float(d.mean())
    half = ci95(float(d.std(ddof=1)), len(d)) if len(d) > 1 else math.nan
    return mean, mean - half, mean + half


def paired_over_images(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, float]:
    """Top-1 of ``a`` minus top-1 of ``b`` on the same images (per-image correctness of each):
    the difference, its exact 95% interval, and the two-sided p-value of McNemar's exact test.

    Only the discordant images (right by one model, wrong by the other) carry information: of
    ``k`` of them, ``a`` was right on ``n12``. McNemar's exact test is a binomial test of
    ``n12`` against k/2. The interval is the Clopper-Pearson interval of n12/k mapped to the
    difference, (k/n)(2p - 1): exact and conditional on ``k``, and since the binomial at 1/2 is
    symmetric, it excludes 0 exactly when the test's p < 0.05, so the interval and the verdict
    never disagree (the Wald interval can: it did at the edge on the default search)."""
    from scipy import stats  # lazy, as in t95

    a, b = np.asarray(a, bool), np.asarray(b, bool)
    n = len(a)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    k = only_a + only_b
    diff = (only_a - only_b) / n
    if not k:
        return diff, 0.0, 0.0, 1.0
    test = stats.binomtest(only_a, k, 0.5)
    ci = test.proportion_ci(0.95, method="exact")
    return diff, k / n * (2 * ci.low - 1), k / n * (2 * ci.high - 1), float(test.pvalue)


def compare(results: pd.DataFrame, correct: dict[str, np.ndarray], a: str, b: str,
            metric: str = "final_top1") -> dict:
    """Candidate ``a`` against ``b``, paired: over the seeds both trained (2 or more), else
    over the validation images of their one common seed. ``tied``: not distinguishable at 95%
    (the interval holds 0; with one seed, McNemar's p >= 0.05)."""
    ok = results[results["status"] == OK]
    pa = ok[ok["candidate_id"] == a].set_index("seed")
    pb = ok[ok["candidate_id"] == b].set_index("seed")
    seeds = sorted(set(pa.index) & set(pb.index))
    if len(seeds) >= 2:
        diffs = pa.loc[seeds, metric].to_numpy() - pb.loc[seeds, metric].to_numpy()
        if np.ptp(diffs) > 0:
            diff, lo, hi = paired_over_seeds(diffs)
            return {"diff": diff, "lo": lo, "hi": hi, "p": math.nan, "by": f"{len(seeds)} seeds",
                    "tied": bool(lo <= 0 <= hi)}
        # Every seed gave the same difference: a t-interval over seeds has zero width and would
        # call any difference certain (one validation image right on 3 seeds "beat" the baseline
        # by 1.0). The seeds' images decide instead, pooled, by McNemar's exact test.
        ca = [correct.get(pa.loc[sd, "trial_id"]) for sd in seeds]
        cb = [correct.get(pb.loc[sd, "trial_id"]) for sd in seeds]
        if all(x is not None and y is not None and len(x) == len(y) and len(x) for x, y in zip(ca, cb)):
            diff, lo, hi, p = paired_over_images(np.concatenate(ca), np.concatenate(cb))
            return {"diff": diff, "lo": lo, "hi": hi, "p": p, "tied": bool(p >= 0.05),
                    "by": f"{len(seeds)} seeds x {len(ca[0])} images (the seeds agree exactly)"}
        return {"diff": float(diffs[0]), "lo": math.nan, "hi": math.nan, "p": math.nan,
                "by": f"{len(seeds)} seeds (identical: not enough data)", "tied": None}
    if len(seeds) == 1:
        ca, cb = correct.get(pa.loc[seeds[0], "trial_id"]), correct.get(pb.loc[seeds[0], "trial_id"])
        if ca is not None and cb is not None and len(ca) == len(cb) and len(ca):
            diff, lo, hi, p = paired_over_images(ca, cb)
            return {"diff": diff, "lo": lo, "hi": hi, "p": p, "by": f"{len(ca)} images", "tied": bool(p >= 0.05)}
    return {"diff": math.nan, "lo": math.nan, "hi": math.nan, "p": math.nan, "by": "", "tied": None}


def with_ties(ranking: pd.DataFrame, results: pd.DataFrame, correct: dict[str, np.ndarray],
              among: pd.Series | None = None) -> pd.DataFrame:
    """``ranking`` with each candidate's paired difference to the best (``diff_to_best``, its
    95% interval ``diff_lo``/``diff_hi``, ``p_mcnemar`` with one seed, ``paired_by``) and
    ``tied_with_best``. The best is the first row of ``among`` (default: every row)."""
    pool = ranking if among is None else ranking[among]
    table = ranking.copy()
    unknown = {"diff": math.nan, "lo": math.nan, "hi": math.nan, "p": math.nan, "by": "", "tied": None}
    best = pool.iloc[0]["candidate_id"] if len(pool) else None
    rows = [unknown if best is None else compare(results, correct, c, best) if c != best else
            {"diff": 0.0, "lo": 0.0, "hi": 0.0, "p": 1.0, "by": "", "tied": True}
            for c in table["candidate_id"]]
    table["diff_to_best"] = [r["diff"] for r in rows]
    table["diff_lo"] = [r["lo"] for r in rows]
    table["diff_hi"] = [r["hi"] for r in rows]
    table["p_mcnemar"] = [r["p"] for r in rows]
    table["paired_by"] = [r["by"] for r in rows]
    table["tied_with_best"] = pd.array([r["tied"] for r in rows], dtype="boolean")
    return table


def pareto_mask(macs: np.ndarray, top1: np.ndarray) -> np.ndarray:
    """True where a point is on the Pareto front of top-1 against MACs: no other point has
    MACs ≤ and top-1 ≥ with one of the two strict.

    Ties: of points with equal MACs only those with the highest top-1 are on the front, and of
    equal top-1 only those with the fewest MACs; equal points (the same MACs and the same top-1)
    do not dominate each other, so all of them are on it or none is. A point with a missing
    (NaN) value is on no front and dominates no point.
    """
    macs, top1 = np.asarray(macs, float), np.asarray(top1, float)
    known = ~(np.isnan(macs) | np.isnan(top1))
    m, t = macs[:, None], top1[:, None]  # row i: the point tested; column j: every other point
    dominated = (macs <= m) & (top1 >= t) & ((macs < m) | (top1 > t))
    return known & ~dominated.any(axis=1)


BOOTSTRAP_RESAMPLES = 2000


def rank_agreement(proxy, long, seed: int = 0, n_resamples: int = BOOTSTRAP_RESAMPLES,
                   confidence: float = 0.95) -> dict:
    """How well one ranking predicts another: Kendall's tau-b and Spearman's rho between paired
    scores (``proxy[i]`` and ``long[i]`` of candidate i; ties allowed), with percentile bootstrap
    intervals over the candidates.

    The point values are ``scipy.stats.kendalltau`` (tau-b) and ``scipy.stats.spearmanr``. The
    intervals resample the candidates with replacement, pairs kept together, ``n_resamples``
    times from ``numpy.random.default_rng(seed)`` (so a table gives the same interval every time),
    and take the (1 - confidence)/2 and (1 + confidence)/2 percentiles of each statistic. A
    resample whose proxy or long scores are all equal has no correlation and is left out
    (``resamples`` counts those kept). Fewer than 2 candidates give NaN everywhere; fewer than
    3 give no interval.

    Returns:
        ``{"n", "kendall_tau", "kendall_p", "kendall_lo", "kendall_hi", "spearman_rho",
        "spearman_p", "spearman_lo", "spearman_hi", "resamples", "confidence", "seed"}``.
    """
    from scipy import stats  # lazy, as in t95

    x, y = np.asarray(proxy, float), np.asarray(long, float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"rank_agreement needs two score vectors of one length, got {x.shape} and {y.shape}")
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("rank_agreement needs a proxy and a long score for every candidate (got NaN)")
    n = len(x)
    out = {"n": n, "kendall_tau": math.nan, "kendall_p": math.nan, "kendall_lo": math.nan, "kendall_hi": math.nan,
           "spearman_rho": math.nan, "spearman_p": math.nan, "spearman_lo": math.nan, "spearman_hi": math.nan,
           "resamples": 0, "confidence": confidence, "seed": seed}
    if n < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return out
    tau = stats.kendalltau(x, y)
    rho = stats.spearmanr(x, y)
    out.update(kendall_tau=float(tau.statistic), kendall_p=float(tau.pvalue),
               spearman_rho=float(rho.statistic), spearman_p=float(rho.pvalue))
    if n < 3:
        return out
    idx = np.random.default_rng(seed).integers(0, n, size=(n_resamples, n))
    a, b = x[idx], y[idx]
    keep = (np.ptp(a, axis=1) > 0) & (np.ptp(b, axis=1) > 0)
    a, b = a[keep], b[keep]
    chunk = max(1, 2_000_000 // (n * n))  # rows of n x n pair signs held at once
    taus = np.concatenate([_tau_b_rows(a[i:i + chunk], b[i:i + chunk]) for i in range(0, len(a), chunk)] or [[]])
    rhos = _rho_rows(a, b)
    if len(taus):
        q = [50 * (1 - confidence), 50 * (1 + confidence)]
        (t_lo, t_hi), (r_lo, r_hi) = np.percentile(taus, q), np.percentile(rhos, q)
        out.update(kendall_lo=float(t_lo), kendall_hi=float(t_hi), spearman_lo=float(r_lo),
                   spearman_hi=float(r_hi), resamples=len(taus))
    return out


def agreement_line(a: dict) -> str:
    """``Kendall's tau-b 0.571 (95% interval 0.143 to 0.929), Spearman's rho 0.738 (0.262 to
    0.976), over 8 candidates``: a ``rank_agreement`` in words, for the console, the tables and
    the report."""
    def interval(lo: float, hi: float) -> str:
        return f"{a['confidence']:.0%} bootstrap interval {lo:+.3f} to {hi:+.3f}" if lo == lo else "no interval"

    if a["kendall_tau"] != a["kendall_tau"]:
        return f"no rank correlation over {a['n']} candidate(s) (fewer than 2, or every score equal)"
    return (f"Kendall's tau-b {a['kendall_tau']:+.3f} ({interval(a['kendall_lo'], a['kendall_hi'])}), "
            f"Spearman's rho {a['spearman_rho']:+.3f} ({interval(a['spearman_lo'], a['spearman_hi'])}), "
            f"over {a['n']} candidates" + (f" ({a['resamples']} paired resamples)" if a["resamples"] else ""))


def _tau_b_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of each row pair (``a[r]``, ``b[r]``) at once: (concordant - discordant)
    pairs over sqrt((pairs - pairs tied in a) * (pairs - pairs tied in b)), as
    ``scipy.stats.kendalltau`` computes it for one pair of vectors."""
    n = a.shape[1]
    upper = np.triu(np.ones((n, n), bool), 1)
    sa = np.sign(a[:, :, None] - a[:, None, :])[:, upper]
    sb = np.sign(b[:, :, None] - b[:, None, :])[:, upper]
    pairs = n * (n - 1) / 2
    return (sa * sb).sum(axis=1) / np.sqrt((pairs - (sa == 0).sum(axis=1)) * (pairs - (sb == 0).sum(axis=1)))


def _rho_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho of each row pair at once: the Pearson correlation of their ranks (ties
    given their average rank), as ``scipy.stats.spearmanr`` computes it for one pair."""
    from scipy import stats  # lazy, as in t95

    ra, rb = stats.rankdata(a, axis=1), stats.rankdata(b, axis=1)
    ra, rb = ra - ra.mean(axis=1, keepdims=True), rb - rb.mean(axis=1, keepdims=True)
    return (ra * rb).sum(axis=1) / np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
