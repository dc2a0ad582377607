"""An image folder decoded once into a disk cache, read by every trial through the page cache.

``scan`` lists a folder of class sub-folders (``root/<class>/...``, or ``root/train`` and
``root/val``) and chooses the images a run uses (``data.num_images``, the split), without
opening them. ``ensure_cache`` decodes those images once, with a few threads (``decode.py``),
shorter side resized to ``px`` and centre-cropped, into one uint8 file of (N, 3, px, px) images
on local disk, and returns a small, picklable ``CachedFolder`` that names it. A trial either
reads the whole file into memory or has
DataLoader workers read images from it by offset (``os.pread``: the page cache, not the
process, holds the pages, so many trials on a node share one copy and a trial's RSS stays flat).

The cache is keyed by what decides its bytes: each chosen file's relative path, class, size
and modification time, the storage size and the format version. Adding, removing or changing a
file gives a new key; a re-run or another search on the same folder finds the old one. Builds
take a lock (``filelock``) and write under a unique temporary name that is renamed into place,
metadata last, so two processes building at once, or a build killed half-way, never leave a
cache that reads as complete. An image that Pillow cannot decode (corrupt, truncated) is skipped
with a line naming it; a file that cannot be read at all (permissions, a broken link) stops the
run with a line naming it, since that is the user's setup to fix, not data to drop.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from scaling_search.settings import DataSettings

FORMAT = 1  # bump when the cache's bytes for the same inputs change
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's
MAX_LISTED = 10  # skipped images named one per line, then a count


class ImageFolderError(ValueError):
    """The folder cannot be used as it is; the message names the file or folder and the fix."""


@dataclass(frozen=True)
class FolderScan:
    """The images a run uses: (path relative to ``root``, class index), train and validation."""

    root: str
    classes: tuple[str, ...]
    train: tuple[tuple[str, int], ...]
    val: tuple[tuple[str, int], ...]


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "scaling_search"


def _class_files(folder: Path, root: Path) -> tuple[list[str], list[list[str]]]:
    """Class names (sorted sub-folders) and each class's image files, relative to ``root``."""
    if not folder.is_dir():
        raise ImageFolderError(f"data.root {str(folder)!r} is not a folder; point it at a folder of class "
                               "sub-folders (or with train/ and val/ inside)")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        what = f"one class folder ({classes[0]})" if classes else "no class sub-folders"
        raise ImageFolderError(f"{str(folder)!r} has {what}; a classifier needs at least 2: add a folder "
                               "of images for each class")
    files = []
    for c in classes:
        found = []
        for dirpath, dirnames, names in os.walk(folder / c, followlinks=True):  # as ImageFolder walks
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            found += [os.path.relpath(os.path.join(dirpath, n), root) for n in sorted(names)
                      if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")]
        if not found:
            raise ImageFolderError(f"class folder {str(folder / c)!r} has no images "
                                   f"({', '.join(IMAGE_EXTENSIONS)}); add images or remove the folder")
        files.append(found)
    return classes, files


def _flat(files: list[list[str]]) -> list[tuple[str, int]]:
    return [(f, label) for label, fs in enumerate(files) for f in fs]


def _subset(items: list[tuple[str, int]], count: int, seed: int) -> list[tuple[str, int]]:
    """``count`` of ``items``, a random subset fixed by ``seed``, in folder order."""
    order = torch.randperm(len(items), generator=torch.Generator().manual_seed(seed))[:count]
    return [items[i] for i in sorted(order.tolist())]


def scan(settings: DataSettings) -> FolderScan:
    """The run's images, chosen by ``num_images``, ``val_fraction`` and ``split_seed``."""
    root = Path(settings.root).expanduser()
    if (root / "train").is_dir() and (root / "val").is_dir():
        classes, train_files = _class_files(root / "train", root)
        val_classes, val_files = _class_files(root / "val", root)
        if val_classes != classes:
            only_train, only_val = sorted(set(classes) - set(val_classes)), sorted(set(val_classes) - set(classes))
            raise ImageFolderError(f"{root}/train and {root}/val have different class folders (only in train: "
                                   f"{', '.join(only_train) or '-'}; only in val: {', '.join(only_val) or '-'}); "
                                   "give both the same classes")
        train, val = _flat(train_files), _flat(val_files)
        if settings.num_images is not None:
            n_train = round(settings.num_images * (1 - settings.val_fraction))
            train = _subset(train, min(n_train, len(train)), settings.split_seed)
            val = _subset(val, min(max(1, settings.num_images - n_train), len(val)), settings.split_seed + 1)
    else:
        classes, files = _class_files(root, root)
        items = _flat(files)
        order = torch.randperm(len(items), generator=torch.Generator().manual_seed(settings.split_seed))
        if settings.num_images is not None:
            order = order[:settings.num_images]
        n_val = max(1, round(len(order) * settings.val_fraction))
        val = [items[i] for i in sorted(order[:n_val].tolist())]
        train = [items[i] for i in sorted(order[n_val:].tolist())]
    if len(train) < 2:  # a training batch of one image breaks BatchNorm; none trains nothing
        raise ImageFolderError(f"{root} with data.num_images={settings.num_images} and data.val_fraction="
                               f"{settings.val_fraction:g} leaves {len(train)} training and {len(val)} "
                               "validation images; give more images (data.num_images) or a smaller val_fraction")
    return FolderScan(str(root), tuple(classes), tuple(train), tuple(val))


@dataclass(frozen=True)
class CachedFolder:
    """A decoded image folder on disk: (N, 3, px, px) uint8 at ``path``; which rows are which.

    Small and picklable: it travels to every trial (and every node) instead of the images.
    """

    path: str
    px: int
    count: int  # rows in the file, skipped images included (their rows are zeros)
    num_classes: int
    train_rows: tuple[int, ...]
    train_labels: tuple[int, ...]
    val_rows: tuple[int, ...]
    val_labels: tuple[int, ...]
    mean: tuple[float, float, float]  # per channel, 0-1 scale, over (a sample of) the training rows
    std: tuple[float, float, float]
    skipped: tuple[str, ...] = ()

    @property
    def image_bytes(self) -> int:
        return 3 * self.px * self.px

    def read_all(self) -> torch.Tensor:
        """Every row, as one (N, 3, px, px) uint8 tensor in memory."""
        arr = np.fromfile(self.path, dtype=np.uint8, count=self.count * self.image_bytes)
        return torch.from_numpy(arr).view(self.count, 3, self.px, self.px)


def _key(scan_: FolderScan, px: int) -> str:
    """What decides the cache's bytes: each file's path, class, size and mtime; the size; the format."""
    h = hashlib.sha256(f"scaling_search image cache v{FORMAT} px={px}\n".encode())
    root = Path(scan_.root)
    for rel, label in scan_.train + scan_.val:
        try:
            st = os.stat(root / rel)
        except OSError as e:
            raise ImageFolderError(f"cannot read {str(root / rel)!r}: {e.strerror}; fix or remove the file") from None
        h.update(f"{rel}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


DECODE_THREADS = 4  # the default: 4 threads decoded faster than 16 on a 16-core machine (docs/benchmarks.md)


def _decoded(items, root: Path, px: int, fd: int, workers: int):
    """(index, error or None) for each image, decoded by ``workers`` threads into the open file
    ``fd``, in index order. Pillow releases the GIL while it decodes and resizes, but not for the
    rest, so a few threads do most of what more can (and worker processes, tried, cost more to
    start than they saved on 2 cores: docs/benchmarks.md)."""
    from scaling_search.train.decode import decode

    def one(i: int):
        got = decode(str(root / items[i][0]), px)
        if isinstance(got, (str, tuple)):
            return i, got
        os.pwrite(fd, np.ascontiguousarray(got).tobytes(), i * 3 * px * px)
        return i, None

    with ThreadPoolExecutor(workers) as pool:
        yield from pool.map(one, range(len(items)))


def _progress(done: int, total: int, start: float, out) -> None:
    rate = done / max(time.perf_counter() - start, 1e-9)
    print(f"  decoded {done:,}/{total:,} images ({done / total:.0%}, {rate:,.0f} img/s)", file=out, flush=True)


def _build(scan_: FolderScan, px: int, folder: Path, workers: int, out) -> None:
    """Decodes every image into ``folder`` (images.u8, then meta.json, each renamed into place)."""
    items = scan_.train + scan_.val
    root, size = Path(scan_.root), 3 * px * px
    tag = f"{socket.gethostname()}.{os.getpid()}.partial"  # unique: a second builder never shares it
    tmp_images, tmp_meta = folder / f"images.u8.{tag}", folder / f"meta.json.{tag}"
    print(f"decoding {len(items):,} images of {scan_.root} at {px} px into {folder} "
          f"({workers} threads, once for every run on this folder)", file=out, flush=True)
    start, errors = time.perf_counter(), {}
    fd = os.open(tmp_images, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.ftruncate(fd, len(items) * size)

        tenth = 0
        for done, (i, err) in enumerate(_decoded(items, root, px, fd, workers), 1):
            if isinstance(err, tuple):
                raise ImageFolderError(f"cannot read {str(root / items[i][0])!r}: {err[1]}; fix or remove the file")
            if err is not None:
                errors[i] = err
            if done * 10 // len(items) > tenth and (len(items) >= 1000 or done == len(items)):
                tenth = done * 10 // len(items)  # a line per tenth on large folders, one on small
                _progress(done, len(items), start, out)
        os.fsync(fd)
    finally:
        os.close(fd)
    skipped = sorted(errors)
    for i in skipped[:MAX_LISTED]:
        print(f"skipped {root / items[i][0]} (not a readable image: {errors[i]})", file=out)
    if len(skipped) > MAX_LISTED:
        print(f"skipped {len(skipped) - MAX_LISTED} more images that could not be decoded "
              f"(all {len(skipped)} are listed in {folder / 'meta.json'})", file=out)
    meta = {"format": FORMAT, "px": px, "count": len(items), "skipped": skipped,
            "skipped_files": [items[i][0] for i in skipped], "errors": [errors[i] for i in skipped],
            "decode_s": round(time.perf_counter() - start, 3)}
    meta.update(_mean_std(tmp_images, px, [i for i in range(len(scan_.train)) if i not in errors]))
    meta["sample_sha256"] = _sample_digest(tmp_images, len(items), size)
    tmp_meta.write_text(json.dumps(meta))
    os.replace(tmp_images, folder / "images.u8")
    os.replace(tmp_meta, folder / "meta.json")  # last: its presence says the cache is complete


SAMPLED_ROWS = 64  # rows a cache's digest covers: a damaged cache is found by reading these alone


def _sample_digest(path: Path, count: int, size: int) -> str:
    """SHA-256 of up to ``SAMPLED_ROWS`` evenly spaced rows (first and last included): cheap to
    check on every open, and it catches a cut-off, zero-filled or overwritten cache."""
    rows = sorted({round(i * (count - 1) / max(1, SAMPLED_ROWS - 1)) for i in range(min(count, SAMPLED_ROWS))})
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for r in rows:
            h.update(os.pread(f.fileno(), size, r * size))
    return h.hexdigest()


def _damage(folder: Path) -> str | None:
    """What is wrong with a built cache (its size, or its sampled rows' digest), or None."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        size, count = 3 * meta["px"] * meta["px"], meta["count"]
        have = (folder / "images.u8").stat().st_size
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"its metadata or images cannot be read: {type(e).__name__}"
    if have != count * size:
        return f"images.u8 holds {have:,} bytes, {count:,} images need {count * size:,}"
    if "sample_sha256" in meta and _sample_digest(folder / "images.u8", count, size) != meta["sample_sha256"]:
        return "its images differ from those decoded (sampled rows' digest)"
    return None


def _mean_std(path: Path, px: int, rows: list[int], sample: int = 2000) -> dict:
    """Per-channel mean and std (0-1 scale) over up to ``sample`` training rows, evenly spaced."""
    picked = rows[:: max(1, len(rows) // sample)][:sample]
    size = 3 * px * px
    sums, squares, n = np.zeros(3), np.zeros(3), 0
    with open(path, "rb") as f:
        for i in picked:
            x = np.frombuffer(os.pread(f.fileno(), size, i * size), dtype=np.uint8).reshape(3, -1) / 255.0
            sums += x.sum(1)
            squares += (x * x).sum(1)
            n += x.shape[1]
    mean = sums / max(n, 1)
    std = np.sqrt(np.maximum(squares / max(n, 1) - mean**2, 1e-6))
    return {"mean": mean.tolist(), "std": np.maximum(std, 1e-3).tolist()}


def ensure_cache(scan_: FolderScan, px: int, cache_dir: str | None = None, workers: int | None = None,
                 out=None) -> CachedFolder:
    """The cache of ``scan_``'s images at ``px``, built now unless a run built it before."""
    from filelock import FileLock  # lazy: only image folders take this lock

    out = out or sys.stdout
    base = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    key = _key(scan_, px)
    folder = base / key[:24]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ImageFolderError(f"cannot make the image cache {str(folder)!r}: {e.strerror}; set "
                               "data.cache_dir to a writable folder on local disk") from None
    with FileLock(str(folder / "build.lock")):
        damage = _damage(folder) if (folder / "meta.json").is_file() else None
        if damage:  # the cache is ours to rebuild: a user's file is never in it
            print(f"image cache {folder} is damaged ({damage}); decoding it again", file=out, flush=True)
            (folder / "meta.json").unlink()
        if not (folder / "meta.json").is_file():
            _build(scan_, px, folder, workers or min(DECODE_THREADS, os.cpu_count() or 1), out)
        else:
            print(f"image cache {folder} ready ({len(scan_.train) + len(scan_.val):,} images at {px} px)",
                  file=out, flush=True)
    meta = json.loads((folder / "meta.json").read_text())
    skipped = set(meta["skipped"])
    n_train = len(scan_.train)
    train = [(i, label) for i, (_, label) in enumerate(scan_.train) if i not in skipped]
    val = [(n_train + i, label) for i, (_, label) in enumerate(scan_.val) if n_train + i not in skipped]
    if skipped and meta.get("skipped_files"):
        print(f"{len(skipped)} image(s) of {scan_.root} could not be decoded and are left out "
              f"(listed in {folder / 'meta.json'})", file=out)
    _check_left(scan_, train, val)
    return CachedFolder(str(folder / "images.u8"), px, meta["count"], len(scan_.classes),
                        tuple(r for r, _ in train), tuple(y for _, y in train),
                        tuple(r for r, _ in val), tuple(y for _, y in val),
                        tuple(meta["mean"]), tuple(meta["std"]), tuple(meta.get("skipped_files", ())))


def _check_left(scan_: FolderScan, train: list, val: list) -> None:
    """After skipping undecodable images, every class chosen for training still trains, and
    something validates."""
    chosen, have = {label for _, label in scan_.train}, {label for _, label in train}
    empty = [c for i, c in enumerate(scan_.classes) if i in chosen and i not in have]
    if empty:
        raise ImageFolderError(f"class {empty[0]!r} of {scan_.root} has no decodable training image left; "
                               "replace its corrupt files or remove the class folder")
    if len(train) < 2 or not val:
        raise ImageFolderError(f"{scan_.root} has {len(train)} decodable training and {len(val)} validation "
                               "images; it needs at least 2 and 1")
