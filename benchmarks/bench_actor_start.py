"""How long a search's Ray actors take before they can train, with and without torchvision.

Tune runs each worker's trials in one Ray actor (``reuse_actors``), a fresh Python process that
imports Ray Tune, torch and this package, and builds its first network, before the first epoch.
On a 2-core machine that is most of a search's fixed start-up. This starts a local Ray (2 CPUs),
lets it settle, creates 2 actors (one per worker, as the default search does) and times until
both have imported what Tune's trainable imports and built the default proxy. Two variants,
alternated in fresh processes (``--repeats`` each, median reported):

- ``as built``: what a trial imports today (``models/network.py`` has its own three layers);
- ``+ torchvision.ops``: the same actor also importing ``torchvision.ops``, which is what the
  network's layers cost before they were written out (importing it loads all of torchvision).

    python benchmarks/bench_actor_start.py             # 4 repeats of each
    python benchmarks/bench_actor_start.py --repeats 6
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys

ONE = r"""
import logging, sys, time
import ray
ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
         logging_level=logging.ERROR)
WITH_TORCHVISION = sys.argv[1] == "1"

@ray.remote(num_cpus=1)
class Worker:
    def ready(self):
        import ray.tune  # noqa: F401  (Tune's trainable wrapper)
        import scaling_search.train.runners.ray_tune  # noqa: F401  (the trainable's module)
        if WITH_TORCHVISION:
            import torchvision.ops  # noqa: F401
        from scaling_search.models.backbones import get_backbone
        from scaling_search.models.scaling import Multipliers, Rounding
        get_backbone("efficientnet_b0").scale(Multipliers(0.6, 0.55, 1.0), Rounding(), 37).build(10)
        return time.time(), sorted(m for m in sys.modules if m.startswith("torchvision"))[:1]

time.sleep(3)  # Ray's own start-up settles, so only the actors are timed
t0 = time.time()
workers = [Worker.remote() for _ in range(2)]
done = ray.get([w.ready.remote() for w in workers])
print(f"{max(t for t, _ in done) - t0:.3f} {bool(done[0][1])}")
ray.shutdown()
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=4)
    args = p.parse_args()
    times: dict[str, list[float]] = {"as built": [], "+ torchvision.ops": []}
    for _ in range(args.repeats):
        for label, flag in (("+ torchvision.ops", "1"), ("as built", "0")):
            out = subprocess.run([sys.executable, "-c", ONE, flag], capture_output=True, text=True, check=True)
            seconds, imported = out.stdout.split()[-2:]
            assert imported == str(flag == "1"), f"{label}: torchvision imported={imported}"
            times[label].append(float(seconds))
    print("| actors (2, on a local Ray of 2 CPUs) | ready to train, median (s) | runs (s) |")
    print("|---|--:|---|")
    for label, ts in times.items():
        print(f"| {label} | {statistics.median(ts):.2f} | {', '.join(f'{t:.2f}' for t in ts)} |")
    a, b = (statistics.median(times[k]) for k in ("as built", "+ torchvision.ops"))
    print(f"\nwithout torchvision the actors are ready {b - a:.2f} s sooner ({b / a:.2f}x)")


if __name__ == "__main__":
    main()
