"""One self-contained HTML page for a run or a sweep (``python -m scaling_search.report RUN_DIR``).

The page is built from a run folder's files alone: its summary, sortable tables, the plots of
``plots.py`` (embedded as PNG data; PNG and SVG copies go to ``RUN_DIR/plots/``), the resolved
config and the environment the run recorded (package versions, git commit, CPU, GPUs). It
needs no server and no network: open ``RUN_DIR/report.html`` in any browser, or mail it.

Run kinds, by the file that marks them: ``search.json`` (a Step-1 grid run), ``step2.json``
(a Step-2 training run), ``summary.csv`` (a ``scale`` emission), ``multirun_summary.csv`` (a
``grid --multirun`` sweep folder: one page with every job's run). A grid run whose proxy fidelity
was measured (``python -m scaling_search.fidelity``: ``fidelity.csv``) gets a section for it.

A table or record it cannot read completely (a CSV cut off or ragged, a ``results.csv`` with
fewer rows than the run's ``trials/`` records, a JSON file cut off) is refused, naming the
file, before anything is written: the previous report stays.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from scaling_search.analysis import plots
from scaling_search.analysis.results import agreement_line, rank_agreement
from scaling_search.environment import capture
from scaling_search.files import atomic_write_text, run_folder_around
from scaling_search.models.scaling import Coefficients
from scaling_search.tables import verdict, verdict_line

PROG = "scaling_search.report"
REPORT_FILE = "report.html"
MARKERS = {"search.json": "grid", "step2.json": "step2", "multirun_summary.csv": "multirun",
           "summary.csv": "family"}
KIND_TITLES = {"grid": "Step 1: grid search", "step2": "Step 2: the compound family against other scaling "
               "rules", "family": "Step 2: scaled family (configs)", "multirun": "Multirun sweep"}


@dataclass
class Page:
    """The parts of a report page, in order."""

    title: str
    summary: list[tuple[str, str]] = field(default_factory=list)  # (label, value) pairs
    notes: list[str] = field(default_factory=list)  # sentences (verdicts)
    figures: list[tuple[str, str, object]] = field(default_factory=list)  # (name, caption, Figure)
    tables: list[tuple[str, str, pd.DataFrame]] = field(default_factory=list)  # (name, caption, df)
    config: str | None = None
    environment: dict | None = None
    children: list[Page] = field(default_factory=list)  # the jobs of a multirun


def detect(run_dir: Path) -> str:
    """The kind of run ``run_dir`` holds; ValueError (one line) when it holds none."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ValueError(f"run folder {str(run_dir)!r} does not exist")
    if not run_dir.is_dir():
        raise ValueError(f"{str(run_dir)!r} is not a folder; give a run folder (the out_dir of a run)")
    for marker, kind in MARKERS.items():
        if (run_dir / marker).is_file():
            return kind
    raise ValueError(f"{str(run_dir)!r} is not a scaling_search run: it holds none of "
                     f"{', '.join(MARKERS)}; give the out_dir of a grid or scale run, or a multirun's sweep folder")


REWRITE = "re-run the command that wrote it (a run rebuilds its tables from its trials/ records)"


_READ: list[tuple[Path, pd.DataFrame]] = []  # the tables the page being built has read


def _unusable(e: Exception, run_dir: Path) -> ValueError:
    """A table the page cannot use (a column missing, or text where a number belongs), named
    with the file and column where they can be found."""
    if isinstance(e, KeyError) and e.args:
        column = e.args[0]
        lacking = [p.name for p, t in _READ if column not in t.columns]
        if len(lacking) == 1:
            return ValueError(f"{lacking[0]} in {run_dir} lacks the column {column!r}; {REWRITE}")
        return ValueError(f"none of {', '.join(lacking) or 'its tables'} in {run_dir} has the column {column!r} "
                          f"the page needs; {REWRITE}")
    texty = [(p.name, c) for p, t in _READ for c in t.columns
             if not pd.api.types.is_numeric_dtype(t[c]) and pd.to_numeric(t[c], errors="coerce").notna().any()
             and pd.to_numeric(t[c], errors="coerce").isna().sum() > t[c].isna().sum()]
    if texty:
        name, column = texty[0]
        return ValueError(f"{name} in {run_dir}: the column {column!r} holds text where numbers belong; {REWRITE}")
    return ValueError(f"a table of {run_dir} cannot be shown ({type(e).__name__}: {e}); {REWRITE}")


