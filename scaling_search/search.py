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

from scaling_search.config import GridSettings, ScaleSettings
from scaling_search.data import load_dataset, num_classes_of
from scaling_search.emit import markdown, write_family
from scaling_search.files import atomic_output, atomic_write_text
from scaling_search.progress import Progress
from scaling_search.results import TrialStore, epochs_frame, rank, results_frame
from scaling_search.scaling import Coefficients, Multipliers
from scaling_search.space import Candidate, build_candidates, candidate_id
from scaling_search.trial import TrialSpec, trial_id

BASELINE_ROLE, CANDIDATE_ROLE = "baseline", "candidate"
RANKING_FORMATS = {"top1_mean": "{:.4f}", "top1_std": "{:.4f}", "top1_ci95": "{:.4f}",
                   "top1_per_mmacs": "{:.4f}", "macs": "{:,}", "params": "{:,}",
                   "macs_ratio": "{:.2f}", "product": "{:.4f}"}


class SearchInterrupted(Exception):
    """The runner returned before every trial ended (Ctrl-C in Ray Tune); nothing is ranked."""


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
        from scaling_search.backbones import get_backbone

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
    path = s.out_dir / "search.json"
    if not path.is_file():
        return
    old, new = json.loads(path.read_text()), search_identity(s)
    if old != new:
        diff = [k for k in new if old.get(k) != new[k]]
        raise ValueError(f"out_dir {str(s.out_dir)!r} holds a search with different {', '.join(diff)}; "
                         "choose another out_dir (or delete that folder) to start a new search")


def dry_run(s: GridSettings, candidates: list[Candidate], baseline: Candidate | None, out=sys.stdout) -> pd.DataFrame:
    """Prints the candidate table with the training compute it implies, and writes nothing."""
    rows = [{"candidate_id": c.candidate_id, **candidate_columns(c, role)}
            for c, role in [(baseline, BASELINE_ROLE)] * (baseline is not None)
            + [(c, CANDIDATE_ROLE) for c in candidates]]
    df = pd.DataFrame(rows)
    n_train = _train_images(s)
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


def _train_images(s: GridSettings) -> int:
    """Training images the search will see (an image folder's files are counted, not decoded)."""
    sizes = {"digits": 1797, "synthetic": s.data.num_images or 2000, "cifar10": 50000, "cifar100": 50000}
    if s.data.name == "imagefolder":
        root = Path(s.data.root).expanduser()
        if (root / "train").is_dir() and (root / "val").is_dir():
            return sum(1 for p in (root / "train").rglob("*") if p.is_file())
        sizes["imagefolder"] = sum(1 for p in root.rglob("*") if p.is_file())
    n = sizes[s.data.name]
    if s.data.num_images is not None:
        n = min(n, s.data.num_images)
    return round(n * (1 - s.data.val_fraction))


def _write_table(df: pd.DataFrame, stem: Path) -> None:
    with atomic_output(stem.with_suffix(".parquet")) as tmp:
        df.to_parquet(tmp, index=False)
    with atomic_output(stem.with_suffix(".csv")) as tmp:
        df.to_csv(tmp, index=False)


def make_runner(s: GridSettings):
    from scaling_search.runners import LocalRunner

    if s.runner_kind == "local" or (s.runner_kind == "optuna_tpe" and s.executor == "local"):
        return LocalRunner(max(1, int(s.runner.cpus_per_trial)))
    from scaling_search.runners.ray_tune import RayTuneRunner

    return RayTuneRunner(s.runner, s.out_dir / "ray")


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
    owns_ray = False
    uses_ray = s.runner_kind == "ray" or (s.runner_kind == "optuna_tpe" and s.executor == "ray")
    if uses_ray:
        from scaling_search.runners.ray_tune import check_cluster, check_local_gpus, start_ray

        check_local_gpus(s.runner)
        owns_ray = start_ray(s.runner)
    try:
        if uses_ray:
            check_cluster(s.runner)
        if s.runner_kind == "optuna_tpe":
            from scaling_search.runners.optuna_tpe import run_tpe_search

            run_tpe_search(s, num_classes, make_runner(s), out)
        else:
            _run_grid(s, candidates, baseline, out)
    finally:
        if owns_ray:
            import ray

            ray.shutdown()
    return summarise(s, out)


def _run_grid(s: GridSettings, candidates: list[Candidate], baseline: Candidate | None, out) -> None:
    from scaling_search.study import distributions, open_study, record_trial, recorded_ids, storage_url

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
    atomic_write_text(s.out_dir / "search.json", json.dumps(search_identity(s), indent=1))
    _write_table(pd.DataFrame([{"candidate_id": k, **v} for k, v in columns.items()]),
                 s.out_dir / "candidates")
    store = TrialStore(s.out_dir)
    done = store.finished_ids()
    pending = [sp for sp in specs if sp.trial_id not in done]

    ranges = {"depth_coef": s.space.depth_range, "width_coef": s.space.width_range,
              "resolution_coef": s.space.resolution_range}
    dists = distributions({k: (min(float(lo), 1.0), float(hi)) for k, (lo, hi) in ranges.items()})
    study = study or open_study(url, s.study_name or s.out_dir.name)
    known = recorded_ids(study)

    def attrs(spec: TrialSpec) -> dict:
        col = columns[spec.candidate_id]
        return {k: col[k] for k in ("role", "macs", "params", "resolution_px", "macs_ratio")}

    for record in store.load():  # trials recorded before an interruption reached the study
        spec = TrialSpec.from_dict(record["spec"])
        if spec.candidate_id in columns:
            record_trial(study, spec, record["row"], record["history"], dists, attrs(spec), known)

    def on_result(spec: TrialSpec, row: dict, history: list[dict]) -> None:
        store.save(spec.to_dict(), row, history, columns[spec.candidate_id])
        record_trial(study, spec, row, history, dists, attrs(spec), known)

    runner = make_runner(s)
    print(f"{len(all_candidates)} networks x {len(s.seeds)} seed(s) = {len(specs)} trials; "
          f"{len(specs) - len(pending)} already done, {len(pending)} to run "
          f"({s.runner_kind} runner) -> {s.out_dir}", file=out, flush=True)
    progress = Progress(len(pending), runner.concurrency, len(specs) - len(pending), out)
    runner.run(pending, data, s.trainer, on_result, progress)
    ended = {r["spec"]["trial_id"] for r in store.load()}
    missing = [sp.trial_id for sp in specs if sp.trial_id not in ended]
    if missing:  # Ray Tune returns, rather than raises, when it is interrupted
        raise SearchInterrupted(f"{len(missing)} of {len(specs)} trials did not run")


def summarise(s: GridSettings, out=sys.stdout) -> SearchOutcome:
    """Builds every table from the records, freezes the winner and emits its Step-2 configs."""
    records = TrialStore(s.out_dir).load()
    results = results_frame(records)
    _write_table(results, s.out_dir / "results")
    _write_table(epochs_frame(records), s.out_dir / "epochs")
    failed = int((results["status"] == "failed").sum())
    if failed:
        print(f"{failed} trial(s) failed; their errors are in results.csv", file=out)
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
