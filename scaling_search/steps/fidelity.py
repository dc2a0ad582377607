"""Proxy fidelity: does the proxy rank the candidates as a longer training does?

A finished Step-1 search ranked its candidates by a short proxy training. This step retrains
its ``top_k`` best, the frozen winner (always), and ``random`` more drawn from the rest with a
fixed seed, at a larger budget (more epochs, a higher resolution, or more data), through the
same run pipeline as the search (``steps.pipeline``): its own run folder (``<run_dir>/fidelity``
by default, identity ``fidelity.json``), recorded trial by trial, resumed after a kill, mirrored
into an Optuna study. Then it compares the two rankings (``analysis.results.rank_agreement``:
Kendall's tau-b and Spearman's rho with paired bootstrap intervals) and says where the frozen
winner lands at the long budget.

Output, in the search's own folder: ``fidelity.csv`` and ``fidelity.md`` (one row per retrained
candidate: how it was chosen, its proxy top-1 and rank, its long top-1 and rank, MACs; the
statistics as the first lines of the ``.md``) and ``plots/fidelity.png|svg``; in the fidelity
run's folder: ``fidelity.json``, ``selection.csv``, ``trials/``, ``results``, ``epochs``,
``optuna.db`` and ``ray/``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import filelock
import numpy as np
import pandas as pd
import yaml

from scaling_search.analysis import plots
from scaling_search.analysis.results import agreement_line, rank_agreement
from scaling_search.files import atomic_write_text, plain
from scaling_search.models.backbones import ScaledModel, get_backbone
from scaling_search.models.scaling import Coefficients, Multipliers
from scaling_search.settings import FidelitySettings
from scaling_search.steps.pipeline import LOCK_FILE, RunFolder, check_apart, collect, data_identity, launch, trial_specs
from scaling_search.steps.step1 import IDENTITY_FILE as SEARCH_IDENTITY_FILE
from scaling_search.steps.step1 import STUDY_ATTRS
from scaling_search.tables import markdown, write_table
from scaling_search.train.data import num_classes_of
from scaling_search.train.execution import RunFailed, ray_session, trainer_identity, uses_ray
from scaling_search.train.status import OK
from scaling_search.train.study import PARAMS, distributions, grid_params

IDENTITY_FILE = "fidelity.json"
# What a fidelity run writes into its folder besides what every run folder holds (pipeline.RUN_FILES).
OUTPUTS = ("selection.csv", "fidelity.csv", "fidelity.md")
SOURCE_FILE = "fidelity.source"  # in the search's folder: which fidelity run wrote its summary there
TOP_K, RANDOM, WINNER = "top_k", "random", "winner"  # how a candidate was chosen
SUMMARY_COLUMNS = ["candidate_id", "chosen", "winner", "depth_coef", "width_coef", "resolution_coef", "macs",
                   "proxy_top1", "proxy_rank", "proxy_rank_retrained", "long_top1", "long_rank", "long_seeds",
                   "long_epochs", "long_resolution_px", "long_macs"]
FORMATS = {"depth_coef": "{:g}", "width_coef": "{:g}", "resolution_coef": "{:g}", "macs": "{:,.0f}",
           "proxy_top1": "{:.4f}", "long_top1": "{:.4f}", "proxy_rank_retrained": "{:.0f}", "long_rank": "{:.0f}",
           "long_seeds": "{:.0f}", "long_macs": "{:,.0f}"}


@dataclass(frozen=True)
class Plan:
    """What a fidelity run retrains, decided before anything is written."""

    selection: pd.DataFrame  # one row per retrained candidate (the proxy's numbers, the long network's)
    models: dict[str, tuple[Coefficients, ScaledModel]]  # candidate_id -> its long network
    columns: dict[str, dict]  # candidate_id -> the columns stored beside its trials
    ranges: dict[str, tuple[float, float]]  # of alpha, beta, gamma over the search's ranking (the study's)
    notes: list[str]  # what was clipped, and the like


@dataclass(frozen=True)
class FidelityOutcome:
    run_dir: Path
    table: pd.DataFrame  # fidelity.csv
    agreement: dict  # results.rank_agreement
    winner_rank: int | None  # the frozen winner's rank at the long budget (None: not known)
    trials: int
    failed: int


def ranked_candidates(run_dir: Path) -> pd.DataFrame:
    """The search's candidates (not its baseline) as it ranked them, with their ``proxy_rank``."""
    path = Path(run_dir) / "ranking.csv"
    try:
        ranking = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(path)!r} is not a readable table ({type(e).__name__}); re-run that search "
                         "to rewrite it") from None
    needed = ["candidate_id", "role", *PARAMS, "macs", "top1_mean"]
    missing = [c for c in needed if c not in ranking]
    if missing:
        raise ValueError(f"{str(path)!r} lacks the column(s) {', '.join(missing)}; is it a Step-1 ranking?")
    cands = ranking[ranking["role"] == "candidate"].dropna(subset=["top1_mean"])
    cands = cands.sort_values(["top1_mean", "macs", "candidate_id"], ascending=[False, True, True],
                              ignore_index=True)
    cands["proxy_rank"] = cands["top1_mean"].rank(ascending=False, method="min").astype(int)
    return cands


