"""``python -m scaling_search.scale``: Step 2, the compound-scaled family: configs, and training.

For a backbone, α, β, γ (``coefficients.*`` or a Step-1 ``coefficients_file``) and a list of
φ it writes, atomically, to ``out_dir``:

- ``model/<backbone>_phi<φ>.yaml``: one Hydra-composable config per scaled model (compose it
  with ``+model=<name> hydra.searchpath=[file://<out_dir>]``),
- ``summary.csv`` / ``summary.md``: multipliers, resolution, params, MACs, activations, and the
  measured MACs ratio to the baseline beside the formula's (α·β²·γ²)^φ,
- ``published.csv`` / ``published.md`` (EfficientNet-B0 only): the formula's family beside the
  published B0–B7, with the φ each published model implies per dimension,
- ``coefficients.yaml`` and ``config.yaml`` (the resolved settings of this run).

With ``train=true`` it trains the family, and the single-dimension ``baselines`` matched to
each member's MACs, on ``data`` with the Step-1 trainer and runners (``step2.train_family``);
the configs then go to ``out_dir/configs``. Either way a ``report.html`` is written last.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from scaling_search.cli import resumable, run_hydra_app, sweep_job, user_errors
from scaling_search.plan.emit import PUBLISHED_FORMATS, PUBLISHED_ON_CONSOLE, SUMMARY_FORMATS
from scaling_search.settings import ScaleSettings
from scaling_search.steps.emission import emit_family
from scaling_search.tables import markdown

PROG = "scaling_search.scale"
log = logging.getLogger(PROG)


def emit(settings: ScaleSettings) -> Path:
    """Writes the family to ``settings.out_dir`` and prints its tables."""
    summary, published = emit_family(settings, PROG)
    print(markdown(summary, SUMMARY_FORMATS))
    if published is not None:
        print(markdown(published[PUBLISHED_ON_CONSOLE], PUBLISHED_FORMATS))
    log.info("wrote %d model configs and the summary to %s", len(summary), settings.out_dir)
    return settings.out_dir


def validate(plain: dict) -> None:
    """Everything that can be checked before a run starts (used by the preflight)."""
    settings = ScaleSettings.from_config(plain)
    # Lazy here and below, for start-up time: emission alone never loads the training modules.
    if settings.train and not settings.dry_run:
        from scaling_search.train.runners.ray_tune import check_local_resources

        if settings.runner_kind == "ray":
            check_local_resources(settings.runner)
    if settings.train or settings.dry_run:
        from scaling_search.steps.step2 import plan

        plan(settings)


@hydra.main(version_base="1.3", config_path="conf", config_name="scale")
@sweep_job
def main(cfg: DictConfig) -> dict | None:
    with user_errors(PROG):
        settings = ScaleSettings.from_config(cfg)
    if settings.coefficients_source:
        c = settings.coefficients
        print(f"coefficients from {settings.coefficients_source}: alpha={c.depth_coef:g} "
              f"beta={c.width_coef:g} gamma={c.resolution_coef:g}", flush=True)
    if not (settings.train or settings.dry_run):
        with user_errors(PROG):
            emit(settings)
            if settings.report:
                _report(settings.out_dir)
        return None  # nothing for a multirun summary: emission trains nothing
    from scaling_search.steps.step2 import train_family
    from scaling_search.train.execution import RunInterrupted

    with resumable(PROG, settings.out_dir, (RunInterrupted,)), user_errors(PROG):
        outcome = train_family(settings)
    if outcome is None:
        return None
    if settings.report:
        _report(outcome.run_dir)
    comparison = [] if outcome.comparison is None else outcome.comparison.to_dict("records")
    return {"step": 2, "out_dir": str(outcome.run_dir), "backbone": settings.backbone,
            "data": settings.data.name, "seed": settings.seed, "trials": outcome.trials,
            "failed": outcome.failed, "comparison": comparison}


def _report(run_dir: Path) -> None:
    from scaling_search.analysis.report import report_after_run  # lazy: matplotlib, only for a report

    report_after_run(run_dir, PROG)


if __name__ == "__main__":
    run_hydra_app(main, PROG, "scale", validate=validate)
