"""Decoding an image folder into the cache with threads, against one pass of torchvision's
ImageFolder + DataLoader with the same number of workers. (Spawned worker processes were tried
here on 2026-12-04 and backed out: 479 img/s against the threads' 1,091 on 2 cores.)

The folder is bench_data.py's (natural-image-sized JPEGs, default 2,000 at 320x256). Each
decoder builds a fresh cache at ``--px`` (the storage size: 256 for 224-px trials); the
DataLoader pass decodes every JPEG with random-resized-crop at 224 and flip, normalised, as a
user's training loop would in its first epoch. Interleaved, ``--repeats`` times; medians.

    python benchmarks/bench_decode.py --workers 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from bench_data import make_folder, torchvision_pass

from scaling_search.settings import DataSettings
from scaling_search.train.image_folder import _build, scan


def decode_pass(root: Path, scratch: Path, px: int, workers: int) -> float:
    folder = scratch / "cache"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    chosen = scan(DataSettings("imagefolder", root=str(root), val_fraction=0.01))
    t0 = time.perf_counter()
    with open(os.devnull, "w") as quiet:
        _build(chosen, px, folder, workers, quiet)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--px", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--scratch", default=None)
    args = p.parse_args()
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="bench_decode_"))
    root = make_folder(scratch / "images", args.images, 20, (320, 256))
    times = {"threads": [], "torchvision": []}
    for _ in range(args.repeats):
        times["threads"].append(decode_pass(root, scratch, args.px, args.workers))
        times["torchvision"].append(torchvision_pass(root, 224, args.workers)[0])
    print(f"# {os.cpu_count()} CPUs, {args.images:,} JPEGs 320x256, {args.workers} workers, "
          f"median of {args.repeats} interleaved\n")
    print("| first pass | img/s | / torchvision |")
    print("|---|--:|--:|")
    tv = args.images / statistics.median(times["torchvision"])
    for name, label in (("threads", f"the cache at {args.px} px, threads"),
                        ("torchvision", "ImageFolder + DataLoader, crop 224, one pass")):
        rate = args.images / statistics.median(times[name])
        print(f"| {label} | {rate:,.0f} | {rate / tv:.2f}x |")


if __name__ == "__main__":
    main()
