"""The apps' settings: the schemas that check their configs, and the frozen settings built from them.

Two kinds of dataclass live here:

- **schemas** (``GridConfig``, ``ScaleConfig`` and their parts): the shape and the types of
  ``conf/grid.yaml`` and ``conf/scale.yaml``. ``cli.py`` registers them in Hydra's ConfigStore
  and each file names its schema first in its defaults list, so OmegaConf itself rejects an
  unknown key or a value of the wrong type, and names it, before any code here runs;
- **settings** (``GridSettings``, ``ScaleSettings``, ``DataSettings``, ``TrainSettings``,
  ``RaySettings``): frozen, and all that the code below the apps reads. Building them runs the
  checks a type cannot express, ranges and fields that depend on each other, each stated once:
  in a settings class's ``__post_init__`` or in ``from_config``.

A schema of a settings class is derived from it (``schema``), so each field is written once.
Every error is a ``ValueError`` (or an OmegaConf error) whose message names the field. Every
input is bounded here, before any work: numbers are finite and in range, seeds fit every library,
no dimension of a network grows past ``MAX_SCALE`` (``check_growth``), and ``out_dir`` is a
folder this user can write (``_out_dir``).
"""

from __future__ import annotations

import math
import os
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING as NO_DEFAULT
from dataclasses import dataclass, field, fields, make_dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from omegaconf import MISSING, OmegaConf

from scaling_search.models.backbones import get_backbone, import_plugins
from scaling_search.models.scaling import PAPER_COEFFICIENTS, Coefficients, Rounding
from scaling_search.plan.family import DIMENSIONS, rules_of
from scaling_search.plan.rules import COMPOUND, Regularisation, ScalingRule, parse_rule
from scaling_search.plan.space import SearchSpace

AUTO_GPUS_PER_TRIAL = 0.125  # eight small proxies share a GPU unless the config says otherwise
BUILT_IN = ("digits", "synthetic")  # data that needs no download and no root
KNOWN = (*BUILT_IN, "cifar10", "cifar100", "imagefolder")
TRANSFORMS = ("resize", "crop")  # the whole image resized, or the field's crops (data.py)
DATA_MODES = ("auto", "memory", "stream")
FREEZE_RULES = ("best", "cheapest_tied")
OPTIMIZERS = ("sgd", "adamw", "rmsprop")
LR_SCHEDULES = ("cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
GRID_RUNNERS = ("ray", "local", "optuna_tpe")
EXECUTORS = ("ray", "local")  # what trains optuna_tpe's samples
# The most a network may grow in one dimension over its backbone (EfficientNet-B7 is 3.1x B0's
# depth, 2x its width, 2.7x its pixels). Beyond it, costing one network takes minutes, then
# forever (it walks every block), and the powers overflow a float.
MAX_SCALE = 1000
MAX_SEED = 2**32 - 1  # seeds are 32-bit, as NumPy's are: a wider one is refused, never wrapped
MAX_SEEDS = 1000  # training seeds per candidate or member


def _positive_int(name: str, value: int | None) -> None:
    """A count must be >= 1 (None passes: "not set", where the schema allows it)."""
    if value is not None and value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _number(name: str, value: float, in_range: bool, what: str) -> None:
    """A number must be finite and ``in_range``; ``what`` states the range (``> 0``, ``in [0, 1)``)."""
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number {what}, got {value!r}")
    if not in_range:
        raise ValueError(f"{name} must be a number {what}, got {value!r}")


def _positive(name: str, value: float) -> None:
    _number(name, value, value > 0, "> 0")


def _multiplier(name: str, value: float) -> None:
    """A multiplier of the backbone: > 0 and at most ``MAX_SCALE``."""
    _positive(name, value)
    if value > MAX_SCALE:
        raise ValueError(f"{name} must be at most {MAX_SCALE:,} (the limit on growing one dimension), "
                         f"got {value:g}")


def _seeds(seed: int, count: int, count_name: str) -> None:
    """Training seeds ``seed .. seed + count - 1``: at most ``MAX_SEEDS`` of them, all in [0, ``MAX_SEED``]."""
    _positive_int(count_name, count)
    if count > MAX_SEEDS:
        raise ValueError(f"{count_name} must be at most {MAX_SEEDS:,}, got {count}")
    if seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed}")
    if seed + count - 1 > MAX_SEED:
        raise ValueError(f"seed={seed} with {count_name}={count} goes past {MAX_SEED:,}, the largest "
                         "32-bit seed; use a smaller seed")


def _choice(name: str, value: str, choices: tuple[str, ...], why: str = "") -> None:
    if value not in choices:
        listed = ", ".join(choices[:-1]) + f" or {choices[-1]}"
        raise ValueError(f"{name} must be {listed}{why}, got {value!r}")


def _has_cuda() -> bool:
    import torch  # lazy: only trainer.device=cuda asks, and the checks of the rest need no torch

    return torch.cuda.is_available()


