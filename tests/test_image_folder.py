"""Image folders at any size: the disk cache, its key, bad files, and the feeds that read it.

Every test writes real JPEG/PNG files and reads them with the real loaders; the expected
pixels come from Pillow and torchvision applied independently to the same files.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from scaling_search.settings import DataSettings, TrainSettings
from scaling_search.train.data import FolderData, load_dataset, num_classes_of, train_image_count
from scaling_search.train.feed import LoaderFeed, make_feed
from scaling_search.train.image_folder import ImageFolderError, ensure_cache, scan
from scaling_search.train.trainer import train


def write_folder(root: Path, classes=("cat", "dog", "fox"), per_class=4, size=(40, 30), fmt="png",
                 seed=0) -> list[Path]:
    """Class folders of real images (smooth gradients plus noise, so resizing matters)."""
    rng, paths = np.random.default_rng(seed), []
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w, h = size
            ramp = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3))
            img = (0.6 * ramp + 0.4 * rng.integers(0, 256, (h, w, 3))).astype(np.uint8)
            img[..., k % 3] //= 2  # a colour cast per class
            p = root / c / f"{i}.{fmt}"
            Image.fromarray(img).save(p, quality=90) if fmt == "jpg" else Image.fromarray(img).save(p)
            paths.append(p)
    return paths


def settings(root: Path, cache: Path, **kw) -> DataSettings:
    return DataSettings("imagefolder", root=str(root), cache_dir=str(cache), transforms=kw.pop("transforms", "crop"),
                        flip=True, **kw)


def test_the_cache_holds_each_image_as_torchvision_resizes_and_crops_it(tmp_path, capsys):
    paths = write_folder(tmp_path / "imgs", size=(40, 30))
    data = load_dataset(settings(tmp_path / "imgs", tmp_path / "cache", val_fraction=0.25), max_resolution_px=21)
    assert isinstance(data, FolderData) and data.num_classes == 3
    c = data.cache
    assert c.px == 24  # ceil(21 / 0.875): the validation resize of the largest trial
    assert len(c.train_rows) == 9 and len(c.val_rows) == 3
    assert sorted(c.train_labels + c.val_labels) == [0] * 4 + [1] * 4 + [2] * 4
    from torchvision.transforms import functional as TF

    images, chosen = c.read_all(), scan(settings(tmp_path / "imgs", tmp_path / "cache", val_fraction=0.25))
    for row, (rel, _) in enumerate(chosen.train + chosen.val):
        with Image.open(Path(chosen.root) / rel) as im:
            want = np.asarray(TF.center_crop(TF.resize(im.convert("RGB"), 24), 24)).transpose(2, 0, 1)
        assert np.array_equal(images[row].numpy(), want)
    assert {Path(chosen.root) / rel for rel, _ in chosen.train + chosen.val} == set(paths)
    assert "decoding 12 images" in capsys.readouterr().out


def test_a_rerun_reuses_the_cache_and_any_change_to_the_files_rebuilds_it(tmp_path, capsys):
    paths = write_folder(tmp_path / "imgs")
    s = settings(tmp_path / "imgs", tmp_path / "cache")
    first = load_dataset(s, 16).cache
    capsys.readouterr()
    assert load_dataset(s, 16).cache == first  # a second search on the same folder
    assert "decoding" not in capsys.readouterr().out
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(paths[0])  # changed
    changed = load_dataset(s, 16).cache
    assert changed.path != first.path and "decoding 12 images" in capsys.readouterr().out
    chosen = scan(s)
    row = [rel for rel, _ in chosen.train + chosen.val].index("cat/0.png")
    assert not changed.read_all()[row].any() and first.read_all()[row].any()  # the new bytes; the old kept
    write_folder(tmp_path / "imgs", classes=("cat",), per_class=5, seed=1)  # one added (cat/4.png)
    assert load_dataset(s, 16).cache.count == 13
    paths[1].unlink()  # one removed
    assert load_dataset(s, 16).cache.count == 12
    assert load_dataset(s, 32).cache.px == 37  # another storage size is another cache


def _build(root: str, cache: str, queue) -> None:
    import io

    out = io.StringIO()
    c = ensure_cache(scan(DataSettings("imagefolder", root=root, cache_dir=cache)), 24, cache, 1, out)
    queue.put((c.path, out.getvalue()))


def test_two_processes_building_one_cache_at_once_build_it_once(tmp_path):
    write_folder(tmp_path / "imgs", per_class=30, size=(120, 90), fmt="jpg")
    fork = multiprocessing.get_context("fork")
    queue = fork.Queue()
    procs = [fork.Process(target=_build, args=(str(tmp_path / "imgs"), str(tmp_path / "cache"), queue))
             for _ in range(2)]
    for p in procs:
        p.start()
    got = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert got[0][0] == got[1][0]
    assert sum("decoding 90 images" in text for _, text in got) == 1  # the other waited, then read it
    folder = Path(got[0][0]).parent
    assert sorted(p.name for p in folder.iterdir()) == ["build.lock", "images.u8", "meta.json"]
    assert os.path.getsize(got[0][0]) == 90 * 3 * 24 * 24


def test_a_build_killed_half_way_is_never_read_as_complete(tmp_path):
    """The images file and its metadata are renamed into place, metadata last."""
    write_folder(tmp_path / "imgs")
    s = settings(tmp_path / "imgs", tmp_path / "cache")
    folder = Path(load_dataset(s, 16).cache.path).parent
    (folder / "meta.json").unlink()  # as if killed between the two renames
    (folder / "images.u8").write_bytes(b"half")
    cache = load_dataset(s, 16).cache
    assert os.path.getsize(cache.path) == 12 * 3 * 19 * 19


def test_a_corrupt_or_truncated_image_is_skipped_with_a_line_naming_it(tmp_path, capsys):
    paths = write_folder(tmp_path / "imgs", per_class=4, size=(64, 48), fmt="jpg")
    paths[0].write_bytes(paths[0].read_bytes()[:200])  # truncated
    paths[5].write_bytes(b"not an image at all")
    data = load_dataset(settings(tmp_path / "imgs", tmp_path / "cache", val_fraction=0.25), 16)
    out = capsys.readouterr().out
    assert f"skipped {paths[0]}" in out and f"skipped {paths[5]}" in out
    assert len(data.cache.train_rows) + len(data.cache.val_rows) == 10
    assert set(data.cache.skipped) == {str(p.relative_to(tmp_path / "imgs")) for p in (paths[0], paths[5])}
    meta = json.loads((Path(data.cache.path).parent / "meta.json").read_text())
    assert len(meta["skipped"]) == 2


def test_a_class_left_with_no_decodable_image_is_refused(tmp_path):
    paths = write_folder(tmp_path / "imgs", per_class=2)
    for p in paths[:2]:
        p.write_bytes(b"broken")
    with pytest.raises(ImageFolderError, match="class 'cat' .* has no decodable training image"):
        load_dataset(settings(tmp_path / "imgs", tmp_path / "cache", val_fraction=0.25), 16)


def test_an_unreadable_file_stops_the_run_naming_it(tmp_path):
    write_folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "dog" / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    with pytest.raises(ImageFolderError, match=r"cannot read .*dog/gone\.jpg.*: No such file"):
        load_dataset(settings(tmp_path / "imgs", tmp_path / "cache"), 16)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("images.u8"))


@pytest.mark.parametrize("make, message", [
    (lambda r: write_folder(r, classes=("cat",)), r"has one class folder \(cat\); a classifier needs at least 2"),
    (lambda r: (write_folder(r), (r / "emu").mkdir()), r"class folder .*emu' has no images"),
    (lambda r: (write_folder(r / "train"), write_folder(r / "val", classes=("cat", "dog", "emu"))),
     r"different class folders \(only in train: fox; only in val: emu\)"),
    (lambda r: r.mkdir(), "has no class sub-folders"),
])
def test_a_folder_that_cannot_train_a_classifier_is_refused(tmp_path, make, message):
    make(tmp_path / "imgs")
    with pytest.raises(ImageFolderError, match=message):
        num_classes_of(settings(tmp_path / "imgs", tmp_path / "cache"))


def test_num_images_is_honoured_with_train_and_val_folders(tmp_path):
    write_folder(tmp_path / "ds" / "train", per_class=10)
    write_folder(tmp_path / "ds" / "val", per_class=4)
    s = settings(tmp_path / "ds", tmp_path / "cache", num_images=20, val_fraction=0.25)
    data = load_dataset(s, 16)
    assert len(data.cache.train_rows) == 15 == train_image_count(s) and len(data.cache.val_rows) == 5
    everything = settings(tmp_path / "ds", tmp_path / "cache")
    assert train_image_count(everything) == 30 and len(load_dataset(everything, 16).cache.val_rows) == 12


def test_the_mode_follows_the_memory_budget_or_the_override(tmp_path):
    write_folder(tmp_path / "imgs")
    root, cache = tmp_path / "imgs", tmp_path / "cache"
    assert load_dataset(settings(root, cache), 16).in_memory  # 12 images: far below 2 GB
    tiny = 12 * 3 * 19 * 19 / 2**30  # the cache's bytes, just under what the trial would hold
    assert not load_dataset(settings(root, cache, memory_budget_gb=tiny * 0.99), 16).in_memory
    assert load_dataset(settings(root, cache, memory_budget_gb=tiny * 0.99, mode="memory"), 16).in_memory
    assert not load_dataset(settings(root, cache, mode="stream"), 16).in_memory


def _batches(data, gen_seed, px=16, workers=None):
    if workers is not None:
        data = FolderData(data.name, data.cache, data.transforms, data.flip, data.in_memory, workers)
    feed = make_feed(data, px, 4, 5, torch.device("cpu"))
    gen = torch.Generator().manual_seed(gen_seed)
    return feed, [x for x, _ in feed.train_batches(gen)], [x for x, _ in feed.val_batches()]


def test_streamed_and_in_memory_feeds_give_the_same_batches_for_a_seed(tmp_path):
    write_folder(tmp_path / "imgs", per_class=6)
    root, cache = tmp_path / "imgs", tmp_path / "cache"
    streamed = load_dataset(settings(root, cache, mode="stream"), 16)
    held = load_dataset(settings(root, cache, mode="memory"), 16)
    feed, train_a, val_a = _batches(streamed, 7, workers=2)
    assert isinstance(feed, LoaderFeed) and len(train_a) == feed.steps_per_epoch == 3
    _, train_b, val_b = _batches(held, 7, workers=2)
    _, train_c, _ = _batches(streamed, 8, workers=2)
    assert all(torch.equal(a, b) for a, b in zip(train_a, train_b, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(val_a, val_b, strict=True))
    assert not all(torch.equal(a, c) for a, c in zip(train_a, train_c))  # another seed, other crops
    assert train_a[0].shape == (4, 3, 16, 16) and train_a[0].dtype == torch.float32


def test_validation_is_resize_to_resolution_over_0_875_then_centre_crop(tmp_path):
    from torchvision.transforms import v2

    write_folder(tmp_path / "imgs", per_class=2)
    data = load_dataset(settings(tmp_path / "imgs", tmp_path / "cache", mode="stream", val_fraction=0.5), 28)
    _, _, val = _batches(data, 0, px=28, workers=0)
    c = data.cache
    raw = c.read_all()[list(c.val_rows)]
    want = v2.CenterCrop(28)(v2.Resize(32, antialias=True)(raw)).float()  # round(28 / 0.875) = 32
    mean, std = torch.tensor(c.mean).view(1, 3, 1, 1), torch.tensor(c.std).view(1, 3, 1, 1)
    assert torch.allclose(torch.cat(val), (want / 255 - mean) / std, atol=1e-4)


def test_training_crops_are_random_resized_crops_of_the_cached_image(tmp_path):
    """Flat-coloured images: every crop of one is that colour, whatever its box and flip."""
    root = tmp_path / "imgs"
    for k, c in enumerate(("red", "green")):
        (root / c).mkdir(parents=True)
        for i in range(4):
            colour = np.zeros((50, 70, 3), np.uint8)
            colour[..., k] = 40 + 50 * i
            Image.fromarray(colour).save(root / c / f"{i}.png")
    data = load_dataset(settings(root, tmp_path / "cache", mode="stream", val_fraction=0.25), 12)
    feed = make_feed(data, 12, 6, 6, torch.device("cpu"))
    mean, std = torch.tensor(data.cache.mean).view(1, 3, 1, 1), torch.tensor(data.cache.std).view(1, 3, 1, 1)
    (x, y), = list(feed.train_batches(torch.Generator().manual_seed(0)))
    pixels = ((x * std + mean) * 255).round()
    assert x.shape == (6, 3, 12, 12)
    assert torch.equal(pixels.amax(dim=(2, 3)), pixels.amin(dim=(2, 3)))  # flat: a crop of one colour
    assert set(pixels[:, 2].unique().tolist()) == {0.0}


def test_a_streamed_trial_trains_resumes_and_repeats_exactly(tmp_path):
    write_folder(tmp_path / "imgs", per_class=8, size=(48, 40), fmt="jpg")
    data = load_dataset(settings(tmp_path / "imgs", tmp_path / "cache", mode="stream", workers=2), 16)
    from scaling_search.models.backbones import get_backbone
    from scaling_search.models.scaling import Multipliers, Rounding

    def model():
        torch.manual_seed(0)
        return get_backbone("resnet18").scale(Multipliers(0.5, 0.25, 1), Rounding(), 16).build(3)

    s = TrainSettings(epochs=2, batch_size=4, num_threads=1)
    states = []
    full = train(model(), data, 16, s, seed=3, on_epoch=lambda m, state: states.append(copy.deepcopy(state())))
    again = train(model(), data, 16, s, seed=3)
    resumed = train(model(), data, 16, s, seed=3, state=states[0])
    losses = [h["train/loss"] for h in full.history]
    assert losses == [h["train/loss"] for h in again.history] == [h["train/loss"] for h in resumed.history]
    assert full.final_top1 == resumed.final_top1 and all(np.isfinite(losses))


@pytest.mark.slow
def test_paper_step1_runs_on_a_generated_folder_on_a_cpu(tmp_path, run_cli):
    """The cluster preset, CI-sized by overrides only: B0 at 32 px, 3 candidates, 1 epoch, no GPU."""
    import pandas as pd

    write_folder(tmp_path / "imgs", classes=("a", "b", "c", "d"), per_class=20, size=(64, 48), fmt="jpg")
    got = run_cli("scaling_search.grid", "experiment=paper_step1", f"data.root={tmp_path / 'imgs'}",
                  "runner.gpus_per_trial=0", "runner.cpus_per_trial=1", "proxy.resolution_px=32",
                  "space=coarse", "space.tolerance=0.02", "seeds_per_candidate=1", "trainer.epochs=1",
                  "runner.asha=false",  # one epoch: nothing for ASHA to stop (refused with it on)
                  "trainer.batch_size=16", f"out_dir={tmp_path / 'run'}", "report=false")
    assert got.returncode == 0, got.stderr[-3000:]
    assert "64 training and 16 validation images at 44 px, held in memory" in got.stdout
    results = pd.read_csv(tmp_path / "run" / "results.csv")
    assert len(results) == 4 and set(results["status"]) == {"ok"}
    assert (tmp_path / "run" / "coefficients.yaml").is_file()


def test_a_node_without_the_cache_builds_its_own_copy(tmp_path, capsys):
    """A cluster node's data.cache_dir is its own disk: the first trial there decodes it again."""
    import shutil

    write_folder(tmp_path / "imgs")
    data = load_dataset(settings(tmp_path / "imgs", tmp_path / "cache", mode="stream"), 16)
    shutil.rmtree(tmp_path / "cache")  # what another node's disk looks like
    capsys.readouterr()
    feed = make_feed(data, 16, 4, 4, torch.device("cpu"))
    assert "decoding 12 images" in capsys.readouterr().out
    assert len(list(feed.val_batches())) == 1 and Path(data.cache.path).is_file()