def frozen_winner(run_dir: Path, candidates: pd.DataFrame) -> str | None:
    """The candidate whose α, β, γ the search froze in ``coefficients.yaml`` (None: none matches)."""
    path = Path(run_dir) / "coefficients.yaml"
    try:
        frozen = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(path)!r} is damaged ({str(e).splitlines()[0]}); re-run that search") from None
    if not isinstance(frozen, dict) or any(not isinstance(frozen.get(k), (int, float)) for k in PARAMS):
        raise ValueError(f"{str(path)!r} does not hold {', '.join(PARAMS)}; re-run that search")
    same = np.ones(len(candidates), bool)
    for k in PARAMS:
        same &= np.isclose(candidates[k].to_numpy(float), float(frozen[k]), rtol=0, atol=1e-9)
    return str(candidates.loc[same, "candidate_id"].iloc[0]) if same.any() else None


def select(candidates: pd.DataFrame, top_k: int, random: int, seed: int,
           winner: str | None) -> tuple[pd.DataFrame, list[str]]:
    """The ``top_k`` best, the frozen winner where it is not among them, and ``random`` drawn
    without replacement from the rest with ``numpy.random.default_rng(seed)``; counts larger than
    what the search has are clipped, and a note says so. In the ranking's order, with ``chosen``
    (``top_k``, ``winner`` or ``random``) and ``winner``."""
    notes, n = [], len(candidates)
    k = min(top_k, n)
    if top_k > n:
        notes.append(f"top_k={top_k} asks for more than the {n} candidates the search ranked: retraining all {n}")
    chosen = pd.Series([TOP_K] * k + [""] * (n - k), index=candidates.index)
    if winner is not None and winner in set(candidates["candidate_id"].iloc[k:]):
        chosen[candidates.index[candidates["candidate_id"] == winner]] = WINNER
    rest = chosen.index[chosen == ""]
    r = min(random, len(rest))
    if random > len(rest):
        notes.append(f"random={random} asks for more than the {len(rest)} candidates left below the top {k}: "
                     f"drawing all {len(rest)}")
    if r:
        drawn = np.random.default_rng(seed).choice(len(rest), size=r, replace=False)
        chosen[rest[np.sort(drawn)]] = RANDOM
    table = candidates.assign(chosen=chosen, winner=candidates["candidate_id"] == winner)
    table = table[table["chosen"] != ""].reset_index(drop=True)
    if len(table) < 2:
        raise ValueError(f"top_k={top_k} and random={random} retrain {len(table)} of the search's {n} "
                         "candidate(s); a ranking needs at least 2: raise top_k or random"
                         if n >= 2 else
                         f"the search ranked {n} candidate(s); comparing rankings needs at least 2")
    return table, notes


def network(s: FidelitySettings, coefficients: Coefficients, resolution_scale: float = 1.0) -> ScaledModel:
    """A candidate's network: the proxy scaled by α, β, γ as the search built it, its resolution
    multiplier times ``resolution_scale`` (the budget's, for the long network)."""
    return get_backbone(s.backbone).scale(
        Multipliers(s.proxy_depth_mult * coefficients.depth_coef, s.proxy_width_mult * coefficients.width_coef,
                    coefficients.resolution_coef * resolution_scale), s.rounding, s.proxy_resolution_px)


