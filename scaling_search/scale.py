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
from dataclasses import asdict
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from scaling_search.backbones import get_backbone
from scaling_search.cli import run_hydra_app, user_errors
from scaling_search.config import ScaleSettings
from scaling_search.emit import model_config, published_comparison, scale_family, summary_frame
from scaling_search.files import staged_directory
from scaling_search.reference import BASELINE

PROG = "scaling_search.scale"
log = logging.getLogger(PROG)

_SUMMARY_FORMATS = {
    "phi": "{:g}", "depth_mult": "{:.3f}", "width_mult": "{:.3f}", "resolution_mult": "{:.3f}",
    "params": "{:,}", "macs": "{:,}", "activations": "{:,}",
    "macs_ratio": "{:.3f}", "formula_macs_ratio": "{:.3f}",
}
_PUBLISHED_FORMATS = {
    "formula_depth_mult": "{:.3f}", "formula_width_mult": "{:.3f}", "formula_params": "{:,}",
    "formula_macs": "{:,}", "published_params": "{:,.0f}", "published_macs": "{:,.0f}",
    "built_params": "{:,}", "built_macs": "{:,}", "implied_phi_depth": "{:.2f}",
    "implied_phi_width": "{:.2f}", "implied_phi_resolution": "{:.2f}",
}
_PUBLISHED_ON_CONSOLE = [
    "phi", "formula_resolution_px", "formula_macs", "formula_architecture", "published",
    "published_resolution_px", "built_macs", "implied_phi_depth", "implied_phi_width",
    "implied_phi_resolution",
]


def _markdown(df, formats: dict[str, str]) -> str:
    shown = df.copy()
    for col, fmt in formats.items():
        if col in shown:
            shown[col] = [fmt.format(v) if v == v and v is not None else "" for v in shown[col]]
    return shown.to_markdown(index=False) + "\n"


def emit(settings: ScaleSettings) -> Path:
    """Computes everything first, then writes it all into ``settings.out_dir`` at once."""
    members = scale_family(settings.backbone, settings.coefficients, settings.phis,
                           settings.rounding, settings.resolution_px, settings.num_classes)
    base_px = settings.resolution_px or get_backbone(settings.backbone).resolution_px
    configs = {m.name: model_config(m, settings.coefficients, settings.rounding,
                                    settings.num_classes, base_px) for m in members}
    summary = summary_frame(members)
    published = None
    if settings.compare_published and settings.backbone == BASELINE and settings.resolution_px in (None, 224):
        published = published_comparison(settings.coefficients, settings.rounding, settings.num_classes)

    with staged_directory(settings.out_dir) as stage:
        (stage / "model").mkdir()
        for name, cfg in configs.items():
            header = (f"# {settings.backbone} compound-scaled at phi={cfg['phi']:g} "
                      f"(alpha={settings.coefficients.depth_coef:g}, "
                      f"beta={settings.coefficients.width_coef:g}, "
                      f"gamma={settings.coefficients.resolution_coef:g}).\n"
                      f"# Emitted by `python -m {PROG}`. Use: +model={name} "
                      f"hydra.searchpath=[file://{settings.out_dir}]\n")
            (stage / "model" / f"{name}.yaml").write_text(header + OmegaConf.to_yaml(cfg))
        summary.to_csv(stage / "summary.csv", index=False)
        (stage / "summary.md").write_text(_markdown(summary, _SUMMARY_FORMATS))
        if published is not None:
            published.to_csv(stage / "published.csv", index=False)
            (stage / "published.md").write_text(_markdown(published, _PUBLISHED_FORMATS))
        (stage / "coefficients.yaml").write_text(OmegaConf.to_yaml(asdict(settings.coefficients)))
        resolved = {**asdict(settings), "out_dir": str(settings.out_dir), "phis": list(settings.phis),
                    "imports": list(settings.imports)}
        (stage / "config.yaml").write_text(OmegaConf.to_yaml(resolved))

    print(_markdown(summary, _SUMMARY_FORMATS))
    if published is not None:
        print(_markdown(published[_PUBLISHED_ON_CONSOLE], _PUBLISHED_FORMATS))
    log.info("wrote %d model configs and the summary to %s", len(configs), settings.out_dir)
    return settings.out_dir


@hydra.main(version_base="1.3", config_path="../conf", config_name="scale")
def main(cfg: DictConfig) -> None:
    with user_errors(PROG):
        emit(ScaleSettings.from_dict(OmegaConf.to_container(cfg, resolve=True)))


if __name__ == "__main__":
    run_hydra_app(main, PROG, "scale", validate=ScaleSettings.from_dict)
