"""Batches for the trainer: from tensors held in memory, or from an image folder's cache.

Either way the trainer gets float32 batches on its device, normalised there.

On a CPU:
- ``TensorFeed`` (built-in, CIFAR, and image folders with ``resize`` held in memory): the whole
  set is resized once to the trial's resolution and kept as normalised float32 (small by the
  memory budget; the fastest loop there is).
- ``LoaderFeed`` (image folders with ``crop``, or streamed): a DataLoader whose workers read
  uint8 images by offset from the cache file and apply torchvision's transforms to uint8:
  random-resized-crop and flip in training, resize to resolution / 0.875 and centre crop in
  validation; the trial's process normalises them. "Held in memory" here means the OS page
  cache, read ahead once: one copy per node that every trial and worker shares.

On a GPU (``device_feed``): the set held on the GPU as uint8 (``device_feed.DeviceFeed``), or an
image folder that is not held in memory read by workers kept across epochs and cropped on the
GPU (``StreamFeed``); nothing random happens on the host but the epoch's draws.

All are deterministic for a seed: the shuffle, the flips and the crops are drawn from the
trainer's generator (a DataLoader's workers are seeded from it, per epoch), so a run resumed
from a checkpoint continues as if never stopped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from scaling_search.train.data import CROP_RATIO, FolderData, ImageData
from scaling_search.train.device_feed import (
    DeviceFeed,
    Normaliser,
    centre_crop_u8,
    crop_resize,
    random_resized_boxes,
    resize_u8,
)
from scaling_search.train.image_folder import CachedFolder

Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


class _StackU8:
    """A DataLoader's collate step: the samples' uint8 images stacked in ``memory_format``, in the
    worker (a uint8 NCHW -> NHWC copy of a batch costs the training process some 20 ms at 160 px)."""

    def __init__(self, memory_format: torch.memory_format):
        self.memory_format = memory_format

    def __call__(self, samples) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([s[0] for s in samples]).contiguous(memory_format=self.memory_format)
        return x, torch.stack([s[1] for s in samples])


class TensorFeed:
    """The whole set resized once to the trial's resolution, as normalised float32 in host
    memory: the CPU's path (a GPU trial takes ``DeviceFeed``)."""

    def __init__(self, data: ImageData, resolution_px: int, batch: int, eval_batch: int,
                 device: torch.device, memory_format: torch.memory_format = torch.contiguous_format):
        self.flip, self.device, self.eval_batch = data.flip, device, eval_batch
        self.train_y, self.val_y = data.train_labels, data.val_labels
        self.batch = min(batch, len(self.train_y))
        self.steps_per_epoch = len(self.train_y) // self.batch  # the last partial batch is dropped
        self.num_val = len(self.val_y)
        # indexing a channels-last tensor gives channels-last batches: no per-batch copy
        self.train_x, self.val_x = (x.contiguous(memory_format=memory_format)
                                    for x in data.at_resolution(resolution_px))

    def train_batches(self, gen: torch.Generator) -> Batches:
        order = torch.randperm(len(self.train_y), generator=gen)
        flips = torch.rand(len(self.train_y), generator=gen) < 0.5 if self.flip else None
        for step in range(self.steps_per_epoch):
            idx = order[step * self.batch:(step + 1) * self.batch]
            x = self.train_x[idx]
            if flips is not None:
                x = torch.where(flips[idx][:, None, None, None], x.flip(-1), x)
            yield x, self.train_y[idx]

    def val_batches(self) -> Batches:
        for i in range(0, self.num_val, self.eval_batch):
            yield self.val_x[i:i + self.eval_batch], self.val_y[i:i + self.eval_batch]


class CacheRows(torch.utils.data.Dataset):
    """Rows of an image cache, as (transformed uint8 image, label), read by offset (``pread``)."""

    def __init__(self, cache: CachedFolder, rows: tuple[int, ...], labels: tuple[int, ...], transform):
        self.path, self.px, self.size = cache.path, cache.px, cache.image_bytes
        self.rows, self.labels = torch.tensor(rows), torch.tensor(labels)
        self.transform = transform
        self._fd: tuple[int, int] | None = None  # (pid, fd): a forked worker opens its own

    def __len__(self) -> int:
        return len(self.rows)

    def _read(self, row: int) -> torch.Tensor:
        if self._fd is None or self._fd[0] != os.getpid():
            self._fd = (os.getpid(), os.open(self.path, os.O_RDONLY))
        buf = bytearray(os.pread(self._fd[1], self.size, row * self.size))
        return torch.frombuffer(buf, dtype=torch.uint8).view(3, self.px, self.px)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self._read(int(self.rows[i]))), self.labels[i]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None}

    def __del__(self) -> None:  # a reused Ray actor trains many trials: close what this process opened
        if self._fd is not None and self._fd[0] == os.getpid():
            os.close(self._fd[1])


