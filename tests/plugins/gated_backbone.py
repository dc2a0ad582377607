"""A user backbone for tests that makes the moment of an interruption certain.

``gated_net`` is ResNet-18 (the builder protocol). Where ``SCALING_SEARCH_TEST_GATE`` names a
folder, every network built for training (not on the meta device) leaves a file there, and the
third and later ones wait until the test kills or interrupts the search. So when two trials have
ended, the test knows the next ones are waiting: its signal cannot race a search that finishes
between two polls.
"""

import os
import time
from pathlib import Path

import torch

from scaling_search import Multipliers, get_backbone, register_backbone

OPEN_TRIALS = 2


def gated_net(depth_mult: float, width_mult: float, num_classes: int):
    gate = os.environ.get("SCALING_SEARCH_TEST_GATE")
    if gate and torch.empty(0).device.type != "meta":
        built = len(list(Path(gate).glob("built-*")))
        (Path(gate) / f"built-{built}-{os.getpid()}").touch()
        while built >= OPEN_TRIALS:  # until the test's signal ends this process
            time.sleep(0.05)
    return get_backbone("resnet18").scale(Multipliers(depth_mult, width_mult)).build(num_classes)


register_backbone("gated_net", builder=gated_net, resolution_px=16, overwrite=True)
