"""A user backbone for tests that makes the first two trials of a search run at the same time.

``paired_net`` is ResNet-18 (the builder protocol). Where ``SCALING_SEARCH_TEST_PAIR`` names a
folder, every network built for training (not on the meta device) leaves ``built-<pid>-<id>``
there and waits until two are there (at most 120 s). On a cluster of one-CPU nodes, two trials
that run at once must run on two nodes, so a test sees both nodes used, whatever order Ray
Tune starts or reuses its actors in. Without the variable it is plain ResNet-18: the same
networks and numbers.
"""

import os
import time
import uuid
from pathlib import Path

import torch

from scaling_search import Multipliers, get_backbone, register_backbone


def paired_net(depth_mult: float, width_mult: float, num_classes: int):
    folder = os.environ.get("SCALING_SEARCH_TEST_PAIR")
    if folder and torch.empty(0).device.type != "meta":
        (Path(folder) / f"built-{os.getpid()}-{uuid.uuid4().hex}").touch()
        deadline = time.monotonic() + 120
        while len(list(Path(folder).glob("built-*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
    return get_backbone("resnet18").scale(Multipliers(depth_mult, width_mult)).build(num_classes)


register_backbone("paired_net", builder=paired_net, resolution_px=16, overwrite=True)
