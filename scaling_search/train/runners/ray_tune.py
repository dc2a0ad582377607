"""The Ray Tune runner: one Tune trial per (candidate, seed), on a local Ray or a cluster.

The candidate list is finished before Tune starts and goes in as
``param_space={"trial": tune.grid_search(specs)}`` (the pattern ECOSYSTEM.md measured). The
decoded dataset goes once into Ray's object store (``tune.with_parameters``). Actors are reused
(per-trial overhead ~0.05 s instead of ~1.5 s), so every trial seeds itself. Each epoch is
reported (ASHA can stop a trial) with a checkpoint, so a restored experiment continues a trial
from its last epoch. The experiment lives under an absolute, stable ``storage_path`` that a
re-run restores with ``Tuner.restore``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch

from scaling_search.settings import AUTO_GPUS_PER_TRIAL, RaySettings
from scaling_search.train.data import ImageData
from scaling_search.train.progress import Progress
from scaling_search.train.runners.local import OnResult
from scaling_search.train.trainer import TrainSettings
from scaling_search.train.trial import FAILED, OK, STOPPED, TrialSpec, run_trial

EXPERIMENT = "tune"
log = logging.getLogger(__name__)


def check_local_gpus(settings: RaySettings) -> None:
    """Fails fast, before Ray starts, when GPUs are asked of a local machine that has none."""
    if (settings.gpus_per_trial or 0) > 0 and settings.address is None and not torch.cuda.is_available():
        raise ValueError(f"runner.gpus_per_trial={settings.gpus_per_trial:g} but this machine has "
                         "no CUDA GPU (the trials would wait forever); set runner.gpus_per_trial=0")


def start_ray(settings: RaySettings) -> bool:
    """Starts (or joins) Ray quietly; True when this call started it (and should shut it down)."""
    import ray

    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # trials keep the driver's folder
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no status tables
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # our own tables instead
    if ray.is_initialized():
        return False
    ray.init(address=settings.address, num_cpus=settings.num_cpus if settings.address is None else None,
             include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
             configure_logging=True)
    return True


def check_cluster(settings: RaySettings) -> None:
    """The cluster must hold one trial's resources, or Tune would leave trials pending."""
    import ray

    res = ray.cluster_resources()
    if (settings.gpus_per_trial or 0) > 0 and res.get("GPU", 0) < min(settings.gpus_per_trial, 1):
        raise ValueError(f"runner.gpus_per_trial={settings.gpus_per_trial:g} but the Ray cluster "
                         f"has {res.get('GPU', 0):g} GPUs; set runner.gpus_per_trial=0")
    if res.get("CPU", 0) < settings.cpus_per_trial:
        raise ValueError(f"runner.cpus_per_trial={settings.cpus_per_trial:g} but the Ray cluster "
                         f"has {res.get('CPU', 0):g} CPUs")


def _trainable(config: dict, data: ImageData, settings: TrainSettings, checkpoint: bool) -> None:
    from ray import tune

    spec = TrialSpec.from_dict(config["trial"])
    state = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = torch.load(Path(d) / "state.pt", weights_only=False)
    last: dict = {}
    history: list[dict] = []

    def on_epoch(metrics: dict, state_fn) -> None:
        last.update(metrics)
        state = state_fn()
        history[:] = state["history"]  # all epochs, those before a restore included
        if not checkpoint:
            tune.report(metrics)
            return
        with tempfile.TemporaryDirectory() as d:
            torch.save(state, Path(d) / "state.pt")
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))

    row = run_trial(spec, data, settings, on_epoch, state)
    # Schedulers expect their metric in every report; the row says whether the trial failed.
    tune.report({**last, "epoch": last.get("epoch", 0), "val/top1": last.get("val/top1", 0.0),
                 "row": json.dumps({**row, "history": history})})


