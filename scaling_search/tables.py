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
