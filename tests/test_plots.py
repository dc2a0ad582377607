"""Each plot is a function of a table: what it draws follows from the table's numbers."""

import numpy as np
import pandas as pd
import pytest

from scaling_search.analysis import plots
from scaling_search.analysis.results import pareto_mask

RANKING = pd.DataFrame({
    "candidate_id": ["a", "b", "c", "d", "base"],
    "role": ["candidate"] * 4 + ["baseline"],
    "depth_coef": [1.2, 1.0, 1.4, 2.0, 1.0], "width_coef": [1.1, 1.3, 1.0, 1.0, 1.0],
    "resolution_coef": [1.15, 1.1, 1.2, 1.0, 1.0],
    "macs": [5e6, 6e6, 4e6, 2.6e6, 1.6e6], "top1_mean": [0.95, 0.97, 0.90, 0.85, 0.88],
    "top1_ci95": [0.01, 0.02, np.nan, 0.01, 0.0],
})
FAMILY = pd.DataFrame({
    "candidate_id": ["compound_phi0", "compound_phi1", "depth_phi1", "width_phi1", "compound_phi2", "depth_phi2"],
    "role": ["compound", "compound", "depth", "width", "compound", "depth"],
    "phi": [0, 1, 1, 1, 2, 2], "macs": [1e6, 2.1e6, 2.0e6, 2.2e6, 4.3e6, 4.1e6],
    "macs_ratio": [1, 2.1, 2.0, 2.2, 4.3, 4.1], "top1_mean": [0.8, 0.86, 0.82, 0.84, 0.9, 0.83],
})


def test_landscape_stars_the_best_candidate_and_marks_the_paper():
    fig = plots.landscape(RANKING)
    ax = fig.axes[0]
    offsets = [c.get_offsets() for c in ax.collections]
    points = offsets[0]
    assert len(points) == 4  # the baseline is not a point on the constraint surface
    assert points.tolist() == [[1.1, 1.2], [1.3, 1.0], [1.0, 1.4], [1.0, 2.0]]  # (beta, alpha)
    assert offsets[1].tolist() == [[1.3, 1.0]]  # winner b: beta 1.3 (x), alpha 1.0 (y)
    assert offsets[2].tolist() == [[1.1, 1.2]]  # the paper's (1.2, 1.1, 1.15)
    assert "paper (1.2, 1.1, 1.15)" in [c.get_label() for c in ax.collections]
    assert "α" in ax.get_ylabel() and "β" in ax.get_xlabel()


def test_accuracy_vs_macs_draws_the_pareto_front_of_the_table():
    fig = plots.accuracy_vs_macs(RANKING)
    ax = fig.axes[0]
    front = [line for line in ax.get_lines() if line.get_label() == "Pareto front"][0]
    mask = pareto_mask(RANKING["macs"].to_numpy(), RANKING["top1_mean"].to_numpy())
    expected = RANKING[mask].sort_values("macs")
    assert list(front.get_xdata()) == list(expected["macs"])
    assert list(front.get_ydata()) == list(expected["top1_mean"])
    assert "MACs" in ax.get_xlabel() and ax.get_xscale() == "log"


def test_accuracy_vs_macs_front_with_ties_is_the_ranking_front():
    # Equal MACs (a, b: the lower top-1 first), and equal points (c, d): the plot's front is
    # results.pareto_mask's, b, c, d and e, and names exactly those points.
    table = pd.DataFrame({"candidate_id": ["a", "b", "c", "d", "e", "f"],
                          "macs": [2e6, 2e6, 3e6, 3e6, 1e6, 4e6],
                          "top1_mean": [0.6, 0.7, 0.8, 0.8, 0.5, 0.75]})
    ax = plots.accuracy_vs_macs(table).axes[0]
    front = [line for line in ax.get_lines() if line.get_label() == "Pareto front"][0]
    assert list(zip(front.get_xdata(), front.get_ydata())) == [
        (1e6, 0.5), (2e6, 0.7), (3e6, 0.8), (3e6, 0.8)]
    assert sorted(t.get_text() for t in ax.texts) == ["b", "c", "d", "e"]


def test_scaling_curves_start_every_method_at_the_base_network():
    fig = plots.scaling_curves(FAMILY)
    lines = {c.get_label(): c.lines[0] for c in fig.axes[0].containers}
    assert set(lines) == {"compound scaling (α, β, γ)", "depth scaling", "width scaling"}
    depth = lines["depth scaling"]
    assert list(depth.get_xdata()) == [1e6, 2.0e6, 4.1e6]
    assert list(depth.get_ydata()) == [0.8, 0.82, 0.83]
    assert list(lines["width scaling"].get_xdata()) == [1e6, 2.2e6]
    by_params = plots.scaling_curves(FAMILY.assign(params=FAMILY["macs"] / 10), cost="params")
    depth = {c.get_label(): c.lines[0] for c in by_params.axes[0].containers}["depth scaling"]
    assert list(depth.get_xdata()) == [1e5, 2.0e5, 4.1e5] and "parameters" in by_params.axes[0].get_xlabel()
    with pytest.raises(ValueError, match="cost must be one of macs, params, activations"):
        plots.scaling_curves(FAMILY, cost="flops")


def test_macs_growth_against_two_to_the_phi():
    fig = plots.macs_growth(FAMILY, product=1.92)
    lines = {line.get_label(): line for line in fig.axes[0].get_lines()}
    measured = lines["measured (rounded networks)"]
    assert list(measured.get_xdata()) == [0, 1, 2] and list(measured.get_ydata()) == [1, 2.1, 4.3]
    target = lines["2^φ (the target)"]
    np.testing.assert_allclose(target.get_ydata(), 2.0 ** target.get_xdata())
    assert any("1.920" in label for label in lines)


def test_training_curves_and_seed_spread():
    epochs = pd.DataFrame({"trial_id": ["t1"] * 3 + ["t2"] * 3, "epoch": [1, 2, 3] * 2,
                           "val/top1": [0.1, 0.5, 0.7, 0.2, 0.4, 0.6]})
    fig = plots.training_curves(epochs)
    assert [list(line.get_ydata()) for line in fig.axes[0].get_lines()] == [[0.1, 0.5, 0.7], [0.2, 0.4, 0.6]]
    results = pd.DataFrame({"candidate_id": ["a", "a", "a", "b"], "seed": [0, 1, 2, 0],
                            "final_top1": [0.8, 0.9, 1.0, 0.5], "status": ["ok"] * 4})
    fig = plots.seed_spread(results)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b"]  # best mean first (top)
    bars = [c for c in ax.containers]
    assert bars[0].lines[0].get_xdata()[0] == pytest.approx(0.9)  # a's mean


def test_save_writes_png_and_svg(tmp_path):
    paths = plots.save(plots.macs_growth(FAMILY), tmp_path / "plots" / "growth")
    assert [p.name for p in paths] == ["growth.png", "growth.svg"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in paths[1].read_text()[:1000]


def test_a_table_without_the_columns_is_refused():
    with pytest.raises(ValueError, match="scaling_curves needs the column.*top1_mean"):
        plots.scaling_curves(FAMILY.drop(columns="top1_mean"))
    with pytest.raises(ValueError, match="at least one row"):
        plots.accuracy_vs_macs(RANKING.iloc[:0])