def _row_of(trial_id: str, result: dict | None, error: object = None,
            stopped_early: bool = False) -> tuple[dict | None, list[dict] | None]:
    """The row and history a trial's last report carries; a failed or stopped row; or None.

    None means the trial ended without its final report for no reason of its own (the search
    was interrupted): it is not recorded, so a re-run trains or resumes it.
    """
    result = result or {}
    if "row" in result:
        row = json.loads(result["row"])
        return row, row.pop("history", None)
    if error is not None:
        return {"trial_id": trial_id, "status": FAILED, "error": str(error)[-500:]}, None
    if stopped_early:
        return {"trial_id": trial_id, "status": STOPPED, "error": "", "final_top1": None}, None
    return None, None


def _recorder(specs: dict[str, TrialSpec], on_result: OnResult, progress: Progress | None, epochs: int):
    """A Tune callback, in the driver: hands every ended trial to ``on_result`` and ``progress``.

    Defined on first use, so that importing this module does not import Ray.
    """
    from ray.tune import Callback

    class Recorder(Callback):
        def __init__(self, specs: dict[str, TrialSpec], on_result: OnResult,
                     progress: Progress | None, epochs: int):
            self.specs, self.on_result, self.progress = specs, on_result, progress
            self.epochs = epochs
            self.histories: dict[str, list[dict]] = {}
            self.recorded: set[str] = set()
            self.stopped_early: set[str] = set()  # filled by the scheduler (_ASHA)

        def _id(self, trial) -> str:
            return trial.config["trial"]["trial_id"]

        def on_trial_start(self, iteration, trials, trial, **info):
            if self.progress is not None:
                self.progress.started(self._id(trial))

        def on_trial_result(self, iteration, trials, trial, result, **info):
            if "row" not in result and "val/top1" in result:
                epochs = self.histories.setdefault(self._id(trial), [])
                epochs[:] = [h for h in epochs if h["epoch"] < result["epoch"]]
                epochs.append({k: result[k] for k in _EPOCH_KEYS if k in result})

        def on_trial_complete(self, iteration, trials, trial, **info):
            tid = self._id(trial)
            self._record(tid, *_row_of(tid, trial.last_result, stopped_early=tid in self.stopped_early))

        def on_trial_error(self, iteration, trials, trial, **info):
            error = "the Ray trial crashed"
            if trial.error_file and os.path.exists(trial.error_file):
                lines = Path(trial.error_file).read_text().strip().splitlines()
                error = lines[-1] if lines else error
            self._record(self._id(trial), *_row_of(self._id(trial), None, error))

        def _record(self, tid: str, row: dict | None, history: list[dict] | None) -> None:
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

    return Recorder(specs, on_result, progress, epochs)


def _asha(stopped_early: set[str], epochs: int, grace_period: int, reduction_factor: int):
    """ASHA on ``val/top1`` by epoch, noting each trial it stops in ``stopped_early``.

    A trial that ends without its final report was either stopped by ASHA (a result: recorded
    as ``stopped``) or cut off by an interruption (not a result: trained again on a re-run);
    only the scheduler knows which.
    """
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    class NotingASHA(ASHAScheduler):
        def on_trial_result(self, tune_controller, trial, result):
            decision = super().on_trial_result(tune_controller, trial, result)
            if decision == TrialScheduler.STOP and "row" not in result:
                stopped_early.add(trial.config["trial"]["trial_id"])
            return decision

    # max_t is past the last epoch: the final report (the trial's row) must not be cut off.
    return NotingASHA(time_attr="epoch", metric="val/top1", mode="max", max_t=epochs + 1,
                      grace_period=grace_period, reduction_factor=reduction_factor)


_EPOCH_KEYS = ("epoch", "train/loss", "val/loss", "val/top1", "lr", "time_s", "images_per_s")


