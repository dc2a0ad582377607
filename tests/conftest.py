"""Shared fixtures: the published reference facts, and a subprocess runner for the CLIs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from scaling_search.reference import load_reference

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def reference() -> dict:
    """../shared/reference/efficientnet.json as packaged in scaling_search/data."""
    return load_reference()


@pytest.fixture
def run_cli(tmp_path):
    """Runs ``python -m <module> <args>`` in a scratch folder; returns the CompletedProcess."""

    def run(module: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        env.pop("HYDRA_FULL_ERROR", None)
        return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd or tmp_path,
                              env=env, capture_output=True, text=True, timeout=300)

    return run
