"""Step 1 end to end: candidates → trials → records → tables → frozen winner → Step-2 configs.

Follows pycls's sweep pipeline (``steps.pipeline``): write the candidate list down first, then
launch, then collect and analyse from the records alone. Everything that can be wrong with the
input (an empty candidate set, a missing dataset, GPUs that are not there) is found before the
run's folder is touched. ``runner=optuna_tpe`` samples its candidates instead (``steps.tpe``)
and shares every other stage.

Output, in ``out_dir``: ``search.json`` (what defines the search), ``candidates.csv``,
``trials/`` (one JSON per ended trial), ``results.parquet|csv``, ``epochs.parquet|csv``,
``ranking.csv|md``, ``pareto.csv``, ``coefficients.yaml`` (the winner), ``step2/`` (the
winner's B1–B7 configs from the emitter), ``optuna.db`` and ``ray/`` (Ray Tune's experiment,
restored by a re-run).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from scaling_search.analysis.power import detectable_difference, detects, observed_discordance, power_lines
from scaling_search.analysis.results import compare, correctness, rank, results_frame, with_ties
from scaling_search.files import atomic_write_text, plain
from scaling_search.models.backbones import get_backbone
from scaling_search.models.scaling import Coefficients, Multipliers, Rounding
from scaling_search.plan.emit import coefficients_yaml, write_family
from scaling_search.plan.family import plan_family
from scaling_search.plan.space import Candidate, SearchSpace, build_candidates, candidate_id
from scaling_search.settings import GridSettings
from scaling_search.steps import racing, tpe
from scaling_search.steps.pipeline import (
    TRAIN_MACS_PER_FORWARD,
    RunFolder,
    check_apart,
    collect,
    data_identity,
    launch,
    prepare,
    trial_specs,
    with_training_macs,
)
from scaling_search.tables import markdown, verdict, write_table
from scaling_search.train.data import num_classes_of, train_image_count, val_image_count
from scaling_search.train.execution import (
    RunFailed,
    RunInterrupted,
    make_runner,
    ray_session,
    run_specs,
    trainer_identity,
    uses_ray,
)
from scaling_search.train.records import TrialStore
from scaling_search.train.status import OK
from scaling_search.train.study import distributions, grid_params

BASELINE_ROLE, CANDIDATE_ROLE = "baseline", "candidate"
RANKING_FORMATS = {"top1_mean": "{:.4f}", "top1_std": "{:.4f}", "top1_ci95": "{:.4f}",
                   "top1_per_mmacs": "{:.4f}", "macs": "{:,}", "params": "{:,}",
                   "macs_ratio": "{:.2f}", "product": "{:.4f}", "train_macs": "{:.3e}",
                   "diff_to_best": "{:+.4f}", "diff_lo": "{:+.4f}", "diff_hi": "{:+.4f}", "p_mcnemar": "{:.3g}"}
RACING_FORMATS = {"train_macs": "{:.3e}", "trial_time_s": "{:.1f}"}
STUDY_ATTRS = ("role", "macs", "params", "resolution_px", "macs_ratio")

SearchInterrupted = RunInterrupted  # the name Step 1's callers know
IDENTITY_FILE = "search.json"
# What a search writes into its folder besides what every run folder holds (pipeline.RUN_FILES).
# ``fidelity/``, ``fidelity.csv`` and ``fidelity.md``: the proxy-fidelity step's (``steps.fidelity``);
# ``racing.csv|md``: a seed race's rounds (``steps.racing``).
OUTPUTS = ("candidates.csv", "candidates.parquet", "ranking.csv", "ranking.md", "pareto.csv",
           "coefficients.yaml", "step2", "fidelity", "fidelity.csv", "fidelity.md", "fidelity.source", "racing.csv",
           "racing.md")


@dataclass(frozen=True)
class SearchOutcome:
    """What a finished search hands back (also what a multirun summary reads)."""

    run_dir: Path
    winner: dict | None  # the best candidate's ranking row
    baseline: dict | None  # the unscaled proxy's ranking row, when it was trained
    trials: int
    failed: int


def _first_error(results: pd.DataFrame) -> str:
    errors = results.loc[results["status"] != OK, "error"].dropna()
    return f"first error: {errors.iloc[0]}" if len(errors) else "no error recorded"


def plan(s: GridSettings) -> tuple[list[Candidate], Candidate | None, int]:
    """The candidates, the baseline (if trained), and the class count; touches no file."""
    num_classes = num_classes_of(s.data)
    if s.runner_kind == "optuna_tpe":  # samples its own candidates; the grid does not apply
        return [], None, num_classes
    base = Multipliers(s.proxy_depth_mult, s.proxy_width_mult)
    candidates, base_cost = build_candidates(s.space, s.backbone, base, s.proxy_resolution_px,
                                             s.rounding, num_classes)
    baseline = None
    if s.include_baseline:
        model = get_backbone(s.backbone).scale(base, s.rounding, s.proxy_resolution_px)
        one = Coefficients(1.0, 1.0, 1.0)
        baseline = Candidate(candidate_id(1, 1, 1, s.space.decimals), one, 1, model, base_cost, 1.0)
        if any(c.candidate_id == baseline.candidate_id for c in candidates):
            baseline = None  # already a candidate (e.g. target 1)
    if s.racing and s.racing_budget_train_macs is not None:
        first = (TRAIN_MACS_PER_FORWARD * train_image_count(s.data) * s.trainer.epochs
                 * sum(c.cost.macs for c in [*candidates, *([baseline] if baseline else [])]))
        if s.racing_budget_train_macs < first:
            raise ValueError(f"racing.budget_train_macs={s.racing_budget_train_macs:.3g} is less than the race's "
                             f"first round, which always runs (every candidate and the baseline on one seed: "
                             f"{first:.3e} training MACs); raise it to at least that, or set it to null for the "
                             "seed budget alone")
    return candidates, baseline, num_classes


def search_identity(s: GridSettings) -> dict:
    """The settings that decide what a trial computes; a run folder holds one of them."""
    return json.loads(json.dumps({
        "backbone": s.backbone, "proxy": [s.proxy_depth_mult, s.proxy_width_mult, s.proxy_resolution_px],
        "space": {k: str(v) for k, v in asdict(s.space).items()}, "data": data_identity(s.data),
        "trainer": trainer_identity(s.trainer),
        "rounding": asdict(s.rounding)}, default=str))


def dry_run(s: GridSettings, candidates: list[Candidate], baseline: Candidate | None,
            out=sys.stdout) -> pd.DataFrame:
    """Prints the candidate table with the training compute it implies, and writes nothing."""
    rows = [{"candidate_id": c.candidate_id, **c.columns(role)}
            for c, role in [(baseline, BASELINE_ROLE)] * (baseline is not None)
            + [(c, CANDIDATE_ROLE) for c in candidates]]
    n_train = train_image_count(s.data)
    df = with_training_macs(pd.DataFrame(rows), n_train, s.trainer.epochs, len(s.seeds))
    shown = df[["candidate_id", "role", "depth_coef", "width_coef", "resolution_coef", "product",
                "resolution_px", "params", "macs", "macs_ratio", "train_macs", "merged"]]
    print(markdown(shown, RANKING_FORMATS), file=out)
    merged = sum(len(c.merged) for c in candidates)
    print(f"{len(candidates)} candidates ({merged} more grid points merged into them as identical "
          f"networks), {len(s.seeds)} seed(s); about {df['train_macs'].sum():.3e} training MACs "
          f"over ~{n_train} training images x {s.trainer.epochs} epochs", file=out)
    say_power(s, out)
    return df


def say_power(s: GridSettings, out) -> None:
    """The verdict's power for this plan, before anything trains (``analysis.power``)."""
    for line in power_lines(val_image_count(s.data), len(s.seeds), s.stats.expected_error, s.stats.min_difference):
        print(line, file=out, flush=True)


