"""The verdict's power (``analysis.power``): the detectable difference checked by simulating the
paired test it describes (McNemar's exact test, as ``analysis.results.paired_over_images`` runs
it), and what the dry run and a finished search say."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from conftest import TINY, compose_grid
from scipy import optimize, stats

from scaling_search.analysis.power import (
    detectable_difference,
    independent_discordance,
    observed_discordance,
    power_lines,
)
from scaling_search.analysis.results import paired_over_images


def _simulated_power(n: int, psi: float, delta: float, draws: int, seed: int = 0) -> float:
    """How often McNemar's exact test at 5% finds a difference ``delta`` between two candidates
    that disagree on a share ``psi`` of ``n`` images."""
    rng = np.random.default_rng(seed)
    k = rng.binomial(n, psi, draws)
    wins = rng.binomial(k, (1 + delta / psi) / 2)
    return float(np.mean([kk > 0 and stats.binomtest(int(w), int(kk), 0.5).pvalue < 0.05 for w, kk in zip(wins, k)]))


@pytest.mark.parametrize("n,psi", [(359, 0.095), (1200, 0.04), (5000, 0.2)])
def test_the_detectable_difference_is_found_80_percent_of_the_time(n, psi):
    mde = detectable_difference(n, psi)
    assert 0 < mde < psi
    assert 0.72 <= _simulated_power(n, psi, mde, 3000) <= 0.88
    assert _simulated_power(n, psi, mde / 2, 3000, seed=1) < 0.45  # half of it is mostly missed


def test_it_solves_connors_sample_size_formula():
    """Independently: Connor's n for the returned difference is the number of pairs given."""
    za, zb = stats.norm.ppf(0.975), stats.norm.ppf(0.8)
    for n, psi in [(359, 0.095), (10_000, 0.03)]:
        mde = detectable_difference(n, psi)
        root = optimize.brentq(lambda d: (za * math.sqrt(psi) + zb * math.sqrt(psi - d * d)) ** 2 / d ** 2 - n,
                               1e-9, psi)
        assert mde == pytest.approx(root, rel=1e-6)
    assert detectable_difference(4 * 359, 0.095) == pytest.approx(detectable_difference(359, 0.095) / 2, rel=0.05)


def test_too_few_images_detect_nothing():
    assert math.isinf(detectable_difference(5, 0.02))  # one disagreement expected: no test can
    assert math.isinf(detectable_difference(0, 0.1))
    assert math.isinf(detectable_difference(100, 0.0))
    assert independent_discordance(0.05) == pytest.approx(0.095)


def test_the_knobs_are_named_only_when_the_difference_is_above_the_threshold():
    small = power_lines(359, 1, 0.05, 0.01)
    assert small[0].startswith("power: the paired test over 359 validation images x 1 seed(s) detects 4.5 points")
    assert len(small) == 2 and "data.val_fraction" in small[1] and "seeds_per_candidate" in small[1]
    assert "racing.enabled" in small[1]
    large = power_lines(20_000, 3, 0.05, 0.01)
    assert len(large) == 1 and "detects 0.4 points" in large[0]


def test_observed_discordance_pairs_the_winner_with_each_candidate():
    w = np.array([1, 1, 1, 1, 0, 1, 1, 1, 1, 1], bool)
    a = w.copy()
    a[[0, 1]] = ~a[[0, 1]]  # disagrees on 2 of 10
    b = w.copy()
    b[[0, 1, 2, 3]] = ~b[[0, 1, 2, 3]]  # on 4 of 10
    c = w.copy()
    c[5] = False  # on 1 of 10
    assert observed_discordance([(w, a), (w, b), (w, c)]) == (0.2, 10)
    assert observed_discordance([]) is None
    # what the paired test itself counts as discordant: the same images
    assert paired_over_images(w, b)[0] == pytest.approx((int((w & ~b).sum()) - int((~w & b).sum())) / 10)


def test_the_dry_run_states_the_power_before_anything_trains(tmp_path):
    from scaling_search.steps.step1 import run_search

    out = io.StringIO()
    run_search(compose_grid(tmp_path / "run", *TINY, "dry_run=true", "stats.expected_error=0.2"), out)
    lines = [line for line in out.getvalue().splitlines() if line.startswith("power:")]
    assert "stats.expected_error=0.2: two candidates disagreeing on 32.0% of the images" in lines[0]
    n_val = int(lines[0].split("over ")[1].split(" validation")[0].replace(",", ""))
    assert f"detects {100 * detectable_difference(n_val, 0.32):.1f} points" in lines[0]
    assert not (tmp_path / "run").exists()


def test_a_finished_search_states_the_power_it_had_beside_its_tied_set(tmp_path):
    from scaling_search.steps.step1 import run_search
    from scaling_search.train.records import TrialStore

    out = io.StringIO()
    settings = compose_grid(tmp_path / "run", *TINY, "runner=local", "trainer.epochs=1", "data.num_images=200")
    outcome = run_search(settings, out)
    records = TrialStore(outcome.run_dir).load()
    correct = {r["spec"]["candidate_id"]: r["row"]["val_correct"] for r in records}
    from scaling_search.train.records import unpack_correct

    arrays = {k: unpack_correct(v) for k, v in correct.items() if v}
    win = outcome.winner["candidate_id"]
    others = [c for c in arrays if c != win and not c.startswith("d1.00_w1.00_r1.00")]
    psi = float(np.median([np.mean(arrays[win] != arrays[c]) for c in others]))
    n = len(arrays[win])
    expected = (f"power, observed: the candidates disagreed with the winner on a median {100 * psi:.1f}% of {n:,} "
                "paired images")
    assert expected in out.getvalue()
    assert f"# {expected}" in (outcome.run_dir / "coefficients.yaml").read_text()  # the report shows this header


@pytest.mark.parametrize("overrides", [(), ("data.num_images=3", "data.val_fraction=0.1"),
                                       ("data.num_images=25", "data.val_fraction=0.1"),
                                       ("data=synthetic", "data.num_images=101")])
def test_the_counts_the_power_is_stated_for_are_the_loaders_split(overrides):
    import torch

    from scaling_search.settings import DataSettings
    from scaling_search.train.data import _split, train_image_count, val_image_count

    kw = dict(o.split("=", 1) for o in overrides)
    s = DataSettings(kw.pop("data", "digits"), num_images=int(kw["data.num_images"]) if "data.num_images" in kw
                     else None, val_fraction=float(kw.get("data.val_fraction", 0.2)))
    n = 1797 if s.name == "digits" else s.num_images
    try:
        split = _split(torch.zeros(n, 1), torch.zeros(n), s, s.name, 2)
    except ValueError:  # too few to train: the run refuses it; the counts still follow the rule
        n_val = max(1, round(min(n, s.num_images or n) * s.val_fraction))
        assert val_image_count(s) == n_val
        return
    assert (train_image_count(s), val_image_count(s)) == (len(split.train_labels), len(split.val_labels))


def test_a_plan_with_too_few_disagreements_says_no_difference_can_be_detected():
    line = power_lines(20, 1, 0.01, 0.01)[0]  # 20 images, 2% disagreeing: under one discordant image
    assert "cannot reach 80% power at the 95% level for any difference" in line and "detects" not in line