@dataclass(frozen=True)
class DataSettings:
    """Which dataset, where, and how to split it (the ``data`` config group).

    Attributes:
        name: one of ``KNOWN``.
        root: folder of CIFAR's files or of an image folder (not used by built-in data).
        val_fraction: share of the training images held out for validation (when the
            dataset has no validation split of its own).
        split_seed: seed of the train/validation split (and of the synthetic images).
        num_images: images to generate (``synthetic``) or, if set, to keep at most (others).
        image_px: side of the generated images (``synthetic``) or of decoded ImageFolder images.
        download: let torchvision download CIFAR (needs internet).
        verify: check CIFAR's files against torchvision's checksums.
        flip: random horizontal flips in training (off for digits: a mirrored digit is not one).
        transforms: ``resize`` (the whole image resized to the trial's resolution) or ``crop``
            (the field's: random-resized-crop in training; resize to resolution/0.875 and
            centre-crop in validation). ``crop`` needs ``imagefolder``.
        mode: where an image folder's decoded images live during training: ``memory`` (each
            trial holds them), ``stream`` (read from the disk cache per batch by DataLoader
            workers), or ``auto``: ``memory`` when a trial's copy fits ``memory_budget_gb``.
            Built-in and CIFAR data are always held in memory.
        memory_budget_gb: the most decoded data one trial may hold in memory under ``auto``.
        cache_dir: where image folders are decoded once (None: ``$XDG_CACHE_HOME/scaling_search``,
            else ``~/.cache/scaling_search``; each node of a cluster keeps its own).
        workers: DataLoader processes that read and transform batches (``stream`` or ``crop``;
            0 reads in the trial's own process), and threads that decode an image folder into
            the cache (None: 2 for reading on a CPU, one per CPU of the trial on a GPU, and 4 threads,
            at most the CPUs, for decoding).
    """

    name: str = "digits"
    root: str | None = None
    val_fraction: float = 0.2
    split_seed: int = 0
    num_images: int | None = None
    image_px: int | None = None
    download: bool = False
    verify: bool = True
    flip: bool = False
    transforms: str = "resize"  # one of TRANSFORMS
    mode: str = "auto"  # one of DATA_MODES
    memory_budget_gb: float = 2.0
    cache_dir: str | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.name not in KNOWN:
            raise ValueError(f"data.name {self.name!r} is unknown; known: {', '.join(KNOWN)}")
        _choice("data.transforms", self.transforms, TRANSFORMS)
        _choice("data.mode", self.mode, DATA_MODES)
        if self.name != "imagefolder" and (self.transforms == "crop" or self.mode == "stream"):
            what = "data.transforms=crop" if self.transforms == "crop" else "data.mode=stream"
            raise ValueError(f"{what} needs data=imagefolder ({self.name} is held in memory and resized "
                             "whole); drop the override or use an image folder")
        _positive("data.memory_budget_gb", self.memory_budget_gb)
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"data.workers must be an integer >= 0 (0: read in the trial's own process), "
                             f"got {self.workers}")
        _number("data.val_fraction", self.val_fraction, 0 < self.val_fraction < 1, "in (0, 1)")
        if not 0 <= self.split_seed <= MAX_SEED:
            raise ValueError(f"data.split_seed must be an integer in [0, {MAX_SEED}], got {self.split_seed}")
        if self.name not in BUILT_IN and not self.root:
            raise ValueError(f"data.root must name the folder holding {self.name} "
                             f"(data.root=/path/to/it), got {self.root!r}")
        _positive_int("data.num_images", self.num_images)
        _positive_int("data.image_px", self.image_px)
        sizes = {"digits": 1797, "synthetic": self.num_images or 2000, "cifar10": 50000, "cifar100": 50000}
        if self.name in sizes:  # the split's arithmetic (data._split), checked before anything loads
            n = min(sizes[self.name], self.num_images or sizes[self.name])
            train = n - max(1, round(n * self.val_fraction))
            if train < 2:
                raise ValueError(f"{self.name} with data.num_images={self.num_images} and data.val_fraction="
                                 f"{self.val_fraction:g} leaves {train} training and {n - train} validation "
                                 "images; give more images (data.num_images) or a smaller val_fraction")


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides how a proxy trains (the ``trainer`` config group)."""

    epochs: int = 5
    batch_size: int = 64
    eval_batch_size: int = 512
    optimizer: str = "sgd"  # one of OPTIMIZERS
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-5
    lr_schedule: str = "cosine"  # one of LR_SCHEDULES
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.1
    device: str = "auto"  # one of DEVICES
    amp: bool = True  # mixed precision, on CUDA only
    num_threads: int | None = None  # CPU threads of this process; None leaves torch's default
    # Channels-last (NHWC) model and batches on a CPU: oneDNN's fast convolutions want it
    # (measured 1.4-2.1x, benchmarks/bench_trainer.py).
    channels_last: bool = True
    # The same on a GPU. Off by default: at the demo's 32-45 px, cuDNN's heuristics picked NHWC
    # kernels that ran the proxy at 0.14x a plain NCHW loop on an H200, and NHWC was fast only
    # with the autotuner, whose first pass cost 10-45 s per process (docs/benchmarks.md).
    cuda_channels_last: bool = False
    compile: bool = False  # torch.compile the model: pays only for long trials (docs/benchmarks.md)
    # On CUDA, forward and backward recorded once as a CUDA graph and replayed per step: a small
    # proxy's eager step is bound by kernel launches (docs/benchmarks.md).
    cuda_graphs: bool = True
    # cuDNN's autotuner per layer shape, on CUDA. It times every algorithm of every new shape in
    # each process: on an H200 the demo proxy's first trial in a process trained 8 epochs in
    # 19.6 s with it against 0.8 s for the same trial again, so short proxies pay more than
    # they gain (docs/benchmarks.md).
    cudnn_benchmark: bool = False
    # Each residual block starts as the identity (network.py): deep stacks train at SGD's usual
    # rates; an adaptive optimizer at a small lr grows the zeroed scales slowly at first.
    zero_init_residual: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            _positive_int(f"trainer.{name}", getattr(self, name))
        _choice("trainer.optimizer", self.optimizer, OPTIMIZERS)
        _choice("trainer.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("trainer.device", self.device, DEVICES)
        _number("trainer.lr", self.lr, self.lr > 0, "> 0")
        _number("trainer.momentum", self.momentum, 0 <= self.momentum < 1, "in [0, 1)")
        _number("trainer.weight_decay", self.weight_decay, self.weight_decay >= 0, ">= 0")
        _number("trainer.label_smoothing", self.label_smoothing, 0 <= self.label_smoothing < 1, "in [0, 1)")
        _number("trainer.warmup_epochs", self.warmup_epochs, self.warmup_epochs >= 0, ">= 0")
        _positive_int("trainer.num_threads", self.num_threads)
        if self.device == "cuda" and not _has_cuda():
            raise ValueError("trainer.device=cuda but this machine has no CUDA GPU; "
                             "use trainer.device=auto or cpu")


@dataclass(frozen=True)
class RaySettings:
    """How trials are placed (the ``runner`` config group, ``runner=ray``).

    Attributes:
        address: an existing cluster (``ray://host:10001`` or ``auto``); None starts a local Ray.
        num_cpus: CPUs of a local Ray; None = all of this machine's.
        cpus_per_trial, gpus_per_trial: resources of one trial; a fraction of a GPU packs
            several small proxies on one GPU. ``gpus_per_trial=None`` (the default) means
            ``AUTO_GPUS_PER_TRIAL`` where the Ray cluster has GPUs and 0 where it has none.
        max_concurrent: cap on trials at once; None = as many as resources allow.
        asha: stop poor trials early with ASHA on ``val/top1`` (by epoch).
        grace_period, reduction_factor: ASHA's minimum epochs and halving rate.
        checkpoint: save each epoch's state so a restored trial resumes mid-way.
    """

    address: str | None = None
    num_cpus: int | None = None
    cpus_per_trial: float = 1
    gpus_per_trial: float | None = None
    max_concurrent: int | None = None
    asha: bool = False
    grace_period: int = 1
    reduction_factor: int = 3
    checkpoint: bool = True

    def __post_init__(self) -> None:
        _positive_int("runner.num_cpus", self.num_cpus)
        _positive("runner.cpus_per_trial", self.cpus_per_trial)
        gpus = self.gpus_per_trial
        if gpus is not None:
            _number("runner.gpus_per_trial", gpus, gpus >= 0, ">= 0 (or null)")
        if gpus is not None and gpus > 1 and gpus != int(gpus):
            raise ValueError(f"runner.gpus_per_trial above 1 must be whole, got {gpus}")
        _positive_int("runner.max_concurrent", self.max_concurrent)
        _positive_int("runner.grace_period", self.grace_period)
        if self.reduction_factor < 2:
            raise ValueError(f"runner.reduction_factor must be >= 2, got {self.reduction_factor}")


def storage_url(storage: str | None, run_dir: Path) -> str:
    """The given SQLAlchemy URL, or a SQLite file in ``run_dir``."""
    if storage:
        if not isinstance(storage, str) or "://" not in storage:
            raise ValueError(f"study.storage must be an SQLAlchemy URL such as sqlite:///abs/path.db "
                             f"or postgresql+psycopg2://user@host/db, got {storage!r}")
        return storage
    return f"sqlite:///{Path(run_dir).resolve() / 'optuna.db'}"


# ---------------------------------------------------------------------------------------------
# Schemas: what OmegaConf checks the composed configs against.

def schema(cls: type, name: str) -> type:
    """``cls``'s fields, types and defaults as a plain dataclass, which OmegaConf takes as a schema.

    A frozen dataclass would make its config node read-only, and OmegaConf has no ``Literal``:
    such a field is a ``str`` in the schema, checked when ``cls`` itself is built from it. A field
    without a default is mandatory (``???``).
    """
    hints = typing.get_type_hints(cls)
    return make_dataclass(name, [
        (f.name, str if typing.get_origin(hints[f.name]) is Literal else hints[f.name],
         field(default=MISSING if f.default is NO_DEFAULT else f.default))
        for f in fields(cls)])


RoundingConfig = schema(Rounding, "RoundingConfig")
DataConfig = schema(DataSettings, "DataConfig")
TrainConfig = schema(TrainSettings, "TrainConfig")
CoefficientsConfig = schema(Coefficients, "CoefficientsConfig")


@dataclass
class BackboneConfig:
    """The ``backbone`` config group: a registry name, and the tag that prefixes trial ids."""

    name: str = MISSING
    tag: str | None = None  # None: the name


@dataclass
class RunnerConfig(schema(RaySettings, "RayConfig")):
    """The ``runner`` config group: the runner's kind, and the fields of ``RaySettings``."""

    kind: str = "ray"  # ray, local or (Step 1 only) optuna_tpe
    n_trials: int = 20  # optuna_tpe: how many (alpha, beta, gamma) it samples
    executor: str = "ray"  # optuna_tpe: what trains its samples, one of EXECUTORS


@dataclass
class StudyConfig:
    storage: str | None = None  # an SQLAlchemy URL; None: sqlite:///<out_dir>/optuna.db
    name: str | None = None  # None: the out_dir's name


@dataclass
class AppConfig:
    """What the configs of both apps hold."""

    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    rounding: RoundingConfig = field(default_factory=RoundingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainConfig = field(default_factory=TrainConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    seed: int = 0
    study: StudyConfig = field(default_factory=StudyConfig)
    dry_run: bool = False
    report: bool = True
    imports: list[str] = field(default_factory=list)
    out_dir: str = MISSING


@dataclass
class BaseNetworkConfig:
    """The unscaled network's depth and width multipliers."""

    depth_mult: float = 1.0
    width_mult: float = 1.0


@dataclass
class ProxyConfig(BaseNetworkConfig):
    resolution_px: int | None = None  # None: the backbone's own


@dataclass
class SpaceConfig:
    """The ``space`` config group: the arguments of ``SearchSpace.from_values``."""

    depth_range: list[float] = MISSING
    width_range: list[float] = MISSING
    resolution_range: list[float] = MISSING
    step: float = MISSING
    target: float = MISSING
    tolerance: float = MISSING
    filter_on: str = "formula"


@dataclass
class EmitConfig:
    phis: list[float] = field(default_factory=lambda: [1, 2, 3, 4, 5, 6, 7])
    num_classes: int = 1000


@dataclass
class RacingConfig:
    """Seed racing (``steps.racing``): every candidate on one seed, more seeds only to those still
    tied with the best, up to ``seeds_per_candidate`` seeds or ``budget_train_macs``."""

    enabled: bool = False
    budget_train_macs: float | None = None  # None: no compute budget beyond the seed budget


@dataclass
class StatsConfig:
    """What the console and the dry run say about the verdict's power before training
    (``analysis.power``)."""

    expected_error: float = 0.05  # the candidates' top-1 error the power statement assumes
    min_difference: float = 0.01  # a detectable difference above this is said, with the knobs


@dataclass(frozen=True)
class StatsSettings:
    """``stats.*``: the power statement's assumption and its threshold (fractions of top-1)."""

    expected_error: float = 0.05
    min_difference: float = 0.01

    def __post_init__(self) -> None:
        _number("stats.expected_error", self.expected_error, 0 < self.expected_error < 1, "in (0, 1)")
        _number("stats.min_difference", self.min_difference, 0 < self.min_difference < 1, "in (0, 1)")


@dataclass
class GridConfig(AppConfig):
    """The schema of ``conf/grid.yaml``."""

    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    space: SpaceConfig = field(default_factory=SpaceConfig)
    seeds_per_candidate: int = 1
    racing: RacingConfig = field(default_factory=RacingConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    include_baseline: bool = True
    freeze: str = "best"  # one of FREEZE_RULES
    emit: EmitConfig = field(default_factory=EmitConfig)


@dataclass
class ConstraintConfig:
    target: float = 2.0
    tolerance: float | None = 0.1  # None: scale any coefficients


@dataclass
class RegularisationConfig:
    """``plan.rules.Regularisation``: dropout and drop-path growing with a member's cost."""

    dropout: list[float] | None = field(default_factory=lambda: [0.2, 0.5])
    drop_path: list[float] | None = None
    end_macs_ratio: float | None = None


@dataclass
class ScaleConfig(AppConfig):
    """The schema of ``conf/scale.yaml``."""

    coefficients: CoefficientsConfig = field(default_factory=CoefficientsConfig)
    coefficients_file: str | None = None
    constraint: ConstraintConfig = field(default_factory=ConstraintConfig)
    phis: list[float] = MISSING
    base: BaseNetworkConfig = field(default_factory=BaseNetworkConfig)
    resolution_px: int | None = None
    num_classes: int = 1000
    compare_published: bool = True
    train: bool = False
    rule: str = COMPOUND  # the rule of the emitted family (emission only; see plan.rules)
    baselines: list[Any] = field(default_factory=lambda: list(DIMENSIONS))  # rules: names or weights
    regularisation: RegularisationConfig = field(default_factory=RegularisationConfig)
    seeds_per_member: int = 1
    macs_tolerance: float = 0.05  # a verdict between networks whose MACs differ by more is flagged


def checked(config_schema: type, cfg: object) -> Any:
    """``cfg`` (a composed Hydra config, or a plain mapping) checked against ``config_schema``.

    OmegaConf rejects unknown keys, wrong types and values left ``???``, naming the key; the
    result is the schema's dataclass, interpolations resolved.
    """
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(config_schema), cfg))


# ---------------------------------------------------------------------------------------------
# From a checked config to the settings.

def _build(cls: type, values: object, where: str):
    """``cls(**vars(values))``, its ValueError naming the config key (``rounding.repeats ...``)."""
    try:
        return cls(**vars(values))
    except ValueError as e:
        msg = str(e)
        raise ValueError(msg if msg.startswith(f"{where}.") else f"{where}.{msg}") from None


def _out_dir(value: str, replaced: bool) -> Path:
    """``out_dir``, absolute, once it is known to be a folder this user can create or write.

    ``replaced``: the run puts a new folder in its place (``scale``'s emission), so the folder
    that holds it is written too. Nothing is created here.
    """
    if not value:
        raise ValueError(f"out_dir must be a folder path, got {value!r}")
    path = Path(value).expanduser().resolve()
    written = path.parent if replaced else path
    try:
        if path.exists() and not path.is_dir():
            raise ValueError(f"out_dir {str(path)!r} is a file, not a folder; give the path of a new folder "
                             "or of a run's folder")
        nearest = next(p for p in (written, *written.parents) if p.exists())
    except OSError as e:
        raise ValueError(f"out_dir {str(path)!r} cannot be reached ({e.strerror}: {e.filename}); "
                         "choose another out_dir") from None
    if not nearest.is_dir():
        raise ValueError(f"out_dir {str(path)!r} cannot be created: {str(nearest)!r} is a file")
    if not os.access(nearest, os.W_OK | os.X_OK):
        what = "is not writable" if nearest == path else f"cannot be created: {str(nearest)!r} is not writable"
        raise ValueError(f"out_dir {str(path)!r} {what} by this user; choose another out_dir "
                         "or change that folder's permissions")
    return path


def _shared(c: AppConfig, replaced: bool = False) -> dict:
    """The settings both apps take from the parts of the config they share."""
    imports = import_plugins(c.imports)  # first: they may register the backbone
    get_backbone(c.backbone.name)
    return dict(backbone=c.backbone.name, imports=imports, rounding=_build(Rounding, c.rounding, "rounding"),
                out_dir=_out_dir(c.out_dir, replaced), dry_run=c.dry_run, report=c.report)


def check_growth(name: str, phis: Sequence[float], growth: Mapping[str, tuple[float, float]], fix: str) -> None:
    """At every φ of ``phis``, each dimension grows by ``base * coefficient**φ`` at most ``MAX_SCALE``.

    ``growth`` maps a dimension to its (base, coefficient), a coefficient >= 1, so the largest φ
    decides. Compared as logarithms: a huge φ neither overflows nor hangs. ``fix`` says what to
    change; ``{max_phi}`` in it becomes the largest φ that passes.
    """
    for phi in phis:
        if not math.isfinite(phi):
            raise ValueError(f"{name} must be finite numbers, got {phi}")
    if not phis:
        raise ValueError(f"{name} must be a non-empty list of numbers, got []")
    named: dict[str, float] = {}
    for phi in phis:  # members and files are named by phi's 6 significant digits (family.phi_tag)
        if f"{phi:g}" in named:
            first = named[f"{phi:g}"]
            raise ValueError(f"{name} lists phi={first!r} and phi={phi!r}, which name the same member "
                             f"(phi{phi:g}); give each phi once, differing in its first 6 digits")
        named[f"{phi:g}"] = phi
    phi, limit = max(phis), math.log(MAX_SCALE)
    for dimension, (base, coefficient) in growth.items():
        log = math.log(base) + phi * math.log(coefficient)
        if log > limit:
            max_phi = min((limit - math.log(b)) / math.log(c) for b, c in growth.values() if c > 1)
            power = f"{coefficient:g}^{phi:g}" if base == 1 else f"{base:g} x {coefficient:g}^{phi:g}"
            size = f"{math.exp(log):.3g}" if log < 700 else f"about 10^{log / math.log(10):.0f}"
            raise ValueError(f"{name}: at phi={phi:g} the {dimension} grows by {power} = {size}x, over the "
                             f"limit of {MAX_SCALE:,}x; {fix.format(max_phi=max_phi)}")


def _training(c: AppConfig, seeds: int, seeds_name: str) -> dict:
    """The settings of what trains, from the parts of the config both apps share."""
    _seeds(c.seed, seeds, seeds_name)
    if c.study.storage is not None:
        storage_url(c.study.storage, Path("."))  # the format; the connection is tried before a run
    ray = {f.name: getattr(c.runner, f.name) for f in fields(RaySettings)}
    trainer, runner = _build(TrainSettings, c.trainer, "trainer"), RaySettings(**ray)
    if runner.asha and runner.grace_period >= trainer.epochs:
        raise ValueError(f"runner.grace_period={runner.grace_period} with trainer.epochs={trainer.epochs}: ASHA "
                         "stops no trial before its grace period ends, so it would stop none; lower "
                         "runner.grace_period below the epochs, or set runner.asha=false")
    return dict(data=_build(DataSettings, c.data, "data"), trainer=trainer,
                runner_kind=c.runner.kind, runner=runner, seed=c.seed,
                study_storage=c.study.storage, study_name=c.study.name)


def coefficients_from(values: Mapping, require_at_least_one: bool = True) -> Coefficients:
    """α, β, γ from ``{depth_coef, width_coef, resolution_coef}``; each >= 1 unless told otherwise."""
    try:
        coefficients = Coefficients(**values)
        return coefficients.require_at_least_one() if require_at_least_one else coefficients
    except ValueError as e:
        raise ValueError(f"coefficients.{e}") from None


COEFFICIENT_KEYS = ("depth_coef", "width_coef", "resolution_coef")


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (plain YAML keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"{key} is given twice", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _searched_backbone(text: str) -> str | None:
    """The backbone a Step-1 ``coefficients.yaml`` was found with, from its header."""
    import re

    m = re.match(r"# Step-1 winner of .* \((\S+) proxy on ", text)
    return m.group(1) if m else None


def coefficients_file(path: str, backbone: str | None = None) -> tuple[Coefficients, str]:
    """α, β, γ from a Step-1 ``coefficients.yaml`` (or the run folder holding one); refused when
    its header says a search of another backbone than ``backbone`` found them."""
    p = Path(path).expanduser().resolve()
    if p.is_dir() or (not p.exists() and not p.suffix):  # a run folder
        p = p / "coefficients.yaml"
    if not p.is_file():
        raise ValueError(f"coefficients_file {str(p)!r} does not exist; give a Step-1 run's "
                         "coefficients.yaml (or its run folder)")
    try:
        text = p.read_text()
        d = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"coefficients_file {str(p)!r} is not valid YAML ({problem})") from None
    searched = _searched_backbone(text)
    if backbone is not None and searched is not None and searched != backbone:
        raise ValueError(f"coefficients_file {str(p)!r} was found by a {searched} search, and this run scales "
                         f"{backbone}: give backbone={searched}, or copy its three numbers into coefficients.* "
                         "to use them on another backbone")
    if not isinstance(d, Mapping) or set(d) != set(COEFFICIENT_KEYS):
        got = sorted(d) if isinstance(d, Mapping) else type(d).__name__
        raise ValueError(f"coefficients_file {str(p)!r} must hold exactly {', '.join(COEFFICIENT_KEYS)} "
                         f"(got {got})")
    for k in COEFFICIENT_KEYS:
        if isinstance(d[k], bool) or not isinstance(d[k], (int, float)):
            raise ValueError(f"coefficients_file {str(p)!r}: {k} must be a number, got {d[k]!r}")
    try:
        return coefficients_from(d), str(p)
    except ValueError as e:
        raise ValueError(f"coefficients_file {str(p)!r}: {e}") from None


def check_constraint(c: Coefficients, constraint: ConstraintConfig, source: str | None = None) -> None:
    """|α·β²·γ² − target| ≤ tolerance (skipped when the tolerance is None)."""
    target, tolerance = constraint.target, constraint.tolerance
    if tolerance is None:
        return
    for k, v in (("target", target), ("tolerance", tolerance)):
        _number(f"constraint.{k}", v, v >= 0, ">= 0")
    if abs(c.product - target) > tolerance + 1e-12:
        where = f"coefficients_file {source!r}" if source else "coefficients"
        raise ValueError(
            f"{where} break the constraint: alpha*beta^2*gamma^2 = {c.depth_coef:g}*{c.width_coef:g}^2*"
            f"{c.resolution_coef:g}^2 = {c.product:.4g}, not within {tolerance:g} of {target:g}; "
            "fix them, or set constraint.tolerance=null to scale anyway")


@dataclass(frozen=True)
class ScaleSettings:
    """Settings of ``python -m scaling_search.scale``: Step-2 emission, and training when ``train``.

    The family scales a base network (the backbone at ``base_depth_mult``, ``base_width_mult``
    and ``resolution_px``) by α^φ, β^φ, γ^φ. With ``train`` it is trained on ``data`` beside
    the scaling rules ``baselines`` (``plan.rules``), each matched to its measured MACs at each
    φ ≠ 0. Without it, ``rule`` says which family is emitted: the compound one, or another rule's
    matched to the compound members' MACs. ``regularisation`` sets each member's dropout.
    """

    backbone: str
    coefficients: Coefficients
    phis: tuple[float, ...]
    rounding: Rounding
    resolution_px: int | None
    num_classes: int
    out_dir: Path
    imports: tuple[str, ...] = ()
    compare_published: bool = True
    coefficients_source: str | None = None  # the coefficients file they came from, if any
    base_depth_mult: float = 1.0
    base_width_mult: float = 1.0
    train: bool = False
    backbone_tag: str | None = None
    baselines: tuple[ScalingRule, ...] = ()
    rule: ScalingRule | None = None  # None: the compound family
    regularisation: Regularisation = Regularisation()
    data: DataSettings | None = None
    trainer: TrainSettings | None = None
    runner_kind: str = "ray"
    runner: RaySettings | None = None
    seed: int = 0
    seeds_per_member: int = 1
    macs_tolerance: float = 0.05
    study_storage: str | None = None
    study_name: str | None = None
    dry_run: bool = False
    report: bool = True

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.seeds_per_member)]

    @property
    def tag(self) -> str:
        return self.backbone_tag or self.backbone

    @classmethod
    def from_config(cls, cfg: object) -> ScaleSettings:
        """From the composed ``conf/scale.yaml`` (or a mapping of the same shape)."""
        c: ScaleConfig = checked(ScaleConfig, cfg)
        trains = c.train or c.dry_run  # emission alone needs no data, trainer or runner
        shared = _shared(c, replaced=not trains)
        _positive_int("resolution_px", c.resolution_px)
        _positive_int("num_classes", c.num_classes)
        _multiplier("base.depth_mult", c.base.depth_mult)
        _multiplier("base.width_mult", c.base.width_mult)
        if c.coefficients_file is not None:
            if coefficients_from(vars(c.coefficients)) != PAPER_COEFFICIENTS:  # scale.yaml's defaults
                raise ValueError("coefficients.* and coefficients_file are both given, and the file would "
                                 "replace the coefficients; give one of them")
            coefficients, source = coefficients_file(c.coefficients_file, c.backbone.name)
        else:
            coefficients, source = coefficients_from(vars(c.coefficients)), None
        check_constraint(coefficients, c.constraint, source)
        bases = (c.base.depth_mult, c.base.width_mult, 1.0)
        alpha, beta, gamma = coefficients.depth_coef, coefficients.width_coef, coefficients.resolution_coef
        check_growth("phis", c.phis, dict(zip(DIMENSIONS, zip(bases, (alpha, beta, gamma)))),
                     "keep phis <= {max_phi:.3g} with these coefficients")
        regularisation = _build(Regularisation, c.regularisation, "regularisation")
        rule = None
        try:
            if c.rule != COMPOUND:
                rule = parse_rule(c.rule, coefficients)
        except ValueError as e:
            raise ValueError(f"rule: {e}") from None
        if rule is not None:
            if trains:
                raise ValueError(f"rule={c.rule} names the emitted family; with train=true the compound family "
                                 f"is trained: add {c.rule} to baselines instead and leave rule=compound")
            _check_rule_growth(c.phis, coefficients.product, bases, [rule])
        training = {}
        if trains:
            try:
                baselines = rules_of(c.baselines, coefficients)
            except ValueError as e:
                raise ValueError(f"baselines must be a list drawn from the scaling rules: {e}") from None
            _check_rule_growth(c.phis, coefficients.product, bases, baselines)
            _choice("runner.kind", c.runner.kind, ("ray", "local"),
                    " for Step 2 (it trains a fixed family; optuna_tpe samples Step-1 coefficients)")
            if not 0 < c.macs_tolerance < 1:
                raise ValueError(f"macs_tolerance must be a fraction between 0 and 1 (0.05: the MACs of "
                                 f"two compared networks may differ by 5%), not {c.macs_tolerance}")
            training = dict(_training(c, c.seeds_per_member, "seeds_per_member"),
                            baselines=tuple(baselines), seeds_per_member=c.seeds_per_member,
                            macs_tolerance=c.macs_tolerance)
        return cls(**shared, coefficients=coefficients, phis=tuple(c.phis), resolution_px=c.resolution_px,
                   num_classes=c.num_classes, compare_published=c.compare_published,
                   coefficients_source=source, base_depth_mult=c.base.depth_mult,
                   base_width_mult=c.base.width_mult, train=c.train, backbone_tag=c.backbone.tag,
                   rule=rule, regularisation=regularisation, **training)