def _observed_power(results: pd.DataFrame, correct: dict, winner: str, contenders) -> str:
    """The line beside the tied set: the difference this run could have detected, from the
    candidates' observed disagreement with the winner (``analysis.power``); "" where unpaired."""
    ok = results[results["status"] == OK].set_index(["candidate_id", "seed"])["trial_id"]
    mine = ok.get(winner)
    if mine is None:
        return ""
    pairs = []
    for other in contenders:
        if other == winner or other not in ok.index.get_level_values(0):
            continue
        theirs = ok.loc[other]
        seeds = sorted(set(mine.index) & set(theirs.index))
        a = [correct.get(mine[sd]) for sd in seeds]
        b = [correct.get(theirs[sd]) for sd in seeds]
        if seeds and all(x is not None for x in a + b):
            pairs.append((np.concatenate(a), np.concatenate(b)))
    seen = observed_discordance(pairs)
    if seen is None:
        return ""
    psi, n = seen
    mde = detectable_difference(n, psi)
    return (f"power, observed: the candidates disagreed with the winner on a median {100 * psi:.1f}% of "
            f"{n:,} paired images (seeds pooled), so the paired test {detects(mde)}; closer candidates "
            "are mostly tied")


def run_folder(s: GridSettings) -> RunFolder:
    """The search's run folder, once it is known to be apart from the data and missing, empty or
    this search's own; touches no file (the apps' preflight runs it for every job of a sweep)."""
    check_apart(s.out_dir, s.data.root)
    run = RunFolder(s.out_dir, IDENTITY_FILE, search_identity(s), "search", OUTPUTS)
    run.check()
    return run