def _read(path: Path, rows: int | None = None) -> pd.DataFrame | None:
    """The table at ``path`` (None if there is none), refused unless complete: it ends with a line
    break, every record has the header's fields, and it has ``rows`` rows when that is known.
    pandas alone would read a table cut off in a row, filling the row's missing fields with NaN."""
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
        if text and not text.endswith("\n"):
            problem = "it ends in the middle of a line"
        else:
            reader = csv.reader(io.StringIO(text), strict=True)
            widths = [(reader.line_num, len(record)) for record in reader]
            ragged = [(line, n) for line, n in widths[1:] if n != widths[0][1]]
            if ragged:
                problem = f"line {ragged[0][0]} has {ragged[0][1]} fields, the header {widths[0][1]}"
            else:
                table = pd.read_csv(io.StringIO(text))
                if rows is None or len(table) == rows:
                    _READ.append((path, table))
                    return table
                problem = f"it has {len(table)} rows, but the run's trials/ folder holds {rows} trial records"
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{str(path)!r} is not a readable table ({type(e).__name__}: {str(e).strip()}); "
                         f"{REWRITE}") from None
    raise ValueError(f"{str(path)!r} is incomplete ({problem}): it was cut off or damaged; {REWRITE}")


def _trial_count(run_dir: Path) -> int | None:
    """How many trial records ``run_dir/trials`` holds (one row each in results.csv); None: no folder."""
    trials = run_dir / "trials"
    return len(list(trials.glob("*.json"))) if trials.is_dir() else None


def _json(path: Path) -> dict:
    """A run's JSON record, its damage named with the file."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(path)!r} is damaged ({e}); restore it, or delete it and run the same "
                         "command again to rewrite it") from None


def _figure(page: Page, name: str, caption: str, make) -> None:
    """Adds a figure; a plot that cannot be drawn from this run's tables becomes a note."""
    try:
        page.figures.append((name, caption, make()))
    except ValueError as e:
        page.notes.append(f"no {name} plot: {e}")


def _common(page: Page, run_dir: Path) -> Page:
    config = run_dir / "config.yaml"
    page.config = config.read_text() if config.is_file() else None
    env = run_dir / "environment.json"
    if env.is_file():
        page.environment = _json(env)
    else:
        page.environment = {"note": "the run recorded no environment; this is the report writer's",
                            **capture()}
    return page


def _trial_figures(page: Page, epochs: pd.DataFrame | None, results: pd.DataFrame | None) -> None:
    """The plots every trained run has: training curves and the spread over seeds."""
    if epochs is not None and len(epochs):
        _figure(page, "training_curves", "Validation top-1 per epoch, every trial",
                lambda: plots.training_curves(epochs))
    if results is not None and (results["status"] == "ok").any():
        _figure(page, "seed_spread", "Final top-1 per seed with the mean and its 95% interval",
                lambda: plots.seed_spread(results))


def _frozen_row(cands: pd.DataFrame, races: pd.DataFrame | None) -> pd.Series:
    """The candidate the search froze: ranking.csv's ``frozen`` row (by the freeze rule), or in a
    ranking written before that column, the best, of a seed race's finalists (most seeds)."""
    if "frozen" in cands:
        frozen = cands[cands["frozen"].astype(str).str.lower() == "true"]
        if len(frozen):
            return frozen.iloc[0]
    return cands[cands["seeds"] == cands["seeds"].max()].iloc[0] if races is not None else cands.iloc[0]


