"""cost.py: analytic cost from the stage table against the cost counted on the built module,
and both against published numbers: pycls's golden ``dev/model_complexity.json``
(facebookresearch/pycls, 2020-09-04; its "flops" are multiply-adds, bias adds included) and the
MobileNet papers."""

import random

import pytest
from torch import nn

from scaling_search.models.backbones import get_backbone, list_backbones
from scaling_search.models.cost import Cost, count_cost, estimate_cost
from scaling_search.models.scaling import Multipliers

# pycls dev/model_complexity.json: configs/dds_baselines/... (params, multiply-adds, acts).
PYCLS = {
    "resnet50": (25_557_032, 4_089_185_256, 11_315_688),
    "resnet101": (44_549_160, 7_801_406_440, 16_433_640),
    "resnet152": (60_192_808, 11_513_627_624, 22_755_816),
}
PYCLS_B0 = (5_288_548, 385_825_092, 6_748_036)  # configs/dds_baselines/effnet/EN-B0_dds_8gpu.yaml
# EfficientNet-B0, Tan & Le Table 1: (input channels, output channels, expansion, repeats) per
# MBConv stage; squeeze-and-excitation 0.25 x the block's input channels.
B0_STAGES = [(32, 16, 1, 1), (16, 24, 6, 2), (24, 40, 6, 2), (40, 80, 6, 3), (80, 112, 6, 3),
             (112, 192, 6, 4), (192, 320, 6, 1)]


def _rel(a, b):
    return abs(a - b) / b


@pytest.mark.parametrize("name", list_backbones())
def test_estimate_equals_count_at_baseline(name):
    model = get_backbone(name).scale()
    assert model.estimate_cost() == model.count_cost()


@pytest.mark.parametrize("name", list_backbones())
def test_estimate_equals_count_at_random_multipliers(name):
    rng = random.Random(name)  # fixed per backbone
    for _ in range(3):
        m = Multipliers(rng.uniform(0.3, 2.5), rng.uniform(0.25, 2.0), rng.uniform(0.15, 1.3))
        model = get_backbone(name).scale(m)
        est, cnt = model.estimate_cost(num_classes=37), model.count_cost(num_classes=37)
        assert est.params == cnt.params, m
        assert _rel(est.macs, cnt.macs) <= 0.01 and _rel(est.activations, cnt.activations) <= 0.01, m
        # Both walk the same blocks and count the same layers, so they agree exactly.
        assert est == cnt, m


@pytest.mark.parametrize("name", sorted(PYCLS))
def test_resnets_match_pycls_golden(name):
    params, macs, acts = PYCLS[name]
    net = get_backbone(name).scale().network
    assert estimate_cost(net).params == params
    # pycls counts the classifier's 1,000 bias adds; with them the MACs are pycls's exactly.
    assert estimate_cost(net).macs + 1000 == estimate_cost(net, bias_adds=True).macs == macs
    # pycls also counts the stem max-pool's output (64 x 56 x 56); we count conv and linear only.
    assert estimate_cost(net).activations + 64 * 56 * 56 == acts


def _b0_se_bias_adds() -> int:
    """Bias adds of B0's squeeze-and-excitation, by hand from the paper's Table 1: each block's
    squeeze conv has input/4 outputs and its excite conv the expanded width, both on a 1x1 map."""
    total = 0
    for cin, cout, expand, repeats in B0_STAGES:
        for c in [cin] + [cout] * (repeats - 1):
            total += c // 4 + c * expand
    return total


def test_b0_matches_pycls_golden_exactly_with_bias_adds():
    # The gap to pycls is bias adds, not the SE gating multiply (which pycls does not count):
    # 9,340 in the SE convs plus 1,000 in the classifier.
    assert _b0_se_bias_adds() == 9_340
    net = get_backbone("efficientnet_b0").scale().network
    assert estimate_cost(net).macs + 9_340 + 1_000 == PYCLS_B0[1]
    assert estimate_cost(net, bias_adds=True) == Cost(*PYCLS_B0)


@pytest.mark.parametrize("name", list_backbones())
def test_estimate_equals_count_with_bias_adds(name):
    model = get_backbone(name).scale(Multipliers(1.3, 0.7, 0.5))
    est = estimate_cost(model.network, num_classes=37, bias_adds=True)
    assert est == count_cost(model.build(37, device="meta"), model.resolution_px, bias_adds=True)
    assert est.macs > estimate_cost(model.network, num_classes=37).macs  # the classifier's, at least


@pytest.mark.parametrize("name,params,macs", [
    ("resnet50", 25.6e6, 4.1e9),      # EfficientNet paper, Table 2 (ResNet-50: 26M, 4.1B)
    ("mobilenet_v2", 3.5e6, 0.30e9),  # Sandler et al. 2018, Table 4: 3.4M, 300M
    ("mobilenet_v1", 4.2e6, 0.57e9),  # Howard et al. 2017, Table 8: 4.2M, 569M
])
def test_published_params_and_macs_within_3_percent(name, params, macs):
    cost = get_backbone(name).scale().estimate_cost()
    assert _rel(cost.params, params) < 0.03 and _rel(cost.macs, macs) < 0.03


def test_count_cost_of_a_hand_computed_module():
    # conv 3->8, 3x3, stride 2 on 32 px: out 16 px; 216 weights; 216 * 256 MACs; 8*256 acts.
    model = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    cost = count_cost(model, 32)
    assert cost == Cost(params=216 + 16 + 45, macs=216 * 256 + 40, activations=8 * 256 + 5)
    # The linear layer's 5 bias adds; the conv has no bias.
    assert count_cost(model, 32, bias_adds=True).macs == 216 * 256 + 40 + 5
    assert next(model.parameters()).device.type == "cpu"  # counted on a meta copy


def test_count_cost_leaves_a_training_module_in_training_mode():
    model = get_backbone("mobilenet_v1").scale(Multipliers(1, 0.25, 1)).build(10)
    model.train()
    count_cost(model, 64)
    assert model.training


def test_count_cost_of_a_parameter_free_module():
    cost = count_cost(nn.Sequential(nn.AvgPool2d(2), nn.Flatten()), 8)
    assert cost == Cost(params=0, macs=0, activations=0)
