"""The figures of a run, each a function of a results table (DataFrame in, matplotlib Figure out).

Any table with the named columns can be re-plotted, e.g. ``accuracy_vs_macs(pd.read_csv(
"ranking.csv"))``; ``save`` writes a figure as PNG and SVG. Figures are made with the
object-oriented API (``matplotlib.figure.Figure``), so nothing depends on pyplot's global state
or on a display. Cost is in MACs (multiply-adds, the paper's "FLOPs"), and every axis says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from scaling_search.analysis.results import ci95, pareto_mask, rank_agreement
from scaling_search.files import atomic_output
from scaling_search.models.scaling import PAPER_COEFFICIENTS, Coefficients

METHOD_STYLE = {"compound": ("tab:red", "o"), "depth": ("tab:blue", "s"), "width": ("tab:green", "^"),
                "resolution": ("tab:purple", "D"), "fast": ("tab:orange", "v"), "uniform": ("tab:brown", "P"),
                "fast_max480": ("tab:olive", "<"), "compound_max480": ("tab:pink", ">")}
FORMATS = ("png", "svg")


def _figure(width: float = 6.4, height: float = 4.4) -> tuple[Figure, object]:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    return fig, fig.add_subplot()


def _require(df: pd.DataFrame, columns: Sequence[str], what: str) -> pd.DataFrame:
    missing = [c for c in columns if c not in df]
    if missing:
        raise ValueError(f"{what} needs the column(s) {', '.join(missing)}")
    if df.empty:
        raise ValueError(f"{what} needs at least one row")
    return df


def _ci95(df: pd.DataFrame) -> pd.Series | None:
    """The 95% interval half-widths, where the table has any (a single seed has none)."""
    return df["top1_ci95"] if "top1_ci95" in df and df["top1_ci95"].notna().any() else None


def landscape(ranking: pd.DataFrame, paper: Coefficients | None = PAPER_COEFFICIENTS) -> Figure:
    """Step 1's candidates on the constraint surface: α against β (γ follows from the
    constraint and is written beside each point), coloured by mean top-1; the winner starred,
    the paper's (α, β, γ) marked."""
    df = _require(ranking, ["depth_coef", "width_coef", "resolution_coef", "top1_mean"], "landscape")
    df = df[df.get("role", "candidate") != "baseline"] if "role" in df else df
    fig, ax = _figure(6.4, 4.8)
    sc = ax.scatter(df["width_coef"], df["depth_coef"], c=df["top1_mean"], cmap="viridis", s=70,
                    edgecolors="black", linewidths=0.4, zorder=2)
    fig.colorbar(sc, ax=ax, label="validation top-1 (mean over seeds)")
    for _, r in df.iterrows():
        ax.annotate(f"γ={r['resolution_coef']:.2f}", (r["width_coef"], r["depth_coef"]), fontsize=6,
                    xytext=(3, 3), textcoords="offset points", color="dimgray")
    best = df.loc[df["top1_mean"].idxmax()]
    ax.scatter([best["width_coef"]], [best["depth_coef"]], marker="*", s=320, facecolors="none",
               edgecolors="red", linewidths=1.5, zorder=3,
               label=f"winner ({best['depth_coef']:g}, {best['width_coef']:g}, {best['resolution_coef']:g})")
    if paper is not None:
        ax.scatter([paper.width_coef], [paper.depth_coef], marker="X", s=110, color="black", zorder=4,
                   label=f"paper ({paper.depth_coef:g}, {paper.width_coef:g}, {paper.resolution_coef:g})")
    ax.set_xlabel("β (width coefficient)")
    ax.set_ylabel("α (depth coefficient)")
    ax.set_title("Step 1: candidates on α·β²·γ² ≈ 2, coloured by top-1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper right")
    return fig


# Step 1 as a split of the cost (Dollár, Singh and Girshick, "Fast and Accurate Model Scaling",
# CVPR 2021): d·w²·r² = s with d = s^e_d, w = s^(e_w/2), r = s^(e_r/2) and e_d + e_w + e_r = 1.
UNIFORM_SHARES = (1 / 3, 1 / 3, 1 / 3)
FAST_SHARES = (0.1, 0.8, 0.1)  # pycls's recommended rule, d1_w8_r1
SHARE_CORNERS = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, np.sqrt(3) / 2]])  # depth, width, resolution


