"""Step 1 on a GPU: where a trial's time goes, one trial on an image folder, and packing.

Needs a CUDA GPU (run it through ``benchmarks/gpu_check.sh`` on the GPU machine). Phases:

- ``profile``: one trial of the default demo's proxy (B0 at half depth and width, the paper's
  candidate, digits at 38 px) through ``run_trial``: its set-up and training time, and
  torch.profiler's top operators over a few steps (to ``--out``/profile.txt).
- ``folder FOLDER``: one trial alone at 224 px (EfficientNet-B0, batch 256, ``--cpus`` CPUs) on
  an image folder: the first pass (decoding into the cache) against torchvision's ImageFolder +
  DataLoader with the same workers, then the trainer's steady img/s with the set held on the GPU
  and streamed by workers. (The hand loop it is compared with is ``shared/gpu/hand_loop.py``,
  run beside it by gpu_check.sh.)
- ``packing``: 1, 2, 4 and 8 trials at once on one GPU, each in its own process (as Ray's
  fractional GPUs place them): aggregate and per-trial img/s, peak GPU memory per trial, and
  the GPU's busy share (NVML) while they train; on the demo's proxy and, with ``--folder``, on
  paper_step1-shaped trials.

    python benchmarks/bench_gpu.py profile
    python benchmarks/bench_gpu.py folder /tmp/imf --cpus 4
    python benchmarks/bench_gpu.py packing --folder /tmp/imf
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import torch

from scaling_search.models.backbones import get_backbone
from scaling_search.models.scaling import Multipliers
from scaling_search.settings import DataSettings, TrainSettings
from scaling_search.train.data import load_dataset
from scaling_search.train.trainer import train

DEMO = ("efficientnet_b0", Multipliers(0.5 * 1.2, 0.5 * 1.1, 1.15), 32)  # the demo's paper candidate
PAPER = ("efficientnet_b0", Multipliers(1.0, 1.0, 1.0), 224)  # paper_step1's baseline
DEMO_TRAIN = TrainSettings(epochs=8, batch_size=64, lr=0.05, warmup_epochs=1, device="auto", num_threads=1)
PAPER_TRAIN = TrainSettings(epochs=3, batch_size=256, optimizer="rmsprop", lr=0.016, weight_decay=1e-5,
                            warmup_epochs=2, device="auto", num_threads=4, cuda_channels_last=True)


def _model(which, num_classes: int):
    backbone, mult, px = which
    torch.manual_seed(0)
    m = get_backbone(backbone).scale(mult, resolution_px=px)
    return m.build(num_classes), m.resolution_px


def _data(folder: str | None, cache_dir: str | None, workers: int | None = None):
    if folder is None:
        return load_dataset(DataSettings("digits"))
    s = DataSettings("imagefolder", root=folder, cache_dir=cache_dir, workers=workers, transforms="crop", flip=True)
    return load_dataset(s, 224, out=sys.stderr)


class GpuBusy:
    """The GPU's utilisation (NVML, every 0.2 s) while the block runs: mean percent."""

    def __enter__(self):
        self.samples, self.stop = [], threading.Event()

        def poll():
            while not self.stop.is_set():
                try:
                    self.samples.append(torch.cuda.utilization())
                except Exception:  # noqa: BLE001 - no NVML: no figure
                    return
                time.sleep(0.2)
        self.thread = threading.Thread(target=poll, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def profile(args) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    from scaling_search.train.trial import TrialSpec, run_trial

    t0 = time.perf_counter()
    torch.zeros(1, device="cuda")
    print(f"CUDA context: {time.perf_counter() - t0:.2f} s")
    data = _data(None, None)
    backbone, m, px = DEMO
    rounding = {"channel_divisor": 8, "channel_min": None, "channel_min_fraction": 0.9,
                "repeats": "ceil", "resolution": "nearest", "resolution_divisor": 1}
    spec = TrialSpec("bench", "bench", 0, backbone, 1.2, 1.1, 1.15, m.depth_mult, m.width_mult,
                     m.resolution_mult, px, rounding)
    for label, s in (("default, the process's first", DEMO_TRAIN), ("default, again", DEMO_TRAIN)):
        row = run_trial(spec, data, s)
        print(f"demo trial through run_trial, {label}: status {row['status']} {row.get('error', '')}, "
              f"wall {row['wall_time_s']:.2f} s, set-up {row.get('setup_time_s', 0):.2f} s, training "
              f"{row.get('train_time_s', 0):.2f} s ({row.get('images_per_s', 0):,.0f} img/s), the rest "
              f"{row['wall_time_s'] - row.get('setup_time_s', 0) - row.get('train_time_s', 0):.2f} s, "
              f"peak GPU {row.get('peak_gpu_mib') or 0:.0f} MiB, step {row.get('step')}", flush=True)
    for label, s in (("default", DEMO_TRAIN), ("eager", replace(DEMO_TRAIN, cuda_graphs=False))):
        model, px = _model(DEMO, 10)
        r = train(model, data, px, s, seed=0)
        print(f"demo trial, {label}, phases: {_phases(r)}", flush=True)
    model, px = _model(DEMO, 10)
    with tprofile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        train(model, data, px, replace(DEMO_TRAIN, epochs=1), seed=0)
    table = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25)
    by_cpu = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "profile.txt").write_text(table + "\n\n" + by_cpu)
    print("\n".join(table.splitlines()[:14]))


def _phases(r) -> str:
    """A TrainResult's phase times and its epochs' rates: where one trial's time went."""
    rates = ", ".join(format(h["images_per_s"], ",.0f") for h in r.history)
    return (", ".join(f"{k} {v:.2f} s" for k, v in r.phases.items())
            + f"; training {r.train_time_s:.2f} s, epochs at {rates} img/s; step {r.step}")


