"""``python -m scaling_search.scale``: Step 2, the compound-scaled family as configs and tables.

For a backbone, α, β, γ and a list of φ it writes, atomically, to ``out_dir``:

- ``model/<backbone>_phi<φ>.yaml``: one Hydra-composable config per scaled model (compose it
  with ``+model=<name> hydra.searchpath=[file://<out_dir>]``),
- ``summary.csv`` / ``summary.md``: multipliers, resolution, params, MACs, activations, and the
  measured MACs ratio to the baseline beside the formula's (α·β²·γ²)^φ,
- ``published.csv`` / ``published.md`` (EfficientNet-B0 only): the formula's family beside the
  published B0–B7, with the φ each published model implies per dimension,
- ``coefficients.yaml`` and ``config.yaml`` (the resolved settings of this run).

Training the family is not done here.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from scaling_search.cli import run_hydra_app, user_errors
from scaling_search.config import ScaleSettings
from scaling_search.emit import (PUBLISHED_FORMATS, PUBLISHED_ON_CONSOLE, SUMMARY_FORMATS, markdown,
                                 write_family)

PROG = "scaling_search.scale"
log = logging.getLogger(PROG)


def emit(settings: ScaleSettings) -> Path:
    """Writes the family to ``settings.out_dir`` and prints its tables."""
    summary, published = write_family(settings, PROG)
    print(markdown(summary, SUMMARY_FORMATS))
    if published is not None:
        print(markdown(published[PUBLISHED_ON_CONSOLE], PUBLISHED_FORMATS))
    log.info("wrote %d model configs and the summary to %s", len(summary), settings.out_dir)
    return settings.out_dir


@hydra.main(version_base="1.3", config_path="../conf", config_name="scale")
def main(cfg: DictConfig) -> None:
    with user_errors(PROG):
        emit(ScaleSettings.from_dict(OmegaConf.to_container(cfg, resolve=True)))


if __name__ == "__main__":
    run_hydra_app(main, PROG, "scale", validate=ScaleSettings.from_dict)
