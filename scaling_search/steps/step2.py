"""Step 2 end to end: the scaled family and its single-dimension baselines, trained and compared.

The plan (``family.plan_family``) is written down first; then every member is trained with the
Step-1 trainer through the same runners (Ray Tune or local), recorded as it ends, mirrored into
the Optuna study, and the tables are rebuilt from the records alone, so an interrupted run
resumes where it stopped.

Output, in ``out_dir``: ``step2.json`` (what defines the run), ``members.csv``, ``configs/``
(the family's model configs, from the core's emitter), ``trials/``, ``results.parquet|csv``,
``epochs.parquet|csv``, ``family.csv|md`` (top-1 against MACs, params and activations per
member), ``comparison.csv|md`` (per φ: compound against each single dimension), ``optuna.db``
and ``ray/``.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd

from scaling_search.settings import ScaleSettings
from scaling_search.train.data import load_dataset, num_classes_of, train_image_count
from scaling_search.plan.emit import markdown, resolved_config, write_family
from scaling_search.train.execution import (check_identity, make_runner, ray_session, run_specs,
                                      write_identity, write_trial_tables)
from scaling_search.plan.family import COMPOUND, DIMENSIONS, METHODS, Member, plan_family
from scaling_search.files import atomic_output, atomic_write_text, plain
from scaling_search.analysis.results import rank
from scaling_search.models.scaling import Multipliers
from scaling_search.train.trial import TrialSpec, trial_id

IDENTITY_FILE = "step2.json"
MEMBER_KEYS = ("candidate_id", "role", "phi", "depth_scale", "width_scale", "resolution_scale",
               "resolution_px", "params", "macs", "activations", "macs_ratio", "target_macs",
               "macs_mismatch")
RESULT_COLUMNS = [*MEMBER_KEYS[:2], "trial_id", "seed", *MEMBER_KEYS[2:], "depth_mult", "width_mult",
                  "resolution_mult", "final_top1", "best_top1", "final_val_loss", "epochs", "status",
                  "error", "train_time_s", "images_per_s", "wall_time_s"]
FAMILY_FORMATS = {"phi": "{:g}", "depth_scale": "{:.3f}", "width_scale": "{:.3f}",
                  "resolution_scale": "{:.3f}", "params": "{:,}", "macs": "{:,}", "activations": "{:,}",
                  "macs_ratio": "{:.2f}", "target_macs": "{:,}", "macs_mismatch": "{:+.3f}",
                  "top1_mean": "{:.4f}", "top1_std": "{:.4f}", "top1_ci95": "{:.4f}",
                  "top1_per_mmacs": "{:.4f}", "train_macs": "{:.3e}"}


@dataclass(frozen=True)
class Step2Outcome:
    run_dir: Path
    family: pd.DataFrame | None  # one row per member (top-1 over seeds); None if nothing finished
    comparison: pd.DataFrame | None  # one row per φ > 0
    trials: int
    failed: int


def member_columns(m: Member) -> dict:
    """What a member's records, tables and plots carry (``role`` is its method)."""
    return {"candidate_id": m.member_id, "role": m.method, "phi": m.phi,
            "depth_scale": m.scale.depth_mult, "width_scale": m.scale.width_mult,
            "resolution_scale": m.scale.resolution_mult, "resolution_px": m.model.resolution_px,
            "params": m.cost.params, "macs": m.cost.macs, "activations": m.cost.activations,
            "macs_ratio": m.macs_ratio, "target_macs": m.target_macs, "macs_mismatch": m.macs_mismatch,
            "depth_mult": m.model.multipliers.depth_mult, "width_mult": m.model.multipliers.width_mult,
            "resolution_mult": m.model.multipliers.resolution_mult}


def plan(s: ScaleSettings) -> tuple[list[Member], int]:
    """The members and the class count; touches no file."""
    num_classes = num_classes_of(s.data)
    members = plan_family(s.backbone, s.coefficients, s.phis, s.baselines,
                          Multipliers(s.base_depth_mult, s.base_width_mult), s.resolution_px,
                          s.rounding, num_classes)
    return members, num_classes


