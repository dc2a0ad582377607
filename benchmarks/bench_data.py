"""The image-folder data path against torchvision's ImageFolder + DataLoader, and a trial's memory.

The script makes its own folder of natural-image-sized JPEGs (default 320x256, 20 classes;
smooth waves plus noise, quality 85) and measures, side by side in one run:

1. **Loader images/s** over one whole pass of the training images, at ``--px`` with
   random-resized-crop + flip, ``--workers`` DataLoader workers, batches of 64 normalised to
   float32 by the workers (what a CPU trial's training loop receives):
   - torchvision: ``ImageFolder`` (decodes every JPEG every pass) + ``DataLoader``;
   - scaling_search, first pass: a fresh cache (decode once, with ``--workers`` threads) plus
     one pass read from it (``data.mode=stream``);
   - scaling_search, cached: a pass of a second run that finds the cache (stream and memory).

   With ``--ray-data``, also Ray Data (``read_images`` + ``map_batches``, decoded every pass).
   Each loader runs ``--repeats`` times, interleaved, and the table gives the medians and
   the range: single passes of a few seconds vary by up to 1.5x on a 2-core VM.
2. **Peak memory of one trial** (``--rss``): a fresh process trains a small proxy (ResNet-18 at
   depth 0.5, width 0.25) at 224 px for ``--steps`` steps on N and on 10*N images, streamed.
   Reported: the trial's peak RSS, and the peak PSS of its whole process tree (trial + DataLoader
   workers; PSS shares a page among the processes that map it, so the tree is not counted twice).

    python benchmarks/bench_data.py                       # loader table, 2,000 images
    python benchmarks/bench_data.py --rss --images 2000   # plus memory at 2,000 and 20,000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from scaling_search.settings import DataSettings

BATCH = 64


def _write_images(args) -> None:
    root, start, stop, classes, size = args
    from PIL import Image

    for i in range(start, stop):
        c = i % classes
        rng = np.random.default_rng(i)
        w, h = size
        yy, xx = np.mgrid[0:h, 0:w]
        angle, period = c * np.pi / classes, 6 + (c % 5) * 3
        wave = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) / period + rng.uniform(0, 6.3))
        img = 110 + 70 * wave[..., None] * rng.uniform(0.5, 1, 3) + rng.normal(0, 20, (h, w, 3))
        folder = Path(root) / f"class{c:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=85)


def make_folder(root: Path, count: int, classes: int, size: tuple[int, int]) -> Path:
    """``count`` JPEGs in ``classes`` class folders (made once; reused if already complete)."""
    if root.is_dir() and sum(1 for _ in root.rglob("*.jpg")) == count:
        return root
    chunks = [(str(root), i, min(i + 500, count), classes, size) for i in range(0, count, 500)]
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        list(pool.map(_write_images, chunks))
    return root


def torchvision_pass(root: Path, px: int, workers: int) -> tuple[float, int]:
    """One pass of ImageFolder + DataLoader (random-resized-crop, flip, uint8, then normalised)."""
    from torchvision import datasets
    from torchvision.transforms import v2

    tf = v2.Compose([v2.PILToTensor(), v2.RandomResizedCrop(px, antialias=True), v2.RandomHorizontalFlip(),
                     v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.47] * 3, [0.24] * 3)])
    ds = datasets.ImageFolder(str(root), transform=tf)
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, drop_last=True,
                                         num_workers=workers, prefetch_factor=4 if workers else None)
    t0, n = time.perf_counter(), 0
    for x, _ in loader:
        n += len(x)
    return time.perf_counter() - t0, n


def ours_pass(root: Path, cache: Path, px: int, workers: int, mode: str) -> tuple[float, int]:
    """Load (building the cache if ``cache`` has none) and one pass of training batches."""
    from scaling_search.train.data import load_dataset
    from scaling_search.train.feed import make_feed

    t0 = time.perf_counter()
    s = DataSettings("imagefolder", root=str(root), cache_dir=str(cache), transforms="crop", flip=True,
                     mode=mode, workers=workers, val_fraction=0.01)
    with open(os.devnull, "w") as quiet:
        data = load_dataset(s, px, out=quiet)
    feed = make_feed(data, px, BATCH, 256, torch.device("cpu"))
    n = 0
    for x, _ in feed.train_batches(torch.Generator().manual_seed(0)):
        n += len(x)
    return time.perf_counter() - t0, n


def ray_data_pass(root: Path, px: int) -> tuple[float, int]:
    """One pass with Ray Data: ``read_images`` (files shuffled, every JPEG decoded on every pass)
    and the same random-resized-crop + flip + normalisation in ``map_batches`` tasks, batches of
    64 to torch. Ray runs with as many CPUs as the others have workers, started beforehand
    (``main``), so its start-up is not timed."""
    import ray
    from torchvision.transforms import v2

    tf = v2.Compose([v2.RandomResizedCrop(px, antialias=True), v2.RandomHorizontalFlip(),
                     v2.ToDtype(torch.float32, scale=True), v2.Normalize([0.47] * 3, [0.24] * 3)])
    index = {c: i for i, c in enumerate(sorted(p.name for p in root.iterdir() if p.is_dir()))}

    def transform(batch: dict) -> dict:
        images = [tf(torch.from_numpy(im).permute(2, 0, 1)).numpy() for im in batch["image"]]
        return {"image": np.stack(images), "label": np.array([index[Path(p).parent.name] for p in batch["path"]])}

    t0, n = time.perf_counter(), 0
    ds = ray.data.read_images(str(root), mode="RGB", include_paths=True, shuffle="files")
    for b in ds.map_batches(transform, batch_size=BATCH).iter_torch_batches(batch_size=BATCH, drop_last=True):
        n += len(b["label"])
    return time.perf_counter() - t0, n


LOADERS = ("torchvision ImageFolder + DataLoader (every pass)",
           "scaling_search, first pass (decode into cache + stream one pass)",
           "scaling_search, cached, streamed", "scaling_search, cached, held in memory")
RAY_DATA = "Ray Data read_images + map_batches (every pass)"


def loader_table(root: Path, px: int, workers: int, scratch: Path, repeats: int,
                 ray_data: bool = False) -> list[dict]:
    """Each loader ``repeats`` times, interleaved (a fresh cache for every first pass); the
    median of each, so that one noisy pass on a shared machine does not decide a ratio."""
    names = (*LOADERS, RAY_DATA) if ray_data else LOADERS
    times: dict[str, list[float]] = {name: [] for name in names}
    images: dict[str, int] = {}
    for k in range(repeats):
        cache = scratch / f"cache{k}"
        passes = [torchvision_pass(root, px, workers), ours_pass(root, cache, px, workers, "stream"),
                  ours_pass(root, cache, px, workers, "stream"), ours_pass(root, cache, px, workers, "memory")]
        if ray_data:
            passes.append(ray_data_pass(root, px))
        for name, (seconds, n) in zip(names, passes):
            times[name].append(seconds)
            images[name] = n
    rows = [{"loader": name, "s": statistics.median(times[name]), "images": images[name],
             "spread": f"{images[name] / max(times[name]):,.0f}-{images[name] / min(times[name]):,.0f}"}
            for name in names]
    for r in rows:
        r["img_per_s"] = r["images"] / r["s"]
        r["vs_torchvision"] = r["img_per_s"] / rows[0]["img_per_s"]
    return rows


def trial_memory(root: Path, cache: Path, steps: int, workers: int) -> None:
    """The child: a streamed trial's training loop at 224 px for ``steps`` steps."""
    from scaling_search.models.backbones import get_backbone
    from scaling_search.models.scaling import Multipliers, Rounding
    from scaling_search.train.data import load_dataset
    from scaling_search.train.feed import make_feed

    torch.set_num_threads(1)
    s = DataSettings("imagefolder", root=str(root), cache_dir=str(cache), transforms="crop", flip=True,
                     mode="stream", workers=workers)
    data = load_dataset(s, 224)
    torch.manual_seed(0)
    model = get_backbone("resnet18").scale(Multipliers(0.5, 0.25, 1), Rounding(), 224).build(data.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    feed = make_feed(data, 224, 32, 256, torch.device("cpu"))
    done = 0
    for x, y in feed.train_batches(torch.Generator().manual_seed(0)):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        done += 1
        if done == steps:
            break
    print(json.dumps({"steps": done, "images": len(data.cache.train_rows) + len(data.cache.val_rows),
                      "maxrss_mb": _peak_rss_mb()}))


def _peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM). Not ``ru_maxrss``: Linux carries that across
    ``execve``, so a child started by a large parent reports the parent's size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _tree_pss_mb(pid: int) -> float:
    """PSS of ``pid`` and its descendants, in MB (Linux smaps_rollup)."""
    pids, total = [pid], 0.0
    for p in list(pids):
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        pids += [int(c) for c in children]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


