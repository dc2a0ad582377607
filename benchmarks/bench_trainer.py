"""Trainer throughput against a minimal eager PyTorch loop over the search's real shapes, and a
trial's peak memory.

A matrix of cells: EfficientNet-B0 (the default demo's proxy, half depth and width on 32 px) at
the paper's candidate and at a depth-heavy (alpha=2), width-heavy (beta=1.4) and
resolution-heavy (gamma=1.4) one; ResNet-50 at quarter width and MobileNet-V2 at half width at
the paper's candidate; each with 1 and 2 threads. In each cell, measured interleaved (best of
``--repeats`` each, so the machine's noise hits all alike) on the same pre-resized digits
tensors, optimiser, batch size and thread count, training steps only:

- the hand loop: the plainest eager loop (NCHW: shuffle, index, forward, loss, backward, step);
- the trainer as configured by default (channels-last);
- the trainer with ``channels_last=false`` (what it did before).

Goals: the trainer >= 1.5x the hand loop (median of the EfficientNet cells), >= 1.0x on every
cell. ``--compile`` adds a cell of the trainer with ``compile=true`` and prints its warm-up.
Peak memory is the max resident set of a fresh process that runs one whole trial.

    python benchmarks/bench_trainer.py                 # markdown table
    python benchmarks/bench_trainer.py --epochs 3 --threads 1 2
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import replace

import torch
from torch import nn

from scaling_search.models.backbones import get_backbone
from scaling_search.models.scaling import Multipliers
from scaling_search.train.data import DataSettings, load_dataset
from scaling_search.train.trainer import TrainSettings, pick_device, train

MULTIPLIERS = Multipliers(0.5 * 1.2, 0.5 * 1.1, 1.15)  # the demo's proxy at the paper's candidate
BASE_PX = 32
# (name, backbone, base depth, base width, (alpha, beta, gamma))
CELLS = [
    ("B0 proxy, paper (1.2, 1.1, 1.15)", "efficientnet_b0", 0.5, 0.5, (1.2, 1.1, 1.15)),
    ("B0 proxy, depth-heavy (2, 1, 1)", "efficientnet_b0", 0.5, 0.5, (2.0, 1.0, 1.0)),
    ("B0 proxy, width-heavy (1, 1.4, 1)", "efficientnet_b0", 0.5, 0.5, (1.0, 1.4, 1.0)),
    ("B0 proxy, resolution-heavy (1, 1, 1.4)", "efficientnet_b0", 0.5, 0.5, (1.0, 1.0, 1.4)),
    ("ResNet-50 x0.25 width, paper", "resnet50", 1.0, 0.25, (1.2, 1.1, 1.15)),
    ("MobileNet-V2 x0.5 width, paper", "mobilenet_v2", 1.0, 0.5, (1.2, 1.1, 1.15)),
]
CELL = CELLS[0]


def _model(device, cell=CELL):
    _, backbone, d, w, (a, b, g) = cell
    torch.manual_seed(0)
    m = get_backbone(backbone).scale(Multipliers(d * a, w * b, g), resolution_px=BASE_PX)
    return m.build(10).to(device), m.resolution_px


def hand_loop(data, px: int, settings: TrainSettings, device, cell=CELL) -> float:
    """The smallest correct loop: shuffle, index, forward, loss, backward, step. Images/s."""
    torch.backends.cudnn.benchmark = False  # torch's default (the trainer sets it per its settings)
    model, _ = _model(device, cell)
    x, _ = data.at_resolution(px)
    x, y = x.to(device), data.train_labels.to(device)
    opt = torch.optim.SGD(model.parameters(), lr=settings.lr, momentum=settings.momentum,
                          weight_decay=settings.weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    g = torch.Generator().manual_seed(0)
    steps = len(y) // settings.batch_size
    seconds = 0.0
    for _ in range(settings.epochs):
        model.train()
        order = torch.randperm(len(y), generator=g).to(device)
        t0 = time.perf_counter()
        for i in range(steps):
            idx = order[i * settings.batch_size:(i + 1) * settings.batch_size]
            loss = loss_fn(model(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds += time.perf_counter() - t0
    return steps * settings.batch_size * settings.epochs / seconds


def trainer_loop(data, px: int, settings: TrainSettings, device, cell=CELL) -> float:
    model, _ = _model(device, cell)
    return train(model, data, px, settings, seed=0).images_per_s


def peak_memory(epochs: int) -> dict:
    """One whole trial in a fresh process; its peak RSS (and CUDA peak) in MiB."""
    code = f"""
import json, resource, torch
from scaling_search.train.data import DataSettings, load_dataset
from scaling_search.train.trainer import TrainSettings
from scaling_search.train.trial import TrialSpec, run_trial
data = load_dataset(DataSettings("digits"))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Python, torch, data: no model yet
spec = TrialSpec("bench", "bench", 0, "efficientnet_b0", 1.2, 1.1, 1.15, {MULTIPLIERS.depth_mult},
                 {MULTIPLIERS.width_mult}, {MULTIPLIERS.resolution_mult}, {BASE_PX},
                 {{"channel_divisor": 8, "channel_min": None, "channel_min_fraction": 0.9,
                   "repeats": "ceil", "resolution": "nearest", "resolution_divisor": 1}})
