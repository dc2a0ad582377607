"""Results (results.py): ranking statistics against numpy/scipy, the Pareto front, the store."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from scaling_search.analysis.results import pareto_mask, rank, results_frame, t95
from scaling_search.train.records import TrialStore

# Two-sided 95% Student-t factors as printed in standard tables (e.g. NIST/SEMATECH
# e-Handbook of Statistical Methods, 1.3.6.7.2, upper critical values at 0.025), to 3 decimals.
T_TABLE = {1: 12.706, 2: 4.303, 4: 2.776, 12: 2.179, 17: 2.110, 25: 2.060, 40: 2.021, 100: 1.984}


@pytest.mark.parametrize("df,expected", sorted(T_TABLE.items()))
def test_t95_matches_the_printed_table(df, expected):
    assert t95(df) == pytest.approx(expected, abs=5e-4)


def test_t95_is_nan_without_degrees_of_freedom():
    assert math.isnan(t95(0)) and math.isnan(t95(-1))


def _results(rows):
    base = {"role": "candidate", "depth_coef": 1.0, "width_coef": 1.0, "resolution_coef": 1.0,
            "product": 1.0, "resolution_px": 32, "params": 1, "status": "ok"}
    return pd.DataFrame([{**base, **r} for r in rows])


def test_rank_mean_std_ci_and_per_mac():
    rows = [{"candidate_id": "a", "macs": 2e6, "macs_ratio": 2.0, "final_top1": v, "seed": i}
            for i, v in enumerate([0.90, 0.92, 0.94])]
    rows += [{"candidate_id": "b", "macs": 1e6, "macs_ratio": 1.0, "final_top1": v, "seed": i}
             for i, v in enumerate([0.89, 0.91, 0.93])]
    rows += [{"candidate_id": "c", "macs": 3e6, "macs_ratio": 3.0, "final_top1": 0.5, "seed": 0,
              "status": "failed"}]
    table = rank(_results(rows))
    assert table["candidate_id"].tolist() == ["a", "b"]  # the failed trial is not ranked
    a = table.iloc[0]
    values = np.array([0.90, 0.92, 0.94])
    assert a["top1_mean"] == pytest.approx(values.mean())
    assert a["top1_std"] == pytest.approx(values.std(ddof=1))
    assert a["top1_ci95"] == pytest.approx(4.303 * values.std(ddof=1) / math.sqrt(3), rel=1e-4)
    assert a["top1_per_mmacs"] == pytest.approx(values.mean() / 2)
    assert table.set_index("candidate_id")["rank_top1_per_mmacs"].to_dict() == {"a": 2, "b": 1}
    assert table["pareto"].tolist() == [True, True]


def test_single_seed_has_no_spread():
    table = rank(_results([{"candidate_id": "a", "macs": 1e6, "macs_ratio": 1, "final_top1": 0.5, "seed": 0}]))
    assert math.isnan(table.iloc[0]["top1_std"]) and math.isnan(table.iloc[0]["top1_ci95"])


def test_no_finished_trial_is_a_clear_error():
    with pytest.raises(ValueError, match="no trial finished"):
        rank(_results([{"candidate_id": "a", "macs": 1, "macs_ratio": 1, "final_top1": 0, "seed": 0,
                        "status": "failed"}]))


def test_pareto_front():
    macs = [1, 2, 3, 4, 2]
    top1 = [0.5, 0.7, 0.6, 0.8, 0.7]
    # (3, 0.6) is dominated by (2, 0.7); the two (2, 0.7) do not dominate each other.
    assert pareto_mask(macs, top1).tolist() == [True, True, False, True, True]


def test_pareto_front_ties():
    # Equal MACs: only the higher top-1 is on the front, whichever comes first.
    assert pareto_mask([2, 2, 1], [0.6, 0.7, 0.5]).tolist() == [False, True, True]
    assert pareto_mask([2, 2, 1], [0.7, 0.6, 0.5]).tolist() == [True, False, True]
    # Equal top-1: only the fewer MACs.
    assert pareto_mask([3, 2, 1], [0.7, 0.7, 0.5]).tolist() == [False, True, True]
    # Equal points: all on the front together, or all off it.
    assert pareto_mask([2, 2, 1], [0.7, 0.7, 0.5]).tolist() == [True, True, True]
    assert pareto_mask([2, 2, 1], [0.4, 0.4, 0.5]).tolist() == [False, False, True]


def test_pareto_front_skips_missing_values():
    # A NaN point is on no front, and does not push a real point off it.
    assert pareto_mask([1, 2, np.nan], [np.nan, 0.6, 0.9]).tolist() == [False, True, False]


def test_store_roundtrip_and_finished_ids(tmp_path):
    store = TrialStore(tmp_path)
    spec = lambda t: {"trial_id": t, "candidate_id": "c1", "seed": 0}  # noqa: E731
    cand = {"role": "candidate", "macs": 10}
    store.save(spec("t1"), {"trial_id": "t1", "status": "ok", "final_top1": 0.5}, [{"epoch": 1}], cand)
    store.save(spec("t2"), {"trial_id": "t2", "status": "failed", "error": "boom"}, [], cand)
    store.save(spec("t3"), {"trial_id": "t3", "status": "stopped"}, [], cand)
    assert store.finished_ids() == {"t1", "t3"}  # failed trials run again
    df = results_frame(store.load())
    assert df.set_index("trial_id").loc["t2", "error"] == "boom"
    assert df.set_index("trial_id").loc["t1", "macs"] == 10
    assert not list(tmp_path.glob("trials/.*.tmp"))


def test_mcnemar_exact_and_the_paired_interval_match_hand_computed_values():
    """Discordant pairs 8 (a right only) and 2 (b right only) of 100 images. McNemar's exact
    test: two-sided binomial, 2 * P(X <= 2 | n=10, 1/2) = 2 * (1 + 10 + 45) / 1024 = 0.109375.
    The Clopper-Pearson 95% interval of 8/10 is 0.4439 to 0.9748 (the tabulated exact binomial
    limits), so the difference's is (10/100)(2p - 1): -0.01122 to 0.09496, holding 0 as p > 0.05."""
    from scaling_search.analysis.results import paired_over_images

    a = np.array([True] * 8 + [False] * 2 + [True] * 60 + [False] * 30)
    b = np.array([False] * 8 + [True] * 2 + [True] * 60 + [False] * 30)
    diff, lo, hi, p = paired_over_images(a, b)
    assert diff == pytest.approx(0.06)
    assert (lo, hi) == (pytest.approx(0.1 * (2 * 0.4439 - 1), abs=2e-5),
                        pytest.approx(0.1 * (2 * 0.9748 - 1), abs=2e-5))
    assert p == pytest.approx(0.109375)
    # 10 discordant, all one way: p = 2 / 1024 < 0.05, and the interval excludes 0 with it
    diff, lo, hi, p = paired_over_images(np.r_[np.ones(10), np.zeros(90)].astype(bool), np.zeros(100, bool))
    assert p == pytest.approx(2 / 1024) and lo > 0


