"""A search on a real multi-node Ray cluster (``ray.cluster_utils.Cluster``: a head and a worker
node, each a raylet with one CPU of its own, on this machine), through the CLI as a user runs it
with ``runner.address=<the cluster>``: the trials land on both nodes, read the image folder
from its path, name the node they ran on, and make the same table as a single-node run.

The cluster runs in a child process with a private Ray temp folder (``RAY_TMPDIR``): Ray records
"the latest cluster on this machine" in ``<temp>/ray_current_cluster``, which every
``ray.init()`` and ``address=auto`` on the machine would otherwise join; and a cluster started in
the test process would reset the Ray state of the session's own local Ray when it shuts down.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY, _pythonpath, compose_grid
from PIL import Image

GRID = "scaling_search.grid"
SAME = ["trial_id", "status", "final_top1", "best_top1", "final_val_loss", "epochs", "resolution_px"]

# Started by the fixture in its own process; prints "<address> <head node id> <worker node id>"
# and keeps the cluster up until its stdin closes.
CLUSTER = """
import sys
from ray.cluster_utils import Cluster

cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
worker = cluster.add_node(num_cpus=1)
print(cluster.address, cluster.head_node.node_id, worker.node_id, flush=True)
sys.stdin.read()
cluster.shutdown()
"""


def write_image_folder(root: Path, classes=("red", "green", "blue"), per_class: int = 40) -> None:
    """Small RGB images, half PNG and half JPEG, whose class is the channel that is brighter."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            x = rng.integers(0, 160, (20, 24, 3), dtype=np.uint8)
            x[..., c] += 90
            Image.fromarray(x).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")


@pytest.fixture(scope="module")
def cluster():
    """A two-node Ray cluster for the module: (address, {node ids}, env for a driver beside it,
    the folder where its workers pair their trials)."""
    pytest.importorskip("ray")
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "PYTHONPATH": _pythonpath(), "RAY_TMPDIR": ray_tmp}
    env.pop("RAY_ADDRESS", None)
    # The cluster's workers (not the drivers) pair their first two trials: tests/plugins/paired_backbone.py
    pair = Path(ray_tmp) / "pair"
    pair.mkdir()
    proc = subprocess.Popen([sys.executable, "-c", CLUSTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**env, "SCALING_SEARCH_TEST_PAIR": str(pair)})
    try:
        line = proc.stdout.readline().split()
        assert len(line) == 3, f"the cluster did not start (exit status {proc.poll()})"
        address, *nodes = line
        yield address, set(nodes), env, pair
    finally:
        proc.stdin.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)


def _grid(env: dict, log: Path, *args: str) -> tuple[subprocess.Popen, Path]:
    """Starts the CLI, its output to ``log`` (not a pipe: two run at once); ``_finished`` waits."""
    with log.open("w") as out:
        return subprocess.Popen([sys.executable, "-m", GRID, *args], cwd=log.parent, env=env, stdout=out,
                                stderr=subprocess.STDOUT), log


def _finished(run: tuple[subprocess.Popen, Path]) -> None:
    proc, log = run
    proc.wait(timeout=300)
    assert proc.returncode == 0, log.read_text()[-3000:]


@pytest.mark.slow
def test_a_search_on_a_two_node_cluster_equals_a_single_node_search(cluster, tmp_path):
    address, nodes, env, pair = cluster
    root = tmp_path / "shared" / "images"  # the path every node reads (one disk here)
    write_image_folder(root)
    # paired_net: ResNet-18 whose first two trials on the cluster wait for each other, so they run
    # at once, on the two one-CPU nodes (Tune may otherwise reuse one actor for every trial).
    config = [*TINY, "imports=[paired_backbone]", "backbone.name=paired_net", "trainer.epochs=1",
              "trainer.num_threads=1", "data=imagefolder", f"data.root={root}",
              f"data.cache_dir={tmp_path / 'cache'}", "runner=ray"]
    # Both at once, for the test's wall time (most of each run is start-up).
    on_cluster = _grid(env, tmp_path / "cluster.log", *config, f"runner.address={address}",
                       f"out_dir={tmp_path / 'cluster'}")
    # The same command with no address: a single-node local Ray, even though the cluster is the
    # one this machine's Ray temp folder records (as after `ray start --head`).
    single = _grid(env, tmp_path / "single.log", *config, "runner.num_cpus=1",
                   f"out_dir={tmp_path / 'single'}")
    try:
        _finished(on_cluster)
        _finished(single)
    finally:
        for proc, _ in (on_cluster, single):
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    on_cluster = pd.read_parquet(tmp_path / "cluster" / "results.parquet")
    assert len(on_cluster) == 4 and (on_cluster["status"] == "ok").all()
    assert len(list(pair.glob("built-*"))) == 4  # the cluster's trials built paired_net there
    assert set(on_cluster["node_id"]) == nodes  # every trial on a node of the cluster, and both used
    assert (on_cluster["node"] == socket.gethostname()).all()
    assert set(pd.read_csv(tmp_path / "cluster" / "results.csv")["node_id"]) == nodes
    single = pd.read_parquet(tmp_path / "single" / "results.parquet")
    assert single["node_id"].nunique() == 1 and not set(single["node_id"]) & nodes
    pd.testing.assert_frame_equal(on_cluster[SAME], single[SAME])
    assert on_cluster["final_top1"].nunique() > 1  # the tables compare real, different accuracies


def test_an_in_process_trial_names_its_host_and_no_ray_node(tmp_path):
    from scaling_search.steps.step1 import run_search

    outcome = run_search(compose_grid(tmp_path, *TINY, "trainer.epochs=1", "data=synthetic",
                                      "data.num_images=200", "runner=local"), io.StringIO())
    results = pd.read_parquet(outcome.run_dir / "results.parquet")
    assert (results["node"] == socket.gethostname()).all()
    assert (results["node_id"] == "").all()


def test_a_trial_the_driver_records_without_its_row_names_its_node():
    pytest.importorskip("ray")
    from scaling_search.train.runners.tune_callback import row_of

    last_report = {"epoch": 1, "val/top1": 0.5, "node": "gpu-7", "node_id": "ab12"}
    stopped, _ = row_of("t", last_report, stopped_early=True)
    failed, _ = row_of("t", last_report, error="the Ray trial crashed")
    for row in (stopped, failed):
        assert (row["node"], row["node_id"]) == ("gpu-7", "ab12")
    assert row_of("t", None, error="lost")[0]["node_id"] == ""  # it never reported