def run_search(s: GridSettings, out=sys.stdout) -> SearchOutcome | None:
    """Runs (or resumes) the search ``s`` describes and writes its tables; None for a dry run."""
    candidates, baseline, num_classes = plan(s)
    if s.dry_run and s.runner_kind == "optuna_tpe":
        print(f"runner=optuna_tpe samples {s.tpe_trials} (alpha, beta) pairs with TPE; "
              "there is no candidate list to show", file=out)
        return None
    if s.dry_run:
        dry_run(s, candidates, baseline, out)
        return None
    run = run_folder(s)
    config = plain(asdict(s))
    if s.runner_kind != "optuna_tpe":
        say_power(s, out)
    with run:  # the folder's lock, held to the last table
        with ray_session(s.runner, uses_ray(s.runner_kind, s.executor)):
            if s.runner_kind == "optuna_tpe":
                runner = make_runner("local" if s.executor == "local" else "ray", s.runner, s.out_dir)
                tpe.run_tpe_search(
                    run, config, s.space, runner, s.tpe_trials, backbone=s.backbone, tag=s.backbone_tag,
                    base=Multipliers(s.proxy_depth_mult, s.proxy_width_mult),
                    resolution_px=s.proxy_resolution_px, rounding=s.rounding, num_classes=num_classes,
                    data=s.data, trainer=s.trainer, seed=s.seed, imports=s.imports,
                    study_storage=s.study_storage, study_name=s.study_name, out=out)
            else:
                _run_grid(s, run, config, candidates, baseline, out)
        return summarise(s.out_dir, s.backbone, s.data.name, s.rounding, s.emit_phis, s.emit_num_classes, out,
                         s.freeze, raced=s.racing)


def _run_grid(s: GridSettings, run: RunFolder, config: dict, candidates: list[Candidate],
              baseline: Candidate | None, out) -> None:
    everything = ([(baseline, BASELINE_ROLE)] if baseline else []) + [(c, CANDIDATE_ROLE) for c in candidates]
    columns = {c.candidate_id: c.columns(role) for c, role in everything}
    units = [(c.candidate_id, c.coefficients, c.model) for c, _ in everything]

    def write_plan(out_dir: Path, num_classes: int) -> None:
        write_table(pd.DataFrame([{"candidate_id": k, **v} for k, v in columns.items()]),
                    out_dir / "candidates", parquet=True)

    if s.racing:
        _race(s, run, config, units, columns, [c.candidate_id for c in candidates],
              baseline.candidate_id if baseline else None, write_plan, out)
        return
    specs = trial_specs(s.backbone_tag, units, s.seeds, s.proxy_resolution_px, s.rounding, s.imports)
    launch(run, config, specs, columns, data=s.data, trainer=s.trainer, runner_kind=s.runner_kind,
           runner=s.runner, study_storage=s.study_storage, study_name=s.study_name, params_of=grid_params,
           distributions=grid_distributions(s.space), study_attrs=STUDY_ATTRS, write_plan=write_plan, out=out)


def _race(s: GridSettings, run: RunFolder, config: dict, units: list, columns: dict[str, dict],
          candidate_ids: list[str], baseline_id: str | None, write_plan, out) -> None:
    """Seed racing (``steps.racing``) through the grid's runner: one ``run_specs`` per round."""
    images, study = prepare(run, config, columns, data=s.data, study_storage=s.study_storage,
                            study_name=s.study_name, write_plan=write_plan, out=out)
    runner = make_runner(s.runner_kind, s.runner, run.out_dir)
    by_id = {u[0]: u for u in units}
    per_image_epoch = TRAIN_MACS_PER_FORWARD * train_image_count(s.data) * s.trainer.epochs

    def chosen(ids: list[str], first: bool) -> list[str]:
        return list(ids) + ([baseline_id] if first and baseline_id else [])

    def train(ids: list[str], seed: int, first: bool) -> None:
        print(f"seed racing: seed {seed}, {len(ids)} candidate(s)", file=out, flush=True)
        specs = trial_specs(s.backbone_tag, [by_id[i] for i in chosen(ids, first)], [seed],
                            s.proxy_resolution_px, s.rounding, s.imports)
        run_specs(run.out_dir, specs, columns, images, s.trainer, runner, study, grid_params,
                  grid_distributions(s.space), STUDY_ATTRS, s.runner_kind, out)

    def standing() -> tuple[pd.DataFrame, dict]:
        records = TrialStore(run.out_dir).load()
        return results_frame(records), correctness(records)

    def train_macs(ids: list[str], first: bool) -> float:
        return float(sum(columns[i]["macs"] for i in chosen(ids, first)) * per_image_epoch)

    rounds = racing.race(candidate_ids, s.seeds, train, standing, train_macs, s.racing_budget_train_macs)
    table = racing.race_table(rounds, standing()[0]).assign(seed_budget=len(s.seeds))
    write_table(table, run.out_dir / "racing", RACING_FORMATS)
    full = racing.against_full_grid(table, len(units), len(s.seeds), train_macs(candidate_ids, True) * len(s.seeds))
    print(racing.race_line(rounds, full, len(s.seeds)), file=out, flush=True)


