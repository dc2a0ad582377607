"""How fast is costing a candidate? Analytic estimate vs the counted cost on the meta device.

The Step-1 search costs every candidate before it builds anything, so the analytic estimate
must take well under 10 ms even for the largest network (B7 at 600 px).

    python benchmarks/bench_cost.py            # prints a markdown table
    python benchmarks/bench_cost.py --repeat 200
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

from scaling_search.models.backbones import get_backbone
from scaling_search.models.reference import published_efficientnets


def _time(fn, repeat: int) -> tuple[float, float]:
    fn()  # warm-up
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples) * 1e3, min(samples) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()

    b7 = next(p for p in published_efficientnets() if p.name == "b7")
    cases = [
        ("EfficientNet-B7 @ 600 px", b7.scaled()),
        ("EfficientNet-B0 @ 224 px", get_backbone("efficientnet_b0").scale()),
        ("ResNet-152 @ 224 px", get_backbone("resnet152").scale()),
    ]
    print(f"python {platform.python_version()}, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads\n")
    print("| network | scale + estimate (ms, median / min) | count on meta device (ms, median / min) | speed-up |")
    print("|---|---|---|---|")
    for label, model in cases:
        backbone = get_backbone(model.backbone)

        def estimate():
            backbone.scale(model.multipliers).estimate_cost()

        est_med, est_min = _time(estimate, args.repeat)
        cnt_med, cnt_min = _time(model.count_cost, max(3, args.repeat // 10))
        print(f"| {label} | {est_med:.3f} / {est_min:.3f} | {cnt_med:.1f} / {cnt_min:.1f} | "
              f"{cnt_med / est_med:,.0f}x |")


if __name__ == "__main__":
    main()