class RayTuneRunner:
    """Runs trials as Ray Tune trials (``runner=ray``) under ``storage_path/tune``."""

    def __init__(self, settings: RaySettings, storage_path: Path):
        if not Path(storage_path).is_absolute():
            raise ValueError(f"Ray's storage_path must be absolute, got {storage_path}")
        self.settings, self.storage_path = settings, Path(storage_path)
        self.resume = True  # restore an interrupted experiment found at storage_path

    @property
    def concurrency(self) -> int:
        import ray

        cpus = ray.cluster_resources().get("CPU", 1) if ray.is_initialized() else (os.cpu_count() or 1)
        n = max(1, int(cpus // self.settings.cpus_per_trial))
        gpus_per_trial = self.gpus_per_trial()
        if gpus_per_trial > 0:
            gpus = ray.cluster_resources().get("GPU", 0)
            n = min(n, max(1, int(gpus // gpus_per_trial)))
        return min(n, self.settings.max_concurrent or n)

    def gpus_per_trial(self) -> float:
        """The configured GPUs per trial; for ``None``, a share of a GPU if the cluster has any."""
        import ray

        if self.settings.gpus_per_trial is not None:
            return self.settings.gpus_per_trial
        has_gpus = ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0
        return AUTO_GPUS_PER_TRIAL if has_gpus else 0.0

    def run(self, specs: list[TrialSpec], data: ImageData, settings: TrainSettings,
            on_result: OnResult, progress: Progress | None = None) -> None:
        from ray import tune

        s = self.settings
        threads = max(1, int(s.cpus_per_trial))
        gpus = self.gpus_per_trial()
        # A trial given no GPU by Ray trains on CPU even if the machine has one (Ray does not
        # hide GPUs from a trial that asked for none).
        device = "cpu" if gpus == 0 and settings.device == "auto" else settings.device
        train_settings = TrainSettings(**{**settings.__dict__, "num_threads": threads, "device": device})
        trainable = tune.with_resources(
            tune.with_parameters(_trainable, data=data, settings=train_settings, checkpoint=s.checkpoint),
            {"cpu": s.cpus_per_trial, "gpu": gpus})
        by_id = {spec.trial_id: spec for spec in specs}
        recorder = _recorder(by_id, on_result, progress, settings.epochs)
        exp_path = self.storage_path / EXPERIMENT
        if not self.resume and exp_path.exists():
            shutil.rmtree(exp_path)
        if self.resume and tune.Tuner.can_restore(str(exp_path)):
            tuner = tune.Tuner.restore(str(exp_path), trainable=trainable, resume_unfinished=True,
                                       resume_errored=True)
            tuner._local_tuner._run_config.callbacks = [recorder]  # noqa: SLF001 (restore takes none)
            self._reconcile(tuner.fit(), recorder)
            specs = [sp for sp in specs if sp.trial_id not in recorder.recorded]
            if not specs:
                return
            shutil.rmtree(exp_path)  # every trial it held is recorded; start one for the rest
        scheduler = None
        if s.asha:
            scheduler = _asha(recorder.stopped_early, settings.epochs, s.grace_period, s.reduction_factor)
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([sp.to_dict() for sp in specs])},
            tune_config=tune.TuneConfig(scheduler=scheduler, reuse_actors=True,
                                        max_concurrent_trials=s.max_concurrent,
                                        trial_dirname_creator=lambda t: t.config["trial"]["trial_id"],
                                        trial_name_creator=lambda t: t.config["trial"]["trial_id"]),
            run_config=tune.RunConfig(
                name=EXPERIMENT, storage_path=str(self.storage_path), callbacks=[recorder],
                verbose=0, failure_config=tune.FailureConfig(max_failures=0),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
        )
        self._reconcile(tuner.fit(), recorder)

    @staticmethod
    def _reconcile(grid, recorder) -> None:
        """Records any trial the callback did not see end (e.g. finished before a restore)."""
        for result in grid:
            if not result.config:  # never started (the search was interrupted first)
                continue
            tid = result.config["trial"]["trial_id"]
            recorder._record(tid, *_row_of(tid, result.metrics, result.error,
                                           stopped_early=tid in recorder.stopped_early))
