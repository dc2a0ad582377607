"""Results for people and programs: Markdown, CSV and parquet tables (each written atomically),
and the one wording of a verdict."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from scaling_search.files import atomic_output, atomic_write_text


def markdown(df: pd.DataFrame, formats: Mapping[str, str]) -> str:
    """``df`` as a Markdown table, each column in ``formats`` formatted (NaN and None left blank)."""
    shown = df.copy()
    for col, fmt in formats.items():
        if col in shown:
            shown[col] = [fmt.format(v) if v == v and v is not None else "" for v in shown[col]]
    return shown.to_markdown(index=False) + "\n"


def write_table(df: pd.DataFrame, stem: Path, formats: Mapping[str, str] | None = None,
                parquet: bool = False) -> None:
    """``stem.csv``, plus ``stem.md`` when ``formats`` is given and ``stem.parquet`` when asked."""
    stem = Path(stem)
    if parquet:
        with atomic_output(stem.with_suffix(".parquet")) as tmp:
            df.to_parquet(tmp, index=False)
    with atomic_output(stem.with_suffix(".csv")) as tmp:
        df.to_csv(tmp, index=False)
    if formats is not None:
        atomic_write_text(stem.with_suffix(".md"), markdown(df, formats))


def verdict(margin: float, other: str) -> str:
    """``beats <other> by 0.0123`` or ``does not beat <other> (-0.0040)``: one wording everywhere."""
    return f"beats {other} by {margin:.4f}" if margin > 0 else f"does not beat {other} ({margin:+.4f})"


def paired_verdict(diff: float, tied: bool | None) -> str:
    """``beats``, ``ties`` or ``loses``: a paired 95% comparison's word for ``diff`` = this minus
    the other; ``unpaired`` where there was nothing to pair (no common seed, no per-image record)."""
    if tied is None:
        return "unpaired"
    return "ties" if tied else "beats" if diff > 0 else "loses"


def verdict_line(v: dict, phi: str = "phi") -> str:
    """``phi=1: compound (top-1 0.9870) beats depth (0.9759) by +0.0111, 95% interval +0.0031 to
    +0.0191 over 3 seeds, at matched MACs (+1.1%)``: a row of Step 2's ``verdicts.csv`` in words,
    for the console and the report."""
    words = {"beats": f"beats {v['rule']} ({v['rule_top1']:.4f}) by {v['diff']:+.4f}",
             "loses": f"loses to {v['rule']} ({v['rule_top1']:.4f}) by {v['diff']:+.4f}",
             "ties": f"ties with {v['rule']} ({v['rule_top1']:.4f}): {v['diff']:+.4f}",
             "unpaired": f"against {v['rule']} ({v['rule_top1']:.4f}): {v['diff']:+.4f}, not paired"}[v["verdict"]]
    interval = (f", 95% interval {v['diff_lo']:+.4f} to {v['diff_hi']:+.4f} over {v['paired_by']}"
                if isinstance(v["paired_by"], str) and v["paired_by"] else "")  # NaN when read from CSV
    macs = (f"at MACs {v['macs_mismatch']:+.1%} apart, beyond the {v['macs_tolerance']:.0%} tolerance: "
            f"not a matched comparison" if v["macs_flag"] else f"at matched MACs ({v['macs_mismatch']:+.1%})")
    return f"{phi}={v['phi']:g}: compound (top-1 {v['compound_top1']:.4f}) {words}{interval}, {macs}"