def test_the_cache_decodes_with_a_few_threads_by_default(tmp_path, capsys, monkeypatch):
    import scaling_search.train.image_folder as imf

    write_folder(tmp_path / "imgs", per_class=2)
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    ensure_cache(scan(settings(tmp_path / "imgs", tmp_path / "cache")), 16, str(tmp_path / "cache"))
    assert f"({imf.DECODE_THREADS} threads," in capsys.readouterr().out and imf.DECODE_THREADS == 4


def test_a_file_gone_before_decoding_stops_the_build_naming_it(tmp_path):
    import scaling_search.train.image_folder as imf

    write_folder(tmp_path / "imgs", per_class=3)
    chosen = scan(settings(tmp_path / "imgs", tmp_path / "cache"))
    (tmp_path / "imgs" / chosen.train[2][0]).unlink()  # listed, then deleted
    (tmp_path / "c").mkdir()
    with pytest.raises(ImageFolderError, match=rf"cannot read .*{chosen.train[2][0]}.*No such file"):
        imf._build(chosen, 16, tmp_path / "c", 2, open(os.devnull, "w"))
    assert not (tmp_path / "c" / "meta.json").exists()


@pytest.mark.parametrize("damage", ["truncated", "zeroed"])
def test_a_damaged_cache_is_named_and_decoded_again(tmp_path, capsys, damage):
    write_folder(tmp_path / "imgs", per_class=4)
    data = load_dataset(settings(tmp_path / "imgs", tmp_path / "cache"), 16)
    path = Path(data.cache.path)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2] if damage == "truncated" else bytes(len(good)))
    capsys.readouterr()
    again = load_dataset(settings(tmp_path / "imgs", tmp_path / "cache"), 16)
    out = capsys.readouterr().out
    assert f"image cache {path.parent} is damaged (" in out and "decoding it again" in out
    assert ("bytes" in out) if damage == "truncated" else ("sampled rows' digest" in out)
    assert Path(again.cache.path).read_bytes() == good
    load_dataset(settings(tmp_path / "imgs", tmp_path / "cache"), 16)
    assert "decoding it again" not in capsys.readouterr().out  # a sound cache is read as it is
