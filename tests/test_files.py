"""files.py: outputs appear whole or not at all."""

import pytest

from scaling_search.files import atomic_write_text, staged_directory


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a" / "x.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert [p.name for p in path.parent.iterdir()] == ["x.txt"]


def test_staged_directory_replaces_the_old_folder_on_success(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old run")
    with staged_directory(out) as stage:
        (stage / "new.txt").write_text("new run")
        assert not (out / "new.txt").exists()  # nothing visible until the block succeeds
    assert sorted(p.name for p in out.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no staging or old folders


def test_staged_directory_keeps_the_old_folder_on_failure(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old run")
    with pytest.raises(RuntimeError):
        with staged_directory(out) as stage:
            (stage / "half.txt").write_text("half")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_staged_directory_creates_nothing_on_failure(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with staged_directory(tmp_path / "new"):
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_plain_makes_settings_yaml_ready():
    from fractions import Fraction
    from pathlib import Path

    from scaling_search.files import plain

    assert plain({"step": Fraction(1, 20), "out": Path("/r/x"), "phis": (1.0, 2.0)}) == {
        "step": 0.05, "out": "/r/x", "phis": [1.0, 2.0]}
