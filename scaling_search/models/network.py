"""Builds an ``nn.Module`` from a scaled stage table, one block kind at a time.

The blocks follow the reference implementations whose parameter counts the tests pin:
torchvision's ``efficientnet_b0``..``b7`` (MBConv with squeeze-and-excitation), ``resnet*``
(v1.5: the stride sits on the bottleneck's 3×3) and ``mobilenet_v2``, and Howard et al. 2017,
Table 1 for MobileNetV1.

The three layers torchvision keeps in ``torchvision.ops`` (conv-norm-activation,
squeeze-and-excitation, row-wise stochastic depth) are written out here, a few lines each, with
torchvision's structure, parameter names and random draws: ``import torchvision.ops`` loads all of
torchvision (its datasets, models and io): 2.3 s of imports in a fresh process, and a search's two
Ray actors ready to train 3.1 s later on 2 cores (``benchmarks/bench_actor_start.py``).
``tests/test_network.py`` checks each against torchvision's own, output for output.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch import nn

from scaling_search.models.stages import BlockSpec, ScaledNetwork, iter_blocks

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "relu6": nn.ReLU6, "silu": nn.SiLU}


def _cna(cin: int, cout: int, k: int, stride: int, act: type[nn.Module] | None,
         groups: int = 1) -> nn.Sequential:
    """Conv ("same" padding, no bias) → BatchNorm → activation (in place): torchvision's
    ``Conv2dNormActivation`` with ``norm_layer=nn.BatchNorm2d``, keys ``0.weight``, ``1.weight``..."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, padding=(k - 1) // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    """Hu et al. 2018: x · sigmoid(fc2(act(fc1(avgpool(x))))), torchvision's layout and names."""

    def __init__(self, channels: int, squeeze_channels: int, activation: type[nn.Module] = nn.ReLU) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, channels, 1)
        self.activation = activation()
        self.scale_activation = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x))))) * x


class StochasticDepth(nn.Module):
    """Huang et al. 2016, per sample ("row"): in training, each sample's branch is kept with
    probability 1 − p and scaled by 1/(1 − p); the identity in evaluation."""

    def __init__(self, p: float) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"drop probability must lie in [0, 1], got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = 1.0 - self.p
        noise = torch.empty([x.shape[0]] + [1] * (x.ndim - 1), dtype=x.dtype, device=x.device).bernoulli_(keep)
        if keep > 0.0:
            noise.div_(keep)
        return x * noise

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _Residual(nn.Module):
    """body(x) + shortcut(x), with optional stochastic depth on the body and a final act."""

    def __init__(self, body: nn.Module, shortcut: nn.Module | None, drop_path: float = 0.0,
                 act: type[nn.Module] | None = None) -> None:
        super().__init__()
        self.body = body
        self.shortcut = shortcut if shortcut is not None else nn.Identity()
        self.drop_path = StochasticDepth(drop_path) if drop_path > 0 else nn.Identity()
        self.act = act(inplace=True) if act is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.drop_path(self.body(x)) + self.shortcut(x))


def _projection(b: BlockSpec) -> nn.Module | None:
    if b.stride != 1 or b.in_channels != b.out_channels:
        return _cna(b.in_channels, b.out_channels, 1, b.stride, None)
    return None


def _conv(b: BlockSpec, act, drop_path) -> nn.Module:
    return _cna(b.in_channels, b.out_channels, b.kernel, b.stride, act)


def _resnet_stem(b: BlockSpec, act, drop_path) -> nn.Module:
    return nn.Sequential(_cna(b.in_channels, b.out_channels, b.kernel, b.stride, act),
                         nn.MaxPool2d(kernel_size=3, stride=2, padding=1))


def _dwsep(b: BlockSpec, act, drop_path) -> nn.Module:
    return nn.Sequential(
        _cna(b.in_channels, b.in_channels, b.kernel, b.stride, act, groups=b.in_channels),
        _cna(b.in_channels, b.out_channels, 1, 1, act),
    )