def _check_rule_growth(phis: Sequence[float], product: float, bases: tuple[float, float, float],
                       rules: Sequence[ScalingRule]) -> None:
    """A rule matched to the compound member's MACs grows each dimension by its share of
    (alpha*beta^2*gamma^2)^phi: depth by product^e_d, width and resolution by product^(e/2) per
    unit of phi; under a resolution cap, depth and width take the resolution's share too."""
    growth = {}
    for rule in rules:
        d, w, r = rule.shares
        if rule.max_resolution_px is not None:  # at worst the cap takes all of r's share
            d, w, r = d / (d + w), w / (d + w), 0.0
        label = (lambda dim: f"{dim} of the {dim}-only baseline") if rule.name in DIMENSIONS \
            else (lambda dim, name=rule.name: f"{dim} of the {name} baseline")
        growth.update({label(dim): (b, product ** (e if dim == "depth" else e / 2))
                       for dim, b, e in zip(DIMENSIONS, bases, (d, w, r)) if e > 0})
    check_growth("phis", phis, growth, "keep phis <= {max_phi:.3g} with these coefficients, "
                 "or leave that baseline out")


def _check_space_growth(space: SearchSpace, proxy: ProxyConfig, emit_phis: Sequence[float],
                        runner_kind: str) -> None:
    """The largest candidate (φ = 1 on the proxy) and the winner's emitted family (``emit_phis``
    on the backbone) stay within ``MAX_SCALE``, whatever the search picks."""
    highs = [float(high) for _, high in space.ranges]
    if space.filter_on == "formula" or runner_kind == "optuna_tpe":
        # Kept coefficients satisfy alpha*beta^2*gamma^2 <= target + tolerance, each >= 1.
        cap = float(space.target + space.tolerance)
        highs = [min(highs[0], cap), min(highs[1], math.sqrt(cap)), min(highs[2], math.sqrt(cap))]
    check_growth("space", [1], dict(zip(DIMENSIONS, zip((proxy.depth_mult, proxy.width_mult, 1.0), highs))),
                 "narrow the space's ranges, or lower proxy.depth_mult and proxy.width_mult")
    check_growth("emit.phis", emit_phis, dict(zip(DIMENSIONS, zip((1.0, 1.0, 1.0), highs))),
                 "the winner's coefficients may reach the top of the space's ranges: "
                 "keep emit.phis <= {max_phi:.3g}, or narrow the ranges")


