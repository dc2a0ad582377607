"""Params, MACs and activations: estimated from a stage table, and counted on a module.

Units. ``macs`` are multiply-adds, what Tan & Le (arXiv:1905.11946) call "FLOPs" (B0 at
224 px: 0.39 B). ``params`` are trainable parameters (BatchNorm running statistics
excluded). ``activations`` follow Radosavovic et al. 2020 and Dollár et al. 2021 ("Fast and
Accurate Model Scaling"): the total number of output elements of every conv and linear layer,
for one image.

Conventions shared by both counts, so that they agree exactly: MACs of conv and linear layers
only (``torch.utils.flop_counter`` counts the same: no BatchNorm, activation, pooling, residual
add, bias add or squeeze-and-excitation gating multiply). The estimate walks the same block list
(``stages.iter_blocks``) that ``network.build_network`` builds, with one formula per block kind.

``bias_adds=True`` adds one MAC per output element of every layer with a bias, as pycls's
complexity counters do (``conv2d_cx`` and ``linear_cx`` in facebookresearch/pycls
``pycls/models/blocks.py``); pycls counts no gating multiply either. In these networks only the
squeeze-and-excitation convs and the classifier have biases: for EfficientNet-B0 that is
9,340 + 1,000 adds, and 385,814,752 + 10,340 = 385,825,092, pycls's published figure.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from scaling_search.models.stages import BlockSpec, ScaledNetwork, conv_out, iter_blocks

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class Cost:
    """The cost of a network (or a part) for one input image."""

    params: int = 0
    macs: int = 0
    activations: int = 0

    def __add__(self, other: Cost) -> Cost:
        return Cost(self.params + other.params, self.macs + other.macs,
                    self.activations + other.activations)

    def as_dict(self) -> dict[str, int]:
        return {"params": self.params, "macs": self.macs, "activations": self.activations}


def _conv(cin: int, cout: int, k: int, stride: int, h: int, groups: int = 1,
          bias: bool = False) -> tuple[Cost, int]:
    out = conv_out(h, k, stride)
    weights = k * k * (cin // groups) * cout
    cost = Cost(params=weights + (cout if bias else 0), macs=weights * out * out,
                activations=cout * out * out)
    return cost, out


def _bn(c: int) -> Cost:
    return Cost(params=2 * c)


def _conv_bn(cin: int, cout: int, k: int, stride: int, h: int, groups: int = 1) -> tuple[Cost, int]:
    cost, out = _conv(cin, cout, k, stride, h, groups)
    return cost + _bn(cout), out


def _linear(fin: int, fout: int) -> Cost:
    return Cost(params=fin * fout + fout, macs=fin * fout, activations=fout)


def _stem(b: BlockSpec, h: int) -> tuple[Cost, int]:
    return _conv_bn(b.in_channels, b.out_channels, b.kernel, b.stride, h)


def _resnet_stem(b: BlockSpec, h: int) -> tuple[Cost, int]:
    cost, h = _conv_bn(b.in_channels, b.out_channels, b.kernel, b.stride, h)
    return cost, conv_out(h, 3, 2)  # 3×3/2 max-pool, padding 1


def _dwsep(b: BlockSpec, h: int) -> tuple[Cost, int]:
    dw, h = _conv_bn(b.in_channels, b.in_channels, b.kernel, b.stride, h, groups=b.in_channels)
    pw, h = _conv_bn(b.in_channels, b.out_channels, 1, 1, h)
    return dw + pw, h


def _mbconv(b: BlockSpec, h: int) -> tuple[Cost, int]:
    hidden = b.hidden_channels
    cost = Cost()
    if hidden != b.in_channels:
        expand, h = _conv_bn(b.in_channels, hidden, 1, 1, h)
        cost += expand
    dw, h = _conv_bn(hidden, hidden, b.kernel, b.stride, h, groups=hidden)
    cost += dw
    if b.se_ratio > 0:
        sq = b.se_channels
        cost += _conv(hidden, sq, 1, 1, 1, bias=True)[0] + _conv(sq, hidden, 1, 1, 1, bias=True)[0]
    project, h = _conv_bn(hidden, b.out_channels, 1, 1, h)
    return cost + project, h


def _shortcut(b: BlockSpec, h: int) -> Cost:
    if b.stride != 1 or b.in_channels != b.out_channels:
        return _conv_bn(b.in_channels, b.out_channels, 1, b.stride, h)[0]
    return Cost()


def _basic(b: BlockSpec, h: int) -> tuple[Cost, int]:
    c1, h1 = _conv_bn(b.in_channels, b.out_channels, b.kernel, b.stride, h)
    c2, h1 = _conv_bn(b.out_channels, b.out_channels, b.kernel, 1, h1)
    return c1 + c2 + _shortcut(b, h), h1


def _bottleneck(b: BlockSpec, h: int) -> tuple[Cost, int]:
    c1, h1 = _conv_bn(b.in_channels, b.channels, 1, 1, h)
    c2, h1 = _conv_bn(b.channels, b.channels, b.kernel, b.stride, h1)
    c3, h1 = _conv_bn(b.channels, b.out_channels, 1, 1, h1)
    return c1 + c2 + c3 + _shortcut(b, h), h1


BLOCK_ESTIMATORS: dict[str, Callable[[BlockSpec, int], tuple[Cost, int]]] = {
    "conv": _stem,
    "resnet_stem": _resnet_stem,
    "dwsep": _dwsep,
    "mbconv": _mbconv,
    "basic": _basic,
    "bottleneck": _bottleneck,
}


def _bias_adds(net: ScaledNetwork, num_classes: int) -> int:
    """One add per output element of a layer with a bias: the squeeze-and-excitation convs
    (squeeze and excite, each on a 1×1 map) and the classifier, the only biased layers here."""
    se = sum(b.se_channels + b.hidden_channels for b in iter_blocks(net)
             if b.kind == "mbconv" and b.se_ratio > 0)
    return se + num_classes


def estimate_cost(net: ScaledNetwork, num_classes: int = 1000, bias_adds: bool = False) -> Cost:
    """Analytic cost of a scaled network, from its stage table alone (nothing is built).

    ``bias_adds=True`` counts bias adds in ``macs``, as pycls does (see the module docstring).
    """
    h, total = net.resolution_px, Cost()
    for block in iter_blocks(net):
        cost, h = BLOCK_ESTIMATORS[block.kind](block, h)
        total += cost
    if net.head_channels:
        total += _conv_bn(net.stages[-1].out_channels, net.head_channels, 1, 1, h)[0]
    if bias_adds:
        total += Cost(macs=_bias_adds(net, num_classes))
    return total + _linear(net.feature_channels, num_classes)


def count_cost(model: nn.Module, resolution_px: int, in_channels: int = 3,
               bias_adds: bool = False) -> Cost:
    """Measured cost of a module: parameters counted, MACs and activations traced.

    The module is moved to the meta device (shapes only: no memory, no arithmetic) unless it
    is already there, and run once in eval mode on one image of ``resolution_px`` per side.
    MACs come from ``torch.utils.flop_counter.FlopCounterMode`` (which counts 2 FLOPs per
    multiply-add); activations from forward hooks on every ``nn.Conv2d`` and ``nn.Linear``.
    ``bias_adds=True`` adds one MAC per output element of each of those that has a bias, as
    pycls does.
    """
    # Lazy, for start-up time: the estimate and the apps' checks of their input need no torch.
    import torch
    from torch import nn
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    first = next(iter(model.parameters()), None)
    if first is not None and first.device.type != "meta":
        model = copy.deepcopy(model).to_empty(device="meta")
    was_training = model.training
    model.eval()
    outputs, biased = [], []

    def hook(module, _inputs, output):
        outputs.append(output.numel())
        if module.bias is not None:
            biased.append(output.numel())

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        x = torch.empty(1, in_channels, resolution_px, resolution_px, device="meta")
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    macs = counter.get_total_flops() // 2 + (sum(biased) if bias_adds else 0)
    return Cost(params=params, macs=macs, activations=sum(outputs))
