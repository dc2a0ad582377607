"""What the command-line apps share: their config schemas, and bad input as one line and exit 2.

Importing this module registers the apps' schemas (``settings.GridConfig``, ``ScaleConfig``,
``FidelityConfig``) in Hydra's ConfigStore, where ``conf/grid.yaml``, ``conf/scale.yaml`` and
``conf/fidelity.yaml`` name them first in their defaults list. Hydra reports its own errors (a
malformed override, an unknown key, a value of the wrong type) over several lines with exit
status 1, after which nothing has been written.
``run_hydra_app`` first parses the overrides and composes the config with Hydra's own parser,
so such errors become one line and exit status 2; ``user_errors`` does the same for errors
raised by the app itself (a file system error names its path), and turns a run that ended with
no usable result (``RunFailed``) into one line and exit status 1.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import re
import sys
import typing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException
from omegaconf import OmegaConf, open_dict
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException, ValidationError

from scaling_search.settings import (
    FidelityConfig,
    FidelitySettings,
    GridConfig,
    GridSettings,
    ScaleConfig,
    ScaleSettings,
)

CONF_DIR = Path(__file__).resolve().parent / "conf"
SCHEMAS = {"grid": GridConfig, "scale": ScaleConfig, "fidelity": FidelityConfig}  # conf/<name>.yaml: its schema
for _name, _schema in SCHEMAS.items():
    ConfigStore.instance().store(name=f"{_name}_schema", node=_schema)
EXIT_FAILED = 1  # a run that ended with no usable result
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # the shell's status for a job stopped by Ctrl-C
# A path the user gave that cannot be used: bad input. Any other OSError (a full disk) is not.
BAD_PATH = (PermissionError, FileNotFoundError, NotADirectoryError, IsADirectoryError, FileExistsError)
# What a boolean may be spelled as on the command line (OmegaConf reads any integer as one).
BOOLEAN_WORDS = ("true", "false", "yes", "no", "on", "off", "y", "n", "1", "0")


class Failed(SystemExit):
    """``fail``'s exit: its status, and the line it printed (``message``)."""

    def __init__(self, status: int, message: str):
        super().__init__(status)
        self.message = message


def fail(prog: str, message: str, status: int = EXIT_USAGE) -> None:
    """Prints ``prog: error: message`` on one line to stderr and exits with ``status``."""
    message = str(message).split("Config search path:")[0]  # Hydra's list of search paths
    one_line = " ".join(line.strip() for line in message.splitlines() if line.strip())
    print(f"{prog}: error: {one_line}", file=sys.stderr)
    raise Failed(status, one_line)