def cost_shares(depth_coef: float, width_coef: float, resolution_coef: float) -> tuple[float, float, float]:
    """(e_d, e_w, e_r): each dimension's share of the cost exponent, (ln α, 2 ln β, 2 ln γ) over
    ln(α·β²·γ²); they sum to 1. The paper's (1.2, 1.1, 1.15) gives (0.279, 0.292, 0.428).
    ValueError where a coefficient is not positive, or where α·β²·γ² = 1 (nothing grows, e.g.
    the unscaled baseline (1, 1, 1), so there is no split)."""
    coefs = (depth_coef, width_coef, resolution_coef)
    if not all(np.isfinite(c) and c > 0 for c in coefs):
        raise ValueError(f"cost shares need positive coefficients, got {coefs}")
    logs = (np.log(depth_coef), 2 * np.log(width_coef), 2 * np.log(resolution_coef))
    total = sum(logs)
    if abs(total) < 1e-12:
        raise ValueError(f"{coefs} has α·β²·γ² = 1: the cost does not grow, so it has no split")
    return tuple(float(x / total) for x in logs)


def ternary_xy(shares) -> np.ndarray:
    """The 2D positions of (e_d, e_w, e_r) rows: the weighted mean of the triangle's corners
    ``SHARE_CORNERS`` (depth at (0, 0), width at (1, 0), resolution at (½, √3/2))."""
    return np.asarray(shares, float).reshape(-1, 3) @ SHARE_CORNERS


def _ternary_frame(ax, step: float = 0.2) -> None:
    """The triangle, its grid of constant shares and the corners' names."""
    corners = SHARE_CORNERS
    ax.plot(*np.vstack([corners, corners[:1]]).T, color="black", linewidth=1, gid="triangle")
    for k in np.arange(step, 1 - step / 2, step):  # lines where one share is k
        for i in range(3):
            j, l = (i + 1) % 3, (i + 2) % 3
            a, b = np.zeros(3), np.zeros(3)
            a[i] = b[i] = k
            a[j], b[l] = 1 - k, 1 - k
            ends = ternary_xy([a, b])
            ax.plot(ends[:, 0], ends[:, 1], color="lightgray", linewidth=0.6, zorder=0)
        # each line's share where it meets an edge: e_d below, e_w on the right, e_r on the left
        for i, offset in ((0, (0, -9)), (1, (9, 2)), (2, (-9, 2))):
            at = np.zeros(3)
            at[i], at[(i + 1) % 3] = k, 1 - k
            ax.annotate(f"{k:.1f}", tuple(ternary_xy(at)[0]), xytext=offset, textcoords="offset points",
                        fontsize=6, ha="center", va="center", color="dimgray")
    for (x, y), text, dy in zip(corners, ["depth (e_d = 1)", "width (e_w = 1)", "resolution (e_r = 1)"],
                                (-8, -8, 6)):
        ax.annotate(text, (x, y), xytext=(0, dy), textcoords="offset points", fontsize=8, ha="center",
                    va="bottom" if dy > 0 else "top", fontweight="bold")
    for (i, j), name, offset, angle in (((0, 1), "depth's share e_d", (0, -20), 0),
                                        ((1, 2), "width's share e_w", (26, 15), -60),
                                        ((2, 0), "resolution's share e_r", (-26, 15), 60)):
        ax.annotate(name, tuple((corners[i] + corners[j]) / 2), xytext=offset, textcoords="offset points",
                    fontsize=7, ha="center", va="center", rotation=angle, color="dimgray")
    ax.set_aspect("equal")
    ax.set_xlim(-0.1, 1.1)
    ax.set_ylim(-0.12, 0.93)
    ax.axis("off")


def tied_mask(df: pd.DataFrame) -> np.ndarray:
    """The rows the ranking's ``tied_with_best`` marks True (unknown, or no column: not marked)."""
    if "tied_with_best" not in df:
        return np.zeros(len(df), bool)
    return df["tied_with_best"].eq(True).fillna(False).to_numpy(dtype=bool)