def grid_distributions(space: SearchSpace) -> dict:
    """The Optuna distributions of a grid's α, β, γ (the baseline's 1 included)."""
    ranges = {"depth_coef": space.depth_range, "width_coef": space.width_range,
              "resolution_coef": space.resolution_range}
    return distributions({k: (min(float(lo), 1.0), float(hi)) for k, (lo, hi) in ranges.items()})


def _interval(c: dict) -> str:
    """``95% interval +0.0060 to +0.0330 over 359 images``, of a ``results.compare``."""
    if not c or not c["by"]:
        return "no paired interval"
    if c["tied"] is None:  # seeds that agree exactly, without per-image records
        return f"no interval: {c['by']}"
    return f"95% interval {c['lo']:+.4f} to {c['hi']:+.4f} over {c['by']}"


def ranked(results: pd.DataFrame, correct: dict, raced: bool = False) -> tuple[pd.DataFrame, pd.Series]:
    """The ranking with each row's paired difference to the best candidate and ``tied_with_best``,
    and the mask of the rows the best was chosen among: the candidates, or of a seed race
    (``raced``) its finalists, those trained on the most seeds (one out after a single seed may
    hold a lucky higher mean). In a race, a candidate it dropped is not tied with the best: the
    race ruled it out on the seeds it had, so the tied set is the finalists' (racing.csv's last
    ``tied_ids``), and its row keeps the paired difference it had to the final best."""
    ranking = rank(results)
    among = ranking["role"] == CANDIDATE_ROLE
    if raced:
        runs = results[results["role"] == CANDIDATE_ROLE].groupby("candidate_id").size()
        among &= ranking["candidate_id"].isin(runs.index[runs == runs.max()])
    table = with_ties(ranking, results, correct, among=among)
    if raced:
        table.loc[(table["role"] == CANDIDATE_ROLE) & ~among, "tied_with_best"] = False
    return table, among


