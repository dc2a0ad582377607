"""``python -m scaling_search.grid`` as a user runs it: dry run, bad input, and --multirun."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY

from scaling_search.cli import _overrides, preflight, user_errors
from scaling_search.grid import validate
from scaling_search.train.execution import RunFailed

GRID = "scaling_search.grid"


def _one_line_error(result, *needles):
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"{GRID}: error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def test_dry_run_lists_every_candidate_and_writes_nothing(run_cli, tmp_path):
    r = run_cli(GRID, "dry_run=true", "space=paper", f"out_dir={tmp_path / 'run'}")
    assert r.returncode == 0, r.stderr
    summary = [line for line in r.stdout.splitlines() if "candidates (" in line][0]
    kept, merged = int(summary.split()[0]), int(summary.split("(")[1].split()[0])
    assert kept + merged == 109
    assert "d1.20_w1.10_r1.15" in r.stdout or "d1.20_w1.10_r1.15" in r.stdout.replace("|", " ")
    assert "train_macs" in r.stdout
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, needles", [
    (("space.step=0.5", "space.target=2.6", "space.tolerance=0.01"), ("nearest products", "2.25")),
    (("data=imagefolder", "data.root=/no/such/folder"), ("/no/such/folder",)),
    (("data=cifar10", "data.root=/no/such/folder"), ("cifar-10-batches-py",)),
    (("data=cifar10",), ("data.root must name the folder holding cifar10",)),
    (("data=imagenet",), ("data/imagenet",)),
    (("backbone=nosuchnet",), ("backbone/nosuchnet",)),
    (("backbone.name=nosuchnet",), ("unknown backbone 'nosuchnet'", "efficientnet_b0")),
    (("trainer.epochs=0",), ("trainer.epochs",)),
    (("runner.kind=slurm",), ("runner.kind",)),
    (("imports=[no_such_module]",), ("no_such_module",)),
    (("study.storage=optuna.db",), ("study.storage must be an SQLAlchemy URL",)),
    (("study.storage=postgresql+psycopg2://nobody@127.0.0.1:1/none", "runner=local"),
     ("cannot open the Optuna storage",)),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(run_cli, tmp_path, args, needles):
    r = run_cli(GRID, *args, f"out_dir={tmp_path / 'run'}")
    _one_line_error(r, *needles)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("args, message", [
    (("seed=abc",), "seed: Value 'abc' of type 'str' could not be converted to Integer"),
    (("trainer.epochs=1.5",), "trainer.epochs: Value '1.5' of type 'float' could not be converted to Integer"),
    (("runner.cpus_per_trial=x",), "runner.cpus_per_trial: Value 'x' of type 'str' could not be converted to Float"),
    (("dry_run=maybe",), "dry_run must be true or false, got 'maybe'"),
    (("dry_run=2",), "dry_run must be true or false, got 2"),  # OmegaConf alone reads it as true
    (("include_baseline=0.5",), "include_baseline must be true or false, got 0.5"),
    (("trainer.foo=1",), "Could not override 'trainer.foo'. To append to your config use +trainer.foo=1"),
    (("+trainer.foo=1",), "trainer.foo: Key 'foo' not in 'TrainConfig'"),
    (("+foo=1",), "Key 'foo' not in 'GridConfig'"),
    # runner settings were not checked where gpus_per_trial is null, the default
    (("runner.max_concurrent=0",), "runner.max_concurrent must be a positive integer, got 0"),
    (("runner.asha=true", "runner.reduction_factor=1"), "runner.reduction_factor must be >= 2, got 1"),
])
def test_the_schema_and_the_settings_name_the_bad_key(capsys, tmp_path, args, message):
    """The preflight as the app runs it, in this process: one line, exit status 2."""
    with pytest.raises(SystemExit) as e:
        preflight(GRID, "grid", ["dry_run=true", *args, f"out_dir={tmp_path / 'run'}"], validate)
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines() == [f"{GRID}: error: {message}"]


@pytest.mark.parametrize("argv, overrides", [
    (["seed=1", "data=synthetic"], ["seed=1", "data=synthetic"]),
    (["--multirun", "seed=0,1", "-m"], ["seed=0,1"]),
    (["--cfg", "job", "seed=1"], None),  # Hydra's own modes: Hydra answers them
    (["--info"], None),
    (["-h"], None),
    (["--config-name", "mine", "seed=1"], None),  # another config: the app's own run checks it
    (["-cd", "/my/conf", "seed=1"], None),
])
def test_the_preflight_reads_the_command_line_as_hydra_does(argv, overrides):
    assert _overrides(argv) == overrides


def _exit(capsys, error: BaseException) -> tuple[int, list[str]]:
    """``error`` raised inside ``user_errors``: (exit status, stderr lines)."""
    with pytest.raises(SystemExit) as e, user_errors(GRID):
        raise error
    return e.value.code, capsys.readouterr().err.splitlines()


def test_a_failed_run_is_one_line_and_exit_status_1(capsys):
    """Every trial failed: not bad input (status 2), but no result either (status 0)."""
    code, lines = _exit(capsys, RunFailed("every one of the 4 trials failed (first error: Diverged); "
                                          "nothing was frozen"))
    assert code == 1
    assert lines == [f"{GRID}: error: every one of the 4 trials failed (first error: Diverged); "
                     "nothing was frozen"]


def test_a_file_system_error_is_one_line_naming_the_path(capsys, tmp_path):
    with pytest.raises(SystemExit) as e, user_errors(GRID):
        (tmp_path / "run" / "trials.json").write_text("{}")  # a real OSError: the folder is missing
    assert e.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{GRID}: error: No such file or directory: {str(tmp_path / 'run' / 'trials.json')!r}"]
    rename = PermissionError(13, "Permission denied", "/runs/a", None, "/runs/b")  # as os.rename raises it
    code, lines = _exit(capsys, rename)
    assert (code, lines) == (2, [f"{GRID}: error: Permission denied: '/runs/a' -> '/runs/b'"])
    disk_full = OSError(28, "No space left on device", "/runs/a/results.csv")
    code, lines = _exit(capsys, disk_full)  # not bad input: status 1
    assert (code, lines) == (1, [f"{GRID}: error: No space left on device: '/runs/a/results.csv'"])


@pytest.mark.slow
def test_a_search_whose_every_trial_diverged_exits_1_with_one_line(run_cli, tmp_path):
    r = run_cli(GRID, *TINY, "trainer.epochs=1", "runner=local", "trainer.lr=1e6", "report=false",
                f"out_dir={tmp_path / 'run'}")
    assert r.returncode == 1, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1].startswith(f"{GRID}: error: every one of the ") and "nothing was frozen" in lines[-1]
    assert not (tmp_path / "run" / "coefficients.yaml").exists()


def test_other_errors_keep_their_traceback():
    with pytest.raises(KeyError), user_errors(GRID):
        raise KeyError("a bug, not bad input")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without GPU")
def test_gpus_requested_without_a_gpu(run_cli, tmp_path):
    r = run_cli(GRID, "runner.gpus_per_trial=0.25", f"out_dir={tmp_path / 'run'}")
    _one_line_error(r, "gpus_per_trial=0.25", "no CUDA GPU")
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_multirun_summarises_the_winners_across_jobs(run_cli, tmp_path):
    r = run_cli(GRID, "--multirun", "seed=0,1", *TINY, "trainer.epochs=1", "runner=local",
                f"hydra.sweep.dir={tmp_path / 'sweep'}", f"out_dir={tmp_path}/runs/s${{seed}}")
    assert r.returncode == 0, r.stderr[-3000:]
    summary = (tmp_path / "sweep" / "multirun_summary.md").read_text()
    assert summary.count("| resnet18 ") == 2
    assert "data=digits:" in summary and "across seed" in summary
    for seed in (0, 1):
        assert (tmp_path / "runs" / f"s{seed}" / "coefficients.yaml").is_file()
        assert (tmp_path / "runs" / f"s{seed}" / "report.html").is_file()
    report = (tmp_path / "sweep" / "report.html").read_text()  # one page for the whole sweep
    assert report.count('<details class="job"') == 2 and str(tmp_path / "runs" / "s1") in report


@pytest.mark.slow
def test_a_failed_job_does_not_stop_the_sweep_and_the_sweep_exits_with_its_status(run_cli, tmp_path):
    """The first job diverges in every trial (exit 1 alone); the second still runs, the summary
    names the failed job, and the sweep exits 1 with no traceback."""
    r = run_cli(GRID, "--multirun", "trainer.lr=1e6,0.05", *TINY, "trainer.epochs=1", "runner=local", "report=false",
                f"hydra.sweep.dir={tmp_path / 'sweep'}", f"out_dir={tmp_path}/runs/lr${{trainer.lr}}")
    assert r.returncode == 1, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    assert (tmp_path / "runs" / "lr0.05" / "coefficients.yaml").is_file()
    assert not (tmp_path / "runs" / "lr1000000.0" / "coefficients.yaml").exists()
    last = r.stderr.strip().splitlines()[-2:]
    assert last[0].startswith("job trainer.lr=1000000.0 failed: every one of the ")
    assert last[1] == "1 of 2 jobs failed; the others ran to their end"
    summary = (tmp_path / "sweep" / "multirun_summary.md").read_text()
    assert summary.count("| resnet18 ") == 1 and "job trainer.lr=1000000.0 failed" in summary


@pytest.mark.slow
def test_a_bad_value_late_in_a_sweep_fails_before_the_first_job(run_cli, tmp_path):
    r = run_cli(GRID, "--multirun", "trainer.epochs=1,0", *TINY[:-1], "runner=local",
                f"hydra.sweep.dir={tmp_path / 'sweep'}", f"out_dir={tmp_path}/runs/e${{trainer.epochs}}")
    _one_line_error(r, "trainer.epochs")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_hydras_own_output_in_the_out_dir_is_not_a_users_file(run_cli, tmp_path):
    """With hydra.run.dir at the out_dir and hydra.output_subdir set, Hydra writes .hydra/ there
    before the search starts: the folder is still the search's own, not a user's."""
    out = tmp_path / "run"
    r = run_cli(GRID, *TINY, "trainer.epochs=1", "data.num_images=200", "runner=local", "report=false",
                f"out_dir={out}", f"hydra.run.dir={out}", "hydra.output_subdir=.hydra")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / ".hydra" / "config.yaml").is_file() and (out / "coefficients.yaml").is_file()


def test_paper_preset_dry_runs_on_a_machine_without_gpu(run_cli, tmp_path):
    """experiment=paper_step1 composes (B0 at 224 px, the 109-point grid, 3 seeds) and a dry run
    needs neither the GPUs it asks for nor a decoded dataset."""
    for c in ("cat", "dog"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(5):
            (tmp_path / "imgs" / c / f"{i}.jpg").write_bytes(b"")  # counted, never decoded
    r = run_cli(GRID, "experiment=paper_step1", f"data.root={tmp_path / 'imgs'}", "dry_run=true",
                f"out_dir={tmp_path / 'run'}")
    assert r.returncode == 0, r.stderr
    summary = [line for line in r.stdout.splitlines() if "candidates (" in line][0]
    kept, merged = int(summary.split()[0]), int(summary.split("(")[1].split()[0])
    assert kept + merged == 109 and "3 seed(s)" in summary and "~8 training images" in summary
    header = next(line for line in r.stdout.splitlines() if line.startswith("| candidate_id"))
    baseline = next(line for line in r.stdout.splitlines() if "| baseline " in line)
    columns = [c.strip() for c in header.strip("|").split("|")]
    row = dict(zip(columns, (c.strip() for c in baseline.strip("|").split("|"))))
    # B0 itself at 224 px: 385,814,752 MACs with 1,000 classes (pinned to pycls in test_reference),
    # less the classifier's 1,280 multiply-adds for each of the 998 classes this folder lacks.
    assert row["resolution_px"] == "224"
    assert int(row["macs"].replace(",", "")) == 385_814_752 - 998 * 1280
    assert not (tmp_path / "run").exists()