def cost_split(ranking: pd.DataFrame, paper: Coefficients | None = PAPER_COEFFICIENTS) -> Figure:
    """Step 1's candidates at their shares of the cost exponent (``cost_shares``) on a ternary
    plot, coloured by mean top-1: where the search's good candidates spend their MACs. The
    paper's split, ``uniform`` (a third each) and pycls's ``fast`` (d1_w8_r1) are marked, and
    the candidates tied with the best are ringed when the ranking has a ``tied_with_best``
    column. Rows with α·β²·γ² = 1 (the unscaled baseline) have no split and are left off."""
    df = _require(ranking, ["depth_coef", "width_coef", "resolution_coef", "top1_mean"], "cost_split")
    df = df[df["role"] != "baseline"] if "role" in df else df
    coefs = df[["depth_coef", "width_coef", "resolution_coef"]].to_numpy(float)
    grows = ~np.isclose(coefs[:, 0] * coefs[:, 1] ** 2 * coefs[:, 2] ** 2, 1.0, rtol=0, atol=1e-9)
    df, coefs = df[grows], coefs[grows]
    if df.empty:
        raise ValueError("cost_split needs at least one candidate whose α·β²·γ² is not 1")
    xy = ternary_xy([cost_shares(*c) for c in coefs])
    fig, ax = _figure(6.4, 6.4)
    _ternary_frame(ax)
    sc = ax.scatter(xy[:, 0], xy[:, 1], c=df["top1_mean"], cmap="viridis", s=60, edgecolors="black",
                    linewidths=0.4, zorder=2, label=f"candidates ({len(df)})")
    fig.colorbar(sc, ax=ax, label="validation top-1 (mean over seeds)", shrink=0.8)
    if tied_mask(df).any():
        tied = xy[tied_mask(df)]
        ax.scatter(tied[:, 0], tied[:, 1], s=200, facecolors="none", edgecolors="red", linewidths=1.4,
                   zorder=3, label=f"tied with the best ({len(tied)})")
    marks = [("uniform (1/3 each)", UNIFORM_SHARES, "P", "dimgray"),
             ("fast, pycls d1_w8_r1 (0.1, 0.8, 0.1)", FAST_SHARES, "D", "tab:orange")]
    if paper is not None:
        p = cost_shares(paper.depth_coef, paper.width_coef, paper.resolution_coef)
        marks.insert(0, (f"paper ({paper.depth_coef:g}, {paper.width_coef:g}, {paper.resolution_coef:g}): "
                         f"({p[0]:.2f}, {p[1]:.2f}, {p[2]:.2f})", p, "X", "black"))
    for label, s, marker, color in marks:
        (x, y), = ternary_xy(s)
        ax.scatter([x], [y], marker=marker, s=90, color=color, edgecolors="white", linewidths=0.6,
                   zorder=4, label=label)
    ax.set_title("Step 1: the candidates' splits of the cost exponent")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=2)
    return fig


def error_ecdf(ranking: pd.DataFrame) -> Figure:
    """The empirical distribution of the candidates' top-1 errors (1 − mean top-1): at error e,
    the fraction of candidates with error ≤ e. pycls compares design spaces this way
    (Radosavovic et al., "On Network Design Spaces for Visual Recognition", ICCV 2019: the error
    EDF); a curve that rises early is a search space whose candidates are mostly good. The
    unscaled baseline, when ranked, is a dashed line, not a sample."""
    df = _require(ranking, ["top1_mean"], "error_ecdf")
    base = df[df["role"] == "baseline"] if "role" in df else df.iloc[:0]
    errors = np.sort(1 - df.drop(base.index)["top1_mean"].dropna().to_numpy(float))
    if not len(errors):
        raise ValueError("error_ecdf needs at least one candidate with a top-1")
    fig, ax = _figure()
    ax.step(errors, np.arange(1, len(errors) + 1) / len(errors), where="post", color="tab:blue",
            marker="o", markersize=3, label=f"candidates ({len(errors)})")  # a dot per candidate
    for _, b in base.iterrows():
        ax.axvline(1 - b["top1_mean"], color="black", linestyle="--", linewidth=1,
                   label=f"unscaled baseline ({1 - b['top1_mean']:.4f})")
    ax.set_ylim(0, 1.02)
    return _labelled(fig, ax, "top-1 error (1 − mean top-1 over seeds)", "fraction of candidates with error ≤ x",
                     "Step 1: the candidates' error distribution (EDF)")


def accuracy_vs_macs(table: pd.DataFrame, label: str = "candidate_id", color_by: str | None = "role") -> Figure:
    """Mean top-1 against MACs (log scale) with its 95% interval, and the Pareto front
    (``results.pareto_mask``: ties as that says)."""
    df = _require(table, ["macs", "top1_mean"], "accuracy_vs_macs")
    fig, ax = _figure()
    groups = df.groupby(color_by, sort=False) if color_by in df else [("all", df)]
    for name, g in groups:
        color, marker = METHOD_STYLE.get(str(name), (None, "o"))
        yerr = _ci95(g)
        ax.errorbar(g["macs"], g["top1_mean"], yerr=yerr, fmt=marker, color=color, label=str(name),
                    capsize=2, markersize=5, alpha=0.85)
    front = df[pareto_mask(df["macs"], df["top1_mean"])].sort_values("macs", kind="stable")
    ax.step(front["macs"], front["top1_mean"], where="post", color="black", linewidth=1, linestyle="--",
            label="Pareto front")
    if label in df:  # name the points on the front (the rest would only clutter)
        for _, r in front.iterrows():
            ax.annotate(str(r[label]), (r["macs"], r["top1_mean"]), fontsize=6, xytext=(3, -8),
                        textcoords="offset points", color="dimgray")
    ax.set_xscale("log")
    return _labelled(fig, ax, "MACs per image (multiply-adds, log scale)", "validation top-1",
                     "Top-1 against cost")


