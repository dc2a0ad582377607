"""A user backbone for tests (the builder protocol) that fails to train when made wider than 1.05x.

Building and costing it on the meta device work, so the search plans it like any backbone; the
failure happens inside a trial, as a real bug or an out-of-memory error would.
"""

from torch import nn

from scaling_search.models.backbones import register_backbone


class FlakyNet(nn.Module):
    def __init__(self, depth_mult: float, width_mult: float, num_classes: int):
        super().__init__()
        channels, blocks = max(4, round(8 * width_mult)), max(1, round(2 * depth_mult))
        layers, c_in = [], 3
        for _ in range(blocks):
            layers += [nn.Conv2d(c_in, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()]
            c_in = channels
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(channels, num_classes)
        self.fails = width_mult > 1.05

    def forward(self, x):
        if self.fails and x.device.type != "meta":
            raise RuntimeError("flaky_net cannot train wider than 1.05x")
        return self.classifier(self.features(x))


register_backbone("flaky_net", builder=FlakyNet, resolution_px=16, overwrite=True)
