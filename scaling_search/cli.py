"""What the command-line entry points share: bad input as one line and exit status 2.

Hydra reports its own errors (a malformed override, an unknown key) over several lines with
exit status 1, after which nothing has been written. ``run_hydra_app`` first parses the
overrides and composes the config with Hydra's own parser, so such errors become one line and
exit status 2; ``user_errors`` does the same for errors raised by the app itself.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from omegaconf.errors import OmegaConfBaseException

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
EXIT_USAGE = 2


def fail(prog: str, message: str) -> None:
    """Prints ``prog: error: message`` on one line to stderr and exits with status 2."""
    message = str(message).split("Config search path:")[0]  # Hydra's list of search paths
    one_line = " ".join(line.strip() for line in message.splitlines() if line.strip())
    print(f"{prog}: error: {one_line}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


@contextmanager
def user_errors(prog: str) -> Iterator[None]:
    """Turns the errors that bad input raises into one line and exit status 2."""
    try:
        yield
    except (ValueError, FileNotFoundError, NotADirectoryError, OmegaConfBaseException) as e:
        fail(prog, _describe(e))


def _describe(e: BaseException) -> str:
    if isinstance(e, OmegaConfBaseException):
        # OmegaConf appends "full_key: ... object_type=..." lines; the first line says it.
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return str(e)


def _first_values(overrides):
    """Each override with a sweep (``seed=0,1,2``) replaced by its first value."""
    out = []
    for o in overrides:
        if o.is_sweep_override():
            try:
                first = next(iter(o.sweep_string_iterator()))
            except Exception:  # an interval or other sweep a sweeper samples: skip it
                continue
            out.append(f"{o.get_key_element()}={first}")
        else:
            out.append(o.input_line)
    return out


def preflight(prog: str, config_name: str, argv: list[str]) -> None:
    """Parses the command line and composes the config as Hydra will; exits 2 on an error."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    args, _ = get_args_parser().parse_known_args(argv)
    if args.help or args.hydra_help or args.info or args.cfg or args.shell_completion:
        return  # Hydra's own informational modes
    try:
        overrides = OverridesParser.create().parse_overrides(args.overrides)
        with initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name=prog):
            compose(config_name, overrides=_first_values(overrides))
    except (HydraException, OmegaConfBaseException) as e:
        fail(prog, _describe(e) if isinstance(e, OmegaConfBaseException) else str(e))


def run_hydra_app(main: Callable[[], None], prog: str, config_name: str) -> None:
    """Runs a ``@hydra.main`` function after ``preflight``."""
    preflight(prog, config_name, sys.argv[1:])
    main()
