"""Backbones by registry name: EfficientNet-B0, ResNet-18..152, MobileNetV1/V2, and yours."""

from scaling_search.models.backbones.efficientnet import EFFICIENTNET_B0
from scaling_search.models.backbones.mobilenet import MOBILENET_V1, MOBILENET_V2
from scaling_search.models.backbones.registry import (
    Backbone,
    Builder,
    ScaledModel,
    get_backbone,
    import_plugins,
    list_backbones,
    register_backbone,
    unregister_backbone,
)
from scaling_search.models.backbones.resnet import RESNETS

BUILTIN_TABLES = (EFFICIENTNET_B0, *RESNETS, MOBILENET_V1, MOBILENET_V2)
for _table in BUILTIN_TABLES:
    register_backbone(_table)

__all__ = [
    "BUILTIN_TABLES", "Backbone", "Builder", "ScaledModel", "get_backbone", "import_plugins", "list_backbones",
    "register_backbone", "unregister_backbone",
]
