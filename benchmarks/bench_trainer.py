"""Trainer throughput against a minimal hand-written PyTorch loop, and a trial's peak memory.

Both loops train the same network (the default demo's proxy: EfficientNet-B0 at half depth and
half width, here at 38 px, the paper's gamma on 32 px) on the same pre-resized digits tensors
with the same optimiser, batch size and thread count; only the training steps are timed (the
trainer's ``images_per_s`` excludes its validation pass). Goal: the trainer reaches >= 0.95 of
the hand loop. Peak memory is the max resident set of a fresh process that runs one whole trial
(data loading, model, training, validation), on CPU; on a GPU the CUDA peak is reported too.

    python benchmarks/bench_trainer.py                 # markdown table
    python benchmarks/bench_trainer.py --epochs 3 --threads 1 2
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time

import torch
from torch import nn

from scaling_search.models.backbones import get_backbone
from scaling_search.train.data import DataSettings, load_dataset
from scaling_search.models.scaling import Multipliers
from scaling_search.train.trainer import TrainSettings, pick_device, train

MULTIPLIERS = Multipliers(0.5 * 1.2, 0.5 * 1.1, 1.15)
BASE_PX = 32


def _model(device):
    torch.manual_seed(0)
    m = get_backbone("efficientnet_b0").scale(MULTIPLIERS, resolution_px=BASE_PX)
    return m.build(10).to(device), m.resolution_px


def hand_loop(data, px: int, settings: TrainSettings, device) -> float:
    """The smallest correct loop: shuffle, index, forward, loss, backward, step. Images/s."""
    model, _ = _model(device)
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


def trainer_loop(data, px: int, settings: TrainSettings, device) -> float:
    model, _ = _model(device)
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
    args = parser.parse_args()

    if args.memory_only:
        mem = peak_memory(args.epochs)
        print(mem)
        return
    device = pick_device(args.device)
    data = load_dataset(DataSettings("digits"))
    _, px = _model("meta")
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, device {device}, "
          f"EfficientNet-B0 proxy at {px} px, digits ({len(data.train_labels)} training images), "
          f"{args.epochs} epochs, batch {args.batch_size}\n")
    print("| threads | hand loop (img/s) | trainer (img/s) | trainer / hand loop |")
    print("|---|---|---|---|")
    for threads in args.threads:
        torch.set_num_threads(threads)
        s = TrainSettings(epochs=args.epochs, batch_size=args.batch_size, num_threads=threads,
                          warmup_epochs=0, device=device.type)
        hand_loop(data, px, TrainSettings(epochs=1, batch_size=args.batch_size), device)  # warm-up
        hand, ours = [], []
        for _ in range(2):  # interleave, best of two each: the machine's noise hits both alike
            hand.append(hand_loop(data, px, s, device))
            ours.append(trainer_loop(data, px, s, device))
        print(f"| {threads} | {max(hand):,.0f} | {max(ours):,.0f} | {max(ours) / max(hand):.3f} |")
    mem = peak_memory(args.epochs)
    cuda = f", CUDA peak {mem['cuda_mib']:.0f} MiB" if mem["cuda_mib"] is not None else ""
    print(f"\nPeak memory of one trial (fresh process, {args.epochs} epochs): "
          f"RSS {mem['rss_mib']:.0f} MiB, of which {mem['before_mib']:.0f} MiB before the model is built "
          f"(Python, torch, the decoded data){cuda} (status {mem['status']})")


if __name__ == "__main__":
    main()
