"""The network's own layers against torchvision.ops, output for output, and a trial's build
path free of torchvision (whose package import every Ray actor would otherwise pay)."""

import subprocess
import sys

import pytest
import torch
from torch import nn
from torchvision.ops import SqueezeExcitation as TvSqueezeExcitation
from torchvision.ops import StochasticDepth as TvStochasticDepth
from torchvision.ops.misc import Conv2dNormActivation

from scaling_search.models.network import SqueezeExcitation, StochasticDepth, _cna


def _same_module(ours: nn.Module, theirs: nn.Module, x: torch.Tensor) -> None:
    """The same parameter names and shapes, and the same outputs once given the same weights."""
    assert {k: v.shape for k, v in ours.state_dict().items()} == \
        {k: v.shape for k, v in theirs.state_dict().items()}
    ours.load_state_dict(theirs.state_dict())
    for mode in (True, False):
        ours.train(mode), theirs.train(mode)
        torch.testing.assert_close(ours(x.clone()), theirs(x.clone()), rtol=0, atol=0)


@pytest.mark.parametrize("k,stride,groups,act", [(3, 1, 1, nn.SiLU), (3, 2, 8, nn.ReLU), (5, 2, 8, nn.ReLU6),
                                                 (1, 1, 1, None), (7, 2, 1, nn.ReLU)])
def test_conv_norm_act_is_torchvisions(k, stride, groups, act):
    torch.manual_seed(0)
    x = torch.randn(4, 8, 13, 13)
    theirs = Conv2dNormActivation(8, 16, kernel_size=k, stride=stride, groups=groups,
                                  norm_layer=nn.BatchNorm2d, activation_layer=act)
    _same_module(_cna(8, 16, k, stride, act, groups=groups), theirs, x)


@pytest.mark.parametrize("act", [nn.SiLU, nn.ReLU])
def test_squeeze_excitation_is_torchvisions(act):
    torch.manual_seed(0)
    x = torch.randn(3, 24, 9, 9)
    _same_module(SqueezeExcitation(24, 6, activation=act), TvSqueezeExcitation(24, 6, activation=act), x)


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 1.0])
def test_stochastic_depth_draws_as_torchvision_does(p):
    x = torch.randn(64, 4, 5, 5)
    ours, theirs = StochasticDepth(p), TvStochasticDepth(p, "row")
    torch.manual_seed(1)
    a = ours(x)
    torch.manual_seed(1)
    b = theirs(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    if 0 < p < 1:  # some rows dropped, the rest scaled by 1/(1-p)
        kept = (a.flatten(1) != 0).any(1)
        assert 0 < int(kept.sum()) < len(x)
        torch.testing.assert_close(a[kept], x[kept] / (1 - p))
    ours.eval()
    assert ours(x) is x


def test_stochastic_depth_refuses_a_probability_outside_0_1():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        StochasticDepth(1.5)


def test_a_trial_builds_its_network_without_importing_torchvision():
    code = """
import sys
from scaling_search.train.runners import ray_tune  # what a Ray actor imports for the trainable
from scaling_search.models.backbones import get_backbone
from scaling_search.models.scaling import Multipliers, Rounding
for name in ("efficientnet_b0", "resnet50", "mobilenet_v2", "mobilenet_v1"):
    model = get_backbone(name).scale(Multipliers(0.5, 0.5, 1.0), Rounding(), 32)
    model.build(10, zero_init_residual=True)
print(sorted(m for m in sys.modules if m.split(".")[0] == "torchvision"))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
