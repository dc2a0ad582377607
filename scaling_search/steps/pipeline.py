"""The run pipeline every step shares: set up a run folder, launch its trials, collect, analyse.

A step (Step 1's grid or TPE search, Step 2's family) plans its networks first, touching no
file, then goes through the same stages:

1. **setup** (``RunFolder.check`` before anything starts, ``RunFolder.open`` once it can): a
   folder that holds anything but a run of the step's own kind is refused, and so is a re-run
   that would mix incomparable trials; the user's study storage is opened before anything is
   written; then the folder is locked for this driver (``with run:`` holds the lock until the
   step ends) and gets its identity, ``config.yaml`` and ``environment.json``;
2. **launch** (``launch``, over ``train.execution.run_specs``): the data decoded once, the step's
   plan written, and every trial not yet recorded trained through a runner;
3. **collect** (``collect``): the ``results`` and ``epochs`` tables, rebuilt from the records;
4. **analyse**: the step's own tables (``tables.write_table``), in one wording (``tables.verdict``).

Each stage takes the values it needs, not a step's whole settings object.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import filelock
import optuna
import pandas as pd
from omegaconf import OmegaConf

from scaling_search.analysis.results import RESULT_COLUMNS, epochs_frame, results_frame
from scaling_search.environment import capture
from scaling_search.files import atomic_write_text
from scaling_search.models.backbones import ScaledModel
from scaling_search.models.scaling import Coefficients, Rounding
from scaling_search.settings import DataSettings, RaySettings, TrainSettings, storage_url
from scaling_search.tables import write_table
from scaling_search.train.data import FolderData, ImageData, load_dataset, num_classes_of
from scaling_search.train.execution import check_identity, make_runner, run_specs, write_identity
from scaling_search.train.records import TrialStore
from scaling_search.train.status import FAILED
from scaling_search.train.study import open_study
from scaling_search.train.trial import TrialSpec, trial_id

# Training costs about 3x the forward pass (forward + backward), per image and epoch.
TRAIN_MACS_PER_FORWARD = 3


LOCK_FILE, HOLDER_FILE = ".lock", ".lock.json"
# What a run folder of either step holds besides its identity file and the step's own tables: the
# driver's lock, the settings and environment, the trial records, the tables built from them, the
# default study (SQLite and its side files), Ray Tune's experiment, the report, and Hydra's
# ``.hydra/`` where a user points ``hydra.run.dir`` at the out_dir and sets ``hydra.output_subdir``.
RUN_FILES = frozenset({LOCK_FILE, HOLDER_FILE, "config.yaml", "environment.json", "trials",
                       "results.csv", "results.parquet", "epochs.csv", "epochs.parquet", "optuna.db",
                       "optuna.db-journal", "optuna.db-wal", "optuna.db-shm", "ray", "report.html",
                       "plots", ".hydra", "data.json"})
DATA_PIN = "data.json"  # what the run's trials were trained on, by content
STUDY_OWNER = "scaling_search.run"  # the study's user attribute naming the settings it belongs to


class RunFolder:
    """A run's folder, what defines it, and the lock its driver holds.

    A run folder has one driver at a time: ``open`` takes an OS lock on ``out_dir/.lock`` (an
    ``flock``, released by the kernel when its holder dies, even by ``kill -9``) and writes who
    holds it to ``.lock.json``; a second driver is refused with that holder named. ``with run:``
    releases it when the step ends.

    A run writes only into a folder that is missing, empty, or a run of its own kind (``check``):
    one that holds its identity file (a resume), or, where a driver was killed before it wrote
    that file, nothing but what such a run writes (``RUN_FILES``, the step's ``outputs``, and
    the hidden temporary files of their atomic writes). A user's folder is never written into.

    Attributes:
        out_dir: the folder (absolute, stable: a re-run resumes it).
        identity_file: where the identity is kept (``search.json``, ``step2.json``).
        identity: the settings a re-run must share.
        what: how the messages name the run ("search", "Step-2 run").
        outputs: the names of what the step itself writes there (its tables, configs...).
    """

    def __init__(self, out_dir: Path, identity_file: str, identity: dict, what: str,
                 outputs: Iterable[str] = (), trains_on_data_of: Iterable[Path] = ()):
        self.out_dir, self.identity_file, self.identity, self.what = Path(out_dir), identity_file, identity, what
        # the folders whose pinned data this run must train on: its own, and (fidelity) its search's
        self.pinned_by = (self.out_dir, *map(Path, trains_on_data_of))
        self.written = RUN_FILES | {identity_file, *outputs}
        self._lock: filelock.BaseFileLock | None = None

    def __enter__(self) -> RunFolder:
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            (self.out_dir / HOLDER_FILE).unlink(missing_ok=True)
            self._lock.release()
            self._lock = None

    @property
    def study_name(self) -> str:
        """``search-<digest>`` or ``step2-<digest>`` (of the identity): the study belongs to what the
        run computes, not to its folder's name, so a copied or moved run resumes its own study."""
        digest = hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()
        return f"{Path(self.identity_file).stem}-{digest[:12]}"

    def check(self) -> None:
        """Refuses a folder that holds anything but this run (before anything starts): a user's
        files, a run of another kind, or the same kind with other settings."""
        if self.out_dir.is_dir() and not (self.out_dir / self.identity_file).is_file():
            foreign = sorted(p.name for p in self.out_dir.iterdir() if not self._written_here(p.name))
            if foreign:
                shown = ", ".join(foreign[:5]) + (f", ... ({len(foreign)} in all)" if len(foreign) > 5 else "")
                raise ValueError(f"out_dir {str(self.out_dir)!r} holds files that no {self.what} wrote "
                                 f"({shown}); a run writes only into a new or empty folder, or resumes its "
                                 "own: choose a new or empty out_dir")
        check_identity(self.out_dir, self.identity_file, self.identity, self.what)

    def _written_here(self, name: str) -> bool:
        """One of the run's own entries, or a temporary one of its atomic writes
        (``.results.csv.k3j9.tmp``, ``.step2.x81q.staging``), left by a driver that was killed."""
        return name in self.written or any(name.startswith(f".{w}.") for w in self.written)

    def open(self, config: dict, study_storage: str | None, study_name: str | None,
             sampler: optuna.samplers.BaseSampler | None = None, out=None) -> optuna.Study:
        """Locks the folder and writes its identity, ``config.yaml`` and ``environment.json``;
        returns the run's Optuna study. A user's storage is opened first, so a bad URL writes
        nothing.

        Raises:
            ValueError: another driver holds the folder (the message names it).
        """
        url, name = storage_url(study_storage, self.out_dir), study_name or self.study_name
        study = self._own_study(open_study(url, name, sampler), name) if study_storage else None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock(out)
        write_identity(self.out_dir, self.identity_file, self.identity)
        atomic_write_text(self.out_dir / "config.yaml", OmegaConf.to_yaml(config))
        atomic_write_text(self.out_dir / "environment.json", json.dumps(capture(), indent=1))
        return study or self._own_study(open_study(url, name, sampler), name)

    def _own_study(self, study: optuna.Study, name: str) -> optuna.Study:
        """The study, marked as this run's (its settings' digest), or refused where another run's
        mark is on it: two searches in one study would be ranked, and sampled by TPE, together.
        Runs of the same settings in other folders (other machines) share it, as intended.
        Best effort: two searches that open one new study in the same instant could both mark it
        (Optuna offers no compare-and-set on a study's attributes); a study made before the mark
        existed is claimed by the first run that opens it."""
        mine = {"kind": self.what, "digest": self.study_name, "out_dir": str(self.out_dir)}
        owner = study.user_attrs.get(STUDY_OWNER)
        if owner is None:
            study.set_user_attr(STUDY_OWNER, mine)
        elif not isinstance(owner, dict) or owner.get("digest") != mine["digest"]:
            theirs = owner.get("out_dir", "?") if isinstance(owner, dict) else "?"
            raise ValueError(f"study.name={name!r} in study.storage holds the trials of another "
                             f"{owner.get('kind', 'run') if isinstance(owner, dict) else 'run'} (other settings; "
                             f"first run in {theirs!r}); a study holds one search: give this run its own "
                             "study.name, or leave study.name unset")
        return study

    def _take_lock(self, out) -> None:
        lock = filelock.FileLock(self.out_dir / LOCK_FILE)
        holder_file = self.out_dir / HOLDER_FILE
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            raise ValueError(f"out_dir {str(self.out_dir)!r} is in use by another run ({_holder(holder_file)}); "
                             "wait for it to end, or choose another out_dir") from None
        if holder_file.is_file() and out is not None:  # its holder ended without releasing it
            print(f"took over the lock of {_holder(holder_file)}, which is gone", file=out, flush=True)
        atomic_write_text(holder_file, json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.now(UTC).isoformat(timespec="seconds")}))
        self._lock = lock


