"""Every trial of a search, recorded in an Optuna study in an RDB storage.

The default storage is a SQLite file in the run's folder (``sqlite:///<run>/optuna.db``); any
SQLAlchemy URL works (``postgresql+psycopg2://user@host/db`` for many machines). The study
opens in optuna-dashboard (``optuna-dashboard sqlite:///<run>/optuna.db``). Grid trials are
added as finished trials with their per-epoch top-1 as intermediate values; a trial already
in the study (by ``trial_id``) is not added twice, so a resumed search leaves no duplicates.
"""

from __future__ import annotations

import time

import optuna
import sqlalchemy.exc

from scaling_search.train.status import FAILED, OK
from scaling_search.train.trial import TrialSpec

optuna.logging.set_verbosity(optuna.logging.WARNING)

PARAMS = ("depth_coef", "width_coef", "resolution_coef")


def _storage(url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    """Processes opening a new database at once race to create Optuna's tables (PostgreSQL's
    CREATE TABLE IF NOT EXISTS is not atomic); a loser's IntegrityError is retried, and finds
    the tables made."""
    for attempt in range(1, attempts):
        try:
            return optuna.storages.RDBStorage(url)
        except sqlalchemy.exc.IntegrityError:
            time.sleep(0.1 * attempt)
    return optuna.storages.RDBStorage(url)


def open_study(url: str, name: str, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    """Creates or loads the study ``name`` (maximising validation top-1)."""
    try:
        storage = _storage(url)
    except Exception as e:  # noqa: BLE001 - a bad URL or an unreachable server
        raise ValueError(f"cannot open the Optuna storage {url!r}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}") from None
    return optuna.create_study(storage=storage, study_name=name, direction="maximize",
                               sampler=sampler, load_if_exists=True)


def recorded_ids(study: optuna.Study) -> set[str]:
    return {t.user_attrs["trial_id"] for t in study.get_trials(deepcopy=False)
            if "trial_id" in t.user_attrs}


def distributions(ranges: dict[str, tuple[float, float]]) -> dict:
    return {k: optuna.distributions.FloatDistribution(float(lo), float(hi))
            for k, (lo, hi) in ranges.items()}


def grid_params(spec: TrialSpec) -> dict:
    """A Step-1 trial's parameters: its α, β, γ."""
    return {k: getattr(spec, k) for k in PARAMS}


def record_trial(study: optuna.Study, spec: TrialSpec, row: dict, history: list[dict],
                 params: dict, dists: dict, attrs: dict, known: set[str]) -> None:
    """Adds one ended trial: complete with its top-1, pruned when stopped early, or failed.

    Numeric ``params`` are clipped into their distribution (the baseline's 1.0 may lie below a
    range's low end)."""
    if spec.trial_id in known:
        return
    state = {OK: optuna.trial.TrialState.COMPLETE, FAILED: optuna.trial.TrialState.FAIL}.get(
        row["status"], optuna.trial.TrialState.PRUNED)
    params = {k: min(max(v, dists[k].low), dists[k].high)
              if isinstance(dists[k], optuna.distributions.FloatDistribution) else v
              for k, v in params.items()}
    user_attrs = {"trial_id": spec.trial_id, "candidate_id": spec.candidate_id, "seed": spec.seed,
                  "status": row["status"], **attrs}
    if row.get("error"):
        user_attrs["error"] = row["error"][:1000]
    study.add_trial(optuna.trial.create_trial(
        state=state, value=row.get("final_top1") if state == optuna.trial.TrialState.COMPLETE else None,
        params=params, distributions=dists, user_attrs=user_attrs,
        intermediate_values={int(h["epoch"]): float(h["val/top1"]) for h in history}))
    known.add(spec.trial_id)
