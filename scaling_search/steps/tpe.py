"""Step 1 by Optuna's TPE over continuous (α, β), with γ from the constraint (``runner=optuna_tpe``).

A search strategy beside the grid, on the same run pipeline (``steps.pipeline``): the run folder,
records, runners and tables are Step 1's own; only how candidates are chosen differs.

γ = sqrt(target / (α·β²)) puts every sample exactly on α·β²·γ² = target. A sample whose γ
falls outside ``space.resolution_range`` is infeasible: it is told to the study with
``trial.set_constraint`` > 0 (TPE then learns to avoid the region) and is not trained. Feasible
samples are trained in batches through the chosen runner (Ray Tune by default), so several
run at once; TPE's constant liar keeps a batch's samples apart. The study lives in the RDB
storage, so a re-run continues it: trials it asked for but never heard back from are marked
failed, and sampling goes on until ``n_trials`` trials have been trained. A runner that returns
before its batch ended (Ctrl-C under Ray Tune) stops the search: the unfinished samples are told
to the study as failed and ``RunInterrupted`` is raised.
"""

from __future__ import annotations

import math
import sys

import optuna

from scaling_search.models.backbones import get_backbone
from scaling_search.models.scaling import Coefficients, Multipliers, Rounding
from scaling_search.plan.space import Candidate, SearchSpace, candidate_id
from scaling_search.settings import DataSettings, TrainSettings
from scaling_search.steps.pipeline import RunFolder
from scaling_search.train.data import load_dataset
from scaling_search.train.execution import RunInterrupted
from scaling_search.train.progress import Progress
from scaling_search.train.records import TrialStore
from scaling_search.train.status import FAILED, OK
from scaling_search.train.trial import TrialSpec, trial_id

MAX_INFEASIBLE_IN_A_ROW = 200
ID_DECIMALS = 4  # a continuous sample's candidate id: d1.2346_w1.0712_r1.2210


def gamma_from_constraint(alpha: float, beta: float, target: float) -> float:
    """γ with α·β²·γ² = target exactly."""
    return math.sqrt(target / (alpha * beta * beta))


def run_tpe_search(run: RunFolder, config: dict, space: SearchSpace, runner, n_trials: int, *,
                   backbone: str, tag: str, base: Multipliers, resolution_px: int | None,
                   rounding: Rounding, num_classes: int, data: DataSettings, trainer: TrainSettings,
                   seed: int, imports: tuple[str, ...], study_storage: str | None,
                   study_name: str | None, out=sys.stdout) -> None:
    """Runs (or continues) TPE in ``run``'s folder until ``n_trials`` samples have been trained.

    Raises:
        RunInterrupted: the runner returned before a batch ended (Ctrl-C under Ray Tune).
    """
    target = float(space.target)
    (a_lo, a_hi), (b_lo, b_hi) = space.depth_range, space.width_range
    g_lo, g_hi = (float(x) for x in space.resolution_range)
    bb = get_backbone(backbone)
    base_cost = bb.scale(base, rounding, resolution_px).cost(num_classes)
    images = load_dataset(data, bb.scale(base * Multipliers(1, 1, g_hi), rounding, resolution_px).resolution_px, out)

    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, n_trials // 3)),
                                         multivariate=True, constant_liar=True)
    study = run.open(config, study_storage, study_name, sampler, out)
    store = TrialStore(run.out_dir)
    runner.resume = False  # the study, not Ray's experiment, is what a TPE search resumes from
    for stale in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(stale.number, state=optuna.trial.TrialState.FAIL)  # interrupted mid-training

    def trained() -> int:
        return sum(1 for t in study.get_trials(deepcopy=False) if t.user_attrs.get("trained"))

    done = trained()
    progress = Progress(max(0, n_trials - done), runner.concurrency, done, out)
    print(f"TPE: {done} of {n_trials} trials trained so far -> {run.out_dir}", file=out, flush=True)
    while (remaining := n_trials - trained()) > 0:
        batch: dict[str, tuple[optuna.Trial, dict]] = {}
        specs: list[TrialSpec] = []
        infeasible = 0
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
            coefficients = Coefficients(a, b, g)
            model = bb.scale(base * Multipliers(a, b, g), rounding, resolution_px)
            cost = model.cost(num_classes)
            cid = candidate_id(a, b, g, ID_DECIMALS)
            cand = Candidate(cid, coefficients, coefficients.product, model, cost, cost.macs / base_cost.macs)
            spec = TrialSpec.of(f"{trial_id(tag, cid, seed)}_t{t.number}", cid, seed, coefficients, model,
                                resolution_px, rounding, imports)
            batch[spec.trial_id] = (t, cand.columns())
            specs.append(spec)

        def on_result(spec: TrialSpec, row: dict, history: list[dict]) -> None:
            t, columns = batch.pop(spec.trial_id)
            store.save(spec.to_dict(), row, history, columns)
            _tell(study, t, spec, row, history, columns["macs"])

        runner.run(specs, images, trainer, on_result, progress)
        if batch:  # Ray Tune returns, rather than raises, when it is interrupted
            for t, _ in batch.values():
                t.set_user_attr("interrupted", True)
                study.tell(t, state=optuna.trial.TrialState.FAIL)
            raise RunInterrupted(f"{len(batch)} of {len(specs)} TPE samples of the batch did not finish")


def _tell(study: optuna.Study, t: optuna.Trial, spec: TrialSpec, row: dict, history: list[dict],
          macs: int) -> None:
    """One trained sample's outcome, into the study."""
    for h in history:
        t.report(float(h["val/top1"]), int(h["epoch"]))
    for k in ("trial_id", "candidate_id"):
        t.set_user_attr(k, getattr(spec, k))
    t.set_user_attr("macs", macs)
    t.set_user_attr("status", row["status"])
    t.set_user_attr("trained", True)
    if row["status"] == OK:
        study.tell(t, row["final_top1"])
        return
    if row.get("error"):
        t.set_user_attr("error", row["error"][:1000])
    study.tell(t, state=optuna.trial.TrialState.FAIL if row["status"] == FAILED
               else optuna.trial.TrialState.PRUNED)
