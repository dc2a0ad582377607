"""A built wheel carries the configs, and the apps run from a non-editable install of it.

The wheel is built from a copy of the sources (the repository is left as it is), installed
into a folder of its own, and both apps dry-run from a folder outside the repository with that
install first on the path; each run first says which ``scaling_search`` it imported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

from scaling_search.cli import CONF_DIR

pytestmark = pytest.mark.slow  # builds and installs a wheel: about 15 s

# ``python -m MODULE ARGS`` (runpy does what -m does), after printing where the package came from.
RUN_MODULE = ("import runpy, sys, scaling_search; print('imported', scaling_search.__file__, flush=True); "
              "module = sys.argv[1]; sys.argv = [module, *sys.argv[2:]]; "
              "runpy.run_module(module, run_name='__main__', alter_sys=True)")


def _pip(*args: str, cwd: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", *args, "--no-deps", "--no-index", "--quiet"],
                       cwd=cwd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """``pip wheel`` of a copy of the sources, offline, with this environment's setuptools."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "scaling_search", src / "scaling_search",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    _pip("wheel", "--no-build-isolation", "-w", str(out), str(src), cwd=src)
    (path,) = out.glob("scaling_search-*.whl")
    return path


@pytest.fixture(scope="module")
def site(wheel, tmp_path_factory) -> Path:
    """The wheel installed, not editable, into a folder of its own."""
    site = tmp_path_factory.mktemp("site")
    _pip("install", "--target", str(site), str(wheel), cwd=site)
    return site


def test_the_wheel_carries_every_config_and_the_reference_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"scaling_search/conf/{p.relative_to(CONF_DIR).as_posix()}" for p in CONF_DIR.rglob("*.yaml")}
    assert {"scaling_search/conf/grid.yaml", "scaling_search/conf/scale.yaml",
            "scaling_search/conf/backbone/efficientnet_b0.yaml"} <= configs
    assert configs <= names, sorted(configs - names)
    assert "scaling_search/models/efficientnet_reference.json" in names


@pytest.mark.parametrize("module, args, expected", [
    ("scaling_search.grid", ["dry_run=true"], "candidates ("),
    ("scaling_search.scale", ["dry_run=true", "phis=[0,1]"], "5 networks"),
])
def test_the_apps_run_from_the_installed_wheel_outside_the_repository(site, tmp_path, module, args, expected):
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("HYDRA_FULL_ERROR", None)
    r = subprocess.run([sys.executable, "-c", RUN_MODULE, module, *args, f"out_dir={tmp_path / 'out'}"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    imported = Path(r.stdout.splitlines()[0].removeprefix("imported "))
    assert imported == site / "scaling_search" / "__init__.py"  # the wheel's copy, not the repository's
    assert expected in r.stdout
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
