"""Stage tables: a ConvNet as the paper's Eq. 1, and their scaling into concrete networks.

Tan & Le (arXiv:1905.11946), Eq. 1 writes a ConvNet as N = ⊙_i F_i^{L_i}(X_{H_i, W_i, C_i}):
stage i repeats operator F_i L_i times at resolution H_i × W_i with C_i channels. A
``StageTable`` holds exactly that for a baseline; ``scale_table`` applies depth, width and
resolution multipliers through the rounding rules of ``scaling.py`` and returns a frozen
``ScaledNetwork`` from which both the analytic cost (``cost.py``) and the module
(``network.py``) are derived, block by block, through ``iter_blocks``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

from scaling_search.models.scaling import REFERENCE_ROUNDING, Multipliers, Rounding

# Block kinds, each implemented once as a module (network.py) and once as a formula
# (cost.py):
#   conv        k×k conv + BatchNorm + activation
#   resnet_stem 7×7/2 conv + BatchNorm + ReLU + 3×3/2 max-pool (He et al. 2016, Table 1)
#   dwsep       depthwise 3×3 + BN + act, pointwise 1×1 + BN + act (MobileNetV1)
#   mbconv      inverted bottleneck: 1×1 expand (skipped when expand_ratio == 1), depthwise k×k,
#               optional squeeze-and-excitation, 1×1 project; residual when shape allows
#               (MobileNetV2; EfficientNet's MBConv with se_ratio > 0)
#   basic       ResNet basic block: 3×3, 3×3, projection shortcut when shape changes
#   bottleneck  ResNet bottleneck (v1.5, stride on the 3×3): 1×1, 3×3, 1×1 to 4× channels
BlockKind = Literal["conv", "resnet_stem", "dwsep", "mbconv", "basic", "bottleneck"]
BLOCK_KINDS: tuple[str, ...] = ("conv", "resnet_stem", "dwsep", "mbconv", "basic", "bottleneck")
Activation = Literal["relu", "relu6", "silu"]
HeadScaling = Literal["width", "width_up", "fixed"]


@dataclass(frozen=True)
class Stage:
    """One row of a stage table: ``block`` repeated ``repeats`` times.

    Attributes:
        block: the block kind (see ``BLOCK_KINDS``).
        channels: the stage's width. For every kind but ``bottleneck`` this is the output
            channels; for ``bottleneck`` it is the inner width and the output is
            ``channels * expand_ratio``.
        repeats: L_i, the number of blocks; depth scaling multiplies it.
        stride: stride of the first block; the others have stride 1.
        kernel: spatial kernel size of the block's k×k convolution.
        expand_ratio: ``mbconv``: hidden = input channels × expand_ratio; ``bottleneck``:
            output = channels × expand_ratio; ignored otherwise.
        se_ratio: squeeze-and-excitation width as a fraction of the block's input channels
            (0 disables it; ``mbconv`` only).
    """

    block: str
    channels: int
    repeats: int = 1
    stride: int = 1
    kernel: int = 3
    expand_ratio: float = 1.0
    se_ratio: float = 0.0

    def __post_init__(self) -> None:
        if self.block not in BLOCK_KINDS:
            raise ValueError(f"block must be one of {', '.join(BLOCK_KINDS)}; got {self.block!r}")
        for name in ("channels", "repeats", "stride", "kernel"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"stage {name} must be a positive integer, got {value!r}")
        if self.kernel % 2 == 0:
            raise ValueError(f"stage kernel must be odd (symmetric padding), got {self.kernel}")
        if self.expand_ratio <= 0:
            raise ValueError(f"stage expand_ratio must be > 0, got {self.expand_ratio}")
        if not 0 <= self.se_ratio < 1:
            raise ValueError(f"stage se_ratio must be in [0, 1), got {self.se_ratio}")

    @property
    def out_channels(self) -> int:
        if self.block == "bottleneck":
            return int(self.channels * self.expand_ratio)
        return self.channels


@dataclass(frozen=True)
class StageTable:
    """A baseline network as a stage table (Eq. 1), the thing compound scaling scales.

    Attributes:
        name: registry name, e.g. ``efficientnet_b0``.
        stem: the first stage (never depth-scaled; width-scaled if ``scale_stem``).
        stages: the body; depth scaling multiplies each stage's repeats.
        head_channels: width of a 1×1 conv + BN + act before pooling, or None for none.
        head_scaling: how width scales the head: "width" (like every stage), "width_up"
            (only up, never below the baseline: MobileNetV2) or "fixed".
        resolution_px: the baseline input resolution (pixels per side).
        activation: activation used throughout.
        dropout: dropout before the classifier.
        drop_path: stochastic-depth rate of the last block (linearly increasing from 0).
        in_channels: input image channels.
        source: the paper table or reference implementation the rows reproduce.
    """

    name: str
    stem: Stage
    stages: tuple[Stage, ...]
    head_channels: int | None = None
    head_scaling: HeadScaling = "width"
    resolution_px: int = 224
    activation: Activation = "relu"
    dropout: float = 0.0
    drop_path: float = 0.0
    scale_stem: bool = True
    in_channels: int = 3
    source: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "stages", tuple(self.stages))
        if not self.stages:
            raise ValueError(f"stage table {self.name!r} has no stages")
        if self.stem.block not in ("conv", "resnet_stem"):
            raise ValueError(f"stem block must be 'conv' or 'resnet_stem', got {self.stem.block!r}")
        if self.head_scaling not in ("width", "width_up", "fixed"):
            raise ValueError(f"head_scaling must be width, width_up or fixed; got {self.head_scaling!r}")
        if self.activation not in ("relu", "relu6", "silu"):
            raise ValueError(f"activation must be relu, relu6 or silu; got {self.activation!r}")
        if int(self.resolution_px) != self.resolution_px or self.resolution_px < 1:
            raise ValueError(f"resolution_px must be a positive integer, got {self.resolution_px!r}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class ScaledNetwork:
    """A stage table after scaling: every channel, repeat and pixel is a concrete integer."""

    name: str
    stem: Stage
    stages: tuple[Stage, ...]
    head_channels: int | None
    resolution_px: int
    activation: Activation
    dropout: float
    drop_path: float
    in_channels: int
    multipliers: Multipliers = field(default_factory=Multipliers)

    @property
    def feature_channels(self) -> int:
        """Channels entering the classifier."""
        return self.head_channels if self.head_channels else self.stages[-1].out_channels

    @property
    def num_blocks(self) -> int:
        return sum(s.repeats for s in self.stages)

    def architecture(self) -> tuple:
        """What determines the network apart from its name: two scaled networks with equal
        ``architecture()`` build identical modules and see identical inputs."""
        return (self.stem, self.stages, self.head_channels, self.resolution_px, self.activation)


def scale_table(
    table: StageTable,
    multipliers: Multipliers = Multipliers(),
    rounding: Rounding = REFERENCE_ROUNDING,
    resolution_px: int | None = None,
) -> ScaledNetwork:
    """Applies depth, width and resolution multipliers to a baseline stage table.

    Args:
        table: the baseline.
        multipliers: depth, width and resolution multipliers (e.g. ``Coefficients.multipliers``).
        rounding: how exact values become integers (default: the TF reference's rules).
        resolution_px: the baseline resolution to scale from; defaults to the table's.

    Raises:
        ValueError: if a stage rounds to zero channels or zero blocks, or the resolution to 0.
    """
    d, w = multipliers.depth_mult, multipliers.width_mult

    def width(stage: Stage, where: str) -> int:
        c = rounding.channels(stage.channels * w)
        if c < 1:
            raise ValueError(
                f"width_mult={w:.4g} rounds {where} ({stage.channels} channels) to 0 channels; "
                "raise width_mult or lower rounding.channel_divisor"
            )
        return c

    stem = replace(table.stem, channels=width(table.stem, "the stem")) if table.scale_stem else table.stem
    stages = []
    for i, stage in enumerate(table.stages, start=1):
        repeats = rounding.repeats_of(stage.repeats * d)
        if repeats < 1:
            raise ValueError(
                f"depth_mult={d:.4g} rounds stage {i} ({stage.repeats} blocks) to 0 blocks; "
                "raise depth_mult or use rounding.repeats=ceil"
            )
        stages.append(replace(stage, channels=width(stage, f"stage {i}"), repeats=repeats))

    head = table.head_channels
    if head is not None and table.head_scaling != "fixed":
        head_w = max(1.0, w) if table.head_scaling == "width_up" else w
        head = rounding.channels(head * head_w)
        if head < 1:
            raise ValueError(f"width_mult={w:.4g} rounds the head to 0 channels")

    px = scale_resolution(table.resolution_px if resolution_px is None else resolution_px,
                          multipliers, rounding)
    return ScaledNetwork(
        name=table.name,
        stem=stem,
        stages=tuple(stages),
        head_channels=head,
        resolution_px=px,
        activation=table.activation,
        dropout=table.dropout,
        drop_path=table.drop_path,
        in_channels=table.in_channels,
        multipliers=multipliers,
    )


def scale_resolution(base_px: int, multipliers: Multipliers, rounding: Rounding) -> int:
    """The input resolution after scaling: ``base_px × resolution_mult``, rounded."""
    if isinstance(base_px, bool) or int(base_px) != base_px or base_px < 1:
        raise ValueError(f"resolution_px must be a positive integer, got {base_px!r}")
    px = rounding.resolution_of(base_px * multipliers.resolution_mult)
    if px < 1:
        raise ValueError(f"resolution_mult={multipliers.resolution_mult:.4g} rounds {base_px} px "
                         f"to {px} px; resolution must be >= 1")
    return px


@dataclass(frozen=True)
class BlockSpec:
    """One block of a scaled network, in forward order, with its input channels resolved."""

    kind: str
    in_channels: int
    channels: int
    out_channels: int
    stride: int
    kernel: int
    expand_ratio: float
    se_ratio: float
    stage_index: int  # 0 for the stem, 1.. for the body
    block_index: int  # 0-based position among the body's blocks (-1 for the stem)

    @property
    def hidden_channels(self) -> int:
        """``mbconv``: width of the expanded (depthwise) part."""
        return int(round(self.in_channels * self.expand_ratio))

    @property
    def se_channels(self) -> int:
        """Squeeze width: a fraction of the block's *input* channels (TF reference, torchvision)."""
        return max(1, int(self.in_channels * self.se_ratio))


def iter_blocks(net: ScaledNetwork) -> Iterator[BlockSpec]:
    """Yields the stem and then every body block, first block of each stage strided."""
    s = net.stem
    yield BlockSpec(s.block, net.in_channels, s.channels, s.out_channels, s.stride, s.kernel,
                    s.expand_ratio, s.se_ratio, 0, -1)
    in_ch, k = s.out_channels, 0
    for i, stage in enumerate(net.stages, start=1):
        for r in range(stage.repeats):
            yield BlockSpec(stage.block, in_ch, stage.channels, stage.out_channels,
                            stage.stride if r == 0 else 1, stage.kernel, stage.expand_ratio,
                            stage.se_ratio, i, k)
            in_ch, k = stage.out_channels, k + 1


def conv_out(size: int, kernel: int, stride: int) -> int:
    """Output side of a conv with symmetric padding (k-1)//2: ceil(size / stride) for odd k."""
    return (size + 2 * ((kernel - 1) // 2) - kernel) // stride + 1