def grid_page(run_dir: Path) -> Page:
    page = Page(f"{KIND_TITLES['grid']}: {run_dir.name}")
    ranking, results = _read(run_dir / "ranking.csv"), _read(run_dir / "results.csv", _trial_count(run_dir))
    epochs = _read(run_dir / "epochs.csv")
    identity = _json(run_dir / "search.json")
    races = _read(run_dir / "racing.csv")
    page.summary += [("backbone", str(identity.get("backbone"))),
                     ("data", str((identity.get("data") or {}).get("name"))),
                     ("proxy (depth, width, px)", str(identity.get("proxy")))]
    if results is not None:
        page.summary += [("trials", f"{len(results)} ({int((results['status'] == 'failed').sum())} failed, "
                                    f"{int((results['status'] == 'stopped').sum())} stopped early)"),
                         ("seeds", str(results["seed"].nunique()))]
    if ranking is not None and len(ranking):
        cands = ranking[ranking["role"] == "candidate"]
        base = ranking[ranking["role"] == "baseline"]
        if len(cands):
            w = _frozen_row(cands, races)
            page.summary.append(("winner (α, β, γ)", f"{w['depth_coef']:g}, {w['width_coef']:g}, "
                                 f"{w['resolution_coef']:g}: top-1 {w['top1_mean']:.4f} at "
                                 f"{int(w['macs']):,} MACs ({w['macs_ratio']:.2f}x the proxy)"))
            if len(base):
                b = base.iloc[0]
                delta = w["top1_mean"] - b["top1_mean"]
                page.notes.append(f"The winner {verdict(delta, 'the unscaled proxy baseline')} "
                                  f"(baseline top-1 {b['top1_mean']:.4f}).")
        _figure(page, "landscape", "Candidates on the constraint surface (α against β; γ by the points)",
                lambda: plots.landscape(ranking))
        _figure(page, "accuracy_vs_macs", "Mean top-1 against MACs, with the Pareto front",
                lambda: plots.accuracy_vs_macs(ranking))
        tied = "; ringed: the candidates tied with the best" if plots.tied_mask(ranking).any() else ""
        _figure(page, "cost_split", "Each candidate's split of the cost exponent, (e_d, e_w, e_r) = "
                "(ln α, 2 ln β, 2 ln γ) / ln(α·β²·γ²), coloured by top-1; the paper's split, uniform (1/3 "
                f"each) and pycls's fast (d1_w8_r1) marked{tied}. The unscaled baseline (1, 1, 1) has no "
                "split (α·β²·γ² = 1) and is left off.", lambda: plots.cost_split(ranking))
        _figure(page, "error_ecdf", "The candidates' top-1 errors (1 − mean top-1) as an empirical "
                "distribution function, pycls's error EDF" + ("; the unscaled baseline dashed" if len(base) else ""),
                lambda: plots.error_ecdf(ranking))
    _trial_figures(page, epochs, results)
    fidelity = _fidelity_section(page, run_dir)
    coefficients = run_dir / "coefficients.yaml"
    if coefficients.is_file():
        page.summary.append(("coefficients.yaml", coefficients.read_text().strip()))
    if ranking is not None:
        page.tables.append(("ranking", "Candidates ranked by mean top-1 (ranking.csv)", ranking))
    if races is not None and len(races):
        budget = int(races["seed_budget"].iloc[0]) if "seed_budget" in races else races["seed"].nunique()
        full = (len(ranking) if ranking is not None else 0) * budget
        page.notes.append(f"Seed racing: {len(races)} round(s), stopped at: {races['stop'].iloc[-1]}; "
                          f"{int(races['trials'].sum())} trials against the {full} of a full {budget}-seed grid "
                          "(racing.csv).")
        page.tables.append(("racing", "Seed racing: each round's seed, entrants, the candidates still tied with the "
                                      "best after it, and its training MACs and trial time (racing.csv)", races))
    if fidelity is not None:
        page.tables.append(("fidelity", "Proxy fidelity: the retrained candidates' proxy and long-budget top-1 "
                                        "and ranks (fidelity.csv)", fidelity))
    if results is not None:
        page.tables.append(("results", "Every trial (results.csv)", results))
    return _common(page, run_dir)


def _fidelity_section(page: Page, run_dir: Path) -> pd.DataFrame | None:
    """Where the search has a proxy-fidelity summary (``fidelity.csv``, from ``python -m
    scaling_search.fidelity``): its rank correlations with their intervals and the winner's
    long-budget rank as notes, and its plot; returns the table (None when there is none)."""
    table = _read(run_dir / "fidelity.csv")
    if table is None or not len(table):
        return None
    missing = [c for c in ("candidate_id", "proxy_top1", "long_top1", "long_rank", "winner") if c not in table]
    if missing:
        raise ValueError(f"{str(run_dir / 'fidelity.csv')!r} lacks the column(s) {', '.join(missing)}; "
                         "re-run python -m scaling_search.fidelity to rewrite it")
    known = table.dropna(subset=["proxy_top1", "long_top1"])
    agreement = rank_agreement(known["proxy_top1"], known["long_top1"])
    page.notes.append(f"Proxy fidelity: {agreement_line(agreement)}, between the proxy top-1 and the top-1 at "
                      "the long budget (fidelity.csv).")
    winner = known[known["winner"].astype(str).str.lower() == "true"]
    if len(winner):
        w = winner.iloc[0]
        page.notes.append(f"Proxy fidelity: the frozen winner {w['candidate_id']} ranks {int(w['long_rank'])} of "
                          f"{len(known)} at the long budget (top-1 {w['long_top1']:.4f}).")
    _figure(page, "fidelity", "Proxy fidelity: each retrained candidate's proxy top-1 against its top-1 at "
            "the long budget (the frozen winner starred), with Kendall's tau-b and Spearman's rho",
            lambda: plots.fidelity(known, agreement))
    return table


