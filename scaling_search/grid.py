"""``python -m scaling_search.grid``: Step 1 of compound scaling as a Hydra app.

Composes ``conf/grid.yaml`` (groups backbone, data, space, trainer, runner, rounding and an
experiment preset) against its schema (``settings.GridConfig``), turns it once into a frozen
``GridSettings`` and runs the search (``steps.step1.run_search``). ``--multirun`` sweeps outer
axes (``seed=0,1,2 data=digits,synthetic``), one full search per job; ``multirun.SummaryCallback``
then compares their winners.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from scaling_search.cli import resumable, run_hydra_app, sweep_job, user_errors
from scaling_search.settings import GridSettings

PROG = "scaling_search.grid"


def validate(plain: dict) -> None:
    """Everything that can be checked before a search starts (used by the preflight)."""
    settings = GridSettings.from_config(plain)  # needs no torch: most bad input is answered here
    # Lazy here and below, for start-up time: --help, or an override that does not compose or
    # that the settings refuse, is answered before the search's modules (and torch) load.
    from scaling_search.steps.step1 import plan
    from scaling_search.train.runners.ray_tune import check_local_resources

    if settings.runner_kind != "local" and not settings.dry_run:  # a dry run trains nothing
        check_local_resources(settings.runner)
    plan(settings)


@hydra.main(version_base="1.3", config_path="conf", config_name="grid")
@sweep_job
def main(cfg: DictConfig) -> dict | None:
    from scaling_search.steps.step1 import SearchInterrupted, run_search

    with user_errors(PROG):
        settings = GridSettings.from_config(cfg)
    with resumable(PROG, settings.out_dir, (SearchInterrupted,)), user_errors(PROG):
        outcome = run_search(settings)
    if outcome is None:
        return None
    if settings.report:
        from scaling_search.analysis.report import report_after_run  # lazy: matplotlib, only for a report

        report_after_run(outcome.run_dir, PROG)
    return {"out_dir": str(outcome.run_dir), "backbone": settings.backbone, "data": settings.data.name,
            "seed": settings.seed, "winner": outcome.winner, "baseline": outcome.baseline,
            "trials": outcome.trials, "failed": outcome.failed}


if __name__ == "__main__":
    run_hydra_app(main, PROG, "grid", validate=validate)
