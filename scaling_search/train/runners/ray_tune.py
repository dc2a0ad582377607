"""The Ray Tune runner: one Tune trial per (candidate, seed), on a local Ray or a cluster.

The candidate list is finished before Tune starts and goes in as
``param_space={"trial": tune.grid_search(specs)}`` (the pattern measured on Ray 2.60: a
finished list, not a search algorithm). The decoded dataset goes once into Ray's object store
(``tune.with_parameters``). Actors are reused
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
import socket
import sys
import tempfile
from pathlib import Path

import torch

from scaling_search.settings import AUTO_GPUS_PER_TRIAL, RaySettings
from scaling_search.train.data import FolderData, ImageData
from scaling_search.train.progress import Progress
from scaling_search.train.runners.local import OnResult
from scaling_search.train.trainer import TrainSettings
from scaling_search.train.trial import TrialSpec, run_trial

EXPERIMENT = "tune"
log = logging.getLogger(__name__)


def check_local_resources(settings: RaySettings) -> None:
    """Fails fast, before a local Ray starts, when a trial asks for more than it will have: GPUs
    of a machine that has none, or more CPUs than the local Ray (``check_cluster`` checks a cluster's)."""
    if settings.address is not None:
        return
    if (settings.gpus_per_trial or 0) > 0 and not torch.cuda.is_available():
        raise ValueError(f"runner.gpus_per_trial={settings.gpus_per_trial:g} but this machine has "
                         "no CUDA GPU (the trials would wait forever); set runner.gpus_per_trial=0")
    # A Ray this process already runs (ray.init from Python) is joined as it is: check_cluster
    # checks it once joined. Checked without importing Ray, which would cost the preflight ~1 s.
    joined = "ray" in sys.modules and sys.modules["ray"].is_initialized()
    cpus = settings.num_cpus or os.cpu_count() or 1
    if not joined and settings.cpus_per_trial > cpus:
        raise ValueError(f"runner.cpus_per_trial={settings.cpus_per_trial:g} but the local Ray has "
                         f"{cpus} CPUs; set runner.cpus_per_trial to at most {cpus}")


def start_ray(settings: RaySettings) -> bool:
    """Starts (or joins) Ray quietly; True when this call started it (and should shut it down)."""
    import ray  # lazy: importing Ray costs ~1 s, which runner=local never pays

    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")  # trials keep the driver's folder
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no status tables
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # our own tables instead
    if ray.is_initialized():
        return False
    # No address: a new local Ray ("local"), never the cluster that a `ray start` on this machine
    # recorded in /tmp/ray (which ray.init(address=None) would join, and refuse num_cpus for).
    try:
        ray.init(address=settings.address or "local",
                 num_cpus=settings.num_cpus if settings.address is None else None,
                 include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR,
                 configure_logging=True)
    except ConnectionError as e:
        # Ray says only "Failed to connect"; a token-protected cluster is the usual reason
        # (Ray turns token auth on by itself only for address=auto).
        raise ConnectionError(f"{e} (runner.address={settings.address}); if the cluster uses token "
                              "authentication, set RAY_AUTH_MODE=token and give this machine its token "
                              "(~/.ray/auth_token or RAY_AUTH_TOKEN), or use runner.address=auto on a "
                              "node of the cluster") from None
    return True


def check_cluster(settings: RaySettings) -> None:
    """The cluster must hold one trial's resources, or Tune would leave trials pending."""
    import ray  # lazy: importing Ray costs ~1 s, which runner=local never pays

    res = ray.cluster_resources()
    if (settings.gpus_per_trial or 0) > 0 and res.get("GPU", 0) < min(settings.gpus_per_trial, 1):
        raise ValueError(f"runner.gpus_per_trial={settings.gpus_per_trial:g} but the Ray cluster "
                         f"has {res.get('GPU', 0):g} GPUs; set runner.gpus_per_trial=0")
    if res.get("CPU", 0) < settings.cpus_per_trial:
        raise ValueError(f"runner.cpus_per_trial={settings.cpus_per_trial:g} but the Ray cluster "
                         f"has {res.get('CPU', 0):g} CPUs")


def load_state(path: Path) -> dict:
    """A trial's checkpoint: tensors, numbers and containers only (``weights_only=True``), so a
    file planted in a run folder cannot run code on the next resume."""
    return torch.load(path, weights_only=True)


def _trainable(config: dict, data: ImageData | FolderData, settings: TrainSettings, checkpoint: bool) -> None:
    import ray  # lazy: importing Ray costs ~1 s, which runner=local never pays
    from ray import tune

    spec = TrialSpec.from_dict(config["trial"])
    node_id = ray.get_runtime_context().get_node_id()
    # In every report, so that a trial ASHA stops (whose row the driver makes) names its node too.
    where = {"node": socket.gethostname(), "node_id": node_id}
    state = None
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as d:
            state = load_state(Path(d) / "state.pt")
    last: dict = {}
    history: list[dict] = []

    def on_epoch(metrics: dict, state_fn) -> None:
        last.update(metrics)
        state = state_fn()
        history[:] = state["history"]  # all epochs, those before a restore included
        if not checkpoint:
            tune.report({**metrics, **where})
            return
        with tempfile.TemporaryDirectory() as d:
            torch.save(state, Path(d) / "state.pt")
            tune.report({**metrics, **where}, checkpoint=tune.Checkpoint.from_directory(d))

    row = run_trial(spec, data, settings, on_epoch, state, node_id)
    # Schedulers expect their metric in every report; the row says whether the trial failed.
    tune.report({**last, "epoch": last.get("epoch", 0), "val/top1": last.get("val/top1", 0.0),
                 "row": json.dumps({**row, "history": history})})


class RayTuneRunner:
    """Runs trials as Ray Tune trials (``runner=ray``) under ``storage_path/tune``."""

    def __init__(self, settings: RaySettings, storage_path: Path):
        if not Path(storage_path).is_absolute():
            raise ValueError(f"Ray's storage_path must be absolute, got {storage_path}")
        self.settings, self.storage_path = settings, Path(storage_path)
        self.resume = True  # restore an interrupted experiment found at storage_path

    @property
    def concurrency(self) -> int:
        import ray  # lazy: importing Ray costs ~1 s, which runner=local never pays

        cpus = ray.cluster_resources().get("CPU", 1) if ray.is_initialized() else (os.cpu_count() or 1)
        n = max(1, int(cpus // self.settings.cpus_per_trial))
        gpus_per_trial = self.gpus_per_trial()
        if gpus_per_trial > 0:
            gpus = ray.cluster_resources().get("GPU", 0)
            n = min(n, max(1, int(gpus // gpus_per_trial)))
        return min(n, self.settings.max_concurrent or n)

    def gpus_per_trial(self) -> float:
        """The configured GPUs per trial; for ``None``, a share of a GPU if the cluster has any."""
        import ray  # lazy: importing Ray costs ~1 s, which runner=local never pays

        if self.settings.gpus_per_trial is not None:
            return self.settings.gpus_per_trial
        has_gpus = ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0
        return AUTO_GPUS_PER_TRIAL if has_gpus else 0.0

    def run(self, specs: list[TrialSpec], data: ImageData | FolderData, settings: TrainSettings,
            on_result: OnResult, progress: Progress | None = None) -> None:
        from ray import tune  # lazy: importing Ray costs ~1 s, which runner=local never pays

        from scaling_search.train.runners.tune_callback import Recording, live  # lazy: imports Ray

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
        exp_path = self.storage_path / EXPERIMENT
        key = str(exp_path)  # what Tune's (pickled, restorable) callback and scheduler report under
        recording = Recording({spec.trial_id: spec for spec in specs}, on_result, progress, settings.epochs)
        with live(key, recording):
            if not self.resume and exp_path.exists():
                shutil.rmtree(exp_path)
            if self.resume and tune.Tuner.can_restore(key):
                # The restored experiment brings back its own Forwarder and scheduler: both
                # report to ``recording`` through ``key``.
                tuner = tune.Tuner.restore(key, trainable=trainable, resume_unfinished=True,
                                           resume_errored=True)
                self._reconcile(tuner.fit(), recording)
                specs = [sp for sp in specs if sp.trial_id not in recording.recorded]
                if not specs:
                    return
                shutil.rmtree(exp_path)  # every trial it held is recorded; start one for the rest
            self._reconcile(self._tuner(trainable, specs, key, settings.epochs).fit(), recording)

    def _tuner(self, trainable, specs: list[TrialSpec], key: str, epochs: int):
        from ray import tune  # lazy: importing Ray costs ~1 s, which runner=local never pays

        from scaling_search.train.runners.tune_callback import Forwarder, NotingASHA  # lazy: imports Ray

        s = self.settings
        scheduler = NotingASHA(key, epochs, s.grace_period, s.reduction_factor) if s.asha else None
        return tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([sp.to_dict() for sp in specs])},
            tune_config=tune.TuneConfig(scheduler=scheduler, reuse_actors=True,
                                        max_concurrent_trials=s.max_concurrent,
                                        trial_dirname_creator=lambda t: t.config["trial"]["trial_id"],
                                        trial_name_creator=lambda t: t.config["trial"]["trial_id"]),
            run_config=tune.RunConfig(
                name=EXPERIMENT, storage_path=str(self.storage_path), callbacks=[Forwarder(key)],
                verbose=0, failure_config=tune.FailureConfig(max_failures=0),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
        )

    @staticmethod
    def _reconcile(grid, recording) -> None:
        """Records any trial the callback did not see end (e.g. finished before a restore)."""
        for result in grid:
            if result.config:  # else it never started (the search was interrupted first)
                recording.ended(result.config["trial"]["trial_id"], result.metrics, result.error)
