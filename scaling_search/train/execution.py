"""Running a fixed list of trials into a run folder: what Step 1 and Step 2 share.

A run folder holds an identity file (the settings that decide what its trials compute; a
re-run with other settings is refused), one record per ended trial (``records.TrialStore``),
the Optuna study those trials are mirrored into, and Ray Tune's experiment. ``run_specs``
trains the trials not yet recorded, so a re-run after an interruption resumes where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from scaling_search.files import atomic_write_text
from scaling_search.settings import RaySettings
from scaling_search.train.data import FolderData, ImageData
from scaling_search.train.progress import Progress
from scaling_search.train.records import TrialStore
from scaling_search.train.runners import LocalRunner
from scaling_search.train.runners.ray_tune import RayTuneRunner, check_cluster, check_local_resources, start_ray
from scaling_search.train.study import record_trial, recorded_ids
from scaling_search.train.trainer import TrainSettings
from scaling_search.train.trial import TrialSpec, scaled_model


class RunInterrupted(Exception):
    """The runner returned before every trial ended (Ctrl-C in Ray Tune); nothing is ranked."""


class RunFailed(Exception):
    """A run ended with no usable result (every trial, or every candidate, failed or diverged):
    nothing is frozen, and the command exits non-zero with one line saying so."""


# Trainer settings that change how fast a trial runs, not what it computes: a run made before one
# of them existed, or with another value, resumes (in the identity of none of the steps).
SPEED_SWITCHES = frozenset({"num_threads", "compile", "cuda_graphs", "cudnn_benchmark", "cuda_channels_last"})


def trainer_identity(trainer: object) -> dict:
    """The trainer settings of a run's identity: all but the ``SPEED_SWITCHES``."""
    return {k: v for k, v in asdict(trainer).items() if k not in SPEED_SWITCHES}


def _without_speed_switches(node: object, key: str = "") -> object:
    """An identity read back with the speed switches of every ``trainer`` in it left out (a run
    folder written before they were left out holds some)."""
    if isinstance(node, dict):
        return {k: _without_speed_switches(v, k) for k, v in node.items()
                if not (key == "trainer" and k in SPEED_SWITCHES)}
    return node


def check_identity(out_dir: Path, file_name: str, identity: dict, what: str = "search") -> None:
    """A re-run resumes only the same run; anything else would mix incomparable trials."""
    path = Path(out_dir) / file_name
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is damaged ({e}); restore it, or delete that folder "
                         "to start the run anew") from None
    old, identity = _without_speed_switches(old), _without_speed_switches(identity)
    if old != identity:
        diff = [k for k in identity if old.get(k) != identity[k]] or sorted(set(old) - set(identity))
        raise ValueError(f"out_dir {str(out_dir)!r} holds a {what} with different {', '.join(diff)}; "
                         "choose another out_dir (or delete that folder) to start anew")


def write_identity(out_dir: Path, file_name: str, identity: dict) -> None:
    atomic_write_text(Path(out_dir) / file_name, json.dumps(identity, indent=1))


def uses_ray(kind: str, executor: str = "ray") -> bool:
    return kind == "ray" or (kind == "optuna_tpe" and executor == "ray")


@contextmanager
def ray_session(settings: RaySettings, needed: bool) -> Iterator[None]:
    """Starts (or joins) Ray when ``needed``, checks it can hold a trial, and shuts down what it started."""
    if not needed:
        yield
        return
    check_local_resources(settings)
    owns_ray = start_ray(settings)
    try:
        check_cluster(settings)
        yield
    finally:
        if owns_ray:
            import ray  # here, not at the top: importing Ray costs a second that runner=local never needs

            ray.shutdown()


def make_runner(kind: str, settings: RaySettings, out_dir: Path):
    """``LocalRunner`` for ``local``; else Ray Tune with its experiment under ``out_dir/ray``."""
    if kind == "local":
        return LocalRunner(max(1, int(settings.cpus_per_trial)))
    return RayTuneRunner(settings, Path(out_dir) / "ray")


OPTIMIZER_STATES = {"sgd": 1, "adamw": 2, "rmsprop": 2}  # float32 tensors per parameter


def _held_bytes(data: ImageData | FolderData, resolution_px: int) -> int:
    """Bytes of images a GPU trial holds on the device (``device_feed``): uint8 at its
    resolution, or an image folder held in memory at the cache's size; a streamed one ~none."""
    if isinstance(data, FolderData):
        c = data.cache
        return (len(c.train_rows) + len(c.val_rows)) * c.image_bytes if data.in_memory else 0
    return (len(data.train_labels) + len(data.val_labels)) * 3 * resolution_px ** 2


