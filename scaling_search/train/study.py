"""Every trial of a search, recorded in an Optuna study in an RDB storage.

The default storage is a SQLite file in the run's folder (``sqlite:///<run>/optuna.db``); any
SQLAlchemy URL works (``postgresql+psycopg2://user@host/db`` for many machines). The study
opens in optuna-dashboard (``optuna-dashboard sqlite:///<run>/optuna.db``). Grid trials are
added as finished trials with their per-epoch top-1 as intermediate values. Recording is
idempotent by ``trial_id``: a trial the study already holds with the same outcome (complete,
failed or pruned) is not added again, whether a resumed search re-records it or another driver
(another machine's run folder, with the same seed, on a shared storage) added it meanwhile.
"""

from __future__ import annotations

import time

import optuna
import sqlalchemy.exc

from scaling_search.train.status import FAILED, OK
from scaling_search.train.trial import TrialSpec

optuna.logging.set_verbosity(optuna.logging.WARNING)

PARAMS = ("depth_coef", "width_coef", "resolution_coef")


def _lost_the_race(e: sqlalchemy.exc.DBAPIError) -> bool:
    """Another process created a table between this one's check and its CREATE: PostgreSQL says
    so with an IntegrityError on its catalog, SQLite with "table trials already exists"."""
    return isinstance(e, sqlalchemy.exc.IntegrityError) or "already exists" in str(e)


CONNECT_TIMEOUT_S = 20  # a server that accepts but never answers is named, not waited on forever


def _engine_kwargs(url: str) -> dict:
    """A connect timeout for a database server (PostgreSQL's libpq and MySQL's drivers take
    ``connect_timeout`` in seconds); SQLite, a file, needs none."""
    return {} if url.startswith("sqlite") else {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}}


def _storage(url: str, attempts: int = 5) -> optuna.storages.RDBStorage:
    """Processes opening a new database at once race to create Optuna's tables (neither
    PostgreSQL's CREATE TABLE IF NOT EXISTS nor SQLAlchemy's check-then-create is atomic); a
    loser's error is retried, and finds the tables made."""
    for attempt in range(1, attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
        except sqlalchemy.exc.DBAPIError as e:
            if not _lost_the_race(e):
                raise
            time.sleep(0.1 * attempt)
    return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))


def open_study(url: str, name: str, sampler: optuna.samplers.BaseSampler | None = None) -> optuna.Study:
    """Creates or loads the study ``name`` (maximising validation top-1)."""
    try:
        storage = _storage(url)
    except Exception as e:  # noqa: BLE001 - a bad URL or an unreachable server
        raise ValueError(f"cannot open the Optuna storage {url!r}: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}") from None
    return optuna.create_study(storage=storage, study_name=name, direction="maximize",
                               sampler=sampler, load_if_exists=True)


def recorded_ids(study: optuna.Study) -> set[tuple[str, str]]:
    """What the study holds, as ``(trial_id, state)`` of its finished trials (the key that
    ``record_trial`` adds a trial under at most once)."""
    return {(t.user_attrs["trial_id"], t.state.name) for t in study.get_trials(deepcopy=False)
            if "trial_id" in t.user_attrs and t.state.is_finished()}


def distributions(ranges: dict[str, tuple[float, float]]) -> dict:
    return {k: optuna.distributions.FloatDistribution(float(lo), float(hi))
            for k, (lo, hi) in ranges.items()}


def grid_params(spec: TrialSpec) -> dict:
    """A Step-1 trial's parameters: its α, β, γ."""
    return {k: getattr(spec, k) for k in PARAMS}


def record_trial(study: optuna.Study, spec: TrialSpec, row: dict, history: list[dict],
                 params: dict, dists: dict, attrs: dict, known: set[tuple[str, str]]) -> None:
    """Adds one ended trial: complete with its top-1, pruned when stopped early, or failed;
    unless the study already holds it with that outcome.

    ``known`` (from ``recorded_ids``) is what this driver has seen; a trial not in it is looked
    up in the study once more just before it is added, since a driver on another machine may
    have added the same trial (same seed, shared storage) after this one started. A failed
    trial that trains again and completes is added beside its failure, as Optuna records a
    retried trial. Numeric ``params`` are clipped into their distribution (the baseline's 1.0
    may lie below a range's low end)."""
    state = {OK: optuna.trial.TrialState.COMPLETE, FAILED: optuna.trial.TrialState.FAIL}.get(
        row["status"], optuna.trial.TrialState.PRUNED)
    key = (spec.trial_id, state.name)
    if key in known:
        return
    known |= recorded_ids(study)
    if key in known:
        return
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
    known.add(key)
