"""The in-process runner: one trial after another, for debugging and tests."""

from __future__ import annotations

from collections.abc import Callable

from scaling_search.train.data import FolderData, ImageData
from scaling_search.train.progress import Progress
from scaling_search.train.trainer import TrainSettings
from scaling_search.train.trial import TrialSpec, run_trial

OnResult = Callable[[TrialSpec, dict, list[dict]], None]


class LocalRunner:
    """Runs trials sequentially in this process (``runner=local``).

    Args:
        num_threads: torch CPU threads per trial; set it as Ray's ``cpus_per_trial`` is, so
            the two runners compute the same numbers for the same seed.
    """

    concurrency = 1

    def __init__(self, num_threads: int | None = 1):
        self.num_threads = num_threads

    def run(self, specs: list[TrialSpec], data: ImageData | FolderData, settings: TrainSettings,
            on_result: OnResult, progress: Progress | None = None) -> None:
        if self.num_threads:
            settings = TrainSettings(**{**settings.__dict__, "num_threads": self.num_threads})
        for spec in specs:
            if progress is not None:
                progress.started(spec.trial_id)
            history: list[dict] = []
            row = run_trial(spec, data, settings, on_epoch=lambda m, _state: history.append(m))
            on_result(spec, row, history)
            if progress is not None:
                progress.finished(spec.trial_id, row)