def plan(s: FidelitySettings) -> Plan:
    """The candidates to retrain and their long networks; reads the search, writes nothing.

    Raises:
        ValueError: the search's ranking or winner cannot be read, fewer than 2 candidates would be
            retrained, or a candidate no longer rebuilds to the MACs the search recorded.
    """
    candidates = ranked_candidates(s.run_dir)
    winner = frozen_winner(s.run_dir, candidates)
    selection, notes = select(candidates, s.top_k, s.random, s.seed, winner)
    if winner is None:
        notes.append(f"coefficients.yaml of {s.run_dir} matches no ranked candidate: no winner is marked")
    num_classes = num_classes_of(s.data)
    models, columns, long_px, long_macs = {}, {}, [], []
    for row in selection.to_dict("records"):
        c = Coefficients(*(float(row[k]) for k in PARAMS))
        macs = network(s, c).cost(num_classes).macs
        if macs != int(row["macs"]):
            raise ValueError(f"the search's candidate {row['candidate_id']} rebuilds to {macs:,} MACs, not the "
                             f"{int(row['macs']):,} it recorded: the backbone or the rounding changed since the "
                             "search ran; re-run the search first")
        model = network(s, c, s.resolution_scale)
        cost = model.cost(num_classes)
        models[row["candidate_id"]] = (c, model)
        m = model.multipliers
        columns[row["candidate_id"]] = {
            "role": row["chosen"], "depth_coef": c.depth_coef, "width_coef": c.width_coef,
            "resolution_coef": c.resolution_coef, "product": c.product, "depth_mult": m.depth_mult,
            "width_mult": m.width_mult, "resolution_mult": m.resolution_mult, "resolution_px": model.resolution_px,
            "params": cost.params, "macs": cost.macs, "activations": cost.activations,
            "macs_ratio": float(row.get("macs_ratio", np.nan)) * cost.macs / macs, "merged": ""}
        long_px.append(model.resolution_px)
        long_macs.append(cost.macs)
    selection = selection.assign(long_epochs=s.trainer.epochs, long_resolution_px=long_px, long_macs=long_macs)
    ranges = {k: (min(float(candidates[k].min()), 1.0), max(float(candidates[k].max()), 1.0)) for k in PARAMS}
    return Plan(selection, models, columns, ranges, notes)


def identity(s: FidelitySettings) -> dict:
    """What decides what a fidelity trial computes: the search (its own identity) and the budget.
    ``top_k``, ``random``, ``seed`` and ``seeds`` may change on a re-run (more candidates, more seeds)."""
    path = s.run_dir / SEARCH_IDENTITY_FILE
    try:
        search = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(path)!r} is damaged ({e}); re-run that search to rewrite it") from None
    return plain({"search": search, "resolution_scale": s.resolution_scale, "data": data_identity(s.data),
                  "trainer": trainer_identity(s.trainer)})


def run_folder(s: FidelitySettings) -> RunFolder:
    """The fidelity run's folder, once it is known to be apart from the data and missing, empty or
    this fidelity run's own; touches no file (the app's preflight runs it)."""
    check_apart(s.out_dir, s.data.root)
    run = RunFolder(s.out_dir, IDENTITY_FILE, identity(s), "fidelity run", OUTPUTS, trains_on_data_of=[s.run_dir])
    run.check()
    return run


def _search_idle(run_dir: Path) -> filelock.BaseFileLock:
    """The search folder's lock, taken: a search still running there would change its ranking."""
    lock = filelock.FileLock(Path(run_dir) / LOCK_FILE)
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        raise ValueError(f"the search in {str(run_dir)!r} is running (its folder is locked); wait for it to end, "
                         "then measure its fidelity") from None
    return lock


def budget_lines(s: FidelitySettings, p: Plan) -> list[str]:
    """The budget and the selection in words (the first lines of fidelity.md)."""
    counts = p.selection["chosen"].value_counts()
    data = (f"data.num_images={s.num_images}" if s.num_images is not None
            else "the search's own data")
    winner = " and the frozen winner" if counts.get(WINNER, 0) else ""
    return [f"Long budget: {s.trainer.epochs} epochs ({s.epochs_factor:g}x the search's {s.search_epochs}), "
            f"resolution x{s.resolution_scale:g}, {data}, {len(s.seeds)} seed(s)",
            f"Retrained: the top {counts.get(TOP_K, 0)} by proxy top-1{winner}, and {counts.get(RANDOM, 0)} "
            f"drawn at random (seed {s.seed}) from the rest"]


def run_fidelity(s: FidelitySettings, out=sys.stdout) -> FidelityOutcome:
    """Runs (or resumes) the fidelity run ``s`` describes, and writes its summary into the search's folder."""
    p = plan(s)
    for note in p.notes:
        print(note, file=out)
    run = run_folder(s)
    _search_idle(s.run_dir).release()
    specs = trial_specs(f"{s.backbone_tag}_long", [(cid, c, m) for cid, (c, m) in p.models.items()],
                        list(s.seeds), s.proxy_resolution_px, s.rounding, s.imports)
    config = plain(asdict(s))

    def write_plan(out_dir: Path, num_classes: int) -> None:
        write_table(p.selection, out_dir / "selection")

    with run:  # the folder's lock, held to the last table
        with ray_session(s.runner, uses_ray(s.runner_kind)):
            launch(run, config, specs, p.columns, data=s.data, trainer=s.trainer, runner_kind=s.runner_kind,
                   runner=s.runner, study_storage=s.study_storage, study_name=s.study_name, params_of=grid_params,
                   distributions=distributions(p.ranges), study_attrs=STUDY_ATTRS, write_plan=write_plan, out=out)
        lock = _search_idle(s.run_dir)  # no search rewrites the folder while the summary is written
        try:
            return summarise(s.run_dir, s.out_dir, p.selection, budget_lines(s, p), out)
        finally:
            lock.release()