def identity(s: ScaleSettings) -> dict:
    """The settings that decide what a Step-2 trial computes (φ and seeds may grow on a re-run)."""
    from dataclasses import asdict

    return plain({"backbone": s.backbone, "coefficients": asdict(s.coefficients),
                            "base": [s.base_depth_mult, s.base_width_mult, s.resolution_px],
                            "data": asdict(s.data), "rounding": asdict(s.rounding),
                            "trainer": {k: v for k, v in asdict(s.trainer).items() if k != "num_threads"}})


def specs_for(s: ScaleSettings, members: list[Member]) -> list[TrialSpec]:
    """One trial per (member, seed), the costliest first so the last to finish are short."""
    specs = []
    for m in sorted(members, key=lambda m: (-m.cost.macs, m.member_id)):
        c = m.per_phi_coefficients(s.coefficients)
        mult = m.model.multipliers
        specs += [TrialSpec(trial_id(s.tag, m.member_id, seed), m.member_id, seed, s.backbone,
                            c.depth_coef, c.width_coef, c.resolution_coef, mult.depth_mult,
                            mult.width_mult, mult.resolution_mult, s.resolution_px,
                            asdict(s.rounding), s.imports) for seed in s.seeds]
    return specs


def dry_run(s: ScaleSettings, members: list[Member], out=sys.stdout) -> pd.DataFrame:
    """Prints the members with the training compute they imply, and writes nothing."""
    df = pd.DataFrame([member_columns(m) for m in members])
    n_train = train_image_count(s.data)
    df["train_macs"] = 3 * df["macs"] * n_train * s.trainer.epochs * len(s.seeds)
    print(markdown(df[[*MEMBER_KEYS, "train_macs"]], FAMILY_FORMATS), file=out)
    print(f"{len(members)} networks, {len(s.seeds)} seed(s); about {df['train_macs'].sum():.3e} training "
          f"MACs over ~{n_train} training images x {s.trainer.epochs} epochs", file=out)
    return df


def train_family(s: ScaleSettings, out=sys.stdout) -> Step2Outcome | None:
    """Runs (or resumes) Step 2 as ``s`` describes and writes its tables; None for a dry run."""
    from scaling_search.train.execution import uses_ray
    from scaling_search.train.study import open_study, storage_url

    members, num_classes = plan(s)
    if s.dry_run:
        dry_run(s, members, out)
        return None
    check_identity(s.out_dir, IDENTITY_FILE, identity(s), "Step-2 run")
    columns = {m.member_id: member_columns(m) for m in members}
    specs = specs_for(s, members)
    with ray_session(s.runner, uses_ray(s.runner_kind)):
        data = load_dataset(s.data, max(m.model.resolution_px for m in members))
        url = storage_url(s.study_storage, s.out_dir)
        study = open_study(url, s.study_name or s.out_dir.name) if s.study_storage else None
        s.out_dir.mkdir(parents=True, exist_ok=True)
        write_identity(s.out_dir, IDENTITY_FILE, identity(s))
        _write_run_files(s, num_classes, columns)
        study = study or open_study(url, s.study_name or s.out_dir.name)
        run_specs(s.out_dir, specs, columns, data, s.trainer,
                  make_runner(s.runner_kind, s.runner, s.out_dir), study, _params,
                  _distributions(s), ("role", "phi", "macs", "params", "resolution_px", "macs_ratio"),
                  s.runner_kind, out, unit="networks")
    return summarise(s, out)


def _params(spec: TrialSpec) -> dict:
    method, _, phi = spec.candidate_id.partition("_phi")
    return {"method": method, "phi": float(phi.replace("p", ".").replace("m", "-"))}


def _distributions(s: ScaleSettings) -> dict:
    import optuna

    return {"method": optuna.distributions.CategoricalDistribution(list(METHODS)),
            "phi": optuna.distributions.FloatDistribution(min(s.phis), max(s.phis))}