def sweep_job(task: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """A Hydra task that, in a ``--multirun``, ends a failed job (its one line printed) with a
    record of the failure instead of ending the sweep: the other jobs still run, and the sweep's
    summary lists each job's outcome and exits with the failed jobs' status
    (``multirun.SummaryCallback``). Outside a sweep, and for Ctrl-C, it changes nothing."""

    @functools.wraps(task)
    def job(cfg):
        try:
            return task(cfg)
        except Failed as e:
            from hydra.core.hydra_config import HydraConfig
            from hydra.types import RunMode

            if (e.code == EXIT_INTERRUPTED or not HydraConfig.initialized()
                    or HydraConfig.get().mode != RunMode.MULTIRUN):
                raise
            return {"job_failed": e.message, "exit_status": e.code}
    return job


@contextmanager
def resumable(prog: str, out_dir: Path, interrupted: tuple[type[BaseException], ...]) -> Iterator[None]:
    """Ctrl-C (or a runner that returned early) becomes one line and exit status 130."""
    try:
        yield
    except (KeyboardInterrupt, *interrupted) as e:
        detail = f" ({e})" if str(e) else ""
        print(f"{prog}: interrupted{detail}; every trial that ended is saved in {out_dir}; "
              "run the same command again to resume", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_INTERRUPTED) from None


@contextmanager
def user_errors(prog: str) -> Iterator[None]:
    """Turns the errors that bad input raises into one line and exit status 2, a file system
    error into one line naming its path, and ``RunFailed`` into one line and exit status 1."""
    try:
        yield
    except (ValueError, OmegaConfBaseException) as e:
        fail(prog, _describe(e))
    except OSError as e:
        fail(prog, _describe_os_error(e), EXIT_USAGE if isinstance(e, BAD_PATH) else EXIT_FAILED)
    except Exception as e:
        # Lazy, for start-up time (it loads Optuna): only a run that trained raises it, and by
        # then the module is loaded.
        from scaling_search.train.execution import RunFailed

        if isinstance(e, RunFailed):
            fail(prog, str(e), EXIT_FAILED)
        raise


def _describe_os_error(e: OSError) -> str:
    """``Permission denied: '/runs/x/trials'``; an OSError raised with a message of its own keeps it."""
    if e.filename is None:
        return str(e)
    paths = repr(str(e.filename)) + (f" -> {str(e.filename2)!r}" if e.filename2 is not None else "")
    return f"{e.strerror or type(e).__name__}: {paths}"


def _describe(e: BaseException) -> str:
    key = getattr(e, "full_key", None)
    if isinstance(e, MissingMandatoryValue) and key:
        return f"{key} has no value (???); set it, e.g. {key}=..."
    if isinstance(e, OmegaConfBaseException):
        # OmegaConf appends "full_key: ... object_type=..." lines; the first line says what.
        what = str(e).splitlines()[0] if str(e) else type(e).__name__
        return f"{key}: {what}" if key and key not in what else what
    return str(e)


MAX_PREFLIGHT_JOBS = 1000


def _jobs(overrides) -> Iterator[list[str]]:
    """The override list of every job a basic-launcher sweep will run (``seed=0,1,2``: three)."""
    choices = []
    for o in overrides:
        if o.is_sweep_override():
            try:
                values = list(o.sweep_string_iterator())
            except Exception:  # an interval a sweeper samples: the job checks its own values
                continue
            choices.append([f"{o.get_key_element()}={v}" for v in values])
        else:
            choices.append([o.input_line])
    return itertools.islice(itertools.product(*choices), MAX_PREFLIGHT_JOBS)


def _overrides(argv: list[str]) -> list[str] | None:
    """The overrides on a Hydra app's command line (``key=value``), as ``hydra.main`` reads them.

    None where the command does not run the app's own config: Hydra's help and information
    modes (``--help``, ``--cfg job``, ...), or another config (``--config-name``, ...).
    """
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("overrides", nargs="*")
    for flags in (("--help", "-h"), ("--hydra-help",), ("--version",), ("--shell-completion", "-sc"),
                  ("--multirun", "-m"), ("--run", "-r"), ("--resolve",)):
        parser.add_argument(*flags, action="store_true")
    for flags in (("--cfg", "-c"), ("--package", "-p"), ("--config-path", "-cp"), ("--config-name", "-cn"),
                  ("--config-dir", "-cd"), ("--experimental-rerun",)):
        parser.add_argument(*flags)
    parser.add_argument("--info", "-i", nargs="?", const="all")
    args, _ = parser.parse_known_args(argv)
    informational = (args.help or args.hydra_help or args.version or args.shell_completion
                     or args.cfg or args.info)
    another_config = args.config_path or args.config_name or args.config_dir or args.experimental_rerun
    return None if informational or another_config else args.overrides


def _multirun(argv: list[str]) -> bool:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--multirun", "-m", action="store_true")
    return parser.parse_known_args(argv)[0].multirun


HYDRA_REF = re.compile(r"\$\{hydra:([^}]+)\}")


def _resolved(cfg, num: int | None) -> dict:
    """A job's config resolved as Hydra will resolve it inside the job: ``${hydra:...}``
    included (the job's number in a sweep, the working and output folders). A reference to a
    Hydra setting that has no value there (a typo, or ``job.num`` outside a sweep) is refused:
    Hydra would make it the string ``None``, a folder of that name."""
    with open_dict(cfg):
        h = cfg.hydra
        h.runtime.cwd = os.getcwd()
        if num is not None:
            h.job.num, h.job.id = num, str(num)  # as Hydra's basic launcher sets them
        h.runtime.output_dir = f"{h.sweep.dir}/{h.sweep.subdir}" if num is not None else str(h.run.dir)
    HydraConfig.instance().set_config(cfg)
    job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    for key, value in _strings(OmegaConf.to_container(job, resolve=False)):
        for ref in HYDRA_REF.findall(value):
            if OmegaConf.select(cfg.hydra, ref.strip(), default=None, throw_on_missing=False) is None:
                only_sweeps = num is None and ref.strip() in ("job.num", "job.id")
                why = " (it is set only in a --multirun)" if only_sweeps else ""
                raise ValueError(f"{key}={value}: ${{hydra:{ref}}} names no Hydra setting with a value{why}; "
                                 "fix the name (e.g. ${hydra:job.num}, ${hydra:job.name}, ${hydra:runtime.cwd})")
    return OmegaConf.to_container(job, resolve=True, throw_on_missing=True)


def _strings(node, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, value) of every string in a plain container."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        key = f"{prefix}.{k}" if prefix and isinstance(k, str) else f"{prefix}[{k}]" if prefix else str(k)
        if isinstance(v, str):
            yield key, v
        else:
            yield from _strings(v, key)


def boolean_keys(schema: type, prefix: str = "") -> set[str]:
    """The dotted keys of a schema's boolean fields (``dry_run``, ``trainer.amp``, ...)."""
    keys = set()
    hints = typing.get_type_hints(schema)
    for f in fields(schema):
        if hints[f.name] is bool:
            keys.add(prefix + f.name)
        elif is_dataclass(hints[f.name]):
            keys |= boolean_keys(hints[f.name], f"{prefix}{f.name}.")
    return keys


def check_booleans(overrides: list[Override], schema: type) -> None:
    """A boolean override is true or false (or yes/no, on/off, 1/0), never ``2`` or ``maybe``.

    OmegaConf reads every integer as a boolean (``dry_run=2`` is true), so the overrides are
    checked as the user typed them, every value of a sweep included.
    """
    keys = boolean_keys(schema)
    for o in overrides:
        if o.key_or_group not in keys or o.is_delete():
            continue
        try:
            values = list(o.sweep_iterator()) if o.is_sweep_override() else [o.value()]
        except HydraException:  # an interval sweep: not a boolean, and OmegaConf says so
            continue
        for v in values:
            if isinstance(v, str) and "${" in v:
                continue  # an interpolation: OmegaConf checks what it resolves to
            if not (isinstance(v, bool) or str(v).lower() in BOOLEAN_WORDS):
                raise ValueError(f"{o.key_or_group} must be true or false, got {v!r}")


def check_run_folder(config_name: str, plain: Mapping) -> None:
    """A job that trains writes a run folder: it must lie apart from ``data.root``, and be
    missing, empty, or a run of its own kind with the same settings (``steps.pipeline.RunFolder``).

    Part of the preflight, so that in a sweep the last job's folder is checked before the first
    job trains (the step checks it again when its job starts)."""
    if config_name == "grid":
        settings = GridSettings.from_config(plain)
        if not settings.dry_run:
            # Lazy, as the apps' own validate: the steps load the training modules.
            from scaling_search.steps.step1 import run_folder

            run_folder(settings)
    elif config_name == "scale":
        settings = ScaleSettings.from_config(plain)
        if settings.train and not settings.dry_run:
            from scaling_search.steps.step2 import run_folder

            run_folder(settings)
    elif config_name == "fidelity":
        from scaling_search.steps.fidelity import run_folder

        run_folder(FidelitySettings.from_config(plain))


def preflight(prog: str, config_name: str, argv: list[str],
              validate: Callable[[Mapping], object] | None = None) -> None:
    """Composes the config of every job as Hydra will, and checks it with ``validate`` (and its
    booleans as typed, ``check_booleans``), and the run folder each training job will write
    (``check_run_folder``).

    Runs before Hydra starts, so a typo in the last value of a sweep fails before the first
    job writes anything. Exits 2 with one line on the first error.
    """
    overrides = _overrides(argv)
    if overrides is None:
        return
    with user_errors(prog):
        try:
            overrides = OverridesParser.create().parse_overrides(overrides)
            if config_name in SCHEMAS:
                check_booleans(overrides, SCHEMAS[config_name])
            multirun = _multirun(argv) or any(o.key_or_group == "hydra.mode" and str(o.value()).upper() == "MULTIRUN"
                                              for o in overrides if not o.is_sweep_override())
            sweeps = [o for o in overrides if o.is_sweep_override()]
            if sweeps and not multirun:
                key = sweeps[0].get_key_element()
                raise ValueError(f"{sweeps[0].input_line} is a sweep (one job per value), which needs --multirun: "
                                 f"add --multirun to the command, or write a list as {key}=[...] or a string as "
                                 f"{key}='...'")
            # the job's name as Hydra gives it under `python -m scaling_search.grid`: "grid"
            with initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name=prog.rsplit(".", 1)[-1]):
                for num, job in enumerate(_jobs(overrides)):
                    cfg = compose(config_name, overrides=list(job), return_hydra_config=True)
                    if validate is None:
                        continue
                    try:
                        plain = _resolved(cfg, num if multirun else None)
                    finally:
                        HydraConfig.instance().cfg = None  # the preflight's, not the run's
                    validate(plain)
                    check_run_folder(config_name, plain)
        except HydraException as e:
            # For a value of the wrong type Hydra says only "Error merging override seed=abc".
            cause = e.__cause__
            fail(prog, _describe(cause) if isinstance(cause, ValidationError) else str(e))


def run_hydra_app(main: Callable[[], None], prog: str, config_name: str,
                  validate: Callable[[Mapping], object] | None = None) -> None:
    """Runs a ``@hydra.main`` function after ``preflight``."""
    preflight(prog, config_name, sys.argv[1:], validate)
    main()
