"""The HTML report, opened from disk in a real headless Chromium (Debian's ``chromium``).

Each page must render every table and image with no console error, and show the numbers of
the run's own tables. ``.ci/run`` installs Chromium and sets SCALING_SEARCH_REQUIRE_SERVICES=1, so
there the browser tests cannot skip; screenshots go to $SCALING_SEARCH_SCREENSHOTS when set.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import _pythonpath
from services import missing, require_module

from scaling_search.analysis.report import build_page, report_after_run, write_report

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
GRID_TINY = ("backbone=resnet18", "proxy.depth_mult=0.5", "proxy.width_mult=0.25", "proxy.resolution_px=16",
             "space=coarse", "space.tolerance=0.02", "trainer.epochs=2", "seeds_per_candidate=2", "runner=local")
STEP2_TINY = ("train=true", "backbone=resnet18", "base.depth_mult=0.5", "base.width_mult=0.25",
              "resolution_px=16", "phis=[0,1]", "trainer.epochs=2", "data.num_images=400", "runner=local")


def _cli(module, *args, cwd):
    env = {**os.environ, "PYTHONPATH": _pythonpath()}  # the installed package, not the repository
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A real Step-1 grid run (2 seeds) and a real Step-2 run, each writing its report at the end."""
    tmp = tmp_path_factory.mktemp("report")
    grid = _cli("scaling_search.grid", *GRID_TINY, f"out_dir={tmp / 'grid'}", cwd=tmp)
    assert grid.returncode == 0, grid.stderr[-3000:]
    step2 = _cli("scaling_search.scale", *STEP2_TINY, f"out_dir={tmp / 'step2'}", cwd=tmp)
    assert step2.returncode == 0, step2.stderr[-3000:]
    assert f"report: {tmp / 'grid' / 'report.html'}" in grid.stdout
    return {"grid": tmp / "grid", "step2": tmp / "step2"}


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        missing(f"Chromium is not at {CHROMIUM}; apt-get install chromium")
    sync_api = require_module("playwright.sync_api", "pip install -e '.[dev]'")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def _open(browser, path: Path, screenshot: Path):
    """Opens the page from disk; returns (page, console errors)."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
    page.goto(path.as_uri(), wait_until="load")
    page.screenshot(path=str(screenshot), full_page=True)
    shots = os.environ.get("SCALING_SEARCH_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        shutil.copy(screenshot, Path(shots) / screenshot.name)
    return page, errors


def _images_rendered(page) -> list:
    return page.evaluate("""Array.from(document.images).map(i => ({alt: i.alt, ok: i.complete &&
        i.naturalWidth > 0 && i.getBoundingClientRect().width > 0}))""")


def _column(page, table: str, column: str) -> list[str]:
    return page.evaluate("""([t, c]) => { const tab = document.getElementById('table-' + t);
        const i = Array.from(tab.tHead.rows[0].cells).findIndex(h => h.textContent === c);
        return Array.from(tab.tBodies[0].rows).map(r => r.cells[i].dataset.value); }""", [table, column])


@pytest.mark.slow  # the `runs` fixture: a whole grid search and a Step-2 run
def test_grid_report_renders_its_tables_and_plots_in_chromium(runs, browser, tmp_path):
    run = runs["grid"]
    shot = tmp_path / "grid_report.png"
    page, errors = _open(browser, run / "report.html", shot)
    assert errors == []
    images = _images_rendered(page)
    # landscape, cost, the cost split, the error EDF, curves, seeds
    assert len(images) == 6 and all(i["ok"] for i in images), images
    for fmt in ("png", "svg"):
        assert sorted(p.stem for p in (run / "plots").glob(f"*.{fmt}")) == [
            "accuracy_vs_macs", "cost_split", "error_ecdf", "landscape", "seed_spread", "training_curves"]
    ranking, results = pd.read_csv(run / "ranking.csv"), pd.read_csv(run / "results.csv")
    assert page.locator("#table-ranking tbody tr").count() == len(ranking)
    assert page.locator("#table-results tbody tr").count() == len(results) == 8  # 3 candidates + base, 2 seeds
    # the page's numbers are the table's numbers
    assert [float(v) for v in _column(page, "ranking", "top1_mean")] == list(ranking["top1_mean"])
    assert [int(float(v)) for v in _column(page, "ranking", "macs")] == list(ranking["macs"])
    assert [float(v) for v in _column(page, "results", "final_top1")] == list(results["final_top1"])
    winner = ranking[ranking["role"] == "candidate"].iloc[0]
    assert f"top-1 {winner['top1_mean']:.4f}" in page.inner_text("dl.summary")
    assert "torch" in page.inner_text("#table-environment") and "depth_range" in page.inner_text("pre")
    # a click on a header sorts the table by that column
    page.click("#table-ranking th:text-is('macs')")
    shown = [float(v) for v in _column(page, "ranking", "macs")]
    assert shown == sorted(ranking["macs"].astype(float))
    page.click("#table-ranking th:text-is('macs')")
    assert [float(v) for v in _column(page, "ranking", "macs")] == sorted(shown, reverse=True)
    assert shot.stat().st_size > 10_000


@pytest.mark.slow  # the `runs` fixture: a whole grid search and a Step-2 run
def test_grid_report_shows_the_cost_split_and_the_error_edf(runs, browser, tmp_path):
    """Step 1 drawn as a split of the cost: the ternary plot and the error EDF are on the page,
    drawn in the browser, and drawn from the run's ranking.csv."""
    run = runs["grid"]
    page, errors = _open(browser, run / "report.html", tmp_path / "grid_cost_split.png")
    assert errors == []
    shown = page.evaluate("""['cost_split', 'error_ecdf'].map(n => {
        const f = document.getElementById('plot-' + n), i = f.querySelector('img');
        return {ok: i.complete && i.naturalWidth > 300 && i.getBoundingClientRect().height > 100,
                caption: f.querySelector('figcaption').textContent}; })""")
    assert all(s["ok"] for s in shown), shown
    assert "The unscaled baseline (1, 1, 1) has no split (α·β²·γ² = 1) and is left off" in shown[0]["caption"]
    assert "empirical distribution function" in shown[1]["caption"]
    ranking = pd.read_csv(run / "ranking.csv")
    cands = ranking[ranking["role"] == "candidate"]
    figures = {name: fig for name, _, fig in build_page(run).figures}
    points = [c for c in figures["cost_split"].axes[0].collections if c.get_label().startswith("candidates")]
    assert points[0].get_label() == f"candidates ({len(cands)})" and len(cands) == 3  # the baseline left off
    assert sorted(points[0].get_array()) == sorted(cands["top1_mean"])
    edf = figures["error_ecdf"].axes[0].get_lines()[0]
    assert list(edf.get_xdata()) == pytest.approx(sorted(1 - cands["top1_mean"]))