def _summary_owner(run_dir: Path, fidelity_dir: Path) -> str | None:
    """None where this fidelity run may write its summary into the search's folder (there is
    none yet, or it wrote the one there); else the other fidelity run's folder, whose summary
    stays: a second study of one search never replaces the first's tables."""
    source = run_dir / SOURCE_FILE
    if source.is_file():
        theirs = source.read_text().strip()
        gone = not (Path(theirs) / IDENTITY_FILE).is_file()  # deleted or moved: its summary is orphaned
        return None if gone or Path(theirs).resolve() == fidelity_dir.resolve() else theirs
    if (run_dir / "fidelity.csv").is_file() and fidelity_dir.resolve() != (run_dir / "fidelity").resolve():
        return str(run_dir / "fidelity")  # written before the source was recorded: the default folder's
    return None


def summarise(run_dir: Path, fidelity_dir: Path, selection: pd.DataFrame, header: list[str] = (),
              out=sys.stdout) -> FidelityOutcome:
    """``fidelity.csv``, ``fidelity.md`` and ``plots/fidelity.png|svg`` in the search's folder, from
    the fidelity run's records of the ``selection``'s candidates (a candidate's long top-1 is its
    mean over the seeds that ended ``ok``; one that failed in every seed is left out of the ranks)."""
    run_dir, fidelity_dir = Path(run_dir), Path(fidelity_dir)
    results, failed = collect(fidelity_dir, out=out)
    ok = results[(results["status"] == OK) & results["candidate_id"].isin(set(selection["candidate_id"]))]
    if ok.empty:
        raise RunFailed(f"every retrained trial failed; no fidelity table was written; the errors are in "
                        f"{fidelity_dir / 'results.csv'}")
    long = ok.groupby("candidate_id")["final_top1"].agg(long_top1="mean", long_seeds="count").reset_index()
    table = selection.rename(columns={"top1_mean": "proxy_top1"}).merge(long, on="candidate_id", how="left")
    known = table["long_top1"].notna()
    table["proxy_rank_retrained"] = table.loc[known, "proxy_top1"].rank(ascending=False, method="min")
    table["long_rank"] = table.loc[known, "long_top1"].rank(ascending=False, method="min")
    table = table[[c for c in SUMMARY_COLUMNS if c in table]]
    agreement = rank_agreement(table.loc[known, "proxy_top1"], table.loc[known, "long_top1"])
    lines = [f"Proxy fidelity of the search in {run_dir}", *header,
             f"Agreement of the proxy top-1 with the long top-1: {agreement_line(agreement)}"]
    lost = table.loc[~known, "candidate_id"].tolist()
    if lost:
        lines.append(f"{len(lost)} retrained candidate(s) failed in every seed at the long budget and are left "
                     f"out of the ranks: {', '.join(lost)}")
    w = table[table["winner"].astype(bool)]
    winner_rank = None
    if len(w) and w["long_rank"].notna().iloc[0]:
        winner_rank = int(w["long_rank"].iloc[0])
        lines.append(f"The frozen winner {w['candidate_id'].iloc[0]} (proxy rank {int(w['proxy_rank'].iloc[0])} "
                     f"of the search's candidates) ranks {winner_rank} of {int(known.sum())} at the long budget, "
                     f"top-1 {w['long_top1'].iloc[0]:.4f}")
    elif len(w):
        lines.append(f"The frozen winner {w['candidate_id'].iloc[0]} failed at the long budget: it has no rank")
    figure = plots.fidelity(table[known], agreement)
    owner = _summary_owner(run_dir, fidelity_dir)
    for folder in (fidelity_dir, run_dir) if owner is None else (fidelity_dir,):
        write_table(table, folder / "fidelity")
        atomic_write_text(folder / "fidelity.md", "".join(f"- {line}\n" for line in lines) + "\n"
                          + markdown(table, FORMATS))
        plots.save(figure, folder / "plots" / "fidelity")
    if owner is None:
        atomic_write_text(run_dir / SOURCE_FILE, f"{fidelity_dir.resolve()}\n")
    shown = ["candidate_id", "chosen", "winner", "macs", "proxy_top1", "proxy_rank", "long_top1", "long_rank"]
    print(markdown(table[shown], FORMATS), file=out)
    for line in lines[1:]:
        print(line, file=out)
    if owner is None:
        print(f"fidelity tables in {run_dir} and {fidelity_dir} (fidelity.csv, fidelity.md, plots/fidelity.png)",
              file=out, flush=True)
    else:
        print(f"fidelity tables in {fidelity_dir} (fidelity.csv, fidelity.md, plots/fidelity.png); the search's "
              f"folder keeps the summary of the fidelity run in {owner}", file=out, flush=True)
    return FidelityOutcome(run_dir, table, agreement, winner_rank, len(results), failed)
