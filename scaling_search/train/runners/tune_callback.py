"""What the driver hears from Ray Tune: every ended trial, recorded as it ends.

Ray Tune pickles an experiment's callbacks and scheduler into the experiment folder and revives
those copies when ``Tuner.restore`` resumes it. So the objects handed to Tune here hold only a
key (the experiment's path); what they report goes to the ``Recording`` registered under that
key in this process (``live``), which a restored experiment finds just as a new one does. Ray is
imported at the top: this module is imported only when Ray Tune runs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ray.tune import Callback
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from scaling_search.train.progress import Progress
from scaling_search.train.runners.local import OnResult
from scaling_search.train.status import FAILED, OK, STOPPED
from scaling_search.train.trial import TrialSpec

EPOCH_KEYS = ("epoch", "train/loss", "val/loss", "val/top1", "lr", "time_s", "images_per_s")
_LIVE: dict[str, Recording] = {}


def row_of(trial_id: str, result: dict | None, error: object = None,
           stopped_early: bool = False) -> tuple[dict | None, list[dict] | None]:
    """The row and history a trial's last report carries; a failed or stopped row; or None.

    None means the trial ended without its final report for no reason of its own (the search
    was interrupted): it is not recorded, so a re-run trains or resumes it.
    """
    result = result or {}
    if "row" in result:
        row = json.loads(result["row"])
        return row, row.pop("history", None)
    where = {"node": result.get("node", ""), "node_id": result.get("node_id", "")}  # of its last report
    if error is not None:
        return {"trial_id": trial_id, "status": FAILED, "error": str(error)[-500:], **where}, None
    if stopped_early:
        return {"trial_id": trial_id, "status": STOPPED, "error": "", "final_top1": None, **where}, None
    return None, None


class Recording:
    """The driver's record of one Tune run: hands every ended trial to ``on_result`` and ``progress``."""

    def __init__(self, specs: dict[str, TrialSpec], on_result: OnResult, progress: Progress | None,
                 epochs: int):
        self.specs, self.on_result, self.progress, self.epochs = specs, on_result, progress, epochs
        self.histories: dict[str, list[dict]] = {}
        self.recorded: set[str] = set()
        self.stopped_early: set[str] = set()  # filled by the scheduler (NotingASHA)

    def started(self, tid: str) -> None:
        if self.progress is not None:
            self.progress.started(tid)

    def epoch(self, tid: str, result: dict) -> None:
        if "row" not in result and "val/top1" in result:
            epochs = self.histories.setdefault(tid, [])
            epochs[:] = [h for h in epochs if h["epoch"] < result["epoch"]]
            epochs.append({k: result[k] for k in EPOCH_KEYS if k in result})

    def ended(self, tid: str, result: dict | None, error: object = None) -> None:
        self.record(tid, *row_of(tid, result, error, stopped_early=tid in self.stopped_early))

    def record(self, tid: str, row: dict | None, history: list[dict] | None) -> None:
        if row is None or tid in self.recorded or tid not in self.specs:
            return
        self.recorded.add(tid)
        history = history or self.histories.get(tid, [])
        if row["status"] == STOPPED and len(history) >= self.epochs:
            # ASHA stopped it at its last epoch's report: it trained in full.
            row = {**row, "status": OK, "final_top1": history[-1]["val/top1"],
                   "best_top1": max(h["val/top1"] for h in history),
                   "final_val_loss": history[-1]["val/loss"], "epochs": len(history)}
        elif row["status"] == STOPPED:
            seconds = sum(h.get("time_s", 0.0) for h in history)
            row = {**row, "epochs": len(history), "train_time_s": seconds, "wall_time_s": seconds,
                   "best_top1": max((h["val/top1"] for h in history), default=None)}
        self.on_result(self.specs[tid], row, history)
        if self.progress is not None:
            self.progress.finished(tid, row)


@contextmanager
def live(key: str, recording: Recording) -> Iterator[Recording]:
    """Makes ``recording`` the one that Tune's callback and scheduler under ``key`` report to."""
    _LIVE[key] = recording
    try:
        yield recording
    finally:
        _LIVE.pop(key, None)


def _id(trial) -> str:
    return trial.config["trial"]["trial_id"]


class Forwarder(Callback):
    """Tune's callback: forwards each trial's start, epochs and end to the live ``Recording``."""

    def __init__(self, key: str):
        self.key = key

    def _recording(self) -> Recording | None:
        return _LIVE.get(self.key)

    def on_trial_start(self, iteration, trials, trial, **info):
        if (r := self._recording()) is not None:
            r.started(_id(trial))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if (r := self._recording()) is not None:
            r.epoch(_id(trial), result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if (r := self._recording()) is not None:
            r.ended(_id(trial), trial.last_result)

    def on_trial_error(self, iteration, trials, trial, **info):
        if (r := self._recording()) is None:
            return
        error = "the Ray trial crashed"
        if trial.error_file and os.path.exists(trial.error_file):
            lines = Path(trial.error_file).read_text().strip().splitlines()
            error = lines[-1] if lines else error
        r.ended(_id(trial), trial.last_result, error)


class NotingASHA(ASHAScheduler):
    """ASHA on ``val/top1`` by epoch, noting each trial it stops in the live ``Recording``.

    A trial that ends without its final report was either stopped by ASHA (a result: recorded
    as ``stopped``) or cut off by an interruption (not a result: trained again on a re-run);
    only the scheduler knows which. ``max_t`` is past the last epoch: the final report (the
    trial's row) must not be cut off.
    """

    def __init__(self, key: str, epochs: int, grace_period: int, reduction_factor: int):
        super().__init__(time_attr="epoch", metric="val/top1", mode="max", max_t=epochs + 1,
                         grace_period=grace_period, reduction_factor=reduction_factor)
        self.key = key

    def on_trial_result(self, tune_controller, trial, result):
        decision = super().on_trial_result(tune_controller, trial, result)
        if decision == TrialScheduler.STOP and "row" not in result and (r := _LIVE.get(self.key)) is not None:
            r.stopped_early.add(_id(trial))
        return decision
