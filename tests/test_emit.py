"""The compound-scaled family (``plan_family`` without baselines) and its emitted configs. φ = 1
with the paper's coefficients is the published B2 architecture (reference note), its measured
MACs growth is Table 2's B2/B0 ratio rather than
the formula's 1.92, and emitted configs compose in Hydra and rebuild the same network."""

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from scaling_search.models.reference import parse_count
from scaling_search.models.scaling import PAPER_COEFFICIENTS, Coefficients, Rounding
from scaling_search.plan.emit import model_config, model_from_config, published_comparison, summary_frame
from scaling_search.plan.family import phi_tag, plan_family


def _family(backbone, coefficients, phis, rounding=Rounding(), **kw):
    return plan_family(backbone, coefficients, phis, baselines=(), rounding=rounding, **kw)


def test_phi1_is_the_published_b2_architecture(reference):
    (m,) = _family("efficientnet_b0", PAPER_COEFFICIENTS, [1])
    b2 = reference["official_coefficients"]["b2"]
    assert [s.channels for s in m.model.network.stages] == b2["stage_out_channels"]
    assert [s.repeats for s in m.model.network.stages] == b2["stage_repeats"]
    assert m.model.resolution_px == 258  # 224 x 1.15, rounded


def test_measured_macs_ratio_differs_from_formula(reference):
    (m,) = _family("efficientnet_b0", PAPER_COEFFICIENTS, [1])
    assert m.formula_macs_ratio == pytest.approx(reference["compound_scaling"]["product"], abs=1e-5)
    t2 = {r["model"]: parse_count(r["flops"]) for r in reference["table2"]}
    published_ratio = t2["EfficientNet-B2"] / t2["EfficientNet-B0"]  # 1.0B / 0.39B
    assert m.macs_ratio == pytest.approx(published_ratio, rel=0.05)
    assert m.macs_ratio > 1.25 * m.formula_macs_ratio  # rounding inflates the cost


def test_family_grows_and_negative_phi_shrinks():
    family = _family("resnet50", PAPER_COEFFICIENTS, [-1, 0, 1, 2, 2])
    assert [m.phi for m in family] == [-1, 0, 1, 2]  # duplicates dropped, in order of phi
    macs = [m.cost.macs for m in family]
    assert macs == sorted(macs) and family[1].macs_ratio == 1.0
    assert family[0].macs_ratio < 1


def test_member_names_are_safe_file_names():
    assert phi_tag(-0.5) == "phim0p5"
    assert [m.config_name for m in _family("efficientnet_b0", PAPER_COEFFICIENTS, [1])] == ["efficientnet_b0_phi1"]
    mixed = plan_family("resnet18", PAPER_COEFFICIENTS, [-0.5], baselines=["width"], num_classes=10)
    assert [m.config_name for m in mixed] == ["resnet18_phim0p5", "resnet18_width_phim0p5"]
    assert [m.member_id for m in mixed] == ["compound_phim0p5", "width_phim0p5"]


def test_empty_or_bad_phis():
    with pytest.raises(ValueError, match="phis is empty"):
        _family("resnet18", PAPER_COEFFICIENTS, [])
    with pytest.raises(ValueError, match="phis must be finite"):
        _family("resnet18", PAPER_COEFFICIENTS, [float("nan")])


def test_summary_frame_columns_name_units():
    df = summary_frame(_family("mobilenet_v2", PAPER_COEFFICIENTS, [0, 1]))
    assert {"params", "macs", "activations", "macs_ratio", "formula_macs_ratio", "resolution_px"} <= set(df)
    assert not any("flops" in c for c in df)


def test_emitted_config_composes_in_hydra_and_rebuilds_the_network(tmp_path):
    rounding = Rounding()
    family = _family("efficientnet_b0", PAPER_COEFFICIENTS, [2], rounding, num_classes=10)
    cfg = model_config(family[0], PAPER_COEFFICIENTS, rounding, 10, 224)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / f"{family[0].config_name}.yaml").write_text(OmegaConf.to_yaml(cfg))
    (tmp_path / "app.yaml").write_text("defaults:\n  - _self_\nseed: 0\n")
    with initialize_config_dir(str(tmp_path), version_base="1.3"):
        composed = compose("app", overrides=[f"+model={family[0].config_name}"])
    rebuilt = model_from_config(OmegaConf.to_container(composed.model, resolve=True))
    assert rebuilt.network == family[0].model.network
    assert rebuilt.cost(10) == family[0].cost


