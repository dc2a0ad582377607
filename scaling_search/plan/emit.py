"""Step 2 of compound scaling (Tan & Le, Section 3.3): the scaled family, as configs and tables.

For a backbone, coefficients (α, β, γ) and a list of φ, ``scale_family`` builds each member's
stage table and cost; ``model_config`` turns a member into a Hydra-composable YAML mapping
that ``model_from_config`` turns back into the same network; ``summary_frame`` and
``published_comparison`` are the tables a user reads. Nothing here knows about Hydra's
runtime: ``scale.py`` (the command) does the I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import pandas as pd
from omegaconf import OmegaConf

from scaling_search.models.backbones import ScaledModel, get_backbone
from scaling_search.models.cost import Cost
from scaling_search.models.reference import BASELINE, published_efficientnets
from scaling_search.files import plain, staged_directory
from scaling_search.models.scaling import REFERENCE_ROUNDING, Coefficients, Multipliers, Rounding

if TYPE_CHECKING:
    from scaling_search.settings import ScaleSettings


@dataclass(frozen=True)
class FamilyMember:
    """One scaled model of the family, with its cost and its cost relative to φ = 0."""

    name: str
    phi: float
    model: ScaledModel
    cost: Cost
    macs_ratio: float  # measured: this model's MACs / the unscaled baseline's MACs
    formula_macs_ratio: float  # (α·β²·γ²)^φ


def member_name(backbone: str, phi: float) -> str:
    """``efficientnet_b0_phi1``, ``resnet50_phi0p5``, ``resnet50_phim1`` (a safe file name)."""
    return f"{backbone}_phi{phi:g}".replace(".", "p").replace("-", "m")


def scale_family(backbone: str, coefficients: Coefficients, phis: Sequence[float],
                 rounding: Rounding = REFERENCE_ROUNDING, resolution_px: int | None = None,
                 num_classes: int = 1000, base: Multipliers = Multipliers()) -> list[FamilyMember]:
    """Scales ``backbone`` (at the ``base`` multipliers) at every φ in ``phis`` (in the given
    order, duplicates dropped)."""
    if not phis:
        raise ValueError("phis is empty; give at least one phi, e.g. phis=[1,2,3]")
    bb = get_backbone(backbone)
    base_macs = bb.scale(base, rounding, resolution_px).cost(num_classes).macs
    members, seen = [], set()
    for phi in phis:
        phi = float(phi)
        if not math.isfinite(phi):
            raise ValueError(f"phis must be finite numbers, got {phi}")
        if phi in seen:
            continue
        seen.add(phi)
        m = coefficients.multipliers(phi)
        model = bb.scale(Multipliers(base.depth_mult * m.depth_mult, base.width_mult * m.width_mult,
                                     base.resolution_mult * m.resolution_mult), rounding, resolution_px)
        cost = model.cost(num_classes)
        members.append(FamilyMember(member_name(backbone, phi), phi, model, cost,
                                    cost.macs / base_macs, coefficients.formula_macs_ratio(phi)))
    return members


def model_config(member: FamilyMember, coefficients: Coefficients, rounding: Rounding,
                 num_classes: int, base_resolution_px: int) -> dict:
    """A YAML-ready mapping that fully describes one member (see ``model_from_config``)."""
    m, net = member.model, member.model.network
    cfg = {
        "name": member.name,
        "backbone": m.backbone,
        "phi": member.phi,
        "coefficients": asdict(coefficients),
        "depth_mult": m.multipliers.depth_mult,
        "width_mult": m.multipliers.width_mult,
        "resolution_mult": m.multipliers.resolution_mult,
        "base_resolution_px": base_resolution_px,
        "resolution_px": m.resolution_px,
        "num_classes": num_classes,
        "rounding": asdict(rounding),
    }
    if net is not None:
        cfg["dropout"] = net.dropout
        cfg["stem_channels"] = net.stem.channels
        cfg["head_channels"] = net.head_channels
        cfg["stages"] = [
            {"block": s.block, "repeats": s.repeats, "channels": s.channels,
             "out_channels": s.out_channels, "stride": s.stride, "kernel": s.kernel,
             "expand_ratio": s.expand_ratio, "se_ratio": s.se_ratio}
            for s in net.stages
        ]
    cfg["cost"] = {**member.cost.as_dict(), "macs_ratio": member.macs_ratio,
                   "formula_macs_ratio": member.formula_macs_ratio}
    return cfg


def model_from_config(cfg: Mapping) -> ScaledModel:
    """Rebuilds the scaled model an emitted config describes, and checks it still matches.

    Raises:
        ValueError: if a field is missing, or the backbone now scales to a different network
            than the one recorded (e.g. its stage table changed since the config was emitted).
    """
    try:
        backbone = get_backbone(cfg["backbone"])
        multipliers = Multipliers(cfg["depth_mult"], cfg["width_mult"], cfg["resolution_mult"])
        rounding = Rounding(**cfg["rounding"])
        model = backbone.scale(multipliers, rounding, cfg["base_resolution_px"])
    except KeyError as e:
        raise ValueError(f"model config lacks the field {e.args[0]!r}") from None
    except TypeError as e:
        raise ValueError(f"model config has a malformed rounding: {e}") from None
    if model.resolution_px != cfg["resolution_px"]:
        raise ValueError(f"model config {cfg.get('name')!r} records resolution_px="
                         f"{cfg['resolution_px']} but the backbone scales to {model.resolution_px}")
    if model.network is not None and "stages" in cfg:
        got = [(s.repeats, s.channels) for s in model.network.stages]
        want = [(s["repeats"], s["channels"]) for s in cfg["stages"]]
        if got != want:
            raise ValueError(f"model config {cfg.get('name')!r} records stages (repeats, channels) "
                             f"{want} but backbone {cfg['backbone']!r} now scales to {got}")
    return model


def summary_frame(members: Sequence[FamilyMember]) -> pd.DataFrame:
    """One row per member: multipliers, resolution, depth, cost, and MACs growth both ways."""
    rows = []
    for m in members:
        net = m.model.network
        rows.append({
            "name": m.name,
            "phi": m.phi,
            "depth_mult": m.model.multipliers.depth_mult,
            "width_mult": m.model.multipliers.width_mult,
            "resolution_mult": m.model.multipliers.resolution_mult,
            "resolution_px": m.model.resolution_px,
            "blocks": net.num_blocks if net is not None else None,
            "params": m.cost.params,
            "macs": m.cost.macs,
            "activations": m.cost.activations,
            "macs_ratio": m.macs_ratio,
            "formula_macs_ratio": m.formula_macs_ratio,
        })
    return pd.DataFrame(rows)


def _same_architecture(model: ScaledModel, published) -> bool:
    net = model.network
    return (tuple(s.channels for s in net.stages) == published.stage_channels
            and tuple(s.repeats for s in net.stages) == published.stage_repeats
            and net.stem.channels == published.stem_channels
            and net.head_channels == published.head_channels)


def published_comparison(coefficients: Coefficients, rounding: Rounding = REFERENCE_ROUNDING,
                         num_classes: int = 1000) -> pd.DataFrame:
    """The formula's family at φ = 0..7 beside the published B0–B7.

    Columns ``formula_*`` are B0 scaled by α^φ, β^φ, γ^φ; ``published_*`` are Table 2 of the
    paper; ``built_*`` are B0 scaled with the published coefficients and costed here;
    ``implied_phi_*`` is the φ each published model implies per dimension under α, β, γ;
    ``formula_architecture`` names the published model whose stem, stage channels and repeats
    and head the formula's network equals (resolution aside), if any.
    """
    published = published_efficientnets()
    family = [p for p in published if p.params is not None]  # B0..B7, the ones in Table 2
    rows = []
    for k, pub in enumerate(family):
        formula = get_backbone(BASELINE).scale(coefficients.multipliers(k), rounding)
        formula_cost = formula.cost(num_classes)
        built_cost = pub.scaled().cost(num_classes)
        phi = pub.implied_phi(coefficients)
        same = [p.name for p in published if _same_architecture(formula, p)]
        rows.append({
            "phi": k,
            "formula_depth_mult": formula.multipliers.depth_mult,
            "formula_width_mult": formula.multipliers.width_mult,
            "formula_resolution_px": formula.resolution_px,
            "formula_params": formula_cost.params,
            "formula_macs": formula_cost.macs,
            "formula_architecture": ",".join(same),
            "published": pub.name,
            "published_depth_coef": pub.depth_coef,
            "published_width_coef": pub.width_coef,
            "published_resolution_px": pub.resolution_px,
            "published_params": pub.params,
            "published_macs": pub.macs,
            "published_top1": pub.top1,
            "built_params": built_cost.params,
            "built_macs": built_cost.macs,
            "implied_phi_depth": phi["depth"],
            "implied_phi_width": phi["width"],
            "implied_phi_resolution": phi["resolution"],
        })
    return pd.DataFrame(rows)


SUMMARY_FORMATS = {
    "phi": "{:g}", "depth_mult": "{:.3f}", "width_mult": "{:.3f}", "resolution_mult": "{:.3f}",
    "params": "{:,}", "macs": "{:,}", "activations": "{:,}",
    "macs_ratio": "{:.3f}", "formula_macs_ratio": "{:.3f}",
}
PUBLISHED_FORMATS = {
    "formula_depth_mult": "{:.3f}", "formula_width_mult": "{:.3f}", "formula_params": "{:,}",
    "formula_macs": "{:,}", "published_params": "{:,.0f}", "published_macs": "{:,.0f}",
    "built_params": "{:,}", "built_macs": "{:,}", "implied_phi_depth": "{:.2f}",
    "implied_phi_width": "{:.2f}", "implied_phi_resolution": "{:.2f}",
}
PUBLISHED_ON_CONSOLE = [
    "phi", "formula_resolution_px", "formula_macs", "formula_architecture", "published",
    "published_resolution_px", "built_macs", "implied_phi_depth", "implied_phi_width",
    "implied_phi_resolution",
]


def markdown(df, formats: dict[str, str]) -> str:
    shown = df.copy()
    for col, fmt in formats.items():
        if col in shown:
            shown[col] = [fmt.format(v) if v == v and v is not None else "" for v in shown[col]]
    return shown.to_markdown(index=False) + "\n"


def resolved_config(settings) -> dict:
    """A settings dataclass as plain YAML-ready data (paths and tuples made plain)."""
    return plain(asdict(settings))


def write_family(settings: ScaleSettings, prog: str = "scaling_search.scale") -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Computes the family, then writes it all into ``settings.out_dir`` at once.

    Returns:
        The summary table, and the comparison with the published B0–B7 (or None).
    """
    base = Multipliers(settings.base_depth_mult, settings.base_width_mult)
    members = scale_family(settings.backbone, settings.coefficients, settings.phis,
                           settings.rounding, settings.resolution_px, settings.num_classes, base)
    base_px = settings.resolution_px or get_backbone(settings.backbone).resolution_px
    configs = {m.name: model_config(m, settings.coefficients, settings.rounding,
                                    settings.num_classes, base_px) for m in members}
    summary = summary_frame(members)
    published = None
    if (settings.compare_published and settings.backbone == BASELINE and settings.resolution_px in (None, 224)
            and base == Multipliers()):
        published = published_comparison(settings.coefficients, settings.rounding, settings.num_classes)

    with staged_directory(settings.out_dir) as stage:
        (stage / "model").mkdir()
        for name, cfg in configs.items():
            header = (f"# {settings.backbone} compound-scaled at phi={cfg['phi']:g} "
                      f"(alpha={settings.coefficients.depth_coef:g}, "
                      f"beta={settings.coefficients.width_coef:g}, "
                      f"gamma={settings.coefficients.resolution_coef:g}).\n"
                      f"# Emitted by `python -m {prog}`. Use: +model={name} "
                      f"hydra.searchpath=[file://{settings.out_dir}]\n")
            (stage / "model" / f"{name}.yaml").write_text(header + OmegaConf.to_yaml(cfg))
        summary.to_csv(stage / "summary.csv", index=False)
        (stage / "summary.md").write_text(markdown(summary, SUMMARY_FORMATS))
        if published is not None:
            published.to_csv(stage / "published.csv", index=False)
            (stage / "published.md").write_text(markdown(published, PUBLISHED_FORMATS))
        (stage / "coefficients.yaml").write_text(OmegaConf.to_yaml(asdict(settings.coefficients)))
        (stage / "config.yaml").write_text(OmegaConf.to_yaml(resolved_config(settings)))

    return summary, published
