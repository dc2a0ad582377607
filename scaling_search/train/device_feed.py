"""Batches from images held on the trial's device as uint8: shuffled, cropped, flipped and
normalised there, with no host round trip per batch (the GPU path).

A proxy trial on a GPU is short and its network small, so anything the host does per batch
(indexing a host tensor, a pageable copy, a DataLoader worker's crop) shows as idle GPU time.
``DeviceFeed`` uploads the set once per trial as uint8 (a quarter of float32's bytes) and keeps
every per-batch step on the device:

- ``resize`` (built-in, CIFAR, image folders with ``transforms=resize``): the set is resized
  once to the trial's resolution on the device (antialiased bilinear, rounded back to uint8);
  a batch is a gather, an optional flip and the normalisation.
- ``crop`` (image folders): the training images stay at the cache's size; each batch gets
  ImageNet's random-resized crop (scale 0.08-1, aspect 3/4-4/3, torchvision's ten tries and
  centre-crop fallback) and a horizontal flip as one affine resampling per image
  (``grid_sample``, bilinear), drawn from the trainer's generator. Validation images are resized
  once to resolution / 0.875 (antialiased) and centre-cropped, as torchvision's transforms do.

Every random draw comes from the trainer's CPU generator, once per epoch for the whole epoch
(one small copy), so a seed gives the same shuffle, crops and flips on any device and a resumed
run continues as if never stopped. The crop is bilinear without antialiasing: a crop is shrunk
by at most the cache size over the resolution (8/7 at the cache's default size), where
antialiasing changes little.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]
CROP_SCALE = (0.08, 1.0)  # torchvision's RandomResizedCrop defaults (Inception's)
CROP_RATIO_RANGE = (3 / 4, 4 / 3)
CROP_TRIES = 10


def random_resized_boxes(n: int, height: int, width: int, gen: torch.Generator,
                         scale: tuple[float, float] = CROP_SCALE,
                         ratio: tuple[float, float] = CROP_RATIO_RANGE) -> torch.Tensor:
    """``n`` crop boxes (top, left, height, width), in pixels, by torchvision's
    ``RandomResizedCrop.get_params`` rule, vectorised: up to ten tries of a random area and
    log-uniform aspect; the first that fits is taken, else a centre crop at the clamped aspect."""
    area = height * width
    u = torch.rand(n, CROP_TRIES, 4, generator=gen, dtype=torch.float64)
    target = area * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[..., 1])
    w = torch.sqrt(target * aspect).round()
    h = torch.sqrt(target / aspect).round()
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.int8).argmax(1)  # the first try that fits (0 where none does)
    pick = lambda t: t.gather(1, first[:, None])[:, 0]  # noqa: E731
    h, w = pick(h), pick(w)
    top = (pick(u[..., 2]) * (height - h + 1)).floor()
    left = (pick(u[..., 3]) * (width - w + 1)).floor()
    # torchvision's fallback: the whole image, cropped in the centre to the ratio's nearest bound
    in_ratio = width / height
    if in_ratio < ratio[0]:
        fw, fh = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        fh, fw = height, round(height * ratio[1])
    else:
        fw, fh = width, height
    none = ~fits.any(1)
    h = torch.where(none, torch.full_like(h, fh), h)
    w = torch.where(none, torch.full_like(w, fw), w)
    top = torch.where(none, torch.full_like(top, (height - fh) // 2), top)
    left = torch.where(none, torch.full_like(left, (width - fw) // 2), left)
    return torch.stack([top, left, h, w], 1).float()


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, flips: torch.Tensor | None, px: int) -> torch.Tensor:
    """Float images (B, C, H, W) cropped to ``boxes`` (B, 4: top, left, height, width in pixels),
    each resized to ``px`` x ``px`` (bilinear) and mirrored where ``flips``: one ``grid_sample``."""
    b, _, height, width = images.shape
    top, left, h, w = boxes.to(images.device, torch.float32).unbind(1)
    theta = torch.zeros(b, 2, 3, device=images.device)
    sx = w / width
    theta[:, 0, 0] = sx if flips is None else torch.where(flips.to(images.device), -sx, sx)
    theta[:, 0, 2] = (2 * left + w) / width - 1  # the box's centre, in [-1, 1] (align_corners=False)
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2 * top + h) / height - 1
    grid = F.affine_grid(theta, [b, images.shape[1], px, px], align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def resize_u8(images: torch.Tensor, px: int, chunk: int = 1024) -> torch.Tensor:
    """uint8 images (N, C, H, W) resized to ``px`` x ``px`` on their device (antialiased when
    shrinking), still uint8."""
    if images.shape[-1] == px and images.shape[-2] == px:
        return images.contiguous()
    out = torch.empty(images.shape[0], images.shape[1], px, px, dtype=torch.uint8, device=images.device)
    for i in range(0, images.shape[0], chunk):
        x = images[i:i + chunk].float()
        x = F.interpolate(x, size=(px, px), mode="bilinear", align_corners=False, antialias=x.shape[-1] > px)
        out[i:i + chunk] = x.round_().clamp_(0, 255).to(torch.uint8)
    return out


def centre_crop_u8(images: torch.Tensor, px: int, crop_ratio: float) -> torch.Tensor:
    """Validation's transform: resize to ``px / crop_ratio`` (antialiased), centre-crop ``px``."""
    big = resize_u8(images, round(px / crop_ratio))
    top = (big.shape[-2] - px) // 2
    left = (big.shape[-1] - px) // 2
    return big[..., top:top + px, left:left + px].contiguous()