row = run_trial(spec, data, TrainSettings(epochs={epochs}, num_threads=1))
cuda = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
print(json.dumps({{"status": row["status"], "before_mib": before,
                  "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "cuda_mib": cuda}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--compile", action="store_true", help="also time compile=true (minutes of warm-up)")
    parser.add_argument("--trainer-only", action="store_true",
                        help="time the hand loop against the trainer's defaults only (no NCHW or other variants)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="trainer settings for every trainer run, e.g. channels_last=false cudnn_benchmark=false")
    parser.add_argument("--compile-only", action="store_true", help="only the compile=true cell")
    args = parser.parse_args()

    if args.memory_only:
        mem = peak_memory(args.epochs)
        print(mem)
        return
    device = pick_device(args.device)
    data = load_dataset(DataSettings("digits"))
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, device {device}, "
          f"digits ({len(data.train_labels)} training images), {args.epochs} epochs, batch {args.batch_size}, "
          f"best of {args.repeats} interleaved\n")
    # Each variant of the trainer against the hand loop: its defaults, NCHW, and on CUDA its GPU
    # switches (NHWC, with and without cuDNN's autotuner; mixed precision off).
    if device.type == "cuda":
        variants = [("trainer", {}), ("trainer, NHWC", {"cuda_channels_last": True}),
                    ("trainer, NHWC + cudnn.benchmark", {"cuda_channels_last": True, "cudnn_benchmark": True}),
                    ("trainer, fp32", {"amp": False})]
    else:
        variants = [("trainer", {}), ("trainer, NCHW", {"channels_last": False})]
    if args.trainer_only:
        variants = variants[:1]
    print("| network | px | threads | hand loop (img/s) | " + "".join(f"{name} (img/s) | " for name, _ in variants)
          + "".join(f"{name} / hand | " for name, _ in variants))
    print("|---|--:|--:|--:|" + "--:|--:|" * len(variants))
    ratios = {}
    for cell in ([] if args.compile_only else CELLS):
        _, px = _model("meta", cell)
        for threads in args.threads:
            torch.set_num_threads(threads)
            s = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, num_threads=threads,
                              warmup_epochs=0, device=device.type)
            s = replace(s, **{k: v.lower() == "true" if v.lower() in ("true", "false") else type(getattr(s, k))(v)
                              for k, v in (kv.split("=", 1) for kv in args.set)})
            hand_loop(data, px, TrainSettings(epochs=1, batch_size=args.batch_size), device, cell)  # warm-up
            hand, timed = [], {name: [] for name, _ in variants}
            for _ in range(args.repeats):
                hand.append(hand_loop(data, px, s, device, cell))
                for name, change in variants:
                    timed[name].append(trainer_loop(data, px, replace(s, **change), device, cell))
            h = max(hand)
            ratios[(cell[0], threads)] = max(timed["trainer"]) / h
            print(f"| {cell[0]} | {px} | {threads} | {h:,.0f} | " + "".join(f"{max(v):,.0f} | " for v in timed.values())
                  + "".join(f"{max(v) / h:.2f}x | " for v in timed.values()), flush=True)
    eff = sorted(r for (name, _), r in ratios.items() if name.startswith("B0"))
    if ratios:
        print(f"\nTrainer / hand loop: median over the EfficientNet cells {statistics.median(eff):.2f}x, "
              f"lowest cell {min(ratios.values()):.2f}x")
    if args.compile or args.compile_only:
        cell = CELLS[0]
        _, px = _model("meta", cell)
        torch.set_num_threads(max(args.threads))
        s = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, num_threads=max(args.threads),
                          warmup_epochs=0, device=device.type)
        model, _ = _model(device, cell)
        t0 = time.perf_counter()
        compiled = train(model, data, px, replace(s, compile=True), seed=0)
        total = time.perf_counter() - t0
        per_epoch = [h["time_s"] for h in compiled.history]
        eager = trainer_loop(data, px, s, device, cell)
        print(f"\ncompile=true on {cell[0]}, {max(args.threads)} threads: the run took {total:.0f} s "
              f"(epoch times {', '.join(f'{t:.1f}' for t in per_epoch)} s); steady img/s after warm-up "
              f"{len(data.train_labels) / per_epoch[-1]:,.0f} (incl. validation) vs eager trainer {eager:,.0f}")
    if args.compile_only or args.trainer_only:
        return
    mem = peak_memory(args.epochs)
    cuda = f", CUDA peak {mem['cuda_mib']:.0f} MiB" if mem["cuda_mib"] is not None else ""
    print(f"\nPeak memory of one trial (fresh process, {args.epochs} epochs): "
          f"RSS {mem['rss_mib']:.0f} MiB, of which {mem['before_mib']:.0f} MiB before the model is built "
          f"(Python, torch, the decoded data){cuda} (status {mem['status']})")


if __name__ == "__main__":
    main()
