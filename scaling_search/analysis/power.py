"""What a Step-1 verdict can tell before it is paid for: the smallest top-1 difference the paired
test over validation images detects with 80% power at the 95% level.

Two candidates classify the same ``n`` validation images; only the images on which they disagree
(discordant pairs, a share ``ψ`` of them) carry information, and McNemar's test asks whether one
candidate wins them more often than half. With a true difference ``δ`` in top-1 (``δ = p10 -
p01``, ``ψ = p10 + p01``), Connor's sample size for McNemar's test (Biometrics 43, 1987) is

    n = (z_{1-α/2} √ψ + z_{1-β} √(ψ - δ²))² / δ²,

which ``detectable_difference`` solves for ``δ``. Before training, ``ψ`` comes from a stated
model: two candidates with about the same error rate ``e`` whose mistakes were independent
disagree on ``2e(1 - e)`` of the images (real networks' mistakes overlap, so this is the
pessimistic end); after training, from the candidates' observed disagreement with the winner.

With several seeds the images of every seed are pooled here (``n`` times the seeds); the verdict
itself then compares the seeds' mean top-1 (``analysis.results.compare``), whose spread over
seeds is not known before training.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

ALPHA, POWER = 0.05, 0.80


def detectable_difference(pairs: int, discordance: float, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest top-1 difference McNemar's test at level ``alpha`` detects with probability
    ``power`` over ``pairs`` paired images of which a share ``discordance`` disagree; ``inf``
    where none can be (too few images, or too few disagreements)."""
    if pairs < 1 or not 0 < discordance <= 1:
        return math.inf
    za, zb = NormalDist().inv_cdf(1 - alpha / 2), NormalDist().inv_cdf(power)
    psi, root_n = discordance, math.sqrt(pairs)

    def excess(delta: float) -> float:  # > 0: delta is too small to detect
        return za * math.sqrt(psi) + zb * math.sqrt(max(psi - delta * delta, 0.0)) - delta * root_n

    if excess(psi) > 0:  # even a candidate that wins every disagreement is not detected
        return math.inf
    lo, hi = 0.0, psi
    for _ in range(100):  # excess falls monotonically in delta: bisection
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if excess(mid) > 0 else (lo, mid)
    return hi


def detects(mde: float) -> str:
    """``detects 4.5 points of top-1 with 80% power at the 95% level``, or why it cannot."""
    if math.isinf(mde):
        return ("cannot reach 80% power at the 95% level for any difference (too few images on which two "
                "candidates disagree)")
    return f"detects {100 * mde:.1f} points of top-1 with 80% power at the 95% level"


def independent_discordance(error: float) -> float:
    """The share of images two candidates with top-1 error ``error`` disagree on, were their
    mistakes independent: ``2e(1 - e)``."""
    return 2 * error * (1 - error)


def power_lines(val_images: int, seeds: int, expected_error: float, min_difference: float) -> list[str]:
    """What the console and the dry run say before training: the detectable difference for the
    plan, and, where it is larger than ``min_difference``, the knobs that shrink it."""
    pairs = val_images * seeds
    psi = independent_discordance(expected_error)
    mde = detectable_difference(pairs, psi)
    lines = [f"power: the paired test over {val_images:,} validation images x {seeds} seed(s) {detects(mde)} "
             f"(stats.expected_error={expected_error:g}: two candidates "
             f"disagreeing on {100 * psi:.1f}% of the images, as if their mistakes were independent)"]
    if mde > min_difference:
        need = math.ceil(pairs * (mde / min_difference) ** 2) if not math.isinf(mde) else None
        more = f" (about {need:,} image-seed pairs, {need / max(pairs, 1):.0f}x these)" if need else ""
        lines.append(f"power: that is more than stats.min_difference={min_difference:g} "
                     f"({100 * min_difference:g} point{'' if min_difference == 0.01 else 's'}), so "
                     f"candidates closer than it will mostly tie; to separate them, validate on more images "
                     f"(data.val_fraction, data.num_images){more}, train more seeds (seeds_per_candidate), "
                     "or race them (racing.enabled) to spend the seeds on the close ones")
    return lines


def observed_discordance(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[float, int] | None:
    """From trained candidates: the median share of images on which each disagreed with the
    winner (``pairs``: the winner's and one other's per-image correctness, seeds pooled), and the
    median number of paired images; None where nothing was paired."""
    paired = [(np.asarray(a, bool), np.asarray(b, bool)) for a, b in pairs if len(a) and len(a) == len(b)]
    if not paired:
        return None
    return float(np.median([np.mean(a != b) for a, b in paired])), int(np.median([len(a) for a, _ in paired]))
