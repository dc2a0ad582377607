"""``runner=optuna_tpe``: Optuna's TPE over continuous (α, β), with γ from the constraint.

γ = sqrt(target / (α·β²)) puts every sample exactly on α·β²·γ² = target. A sample whose γ
falls outside ``space.resolution_range`` is infeasible: it is told to the study with
``trial.set_constraint`` > 0 (TPE then learns to avoid the region) and is not trained. Feasible
samples are trained in batches through the chosen executor (Ray Tune by default), so several
run at once; TPE's constant liar keeps a batch's samples apart. The study lives in the RDB
storage, so a re-run continues it: trials it asked for but never heard back from are marked
failed, and sampling goes on until ``runner.n_trials`` trials have been trained.
"""

from __future__ import annotations

import math

import optuna

from scaling_search.models.backbones import get_backbone
from scaling_search.train.data import load_dataset
from scaling_search.train.progress import Progress
from scaling_search.analysis.results import TrialStore
from scaling_search.models.scaling import Coefficients, Multipliers
from scaling_search.plan.space import Candidate, candidate_id
from scaling_search.train.trial import FAILED, OK, TrialSpec, trial_id

MAX_INFEASIBLE_IN_A_ROW = 200


def gamma_from_constraint(alpha: float, beta: float, target: float) -> float:
    """γ with α·β²·γ² = target exactly."""
    return math.sqrt(target / (alpha * beta * beta))


def run_tpe_search(s, num_classes: int, runner, out) -> None:
    """Runs (or continues) a TPE search described by ``GridSettings`` ``s``."""
    from scaling_search.train.execution import write_identity
    from scaling_search.steps.step1 import IDENTITY_FILE, candidate_columns, search_identity, write_run_config
    from scaling_search.train.study import open_study, storage_url

    target = float(s.space.target)
    (a_lo, a_hi), (b_lo, b_hi) = s.space.depth_range, s.space.width_range
    g_lo, g_hi = (float(x) for x in s.space.resolution_range)
    bb = get_backbone(s.backbone)
    base = Multipliers(s.proxy_depth_mult, s.proxy_width_mult)
    base_cost = bb.scale(base, s.rounding, s.proxy_resolution_px).cost(num_classes)
    top_px = bb.scale(Multipliers(1, 1, g_hi), s.rounding, s.proxy_resolution_px).resolution_px
    data = load_dataset(s.data, top_px)

    sampler = optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=max(2, min(10, s.tpe_trials // 3)),
                                         multivariate=True, constant_liar=True)
    url, name = storage_url(s.study_storage, s.out_dir), s.study_name or s.out_dir.name
    study = open_study(url, name, sampler) if s.study_storage else None  # a bad server: nothing written
    s.out_dir.mkdir(parents=True, exist_ok=True)
    write_identity(s.out_dir, IDENTITY_FILE, search_identity(s))
    write_run_config(s)
    study = study or open_study(url, name, sampler)
    store = TrialStore(s.out_dir)
    runner.resume = False  # the study, not Ray's experiment, is what a TPE search resumes from
    for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(stale.number, state=optuna.trial.TrialState.FAIL)  # interrupted mid-training

    def trained() -> int:
        return sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get("trained"))

    done = trained()
    progress = Progress(max(0, s.tpe_trials - done), runner.concurrency, done, out)
    print(f"TPE: {done} of {s.tpe_trials} trials trained so far -> {s.out_dir}", file=out, flush=True)
    while (remaining := s.tpe_trials - trained()) > 0:
        batch: dict[str, tuple[optuna.Trial, dict]] = {}
        specs, infeasible = [], 0
        while len(specs) < min(runner.concurrency, remaining):
            t = study.ask()
            a = t.suggest_float("depth_coef", float(a_lo), float(a_hi))
            b = t.suggest_float("width_coef", float(b_lo), float(b_hi))
            g = gamma_from_constraint(a, b, target)
            t.set_user_attr("resolution_coef", g)
            violation = max(g_lo - g, g - g_hi, 0.0)
            t.set_constraint("resolution_coef_in_range", violation)
            if violation > 0:
                study.tell(t, 0.0)
                infeasible += 1
                if infeasible > MAX_INFEASIBLE_IN_A_ROW:
                    raise ValueError("TPE keeps sampling alpha, beta whose gamma lies outside "
                                     "space.resolution_range; widen the ranges")
                continue
            infeasible = 0
            model = bb.scale(Multipliers(base.depth_mult * a, base.width_mult * b, g), s.rounding,
                             s.proxy_resolution_px)
            cost = model.cost(num_classes)
            cid = candidate_id(a, b, g, 4)
            cand = Candidate(cid, Coefficients(a, b, g), a * b * b * g * g, model, cost,
                             cost.macs / base_cost.macs)
            spec = TrialSpec(f"{trial_id(s.backbone_tag, cid, s.seed)}_t{t.number}", cid, s.seed,
                             s.backbone, a, b, g, model.multipliers.depth_mult,
                             model.multipliers.width_mult, model.multipliers.resolution_mult,
                             s.proxy_resolution_px, s.rounding.__dict__, s.imports)
            batch[spec.trial_id] = (t, candidate_columns(cand))
            specs.append(spec)

        def on_result(spec: TrialSpec, row: dict, history: list[dict]) -> None:
            t, columns = batch[spec.trial_id]
            store.save(spec.to_dict(), row, history, columns)
            for h in history:
                t.report(float(h["val/top1"]), int(h["epoch"]))
            for k in ("trial_id", "candidate_id"):
                t.set_user_attr(k, getattr(spec, k))
            t.set_user_attr("macs", columns["macs"])
            t.set_user_attr("status", row["status"])
            t.set_user_attr("trained", True)
            if row["status"] == OK:
                study.tell(t, row["final_top1"])
            else:
                if row.get("error"):
                    t.set_user_attr("error", row["error"][:1000])
                study.tell(t, state=optuna.trial.TrialState.FAIL if row["status"] == FAILED
                           else optuna.trial.TrialState.PRUNED)

        runner.run(specs, data, s.trainer, on_result, progress)
