"""README.md: every Python block runs as written, against the installed package's public API.

The custom-backbone example's ShuffleNetV2 builder at φ = 0 is torchvision's
``shufflenet_v2_x1_0`` (Ma et al. 2018: 2.3M params, 146M MACs). The plotting block reads a
Step-2 ``family.csv`` and the ``model_from_config`` block a composed Hydra config; the tests
give each what the README says it needs, made by the package itself.
"""

import re

import pandas as pd
import pytest
import torch
import torchvision
from conftest import REPO
from hydra import compose, initialize_config_dir

from scaling_search import PAPER_COEFFICIENTS, Multipliers, count_cost, get_backbone, unregister_backbone
from scaling_search.plan.family import plan_family

BLOCKS = re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)


def _block(marker: str) -> str:
    (block,) = [b for b in BLOCKS if marker in b]
    return block


def _run(block: str, namespace: dict | None = None) -> dict:
    namespace = {} if namespace is None else namespace
    exec(compile(block, "README.md", "exec"), namespace)
    return namespace


def test_every_python_block_is_covered_below():
    markers = ("plots.scaling_curves", "model_from_config(cfg.model)", "PAPER_COEFFICIENTS.multipliers(phi=2))\n",
               'register_backbone("shufflenet_v2"')
    assert len(BLOCKS) == len(markers)
    for m in markers:
        _block(m)
    for b in BLOCKS:  # the README shows the public API, not internal modules
        assert all(line.startswith(("import ", "from scaling_search import ")) or " scaling_search." not in line
                   for line in b.splitlines() if "import" in line)


@pytest.fixture
def readme_example():
    yield _block('register_backbone("shufflenet_v2"')
    unregister_backbone("shufflenet_v2")
    unregister_backbone("tiny_resnet")


def test_custom_backbone_example_runs(readme_example, capsys):
    _run(readme_example)
    out = capsys.readouterr().out
    assert out.startswith("258 Cost(")
    with torch.device("meta"):
        ref = torchvision.models.shufflenet_v2_x1_0()
    ours = get_backbone("shufflenet_v2").scale(Multipliers())
    assert ours.count_cost() == count_cost(ref, 224)
    assert abs(ours.count_cost().params - 2.3e6) / 2.3e6 < 0.02
    assert abs(ours.count_cost().macs - 146e6) / 146e6 < 0.02
    tiny = get_backbone("tiny_resnet").scale(Multipliers(2, 1, 1))
    assert tiny.estimate_cost(10) == tiny.count_cost(10)


def test_python_api_block_builds_the_phi2_network(capsys):
    ns = _run(_block("PAPER_COEFFICIENTS.multipliers(phi=2))\n"))
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("296 Cost(")  # 224 * 1.15^2 = 296.2
    assert isinstance(ns["net"], torch.nn.Module)
    assert sum(p.numel() for p in ns["net"].parameters()) == ns["model"].count_cost(10).params


def test_plotting_block_writes_png_and_svg(tmp_path, monkeypatch):
    members = plan_family("resnet18", PAPER_COEFFICIENTS, [0, 1], base=Multipliers(0.5, 0.25),
                          resolution_px=32, num_classes=10)
    family = pd.DataFrame([{"candidate_id": m.member_id, "role": m.method, "phi": m.phi,
                            "macs": m.cost.macs, "params": m.cost.params,
                            "activations": m.cost.activations, "top1_mean": 0.5 + 0.1 * i,
                            "top1_ci95": 0.01} for i, m in enumerate(members)])
    folder = tmp_path / "results/step2/efficientnet_b0_digits_s0"
    folder.mkdir(parents=True)
    family.to_csv(folder / "family.csv", index=False)
    monkeypatch.chdir(tmp_path)
    _run(_block("plots.scaling_curves"))
    assert (tmp_path / "scaling_curves.png").stat().st_size > 0
    assert (tmp_path / "scaling_curves.svg").read_text().lstrip().startswith("<?xml")


def test_model_from_config_block_rebuilds_an_emitted_model(tmp_path, run_cli):
    out = tmp_path / "emitted"
    r = run_cli("scaling_search.scale", "backbone=resnet18", "phis=[1]", f"out_dir={out}", "report=false")
    assert r.returncode == 0, r.stderr
    with initialize_config_dir(str(out / "model"), version_base="1.3"):
        model_cfg = compose("resnet18_phi1")
    cfg = {"model": model_cfg}

    class Cfg:  # attribute access, as on a composed app config
        model = cfg["model"]

    ns = _run(_block("model_from_config(cfg.model)"), {"cfg": Cfg})
    assert ns["model"].resolution_px == model_cfg.resolution_px
    assert sum(p.numel() for p in ns["net"].parameters()) == model_cfg.cost.params
