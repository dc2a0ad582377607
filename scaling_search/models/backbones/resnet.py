"""ResNet-18/34/50/101/152 as stage tables: He et al. 2016 (arXiv:1512.03385), Table 1.

Bottleneck blocks put the stride on the 3×3 conv ("ResNet v1.5", as torchvision does): that
is the variant whose 4.1 B multiply-adds the EfficientNet paper's Table 2 lists for ResNet-50.
"""

from scaling_search.models.stages import Stage, StageTable

_STEM = Stage("resnet_stem", 64, stride=2, kernel=7)  # conv1: 7×7/2, then 3×3/2 max-pool
_WIDTHS = (64, 128, 256, 512)  # conv2_x .. conv5_x
_STRIDES = (1, 2, 2, 2)


def _resnet(name: str, block: str, repeats: tuple[int, int, int, int]) -> StageTable:
    expand = 4 if block == "bottleneck" else 1
    stages = tuple(Stage(block, c, n, s, kernel=3, expand_ratio=expand)
                   for c, n, s in zip(_WIDTHS, repeats, _STRIDES))
    return StageTable(name=name, stem=_STEM, stages=stages, resolution_px=224,
                      activation="relu", source="He et al. 2016, Table 1")


RESNETS = (
    _resnet("resnet18", "basic", (2, 2, 2, 2)),
    _resnet("resnet34", "basic", (3, 4, 6, 3)),
    _resnet("resnet50", "bottleneck", (3, 4, 6, 3)),
    _resnet("resnet101", "bottleneck", (3, 4, 23, 3)),
    _resnet("resnet152", "bottleneck", (3, 8, 36, 3)),
)