def step2_page(run_dir: Path) -> Page:
    page = Page(f"{KIND_TITLES['step2']}: {run_dir.name}")
    family, comparison = _read(run_dir / "family.csv"), _read(run_dir / "comparison.csv")
    verdicts = _read(run_dir / "verdicts.csv")
    results, epochs = _read(run_dir / "results.csv", _trial_count(run_dir)), _read(run_dir / "epochs.csv")
    identity = _json(run_dir / "step2.json")
    c = identity.get("coefficients", {})
    page.summary += [("backbone", str(identity.get("backbone"))),
                     ("data", str((identity.get("data") or {}).get("name"))),
                     ("coefficients (α, β, γ)", f"{c.get('depth_coef')}, {c.get('width_coef')}, "
                                                f"{c.get('resolution_coef')}"),
                     ("base (depth, width, px)", str(identity.get("base")))]
    if results is not None:
        page.summary += [("trials", f"{len(results)} ({int((results['status'] == 'failed').sum())} failed)"),
                         ("seeds", str(results["seed"].nunique()))]
    if verdicts is not None:
        page.notes += [verdict_line(v, "φ") for v in verdicts.to_dict("records")]
        flagged = int(verdicts["macs_flag"].astype(bool).sum())
        if flagged:
            page.notes.append(f"{flagged} of {len(verdicts)} verdicts compare networks whose MACs differ by more "
                              f"than the tolerance (macs_flag in verdicts.csv): read them as not matched.")
    if family is not None and len(family):
        _figure(page, "scaling_curves", "Top-1 against MACs: compound against each scaling rule",
                lambda: plots.scaling_curves(family))
        for cost in ("params", "activations"):
            _figure(page, f"scaling_curves_{cost}", f"The same networks' top-1 against {cost}",
                    lambda cost=cost: plots.scaling_curves(family, cost))
        _figure(page, "accuracy_vs_macs", "Every member's top-1 against MACs, with the Pareto front",
                lambda: plots.accuracy_vs_macs(family))
        _figure(page, "macs_growth", "Measured MACs growth of the compound family against 2^φ",
                lambda: plots.macs_growth(family, _product(c)))
    _trial_figures(page, epochs, results)
    if verdicts is not None:
        page.tables.append(("verdicts", "Per φ and rule: compound's paired verdict, and whether the MACs matched "
                                        "(verdicts.csv)", verdicts))
    if comparison is not None:
        page.tables.append(("comparison", "Per φ: every rule's top-1 and MACs beside compound's (comparison.csv)",
                            comparison))
    if family is not None:
        page.tables.append(("family", "Every member: cost and top-1 over seeds (family.csv)", family))
    if results is not None:
        page.tables.append(("results", "Every trial (results.csv)", results))
    return _common(page, run_dir)


def _product(c: dict) -> float | None:
    """α·β²·γ² of a run's recorded coefficients; None when they are missing or not valid."""
    try:
        return Coefficients(**c).product
    except (TypeError, ValueError):
        return None


def family_page(run_dir: Path) -> Page:
    page = Page(f"{KIND_TITLES['family']}: {run_dir.name}")
    summary, published = _read(run_dir / "summary.csv"), _read(run_dir / "published.csv")
    coefficients = run_dir / "coefficients.yaml"
    if coefficients.is_file():
        page.summary.append(("coefficients.yaml", coefficients.read_text().strip()))
    page.summary.append(("models", f"{len(summary)} configs in {run_dir / 'model'}"))
    _figure(page, "macs_growth", "Measured MACs growth against 2^φ", lambda: plots.macs_growth(summary))
    page.tables.append(("summary", "The family (summary.csv)", summary))
    if published is not None:
        page.tables.append(("published", "The formula's family beside the published B0-B7 (published.csv)",
                            published))
    return _common(page, run_dir)


