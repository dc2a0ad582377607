"""``python -m scaling_search.report RUN_DIR``: one self-contained HTML page for a run or a sweep.

The page itself is built by ``analysis.report``; this module is only the command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from scaling_search.analysis.report import PROG, write_report

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run's out_dir, or a grid --multirun sweep folder")
    parser.add_argument("--out", help="where to write the page (default: RUN_DIR/report.html)")
    args = parser.parse_args(argv)
    try:
        path = write_report(Path(args.run_dir).expanduser(), Path(args.out).expanduser() if args.out else None)
    except (ValueError, OSError) as e:
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