def _holder(path: Path) -> str:
    """``pid 123 on host-a since 2026-11-25T08:00:00+00:00``, from a holder file."""
    try:
        h = json.loads(path.read_text())
        return f"pid {h['pid']} on {h['host']} since {h['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a driver that did not say who it is"


def check_apart(out_dir: Path, data_root: str | None) -> None:
    """A run folder never lies inside the data folder (its plots would be read as a class on the
    next run), nor the data inside a run folder."""
    if not data_root:
        return
    out, data = Path(out_dir).resolve(), Path(data_root).expanduser().resolve()
    if out == data or data in out.parents:
        raise ValueError(f"out_dir {str(out)!r} lies inside data.root {str(data)!r}: its files would be "
                         "read as images of a class; choose an out_dir outside the data folder")
    if out in data.parents:
        raise ValueError(f"data.root {str(data)!r} lies inside out_dir {str(out)!r}; keep the data "
                         "outside the run folder")


# Where the data is kept while training, not what a trial computes: a resume may change them.
DATA_PLACEMENT = ("cache_dir", "mode", "memory_budget_gb")


def data_identity(data: DataSettings) -> dict:
    """The data settings that decide what a trial computes (part of a run's identity)."""
    return {k: v for k, v in asdict(data).items() if k not in DATA_PLACEMENT}


