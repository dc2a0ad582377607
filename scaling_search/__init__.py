"""scaling_search: EfficientNet-style compound model scaling (Tan & Le, arXiv:1905.11946).

The public Python API is what this module exports (``__all__``); the subpackages behind it may
move. The pipeline flows one way through them:

    models/    coefficients, rounding, stage tables, backbones, networks, cost
    plan/      what to train: Step 1's candidates, Step 2's family, emitted configs
    settings   the typed, schema-checked settings of both apps
    train/     data, trainer, one trial, runners, the Optuna study, a run folder's records
    analysis/  results tables, ranking, plots, the HTML report
    steps/     Step 1 (grid or TPE) and Step 2 end to end, on one shared run pipeline
    cli.py, grid.py, scale.py, report.py, multirun.py: the command-line apps

Every name is imported on first use (PEP 562), so ``import scaling_search`` and the apps that
need no network (``python -m scaling_search.report``) do not pay for torch or matplotlib.
"""

from importlib import import_module

__version__ = "0.1.0"

_WHERE = {
    "Backbone": "models.backbones", "ScaledModel": "models.backbones", "get_backbone": "models.backbones",
    "import_plugins": "models.backbones", "list_backbones": "models.backbones",
    "register_backbone": "models.backbones", "unregister_backbone": "models.backbones",
    "Cost": "models.cost", "count_cost": "models.cost", "estimate_cost": "models.cost",
    "PAPER_COEFFICIENTS": "models.scaling", "REFERENCE_ROUNDING": "models.scaling",
    "Coefficients": "models.scaling", "Multipliers": "models.scaling", "Rounding": "models.scaling",
    "ScaledNetwork": "models.stages", "Stage": "models.stages", "StageTable": "models.stages",
    "scale_table": "models.stages", "model_from_config": "plan.emit", "plots": "analysis",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'scaling_search' has no attribute {name!r}")
    value = getattr(import_module(f"scaling_search.{_WHERE[name]}"), name) if name != "plots" else \
        import_module("scaling_search.analysis.plots")
    globals()[name] = value  # once found, a plain attribute
    return value


def __dir__() -> list[str]:
    return [*globals(), *__all__]
