"""Proxy fidelity (``python -m scaling_search.fidelity``): the rank statistics against scipy and a
hand count, the selection and the summary from hand-made records, and one real run end to end."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import TINY
from scipy import stats

from scaling_search import fidelity as app
from scaling_search.analysis.report import build_page
from scaling_search.analysis.results import agreement_line, rank_agreement
from scaling_search.cli import preflight
from scaling_search.steps import fidelity
from scaling_search.train.records import TrialStore

PROG = "scaling_search.fidelity"


# --- the statistics ---------------------------------------------------------------------------

def test_tau_and_rho_of_a_small_ranking_counted_by_hand():
    """Proxy ranks 1..5, long ranks (3, 1, 2, 5, 4). Of the 10 pairs, 3 are discordant
    ((1,2), (1,3), (4,5)) and 7 concordant: tau = (7 - 3) / 10 = 0.4. The rank differences are
    (-2, 1, 1, -1, 1), sum of squares 8: rho = 1 - 6 * 8 / (5 * (25 - 1)) = 0.6."""
    a = rank_agreement([5, 4, 3, 2, 1], [3, 5, 4, 1, 2])  # higher top-1 = better rank
    assert a["kendall_tau"] == pytest.approx(0.4)
    assert a["spearman_rho"] == pytest.approx(0.6)
    assert a["n"] == 5


def test_tau_b_with_a_tie_counted_by_hand():
    """x = (1, 2, 2, 3), y = (1, 3, 2, 4): of the 6 pairs, 5 are concordant, none discordant, and
    one is tied in x only, so tau-b = (5 - 0) / sqrt((6 - 1) * (6 - 0)) = 5 / sqrt(30)."""
    assert rank_agreement([1, 2, 2, 3], [1, 3, 2, 4])["kendall_tau"] == pytest.approx(5 / 30**0.5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_point_values_are_scipys(seed):
    rng = np.random.default_rng(seed)
    x = rng.random(9)
    y = x + rng.normal(0, 0.3, 9)
    y[3] = y[5]  # a tie
    a = rank_agreement(x, y)
    tau, rho = stats.kendalltau(x, y, variant="b"), stats.spearmanr(x, y)
    assert (a["kendall_tau"], a["kendall_p"]) == pytest.approx((tau.statistic, tau.pvalue))
    assert (a["spearman_rho"], a["spearman_p"]) == pytest.approx((rho.statistic, rho.pvalue))


def test_each_resamples_statistics_are_scipys():
    """The bootstrap computes tau-b and rho of all resamples at once; each is scipy's, ties and
    repeated candidates (a resample draws some twice) included."""
    from scaling_search.analysis.results import _rho_rows, _tau_b_rows

    rng = np.random.default_rng(3)
    x, y = np.round(rng.random(7), 1), np.round(rng.random(7), 1)  # rounded: ties
    idx = rng.integers(0, 7, size=(200, 7))
    a, b = x[idx], y[idx]
    keep = (np.ptp(a, axis=1) > 0) & (np.ptp(b, axis=1) > 0)
    a, b = a[keep], b[keep]
    assert np.allclose(_tau_b_rows(a, b), [stats.kendalltau(u, v).statistic for u, v in zip(a, b)])
    assert np.allclose(_rho_rows(a, b), [stats.spearmanr(u, v).statistic for u, v in zip(a, b)])


def test_the_bootstrap_interval_agrees_with_scipys_percentile_bootstrap():
    """The same paired percentile bootstrap as ``scipy.stats.bootstrap(paired=True,
    method="percentile")``, from another random stream: the two Monte-Carlo intervals agree to
    within the resampling noise."""
    x = np.array([0.91, 0.93, 0.90, 0.95, 0.92, 0.89, 0.96, 0.94, 0.88, 0.97])
    y = np.array([0.92, 0.95, 0.93, 0.94, 0.91, 0.90, 0.97, 0.96, 0.89, 0.95])
    a = rank_agreement(x, y, seed=0, n_resamples=3000)
    for name, fn in (("kendall", stats.kendalltau), ("spearman", stats.spearmanr)):
        ref = stats.bootstrap((x, y), lambda u, v: fn(u, v).statistic, paired=True, vectorized=False,
                              method="percentile", n_resamples=2000, rng=np.random.default_rng(1))
        assert a[f"{name}_lo"] == pytest.approx(ref.confidence_interval.low, abs=0.06)
        assert a[f"{name}_hi"] == pytest.approx(ref.confidence_interval.high, abs=0.06)
        assert a[f"{name}_lo"] <= a["kendall_tau" if name == "kendall" else "spearman_rho"] <= a[f"{name}_hi"]
    assert a["resamples"] == 3000


def test_the_bootstrap_edges():
    same = rank_agreement([1, 2, 3, 4], [10, 20, 30, 40])  # every resample is in order
    assert (same["kendall_lo"], same["kendall_hi"], same["spearman_lo"], same["spearman_hi"]) == (1, 1, 1, 1)
    x, y = [1, 2, 3, 4, 5], [5, 3, 4, 1, 2]
    assert rank_agreement(x, y, seed=7) == rank_agreement(x, y, seed=7)  # a fixed seed: the same interval
    two = rank_agreement([0.5, 0.6], [0.7, 0.6])
    assert two["kendall_tau"] == -1 and np.isnan(two["kendall_lo"])  # two points: no interval
    flat = rank_agreement([0.5, 0.5, 0.5], [0.1, 0.2, 0.3])
    assert np.isnan(flat["kendall_tau"]) and "no rank correlation" in agreement_line(flat)
    with pytest.raises(ValueError, match="one length"):
        rank_agreement([1, 2, 3], [1, 2])
    assert "Kendall's tau-b +1.000 (95% bootstrap interval +1.000 to +1.000)" in agreement_line(same)


# --- selection and summary from hand-made records -------------------------------------------

# (candidate, alpha, beta, gamma, proxy top-1, MACs); the baseline is not a candidate
SEARCH = [("d1.40_w1.00_r1.20", 1.4, 1.0, 1.2, 0.95, 3_000_000), ("d1.20_w1.10_r1.10", 1.2, 1.1, 1.1, 0.94, 2_100_000),
          ("d1.00_w1.10_r1.30", 1.0, 1.1, 1.3, 0.93, 2_000_000), ("d2.00_w1.00_r1.00", 2.0, 1.0, 1.0, 0.92, 2_000_000),
          ("d1.00_w1.40_r1.00", 1.0, 1.4, 1.0, 0.91, 1_960_000), ("d1.00_w1.00_r1.40", 1.0, 1.0, 1.4, 0.90, 1_960_000)]


def _search(run_dir, winner=(1.4, 1.0, 1.2)):
    rows = [{"candidate_id": c, "role": "candidate", "depth_coef": a, "width_coef": b, "resolution_coef": g,
             "macs": m, "top1_mean": t, "macs_ratio": m / 1e6} for c, a, b, g, t, m in SEARCH]
    rows.append({"candidate_id": "d1.00_w1.00_r1.00", "role": "baseline", "depth_coef": 1.0, "width_coef": 1.0,
                 "resolution_coef": 1.0, "macs": 1_000_000, "top1_mean": 0.96, "macs_ratio": 1.0})
    run_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).sample(frac=1, random_state=0).to_csv(run_dir / "ranking.csv", index=False)
    (run_dir / "search.json").write_text('{"backbone": "resnet18", "data": {"name": "digits"}}')
    (run_dir / "coefficients.yaml").write_text(yaml.safe_dump(dict(zip(
        ["depth_coef", "width_coef", "resolution_coef"], winner))))
    return run_dir


def test_the_top_k_the_winner_and_a_seeded_draw_are_chosen(tmp_path):
    run = _search(tmp_path / "run")
    cands = fidelity.ranked_candidates(run)
    assert list(cands["candidate_id"]) == [c for c, *_ in SEARCH]  # by proxy top-1, the baseline left out
    assert fidelity.frozen_winner(run, cands) == "d1.40_w1.00_r1.20"
    table, notes = fidelity.select(cands, 2, 2, 0, "d1.40_w1.00_r1.20")
    assert notes == [] and list(table["chosen"]) == ["top_k", "top_k", "random", "random"]
    rest = [c for c, *_ in SEARCH[2:]]
    drawn = [rest[i] for i in sorted(np.random.default_rng(0).choice(4, size=2, replace=False))]
    assert list(table["candidate_id"][2:]) == drawn
    assert fidelity.select(cands, 2, 2, 0, "d1.40_w1.00_r1.20")[0].equals(table)  # the same draw each time
    assert list(table["winner"]) == [True, False, False, False]
    # a cheapest_tied winner below the top-k is retrained too
    table, _ = fidelity.select(cands, 1, 0, 0, "d1.00_w1.40_r1.00")
    assert list(zip(table["candidate_id"], table["chosen"])) == [("d1.40_w1.00_r1.20", "top_k"),
                                                                 ("d1.00_w1.40_r1.00", "winner")]


def test_more_candidates_than_the_search_has_are_clipped_and_said(tmp_path):
    cands = fidelity.ranked_candidates(_search(tmp_path / "run"))
    table, notes = fidelity.select(cands, 10, 3, 0, None)
    assert len(table) == 6 and (table["chosen"] == "top_k").all()
    assert notes == ["top_k=10 asks for more than the 6 candidates the search ranked: retraining all 6",
                     "random=3 asks for more than the 0 candidates left below the top 6: drawing all 0"]
    with pytest.raises(ValueError, match="retrain 1 of the search's 6 candidate.s.; a ranking needs at least 2"):
        fidelity.select(cands, 1, 0, 0, None)


def _long(store: TrialStore, cid: str, top1: float | None, seed: int = 0):
    spec = {"trial_id": f"long_{cid}_s{seed}", "candidate_id": cid, "seed": seed}
    row = ({"trial_id": spec["trial_id"], "status": "ok", "error": "", "final_top1": top1} if top1 is not None else
           {"trial_id": spec["trial_id"], "status": "failed", "error": "Diverged: loss is nan"})
    store.save(spec, row, [{"epoch": 1, "val/top1": top1 or 0.1}], {"role": "top_k", "macs": 1})


def test_the_summary_ranks_the_long_budget_and_marks_the_winner(tmp_path):
    run = _search(tmp_path / "run")
    table, _ = fidelity.select(fidelity.ranked_candidates(run), 4, 2, 0, "d1.40_w1.00_r1.20")
    long = {"d1.40_w1.00_r1.20": 0.97, "d1.20_w1.10_r1.10": 0.98, "d1.00_w1.10_r1.30": 0.955,
            "d2.00_w1.00_r1.00": 0.99, "d1.00_w1.40_r1.00": 0.95, "d1.00_w1.00_r1.40": None}
    store = TrialStore(run / "fidelity")
    for cid, top1 in long.items():
        _long(store, cid, top1)
    _long(store, "d1.40_w1.00_r1.20", 0.95, seed=1)  # two seeds: the mean, 0.96
    out = io.StringIO()
    outcome = fidelity.summarise(run, run / "fidelity", table, ["Long budget: test"], out)
    csv = pd.read_csv(run / "fidelity.csv").set_index("candidate_id")
    assert csv.loc["d1.40_w1.00_r1.20", "long_top1"] == pytest.approx(0.96)
    assert csv.loc["d1.40_w1.00_r1.20", "long_seeds"] == 2
    assert csv["long_rank"].dropna().to_dict() == {"d1.40_w1.00_r1.20": 3, "d1.20_w1.10_r1.10": 2,
                                                   "d1.00_w1.10_r1.30": 4, "d2.00_w1.00_r1.00": 1,
                                                   "d1.00_w1.40_r1.00": 5}
    assert np.isnan(csv.loc["d1.00_w1.00_r1.40", "long_rank"])  # failed: out of the ranks
    known = csv.dropna(subset=["long_top1"])
    assert outcome.agreement["kendall_tau"] == pytest.approx(stats.kendalltau(known["proxy_top1"],
                                                                              known["long_top1"]).statistic)
    assert outcome.winner_rank == 3
    md = (run / "fidelity.md").read_text()
    assert md.startswith(f"- Proxy fidelity of the search in {run}\n- Long budget: test\n")
    assert "ranks 3 of 5 at the long budget, top-1 0.9600" in md and "failed in every seed" in md
    assert "| d2.00_w1.00_r1.00" in md and (run / "plots" / "fidelity.png").stat().st_size > 0
    assert (run / "plots" / "fidelity.svg").is_file()
    assert "Kendall's tau-b" in out.getvalue()
    # the search's report page picks the summary up: notes, the plot, the table
    page = build_page(run)
    assert any(n.startswith("Proxy fidelity: Kendall's tau-b") for n in page.notes)
    assert any("frozen winner d1.40_w1.00_r1.20 ranks 3 of 5" in n for n in page.notes)
    assert "fidelity" in [name for name, _, _ in page.figures]
    assert "fidelity" in [name for name, _, _ in page.tables]


# --- bad input, through the app's preflight (as `python -m` runs it) -------------------------

@pytest.mark.parametrize("args,message", [
    (["top_k=2"], "run_dir has no value (???); set it"),
    (["run_dir={tmp}/nowhere"], "run_dir '{tmp}/nowhere' does not exist"),
    (["run_dir={tmp}/half"], "is not a finished Step-1 run: it has no config.yaml"),
    (["run_dir={tmp}/half", "top_k=0"], "top_k must be a positive integer, got 0"),
    (["run_dir={tmp}/half", "random=-2"], "random must be an integer >= 0"),
    (["run_dir={tmp}/half", "budget.epochs_factor=-1"], "budget.epochs_factor must be a number > 0"),
    (["run_dir={tmp}/half", "budget.resolution_scale=nan"], "budget.resolution_scale must be a finite number > 0"),
    (["run_dir={tmp}/half", "budget.num_images=0"], "budget.num_images must be a positive integer"),
    (["run_dir={tmp}/half", "runner=optuna_tpe"], "runner.kind must be ray or local for the fidelity step"),
    (["run_dir={tmp}/half", "report=2"], "report must be true or false, got 2"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    _search(tmp_path / "half")  # a ranking and a winner, but no config.yaml
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    with pytest.raises(SystemExit) as e:
        preflight(PROG, "fidelity", args, app.validate)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"{PROG}: error: ") and message.replace("{tmp}", str(tmp_path)) in err[0]
    assert not (tmp_path / "half" / "fidelity").exists()


@pytest.mark.parametrize("key,value", [("seed", "abc"), ("proxy_width_mult", "wide"), ("trainer.epochs", "ten"),
                                       ("seed", 3.7)])
def test_a_damaged_config_yaml_is_named_with_its_key(tmp_path, capsys, key, value):
    """A search's config.yaml whose number is not one: the line names the file and the key
    (it said only "invalid literal for int()")."""
    from dataclasses import asdict

    from conftest import compose_grid

    from scaling_search.files import plain

    run = _search(tmp_path / "run")
    config = plain(asdict(compose_grid(tmp_path / "run", *TINY)))
    node, *path = [config, *key.split(".")][:1] + key.split(".")[:-1]
    for k in path:
        node = node[k]
    node[key.split(".")[-1]] = value
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(SystemExit) as e:
        preflight(PROG, "fidelity", [f"run_dir={run}"], app.validate)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"{PROG}: error: {key} recorded in {str(run / 'config.yaml')!r} is {value!r}, not a number; "
                   "that file is damaged: restore it, or re-run that search to rewrite it"]
    assert not (run / "fidelity").exists()


# --- end to end ---------------------------------------------------------------------------------

def _cli(module: str, *args: str, cwd) -> subprocess.CompletedProcess:
    env = dict(os.environ)  # the installed package, as a user runs it
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow  # a tiny grid search, then its fidelity run, each trained twice over
def test_a_fidelity_run_writes_its_tables_resumes_and_reports(tmp_path):
    search = [*TINY, "data.num_images=400", "runner=local", "report=false", f"out_dir={tmp_path / 'grid'}"]
    r = _cli("scaling_search.grid", *search, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "grid"
    args = [f"run_dir={run}", "top_k=2", "random=5", "budget.epochs_factor=1.5", "runner=local"]
    r = _cli(PROG, *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "random=5 asks for more than the 1 candidates left below the top 2: drawing all 1" in r.stdout
    assert "3 networks x 1 seed(s) = 3 trials; 0 already done, 3 to run" in r.stdout
    table = pd.read_csv(run / "fidelity.csv")
    ranking = pd.read_csv(run / "ranking.csv")
    assert sorted(table["candidate_id"]) == sorted(ranking.loc[ranking["role"] == "candidate", "candidate_id"])
    assert list(table["chosen"]) == ["top_k", "top_k", "random"] and table["winner"].sum() == 1
    assert (table["long_epochs"] == 3).all() and table["long_top1"].notna().all()
    assert (table["long_macs"] == table["macs"]).all()  # the same networks, trained longer
    results = pd.read_csv(run / "fidelity" / "results.csv")
    assert (results["epochs"] == 3).all() and len(results) == 3
    assert "Kendall's tau-b" in (run / "fidelity.md").read_text()
    html = (run / "report.html").read_text()
    assert "Proxy fidelity: Kendall" in html and 'id="plot-fidelity"' in html and 'id="table-fidelity"' in html
    assert (run / "plots" / "fidelity.png").is_file()
    # a second call retrains nothing
    before = {p.name: p.stat().st_mtime_ns for p in (run / "fidelity" / "trials").iterdir()}
    again = _cli(PROG, *args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "3 already done, 0 to run" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (run / "fidelity" / "trials").iterdir()} == before
    # another budget in the same fidelity folder is refused; the search itself still resumes
    other = _cli(PROG, *args[:-2], "budget.epochs_factor=2", "runner=local", cwd=tmp_path)
    assert other.returncode == 2 and "holds a fidelity run with different trainer" in other.stderr
    regrid = _cli("scaling_search.grid", *search, cwd=tmp_path)
    assert regrid.returncode == 0, regrid.stderr[-2000:]
    assert "4 already done, 0 to run" in regrid.stdout


def test_a_second_fidelity_study_keeps_the_first_ones_summary_in_the_search(tmp_path):
    """Two fidelity studies of one search (two budgets, two folders): the second used to replace
    the first's tables in the search's folder; now each has its own, and the search keeps the
    first's."""
    run = _search(tmp_path / "run")
    table, _ = fidelity.select(fidelity.ranked_candidates(run), 2, 0, 0, "d1.40_w1.00_r1.20")
    summaries = {}
    for name, top1 in (("fidelity", 0.9), ("fidelity_long", 0.5)):
        store = TrialStore(run / name)
        for i, cid in enumerate(table["candidate_id"]):
            _long(store, cid, top1 - i / 100)
        (run / name / "fidelity.json").write_text("{}")  # its identity: what a fidelity run folder holds
        out = io.StringIO()
        fidelity.summarise(run, run / name, table, [f"Long budget: {name}"], out)
        summaries[name] = out.getvalue()
    first = (run / "fidelity" / "fidelity.md").read_text()
    assert "Long budget: fidelity\n" in first and (run / "fidelity.md").read_text() == first
    assert "Long budget: fidelity_long" in (run / "fidelity_long" / "fidelity.md").read_text()
    assert set(pd.read_csv(run / "fidelity.csv")["long_top1"].round(2)) == {0.9, 0.89}
    kept = f"the search's folder keeps the summary of the fidelity run in {run / 'fidelity'}"
    assert kept in summaries["fidelity_long"]
    # the first study again (a resume) still owns the search's summary
    fidelity.summarise(run, run / "fidelity", table, ["Long budget: fidelity, again"], io.StringIO())
    assert "fidelity, again" in (run / "fidelity.md").read_text()
    # once that folder is gone, the other study may write the search's summary
    shutil.rmtree(run / "fidelity")
    fidelity.summarise(run, run / "fidelity_long", table, ["Long budget: fidelity_long, again"], io.StringIO())
    assert "fidelity_long, again" in (run / "fidelity.md").read_text()
