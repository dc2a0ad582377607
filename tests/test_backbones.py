"""backbones/: every registered backbone builds, runs and trains at any multipliers; the
built-in tables reproduce their reference implementations (torchvision's models, whose
parameter counts and multiply-adds they must equal exactly), and the registry protocol."""

import pytest
import torch
import torchvision
from torch import nn

from scaling_search.models.backbones import get_backbone, list_backbones, register_backbone, unregister_backbone
from scaling_search.models.cost import count_cost
from scaling_search.models.scaling import Multipliers, Rounding
from scaling_search.models.stages import Stage, StageTable

TORCHVISION = {
    "efficientnet_b0": torchvision.models.efficientnet_b0,
    "mobilenet_v2": torchvision.models.mobilenet_v2,
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
    "resnet101": torchvision.models.resnet101,
    "resnet152": torchvision.models.resnet152,
}


def test_builtins_are_registered():
    assert {"efficientnet_b0", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
            "mobilenet_v1", "mobilenet_v2"} <= set(list_backbones())


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_matches_torchvision_params_and_macs(name):
    with torch.device("meta"):
        ref = TORCHVISION[name]()
    ours = get_backbone(name).scale()
    assert ours.estimate_cost() == count_cost(ref, 224)


@pytest.mark.parametrize("name", list_backbones())
@pytest.mark.parametrize("mults", [(1, 1, 1), (0.5, 0.35, 0.3), (1.6, 1.3, 0.25)])
def test_forward_and_backward_at_any_multipliers(name, mults):
    torch.manual_seed(0)
    model = get_backbone(name).scale(Multipliers(*mults), resolution_px=64 if mults[2] == 1 else None)
    net = model.build(num_classes=7)
    x = torch.randn(2, 3, model.resolution_px, model.resolution_px)
    out = net(x)
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_unknown_backbone_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown backbone 'nope'; known: .*efficientnet_b0.*resnet50"):
        get_backbone("nope")


def test_register_a_stage_table_gets_analytic_cost():
    table = StageTable("tiny_test_net", stem=Stage("conv", 16, stride=2),
                       stages=(Stage("basic", 16, 2, 1), Stage("mbconv", 32, 2, 2, 5, 4, 0.25)),
                       head_channels=64, resolution_px=32)
    register_backbone(table)
    try:
        model = get_backbone("tiny_test_net").scale(Multipliers(2.0, 1.5, 2.0))
        assert [s.repeats for s in model.network.stages] == [4, 4]
        assert model.resolution_px == 64
        assert model.estimate_cost(10) == model.count_cost(10)
        with pytest.raises(ValueError, match="already registered"):
            register_backbone(table)
    finally:
        unregister_backbone("tiny_test_net")


def test_register_a_builder_counts_cost_on_the_module():
    @register_backbone("linear_test_net", resolution_px=16)
    def build(depth_mult, width_mult, num_classes):
        width = Rounding().channels(16 * width_mult)
        layers = [nn.Conv2d(3, width, 3, padding=1)]
        layers += [nn.Conv2d(width, width, 3, padding=1) for _ in range(round(2 * depth_mult) - 1)]
        return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))

    try:
        model = get_backbone("linear_test_net").scale(Multipliers(1.0, 2.0, 2.0))
        assert model.network is None and model.estimate_cost() is None
        assert model.resolution_px == 32
        cost = model.cost(num_classes=4)
        # conv 3->32 and conv 32->32 on 32x32, linear 32->4
        assert cost.params == (3 * 9 * 32 + 32) + (32 * 9 * 32 + 32) + (32 * 4 + 4)
        assert cost.macs == (3 * 9 * 32 + 32 * 9 * 32) * 32 * 32 + 32 * 4
        assert model.build(4)(torch.randn(1, 3, 32, 32)).shape == (1, 4)
    finally:
        unregister_backbone("linear_test_net")


def test_width_that_rounds_a_stage_to_zero_channels_is_an_error():
    plain = Rounding(channel_divisor=1, channel_min=0, channel_min_fraction=0.0)
    with pytest.raises(ValueError, match="width_mult=0.005 rounds the stem .* to 0 channels"):
        get_backbone("resnet18").scale(Multipliers(1, 0.005, 1), plain)


def test_depth_that_rounds_a_stage_to_zero_blocks_is_an_error():
    with pytest.raises(ValueError, match="rounds stage 1 .* to 0 blocks"):
        get_backbone("efficientnet_b0").scale(Multipliers(0.3, 1, 1), Rounding(repeats="round"))


@pytest.mark.parametrize("px", [0, -5, 2.5])
def test_bad_resolution_is_an_error(px):
    with pytest.raises(ValueError, match="resolution_px"):
        get_backbone("resnet18").scale(resolution_px=px)


def test_bad_stage_rows_name_the_field():
    with pytest.raises(ValueError, match="block must be one of"):
        Stage("transformer", 16)
    with pytest.raises(ValueError, match="channels"):
        Stage("conv", 0)
    with pytest.raises(ValueError, match="kernel must be odd"):
        Stage("conv", 8, kernel=4)


@pytest.mark.parametrize("name", ["efficientnet_b0", "resnet18", "resnet50", "mobilenet_v2"])
def test_zero_init_residual_starts_every_residual_block_as_its_shortcut(name):
    """With zero_init_residual (the default) the residual branch adds nothing at init, so a
    block's output is its shortcut's (then the block's activation); without it, it is not."""
    from scaling_search.models.network import _Residual

    torch.manual_seed(0)
    for zero in (True, False):
        net = get_backbone(name).scale(Multipliers(0.5, 0.25), Rounding(), 32).build(10, zero_init_residual=zero)
        net.train()  # batch statistics, so the zeroed scale is what decides
        blocks = [m for m in net.modules() if isinstance(m, _Residual)]
        assert blocks
        b = blocks[0]
        x = torch.randn(4, [m for m in b.body.modules() if isinstance(m, nn.Conv2d)][0].in_channels, 8, 8)
        with torch.no_grad():
            same = torch.allclose(b(x), b.act(b.shortcut(x)))
        assert same is zero
