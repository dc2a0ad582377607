"""Step 2 end to end: the scaled family and the scaling rules it is compared with, trained and compared.

The plan (``plan.family.plan_family``) is written down first; then every member goes through
Step 1's run pipeline (``steps.pipeline``): trained with the same trainer and runners (Ray Tune
or local), recorded as it ends, mirrored into the Optuna study, and the tables are rebuilt from
the records alone, so an interrupted run resumes where it stopped.

Output, in ``out_dir``: ``step2.json`` (what defines the run), ``members.csv``, ``configs/``
(the family's model configs, from the emitter), ``trials/``, ``results.parquet|csv``,
``epochs.parquet|csv``, ``family.csv|md`` (top-1 against MACs, params and activations per
member), ``verdicts.csv|md`` (per φ and rule: compound beats, ties or loses, by a paired 95%
interval over seeds, or over the validation images with one seed; flagged where the two
networks' MACs differ by more than ``macs_tolerance``), ``comparison.csv|md`` (per φ, one row:
every rule's top-1 and MACs, the best single dimension and the best rule of all),
``optuna.db`` and ``ray/``.

Each member trains with the dropout (and drop-path) the run's ``regularisation`` sets for its
φ's cost (``plan.rules.Regularisation``), carried to the trial in its spec.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import optuna
import pandas as pd

from scaling_search.analysis.results import compare, correctness, rank
from scaling_search.files import plain
from scaling_search.models.scaling import Multipliers
from scaling_search.plan.emit import write_family
from scaling_search.plan.family import COMPOUND, DIMENSIONS, METHODS, Member, plan_family
from scaling_search.settings import ScaleSettings
from scaling_search.steps.pipeline import (
    RunFolder,
    check_apart,
    collect,
    data_identity,
    launch,
    trial_specs,
    with_training_macs,
)
from scaling_search.tables import markdown, paired_verdict, verdict_line, write_table
from scaling_search.train.data import num_classes_of, train_image_count
from scaling_search.train.execution import RunFailed, ray_session, trainer_identity, uses_ray
from scaling_search.train.records import TrialStore
from scaling_search.train.status import OK

IDENTITY_FILE = "step2.json"
# What a Step-2 run writes into its folder besides what every run folder holds (pipeline.RUN_FILES).
OUTPUTS = ("members.csv", "configs", "family.csv", "family.md", "comparison.csv", "comparison.md",
           "verdicts.csv", "verdicts.md")
MEMBER_KEYS = ("candidate_id", "role", "phi", "depth_scale", "width_scale", "resolution_scale",
               "resolution_px", "params", "macs", "activations", "macs_ratio", "target_macs",
               "macs_mismatch")
RESULT_COLUMNS = [*MEMBER_KEYS[:2], "trial_id", "seed", *MEMBER_KEYS[2:], "depth_mult", "width_mult",
                  "resolution_mult", "final_top1", "best_top1", "final_val_loss", "epochs", "status",
                  "error", "setup_time_s", "train_time_s", "images_per_s", "wall_time_s", "peak_gpu_mib",
                  "step", "node", "node_id"]
FAMILY_FORMATS = {"phi": "{:g}", "depth_scale": "{:.3f}", "width_scale": "{:.3f}",
                  "resolution_scale": "{:.3f}", "params": "{:,}", "macs": "{:,}", "activations": "{:,}",
                  "macs_ratio": "{:.2f}", "target_macs": "{:,}", "macs_mismatch": "{:+.3f}",
                  "top1_mean": "{:.4f}", "top1_std": "{:.4f}", "top1_ci95": "{:.4f}",
                  "top1_per_mmacs": "{:.4f}", "train_macs": "{:.3e}"}
STUDY_ATTRS = ("role", "phi", "macs", "params", "resolution_px", "macs_ratio")
VERDICT_COLUMNS = ["phi", "rule", "compound_top1", "rule_top1", "diff", "diff_lo", "diff_hi", "p_mcnemar",
                   "paired_by", "verdict", "compound_macs", "rule_macs", "macs_mismatch", "macs_flag",
                   "macs_tolerance"]
VERDICT_FORMATS = {"phi": "{:g}", "compound_top1": "{:.4f}", "rule_top1": "{:.4f}", "diff": "{:+.4f}",
                   "diff_lo": "{:+.4f}", "diff_hi": "{:+.4f}", "p_mcnemar": "{:.3g}", "compound_macs": "{:,}",
                   "rule_macs": "{:,}", "macs_mismatch": "{:+.1%}"}


@dataclass(frozen=True)
class Step2Outcome:
    run_dir: Path
    family: pd.DataFrame  # one row per member (top-1 over seeds)
    comparison: pd.DataFrame  # one row per φ > 0
    verdicts: pd.DataFrame  # one row per (φ > 0, rule)
    trials: int
    failed: int


def plan(s: ScaleSettings) -> tuple[list[Member], int]:
    """The members and the class count; touches no file."""
    num_classes = num_classes_of(s.data)
    members = plan_family(s.backbone, s.coefficients, s.phis, s.baselines,
                          Multipliers(s.base_depth_mult, s.base_width_mult), s.resolution_px,
                          s.rounding, num_classes, s.regularisation)
    return members, num_classes


def identity(s: ScaleSettings) -> dict:
    """The settings that decide what a Step-2 trial computes (φ and seeds may grow on a re-run;
    the rules compared may not: the run's study and tables are built for its set of rules)."""
    return plain({"backbone": s.backbone, "coefficients": asdict(s.coefficients),
                  "baselines": [asdict(r) for r in s.baselines],
                  "base": [s.base_depth_mult, s.base_width_mult, s.resolution_px],
                  "data": data_identity(s.data), "rounding": asdict(s.rounding),
                  "regularisation": s.regularisation.as_dict(),
                  "trainer": trainer_identity(s.trainer)})


def dry_run(s: ScaleSettings, members: list[Member], out=sys.stdout) -> pd.DataFrame:
    """Prints the members with the training compute they imply, and writes nothing."""
    n_train = train_image_count(s.data)
    df = with_training_macs(pd.DataFrame([m.columns() for m in members]), n_train, s.trainer.epochs,
                            len(s.seeds))
    print(markdown(df[[*MEMBER_KEYS, "train_macs"]], FAMILY_FORMATS), file=out)
    print(f"{len(members)} networks, {len(s.seeds)} seed(s); about {df['train_macs'].sum():.3e} training "
          f"MACs over ~{n_train} training images x {s.trainer.epochs} epochs", file=out)
    return df


def run_folder(s: ScaleSettings) -> RunFolder:
    """The run's folder, once it is known to be apart from the data and missing, empty or this
    Step-2 run's own; touches no file (the apps' preflight runs it for every job of a sweep)."""
    check_apart(s.out_dir, s.data.root)
    run = RunFolder(s.out_dir, IDENTITY_FILE, identity(s), "Step-2 run", OUTPUTS)
    run.check()
    return run


def train_family(s: ScaleSettings, out=sys.stdout) -> Step2Outcome | None:
    """Runs (or resumes) Step 2 as ``s`` describes and writes its tables; None for a dry run."""
    members, _ = plan(s)
    if s.dry_run:
        dry_run(s, members, out)
        return None
    run = run_folder(s)
    columns = {m.member_id: m.columns() for m in members}
    # The costliest first, so that the last trials to finish are short ones.
    by_cost = sorted(members, key=lambda m: (-m.cost.macs, m.member_id))
    specs = trial_specs(s.tag, [(m.member_id, m.per_phi_coefficients(s.coefficients), m.model) for m in by_cost],
                        s.seeds, s.resolution_px, s.rounding, s.imports)
    # The trial rebuilds its network from the spec: the regularisation goes with it.
    nets = {m.member_id: m.model.network for m in members}
    specs = [sp if (net := nets[sp.candidate_id]) is None else
             replace(sp, dropout=net.dropout, drop_path=net.drop_path) for sp in specs]
    config = plain(asdict(s))

    def write_plan(out_dir: Path, num_classes: int) -> None:
        compound = [m for m in members if m.method == COMPOUND]
        write_family(out_dir / "configs", compound, s.coefficients, s.rounding, num_classes, s.resolution_px,
                     Multipliers(s.base_depth_mult, s.base_width_mult), config, s.compare_published,
                     "scaling_search.scale")
        write_table(pd.DataFrame(columns.values()), out_dir / "members")

    def params_of(spec) -> dict:
        return {"method": columns[spec.candidate_id]["role"], "phi": columns[spec.candidate_id]["phi"]}

    with run:  # the folder's lock, held to the last table
        with ray_session(s.runner, uses_ray(s.runner_kind)):
            launch(run, config, specs, columns, data=s.data, trainer=s.trainer, runner_kind=s.runner_kind,
                   runner=s.runner, study_storage=s.study_storage, study_name=s.study_name, params_of=params_of,
                   distributions=_distributions(s.phis, [COMPOUND, *(r.name for r in s.baselines)]),
                   study_attrs=STUDY_ATTRS, write_plan=write_plan, out=out)
        return summarise(s.out_dir, out, s.macs_tolerance)


def _distributions(phis: Sequence[float], methods: Sequence[str]) -> dict:
    return {"method": optuna.distributions.CategoricalDistribution(list(methods)),
            "phi": optuna.distributions.FloatDistribution(min(phis), max(phis))}


def comparison_frame(family: pd.DataFrame) -> pd.DataFrame:
    """Per φ > 0: each method's top-1 and MACs; the best single dimension and compound's margin
    over it (the paper's comparison); and the best of every rule and compound's margin over that."""
    rows = []
    for phi, group in family[family["phi"] != 0].groupby("phi"):
        by = {r["role"]: r for _, r in group.iterrows()}
        if COMPOUND not in by:
            continue
        row = {"phi": phi, "compound_macs": by[COMPOUND]["macs"], "compound_top1": by[COMPOUND]["top1_mean"]}
        others = {}
        for method in sorted((m for m in by if m != COMPOUND), key=_method_order):
            row[f"{method}_macs"] = by[method]["macs"]
            row[f"{method}_top1"] = others[method] = by[method]["top1_mean"]
        singles = {m: v for m, v in others.items() if m in DIMENSIONS}
        if singles:
            best = max(singles, key=singles.get)
            row.update(best_single=best, compound_margin=row["compound_top1"] - singles[best],
                       compound_wins=bool(row["compound_top1"] > singles[best]))
        if others:
            best = max(others, key=others.get)
            row.update(best_rule=best, compound_rule_margin=row["compound_top1"] - others[best],
                       compound_beats_every_rule=bool(row["compound_top1"] > others[best]))
        rows.append(row)
    return pd.DataFrame(rows)


def verdicts_frame(family: pd.DataFrame, results: pd.DataFrame, correct: dict,
                   macs_tolerance: float) -> pd.DataFrame:
    """Per φ > 0 and rule: compound's top-1 minus the rule's (``diff``), paired (``results.compare``:
    over the seeds both trained, or over the validation images of one seed) with its 95%
    interval; ``verdict`` beats, ties or loses; and the two networks' measured MACs, with
    ``macs_flag`` where they differ by more than ``macs_tolerance`` (a rounding step can make a
    rule's network jump past the compound one's cost: such a verdict is not at matched MACs)."""
    rows = []
    for phi, group in family[family["phi"] != 0].groupby("phi"):
        by = {r["role"]: r for _, r in group.iterrows()}
        if COMPOUND not in by:
            continue
        c = by[COMPOUND]
        for method in sorted((m for m in by if m != COMPOUND), key=_method_order):
            r = by[method]
            pair = compare(results, correct, c["candidate_id"], r["candidate_id"])
            diff = pair["diff"] if pair["tied"] is not None else c["top1_mean"] - r["top1_mean"]
            mismatch = r["macs"] / c["macs"] - 1
            rows.append({"phi": phi, "rule": method, "compound_top1": c["top1_mean"], "rule_top1": r["top1_mean"],
                         "diff": diff, "diff_lo": pair["lo"], "diff_hi": pair["hi"], "p_mcnemar": pair["p"],
                         "paired_by": pair["by"], "verdict": paired_verdict(diff, pair["tied"]),
                         "compound_macs": int(c["macs"]), "rule_macs": int(r["macs"]), "macs_mismatch": mismatch,
                         "macs_flag": bool(abs(mismatch) > macs_tolerance),
                         "macs_tolerance": macs_tolerance})
    return pd.DataFrame(rows, columns=VERDICT_COLUMNS)


def summarise(out_dir: Path, out=sys.stdout, macs_tolerance: float = 0.05) -> Step2Outcome:
    """Builds the tables from the records and prints compound's paired verdict against each rule."""
    results, failed = collect(out_dir, RESULT_COLUMNS, out)
    if not (results["status"] == OK).any():
        raise RunFailed(f"every one of the {len(results)} trials failed; no table was written; "
                        f"the errors are in {out_dir / 'results.csv'}")
    family = rank(results, keys=MEMBER_KEYS)
    family = family.sort_values(["phi", "role"], key=lambda c: c.map(_method_order) if c.name == "role" else c,
                                ignore_index=True)
    write_table(family, out_dir / "family", FAMILY_FORMATS)
    comparison = comparison_frame(family)
    formats = {c: "{:.4f}" for c in comparison if c.endswith(("top1", "margin"))}
    formats.update({c: "{:,.0f}" for c in comparison if c.endswith("macs")})
    write_table(comparison, out_dir / "comparison", formats)
    verdicts = verdicts_frame(family, results, correctness(TrialStore(out_dir).load()), macs_tolerance)
    write_table(verdicts, out_dir / "verdicts", VERDICT_FORMATS)
    shown = ["candidate_id", "role", "phi", "resolution_px", "macs", "macs_ratio", "macs_mismatch",
             "top1_mean", "top1_std", "seeds"]
    print(markdown(family[shown], FAMILY_FORMATS), file=out)
    for v in verdicts.to_dict("records"):
        print(verdict_line(v), file=out)
    flagged = int(verdicts["macs_flag"].sum()) if len(verdicts) else 0
    if flagged:
        print(f"{flagged} of {len(verdicts)} verdicts compare networks whose MACs differ by more than "
              f"{macs_tolerance:.0%} (macs_flag in verdicts.csv)", file=out)
    print(f"Step-2 tables in {out_dir} (family.md, verdicts.md, comparison.md)", file=out, flush=True)
    return Step2Outcome(out_dir, family, comparison, verdicts, len(results), failed)


def _method_order(method: str) -> str:
    """The paper's methods in their order (compound, depth, width, resolution), then the others by name."""
    return f"{METHODS.index(method) if method in METHODS else len(METHODS)}:{method}"