@pytest.mark.slow  # the `runs` fixture: a whole grid search and a Step-2 run
def test_step2_report_renders_its_tables_and_plots_in_chromium(runs, browser, tmp_path):
    run = runs["step2"]
    page, errors = _open(browser, run / "report.html", tmp_path / "step2_report.png")
    assert errors == []
    images = _images_rendered(page)
    assert len(images) == 7 and all(i["ok"] for i in images), images  # 3 scaling curves, cost, growth, 2
    family, comparison = pd.read_csv(run / "family.csv"), pd.read_csv(run / "comparison.csv")
    assert _column(page, "family", "candidate_id") == list(family["candidate_id"])
    assert [float(v) for v in _column(page, "family", "top1_mean")] == list(family["top1_mean"])
    assert [float(v) for v in _column(page, "comparison", "compound_top1")] == list(comparison["compound_top1"])
    verdicts = pd.read_csv(run / "verdicts.csv")
    assert _column(page, "verdicts", "rule") == list(verdicts["rule"]) == ["depth", "width", "resolution"]
    assert _column(page, "verdicts", "verdict") == list(verdicts["verdict"])
    notes = page.inner_text("ul.notes")
    for v in verdicts.to_dict("records"):  # each verdict in words, paired over the validation images
        assert (f"φ=1: compound (top-1 {comparison.loc[0, 'compound_top1']:.4f}) " in notes
                and f"{v['rule']} ({v['rule_top1']:.4f})" in notes and "over " in notes)


@pytest.mark.slow  # the `runs` fixture: a whole grid search and a Step-2 run
def test_multirun_report_holds_every_job(runs, browser, tmp_path):
    """A sweep folder's page embeds each job's run (here two jobs: the same grid run twice)."""
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    pd.DataFrame([{"backbone": "resnet18", "data": "digits", "seed": s, "winner": "x", "top1": 0.5 + s / 10,
                   "macs": 1e6 * (s + 1), "out_dir": str(runs["grid"])} for s in (0, 1)]).to_csv(
        sweep / "multirun_summary.csv", index=False)
    path = write_report(sweep)
    page, errors = _open(browser, path, tmp_path / "multirun_report.png")
    assert errors == []
    assert page.locator("details.job").count() == 2
    images = _images_rendered(page)
    assert len(images) == 1 + 2 * 6 and all(i["ok"] for i in images)
    assert page.locator("#table-jobs tbody tr").count() == 2


