"""scaling_search: EfficientNet-style compound model scaling (Tan & Le, arXiv:1905.11946).

The public Python API is what this module exports (``__all__``); the subpackages behind it may
move. The pipeline flows one way through them:

    models/    coefficients, rounding, stage tables, backbones, networks, cost
    plan/      what to train: Step 1's candidates, Step 2's family, emitted configs
    train/     data, trainer, one trial, runners, the Optuna study, a run folder's records
    analysis/  results tables, ranking, plots, the HTML report
    steps/     Step 1 (grid or TPE) and Step 2 end to end, on one shared run pipeline
    settings.py, cli.py, grid.py, scale.py, report.py, multirun.py: the command-line apps
"""

from scaling_search.models.backbones import (
    Backbone,
    ScaledModel,
    get_backbone,
    import_plugins,
    list_backbones,
    register_backbone,
    unregister_backbone,
)
from scaling_search.models.cost import Cost, count_cost, estimate_cost
from scaling_search.models.scaling import (
    PAPER_COEFFICIENTS,
    REFERENCE_ROUNDING,
    Coefficients,
    Multipliers,
    Rounding,
)
from scaling_search.models.stages import ScaledNetwork, Stage, StageTable, scale_table

__version__ = "0.1.0"

__all__ = [
    "PAPER_COEFFICIENTS", "REFERENCE_ROUNDING", "Backbone", "Coefficients", "Cost", "Multipliers",
    "Rounding", "ScaledModel", "ScaledNetwork", "Stage", "StageTable", "count_cost", "estimate_cost",
    "get_backbone", "import_plugins", "list_backbones", "model_from_config", "plots",
    "register_backbone", "scale_table", "unregister_backbone",
]


def __getattr__(name: str):
    # Lazy, for start-up time: `plots` imports matplotlib and `model_from_config` pandas and
    # OmegaConf, which the command-line apps and a plain `import scaling_search` do not need.
    if name == "plots":
        from scaling_search.analysis import plots

        return plots
    if name == "model_from_config":
        from scaling_search.plan.emit import model_from_config

        return model_from_config
    raise AttributeError(f"module 'scaling_search' has no attribute {name!r}")