@dataclass(frozen=True)
class GridSettings:
    """Settings of ``python -m scaling_search.grid`` (Step 1), from its composed config."""

    backbone: str
    backbone_tag: str
    proxy_depth_mult: float
    proxy_width_mult: float
    proxy_resolution_px: int | None
    space: SearchSpace
    data: DataSettings
    trainer: TrainSettings
    runner_kind: str  # ray, local or optuna_tpe
    runner: RaySettings  # placement of trials (optuna_tpe uses it too)
    tpe_trials: int
    executor: str  # what trains optuna_tpe's samples: ray or local
    rounding: Rounding
    seed: int
    seeds_per_candidate: int
    include_baseline: bool
    dry_run: bool
    out_dir: Path
    study_storage: str | None
    study_name: str | None
    emit_phis: tuple[float, ...]
    emit_num_classes: int
    imports: tuple[str, ...] = ()
    report: bool = True
    freeze: str = "best"  # which candidate is frozen: FREEZE_RULES
    racing: bool = False  # seed racing over ``seeds`` (steps.racing) instead of every seed for all
    racing_budget_train_macs: float | None = None  # racing's compute budget (training MACs)
    stats: StatsSettings = StatsSettings()

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.seeds_per_candidate)]

    @classmethod
    def from_config(cls, cfg: object) -> GridSettings:
        """From the composed ``conf/grid.yaml`` (or a mapping of the same shape)."""
        c: GridConfig = checked(GridConfig, cfg)
        shared = _shared(c)
        _multiplier("proxy.depth_mult", c.proxy.depth_mult)
        _multiplier("proxy.width_mult", c.proxy.width_mult)
        _positive_int("proxy.resolution_px", c.proxy.resolution_px)
        _choice("runner.kind", c.runner.kind, GRID_RUNNERS)
        _choice("runner.executor", c.runner.executor, EXECUTORS)
        _positive_int("runner.n_trials", c.runner.n_trials)
        _positive_int("emit.num_classes", c.emit.num_classes)
        _choice("freeze", c.freeze, FREEZE_RULES,
                " (the best mean top-1, or the fewest MACs among those tied with it)")
        _check_racing(c)
        space = SearchSpace.from_values(**vars(c.space))
        _check_space_growth(space, c.proxy, c.emit.phis, c.runner.kind)
        return cls(**shared, **_training(c, c.seeds_per_candidate, "seeds_per_candidate"),
                   backbone_tag=c.backbone.tag or c.backbone.name,
                   proxy_depth_mult=c.proxy.depth_mult, proxy_width_mult=c.proxy.width_mult,
                   proxy_resolution_px=c.proxy.resolution_px, space=space,
                   tpe_trials=c.runner.n_trials, executor=c.runner.executor,
                   seeds_per_candidate=c.seeds_per_candidate, include_baseline=c.include_baseline,
                   freeze=c.freeze, racing=c.racing.enabled,
                   racing_budget_train_macs=c.racing.budget_train_macs,
                   stats=StatsSettings(c.stats.expected_error, c.stats.min_difference),
                   emit_phis=tuple(c.emit.phis), emit_num_classes=c.emit.num_classes)