def summarise(out_dir: Path, backbone: str, data_name: str, rounding: Rounding, emit_phis: tuple[float, ...],
              emit_num_classes: int, out=sys.stdout, freeze: str = "best", raced: bool = False) -> SearchOutcome:
    """Builds every table from the records, freezes the winner by the ``freeze`` rule and emits
    its Step-2 configs. ``raced``: a seed race's folder (``ranked``)."""
    results, failed = collect(out_dir, out=out)
    ok = results[results["status"] == OK]
    if ok.empty:
        raise RunFailed(f"every one of the {len(results)} trials failed ({_first_error(results)}); "
                        f"nothing was frozen; the errors are in {out_dir / 'results.csv'}")
    correct = correctness(TrialStore(out_dir).load())
    ranking, among = ranked(results, correct, raced)
    contenders = ranking[ranking["role"] == CANDIDATE_ROLE]
    finalists = contenders[among[contenders.index]]
    finalists = finalists if len(finalists) else contenders
    tied = contenders[contenders["tied_with_best"].fillna(False).astype(bool)]
    win_id = None if contenders.empty else (
        tied.sort_values(["macs", "top1_mean"], ascending=[True, False]).iloc[0]
        if freeze == "cheapest_tied" and len(tied) else finalists.iloc[0])["candidate_id"]
    ranking["frozen"] = ranking["candidate_id"] == win_id  # the row coefficients.yaml holds; the report reads it
    contenders, tied = ranking.loc[contenders.index], ranking.loc[tied.index]
    write_table(ranking, out_dir / "ranking", RANKING_FORMATS)
    write_table(ranking[ranking["pareto"]].sort_values("macs"), out_dir / "pareto")

    baseline = ranking[ranking["role"] == BASELINE_ROLE]
    base_row = baseline.iloc[0].to_dict() if len(baseline) else None
    shown = ["candidate_id", "role", "depth_coef", "width_coef", "resolution_coef", "macs",
             "macs_ratio", "top1_mean", "top1_std", "seeds", "top1_per_mmacs", "pareto", "tied_with_best"]
    print(markdown(ranking[shown].head(10), RANKING_FORMATS), file=out)
    if contenders.empty:
        raise RunFailed(f"every candidate failed, only the baseline trained ({_first_error(results)}); "
                        f"nothing was frozen; the errors are in {out_dir / 'results.csv'}")
    tried = sorted(set(results.loc[results["role"] == CANDIDATE_ROLE, "candidate_id"]))
    lost = [c for c in tried if c not in set(contenders["candidate_id"])]
    win = ranking[ranking["frozen"]].iloc[0].to_dict()
    coefficients = Coefficients(win["depth_coef"], win["width_coef"], win["resolution_coef"])
    margin = compare(results, correct, win["candidate_id"], base_row["candidate_id"]) if base_row else None
    rule = {"best": "the best mean top-1", "cheapest_tied": "the fewest MACs among those tied with the best"}[freeze]
    power = _observed_power(results, correct, win["candidate_id"], contenders["candidate_id"])
    header = (f"# Step-1 winner of {out_dir} ({backbone} proxy on {data_name}):\n"
              f"# {win['candidate_id']}, validation top-1 {win['top1_mean']:.4f} over "
              f"{int(win['seeds'])} seed(s), {int(win['macs']):,} MACs "
              f"({win['macs_ratio']:.2f}x the proxy baseline)\n"
              f"# freeze rule: {freeze} ({rule})\n"
              f"# tied with the best at 95% ({len(tied)} of {len(contenders)}): "
              f"{', '.join(tied['candidate_id']) or 'not known (no paired data)'}\n"
              + (f"# {power}\n" if power else ""))
    if base_row:
        header += (f"# unscaled proxy baseline: top-1 {base_row['top1_mean']:.4f}; winner - baseline "
                   f"{win['top1_mean'] - base_row['top1_mean']:+.4f}, {_interval(margin)}\n")
    atomic_write_text(out_dir / "coefficients.yaml", coefficients_yaml(coefficients, header))
    family = plan_family(backbone, coefficients, emit_phis, baselines=(), rounding=rounding,
                         num_classes=emit_num_classes)
    emission = {"backbone": backbone, "coefficients": asdict(coefficients), "phis": list(emit_phis),
                "rounding": asdict(rounding), "num_classes": emit_num_classes,
                "coefficients_file": str(out_dir / "coefficients.yaml")}
    write_family(out_dir / "step2", family, coefficients, rounding, emit_num_classes, run_config=emission,
                 prog="scaling_search.grid")
    against = ""
    if base_row:
        against = f"; {verdict(win['top1_mean'] - base_row['top1_mean'], 'the unscaled baseline')}"
        if margin["by"]:
            significant = margin["tied"] is False and margin["diff"] > 0
            against += (f" ({_interval(margin)}: "
                        f"{'significant' if significant else 'not significant'})")
    if lost:
        print(f"{len(lost)} of {len(tried)} candidates failed in every seed ({', '.join(lost[:5])}"
              f"{', ...' if len(lost) > 5 else ''}); the winner was chosen among the other "
              f"{len(tried) - len(lost)}", file=out)
    by = next((b for b in contenders["paired_by"] if isinstance(b, str) and b), "")  # the best's own row has none
    paired = f" (paired over {by})" if by else ""
    if len(tied) == 1 and len(contenders) > 1:
        print(f"tied with the best at 95%{paired}: none; {tied['candidate_id'].iloc[0]} is apart from "
              f"the other {len(contenders) - 1} candidates", file=out)
    elif len(tied):
        every = len(tied) == len(contenders) and len(contenders) > 1
        print(f"tied with the best at 95%{paired}: "
              f"{len(tied)} of {len(contenders)} candidates: {', '.join(tied['candidate_id'][:12])}"
              f"{', ...' if len(tied) > 12 else ''}"
              + ("; the proxy cannot separate the candidates" if every else ""), file=out)
    if power:
        print(power, file=out)
    print(f"freeze rule {freeze}: {rule}", file=out)
    print(f"winner {win['candidate_id']}: alpha={coefficients.depth_coef:g} beta={coefficients.width_coef:g} "
          f"gamma={coefficients.resolution_coef:g}, top-1 {win['top1_mean']:.4f}{against}\n"
          f"frozen to {out_dir / 'coefficients.yaml'}; Step-2 configs in {out_dir / 'step2'}",
          file=out)
    return SearchOutcome(out_dir, win, base_row, len(results), failed)