def measure_trial(root: Path, cache: Path, steps: int, workers: int) -> dict:
    """Builds the cache first (so the trial only trains), then runs the trial in a fresh process."""
    from scaling_search.train.data import load_dataset

    with open(os.devnull, "w") as quiet:
        load_dataset(DataSettings("imagefolder", root=str(root), cache_dir=str(cache), transforms="crop",
                                  mode="stream"), 224, out=quiet)
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(root), str(cache), str(steps), str(workers)],
                            stdout=subprocess.PIPE, text=True)
    peak = [0.0]

    def watch():
        while proc.poll() is None:
            peak[0] = max(peak[0], _tree_pss_mb(proc.pid))
            time.sleep(0.2)

    t = threading.Thread(target=watch)
    t.start()
    out, _ = proc.communicate()
    t.join()
    if proc.returncode:
        raise SystemExit(f"trial failed ({proc.returncode})")
    row = json.loads(out.strip().splitlines()[-1])
    row["tree_pss_mb"] = peak[0]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--size", default="320x256", help="JPEG width x height")
    p.add_argument("--px", type=int, default=160, help="training resolution of the loader comparison")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="passes of each loader, interleaved; medians")
    p.add_argument("--ray-data", action="store_true", help="also Ray Data's read_images (starts a local Ray)")
    p.add_argument("--rss", action="store_true", help="also a trial's peak memory at N and 10*N images")
    p.add_argument("--steps", type=int, default=40, help="training steps of the memory trial")
    p.add_argument("--scratch", default=None, help="folder for the generated images and caches")
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        root, cache, steps, workers = a.child
        return trial_memory(Path(root), Path(cache), int(steps), int(workers))
    scratch = Path(a.scratch or tempfile.mkdtemp(prefix="bench_data_"))
    size = tuple(int(v) for v in a.size.split("x"))
    t0 = time.perf_counter()
    root = make_folder(scratch / f"jpeg_{a.images}_{a.size}", a.images, a.classes, size)
    print(f"{a.images:,} JPEGs of {a.size} in {a.classes} classes ({time.perf_counter() - t0:.0f} s to make); "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, {a.workers} workers, {a.px} px\n")
    print(f"| loader | seconds (median of {a.repeats}) | images | img/s | range (img/s) | vs torchvision |\n"
          "|:--|--:|--:|--:|--:|--:|")
    if a.ray_data:
        import ray

        ray.init(num_cpus=a.workers, include_dashboard=False, log_to_driver=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
    for r in loader_table(root, a.px, a.workers, scratch / f"run_{time.time_ns()}", a.repeats, a.ray_data):
        print(f"| {r['loader']} | {r['s']:.1f} | {r['images']:,} | {r['img_per_s']:,.0f} | {r['spread']} | "
              f"{r['vs_torchvision']:.2f}x |")
    if a.rss:
        print("\n| images | steps at 224 px | trial peak RSS (MB) | trial + workers peak PSS (MB) |\n|--:|--:|--:|--:|")
        rows = []
        for n in (a.images, 10 * a.images):
            big = make_folder(scratch / f"jpeg_{n}_{a.size}", n, a.classes, size)
            row = measure_trial(big, scratch / "rss_cache", a.steps, a.workers)
            rows.append(row)
            print(f"| {row['images']:,} | {row['steps']} | {row['maxrss_mb']:,.0f} | {row['tree_pss_mb']:,.0f} |")
        print(f"\n10x the images: peak RSS x{rows[1]['maxrss_mb'] / rows[0]['maxrss_mb']:.3f}, "
              f"tree PSS x{rows[1]['tree_pss_mb'] / rows[0]['tree_pss_mb']:.3f}")


if __name__ == "__main__":
    main()
