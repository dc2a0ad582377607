"""Step 2's emitter: the planned family written as Hydra-composable configs and tables.

The family itself is planned once, in ``plan.family.plan_family`` (one ``Member`` type for what is
emitted and what is trained); this module only writes it. ``model_config`` turns a member into a
YAML mapping that ``model_from_config`` turns back into the same network; ``summary_frame`` and
``published_comparison`` are the tables a user reads; ``write_family`` puts them all in a folder
at once. Nothing here knows about Hydra's runtime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from scaling_search.files import staged_directory
from scaling_search.models.backbones import ScaledModel, get_backbone
from scaling_search.models.reference import BASELINE, published_efficientnets
from scaling_search.models.scaling import REFERENCE_ROUNDING, Coefficients, Multipliers, Rounding
from scaling_search.plan.family import COMPOUND, Member, plan_family
from scaling_search.plan.rules import FIXED, regularised
from scaling_search.tables import markdown


def model_config(member: Member, coefficients: Coefficients, rounding: Rounding,
                 num_classes: int, base_resolution_px: int) -> dict:
    """A YAML-ready mapping that fully describes one member (see ``model_from_config``)."""
    m, net = member.model, member.model.network
    cfg = {
        "name": member.config_name,
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
    if member.method != COMPOUND:  # another rule's member, matched to the compound member's MACs
        cfg["rule"] = member.method
        cfg["target_macs"] = member.target_macs
    if net is not None:
        cfg["dropout"] = net.dropout  # set by the plan's regularisation for this member's cost
        cfg["drop_path"] = net.drop_path
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
        model = regularised(backbone.scale(multipliers, rounding, cfg["base_resolution_px"]),
                            cfg.get("dropout"), cfg.get("drop_path"))
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


def summary_frame(members: Sequence[Member]) -> pd.DataFrame:
    """One row per member: multipliers, resolution, depth, cost, and MACs growth both ways."""
    rows = []
    for m in members:
        net = m.model.network
        rows.append({
            "name": m.config_name,
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
            "dropout": net.dropout if net is not None else None,
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
    formulas = plan_family(BASELINE, coefficients, range(len(family)), baselines=(), rounding=rounding,
                           num_classes=num_classes, regularisation=FIXED)
    rows = []
    for k, (pub, member) in enumerate(zip(family, formulas)):
        formula, formula_cost = member.model, member.cost
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
    "macs_ratio": "{:.3f}", "formula_macs_ratio": "{:.3f}", "dropout": "{:.2f}",
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


def write_family(out_dir: Path, members: Sequence[Member], coefficients: Coefficients,
                 rounding: Rounding, num_classes: int, resolution_px: int | None = None,
                 base: Multipliers = Multipliers(), run_config: Mapping | None = None,
                 compare_published: bool = True, prog: str = "scaling_search.scale"
                 ) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Writes the planned ``members`` into ``out_dir`` at once: a config per member, the summary,
    ``coefficients.yaml``, ``config.yaml`` (``run_config``, the settings that made them) and, for
    EfficientNet-B0 itself, the comparison with the published B0–B7.

    Returns:
        The summary table, and the comparison with the published B0–B7 (or None).
    """
    check_replaceable(out_dir)
    backbone = members[0].model.backbone
    base_px = resolution_px or get_backbone(backbone).resolution_px
    configs = {m.config_name: model_config(m, coefficients, rounding, num_classes, base_px) for m in members}
    summary = summary_frame(members)
    published = None
    if compare_published and backbone == BASELINE and resolution_px in (None, 224) and base == Multipliers():
        published = published_comparison(coefficients, rounding, num_classes)

    with staged_directory(out_dir) as stage:
        (stage / "model").mkdir()
        for name, cfg in configs.items():
            how = "compound-scaled" if "rule" not in cfg else \
                f"scaled by the {cfg['rule']} rule to the MACs of the compound member"
            header = (f"# {backbone} {how} at phi={cfg['phi']:g} "
                      f"(alpha={coefficients.depth_coef:g}, beta={coefficients.width_coef:g}, "
                      f"gamma={coefficients.resolution_coef:g}).\n"
                      f"# Emitted by `python -m {prog}`. Use: +model={name} "
                      f"hydra.searchpath=[file://{out_dir}]\n")
            (stage / "model" / f"{name}.yaml").write_text(header + OmegaConf.to_yaml(cfg))
        summary.to_csv(stage / "summary.csv", index=False)
        (stage / "summary.md").write_text(markdown(summary, SUMMARY_FORMATS))
        if published is not None:
            published.to_csv(stage / "published.csv", index=False)
            (stage / "published.md").write_text(markdown(published, PUBLISHED_FORMATS))
        (stage / "coefficients.yaml").write_text(coefficients_yaml(coefficients))
        if run_config is not None:
            (stage / "config.yaml").write_text(OmegaConf.to_yaml(dict(run_config)))
    return summary, published


# What an emission folder holds (and its report): the only things ``write_family`` may replace.
EMITTED = frozenset({"model", "summary.csv", "summary.md", "published.csv", "published.md",
                     "coefficients.yaml", "config.yaml", "report.html", "plots"})


def check_replaceable(out_dir: Path) -> None:
    """An emission replaces only an earlier emission: never a user's file or folder."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir {str(out_dir)!r} is a file, not a folder; give a folder path")
    if out_dir.is_dir():
        foreign = sorted(p.name for p in out_dir.iterdir() if p.name not in EMITTED)
        if foreign:
            shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
            raise ValueError(f"out_dir {str(out_dir)!r} holds files that no emission wrote ({shown}); "
                             "an emission replaces only an earlier one: choose a new or empty out_dir")


def coefficients_yaml(coefficients: Coefficients, header: str = "") -> str:
    """α, β, γ as YAML at full precision (a continuous TPE winner must read back exactly)."""
    return header + "".join(f"{k}: {v!r}\n" for k, v in asdict(coefficients).items())