def check_gpu_memory(specs: list[TrialSpec], columns: dict[str, dict], data: ImageData | FolderData,
                     trainer: TrainSettings, share: float, total_bytes: int | None) -> None:
    """Refuses, before any trial starts, a plan whose largest trial (by activations) would not
    fit its ``share`` of a GPU of ``total_bytes`` (None: no GPU here, nothing to check)."""
    if not specs or share <= 0 or total_bytes is None:
        return
    from scaling_search.train.memory import check_fits, trial_gpu_bytes  # lazy: GPU runs only

    spec = max(specs, key=lambda sp: columns.get(sp.candidate_id, {}).get("activations", 0))
    model = scaled_model(spec)
    module = model.build(data.num_classes, device="meta")
    need = trial_gpu_bytes(module, trainer.batch_size, model.resolution_px, trainer.amp,
                           _held_bytes(data, model.resolution_px), OPTIMIZER_STATES.get(trainer.optimizer, 2))
    check_fits(need, share, total_bytes, f"{spec.candidate_id} (batch {trainer.batch_size} at "
                                         f"{model.resolution_px} px)")


def _gpu_share(runner, trainer: TrainSettings) -> tuple[float, int | None]:
    """A trial's share of a GPU under ``runner``, and this machine's GPU memory (None: no GPU)."""
    import torch

    if trainer.device == "cpu" or not torch.cuda.is_available():
        return 0.0, None
    share = runner.gpus_per_trial() if isinstance(runner, RayTuneRunner) else 1.0
    return share, torch.cuda.get_device_properties(0).total_memory


def run_specs(out_dir: Path, specs: list[TrialSpec], columns: dict[str, dict], data: ImageData | FolderData,
              trainer: TrainSettings, runner, study, params_of: Callable[[TrialSpec], dict],
              dists: dict, attr_keys: tuple[str, ...], runner_kind: str, out) -> None:
    """Trains every spec not yet recorded in ``out_dir/trials`` and records each as it ends.

    Args:
        columns: per ``candidate_id``, the columns (cost, coefficients...) stored beside a trial.
        study: the Optuna study each ended trial is added to (once; see ``study.record_trial``).
        params_of: a spec's Optuna parameters (within ``dists``).
        attr_keys: the ``columns`` keys copied to the study trial's user attributes.

    Raises:
        RunInterrupted: the runner returned with trials unrecorded (Ctrl-C under Ray Tune).
    """
    check_gpu_memory(specs, columns, data, trainer, *_gpu_share(runner, trainer))
    store = TrialStore(out_dir)
    done = store.finished_ids()
    # Longest first (by activations, which ranked the default search's trial times best of the
    # cost columns, Spearman 0.82): the last trial to start is then a short one, and fewer
    # workers wait idle for a long one at the end. Each trial seeds itself: order changes nothing else.
    pending = sorted((sp for sp in specs if sp.trial_id not in done),
                     key=lambda sp: -columns.get(sp.candidate_id, {}).get("activations", 0))
    known = recorded_ids(study)

    def record(spec: TrialSpec, row: dict, history: list[dict]) -> None:
        col = columns[spec.candidate_id]
        record_trial(study, spec, row, history, params_of(spec), dists,
                     {k: col[k] for k in attr_keys}, known)

    for r in store.load():  # trials recorded before an interruption reached the study
        spec = TrialSpec.from_dict(r["spec"])
        if spec.candidate_id in columns:
            record(spec, r["row"], r["history"])

    def on_result(spec: TrialSpec, row: dict, history: list[dict]) -> None:
        store.save(spec.to_dict(), row, history, columns[spec.candidate_id])
        record(spec, row, history)

    seeds = len({sp.seed for sp in specs})
    print(f"{len(columns)} networks x {seeds} seed(s) = {len(specs)} trials; "
          f"{len(specs) - len(pending)} already done, {len(pending)} to run "
          f"({runner_kind} runner) -> {out_dir}", file=out, flush=True)
    progress = Progress(len(pending), runner.concurrency, len(specs) - len(pending), out)
    runner.run(pending, data, trainer, on_result, progress)
    if progress.done:
        print(progress.overhead(), file=out, flush=True)
    ended = {r["spec"]["trial_id"] for r in store.load()}
    missing = [sp.trial_id for sp in specs if sp.trial_id not in ended]
    if missing:  # Ray Tune returns, rather than raises, when it is interrupted
        raise RunInterrupted(f"{len(missing)} of {len(specs)} trials did not run")
