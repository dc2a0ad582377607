"""Shared fixtures: the published reference facts, and a subprocess runner for the CLIs."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from services import REQUIRE, postgres_server, required  # tests/services.py: real servers

from scaling_search.models.reference import load_reference

REPO = Path(__file__).resolve().parent.parent
# Image-folder caches of the tests' folders go to a scratch folder, not the user's ~/.cache
# (set before any test runs, so the CLIs and Ray workers the tests start inherit it).
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="scaling_search_test_cache_")


def pytest_configure(config) -> None:
    """The CLI tests run the installed package (as a user does): it must be this checkout's, or
    they would test another copy (an editable install of another clone) and pass on its code."""
    out = subprocess.run([sys.executable, "-c", "import scaling_search; print(scaling_search.__file__)"],
                         cwd=tempfile.gettempdir(), env={**os.environ, "PYTHONPATH": _pythonpath()},
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:  # not installed (the GPU check puts the checkout on PYTHONPATH instead)
        return
    where = Path(out.stdout.strip()).resolve()
    if REPO not in where.parents:
        raise pytest.UsageError(f"the installed scaling_search is {where}, not this checkout's ({REPO}): "
                                f"run `pip install -e '.[dev]'` in {REPO} first")


@pytest.fixture(scope="session")
def reference() -> dict:
    """../shared/reference/efficientnet.json as packaged in scaling_search/data."""
    return load_reference()


@pytest.fixture
def run_cli(tmp_path):
    """Runs ``python -m <module> <args>`` in a scratch folder; returns the CompletedProcess."""

    def run(module: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": _pythonpath()}  # the installed package, as a user runs it
        env.pop("HYDRA_FULL_ERROR", None)
        return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd or tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)

    return run


PLUGINS = Path(__file__).resolve().parent / "plugins"
sys.path.insert(0, str(PLUGINS))  # user modules named in `imports=[...]`, as a user's would be


def _pythonpath() -> str:
    """PYTHONPATH for a CLI or a Ray worker: the user's modules (tests/plugins), and never the
    repository, so that what runs is the installed package (with the editable install, these
    same files), configs included."""
    inherited = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
                 if p and Path(p).resolve() != REPO]
    return os.pathsep.join([str(PLUGINS), *inherited])


def compose_grid(tmp_path: Path, *overrides: str):
    """GridSettings from the real conf/grid.yaml, composed as the app does, with overrides."""
    from hydra import compose, initialize_config_dir

    from scaling_search.cli import CONF_DIR  # which also registers the config schemas
    from scaling_search.settings import GridSettings

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("grid", overrides=[f"out_dir={tmp_path / 'run'}", *overrides])
    return GridSettings.from_config(cfg)


# A search small enough for a test: a tiny ResNet-18 proxy at 16 px, 3 candidates + baseline.
TINY = ("backbone=resnet18", "proxy.depth_mult=0.5", "proxy.width_mult=0.25", "proxy.resolution_px=16",
        "space=coarse", "space.tolerance=0.02", "trainer.epochs=2")


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session (ray.init costs seconds)."""
    ray = pytest.importorskip("ray")
    os.environ["PYTHONPATH"] = _pythonpath()
    from scaling_search.train.runners.ray_tune import RaySettings, start_ray

    owned = start_ray(RaySettings(num_cpus=2))
    yield ray
    if owned:
        ray.shutdown()



@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL server for the session (tests/services.py), run as an unprivileged
    user on a socket in a temporary folder; ``postgres.create_database(name)`` gives a URL."""
    with postgres_server() as server:
        yield server


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI (SCALING_SEARCH_REQUIRE_SERVICES set), a ``pytest.importorskip`` that skips is a
    failure: a missing component (Ray, Playwright...) must not leave the run green."""
    report = yield
    if (report.skipped and required() and call.excinfo is not None
            and str(call.excinfo.value).startswith("could not import")):
        report.outcome = "failed"
        report.longrepr = f"{call.excinfo.value} ({REQUIRE} is set: in CI every component must be installed)"
    return report