@pytest.mark.parametrize("make,message", [
    (lambda p: p / "missing", "does not exist"),
    (lambda p: p, "is not a scaling_search run: it holds none of search.json"),
    (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", "is not a folder"),
])
def test_report_of_a_non_run_is_one_line_exit_2_nothing_written(tmp_path, make, message):
    target = make(tmp_path)
    r = _cli("scaling_search.report", str(target), cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scaling_search.report: error: ") and message in lines[0]
    assert not list(tmp_path.rglob("report.html")) and not list(tmp_path.rglob("plots"))


@pytest.mark.slow  # the `runs` fixture: a whole grid search and a Step-2 run
def test_report_of_a_run_with_a_damaged_table_is_one_line(runs, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(runs["grid"], run)
    (run / "ranking.csv").write_bytes(b"\xff\xfe\x00garbage")
    before = (run / "report.html").read_bytes()
    r = _cli("scaling_search.report", str(run), cwd=tmp_path)
    assert r.returncode == 2 and "ranking.csv" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert (run / "report.html").read_bytes() == before  # the previous report is left as it was


def test_a_report_that_fails_after_a_run_is_a_warning_not_a_failed_run(tmp_path, capsys):
    assert report_after_run(tmp_path, "scaling_search.grid") is None
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scaling_search.grid: warning: no report (ValueError: ")
    assert err[0].endswith(f"retry with: python -m scaling_search.report {tmp_path}")


@pytest.mark.parametrize("coefficients,growth", [
    # 1.2 · 1.1² · 1.15² = 1.2 · 1.21 · 1.3225 = 1.92027
    ({"depth_coef": 1.2, "width_coef": 1.1, "resolution_coef": 1.15}, "(α·β²·γ²)^φ = 1.920^φ"),
    ({"depth_coef": 1.2}, None),  # incomplete: no formula line, and no failure
])
def test_step2_page_draws_the_formula_growth_of_the_recorded_coefficients(tmp_path, coefficients, growth):
    (tmp_path / "step2.json").write_text(json.dumps({"backbone": "resnet18", "coefficients": coefficients}))
    pd.DataFrame({"candidate_id": ["compound_phi0", "compound_phi1", "compound_phi2"],
                  "role": ["compound"] * 3, "phi": [0, 1, 2], "macs": [1e6, 2e6, 4e6],
                  "macs_ratio": [1.0, 2.0, 4.0], "top1_mean": [0.5, 0.6, 0.7]}).to_csv(
        tmp_path / "family.csv", index=False)
    figures = {name: fig for name, _, fig in build_page(tmp_path).figures}
    labels = [line.get_label() for line in figures["macs_growth"].axes[0].get_lines()]
    assert [label for label in labels if label.startswith("(α·β²·γ²)^φ")] == ([growth] if growth else [])


@pytest.mark.slow  # the `runs` fixture: a whole grid search and a Step-2 run
def test_report_out_never_replaces_a_users_file_or_a_runs_table(runs, tmp_path):
    run = tmp_path / "copy"
    shutil.copytree(runs["grid"], run)
    thesis = tmp_path / "thesis.tex"
    thesis.write_text("\\documentclass{article}")
    table = (run / "ranking.csv").read_bytes()
    for out, message in ((thesis, "exists and is not a page scaling_search.report wrote"),
                         (run / "ranking.csv", "is inside the run folder"),
                         (run / "plots" / "page.html", "is inside the run folder"),
                         (tmp_path, "is a folder")):
        r = _cli("scaling_search.report", str(run), "--out", str(out), cwd=tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and message in lines[0], r.stderr
    assert thesis.read_text() == "\\documentclass{article}" and (run / "ranking.csv").read_bytes() == table
    assert not (run / "plots" / "page.html").exists()
    page = tmp_path / "page.html"
    for _ in range(2):  # a new file, then the page it wrote: both fine
        r = _cli("scaling_search.report", str(run), "--out", str(page), cwd=tmp_path)
        assert r.returncode == 0 and "Written by scaling_search.report at" in page.read_text()
    assert _cli("scaling_search.report", str(run), "--out", str(run / "report.html"), cwd=tmp_path).returncode == 0


@pytest.mark.slow  # the `runs` fixture: a whole grid search and a Step-2 run
def test_a_table_missing_a_column_or_with_text_for_numbers_is_named(runs, tmp_path):
    import pandas as pd

    for damage, message in (
            (lambda t: t.drop(columns=["top1_mean"]), "none of ranking.csv, results.csv, epochs.csv in {run} has "
                                                      "the column 'top1_mean'"),
            (lambda t: t.assign(macs=["lots"] + list(t["macs"][1:])),
             "ranking.csv in {run}: the column 'macs' holds text where numbers belong")):
        run = tmp_path / f"copy{len(message)}"
        shutil.copytree(runs["grid"], run)
        damage(pd.read_csv(run / "ranking.csv")).to_csv(run / "ranking.csv", index=False)
        before = (run / "report.html").read_bytes()
        r = _cli("scaling_search.report", str(run), cwd=tmp_path)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert message.format(run=run) in lines[0]
        assert (run / "report.html").read_bytes() == before