def multirun_page(sweep_dir: Path) -> Page:
    jobs = _read(sweep_dir / "multirun_summary.csv")
    page = Page(f"{KIND_TITLES['multirun']}: {sweep_dir.name}")
    page.summary.append(("jobs", str(len(jobs))))
    md = sweep_dir / "multirun_summary.md"
    if md.is_file():  # its last lines say whether the winner changes with seed or data
        page.notes += [line for line in md.read_text().splitlines() if line and not line.startswith("|")]
    page.tables.append(("jobs", "One row per job (multirun_summary.csv)", jobs))
    if {"macs", "top1"} <= set(jobs) and jobs["top1"].notna().any():
        shown = jobs.rename(columns={"top1": "top1_mean"}).assign(
            label=[f"{d} s{s}" for d, s in zip(jobs["data"], jobs["seed"])])
        _figure(page, "winners", "Each job's winner: top-1 against MACs",
                lambda: plots.accuracy_vs_macs(shown.dropna(subset=["top1_mean"]), label="label", color_by="data"))
    for out_dir in jobs.get("out_dir", []):
        job_dir = Path(str(out_dir))
        try:
            page.children.append(build_page(job_dir))
        except ValueError as e:
            page.notes.append(f"job {job_dir}: {e}")
    return _common(page, sweep_dir)


BUILDERS = {"grid": grid_page, "step2": step2_page, "family": family_page, "multirun": multirun_page}


def build_page(run_dir: Path) -> Page:
    kind = detect(run_dir)
    _READ.clear()
    try:
        return BUILDERS[kind](Path(run_dir))
    except (KeyError, TypeError) as e:
        raise _unusable(e, Path(run_dir)) from None
    except ValueError as e:
        if any(k in str(e) for k in ("format code", "could not convert", "invalid literal")):
            raise _unusable(e, Path(run_dir)) from None
        raise
    finally:
        _READ.clear()