def _write_run_files(s: ScaleSettings, num_classes: int, columns: dict[str, dict]) -> None:
    import json

    from omegaconf import OmegaConf

    from scaling_search.environment import capture

    write_family(replace(s, num_classes=num_classes, out_dir=s.out_dir / "configs"),
                 "scaling_search.scale")
    atomic_write_text(s.out_dir / "config.yaml", OmegaConf.to_yaml(resolved_config(s)))
    atomic_write_text(s.out_dir / "environment.json", json.dumps(capture(), indent=1))
    with atomic_output(s.out_dir / "members.csv") as tmp:
        pd.DataFrame(columns.values()).to_csv(tmp, index=False)


def comparison_frame(family: pd.DataFrame) -> pd.DataFrame:
    """Per φ > 0: each method's top-1 and MACs, the best single dimension, and compound's margin."""
    rows = []
    for phi, group in family[family["phi"] != 0].groupby("phi"):
        by = {r["role"]: r for _, r in group.iterrows()}
        if COMPOUND not in by:
            continue
        row = {"phi": phi, "compound_macs": by[COMPOUND]["macs"], "compound_top1": by[COMPOUND]["top1_mean"]}
        singles = {}
        for dim in DIMENSIONS:
            if dim in by:
                row[f"{dim}_macs"] = by[dim]["macs"]
                row[f"{dim}_top1"] = singles[dim] = by[dim]["top1_mean"]
        if singles:
            best = max(singles, key=singles.get)
            row.update(best_single=best, compound_margin=row["compound_top1"] - singles[best],
                       compound_wins=bool(row["compound_top1"] > singles[best]))
        rows.append(row)
    return pd.DataFrame(rows)


def summarise(s: ScaleSettings, out=sys.stdout) -> Step2Outcome:
    """Builds the tables from the records and prints the compound-vs-single verdict."""
    results, failed = write_trial_tables(s.out_dir, RESULT_COLUMNS, out)
    try:
        family = rank(results, keys=MEMBER_KEYS)
    except ValueError as e:
        print(f"no table: {e}", file=out)
        return Step2Outcome(s.out_dir, None, None, len(results), failed)
    family = family.sort_values(["phi", "role"], key=lambda c: c.map(_method_order) if c.name == "role" else c,
                                ignore_index=True)
    with atomic_output(s.out_dir / "family.csv") as tmp:
        family.to_csv(tmp, index=False)
    atomic_write_text(s.out_dir / "family.md", markdown(family, FAMILY_FORMATS))
    comparison = comparison_frame(family)
    with atomic_output(s.out_dir / "comparison.csv") as tmp:
        comparison.to_csv(tmp, index=False)
    formats = {c: "{:.4f}" for c in comparison if c.endswith("top1") or c == "compound_margin"}
    formats.update({c: "{:,.0f}" for c in comparison if c.endswith("macs")})
    atomic_write_text(s.out_dir / "comparison.md", markdown(comparison, formats))
    shown = ["candidate_id", "role", "phi", "resolution_px", "macs", "macs_ratio", "macs_mismatch",
             "top1_mean", "top1_std", "seeds"]
    print(markdown(family[shown], FAMILY_FORMATS), file=out)
    for _, r in comparison.iterrows():
        if "best_single" in r and isinstance(r["best_single"], str):
            verdict = "beats" if r["compound_wins"] else "does not beat"
            print(f"phi={r['phi']:g}: compound (top-1 {r['compound_top1']:.4f}) {verdict} the best single "
                  f"dimension, {r['best_single']} ({r[r['best_single'] + '_top1']:.4f}), at matched MACs",
                  file=out)
    print(f"Step-2 tables in {s.out_dir} (family.md, comparison.md)", file=out, flush=True)
    return Step2Outcome(s.out_dir, family, comparison, len(results), failed)


def _method_order(method: str) -> int:
    return METHODS.index(method) if method in METHODS else len(METHODS)
