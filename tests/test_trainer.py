"""The proxy trainer (trainer.py): it learns, it is deterministic on CPU, and it resumes exactly."""

from __future__ import annotations

import copy

import pytest
import torch

from scaling_search.models.backbones import get_backbone
from scaling_search.models.scaling import Multipliers
from scaling_search.train.data import DataSettings, load_dataset
from scaling_search.train.trainer import TrainSettings, train


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataSettings("digits"))


def _model(seed=0):
    torch.manual_seed(seed)
    return get_backbone("resnet18").scale(Multipliers(0.5, 0.25), resolution_px=16).build(10)


FAST = TrainSettings(epochs=3, batch_size=64, lr=0.1, num_threads=1, warmup_epochs=0.5)


def test_learns_digits_well_above_chance(digits):
    result = train(_model(), digits, 16, FAST, seed=0)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.final_top1 > 0.8  # chance is 0.1
    assert result.history[-1]["train/loss"] < result.history[0]["train/loss"]
    assert result.images_per_s > 0 and result.device == "cpu"
    assert result.best_top1 == max(h["val/top1"] for h in result.history)


def test_same_seed_same_numbers_other_seed_other_numbers(digits):
    a = train(_model(0), digits, 16, FAST, seed=0).history
    b = train(_model(0), digits, 16, FAST, seed=0).history
    c = train(_model(0), digits, 16, FAST, seed=1).history
    strip = lambda h: [{k: v for k, v in e.items() if k not in ("time_s", "images_per_s")} for e in h]  # noqa: E731
    assert strip(a) == strip(b)
    assert strip(a) != strip(c)


def test_resuming_from_a_state_gives_the_uninterrupted_run(digits):
    states = {}
    full = train(_model(), digits, 16, FAST, seed=0,
                 on_epoch=lambda m, state: states.setdefault(m["epoch"], copy.deepcopy(state())))
    resumed = train(_model(5), digits, 16, FAST, seed=0, state=states[1])
    keys = ("epoch", "train/loss", "val/loss", "val/top1", "lr")
    assert [[h[k] for k in keys] for h in resumed.history] == [[h[k] for k in keys] for h in full.history]


def test_label_smoothing_and_optimizers_are_wired(digits):
    for optimizer in ("adamw", "rmsprop"):
        s = TrainSettings(epochs=1, optimizer=optimizer, lr=1e-3, num_threads=1)
        # Default init: with zeroed residual scales an adaptive optimizer at lr 1e-3 moves them
        # ~1e-3 a step, so one epoch shows little (0.19 with adamw against 0.71 here).
        torch.manual_seed(0)
        model = get_backbone("resnet18").scale(Multipliers(0.5, 0.25), resolution_px=16).build(
            10, zero_init_residual=False)
        assert train(model, digits, 16, s, seed=0).final_top1 > 0.3


@pytest.mark.parametrize("kwargs, message", [
    ({"epochs": 0}, "trainer.epochs"),
    ({"optimizer": "lamb"}, "trainer.optimizer"),
    ({"lr_schedule": "step"}, "trainer.lr_schedule"),
    ({"lr": 0}, "trainer.lr"),
])
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TrainSettings(**kwargs)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_requested_without_gpu():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        TrainSettings(device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_mixed_precision(digits):
    result = train(_model(), digits, 16, TrainSettings(epochs=2, amp=True), seed=0)
    assert result.device.startswith("cuda") and result.final_top1 > 0.5


def test_a_diverging_run_stops_and_its_trial_fails(digits):
    """lr=1e6 makes every loss NaN; that used to end as an `ok` trial at chance-level top-1."""
    from scaling_search.train.status import FAILED
    from scaling_search.train.trainer import Diverged
    from scaling_search.train.trial import TrialSpec, run_trial

    wild = TrainSettings(epochs=3, batch_size=64, lr=1e6, num_threads=1)
    epochs = []
    with pytest.raises(Diverged, match="diverged in epoch 1: the training loss is nan"):
        train(_model(), digits, 16, wild, seed=0, on_epoch=lambda m, s: epochs.append(m))
    assert epochs == []  # stopped in its first epoch: no epoch was reported as a result
    spec = TrialSpec("t", "c", 0, "resnet18", 1, 1, 1, 0.5, 0.25, 1.0, 16, {})
    row = run_trial(spec, digits, wild)
    assert row["status"] == FAILED and row["epochs"] == 1
    assert row["error"].startswith("Diverged: diverged in epoch 1") and "trainer.lr" in row["error"]


class _Payload:
    """What an attacker would pickle into a run folder's checkpoint: code run on load."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_crafted_checkpoint_does_not_execute(tmp_path, digits):
    import pickle

    from scaling_search.train.runners.ray_tune import load_state

    marker = tmp_path / "pwned"
    crafted = tmp_path / "state.pt"
    torch.save({"model": _Payload(marker)}, crafted)
    with pytest.raises(pickle.UnpicklingError):
        load_state(crafted)
    assert not marker.exists()
    states = []  # a real checkpoint still loads
    train(_model(), digits, 16, TrainSettings(epochs=1, num_threads=1), seed=0,
          on_epoch=lambda m, s: states.append(s()))
    torch.save(states[0], tmp_path / "real.pt")
    assert load_state(tmp_path / "real.pt")["epoch"] == 1


def test_each_optimizer_setting_trains_with_that_optimizer(digits):
    """The checkpointed optimizer state is the optimizer's own: momentum buffers for SGD, first
    and second moments for AdamW, running squares (and momentum) for RMSProp."""
    want = {"sgd": {"momentum_buffer"}, "adamw": {"step", "exp_avg", "exp_avg_sq"},
            "rmsprop": {"step", "square_avg", "momentum_buffer"}}
    for optimizer, keys in want.items():
        states = []
        s = TrainSettings(epochs=1, optimizer=optimizer, lr=1e-3, num_threads=1)
        train(_model(), digits, 16, s, seed=0, on_epoch=lambda m, state: states.append(state()))
        per_param = states[0]["optimizer"]["state"]
        assert per_param and all(set(v) == keys for v in per_param.values()), optimizer


def test_label_smoothing_is_applied_to_the_training_loss(digits):
    """The same steps with smoothing 0 and 0.5: a smoothed target's cross-entropy is at least the
    entropy of that target (0.5 on the label, 0.5/10 elsewhere: 1.65 nats), which plain training
    on digits goes far below."""
    import math

    plain = train(_model(), digits, 16, FAST, seed=0)
    smooth = train(_model(), digits, 16, TrainSettings(**{**FAST.__dict__, "label_smoothing": 0.5}), seed=0)
    q = [0.5 + 0.05] + [0.05] * 9  # torch's smoothing: (1 - eps) one-hot + eps / K everywhere
    floor = -sum(p * math.log(p) for p in q)
    assert smooth.history[-1]["train/loss"] >= floor - 1e-3 > plain.history[-1]["train/loss"]


def test_a_nan_validation_loss_stops_the_run(digits):
    from torch import nn

    from scaling_search.train.trainer import Diverged

    class NanWhenEvaluated(nn.Module):  # trains normally, predicts NaN in evaluation
        def __init__(self):
            super().__init__()
            self.net = _model()

        def forward(self, x):
            out = self.net(x)
            return out if self.training else out * float("nan")

    with pytest.raises(Diverged, match="diverged in epoch 1: the validation loss is nan"):
        train(NanWhenEvaluated(), digits, 16, TrainSettings(epochs=2, num_threads=1), seed=0)