def _check_racing(c: GridConfig) -> None:
    """Racing needs a grid to race and more than one seed to add; its budget is a positive number."""
    if c.racing.budget_train_macs is not None:
        _positive("racing.budget_train_macs", c.racing.budget_train_macs)
    if not c.racing.enabled:
        return
    if c.runner.kind == "optuna_tpe":
        raise ValueError("racing.enabled=true races a grid's candidates over seeds, and runner=optuna_tpe "
                         "samples its own; use runner=ray or runner=local")
    if c.seeds_per_candidate < 2:
        raise ValueError(f"racing.enabled=true adds seeds up to seeds_per_candidate (the seed budget), which is "
                         f"{c.seeds_per_candidate}; set seeds_per_candidate=3 (or more)")


# ---------------------------------------------------------------------------------------------
# Proxy fidelity: a finished Step-1 search's best and a few random candidates retrained longer.

# What makes a Step-1 run folder finished: its identity, its resolved config, its ranking and its winner.
FINISHED_SEARCH_FILES = ("search.json", "config.yaml", "ranking.csv", "coefficients.yaml")


@dataclass
class BudgetConfig:
    """The longer budget of the fidelity run, relative to the search's own."""

    epochs_factor: float = 4.0  # the search's epochs times this (rounded)
    resolution_scale: float = 1.0  # each candidate's resolution multiplier times this
    num_images: int | None = None  # None: the search's own data.num_images