class Normaliser:
    """A batch (uint8 0-255, or float on that scale) -> float32 normalised by the training set's
    per-channel ``mean`` and ``std`` (0-1 scale), on ``device``, in ``memory_format``."""

    def __init__(self, mean, std, device: torch.device, memory_format: torch.memory_format = torch.contiguous_format):
        self.m = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255
        self.inv = 1 / (torch.as_tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1) * 255)
        self.device, self.memory_format = device, memory_format

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        return x.float().sub_(self.m).mul_(self.inv)  # one float copy (none for a float batch), in its layout


class DeviceFeed:
    """A whole set on the normaliser's device as uint8; every per-batch step (gather, crop or
    flip, normalise) runs there.

    Args:
        train, val: (uint8 images (N, 3, H, W), int64 labels), on any device.
        crop: None: the set is resized once to ``resolution_px``; else random-resized crops of
            the stored images in training, and in validation a resize to ``resolution_px / crop``
            and a centre crop (``crop`` is the crop ratio, 0.875).
    """

    def __init__(self, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                 normalise: Normaliser, resolution_px: int, batch: int, eval_batch: int,
                 flip: bool = False, crop: float | None = None):
        device = self.device = normalise.device
        self.normalise, self.px, self.flip, self.crop = normalise, resolution_px, flip, crop
        self.eval_batch = eval_batch
        self.batch = min(batch, len(train[1]))
        self.steps_per_epoch = len(train[1]) // self.batch  # the last partial batch is dropped
        self.num_val = len(val[1])
        self.train_y, self.val_y = train[1].to(device), val[1].to(device)
        train_x, val_x = train[0].to(device), val[0].to(device)
        self.train_x = train_x if crop else resize_u8(train_x, resolution_px)
        self.val_x = centre_crop_u8(val_x, resolution_px, crop) if crop else resize_u8(val_x, resolution_px)

    @property
    def device_bytes(self) -> int:
        """What the feed holds on its device (uint8 images and int64 labels)."""
        return sum(t.numel() * t.element_size() for t in (self.train_x, self.val_x, self.train_y, self.val_y))

    def train_batches(self, gen: torch.Generator) -> Batches:
        n = len(self.train_y)
        order = torch.randperm(n, generator=gen)
        flips = torch.rand(n, generator=gen) < 0.5 if self.flip else None
        boxes = random_resized_boxes(n, self.train_x.shape[-2], self.train_x.shape[-1], gen) if self.crop else None
        order = order.to(self.device, non_blocking=True)
        flips = flips.to(self.device, non_blocking=True) if flips is not None else None
        boxes = boxes.to(self.device, non_blocking=True) if boxes is not None else None
        for step in range(self.steps_per_epoch):
            idx = order[step * self.batch:(step + 1) * self.batch]
            f = flips[idx] if flips is not None else None
            if boxes is not None:
                x = crop_resize(self.train_x[idx].float(), boxes[idx], f, self.px)
            elif f is not None:
                x = self.train_x[idx]
                x = torch.where(f[:, None, None, None], x.flip(-1), x)
            else:
                x = self.train_x[idx]
            yield self.normalise(x), self.train_y[idx]

    def val_batches(self) -> Batches:
        for i in range(0, self.num_val, self.eval_batch):
            yield self.normalise(self.val_x[i:i + self.eval_batch]), self.val_y[i:i + self.eval_batch]