COST_LABELS = {"macs": "MACs per image (multiply-adds, log scale)", "params": "parameters (log scale)",
               "activations": "activations per image (conv and linear outputs, log scale)"}


def scaling_curves(family: pd.DataFrame, cost: str = "macs") -> Figure:
    """Step 2: top-1 against ``cost`` (``macs``, ``params`` or ``activations``) for compound
    scaling and each other rule (the paper's Figure 3 and 8); every curve starts at the
    φ = 0 base network. The members are matched in MACs, so only the MACs plot compares at equal
    cost; the other two show what each method spends its MACs on."""
    if cost not in COST_LABELS:
        raise ValueError(f"cost must be one of {', '.join(COST_LABELS)}, got {cost!r}")
    df = _require(family, ["role", "phi", cost, "top1_mean"], "scaling_curves")
    base = df[df["phi"] == 0]
    fig, ax = _figure()
    roles = [r for r in dict.fromkeys(df["role"]) if r != "base"]  # a user's rules too, in table order
    for method in [m for m in METHOD_STYLE if m in roles] + [m for m in roles if m not in METHOD_STYLE]:
        g = pd.concat([base, df[(df["role"] == method) & (df["phi"] != 0)]]).sort_values(cost)
        color, marker = METHOD_STYLE.get(method, (None, "D"))  # None: matplotlib's next colour
        yerr = _ci95(g)
        ax.errorbar(g[cost], g["top1_mean"], yerr=yerr, color=color, marker=marker, capsize=2,
                    label=f"{method} scaling" if method != "compound" else "compound scaling (α, β, γ)")
        for _, r in g[g["phi"] != 0].iterrows():
            ax.annotate(f"φ={r['phi']:g}", (r[cost], r["top1_mean"]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points", color=color)
    ax.set_xscale("log")
    return _labelled(fig, ax, COST_LABELS[cost], "validation top-1",
                     "Compound against other scaling rules at matched MACs" if cost == "macs"
                     else f"The same networks against {cost}")


def macs_growth(table: pd.DataFrame, product: float | None = None) -> Figure:
    """Measured MACs ratio to φ = 0 against φ (log2 scale), beside 2^φ and, when known, the
    formula's (α·β²·γ²)^φ. ``table`` needs ``phi`` and ``macs_ratio`` (compound rows are used
    where a ``role`` column exists)."""
    df = _require(table, ["phi", "macs_ratio"], "macs_growth")
    if "role" in df:
        df = df[df["role"] == "compound"]
    df = df.sort_values("phi")
    phis = np.linspace(min(df["phi"].min(), 0), df["phi"].max(), 100)
    fig, ax = _figure()
    ax.plot(df["phi"], df["macs_ratio"], "o-", color="tab:red", label="measured (rounded networks)")
    ax.plot(phis, 2.0**phis, color="black", linestyle="--", label="2^φ (the target)")
    if product is None and "formula_macs_ratio" in df and len(df) and df["phi"].ne(0).any():
        r = df[df["phi"] != 0].iloc[0]
        product = float(r["formula_macs_ratio"]) ** (1 / r["phi"])
    if product is not None:
        ax.plot(phis, product**phis, color="gray", linestyle=":", label=f"(α·β²·γ²)^φ = {product:.3f}^φ")
    ax.set_yscale("log", base=2)
    return _labelled(fig, ax, "φ", "MACs / MACs at φ = 0 (log2 scale)", "Measured MACs growth against 2^φ")


def training_curves(epochs: pd.DataFrame, metric: str = "val/top1", max_legend: int = 14) -> Figure:
    """Per-epoch ``metric`` of every trial (one line per trial)."""
    df = _require(epochs, ["trial_id", "epoch", metric], "training_curves")
    fig, ax = _figure()
    trials = list(dict.fromkeys(df["trial_id"]))
    cmap = matplotlib.colormaps["viridis"]
    for i, (tid, g) in enumerate(df.groupby("trial_id", sort=False)):
        color = cmap(i / max(1, len(trials) - 1))
        ax.plot(g["epoch"], g[metric], marker=".", linewidth=1, color=color,
                label=tid if len(trials) <= max_legend else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric.replace("/", " "))
    ax.set_title(f"Training curves ({len(trials)} trials)")
    ax.grid(alpha=0.3)
    if len(trials) <= max_legend:
        ax.legend(fontsize=6, ncol=2)
    return fig


def seed_spread(results: pd.DataFrame, by: str = "candidate_id", metric: str = "final_top1",
                top: int = 20) -> Figure:
    """Each trial's ``metric`` per ``by`` (one dot per seed) with the mean and its 95% interval,
    for the ``top`` best by mean."""
    df = _require(results, [by, "seed", metric], "seed_spread")
    df = df[df["status"] == "ok"] if "status" in df else df
    stats = df.groupby(by)[metric].agg(["mean", "std", "count"]).sort_values("mean", ascending=False).head(top)
    fig, ax = _figure(6.4, max(3.0, 0.28 * len(stats) + 1.2))
    ys = np.arange(len(stats))[::-1]
    for y, (name, s) in zip(ys, stats.iterrows()):
        points = df[df[by] == name][metric]
        ax.scatter(points, np.full(len(points), y), s=14, color="tab:blue", alpha=0.6, zorder=2)
        half = np.nan_to_num(ci95(s["std"], int(s["count"])))  # none for a single seed
        ax.errorbar([s["mean"]], [y], xerr=[half], fmt="|", color="black", markersize=12, capsize=3)
    ax.set_yticks(ys, [str(n) for n in stats.index], fontsize=7)
    ax.set_xlabel(f"{metric} (dots: seeds; bar: mean ± 95% interval)")
    seeds = int(df["seed"].nunique()) if len(df) else 0
    ax.set_title(f"Spread over {seeds} seed(s)")
    ax.grid(alpha=0.3, axis="x")
    return fig


FIDELITY_STYLE = {"top_k": ("tab:blue", "o"), "random": ("tab:orange", "s"), "winner": ("tab:red", "o")}


def fidelity(table: pd.DataFrame, agreement: dict | None = None) -> Figure:
    """Proxy fidelity: each retrained candidate's proxy top-1 (the search's) against its top-1 at
    the long budget, by how it was chosen (``top_k``, ``random``); the frozen winner starred,
    Kendall's tau-b and Spearman's rho (``results.rank_agreement``, computed here when not
    given) in the title. Points on a rising line mean the proxy ranks as the long budget does."""
    df = _require(table, ["proxy_top1", "long_top1"], "fidelity")
    df = df.dropna(subset=["proxy_top1", "long_top1"])
    if df.empty:
        raise ValueError("fidelity needs at least one candidate with a proxy and a long top-1")
    if agreement is None:
        agreement = rank_agreement(df["proxy_top1"], df["long_top1"])
    fig, ax = _figure()
    chosen = df["chosen"] if "chosen" in df else pd.Series("top_k", index=df.index)
    for name in [c for c in FIDELITY_STYLE if (chosen == c).any()] + sorted(set(chosen) - set(FIDELITY_STYLE)):
        g = df[chosen == name]
        color, marker = FIDELITY_STYLE.get(name, (None, "D"))
        ax.scatter(g["proxy_top1"], g["long_top1"], color=color, marker=marker, s=40, zorder=2,
                   label=f"{name.replace('_', '-')} ({len(g)})")
    if "candidate_id" in df:
        for _, r in df.iterrows():
            ax.annotate(str(r["candidate_id"]), (r["proxy_top1"], r["long_top1"]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points", color="dimgray")
    if "winner" in df and df["winner"].eq(True).any():
        w = df[df["winner"].eq(True)]
        ax.scatter(w["proxy_top1"], w["long_top1"], marker="*", s=320, facecolors="none", edgecolors="red",
                   linewidths=1.5, zorder=3, label="frozen winner")
    tau, rho = agreement["kendall_tau"], agreement["spearman_rho"]
    words = (f"Kendall τ = {tau:.2f}, Spearman ρ = {rho:.2f}" if tau == tau else "no rank correlation")
    return _labelled(fig, ax, "proxy top-1 (the search's budget)", "top-1 at the long budget",
                     f"Proxy fidelity over {len(df)} candidates: {words}")


def save(fig: Figure, stem: Path, formats: Sequence[str] = FORMATS) -> list[Path]:
    """Writes ``stem.png`` and ``stem.svg`` (each atomically); returns the paths."""
    paths = []
    for fmt in formats:
        path = Path(stem).with_suffix(f".{fmt}")
        with atomic_output(path) as tmp:
            fig.savefig(tmp, format=fmt)
        paths.append(path)
    return paths


def _labelled(fig, ax, xlabel: str, ylabel: str, title: str):
    """The axes' labels, title, grid and legend; returns ``fig``."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return fig