def data_pin(images: ImageData | FolderData, data: DataSettings) -> dict:
    """What a run trains on, by content: an image folder's cache key (its files' paths, sizes and
    modification times) and resolved root, or a digest of a decoded set's images and labels."""
    if isinstance(images, FolderData):
        c = images.cache
        content = Path(c.path).parent.name
        count = len(c.train_rows) + len(c.val_rows)
    else:
        h = hashlib.sha256()
        for t in (images.train_images, images.train_labels, images.val_images, images.val_labels):
            h.update(t.contiguous().numpy().tobytes())
        content, count = h.hexdigest()[:24], len(images.train_labels) + len(images.val_labels)
    root = str(Path(data.root).expanduser().resolve()) if data.root else None
    return {"name": data.name, "root": root, "images": count, "content": content}


def check_pin(out_dir: Path, pin: dict) -> None:
    """A resume trains on the data its run began with: the same content, wherever it is named from."""
    path = Path(out_dir) / DATA_PIN
    try:
        old = json.loads(path.read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError) as e:
        raise ValueError(f"{path} cannot be read ({e}); it pins the data the run was trained on: "
                         "restore it, or choose another out_dir") from None
    if old.get("content") != pin["content"]:
        where = lambda p: f"{p.get('root') or p.get('name')} ({p.get('images')} images)"  # noqa: E731
        raise ValueError(f"{out_dir} was trained on {where(old)}, but this run's data is {where(pin)}, "
                         "with other contents: a resume would mix the two; point data.root at the run's "
                         "data as it was, or choose another out_dir")


def trial_specs(tag: str, units: Iterable[tuple[str, Coefficients, ScaledModel]], seeds: list[int],
                base_resolution_px: int | None, rounding: Rounding,
                imports: tuple[str, ...]) -> list[TrialSpec]:
    """One spec per (unit, seed), in the given order; a unit is (id, coefficients, model)."""
    return [TrialSpec.of(trial_id(tag, uid, seed), uid, seed, coefficients, model, base_resolution_px,
                         rounding, imports)
            for uid, coefficients, model in units for seed in seeds]


def prepare(run: RunFolder, config: dict, columns: dict[str, dict], *, data: DataSettings,
            study_storage: str | None, study_name: str | None, write_plan: Callable[[Path, int], None],
            out) -> tuple[ImageData | FolderData, optuna.Study]:
    """Setup (inside ``with run:``): decode the data once (at the largest resolution in
    ``columns``), open the folder and write the step's plan (``write_plan(out_dir, num_classes)``);
    the images and the run's study, for ``run_specs`` (once, or once per round of a race)."""
    images = load_dataset(data, max(col["resolution_px"] for col in columns.values()), out)
    if images.num_classes != num_classes_of(data):
        raise ValueError(f"{data.name} has {images.num_classes} classes, expected {num_classes_of(data)}")
    pin = data_pin(images, data)
    for folder in run.pinned_by:
        check_pin(folder, pin)
    study = run.open(config, study_storage, study_name, out=out)
    if not (run.out_dir / DATA_PIN).is_file():
        atomic_write_text(run.out_dir / DATA_PIN, json.dumps(pin, indent=1))
    write_plan(run.out_dir, images.num_classes)
    return images, study


def launch(run: RunFolder, config: dict, specs: list[TrialSpec], columns: dict[str, dict], *,
           data: DataSettings, trainer: TrainSettings, runner_kind: str, runner: RaySettings,
           study_storage: str | None, study_name: str | None, params_of: Callable[[TrialSpec], dict],
           distributions: dict, study_attrs: tuple[str, ...], write_plan: Callable[[Path, int], None],
           out) -> None:
    """Setup and launch, for a step whose trials are all known up front (inside ``with run:``
    and the Ray session): ``prepare``, then train every spec not yet recorded."""
    images, study = prepare(run, config, columns, data=data, study_storage=study_storage, study_name=study_name,
                            write_plan=write_plan, out=out)
    run_specs(run.out_dir, specs, columns, images, trainer, make_runner(runner_kind, runner, run.out_dir),
              study, params_of, distributions, study_attrs, runner_kind, out)


def with_training_macs(df: pd.DataFrame, train_images: int, epochs: int, seeds: int) -> pd.DataFrame:
    """``df`` (one row per network, with ``macs``) with the ``train_macs`` its training needs."""
    return df.assign(train_macs=TRAIN_MACS_PER_FORWARD * df["macs"] * train_images * epochs * seeds)


def collect(out_dir: Path, columns: list[str] = RESULT_COLUMNS, out=None) -> tuple[pd.DataFrame, int]:
    """``results`` and ``epochs`` (parquet + CSV) rebuilt from the trial records; (results, failed)."""
    records = TrialStore(out_dir).load()
    results = results_frame(records, columns)
    write_table(results, Path(out_dir) / "results", parquet=True)
    write_table(epochs_frame(records), Path(out_dir) / "epochs", parquet=True)
    failed = int((results["status"] == FAILED).sum())
    if failed and out is not None:
        print(f"{failed} trial(s) failed; their errors are in results.csv", file=out)
    return results, failed
