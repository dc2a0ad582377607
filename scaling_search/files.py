"""Atomic output: a file or a whole folder appears complete or not at all.

Result files are written to a temporary sibling and renamed into place (``os.replace`` is
atomic on POSIX within one filesystem), so an interrupted or failed run leaves either the
previous output or none, never a half-written one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _as_created(tmp: str | os.PathLike) -> None:
    """mkstemp makes files 0600; a result file should get the mode ``open`` would give it."""
    os.chmod(tmp, 0o666 & ~_umask())


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Writes ``text`` to ``path`` through a temporary file in the same folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        _as_created(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary path to write (e.g. ``df.to_parquet``); renamed to ``path`` on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        _as_created(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def staged_directory(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yields an empty staging folder that replaces ``out_dir`` when the block succeeds.

    On an exception the staging folder is removed and ``out_dir`` is left as it was. A
    previous ``out_dir`` is moved aside, the new one renamed in, and the old one deleted.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".staging", dir=out_dir.parent))
    os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes it 0700; the result should look like mkdir's
    try:
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = None
    if out_dir.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".old", dir=out_dir.parent))
        os.replace(out_dir, old / out_dir.name)
    os.replace(stage, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def plain(obj: object) -> object:
    """A JSON/YAML-ready copy: exact fractions become floats, paths and the like strings."""
    return json.loads(json.dumps(obj, default=lambda o: float(o) if isinstance(o, Fraction) else str(o)))


RUN_MARKERS = ("search.json", "step2.json", "fidelity.json")  # the identity files of a run folder


def run_folder_around(path: Path) -> Path | None:
    """The run folder that holds ``path`` (``path`` itself or a folder above it), if any: whose
    files only its own run writes."""
    path = Path(path).expanduser().resolve()
    for folder in (path, *path.parents):
        if any((folder / m).is_file() for m in RUN_MARKERS):
            return folder
    return None
