"""Datasets for proxy training, decoded once per search into uint8 tensors shared by every trial.

Built in, with no download: ``digits`` (the 8×8 handwritten digits scikit-learn ships, UCI
optdigits) and ``synthetic`` (generated here, deterministic by seed). Real loaders:
``cifar10`` / ``cifar100`` (torchvision; downloads only when ``download=true``) and
``imagefolder`` (any folder of class sub-folders, with ``train/`` and ``val/`` or split here).

A search loads its dataset once (``load_dataset``) and hands the same ``ImageData`` to every
trial (through Ray's object store or in-process); each trial resizes it once to its own
resolution (``at_resolution``). The train/validation split depends on ``split_seed`` only, so
every trial and every training seed sees the same split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from scaling_search.settings import DataSettings


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


def load_image_folder(settings: DataSettings, image_px: int) -> ImageData:
    """A folder of class sub-folders (``root/train`` + ``root/val``, or ``root`` split here),
    decoded once, resized (shorter side) and centre-cropped to ``image_px``."""
    from torchvision import datasets, transforms  # lazy: only the dataset asked for is imported

    root = Path(settings.root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data.root {str(root)!r} is not a folder; point it at a folder of "
                                "class sub-folders (or with train/ and val/ inside)")
    tf = transforms.Compose([transforms.Resize(image_px), transforms.CenterCrop(image_px),
                             transforms.PILToTensor()])

    def decode(folder: Path):
        try:
            ds = datasets.ImageFolder(str(folder), transform=tf)
        except (FileNotFoundError, RuntimeError) as e:
            raise FileNotFoundError(f"no images in {str(folder)!r}: {e}") from None
        loader = torch.utils.data.DataLoader(ds, batch_size=256, num_workers=0)
        xs, ys = zip(*loader)
        return torch.cat(xs), torch.cat(ys).long(), ds.classes

    if (root / "train").is_dir() and (root / "val").is_dir():
        tx, ty, classes = decode(root / "train")
        vx, vy, val_classes = decode(root / "val")
        if val_classes != classes:
            raise ValueError(f"{root}/train and {root}/val have different class folders")
        return ImageData("imagefolder", tx, ty, vx, vy, len(classes), settings.flip)
    x, y, classes = decode(root)
    return _split(x, y, settings, "imagefolder", len(classes))


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
    root = Path(settings.root).expanduser()
    folder = root / "train" if (root / "train").is_dir() and (root / "val").is_dir() else root
    if not folder.is_dir():
        raise FileNotFoundError(f"data.root {str(root)!r} is not a folder; point it at a folder of "
                                "class sub-folders (or with train/ and val/ inside)")
    classes = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
    if not classes:
        raise FileNotFoundError(f"data.root {str(folder)!r} has no class sub-folders")
    if len(classes) < 2:
        raise ValueError(f"data.root {str(folder)!r} has one class folder ({classes[0].name}); a classifier "
                         "needs at least 2: add a folder of images for each class")
    return len(classes)


def load_dataset(settings: DataSettings, max_resolution_px: int = 224) -> ImageData:
    """Loads and decodes ``settings.name`` once.

    Args:
        max_resolution_px: the largest resolution a trial needs; ImageFolder images are
            decoded at this size unless ``image_px`` says otherwise.
    """
    if settings.name == "digits":
        return load_digits_data(settings)
    if settings.name == "synthetic":
        return load_synthetic(settings)
    if settings.name in ("cifar10", "cifar100"):
        return load_cifar(settings)
    return load_image_folder(settings, settings.image_px or max_resolution_px)


def train_image_count(s: DataSettings) -> int:
    """Training images a run will see (an image folder's files are counted, not decoded)."""
    sizes = {"digits": 1797, "synthetic": s.num_images or 2000, "cifar10": 50000, "cifar100": 50000}
    if s.name == "imagefolder":
        root = Path(s.root).expanduser()
        if (root / "train").is_dir() and (root / "val").is_dir():
            return sum(1 for p in (root / "train").rglob("*") if p.is_file())
        sizes["imagefolder"] = sum(1 for p in root.rglob("*") if p.is_file())
    n = sizes[s.name]
    if s.num_images is not None:
        n = min(n, s.num_images)
    return round(n * (1 - s.val_fraction))
