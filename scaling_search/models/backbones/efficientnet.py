"""EfficientNet-B0 as a stage table: Tan & Le (arXiv:1905.11946), Table 1.

MBConv blocks with squeeze-and-excitation of 0.25 × the block's input channels and SiLU
(swish); dropout 0.2 before the classifier and stochastic depth 0.2, as in the authors' TF
reference and torchvision's ``efficientnet_b0``.
"""

from scaling_search.models.stages import Stage, StageTable


def _mb(expand: int, kernel: int, channels: int, repeats: int, stride: int) -> Stage:
    return Stage("mbconv", channels, repeats, stride, kernel, expand_ratio=expand, se_ratio=0.25)


EFFICIENTNET_B0 = StageTable(
    name="efficientnet_b0",
    stem=Stage("conv", 32, stride=2, kernel=3),  # Table 1, stage 1: Conv3x3, 224 → 112
    stages=(
        _mb(1, 3, 16, 1, 1),   # stage 2: MBConv1, k3x3, 112 px
        _mb(6, 3, 24, 2, 2),   # stage 3: MBConv6, k3x3, 112 → 56
        _mb(6, 5, 40, 2, 2),   # stage 4: MBConv6, k5x5, 56 → 28
        _mb(6, 3, 80, 3, 2),   # stage 5: MBConv6, k3x3, 28 → 14
        _mb(6, 5, 112, 3, 1),  # stage 6: MBConv6, k5x5, 14
        _mb(6, 5, 192, 4, 2),  # stage 7: MBConv6, k5x5, 14 → 7
        _mb(6, 3, 320, 1, 1),  # stage 8: MBConv6, k3x3, 7
    ),
    head_channels=1280,  # stage 9: Conv1x1 & Pooling & FC
    resolution_px=224,
    activation="silu",
    dropout=0.2,
    drop_path=0.2,
    source="Tan & Le 2019, Table 1",
)