def first_pass(folder: str, workers: int, tmp: str) -> None:
    """Decoding into the cache against one pass of torchvision's ImageFolder + DataLoader."""
    import shutil

    from torchvision import transforms as T
    from torchvision.datasets import ImageFolder

    from scaling_search.train.image_folder import ensure_cache, scan

    chosen = scan(DataSettings("imagefolder", root=folder))
    n = len(chosen.train) + len(chosen.val)
    for w in (workers, os.cpu_count()):
        d = Path(tmp) / f"cache_{w}"
        shutil.rmtree(d, ignore_errors=True)
        t0 = time.perf_counter()
        ensure_cache(chosen, 256, str(d), w, out=open(os.devnull, "w"))
        dt = time.perf_counter() - t0
        print(f"first pass, decoding into the cache with {w} workers: {n:,} images in {dt:.1f} s ({n / dt:,.0f} img/s)")
    tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    dl = torch.utils.data.DataLoader(ImageFolder(folder, tf), batch_size=256, num_workers=workers)
    t0, seen = time.perf_counter(), 0
    for x, _ in dl:
        seen += len(x)
    dt = time.perf_counter() - t0
    print(f"first pass, torchvision ImageFolder + DataLoader with {workers} workers (no training): "
          f"{seen:,} images in {dt:.1f} s ({seen / dt:,.0f} img/s)", flush=True)


def folder(args) -> None:
    first_pass(args.folder, args.cpus, args.tmp)
    data = _data(args.folder, str(Path(args.tmp) / f"cache_{args.cpus}"), None)
    s = replace(PAPER_TRAIN, num_threads=args.cpus)
    for label, d in (("held on the GPU", data), ("streamed by workers", replace(data, in_memory=False))):
        model, px = _model(PAPER, data.num_classes)
        with GpuBusy() as busy:
            t0 = time.perf_counter()
            r = train(model, d, px, s, seed=0)
            wall = time.perf_counter() - t0
        steady = r.history[-1]["images_per_s"]
        print(f"one trial, B0 at 224 px, {args.cpus} CPUs, {label}: {wall:.1f} s for {s.epochs} epochs "
              f"(set-up {r.setup_time_s:.1f} s), epochs at "
              f"{', '.join(format(h['images_per_s'], ',.0f') for h in r.history)} img/s (steady {steady:,.0f}), "
              f"peak GPU {r.peak_gpu_bytes / 2**30:.1f} GiB, GPU busy {busy.mean or 0:.0f}%", flush=True)
        print(f"  phases: {_phases(r)}", flush=True)


def _child(which: str, folder: str | None, cache_dir: str | None, barrier, queue) -> None:
    torch.zeros(1, device="cuda")
    data = _data(folder, cache_dir)
    s = replace(DEMO_TRAIN, epochs=4) if which == "demo" else replace(PAPER_TRAIN, epochs=2)
    model, px = _model(DEMO if which == "demo" else PAPER, data.num_classes)
    barrier.wait()
    t0 = time.perf_counter()
    r = train(model, data, px, s, seed=0)
    queue.put({"start": t0, "end": time.perf_counter(), "images": r.images_per_s * r.train_time_s,
               "img_s": r.images_per_s, "train_s": r.train_time_s, "peak_gib": r.peak_gpu_bytes / 2**30,
               "setup_s": r.setup_time_s})


def packing(args) -> None:
    ctx = mp.get_context("spawn")
    kinds = [("demo", None, None, (1, 2, 4, 8))]
    if args.folder and args.paper_packing:
        kinds.append(("paper", args.folder, str(Path(args.tmp) / f"cache_{args.cpus}"), (1, 2, 4)))
    print("| trials | per GPU | aggregate img/s | img/s per trial | peak GPU GiB per trial | GPU busy | wall s |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for which, f, cache, counts in kinds:
        base = None
        for n in counts:
            barrier, queue = ctx.Barrier(n + 1), ctx.Queue()
            procs = [ctx.Process(target=_child, args=(which, f, cache, barrier, queue)) for _ in range(n)]
            for p in procs:
                p.start()
            barrier.wait()
            with GpuBusy() as busy:
                t0 = time.perf_counter()
                rows = [queue.get(timeout=300) for _ in range(n)]
                wall = time.perf_counter() - t0
            for p in procs:
                p.join()
            # aggregate: training images over the span in which trials trained together
            span = max(r["end"] for r in rows) - min(r["start"] for r in rows)
            agg = sum(r["img_s"] for r in rows)  # each trial's training rate, all running at once
            base = base or agg
            print(f"| {which} | {n} | {agg:,.0f} ({agg / base:.2f}x) | "
                  f"{sum(r['img_s'] for r in rows) / n:,.0f} | {max(r['peak_gib'] for r in rows):.2f} | "
                  f"{busy.mean or 0:.0f}% | {wall:.1f} (span {span:.1f}) |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("phase", choices=["profile", "folder", "packing"])
    p.add_argument("folder", nargs="?")
    p.add_argument("--folder", dest="pack_folder")
    p.add_argument("--cpus", type=int, default=4)
    p.add_argument("--paper-packing", action="store_true", help="packing of paper_step1-shaped trials too")
    p.add_argument("--tmp", default="/tmp/bench_gpu")
    p.add_argument("--out", default=os.environ.get("OUT", "/tmp/bench_gpu"))
    args = p.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_gpu.py needs a CUDA GPU")
    print(f"# {torch.cuda.get_device_name(0)}, torch {torch.__version__}, {os.cpu_count()} CPUs", flush=True)
    if args.phase == "packing":
        args.folder = args.pack_folder
    {"profile": profile, "folder": folder, "packing": packing}[args.phase](args)


if __name__ == "__main__":
    main()
