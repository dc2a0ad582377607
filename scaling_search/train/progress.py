"""Console progress of a search: trials done / total, running, best so far, ETA."""

from __future__ import annotations

import sys
import time


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Progress:
    """Counts trials as a runner starts and finishes them and prints one line per event.

    Args:
        total: trials this run will execute (already-finished ones excluded).
        concurrency: trials that run at once (for the ETA).
        already_done: trials finished by an earlier, interrupted run.
    """

    def __init__(self, total: int, concurrency: int = 1, already_done: int = 0, stream=None):
        self.total, self.concurrency, self.already_done = total, max(1, concurrency), already_done
        self.done, self.running, self.best = 0, set(), None
        self.trial_times: list[float] = []
        self.setup_s, self.train_s = 0.0, 0.0  # summed over the trials that say
        self.start = time.perf_counter()
        self.stream = stream or sys.stdout

    def started(self, trial_id: str) -> None:
        self.running.add(trial_id)

    def finished(self, trial_id: str, row: dict) -> None:
        self.running.discard(trial_id)
        self.done += 1
        if row.get("wall_time_s"):
            self.trial_times.append(row["wall_time_s"])
        self.setup_s += row.get("setup_time_s") or 0.0
        self.train_s += row.get("train_time_s") or 0.0
        top1 = row.get("final_top1")
        if row.get("status") == "ok" and top1 is not None and (self.best is None or top1 > self.best[0]):
            self.best = (top1, trial_id)
        outcome = f"top1 {top1:.4f}" if top1 is not None and row.get("status") == "ok" else row.get("status")
        if row.get("status") == "failed":
            outcome += f" ({row.get('error', '')[:80]})"
        best = f"best {self.best[0]:.4f} {self.best[1]}" if self.best else "best -"
        print(f"[{self.done + self.already_done:>3}/{self.total + self.already_done}] {trial_id}: "
              f"{outcome} | running {len(self.running)} | {best} | ETA {self.eta()}",
              file=self.stream, flush=True)

    def eta(self) -> str:
        remaining = self.total - self.done
        if remaining <= 0:
            return "0s"
        if not self.trial_times:
            return "?"
        mean = sum(self.trial_times) / len(self.trial_times)
        return _duration(mean * remaining / self.concurrency)

    def elapsed_s(self) -> float:
        return time.perf_counter() - self.start

    def overhead(self) -> str:
        """Where this run's time went: the trials' set-up (before their first step), their
        training steps, and the rest of what ``concurrency`` slots held over the wall time
        (evaluation, checkpoints, starting workers, waiting for the last trial)."""
        wall = self.elapsed_s()
        slots = wall * self.concurrency
        rest = max(0.0, slots - self.setup_s - self.train_s)
        share = lambda x: f"{x / slots:.0%}" if slots > 0 else "-"  # noqa: E731
        return (f"{self.done} trials in {_duration(wall)} on {self.concurrency} slot(s): training steps "
                f"{self.train_s:.0f} s ({share(self.train_s)}), trial set-up {self.setup_s:.0f} s "
                f"({share(self.setup_s)}), the rest {rest:.0f} s ({share(rest)}: evaluation, checkpoints, "
                "starting workers, idle slots)")