def test_the_paired_seed_interval_uses_students_t():
    """Differences 0.01, 0.02, 0.03: mean 0.02, sd 0.01, t(0.975, 2) = 4.302653 (t table), so the
    half-width is 4.302653 * 0.01 / sqrt(3) = 0.0248414."""
    from scaling_search.analysis.results import paired_over_seeds

    mean, lo, hi = paired_over_seeds(np.array([0.01, 0.02, 0.03]))
    assert mean == pytest.approx(0.02)
    assert (hi - mean) == pytest.approx(0.0248414, abs=1e-6) and (mean - lo) == pytest.approx(0.0248414, abs=1e-6)


def test_the_tied_set_is_paired_over_seeds_or_over_images():
    from scaling_search.analysis.results import rank, with_ties
    from scaling_search.train.records import pack_correct, unpack_correct

    rows = []
    for cid, tops in {"a": [0.90, 0.92, 0.91], "b": [0.89, 0.915, 0.905], "c": [0.80, 0.81, 0.79]}.items():
        rows += [{"candidate_id": cid, "role": "candidate", "trial_id": f"{cid}_s{s}", "seed": s,
                  "status": "ok", "final_top1": t, "macs": 1e6, "depth_coef": 1, "width_coef": 1,
                  "resolution_coef": 1, "product": 1, "resolution_px": 8, "params": 1, "macs_ratio": 1}
                 for s, t in enumerate(tops)]
    results = pd.DataFrame(rows)
    table = with_ties(rank(results), results, {})
    assert list(table["candidate_id"]) == ["a", "b", "c"]
    assert list(table["tied_with_best"]) == [True, True, False]  # b is 0.005 behind, +-0.01; c 0.107
    assert table.loc[1, "paired_by"] == "3 seeds" and table.loc[1, "diff_lo"] < 0 < table.loc[1, "diff_hi"]
    one = results[results["seed"] == 0]
    right = {"a_s0": np.r_[np.ones(90), np.zeros(10)].astype(bool),
             "b_s0": np.r_[np.ones(89), np.zeros(11)].astype(bool),
             "c_s0": np.r_[np.ones(80), np.zeros(20)].astype(bool)}
    right = {k: unpack_correct(pack_correct(v)) for k, v in right.items()}  # through the record format
    table = with_ties(rank(one), one, right)
    assert list(table["tied_with_best"]) == [True, True, False]  # 1 discordant pair; 10 (p = 0.002)
    assert table.loc[2, "p_mcnemar"] == pytest.approx(2 / 1024)  # 2 * P(X <= 0 | n=10)