@dataclass
class FidelityConfig:
    """The schema of ``conf/fidelity.yaml``."""

    run_dir: str = MISSING
    out_dir: str = MISSING  # the fidelity run's own folder; conf: ${run_dir}/fidelity
    top_k: int = 5
    random: int = 3
    seed: int = 0  # of the random draw
    seeds: int = 1  # training seeds per retrained candidate, from the search's first seed
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    study: StudyConfig = field(default_factory=StudyConfig)
    report: bool = True


def finished_search(value: str) -> Path:
    """``run_dir``, absolute, once it is known to hold a finished Step-1 search."""
    if not value:
        raise ValueError(f"run_dir must be the folder of a finished Step-1 search, got {value!r}")
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a folder"
        raise ValueError(f"run_dir {str(path)!r} {what}; give the out_dir of a finished grid search "
                         "(python -m scaling_search.grid)")
    missing = [f for f in FINISHED_SEARCH_FILES if not (path / f).is_file()]
    if missing:
        raise ValueError(f"run_dir {str(path)!r} is not a finished Step-1 run: it has no {', '.join(missing)}; "
                         "give the out_dir of a grid search that ran to its end (or re-run that search to "
                         "finish it)")
    return path


def _search_config(run_dir: Path) -> dict:
    """The resolved settings a Step-1 search recorded in its ``config.yaml``."""
    path = run_dir / "config.yaml"
    try:
        d = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ValueError(f"{str(path)!r} is damaged ({str(e).splitlines()[0]}); re-run that search "
                         "to rewrite it") from None
    needed = ("backbone", "data", "trainer", "rounding", "seed", "proxy_depth_mult", "proxy_width_mult",
              "proxy_resolution_px")
    if not isinstance(d, Mapping) or any(k not in d for k in needed):
        raise ValueError(f"{str(path)!r} does not hold a Step-1 search's settings (it needs "
                         f"{', '.join(needed)}); give the out_dir of a grid search")
    return dict(d)


