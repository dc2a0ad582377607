"""Step 1 end to end: candidates → trials → records → tables → frozen winner → Step-2 configs.

Follows pycls's sweep pipeline: write the candidate list down first, then launch, then collect
and analyse from the records alone. Everything that can be wrong with the input (an empty
candidate set, a missing dataset, GPUs that are not there) is found before the run's folder
is touched.

Output, in ``out_dir``: ``search.json`` (what defines the search), ``candidates.csv``,
``trials/`` (one JSON per ended trial), ``results.parquet|csv``, ``epochs.parquet|csv``,
``ranking.csv|md``, ``pareto.csv``, ``coefficients.yaml`` (the winner), ``step2/`` (the
winner's B1–B7 configs from the core's emitter), ``optuna.db`` and ``ray/`` (Ray Tune's
experiment, restored by a re-run).
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from scaling_search.settings import GridSettings, ScaleSettings
from scaling_search.train.data import load_dataset, num_classes_of, train_image_count
from scaling_search.plan.emit import markdown, write_family
from scaling_search.train.execution import (RunInterrupted, check_identity, make_runner, ray_session,
                                      run_specs, uses_ray, write_identity, write_table, write_trial_tables)
from scaling_search.files import atomic_output, atomic_write_text, plain
from scaling_search.analysis.results import rank
from scaling_search.models.scaling import Coefficients, Multipliers
from scaling_search.plan.space import Candidate, build_candidates, candidate_id
from scaling_search.train.trial import TrialSpec, trial_id

BASELINE_ROLE, CANDIDATE_ROLE = "baseline", "candidate"
RANKING_FORMATS = {"top1_mean": "{:.4f}", "top1_std": "{:.4f}", "top1_ci95": "{:.4f}",
                   "top1_per_mmacs": "{:.4f}", "macs": "{:,}", "params": "{:,}",
                   "macs_ratio": "{:.2f}", "product": "{:.4f}"}


SearchInterrupted = RunInterrupted  # the name Step 1's callers know
IDENTITY_FILE = "search.json"


@dataclass(frozen=True)
class SearchOutcome:
    """What a finished search hands back (also what a multirun summary reads)."""

    run_dir: Path
    winner: dict | None  # the best candidate's ranking row
    baseline: dict | None  # the unscaled proxy's ranking row, when it was trained
    trials: int
    failed: int


def candidate_columns(c: Candidate, role: str = CANDIDATE_ROLE) -> dict:
    m = c.model.multipliers
    return {"role": role, "depth_coef": c.coefficients.depth_coef, "width_coef": c.coefficients.width_coef,
            "resolution_coef": c.coefficients.resolution_coef, "product": float(c.product),
            "depth_mult": m.depth_mult, "width_mult": m.width_mult, "resolution_mult": m.resolution_mult,
            "resolution_px": c.model.resolution_px, "params": c.cost.params, "macs": c.cost.macs,
            "activations": c.cost.activations, "macs_ratio": c.macs_ratio, "merged": ";".join(c.merged)}


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
        from scaling_search.models.backbones import get_backbone

        model = get_backbone(s.backbone).scale(base, s.rounding, s.proxy_resolution_px)
        one = Coefficients(1.0, 1.0, 1.0)
        baseline = Candidate(candidate_id(1, 1, 1, s.space.decimals), one, 1, model, base_cost, 1.0)
        if any(c.candidate_id == baseline.candidate_id for c in candidates):
            baseline = None  # already a candidate (e.g. target 1)
    return candidates, baseline, num_classes


def specs_for(s: GridSettings, candidates: list[Candidate]) -> list[TrialSpec]:
    return [TrialSpec(trial_id(s.backbone_tag, c.candidate_id, seed), c.candidate_id, seed, s.backbone,
                      c.coefficients.depth_coef, c.coefficients.width_coef, c.coefficients.resolution_coef,
                      c.model.multipliers.depth_mult, c.model.multipliers.width_mult,
                      c.model.multipliers.resolution_mult, s.proxy_resolution_px, asdict(s.rounding),
                      s.imports)
            for c in candidates for seed in s.seeds]


def search_identity(s: GridSettings) -> dict:
    """The settings that decide what a trial computes; a run folder holds one of them."""
    return json.loads(json.dumps({
        "backbone": s.backbone, "proxy": [s.proxy_depth_mult, s.proxy_width_mult, s.proxy_resolution_px],
        "space": {k: str(v) for k, v in asdict(s.space).items()}, "data": asdict(s.data),
        "trainer": {k: v for k, v in asdict(s.trainer).items() if k != "num_threads"},
        "rounding": asdict(s.rounding)}, default=str))


def check_run_dir(s: GridSettings) -> None:
    """A re-run resumes only the same search; anything else would mix incomparable trials."""
    check_identity(s.out_dir, IDENTITY_FILE, search_identity(s), "search")


def write_run_config(s: GridSettings) -> None:
    """The resolved settings and the environment, for the report (rewritten by each run)."""
    from omegaconf import OmegaConf

    from scaling_search.environment import capture

    atomic_write_text(s.out_dir / "config.yaml", OmegaConf.to_yaml(plain(asdict(s))))
    atomic_write_text(s.out_dir / "environment.json", json.dumps(capture(), indent=1))


def dry_run(s: GridSettings, candidates: list[Candidate], baseline: Candidate | None, out=sys.stdout) -> pd.DataFrame:
    """Prints the candidate table with the training compute it implies, and writes nothing."""
    rows = [{"candidate_id": c.candidate_id, **candidate_columns(c, role)}
            for c, role in [(baseline, BASELINE_ROLE)] * (baseline is not None)
            + [(c, CANDIDATE_ROLE) for c in candidates]]
    df = pd.DataFrame(rows)
    n_train = train_image_count(s.data)
    # Training costs ~3x the forward pass (forward + backward), per image and epoch, per seed.
    df["train_macs"] = 3 * df["macs"] * n_train * s.trainer.epochs * len(s.seeds)
    shown = df[["candidate_id", "role", "depth_coef", "width_coef", "resolution_coef", "product",
                "resolution_px", "params", "macs", "macs_ratio", "train_macs", "merged"]]
    print(markdown(shown, {**RANKING_FORMATS, "train_macs": "{:.3e}"}), file=out)
    merged = sum(len(c.merged) for c in candidates)
    print(f"{len(candidates)} candidates ({merged} more grid points merged into them as identical "
          f"networks), {len(s.seeds)} seed(s); about {df['train_macs'].sum():.3e} training MACs "
          f"over ~{n_train} training images x {s.trainer.epochs} epochs", file=out)
    return df


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
    check_run_dir(s)
    with ray_session(s.runner, uses_ray(s.runner_kind, s.executor)):
        if s.runner_kind == "optuna_tpe":
            from scaling_search.steps.tpe import run_tpe_search

            runner = make_runner("local" if s.executor == "local" else "ray", s.runner, s.out_dir)
            run_tpe_search(s, num_classes, runner, out)
        else:
            _run_grid(s, candidates, baseline, out)
    return summarise(s, out)


def _run_grid(s: GridSettings, candidates: list[Candidate], baseline: Candidate | None, out) -> None:
    from scaling_search.train.study import distributions, grid_params, open_study, storage_url

    all_candidates = ([baseline] if baseline else []) + candidates
    columns = {c.candidate_id: candidate_columns(c) for c in candidates}
    if baseline:
        columns[baseline.candidate_id] = candidate_columns(baseline, BASELINE_ROLE)
    specs = specs_for(s, all_candidates)
    data = load_dataset(s.data, max(c.model.resolution_px for c in all_candidates))
    if data.num_classes != num_classes_of(s.data):
        raise ValueError(f"{s.data.name} has {data.num_classes} classes, expected {num_classes_of(s.data)}")

    url = storage_url(s.study_storage, s.out_dir)
    study = open_study(url, s.study_name or s.out_dir.name) if s.study_storage else None  # before any write
    s.out_dir.mkdir(parents=True, exist_ok=True)
    write_identity(s.out_dir, IDENTITY_FILE, search_identity(s))
    write_run_config(s)
    write_table(pd.DataFrame([{"candidate_id": k, **v} for k, v in columns.items()]),
                s.out_dir / "candidates")
    ranges = {"depth_coef": s.space.depth_range, "width_coef": s.space.width_range,
              "resolution_coef": s.space.resolution_range}
    dists = distributions({k: (min(float(lo), 1.0), float(hi)) for k, (lo, hi) in ranges.items()})
    study = study or open_study(url, s.study_name or s.out_dir.name)
    run_specs(s.out_dir, specs, columns, data, s.trainer, make_runner(s.runner_kind, s.runner, s.out_dir),
              study, grid_params, dists, ("role", "macs", "params", "resolution_px", "macs_ratio"),
              s.runner_kind, out)


def summarise(s: GridSettings, out=sys.stdout) -> SearchOutcome:
    """Builds every table from the records, freezes the winner and emits its Step-2 configs."""
    results, failed = write_trial_tables(s.out_dir, None, out)
    try:
        ranking = rank(results)
    except ValueError as e:
        print(f"no ranking: {e}", file=out)
        return SearchOutcome(s.out_dir, None, None, len(results), failed)
    with atomic_output(s.out_dir / "ranking.csv") as tmp:
        ranking.to_csv(tmp, index=False)
    atomic_write_text(s.out_dir / "ranking.md", markdown(ranking, RANKING_FORMATS))
    with atomic_output(s.out_dir / "pareto.csv") as tmp:
        ranking[ranking["pareto"]].sort_values("macs").to_csv(tmp, index=False)

    contenders = ranking[ranking["role"] == CANDIDATE_ROLE]
    baseline = ranking[ranking["role"] == BASELINE_ROLE]
    base_row = baseline.iloc[0].to_dict() if len(baseline) else None
    shown = ["candidate_id", "role", "depth_coef", "width_coef", "resolution_coef", "macs",
             "macs_ratio", "top1_mean", "top1_std", "seeds", "top1_per_mmacs", "pareto"]
    print(markdown(ranking[shown].head(10), RANKING_FORMATS), file=out)
    if contenders.empty:
        return SearchOutcome(s.out_dir, None, base_row, len(results), failed)
    win = contenders.iloc[0].to_dict()
    coefficients = Coefficients(win["depth_coef"], win["width_coef"], win["resolution_coef"])
    header = (f"# Step-1 winner of {s.out_dir} ({s.backbone} proxy on {s.data.name}):\n"
              f"# {win['candidate_id']}, validation top-1 {win['top1_mean']:.4f} over "
              f"{int(win['seeds'])} seed(s), {int(win['macs']):,} MACs "
              f"({win['macs_ratio']:.2f}x the proxy baseline)\n")
    if base_row:
        header += f"# unscaled proxy baseline: top-1 {base_row['top1_mean']:.4f}\n"
    atomic_write_text(s.out_dir / "coefficients.yaml", header + "".join(
        f"{k}: {v:g}\n" for k, v in asdict(coefficients).items()))
    write_family(ScaleSettings(s.backbone, coefficients, s.emit_phis, s.rounding, None,
                               s.emit_num_classes, s.out_dir / "step2", s.imports),
                 "scaling_search.grid")
    verdict = ""
    if base_row:
        delta = win["top1_mean"] - base_row["top1_mean"]
        verdict = (f"; beats the unscaled baseline by {delta:.4f}" if delta > 0 else
                   f"; does not beat the unscaled baseline ({delta:+.4f})")
    print(f"winner {win['candidate_id']}: alpha={coefficients.depth_coef:g} beta={coefficients.width_coef:g} "
          f"gamma={coefficients.resolution_coef:g}, top-1 {win['top1_mean']:.4f}{verdict}\n"
          f"frozen to {s.out_dir / 'coefficients.yaml'}; Step-2 configs in {s.out_dir / 'step2'}",
          file=out)
    return SearchOutcome(s.out_dir, win, base_row, len(results), failed)