def test_model_from_config_detects_a_changed_backbone():
    rounding = Rounding()
    (m,) = _family("resnet18", PAPER_COEFFICIENTS, [1], rounding)
    cfg = model_config(m, PAPER_COEFFICIENTS, rounding, 1000, 224)
    cfg["stages"][0]["repeats"] += 1
    with pytest.raises(ValueError, match="now scales to"):
        model_from_config(cfg)
    del cfg["depth_mult"]
    with pytest.raises(ValueError, match="lacks the field 'depth_mult'"):
        model_from_config(cfg)


def test_published_comparison_table():
    df = published_comparison(PAPER_COEFFICIENTS)
    assert list(df["published"]) == [f"b{i}" for i in range(8)]
    assert df.loc[0, "formula_architecture"] == "b0" and df.loc[1, "formula_architecture"] == "b2"
    assert df.loc[0, "formula_macs"] == df.loc[0, "built_macs"]
    assert (df["implied_phi_width"][1:] > 0).sum() == 6  # B1 keeps B0's width
    other = published_comparison(Coefficients(1.4, 1.0, 1.2))
    assert other.loc[1, "formula_architecture"] == ""  # depth 1.4 alone is no published model


@pytest.mark.parametrize("kind", ["folder", "file"])
def test_scale_never_replaces_a_users_folder_or_file(run_cli, tmp_path, kind):
    """`scale out_dir=DIR` used to swap its staging folder in place of DIR, deleting what was there."""
    target = tmp_path / "mine"
    if kind == "folder":
        target.mkdir()
        (target / "notes.txt").write_text("a user's file")
    else:
        target.write_text("a user's file")
    r = run_cli("scaling_search.scale", "backbone=resnet18", "phis=[1]", f"out_dir={target}", "report=false")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scaling_search.scale: error: out_dir "), r.stderr
    assert ("notes.txt" in lines[0]) if kind == "folder" else ("is a file" in lines[0])
    kept = target / "notes.txt" if kind == "folder" else target
    assert kept.read_text() == "a user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no staging folder left behind


def test_scale_replaces_its_own_earlier_emission(run_cli, tmp_path):
    out = tmp_path / "out"
    for phis in ("[1]", "[2]"):
        r = run_cli("scaling_search.scale", "backbone=resnet18", f"phis={phis}", f"out_dir={out}")
        assert r.returncode == 0, r.stderr
    assert [p.name for p in (out / "model").iterdir()] == ["resnet18_phi2.yaml"]
    assert (out / "report.html").is_file()


def test_emitted_members_above_b0_carry_growing_dropout(reference):
    """Not B0's 0.2 for every φ: the paper's rule, 0.2 at B0 to 0.5 at B7's cost, in each config,
    and the rebuilt network has it. φ = 1 measures B2's cost and gets B2's 0.3 within 0.05."""
    rounding = Rounding()
    family = _family("efficientnet_b0", PAPER_COEFFICIENTS, range(8), rounding)
    configs = [model_config(m, PAPER_COEFFICIENTS, rounding, 1000, 224) for m in family]
    dropouts = [cfg["dropout"] for cfg in configs]
    assert dropouts[0] == 0.2 and dropouts == sorted(dropouts) and dropouts[-1] == pytest.approx(0.5)
    assert len(set(dropouts[1:])) == 7 and min(dropouts[1:]) > 0.2
    assert abs(dropouts[1] - reference["official_coefficients"]["b2"]["dropout_rate"]) <= 0.05
    for m, cfg in zip(family, configs):
        assert model_from_config(cfg).network == m.model.network
    assert list(summary_frame(family)["dropout"]) == dropouts