def test_seeds_that_agree_exactly_do_not_make_a_difference_certain():
    """One validation image, right for `a` and wrong for `b` on each of 3 seeds: the differences
    over seeds are 1, 1, 1 with zero variance, so a t-interval would be [1, 1]. Pooled over the
    seeds' images, McNemar's exact test on 3 discordant pairs gives p = 2 * 0.5**3 = 0.25: tied."""
    from scaling_search.analysis.results import compare

    rows = [{"candidate_id": c, "trial_id": f"{c}_s{s}", "seed": s, "status": "ok", "final_top1": top}
            for c, top in (("a", 1.0), ("b", 0.0)) for s in range(3)]
    results = pd.DataFrame(rows)
    right = {f"a_s{s}": np.array([True]) for s in range(3)} | {f"b_s{s}": np.array([False]) for s in range(3)}
    got = compare(results, right, "a", "b")
    assert got["tied"] is True and got["p"] == pytest.approx(0.25) and got["diff"] == 1.0
    assert got["by"] == "3 seeds x 1 images (the seeds agree exactly)"
    unknown = compare(results, {}, "a", "b")  # no per-image record: no verdict, never "significant"
    assert unknown["tied"] is None and "not enough data" in unknown["by"]
    # with 100 images per seed, all discordant for `a`, the pooled test is decisive
    right = {f"a_s{s}": np.ones(100, bool) for s in range(3)} | {f"b_s{s}": np.zeros(100, bool) for s in range(3)}
    assert compare(results, right, "a", "b")["tied"] is False


def test_paired_differences_are_this_minus_the_best_with_their_sign():
    """c trails a by 0.11 on every seed: its difference to the best is negative, its whole
    interval below zero; and a paired verdict of a loss says 'loses'."""
    from scaling_search.analysis.results import rank, with_ties
    from scaling_search.tables import paired_verdict, verdict_line

    rows = []
    for cid, tops in {"a": [0.90, 0.92, 0.91], "c": [0.80, 0.80, 0.81]}.items():
        rows += [{"candidate_id": cid, "role": "candidate", "trial_id": f"{cid}_s{s}", "seed": s,
                  "status": "ok", "final_top1": t, "macs": 1e6, "depth_coef": 1, "width_coef": 1,
                  "resolution_coef": 1, "product": 1, "resolution_px": 8, "params": 1, "macs_ratio": 1}
                 for s, t in enumerate(tops)]
    results = pd.DataFrame(rows)
    table = with_ties(rank(results), results, {}).set_index("candidate_id")
    d = np.array([0.80 - 0.90, 0.80 - 0.92, 0.81 - 0.91])
    half = t95(2) * d.std(ddof=1) / math.sqrt(3)
    assert table.loc["c", "diff_to_best"] == pytest.approx(d.mean())
    assert table.loc["c", "diff_lo"] == pytest.approx(d.mean() - half)
    assert table.loc["c", "diff_hi"] == pytest.approx(d.mean() + half) and table.loc["c", "diff_hi"] < 0
    assert paired_verdict(-0.05, False) == "loses" and paired_verdict(0.05, False) == "beats"
    assert paired_verdict(-0.05, True) == "ties" and paired_verdict(0.0, None) == "unpaired"
    v = {"verdict": "loses", "rule": "depth", "rule_top1": 0.95, "diff": -0.05, "diff_lo": -0.08, "diff_hi": -0.02,
         "paired_by": "3 seeds", "macs_flag": False, "macs_mismatch": 0.01, "macs_tolerance": 0.05,
         "phi": 1.0, "compound_top1": 0.90}
    assert "compound (top-1 0.9000) loses to depth (0.9500) by -0.0500" in verdict_line(v)
