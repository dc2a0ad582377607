"""MobileNetV1 and MobileNetV2 as stage tables.

V1: Howard et al. 2017 (arXiv:1704.04861), Table 1: depthwise-separable blocks, ReLU.
V2: Sandler et al. 2018 (arXiv:1801.04381), Table 2: inverted residuals (t, c, n, s), ReLU6;
the 1280-channel head is widened with the width multiplier but never narrowed below 1280.
"""

from scaling_search.models.stages import Stage, StageTable

MOBILENET_V1 = StageTable(
    name="mobilenet_v1",
    stem=Stage("conv", 32, stride=2, kernel=3),
    stages=(
        Stage("dwsep", 64, 1, 1),
        Stage("dwsep", 128, 2, 2),
        Stage("dwsep", 256, 2, 2),
        Stage("dwsep", 512, 6, 2),
        Stage("dwsep", 1024, 2, 2),
    ),
    resolution_px=224,
    activation="relu",
    source="Howard et al. 2017, Table 1",
)


def _ir(t: int, c: int, n: int, s: int) -> Stage:
    return Stage("mbconv", c, n, s, kernel=3, expand_ratio=t)


MOBILENET_V2 = StageTable(
    name="mobilenet_v2",
    stem=Stage("conv", 32, stride=2, kernel=3),
    stages=(_ir(1, 16, 1, 1), _ir(6, 24, 2, 2), _ir(6, 32, 3, 2), _ir(6, 64, 4, 2),
            _ir(6, 96, 3, 1), _ir(6, 160, 3, 2), _ir(6, 320, 1, 1)),
    head_channels=1280,
    head_scaling="width_up",
    resolution_px=224,
    activation="relu6",
    dropout=0.2,
    source="Sandler et al. 2018, Table 2",
)
