"""Datasets (data.py): the built-in ones, and the CIFAR and ImageFolder loaders on files made here.

The CIFAR files are written in the published format of the CIFAR "python version" (pickled
dicts with ``data`` as N x 3072 uint8 rows, channel-major, and ``labels`` / ``fine_labels``),
and read back through torchvision's own CIFAR classes.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from scaling_search.train.data import DataSettings, load_dataset, make_synthetic, num_classes_of


def test_digits_are_sklearns_1797_images_split_by_seed():
    a = load_dataset(DataSettings("digits", split_seed=0))
    b = load_dataset(DataSettings("digits", split_seed=0))
    c = load_dataset(DataSettings("digits", split_seed=1))
    assert len(a.train_labels) + len(a.val_labels) == 1797
    assert a.num_classes == 10 and a.train_images.shape[1:] == (3, 8, 8)
    assert a.train_images.dtype == torch.uint8 and int(a.train_images.max()) == 255
    assert len(a.val_labels) == round(1797 * 0.2)
    assert torch.equal(a.val_images, b.val_images)
    assert not torch.equal(a.val_labels, c.val_labels)


def test_synthetic_is_deterministic_balanced_and_64px():
    x1, y1 = make_synthetic(200, 64, seed=3)
    x2, y2 = make_synthetic(200, 64, seed=3)
    x3, _ = make_synthetic(200, 64, seed=4)
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)
    assert x1.shape == (200, 3, 64, 64) and x1.dtype == torch.uint8
    assert torch.bincount(y1, minlength=10).tolist() == [20] * 10


def _vertical_detail(x: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between vertical neighbours: a checkerboard has it, stripes not."""
    x = x.float().mean(1)
    return (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean(dim=(1, 2))


def test_synthetic_fine_detail_needs_resolution():
    # The texture (class // 5) is a 2-px checkerboard or 2-px vertical stripes. At 64 px the
    # checkerboard adds vertical detail that stripes lack; shrunk to 16 px both average to grey.
    from scaling_search.train.data import ImageData

    x, y = make_synthetic(400, 64, seed=0)
    data = ImageData("synthetic", x, y, x[:1], y[:1], 10)
    stripes, checker = y // 5 == 1, y // 5 == 0

    def gap(images):
        e = _vertical_detail(images)
        return float((e[checker].mean() - e[stripes].mean()) / e.mean())

    assert gap(x) > 0.5
    assert abs(gap(data.at_resolution(16)[0])) < gap(x) / 10


def test_at_resolution_resizes_and_normalises():
    data = load_dataset(DataSettings("digits"))
    train, val = data.at_resolution(24)
    assert train.shape[1:] == (3, 24, 24) and val.shape[1:] == (3, 24, 24)
    assert train.dtype == torch.float32
    assert train.mean(dim=(0, 2, 3)).abs().max() < 0.05
    # Statistics come from the native 8-px images; upsampling smooths, so std is a little below 1.
    assert ((train.std(dim=(0, 2, 3)) > 0.8) & (train.std(dim=(0, 2, 3)) < 1.05)).all()


def _write_cifar(root, name: str, n_train: int = 60, n_test: int = 20) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(0)
    folder, label_key, classes = (("cifar-10-batches-py", "labels", 10) if name == "cifar10"
                                  else ("cifar-100-python", "fine_labels", 100))
    (root / folder).mkdir(parents=True)
    all_x, all_y = [], []
    files = ([f"data_batch_{i}" for i in range(1, 6)] if name == "cifar10" else ["train"])
    for f in files:
        x = rng.integers(0, 256, (n_train // len(files), 3072), dtype=np.uint8)
        y = rng.integers(0, classes, len(x)).tolist()
        all_x.append(x)
        all_y += y
        with open(root / folder / f, "wb") as fh:
            pickle.dump({"data": x, label_key: y}, fh)
    with open(root / folder / ("test_batch" if name == "cifar10" else "test"), "wb") as fh:
        pickle.dump({"data": rng.integers(0, 256, (n_test, 3072), dtype=np.uint8),
                     label_key: rng.integers(0, classes, n_test).tolist()}, fh)
    meta_key = "label_names" if name == "cifar10" else "fine_label_names"
    with open(root / folder / ("batches.meta" if name == "cifar10" else "meta"), "wb") as fh:
        pickle.dump({meta_key: [f"c{i}" for i in range(classes)]}, fh)
    return np.concatenate(all_x), all_y


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_loader_reads_the_published_file_format(tmp_path, name):
    x, y = _write_cifar(tmp_path, name)
    s = DataSettings(name, root=str(tmp_path), verify=False, val_fraction=0.25)
    data = load_dataset(s)
    assert data.num_classes == num_classes_of(s) == (10 if name == "cifar10" else 100)
    assert len(data.train_labels) + len(data.val_labels) == len(y) == 60
    assert data.train_images.shape[1:] == (3, 32, 32)
    # Every decoded image is one of the written rows, channel-major, with its label.
    rows = {bytes(r): lab for r, lab in zip(x, y)}
    for img, lab in zip(data.train_images, data.train_labels):
        assert rows[bytes(img.reshape(-1).numpy())] == int(lab)


def test_cifar_checksums_are_checked_by_default(tmp_path):
    _write_cifar(tmp_path, "cifar10")
    with pytest.raises(FileNotFoundError, match="data.verify=false"):
        load_dataset(DataSettings("cifar10", root=str(tmp_path)))


def test_cifar_missing_folder_is_one_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        num_classes_of(DataSettings("cifar10", root=str(tmp_path / "nowhere")))


def test_image_folder_missing_is_one_clear_error(tmp_path):
    with pytest.raises(ValueError, match="nowhere.*class sub-folders"):
        num_classes_of(DataSettings("imagefolder", root=str(tmp_path / "nowhere")))
    with pytest.raises(ValueError, match="not a folder"):
        load_dataset(DataSettings("imagefolder", root=str(tmp_path / "nowhere")))


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "imagenet"}, "data.name 'imagenet' is unknown"),
    ({"name": "cifar10"}, "data.root must name"),
    ({"val_fraction": 1.5}, "val_fraction"),
    ({"transforms": "crop"}, "data.transforms=crop needs data=imagefolder"),
    ({"mode": "stream"}, "data.mode=stream needs data=imagefolder"),
    ({"name": "imagefolder", "root": "/x", "mode": "disk"}, "data.mode must be auto, memory or stream"),
    ({"name": "imagefolder", "root": "/x", "memory_budget_gb": 0}, "data.memory_budget_gb must be a number > 0"),
])
def test_bad_data_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DataSettings(**kwargs)


@pytest.mark.parametrize("num_images", [1, 2])
def test_too_few_images_to_train_and_validate_are_refused(num_images):
    """data.num_images=2 used to leave one training image; 3 of 4 trials failed, the last won."""
    with pytest.raises(ValueError, match=rf"data.num_images={num_images} .* leaves 1 training|leaves 0 training"):
        load_dataset(DataSettings("digits", num_images=num_images))
    assert len(load_dataset(DataSettings("digits", num_images=3)).train_labels) == 2


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # code an attacker would plant in a re-packed copy's meta file
        return (open, (str(self.marker), "w"))


def test_an_unverified_cifar_copy_never_unpickles_its_meta_file(tmp_path):
    import pickle

    _write_cifar(tmp_path, "cifar10")
    marker = tmp_path / "pwned"
    with open(tmp_path / "cifar-10-batches-py" / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": _Payload(marker)}, fh)
    data = load_dataset(DataSettings("cifar10", root=str(tmp_path), verify=False))
    assert data.num_classes == 10 and not marker.exists()
