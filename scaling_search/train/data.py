"""Datasets for proxy training, decoded once per dataset and shared by every trial.

Built in, with no download: ``digits`` (the 8×8 handwritten digits scikit-learn ships, UCI
optdigits) and ``synthetic`` (generated here, deterministic by seed). Real loaders:
``cifar10`` / ``cifar100`` (torchvision; downloads only when ``download=true``) and
``imagefolder`` (any folder of class sub-folders, with ``train/`` and ``val/`` or split here).

Built-in and CIFAR data are small: a search decodes them once into an ``ImageData`` of uint8
tensors that goes to every trial (through Ray's object store or in-process), and each trial
resizes it once to its own resolution (``at_resolution``). An image folder is decoded once into
a disk cache (``image_folder.py``) and travels as a ``FolderData``, which only names the cache:
each trial holds its images in memory or streams them, by ``data.mode`` and the memory budget
(``feed.py`` turns either into batches). The train/validation split depends on ``split_seed``
only, so every trial and every training seed sees the same split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from scaling_search.settings import DataSettings
from scaling_search.train.image_folder import CachedFolder, ensure_cache, scan

CROP_RATIO = 0.875  # validation: resize to resolution / 0.875, centre-crop resolution (the field's)


@dataclass(frozen=True)
class ImageData:
    """A decoded dataset: uint8 images (N, 3, H, W) and int64 labels, split in two."""

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    num_classes: int
    flip: bool = False

    @property
    def native_px(self) -> int:
        return int(self.train_images.shape[-1])

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel mean and std of the training images, on the 0–1 scale."""
        x = self.train_images.float().div_(255)
        return x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3)).clamp_min(1e-3)

    def at_resolution(self, resolution_px: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Train and validation images as normalised float32 at ``resolution_px`` per side."""
        mean, std = self.mean_std()
        return (_resize_normalise(self.train_images, resolution_px, mean, std),
                _resize_normalise(self.val_images, resolution_px, mean, std))


def _resize_normalise(images: torch.Tensor, px: int, mean: torch.Tensor, std: torch.Tensor,
                      chunk: int = 2048) -> torch.Tensor:
    out = torch.empty(images.shape[0], images.shape[1], px, px)
    for i in range(0, images.shape[0], chunk):
        x = images[i:i + chunk].float().div_(255)
        if x.shape[-1] != px or x.shape[-2] != px:
            x = F.interpolate(x, size=(px, px), mode="bilinear", align_corners=False,
                              antialias=x.shape[-1] > px)
        out[i:i + chunk] = (x - mean[:, None, None]) / std[:, None, None]
    return out


def _split(images: torch.Tensor, labels: torch.Tensor, settings: DataSettings, name: str,
           num_classes: int) -> ImageData:
    g = torch.Generator().manual_seed(settings.split_seed)
    order = torch.randperm(len(labels), generator=g)
    if settings.num_images is not None and settings.name != "synthetic":
        order = order[:settings.num_images]
    n_val = max(1, round(len(order) * settings.val_fraction))
    val, train = order[:n_val], order[n_val:]
    if len(train) < 2:  # a training batch of one image breaks BatchNorm; none trains nothing
        raise ValueError(f"{name} with data.num_images={settings.num_images} and data.val_fraction="
                         f"{settings.val_fraction:g} leaves {len(train)} training and {len(val)} validation "
                         "images; give more images (data.num_images) or a smaller val_fraction")
    return ImageData(name, images[train].contiguous(), labels[train].contiguous(),
                     images[val].contiguous(), labels[val].contiguous(), num_classes, settings.flip)


def load_digits_data(settings: DataSettings) -> ImageData:
    """scikit-learn's 1,797 8×8 digits (grey 0–16), as 3-channel uint8 images."""
    from sklearn.datasets import load_digits  # lazy: only the dataset asked for is imported

    d = load_digits()
    x = torch.from_numpy(d.images).float().mul_(255 / 16).round_().to(torch.uint8)
    x = x[:, None].expand(-1, 3, -1, -1).contiguous()
    return _split(x, torch.from_numpy(d.target).long(), settings, "digits", 10)


def make_synthetic(num_images: int, image_px: int = 64, seed: int = 0,
                   num_classes: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose class is set by a global structure and a fine detail, deterministic by seed.

    Class ``c`` = (orientation ``c % 5``, texture ``c // 5``). The orientation of a wave that
    spans the whole image is global structure (it needs a large receptive field: depth). The
    texture of a small patch at a random place is a 2-pixel pattern (checkerboard or stripes)
    that averages to the same grey when the image is shrunk (it needs resolution). Noise,
    random phase, contrast and position make the two cues worth extra channels (width).
    """
    if num_classes != 10:
        raise ValueError("synthetic data has 10 classes (5 orientations x 2 textures)")
    if image_px < 16:
        raise ValueError(f"synthetic image_px must be >= 16, got {image_px}")
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_images) % num_classes
    labels = labels[torch.randperm(num_images, generator=g)]
    orient, texture = labels % 5, labels // 5
    yy, xx = torch.meshgrid(torch.arange(image_px).float(), torch.arange(image_px).float(), indexing="ij")
    theta = orient.float() * math.pi / 5 + (torch.rand(num_images, generator=g) - 0.5) * 0.25
    phase = torch.rand(num_images, generator=g) * 2 * math.pi
    period = image_px / 1.5
    proj = xx[None] * torch.cos(theta)[:, None, None] + yy[None] * torch.sin(theta)[:, None, None]
    wave = torch.sin(2 * math.pi * proj / period + phase[:, None, None])
    contrast = 0.25 + 0.15 * torch.rand(num_images, generator=g)
    img = 0.5 + contrast[:, None, None] * wave
    # The fine-detail patch: a quarter of the side, anywhere in the image.
    side = image_px // 4
    checker = ((yy[:side, :side] + xx[:side, :side]) % 2) * 2 - 1
    stripes = (xx[:side, :side] % 2) * 2 - 1
    top = torch.randint(0, image_px - side + 1, (num_images,), generator=g)
    left = torch.randint(0, image_px - side + 1, (num_images,), generator=g)
    for i in range(num_images):
        pattern = checker if texture[i] == 0 else stripes
        t, lf = int(top[i]), int(left[i])
        img[i, t:t + side, lf:lf + side] = 0.5 + 0.3 * pattern
    colour = 0.8 + 0.4 * torch.rand(num_images, 3, 1, 1, generator=g)
    img = img[:, None] * colour + 0.08 * torch.randn(num_images, 3, image_px, image_px, generator=g)
    return img.clamp_(0, 1).mul_(255).round_().to(torch.uint8), labels.long()


def load_synthetic(settings: DataSettings) -> ImageData:
    x, y = make_synthetic(settings.num_images or 2000, settings.image_px or 64, settings.split_seed)
    return _split(x, y, settings, "synthetic", 10)


def load_cifar(settings: DataSettings) -> ImageData:
    """CIFAR-10/100's training set via torchvision, with ``val_fraction`` of it held out."""
    from torchvision import datasets  # lazy: only the dataset asked for is imported

    base = datasets.CIFAR10 if settings.name == "cifar10" else datasets.CIFAR100
    root = Path(settings.root).expanduser()
    if not root.is_dir() and not settings.download:
        raise FileNotFoundError(f"data.root {str(root)!r} does not exist; point it at the folder "
                                f"holding {base.base_folder}/ or set data.download=true")

    class Unverified(base):  # same files and parsing, without torchvision's MD5 checks
        def _check_integrity(self) -> bool:
            return all((Path(self.root) / self.base_folder / name).is_file()
                       for name, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:  # the class names are not needed: the meta file is not unpickled
            self.classes = [str(i) for i in range(10 if settings.name == "cifar10" else 100)]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    cls = base if settings.verify else Unverified
    try:
        ds = cls(str(root), train=True, download=settings.download)
    except RuntimeError as e:
        raise FileNotFoundError(
            f"{settings.name} not found or corrupted under {str(root)!r} ({e}); set "
            f"data.download=true, or data.verify=false for a re-packed copy") from None
    x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return _split(x, torch.tensor(ds.targets).long(), settings, settings.name, len(ds.classes))


@dataclass(frozen=True)
class FolderData:
    """An image folder, decoded into a disk cache: what a trial needs to read it, not the images.

    ``in_memory``: with ``resize``, each trial holds the images in memory (``to_image_data``);
    with ``crop``, the cache is read ahead into the page cache once (``feed.LoaderFeed``). Else
    DataLoader workers stream it. ``transforms``: ``crop`` or ``resize`` (``DataSettings``).
    """

    name: str
    cache: CachedFolder
    transforms: str
    flip: bool
    in_memory: bool
    workers: int
    settings: DataSettings | None = None  # to build the cache again on a node that lacks it

    @property
    def num_classes(self) -> int:
        return self.cache.num_classes

    def on_this_node(self, out=None) -> FolderData:
        """This data with its cache present here: a cluster node whose ``data.cache_dir`` is on
        its own disk builds its copy once (under the same key, so every trial there shares it)."""
        if Path(self.cache.path).is_file() or self.settings is None:
            return self
        cache = ensure_cache(scan(self.settings), self.cache.px, self.settings.cache_dir,
                             self.settings.workers, out)
        if Path(cache.path).parent.name != Path(self.cache.path).parent.name:  # the content key
            raise ValueError(f"{self.settings.root} differs on this node from the driver's copy (another "
                             "file list, size or modification time); data.root must be the same folder on every node")
        return FolderData(self.name, cache, self.transforms, self.flip, self.in_memory, self.workers, self.settings)

    def to_image_data(self) -> ImageData:
        """The cached images as an in-memory ``ImageData`` (the ``resize`` transforms' path)."""
        images, c = self.cache.read_all(), self.cache
        return ImageData(self.name, images[list(c.train_rows)], torch.tensor(c.train_labels),
                         images[list(c.val_rows)], torch.tensor(c.val_labels), c.num_classes, self.flip)


def storage_px(settings: DataSettings, max_resolution_px: int) -> int:
    """The side images are cached at: ``image_px``, else what the largest trial needs (its
    validation resize, resolution / 0.875, for ``crop``; its resolution for ``resize``)."""
    if settings.image_px:
        return settings.image_px
    if settings.transforms == "crop":
        return math.ceil(max_resolution_px / CROP_RATIO)
    return max_resolution_px


def trial_bytes(settings: DataSettings, images: int, px: int, max_resolution_px: int) -> int:
    """Memory one trial needs to hold ``images`` decoded: uint8 at ``px``, plus a float32 copy at
    its resolution for the ``resize`` transforms."""
    held = images * 3 * px * px
    if settings.transforms == "resize":
        held += images * 3 * max_resolution_px ** 2 * 4
    return held


def _placement(in_memory: bool, transforms: str) -> str:
    if not in_memory:
        return "streamed from the cache"
    if transforms == "crop":  # feed.LoaderFeed: one copy per node, read ahead
        return "held in memory (the page cache, read ahead once and shared by the node's trials)"
    return "held in memory by each trial"


def load_image_folder(settings: DataSettings, max_resolution_px: int, out=None) -> FolderData:
    """Scans the folder, decodes it into the cache unless a run did before, and decides whether
    trials hold it in memory (``data.mode``; ``auto`` by ``data.memory_budget_gb``)."""
    import sys

    out = out or sys.stdout
    chosen = scan(settings)
    px = storage_px(settings, max_resolution_px)
    cache = ensure_cache(chosen, px, settings.cache_dir, settings.workers, out)
    need = trial_bytes(settings, len(cache.train_rows) + len(cache.val_rows), px, max_resolution_px)
    budget = settings.memory_budget_gb * 2**30
    in_memory = settings.mode == "memory" or (settings.mode == "auto" and need <= budget)
    why = (f"data.mode={settings.mode}" if settings.mode != "auto" else
           f"{need / 2**30:.2f} GB per trial {'within' if in_memory else 'over'} "
           f"data.memory_budget_gb={settings.memory_budget_gb:g}")
    print(f"image folder: {len(cache.train_rows):,} training and {len(cache.val_rows):,} validation images "
          f"at {px} px, {_placement(in_memory, settings.transforms)} ({why})",
          file=out, flush=True)
    return FolderData("imagefolder", cache, settings.transforms, settings.flip, in_memory,
                      2 if settings.workers is None else settings.workers, settings)


def num_classes_of(settings: DataSettings) -> int:
    """The class count without decoding anything (an image folder's sub-folders are counted)."""
    fixed = {"digits": 10, "synthetic": 10, "cifar10": 10, "cifar100": 100}
    if settings.name.startswith("cifar") and not settings.download:
        folder = "cifar-10-batches-py" if settings.name == "cifar10" else "cifar-100-python"
        if not (Path(settings.root).expanduser() / folder).is_dir():
            raise FileNotFoundError(f"data.root {settings.root!r} has no {folder}/; point it at the "
                                    "folder that holds it, or set data.download=true")
    if settings.name in fixed:
        return fixed[settings.name]
    return len(scan(settings).classes)  # the layout checked; files listed, none opened


def load_dataset(settings: DataSettings, max_resolution_px: int = 224, out=None) -> ImageData | FolderData:
    """Loads ``settings.name`` once: decoded into memory, or (an image folder) into its cache.

    Args:
        max_resolution_px: the largest resolution a trial needs; an image folder is cached at
            what that trial's transforms need, unless ``image_px`` says otherwise.
    """
    if settings.name == "digits":
        return load_digits_data(settings)
    if settings.name == "synthetic":
        return load_synthetic(settings)
    if settings.name in ("cifar10", "cifar100"):
        return load_cifar(settings)
    return load_image_folder(settings, max_resolution_px, out)


def _built_in_split(s: DataSettings) -> tuple[int, int]:
    """(training, validation) images of a built-in set, by ``_split``'s rule."""
    n = {"digits": 1797, "synthetic": s.num_images or 2000, "cifar10": 50000, "cifar100": 50000}[s.name]
    if s.num_images is not None:
        n = min(n, s.num_images)
    n_val = max(1, round(n * s.val_fraction))
    return n - n_val, n_val


def val_image_count(s: DataSettings) -> int:
    """Validation images a run will score every trial on (an image folder's listed, not decoded)."""
    return len(scan(s).val) if s.name == "imagefolder" else _built_in_split(s)[1]


def train_image_count(s: DataSettings) -> int:
    """Training images a run will see (an image folder's files are listed, not decoded)."""
    return len(scan(s).train) if s.name == "imagefolder" else _built_in_split(s)[0]
