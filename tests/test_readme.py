"""README.md: the custom-backbone example runs as written, and its ShuffleNetV2 builder at
φ = 0 is torchvision's ``shufflenet_v2_x1_0`` (Ma et al. 2018: 2.3M params, 146M MACs)."""

import re

import pytest
import torch
import torchvision

from scaling_search.backbones import get_backbone, unregister_backbone
from scaling_search.complexity import count_cost
from scaling_search.scaling import Multipliers

from conftest import REPO


@pytest.fixture
def readme_example():
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    (example,) = [b for b in blocks if "register_backbone(\"shufflenet_v2\"" in b]
    yield example
    unregister_backbone("shufflenet_v2")
    unregister_backbone("tiny_resnet")


def test_custom_backbone_example_runs(readme_example, capsys):
    exec(compile(readme_example, "README.md", "exec"), {})
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
