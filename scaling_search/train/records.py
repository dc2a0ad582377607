"""A run's trial records: one JSON file per ended trial, written the moment it ends.

Each ended trial is written at once, atomically, to ``<run>/trials/<trial_id>.json`` (its spec,
final row and per-epoch history, and the columns of the candidate it trained), so an
interrupted run loses at most the trials that were running, and a re-run skips every trial
already recorded as ``ok`` or ``stopped`` (failed ones run again). Every table of a run is
built from these records alone, as pycls's sweep analysis builds its from the logs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from scaling_search.files import atomic_write_text
from scaling_search.train.status import OK, STOPPED


class TrialStore:
    """The ``trials/`` folder of one run."""

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir) / "trials"

    def save(self, spec: dict, row: dict, history: list[dict], candidate: dict) -> None:
        """Writes one ended trial; ``candidate`` holds its coefficients and cost columns."""
        record = {"spec": spec, "candidate": candidate, "row": row, "history": history}
        atomic_write_text(self.dir / f"{spec['trial_id']}.json", json.dumps(record, indent=1))

    def load(self) -> list[dict]:
        if not self.dir.is_dir():
            return []
        return [_read(p) for p in sorted(self.dir.glob("*.json"))]

    def finished_ids(self) -> set[str]:
        """Trials that need no re-run: finished or stopped early by the scheduler."""
        return {r["row"]["trial_id"] for r in self.load() if r["row"]["status"] in (OK, STOPPED)}


def _read(path: Path) -> dict:
    """One record; a damaged one is named, with what to do about it."""
    try:
        record = json.loads(path.read_text())
        record["spec"]["trial_id"], record["row"]["status"]  # noqa: B018 - the keys every reader needs
        return record
    except (ValueError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"the trial record {path} is damaged ({type(e).__name__}: {e}); delete it "
                         "and run the same command again: that trial trains again") from None


def pack_correct(correct: np.ndarray | None) -> str:
    """Per-image correctness as ``<count>:<hex of the packed bits>`` (45 characters for 359
    images): small enough for every trial record, exact for paired statistics."""
    if correct is None:
        return ""
    bits = np.packbits(np.asarray(correct, dtype=bool))
    return f"{len(correct)}:{bits.tobytes().hex()}"


def unpack_correct(text: str) -> np.ndarray | None:
    """The inverse of ``pack_correct``: a bool array, or None for a trial that has none."""
    if not text or not isinstance(text, str) or ":" not in text:
        return None
    count, hexed = text.split(":", 1)
    return np.unpackbits(np.frombuffer(bytes.fromhex(hexed), dtype=np.uint8))[:int(count)].astype(bool)
