"""A user backbone for tests that holds a driver mid-run until the test lets it go.

``held_net`` is ResNet-18 (the builder protocol). Where ``SCALING_SEARCH_TEST_HOLD`` names a
folder, every network built for training (not on the meta device) leaves ``held-<pid>`` there
and waits until the test creates ``release`` in it. So once ``held-*`` appears, the test knows
the driver has locked its run folder and is training, and that it stays so until released: what
the test does meanwhile (start a second driver) cannot race the first one's end.
"""

import os
import time
from pathlib import Path

import torch

from scaling_search import Multipliers, get_backbone, register_backbone

RELEASE = "release"


def held_net(depth_mult: float, width_mult: float, num_classes: int):
    hold = os.environ.get("SCALING_SEARCH_TEST_HOLD")
    if hold and torch.empty(0).device.type != "meta":
        (Path(hold) / f"held-{os.getpid()}").touch()
        while not (Path(hold) / RELEASE).exists():  # until the test releases it
            time.sleep(0.05)
    return get_backbone("resnet18").scale(Multipliers(depth_mult, width_mult)).build(num_classes)


register_backbone("held_net", builder=held_net, resolution_px=16, overwrite=True)
