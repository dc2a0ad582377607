"""``python -m scaling_search.fidelity run_dir=<a finished Step-1 run>``: proxy fidelity as a Hydra app.

Composes ``conf/fidelity.yaml`` against its schema (``settings.FidelityConfig``), turns it once
into a frozen ``FidelitySettings`` (the search's own settings, read from its ``config.yaml``,
with the longer budget applied) and retrains the search's top-k and a few random others
(``steps.fidelity.run_fidelity``). It writes ``fidelity.csv``, ``fidelity.md`` and
``plots/fidelity.png|svg`` into the search's folder and, with ``report=true``, rewrites its
``report.html`` with the fidelity section.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from scaling_search.cli import resumable, run_hydra_app, sweep_job, user_errors
from scaling_search.settings import FidelitySettings

PROG = "scaling_search.fidelity"


def validate(plain: dict) -> None:
    """Everything that can be checked before a fidelity run starts (used by the preflight)."""
    settings = FidelitySettings.from_config(plain)  # needs no torch: most bad input is answered here
    # Lazy, for start-up time: --help, or an override that does not compose or that the settings
    # refuse, is answered before the training modules (and torch) load.
    from scaling_search.steps.fidelity import plan
    from scaling_search.train.runners.ray_tune import check_local_resources

    if settings.runner_kind == "ray":
        check_local_resources(settings.runner)
    plan(settings)


@hydra.main(version_base="1.3", config_path="conf", config_name="fidelity")
@sweep_job
def main(cfg: DictConfig) -> dict | None:
    from scaling_search.steps.fidelity import run_fidelity
    from scaling_search.train.execution import RunInterrupted

    with user_errors(PROG):
        settings = FidelitySettings.from_config(cfg)
    with resumable(PROG, settings.out_dir, (RunInterrupted,)), user_errors(PROG):
        outcome = run_fidelity(settings)
    if settings.report:
        from scaling_search.analysis.report import report_after_run  # lazy: matplotlib, only for a report

        report_after_run(outcome.run_dir, PROG)
    a = outcome.agreement
    return {"run_dir": str(outcome.run_dir), "out_dir": str(settings.out_dir), "candidates": a["n"],
            "kendall_tau": a["kendall_tau"], "spearman_rho": a["spearman_rho"], "winner_rank": outcome.winner_rank,
            "trials": outcome.trials, "failed": outcome.failed}


if __name__ == "__main__":
    run_hydra_app(main, PROG, "fidelity", validate=validate)