# --- HTML -----------------------------------------------------------------------------------

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
padding:0 1rem;color:#222}
h1{font-size:1.5rem}h2{font-size:1.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
dl.summary{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem}dl.summary dt{font-weight:600}
dl.summary dd{margin:0;white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:.85rem}
.figures{display:flex;flex-wrap:wrap;gap:1rem}figure{margin:0;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid #eee}figcaption{font-size:.85rem;color:#555}
.table-wrap{overflow-x:auto;max-height:32rem;overflow-y:auto;border:1px solid #eee}
table{border-collapse:collapse;font-size:.8rem}th,td{padding:.2rem .5rem;border-bottom:1px solid #eee;
text-align:right;white-space:nowrap}th{position:sticky;top:0;background:#f6f6f6;cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"}th[aria-sort=descending]::after{content:" \\25BC"}
td.text{text-align:left}pre{background:#f6f6f6;padding:.8rem;overflow-x:auto;font-size:.8rem}
details.job{border:1px solid #ddd;padding:.5rem 1rem;margin:1rem 0}details.job>summary{font-weight:600;cursor:pointer}
ul.notes li{margin:.2rem 0}
"""

# Click a column header to sort by it (numbers by value, text alphabetically; click again to reverse).
SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
      table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
      rows.sort(function (a, b) {
        var x = a.cells[col].dataset.value, y = b.cells[col].dataset.value;
        var nx = parseFloat(x), ny = parseFloat(y);
        var cmp = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : (x < y ? -1 : x > y ? 1 : 0);
        return dir * cmp;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def _format(value: object, column: str) -> tuple[str, str]:
    """(data-value: the exact value, shown text)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", ""
    if isinstance(value, bool):
        return str(value).lower(), "yes" if value else "no"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) >= 1000):
        return repr(int(value)) if isinstance(value, int) else repr(value), f"{int(value):,}"
    if isinstance(value, float):
        text = f"{value:.4f}" if "top1" in column or "margin" in column else f"{value:.4g}"
        return repr(value), text
    return str(value), str(value)


def table_html(name: str, df: pd.DataFrame) -> str:
    head = "".join(f'<th scope="col">{html.escape(str(c))}</th>' for c in df.columns)
    rows = []
    for record in df.itertuples(index=False):
        cells = []
        for column, value in zip(df.columns, record):
            value = value.item() if hasattr(value, "item") else value
            raw, text = _format(value, str(column))
            cls = "" if isinstance(value, (int, float)) else ' class="text"'
            cells.append(f'<td{cls} data-value="{html.escape(raw, quote=True)}">{html.escape(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="table-wrap"><table class="sortable" id="table-{html.escape(name)}" '
            f'data-rows="{len(df)}"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table></div>')


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def page_html(page: Page, level: int = 1, anchor: str = "") -> str:
    h, h2 = f"h{level}", f"h{min(level + 1, 6)}"
    parts = [f"<{h}>{html.escape(page.title)}</{h}>"]
    if page.summary:
        parts.append('<dl class="summary">' + "".join(
            f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in page.summary) + "</dl>")
    if page.notes:
        parts.append('<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in page.notes) + "</ul>")
    if page.figures:
        parts.append(f"<{h2}>Plots</{h2}><div class=\"figures\">")
        for name, caption, fig in page.figures:
            parts.append(f'<figure id="{anchor}plot-{name}"><img alt="{html.escape(caption)}" '
                         f'src="data:image/png;base64,{_png(fig)}"><figcaption>{html.escape(caption)}'
                         "</figcaption></figure>")
        parts.append("</div>")
    for name, caption, df in page.tables:
        parts.append(f"<{h2}>{html.escape(caption)}</{h2}>" + table_html(anchor + name, df))
    for i, child in enumerate(page.children):
        parts.append(f'<details class="job" open><summary>{html.escape(child.title)}</summary>'
                     + page_html(child, min(level + 1, 5), f"job{i}-") + "</details>")
    if page.config:
        parts.append(f"<{h2}>Resolved config</{h2}><pre>{html.escape(page.config)}</pre>")
    if page.environment:
        env = dict(page.environment)
        packages = env.pop("packages", {}) or {}
        rows = list(env.items()) + [(f"package {k}", v) for k, v in packages.items()]
        parts.append(f"<{h2}>Environment</{h2}>" + table_html(anchor + "environment", pd.DataFrame(
            [{"item": k, "value": ", ".join(v) if isinstance(v, list) else ("" if v is None else str(v))}
             for k, v in rows])))
    return "\n".join(parts)


def render(page: Page) -> str:
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{html.escape(page.title)}</title><style>{STYLE}</style></head><body>\n"
            f"{page_html(page)}\n<p><small>Written by {PROG} at {stamp}.</small></p>"
            f"<script>{SCRIPT}</script></body></html>\n")


def _all_figures(page: Page, prefix: str = ""):
    for name, _, fig in page.figures:
        yield prefix + name, fig
    for i, child in enumerate(page.children):
        yield from _all_figures(child, f"{prefix}job{i}_")


def check_out(out: Path, run_dir: Path) -> None:
    """``--out`` may name a new file, or a page this command wrote, outside every run folder (a
    run's own ``report.html`` excepted): never a user's file or a run's table."""
    out = out.resolve()
    if out == run_dir / REPORT_FILE:
        return
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; name a file in it, e.g. {out / REPORT_FILE}")
    folder = run_folder_around(out.parent)
    if folder is not None:
        raise ValueError(f"--out {out} is inside the run folder {folder}, whose files only its run "
                         "writes; write the page outside it (or leave --out out: RUN_DIR/report.html)")
    if out.exists() and f"Written by {PROG} at" not in out.read_text(errors="replace"):
        raise ValueError(f"--out {out} exists and is not a page {PROG} wrote; it is left as it is: "
                         "choose another file name")


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Writes ``run_dir/report.html`` (or ``out``) and the plots as PNG and SVG in ``run_dir/plots``."""
    run_dir = Path(run_dir).resolve()
    if out is not None:
        check_out(Path(out), run_dir)
    page = build_page(run_dir)
    text = render(page)
    for name, fig in _all_figures(page):
        plots.save(fig, run_dir / "plots" / name)
    return atomic_write_text(out or run_dir / REPORT_FILE, text)


def report_after_run(run_dir: Path, prog: str, label: str = "report") -> Path | None:
    """Writes the report at the end of a run. The run's tables are already complete, so a
    report that fails is one warning line (with the command that retries it), not a failed run."""
    try:
        path = write_report(run_dir)
    except Exception as e:  # noqa: BLE001 - the run itself succeeded
        print(f"{prog}: warning: no report ({type(e).__name__}: {' '.join(str(e).split())}); "
              f"retry with: python -m {PROG} {run_dir}", file=sys.stderr, flush=True)
        return None
    print(f"{label}: {path}", flush=True)
    return path