def transforms_for(kind: str, resolution_px: int, flip: bool, train: bool):
    """torchvision's transforms on uint8 images (3, px, px): ``crop`` (the field's) or ``resize``."""
    from torchvision.transforms import v2  # lazy: only the DataLoader path needs it

    if kind == "crop" and train:
        steps = [v2.RandomResizedCrop(resolution_px, antialias=True)]
    elif kind == "crop":
        steps = [v2.Resize(round(resolution_px / CROP_RATIO), antialias=True), v2.CenterCrop(resolution_px)]
    else:
        steps = [v2.Resize((resolution_px, resolution_px), antialias=True)]
    if flip and train:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


def _read_ahead(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
    finally:
        os.close(fd)


class LoaderFeed:
    """DataLoader workers over an image cache, read per image through the page cache."""

    def __init__(self, data: FolderData, resolution_px: int, batch: int, eval_batch: int,
                 device: torch.device, memory_format: torch.memory_format = torch.contiguous_format):
        c = data.cache
        if data.in_memory:  # read ahead into the page cache: one copy per node, not per trial or worker
            _read_ahead(c.path)
        self.train_set = CacheRows(c, c.train_rows, c.train_labels,
                                   transforms_for(data.transforms, resolution_px, data.flip, True))
        self.val_set = CacheRows(c, c.val_rows, c.val_labels,
                                 transforms_for(data.transforms, resolution_px, data.flip, False))
        self.batch, self.eval_batch = min(batch, len(self.train_set)), eval_batch
        self.steps_per_epoch = len(self.train_set) // self.batch
        self.num_val = len(self.val_set)
        self.workers, self.device = data.workers, device
        # uint8 batches in the trial's layout (pinned on CUDA), normalised on the trial's device.
        # On a CPU, normalising in the workers instead was measured slower: a float batch is 4x
        # the bytes to hand over through shared memory (bench_data's pass of 6,000 images at
        # 160 px on 2 cores: 800-1,140 img/s against 1,960-2,080 for uint8).
        self.collate = _StackU8(memory_format)
        self.convert = Normaliser(c.mean, c.std, device, memory_format)

    def _loader(self, dataset, batch: int, gen: torch.Generator | None, train: bool):
        return torch.utils.data.DataLoader(
            dataset, batch_size=batch, shuffle=train, drop_last=train, generator=gen,
            num_workers=self.workers, pin_memory=self.device.type == "cuda", collate_fn=self.collate,
            prefetch_factor=4 if self.workers else None)

    def train_batches(self, gen: torch.Generator) -> Batches:
        # The epoch's shuffle and its workers' crops and flips, all from the trainer's generator.
        epoch_gen = torch.Generator().manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
        for x, y in self._loader(self.train_set, self.batch, epoch_gen, True):
            yield self.convert(x), y.to(self.device, non_blocking=True)

    def val_batches(self) -> Batches:
        for x, y in self._loader(self.val_set, self.eval_batch, None, False):
            yield self.convert(x), y.to(self.device, non_blocking=True)


class _EpochOrder(torch.utils.data.Sampler):
    """Batches of an order the feed sets before each epoch: a DataLoader with persistent
    workers re-reads its batch sampler in the main process each epoch, so the workers (started
    once per trial) never draw anything random."""

    def __init__(self, batch: int, drop_last: bool, count: int):
        self.batch, self.drop_last, self.order = batch, drop_last, torch.arange(count)

    def __iter__(self):
        n = len(self.order) // self.batch * self.batch if self.drop_last else len(self.order)
        for i in range(0, n, self.batch):
            yield self.order[i:i + self.batch].tolist()

    def __len__(self) -> int:
        n = len(self.order)
        return n // self.batch if self.drop_last else -(-n // self.batch)


class StreamFeed:
    """A GPU trial's image folder too large to hold on the device: DataLoader workers (started
    once per trial, one per CPU of the trial) read uint8 rows by offset and stack them in pinned
    memory; the crop, flip and normalisation run on the device, drawn as ``DeviceFeed`` draws
    them, so both give the same batches for a seed."""

    def __init__(self, data: FolderData, resolution_px: int, batch: int, eval_batch: int,
                 device: torch.device, memory_format: torch.memory_format = torch.contiguous_format,
                 workers: int | None = None):
        c = data.cache
        if data.in_memory:
            _read_ahead(c.path)
        identity = lambda x: x  # noqa: E731 - the rows as cached; the device transforms them
        self.train_set = CacheRows(c, c.train_rows, c.train_labels, identity)
        self.val_set = CacheRows(c, c.val_rows, c.val_labels, identity)
        self.batch, self.eval_batch = min(batch, len(self.train_set)), eval_batch
        self.steps_per_epoch = len(self.train_set) // self.batch
        self.num_val, self.px, self.cache_px = len(self.val_set), resolution_px, c.px
        self.crop, self.flip = data.transforms == "crop", data.flip
        self.device, self.normalise = device, Normaliser(c.mean, c.std, device, memory_format)
        n = data.workers if workers is None else workers
        self.sampler = _EpochOrder(self.batch, True, len(self.train_set))
        self.train_loader = self._loader(self.train_set, n, batch_sampler=self.sampler)
        self.val_loader = self._loader(self.val_set, n, batch_size=eval_batch)

    def _loader(self, dataset, workers: int, **kw):
        return torch.utils.data.DataLoader(
            dataset, num_workers=workers, pin_memory=self.device.type == "cuda",
            collate_fn=_StackU8(torch.contiguous_format), persistent_workers=workers > 0,
            prefetch_factor=4 if workers else None, **kw)

    def train_batches(self, gen: torch.Generator) -> Batches:
        n = len(self.train_set)
        order = torch.randperm(n, generator=gen)
        flips = torch.rand(n, generator=gen) < 0.5 if self.flip else None
        boxes = random_resized_boxes(n, self.cache_px, self.cache_px, gen) if self.crop else None
        self.sampler.order = order
        for step, (x, y) in enumerate(self.train_loader):
            idx = order[step * self.batch:(step + 1) * self.batch]
            x = x.to(self.device, non_blocking=True).float()
            f = flips[idx].to(self.device, non_blocking=True) if flips is not None else None
            if boxes is not None:
                x = crop_resize(x, boxes[idx].to(self.device, non_blocking=True), f, self.px)
            else:
                if x.shape[-1] != self.px:
                    x = F.interpolate(x, size=(self.px, self.px), mode="bilinear", align_corners=False,
                                      antialias=x.shape[-1] > self.px).round_().clamp_(0, 255)
                if f is not None:
                    x = torch.where(f[:, None, None, None], x.flip(-1), x)
            yield self.normalise(x), y.to(self.device, non_blocking=True)

    def val_batches(self) -> Batches:
        for x, y in self.val_loader:
            x = x.to(self.device, non_blocking=True)
            x = centre_crop_u8(x, self.px, CROP_RATIO) if self.crop else resize_u8(x, self.px)
            yield self.normalise(x), y.to(self.device, non_blocking=True)


def device_feed(data: ImageData | FolderData, resolution_px: int, batch: int, eval_batch: int,
                device: torch.device, memory_format: torch.memory_format = torch.contiguous_format,
                workers: int | None = None):
    """The feed of a trial whose batches are made on its device (a GPU): the set held there as
    uint8 (``DeviceFeed``), or an image folder that is not held in memory streamed through
    workers (``StreamFeed``, ``workers`` of them: the trial's CPUs unless ``data.workers`` says)."""
    if isinstance(data, FolderData):
        if not data.in_memory:
            return StreamFeed(data, resolution_px, batch, eval_batch, device, memory_format,
                              workers if data.settings is None or data.settings.workers is None else data.workers)
        c = data.cache
        images = c.read_all().to(device)
        train_x = images[torch.tensor(c.train_rows, device=device)]
        val_x = images[torch.tensor(c.val_rows, device=device)]
        del images
        return DeviceFeed((train_x, torch.tensor(c.train_labels)), (val_x, torch.tensor(c.val_labels)),
                          Normaliser(c.mean, c.std, device, memory_format), resolution_px, batch, eval_batch,
                          data.flip, crop=CROP_RATIO if data.transforms == "crop" else None)
    return DeviceFeed((data.train_images, data.train_labels), (data.val_images, data.val_labels),
                      Normaliser(*data.mean_std(), device, memory_format), resolution_px, batch, eval_batch,
                      data.flip)


def make_feed(data: ImageData | FolderData, resolution_px: int, batch: int, eval_batch: int,
              device: torch.device, memory_format: torch.memory_format = torch.contiguous_format,
              workers: int | None = None):
    """The feed for ``data``, its batches in ``memory_format``. On a GPU: ``device_feed``. On a
    CPU: an image folder with ``resize`` held in memory takes the tensor path, one with ``crop``
    or streamed the DataLoader path."""
    if isinstance(data, FolderData):
        data = data.on_this_node()
    if device.type == "cuda":
        return device_feed(data, resolution_px, batch, eval_batch, device, memory_format, workers)
    if isinstance(data, FolderData):
        if data.in_memory and data.transforms == "resize":
            data = data.to_image_data()
        else:
            return LoaderFeed(data, resolution_px, batch, eval_batch, device, memory_format)
    return TensorFeed(data, resolution_px, batch, eval_batch, device, memory_format)