def _recorded(cls: type, values: object, where: str, path: Path):
    """``cls(**values)`` from a search's recorded settings, its error naming the file."""
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where} recorded in {str(path)!r} cannot be used here ({e})") from None


def _recorded_number(kind: type, value: object, key: str, path: Path):
    """``kind(value)`` for a number a search recorded, its error naming the file and the key."""
    try:
        if isinstance(value, bool) or (kind is int and float(value) != int(float(value))):
            raise ValueError
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} recorded in {str(path)!r} is {value!r}, not a number; that file is damaged: "
                         "restore it, or re-run that search to rewrite it") from None


@dataclass(frozen=True)
class FidelitySettings:
    """Settings of ``python -m scaling_search.fidelity``: which of a finished search's candidates
    are retrained, at which budget, and how. Everything that decides a candidate's network and
    its training (backbone, proxy, rounding, data, trainer, imports) is the search's own, from
    its ``config.yaml``, with the budget applied: ``trainer.epochs`` times ``epochs_factor``,
    each resolution multiplier times ``resolution_scale``, and ``data.num_images`` where set."""

    run_dir: Path
    out_dir: Path
    top_k: int
    random: int
    seed: int  # of the random draw
    seeds: tuple[int, ...]  # training seeds of each retrained candidate
    epochs_factor: float
    resolution_scale: float
    num_images: int | None
    backbone: str
    backbone_tag: str
    proxy_depth_mult: float
    proxy_width_mult: float
    proxy_resolution_px: int | None
    rounding: Rounding
    data: DataSettings  # the search's, with the budget's num_images
    trainer: TrainSettings  # the search's, with the budget's epochs
    search_epochs: int
    runner_kind: str
    runner: RaySettings
    study_storage: str | None = None
    study_name: str | None = None
    imports: tuple[str, ...] = ()
    report: bool = True

    @classmethod
    def from_config(cls, cfg: object) -> FidelitySettings:
        """From the composed ``conf/fidelity.yaml`` (or a mapping of the same shape)."""
        c: FidelityConfig = checked(FidelityConfig, cfg)
        _positive_int("top_k", c.top_k)
        if c.random < 0:
            raise ValueError(f"random must be an integer >= 0 (how many more candidates to draw at random "
                             f"from those below the top-k), got {c.random}")
        if not 0 <= c.seed <= MAX_SEED:
            raise ValueError(f"seed (of the random draw) must be an integer in [0, {MAX_SEED}], got {c.seed}")
        _multiplier("budget.epochs_factor", c.budget.epochs_factor)
        _multiplier("budget.resolution_scale", c.budget.resolution_scale)
        _positive_int("budget.num_images", c.budget.num_images)
        _choice("runner.kind", c.runner.kind, EXECUTORS,
                " for the fidelity step (it retrains a fixed set of candidates)")
        if c.study.storage is not None:
            storage_url(c.study.storage, Path("."))
        run_dir = finished_search(c.run_dir)
        search = _search_config(run_dir)
        path = run_dir / "config.yaml"
        imports = import_plugins(search.get("imports") or [])  # first: they may register the backbone
        get_backbone(search["backbone"])
        data = dict(search["data"])
        if c.budget.num_images is not None:
            data["num_images"] = c.budget.num_images
        trainer = dict(search["trainer"])
        search_epochs = _recorded_number(int, trainer.get("epochs", 0), "trainer.epochs", path)
        epochs = round(search_epochs * c.budget.epochs_factor)
        if epochs < 1:
            raise ValueError(f"budget.epochs_factor={c.budget.epochs_factor:g} leaves {epochs} of the search's "
                             f"{search_epochs} epochs; the long budget needs at least 1")
        trainer["epochs"] = epochs
        first = _recorded_number(int, search["seed"], "seed", path)
        _seeds(first, c.seeds, "seeds")
        out_dir = _out_dir(c.out_dir, replaced=False)
        if out_dir == run_dir:
            raise ValueError(f"out_dir {str(out_dir)!r} is the search's own folder; the fidelity run needs a "
                             "folder of its own (the default: <run_dir>/fidelity)")
        ray = {f.name: getattr(c.runner, f.name) for f in fields(RaySettings)}
        return cls(run_dir=run_dir, out_dir=out_dir, top_k=c.top_k, random=c.random, seed=c.seed,
                   seeds=tuple(first + i for i in range(c.seeds)), epochs_factor=c.budget.epochs_factor,
                   resolution_scale=c.budget.resolution_scale, num_images=c.budget.num_images,
                   backbone=search["backbone"], backbone_tag=search.get("backbone_tag") or search["backbone"],
                   proxy_depth_mult=_recorded_number(float, search["proxy_depth_mult"], "proxy_depth_mult", path),
                   proxy_width_mult=_recorded_number(float, search["proxy_width_mult"], "proxy_width_mult", path),
                   proxy_resolution_px=search["proxy_resolution_px"],
                   rounding=_recorded(Rounding, search["rounding"], "rounding", path),
                   data=_recorded(DataSettings, data, "data", path),
                   trainer=_recorded(TrainSettings, trainer, "trainer", path), search_epochs=search_epochs,
                   runner_kind=c.runner.kind, runner=RaySettings(**ray), study_storage=c.study.storage,
                   study_name=c.study.name, imports=imports, report=c.report)