def _mbconv(b: BlockSpec, act, drop_path) -> nn.Module:
    hidden = b.hidden_channels
    layers: list[nn.Module] = []
    if hidden != b.in_channels:
        layers.append(_cna(b.in_channels, hidden, 1, 1, act))
    layers.append(_cna(hidden, hidden, b.kernel, b.stride, act, groups=hidden))
    if b.se_ratio > 0:
        layers.append(SqueezeExcitation(hidden, b.se_channels, activation=act))
    layers.append(_cna(hidden, b.out_channels, 1, 1, None))
    body = nn.Sequential(*layers)
    if b.stride == 1 and b.in_channels == b.out_channels:
        return _Residual(body, None, drop_path)
    return body


def _basic(b: BlockSpec, act, drop_path) -> nn.Module:
    body = nn.Sequential(_cna(b.in_channels, b.out_channels, b.kernel, b.stride, act),
                         _cna(b.out_channels, b.out_channels, b.kernel, 1, None))
    return _Residual(body, _projection(b), drop_path, act)


def _bottleneck(b: BlockSpec, act, drop_path) -> nn.Module:
    body = nn.Sequential(_cna(b.in_channels, b.channels, 1, 1, act),
                         _cna(b.channels, b.channels, b.kernel, b.stride, act),
                         _cna(b.channels, b.out_channels, 1, 1, None))
    return _Residual(body, _projection(b), drop_path, act)


BLOCK_BUILDERS: dict[str, Callable[[BlockSpec, type[nn.Module], float], nn.Module]] = {
    "conv": _conv,
    "resnet_stem": _resnet_stem,
    "dwsep": _dwsep,
    "mbconv": _mbconv,
    "basic": _basic,
    "bottleneck": _bottleneck,
}


class ScaledConvNet(nn.Module):
    """Stem → stages → optional 1×1 head → global average pool → dropout → linear."""

    def __init__(self, net: ScaledNetwork, num_classes: int) -> None:
        super().__init__()
        act = ACTIVATIONS[net.activation]
        blocks = list(iter_blocks(net))
        self.stem = BLOCK_BUILDERS[blocks[0].kind](blocks[0], act, 0.0)
        stages: list[list[nn.Module]] = [[] for _ in net.stages]
        n = max(1, net.num_blocks)
        for b in blocks[1:]:
            drop_path = net.drop_path * b.block_index / n  # linear rule of torchvision / TF
            stages[b.stage_index - 1].append(BLOCK_BUILDERS[b.kind](b, act, drop_path))
        self.stages = nn.Sequential(*(nn.Sequential(*s) for s in stages))
        self.head = (_cna(net.stages[-1].out_channels, net.head_channels, 1, 1, act)
                     if net.head_channels else nn.Identity())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(net.dropout)
        self.classifier = nn.Linear(net.feature_channels, num_classes)
        self.resolution_px = net.resolution_px

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.pool(self.forward_features(x)), 1)
        return self.classifier(self.dropout(x))


def _init_weights(model: nn.Module, zero_init_residual: bool = True) -> None:
    """torchvision's init (Kaiming fan-out convs, unit BatchNorm, uniform classifier), and with
    ``zero_init_residual`` the last BatchNorm scale of every residual branch set to 0, so each
    block starts as the identity (Goyal et al. 2017, Section 5.1; pycls's
    ``ZERO_INIT_FINAL_GAMMA``, timm's ``zero_init_last``). Without it, the depth-scaled networks
    of Step 2 (4-13x the blocks) did not train within a CPU proxy's 8 epochs: 0.376 top-1 on
    digits against 0.983 with it (B0 at depth 2.0, width 0.5, 32 px)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            bound = 1.0 / m.out_features**0.5
            nn.init.uniform_(m.weight, -bound, bound)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            if isinstance(m, _Residual):
                norms = [x for x in m.body.modules() if isinstance(x, nn.BatchNorm2d)]
                nn.init.zeros_(norms[-1].weight)


def build_network(net: ScaledNetwork, num_classes: int = 1000,
                  device: torch.device | str | None = None, zero_init_residual: bool = True) -> ScaledConvNet:
    """Builds the module for a scaled network.

    Args:
        net: the scaled stage table.
        num_classes: classifier outputs.
        device: where to allocate; ``"meta"`` builds shapes only (for counting cost).
        zero_init_residual: start every residual block as the identity (see ``_init_weights``).
    """
    if int(num_classes) != num_classes or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    with torch.device(device) if device is not None else nullcontext():
        model = ScaledConvNet(net, int(num_classes))
    if str(device) != "meta":
        _init_weights(model, zero_init_residual)
    return model

