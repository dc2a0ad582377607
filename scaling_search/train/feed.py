"""Batches for the trainer: from tensors held in memory, or from an image folder's cache.

Either way the trainer gets float32 batches on its device, normalised there, and never a
dataset-sized float copy on the GPU:

- ``TensorFeed`` (built-in, CIFAR, and image folders with ``resize`` held in memory): the whole
  set is resized once to the trial's resolution. On a CPU it is kept as normalised float32
  (small by the memory budget; the fastest loop there is). On a GPU it is kept as uint8 in
  pinned host memory; each batch is copied without blocking and converted on the GPU.
- ``LoaderFeed`` (image folders with ``crop``, or streamed): a DataLoader whose workers read
  uint8 images by offset from the cache file and apply torchvision's
  transforms to uint8: random-resized-crop and flip in training, resize to resolution / 0.875
  and centre crop in validation. For a GPU, uint8 batches are pinned and normalised on the
  GPU; for a CPU trial, the workers normalise them (the CPU is the trial's device), so the
  conversion runs beside the training steps instead of between them. "Held in memory" here
  means the OS page cache, read ahead once: one copy per node that every trial and worker
  shares, which measured faster than a copy in each trial (forked workers fault its pages in).

Both are deterministic for a seed: the shuffle, the flips and the crops are drawn from the
trainer's generator (a DataLoader's workers are seeded from it, per epoch), so a run resumed
from a checkpoint continues as if never stopped.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from scaling_search.train.data import CROP_RATIO, FolderData, ImageData
from scaling_search.train.image_folder import CachedFolder

Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


class _Normaliser:
    """uint8 (0-255) batch -> float32 normalised, on ``device``, in ``memory_format``."""

    def __init__(self, mean, std, device: torch.device, memory_format: torch.memory_format):
        self.m = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255
        self.inv = 1 / (torch.as_tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255)
        self.device, self.memory_format = device, memory_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        return x.float().sub_(self.m).mul_(self.inv)  # one float copy, in its layout


class _StackU8:
    """A DataLoader's collate step: the samples' uint8 images stacked in ``memory_format``, in the
    worker (a uint8 NCHW -> NHWC copy of a batch costs the training process some 20 ms at 160 px)."""

    def __init__(self, memory_format: torch.memory_format):
        self.memory_format = memory_format

    def __call__(self, samples) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([s[0] for s in samples]).contiguous(memory_format=self.memory_format)
        return x, torch.stack([s[1] for s in samples])


class TensorFeed:
    """The whole set resized once to the trial's resolution (today's in-memory path)."""

    def __init__(self, data: ImageData, resolution_px: int, batch: int, eval_batch: int,
                 device: torch.device, memory_format: torch.memory_format = torch.contiguous_format):
        self.flip, self.device, self.eval_batch = data.flip, device, eval_batch
        self.train_y, self.val_y = data.train_labels, data.val_labels
        self.batch = min(batch, len(self.train_y))
        self.steps_per_epoch = len(self.train_y) // self.batch  # the last partial batch is dropped
        self.num_val = len(self.val_y)
        if device.type == "cuda":
            mean, std = data.mean_std()
            self.train_x, self.val_x = (_resize_u8(x, resolution_px).pin_memory()
                                        for x in (data.train_images, data.val_images))
            self.convert = _Normaliser(mean, std, device, memory_format)
        else:  # indexing a channels-last tensor gives channels-last batches: no per-batch copy
            self.train_x, self.val_x = (x.contiguous(memory_format=memory_format)
                                        for x in data.at_resolution(resolution_px))
            self.convert = lambda x: x

    def train_batches(self, gen: torch.Generator) -> Batches:
        order = torch.randperm(len(self.train_y), generator=gen)
        flips = torch.rand(len(self.train_y), generator=gen) < 0.5 if self.flip else None
        for step in range(self.steps_per_epoch):
            idx = order[step * self.batch:(step + 1) * self.batch]
            x = self.convert(self.train_x[idx])
            if flips is not None:
                x = torch.where(flips[idx].to(x.device)[:, None, None, None], x.flip(-1), x)
            yield x, self.train_y[idx].to(self.device, non_blocking=True)

    def val_batches(self) -> Batches:
        for i in range(0, self.num_val, self.eval_batch):
            yield (self.convert(self.val_x[i:i + self.eval_batch]),
                   self.val_y[i:i + self.eval_batch].to(self.device, non_blocking=True))


def _resize_u8(images: torch.Tensor, px: int, chunk: int = 2048) -> torch.Tensor:
    """uint8 images resized to ``px`` (antialiased when shrinking), still uint8."""
    if images.shape[-1] == px and images.shape[-2] == px:
        return images.contiguous()
    out = torch.empty(images.shape[0], images.shape[1], px, px, dtype=torch.uint8)
    for i in range(0, images.shape[0], chunk):
        x = images[i:i + chunk].float()
        x = F.interpolate(x, size=(px, px), mode="bilinear", align_corners=False, antialias=x.shape[-1] > px)
        out[i:i + chunk] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out


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
        self.convert = _Normaliser(c.mean, c.std, device, memory_format)

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


def make_feed(data: ImageData | FolderData, resolution_px: int, batch: int, eval_batch: int,
              device: torch.device, memory_format: torch.memory_format = torch.contiguous_format
              ) -> TensorFeed | LoaderFeed:
    """The feed for ``data``, its batches in ``memory_format``: an image folder with ``resize``
    held in memory takes the tensor path."""
    if isinstance(data, FolderData):
        data = data.on_this_node()
        if data.in_memory and data.transforms == "resize":
            data = data.to_image_data()
        else:
            return LoaderFeed(data, resolution_px, batch, eval_batch, device, memory_format)
    return TensorFeed(data, resolution_px, batch, eval_batch, device, memory_format)
