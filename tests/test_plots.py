"""Each plot is a function of a table: what it draws follows from the table's numbers."""

import math

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


def test_scaling_curves_draw_a_users_rule_too():
    """A rule without a style of its own (``d1_w2_r1``) is drawn, from the base network on."""
    user = pd.DataFrame({"candidate_id": ["d1_w2_r1_phi1"], "role": ["d1_w2_r1"], "phi": [1],
                         "macs": [2.05e6], "macs_ratio": [2.05], "top1_mean": [0.85]})
    fig = plots.scaling_curves(pd.concat([FAMILY, user], ignore_index=True))
    lines = {c.get_label(): c.lines[0] for c in fig.axes[0].containers}
    assert "d1_w2_r1 scaling" in lines and list(lines["d1_w2_r1 scaling"].get_xdata()) == [1e6, 2.05e6]


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


# Step 1 as a split of the cost. The shares are worked out here from logarithms, apart from the
# code: ln 1.2 = 0.18232, 2 ln 1.1 = 0.19062, 2 ln 1.15 = 0.27952, their sum 0.65246 = ln 1.92027.
def _shares_by_hand(alpha, beta, gamma):
    parts = [math.log(alpha), 2 * math.log(beta), 2 * math.log(gamma)]
    return [p / sum(parts) for p in parts]


def _barycentric(point, corners):
    """Weights of the triangle's corners at ``point``, each the area of the triangle the point
    makes with the other two corners over the whole triangle's area (signed, so a point outside
    gets a negative weight)."""
    def area(a, b, c):
        return ((b[0] - a[0]) * (c[1] - a[1]) - (c[0] - a[0]) * (b[1] - a[1])) / 2
    d, w, r = corners
    return [area(point, w, r) / area(d, w, r), area(d, point, r) / area(d, w, r),
            area(d, w, point) / area(d, w, r)]


def test_cost_shares_of_the_papers_coefficients():
    shares = plots.cost_shares(1.2, 1.1, 1.15)
    assert shares == pytest.approx((0.2794, 0.2922, 0.4284), abs=5e-5)  # the numbers
    assert shares == pytest.approx(_shares_by_hand(1.2, 1.1, 1.15), rel=1e-12)
    assert sum(shares) == pytest.approx(1)
    assert plots.cost_shares(2.0, 1.0, 1.0) == (1.0, 0.0, 0.0)  # depth alone
    assert plots.cost_shares(1.0, 2**0.5, 1.0) == pytest.approx((0, 1, 0))  # width alone: β² = 2
    with pytest.raises(ValueError, match="α·β²·γ² = 1: the cost does not grow"):
        plots.cost_shares(1.0, 1.0, 1.0)  # the unscaled baseline has no split
    with pytest.raises(ValueError, match="positive coefficients"):
        plots.cost_shares(1.2, 0.0, 1.15)


def _collection(ax, prefix):
    [c] = [c for c in ax.collections if c.get_label().startswith(prefix)]
    return c


def test_cost_split_places_each_candidate_at_its_shares():
    fig = plots.cost_split(RANKING)
    ax = fig.axes[0]
    [triangle] = [line for line in ax.get_lines() if line.get_gid() == "triangle"]
    corners = np.column_stack([triangle.get_xdata(), triangle.get_ydata()])[:3]  # depth, width, resolution
    cands = RANKING[RANKING["role"] == "candidate"]
    points = _collection(ax, "candidates")
    assert points.get_label() == "candidates (4)"  # the baseline (1, 1, 1) has no split: left off
    for xy, (_, row) in zip(points.get_offsets(), cands.iterrows(), strict=True):
        expected = _shares_by_hand(row["depth_coef"], row["width_coef"], row["resolution_coef"])
        assert _barycentric(xy, corners) == pytest.approx(expected, abs=1e-12)
    assert list(points.get_array()) == list(cands["top1_mean"])  # coloured by mean top-1
    assert points.get_offsets()[3].tolist() == pytest.approx(corners[0].tolist())  # (2, 1, 1): all depth
    # the references: the paper's point, uniform (the centre) and pycls's fast (0.1, 0.8, 0.1)
    paper = _collection(ax, "paper (1.2, 1.1, 1.15): (0.28, 0.29, 0.43)")
    assert _barycentric(paper.get_offsets()[0], corners) == pytest.approx([0.2794, 0.2922, 0.4284], abs=5e-5)
    uniform = _collection(ax, "uniform").get_offsets()[0]
    assert uniform.tolist() == pytest.approx(corners.mean(axis=0).tolist())
    fast = _collection(ax, "fast, pycls d1_w8_r1").get_offsets()[0]
    assert _barycentric(fast, corners) == pytest.approx([0.1, 0.8, 0.1])
    assert not [c for c in ax.collections if c.get_label().startswith("tied")]  # no tied set in this ranking


def test_cost_split_rings_the_tied_set_when_the_ranking_has_one():
    ranking = RANKING.assign(tied_with_best=[True, True, False, False, False])
    ax = plots.cost_split(ranking).axes[0]
    tied, points = _collection(ax, "tied with the best (2)"), _collection(ax, "candidates")
    assert tied.get_offsets().tolist() == points.get_offsets()[:2].tolist()
    # as results.rank writes it: a nullable boolean, unknown (no paired data) for some rows
    unknown = RANKING.assign(tied_with_best=pd.array([True, None, False, None, None], dtype="boolean"))
    ax = plots.cost_split(unknown).axes[0]
    assert _collection(ax, "tied with the best (1)").get_offsets().tolist() == [
        _collection(ax, "candidates").get_offsets()[0].tolist()]
    ax = plots.cost_split(RANKING.assign(tied_with_best=pd.array([None] * 5, dtype="boolean"))).axes[0]
    assert not [c for c in ax.collections if c.get_label().startswith("tied")]


def test_error_ecdf_steps_at_the_sorted_errors():
    ax = plots.error_ecdf(RANKING).axes[0]
    [edf] = [line for line in ax.get_lines() if line.get_label() == "candidates (4)"]
    errors = sorted(1 - t for t in [0.95, 0.97, 0.90, 0.85])  # the four candidates'
    assert list(edf.get_xdata()) == pytest.approx(errors)  # 0.03, 0.05, 0.10, 0.15
    assert list(edf.get_ydata()) == [0.25, 0.5, 0.75, 1.0]
    assert edf.get_drawstyle() == "steps-post"  # flat until the next error: F(e) = share with error ≤ e
    [base] = [line for line in ax.get_lines() if line.get_label().startswith("unscaled baseline")]
    assert list(base.get_xdata()) == pytest.approx([0.12, 0.12])  # 1 - 0.88, a line, not a sample
    ties = pd.DataFrame({"top1_mean": [0.8, 0.9, 0.9]})  # no role column: every row is a sample
    edf = plots.error_ecdf(ties).axes[0].get_lines()[0]
    assert list(edf.get_xdata()) == pytest.approx([0.1, 0.1, 0.2])
    assert list(edf.get_ydata()) == pytest.approx([1 / 3, 2 / 3, 1])


def test_step1_plots_need_a_candidate():
    only_base = RANKING[RANKING["role"] == "baseline"]
    with pytest.raises(ValueError, match="cost_split needs at least one candidate whose α·β²·γ² is not 1"):
        plots.cost_split(only_base)
    with pytest.raises(ValueError, match="error_ecdf needs at least one candidate"):
        plots.error_ecdf(only_base)
    with pytest.raises(ValueError, match="cost_split needs the column.*resolution_coef"):
        plots.cost_split(RANKING.drop(columns="resolution_coef"))
