"""Real services for the tests: a throwaway PostgreSQL server and the optuna-dashboard server.

Where a component is missing a test skips, with the reason and the fix; with
SCALING_SEARCH_REQUIRE_SERVICES set (``.ci/run`` sets it) it fails instead, so that CI cannot pass
by skipping: Chromium and Playwright, optuna-dashboard, Ray and PostgreSQL must all be there.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import NoReturn

import pytest

REQUIRE = "SCALING_SEARCH_REQUIRE_SERVICES"


def required() -> bool:
    """Whether a missing component fails the run (in CI) rather than skips it."""
    return bool(os.environ.get(REQUIRE))


def missing(what: str) -> NoReturn:
    """Skips the test, or fails it where the component is required; ``what`` names the fix."""
    if required():
        pytest.fail(f"{what} ({REQUIRE} is set: in CI every component must be installed)", pytrace=False)
    pytest.skip(what)


def require_module(name: str, install: str):
    """Imports module ``name``, or skips/fails with how to ``install`` it."""
    try:
        return importlib.import_module(name)
    except ImportError as e:
        missing(f"{name} cannot be imported ({e}); {install}")


class PostgresServer:
    """A PostgreSQL server of its own in ``root``, listening only on a Unix socket there.

    PostgreSQL refuses to run as root, so under root the server runs as the
    ``postgres`` user (which Debian's package creates) or else ``nobody``. No TCP port is opened,
    so the server cannot clash with another one on the machine."""

    ROLE, PORT = "scaling_search", 5432  # the port only names the socket file, .s.PGSQL.5432

    def __init__(self, bindir: Path, root: Path, user: pwd.struct_passwd | None):
        self.bindir, self.root, self.user = bindir, root, user

    def _run(self, tool: str, *args: str, as_server: bool = True) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}  # no PGPORT, PGHOST...
        drop = ({"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
                if as_server and self.user else {})
        return subprocess.run([str(self.bindir / tool), *args], cwd=self.root, env=env,
                              capture_output=True, text=True, timeout=120, **drop)

    def start(self) -> None:
        data = self.root / "data"
        steps = [("initdb", "-D", str(data), "-U", self.ROLE, "--auth=trust", "--no-locale",
                  "--encoding=UTF8", "--no-sync", "--no-instructions"),
                 # -w: pg_ctl returns once the server accepts connections (as pg_isready would)
                 ("pg_ctl", "start", "-w", "-t", "60", "-D", str(data), "-l", str(self.root / "server.log"),
                  "-o", f"-k {self.root} -p {self.PORT} -c listen_addresses='' -c fsync=off")]
        for step in steps:
            done = self._run(*step)
            if done.returncode != 0:
                log = self.root / "server.log"
                raise RuntimeError(f"{step[0]} failed (exit {done.returncode}): {done.stderr.strip()}"
                                   + (f"\nserver.log:\n{log.read_text()[-2000:]}" if log.exists() else ""))

    def stop(self) -> None:
        if (self.root / "data" / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.root / "data"))
        shutil.rmtree(self.root, ignore_errors=True)

    def create_database(self, name: str) -> str:
        """Creates database ``name``; returns its SQLAlchemy URL (psycopg2, over the socket)."""
        done = self._run("createdb", "-h", str(self.root), "-p", str(self.PORT), "-U", self.ROLE, name,
                         as_server=False)
        if done.returncode != 0:
            raise RuntimeError(f"createdb {name} failed: {done.stderr.strip()}")
        return f"postgresql+psycopg2://{self.ROLE}@/{name}?host={self.root}&port={self.PORT}"


def _server_bindir() -> Path | None:
    """Debian's /usr/lib/postgresql/<major>/bin (the newest major), else initdb's on the PATH."""
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                    key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else -1)
    initdb = debian[-1] if debian else shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _unprivileged_user() -> pwd.struct_passwd | None:
    """None where this process is not root (it runs the server itself), else postgres or nobody."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    missing("running as root, and no unprivileged user (postgres, nobody) to run PostgreSQL as")


@contextlib.contextmanager
def postgres_server():
    """Starts a throwaway PostgreSQL server in a new temporary folder; stops it and removes the
    folder at the end. Skips (fails in CI) where the server or psycopg2 is not installed."""
    require_module("psycopg2", "pip install -e '.[dev]' (psycopg2-binary)")
    bindir = _server_bindir()
    if bindir is None:
        missing("PostgreSQL's server (initdb, pg_ctl) is not installed; apt-get install postgresql")
    user = _unprivileged_user()
    root = Path(tempfile.mkdtemp(prefix="scaling_search_pg_"))  # short: a socket path has ~107 bytes
    if user is not None:
        os.chown(root, user.pw_uid, user.pw_gid)
    server = PostgresServer(bindir, root, user)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def optuna_dashboard(storage: str, timeout: float = 60):
    """Serves the studies in ``storage`` with the real optuna-dashboard server on a free local
    port; yields ``get(path)``, which returns the JSON of one of its API paths."""
    dashboard = shutil.which("optuna-dashboard", path=os.path.dirname(sys.executable)) or shutil.which(
        "optuna-dashboard")
    if dashboard is None:
        missing("optuna-dashboard is not installed (pip install -e '.[dev]')")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]

    def get(path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return json.loads(r.read())

    server = subprocess.Popen([dashboard, storage, "--port", str(port), "--host", "127.0.0.1", "--quiet"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + timeout
        while True:
            try:
                get("/api/studies")
                break
            except OSError:
                if server.poll() is not None:
                    raise AssertionError(f"optuna-dashboard exited: {server.stderr.read()[-2000:]}") from None
                assert time.time() < deadline, f"optuna-dashboard did not answer in {timeout:g} s"
                time.sleep(0.3)
        yield get
    finally:
        server.terminate()
        server.wait(timeout=10)
