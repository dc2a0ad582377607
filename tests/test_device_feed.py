"""The GPU's feed: data held on the device as uint8, cropped, flipped and normalised there.

Its arithmetic is the same on any device, so these tests run it on the CPU against torchvision
and torch's own resampling (independent implementations of the same transforms); those named
``cuda`` run it on a GPU too (benchmarks/gpu_check.sh runs them there).
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F
from test_image_folder import settings as folder_settings
from test_image_folder import write_folder

from scaling_search.models.backbones import get_backbone
from scaling_search.models.scaling import Multipliers
from scaling_search.settings import DataSettings, TrainSettings
from scaling_search.train.data import load_dataset
from scaling_search.train.device_feed import (
    DeviceFeed,
    Normaliser,
    centre_crop_u8,
    crop_resize,
    random_resized_boxes,
    resize_u8,
)
from scaling_search.train.feed import StreamFeed, device_feed

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def digits():
    return load_dataset(DataSettings("digits"))


def test_crop_boxes_follow_torchvisions_random_resized_crop_rule():
    """Same bounds as torchvision's get_params, and the same distribution of area and aspect
    (means over 4,000 draws each, within a few standard errors)."""
    from torchvision.transforms import v2

    h, w, n = 60, 80, 4000
    boxes = random_resized_boxes(n, h, w, torch.Generator().manual_seed(0))
    top, left, bh, bw = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + bh <= h).all() and (left + bw <= w).all()
    assert (bh >= 1).all() and torch.equal(boxes, boxes.round())
    torch.manual_seed(1)
    ref = torch.tensor([v2.RandomResizedCrop.get_params(torch.zeros(3, h, w), (0.08, 1.0), (3 / 4, 4 / 3))
                        for _ in range(n)], dtype=torch.float64)
    ours = boxes.double()
    for k, what in ((2, "height"), (3, "width")):
        se = math.hypot(ours[:, k].std(), ref[:, k].std()) / math.sqrt(n)
        assert abs(ours[:, k].mean() - ref[:, k].mean()) < 4 * se, what
    area = (ours[:, 2] * ours[:, 3] / (h * w), ref[:, 2] * ref[:, 3] / (h * w))
    se = math.hypot(area[0].std(), area[1].std()) / math.sqrt(n)
    assert abs(area[0].mean() - area[1].mean()) < 4 * se
    assert area[0].min() >= 0.07 and area[0].max() <= 1.0


def test_crop_boxes_fall_back_to_a_centre_crop_when_no_try_fits():
    # 100 x 4 pixels: no box of aspect 3/4-4/3 with at least 8% of the area fits in 4 columns
    boxes = random_resized_boxes(50, 4, 100, torch.Generator().manual_seed(0))
    want = torch.tensor([0.0, 47.0, 4.0, 5.0])  # torchvision: height 4, width round(4 * 4/3) = 5, centred
    assert torch.equal(boxes, want.expand(50, 4))


@pytest.mark.parametrize("device", DEVICES)
def test_crop_resize_is_a_crop_then_torchs_bilinear_resize_then_a_flip(device):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, 20, 30, generator=g).to(device)
    boxes = torch.tensor([[0, 0, 20, 30], [2, 5, 10, 12], [7, 1, 13, 29], [3, 3, 6, 6]], dtype=torch.float32)
    flips = torch.tensor([False, True, False, True])
    got = crop_resize(x, boxes.to(device), flips.to(device), 9)
    for i, (t, l, h, w) in enumerate(boxes.long().tolist()):
        want = F.interpolate(x[i:i + 1, :, t:t + h, l:l + w], size=(9, 9), mode="bilinear", align_corners=False)
        want = want.flip(-1) if flips[i] else want
        # Inside, the same samples; at the edge of an enlarged box (the last, 6 px to 9) a resize
        # of the cut-out crop clamps to its edge, where the resampling reads the image beyond it.
        inner = (slice(None), slice(None), slice(1, -1), slice(1, -1)) if h < 9 else (...,)
        assert torch.allclose(got[i:i + 1][inner], want[inner], atol=1e-5), i
    same = crop_resize(x, torch.tensor([[2.0, 5, 10, 12]]).expand(4, 4).to(device), None, 10)
    assert torch.allclose(same[:, :, :, :], F.interpolate(x[:, :, 2:12, 5:17], size=(10, 10), mode="bilinear",
                                                          align_corners=False), atol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_resize_and_centre_crop_match_torchvision_on_uint8(device):
    from torchvision.transforms import v2

    x = torch.randint(0, 256, (5, 3, 40, 40), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    got = centre_crop_u8(x.to(device), 28, 0.875).cpu()
    want = v2.CenterCrop(28)(v2.Resize(32, antialias=True)(x))
    assert got.dtype == torch.uint8 and (got.int() - want.int()).abs().max() <= 1  # rounding of the float path
    assert (resize_u8(x.to(device), 16).cpu().int() - v2.Resize((16, 16), antialias=True)(x).int()).abs().max() <= 1


@pytest.mark.parametrize("device", DEVICES)
def test_tensor_data_is_held_on_the_device_and_batched_there(digits, device):
    feed = device_feed(digits, 16, 64, 100, torch.device(device), torch.channels_last)
    assert isinstance(feed, DeviceFeed) and feed.train_x.device.type == device
    assert feed.train_x.dtype == torch.uint8 and feed.train_x.shape[-1] == 16  # resized once
    batches = list(feed.train_batches(torch.Generator().manual_seed(3)))
    again = list(feed.train_batches(torch.Generator().manual_seed(3)))
    assert len(batches) == len(digits.train_labels) // 64 == feed.steps_per_epoch
    x, y = batches[0]
    assert x.device.type == device and x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(batches, again, strict=True))
    # an epoch is a permutation: every training label appears as often as in the set, less the dropped tail
    seen = torch.cat([y for _, y in batches]).cpu()
    assert len(seen) == feed.steps_per_epoch * 64
    counts = torch.bincount(seen, minlength=10) - torch.bincount(digits.train_labels, minlength=10)
    assert counts.max() <= 0 and -counts.sum() == len(digits.train_labels) - len(seen)
    # the CPU path's images (resized and normalised in float32 on the host), to uint8 rounding
    want, _ = digits.at_resolution(16)
    order = torch.randperm(len(digits.train_labels), generator=torch.Generator().manual_seed(3))
    xs = torch.cat([x for x, _ in batches]).cpu()
    step = 0.5 / 255 / float(digits.mean_std()[1].min())
    assert (xs - want[order[:len(xs)]]).abs().max() <= step + 1e-5
    val = torch.cat([x for x, _ in feed.val_batches()])
    assert len(val) == len(digits.val_labels)


def test_flips_mirror_half_the_images_only_when_the_data_allows(digits):
    from dataclasses import replace

    for flip in (False, True):
        feed = device_feed(replace(digits, flip=flip), 8, 1437, 100, torch.device("cpu"))
        (x, _), = list(feed.train_batches(torch.Generator().manual_seed(0)))
        plain = DeviceFeed((digits.train_images, digits.train_labels), (digits.val_images, digits.val_labels),
                           Normaliser(*digits.mean_std(), torch.device("cpu")), 8, 1437, 100)
        order = torch.randperm(len(digits.train_labels), generator=torch.Generator().manual_seed(0))
        want = plain.normalise(plain.train_x[order[:1437]])
        mirrored = ~torch.isclose(x, want).flatten(1).all(1)
        assert torch.allclose(x[~mirrored], want[~mirrored])
        assert torch.allclose(x[mirrored], want[mirrored].flip(-1))
        share = mirrored.float().mean()
        assert (0.4 < share < 0.6) if flip else share == 0


@pytest.mark.parametrize("workers", [0, 2])
def test_a_streamed_folder_gives_the_batches_of_the_held_one(tmp_path, workers):
    """Workers (started once, kept across epochs) read rows; crops are drawn as the held feed
    draws them, so the two give the same batches for a seed, epoch after epoch."""
    write_folder(tmp_path / "imgs", per_class=6, size=(40, 30))
    data = load_dataset(folder_settings(tmp_path / "imgs", tmp_path / "cache", mode="memory"), 16)
    streamed = StreamFeed(data, 16, 4, 5, torch.device("cpu"), workers=workers)
    held = device_feed(data, 16, 4, 5, torch.device("cpu"))
    assert isinstance(held, DeviceFeed) and held.crop and held.train_x.shape[-1] == 19  # the cache's size
    g_a, g_b = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for _ in range(2):
        a, b = list(streamed.train_batches(g_a)), list(held.train_batches(g_b))
        assert len(a) == len(b) == held.steps_per_epoch == 3
        assert all(torch.allclose(xa, xb) and torch.equal(ya, yb) for (xa, ya), (xb, yb) in zip(a, b, strict=True))
        assert a[0][0].shape == (4, 3, 16, 16)
    va, vb = list(streamed.val_batches()), list(held.val_batches())
    assert all(torch.allclose(xa, xb) for (xa, _), (xb, _) in zip(va, vb, strict=True))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_trial_records_set_up_and_peak_memory_and_graphs_train_like_eager(digits):
    from scaling_search.models.backbones import get_backbone
    from scaling_search.models.scaling import Multipliers
    from scaling_search.train.trainer import train

    def model():
        torch.manual_seed(0)
        return get_backbone("efficientnet_b0").scale(Multipliers(0.5, 0.5, 1.0), resolution_px=16).build(10)

    s = TrainSettings(epochs=3, device="cuda", warmup_epochs=0)
    eager = train(model(), digits, 16, TrainSettings(**{**s.__dict__, "cuda_graphs": False}), seed=0)
    graphed = train(model(), digits, 16, s, seed=0)
    assert eager.peak_gpu_bytes > 0 and 0 < eager.setup_time_s
    assert eager.step == "eager" and graphed.step == "cuda graph", graphed.step
    assert eager.final_top1 > 0.5 and graphed.final_top1 > 0.5
    # same data, same steps: the losses agree to mixed precision's noise
    for a, b in zip(eager.history, graphed.history, strict=True):
        assert abs(a["train/loss"] - b["train/loss"]) < 0.1 * a["train/loss"]


def test_a_cpu_trial_row_says_how_long_it_took_to_start(digits):
    from scaling_search.train.trial import TrialSpec, run_trial

    spec = TrialSpec("t", "c", 0, "resnet18", 1, 1, 1, 0.5, 0.25, 1.0, 16, {})
    row = run_trial(spec, digits, TrainSettings(epochs=1, num_threads=1))
    assert row["status"] == "ok", row
    assert 0 < row["setup_time_s"] < row["wall_time_s"] - row["train_time_s"]
    assert row["peak_gpu_mib"] is None


def test_the_console_says_where_a_runs_slot_time_went():
    import io
    import re

    from scaling_search.train.progress import Progress

    out = io.StringIO()
    p = Progress(2, concurrency=2, stream=out)
    p.start -= 10.0  # ten seconds of wall on two slots: 20 slot-seconds
    p.finished("a", {"status": "ok", "final_top1": 0.5, "setup_time_s": 1.0, "train_time_s": 6.0, "wall_time_s": 8})
    p.finished("b", {"status": "ok", "final_top1": 0.6, "setup_time_s": 3.0, "train_time_s": 4.0, "wall_time_s": 9})
    line = p.overhead()
    assert line.startswith("2 trials in 10s on 2 slot(s)")
    parts = re.findall(r"(training steps|trial set-up|the rest) (\d+) s \((\d+)%", line)
    got = {k: (int(s), int(pc)) for k, s, pc in parts}
    assert got == {"training steps": (10, 50), "trial set-up": (4, 20), "the rest": (6, 30)}


def test_a_trial_too_large_for_its_share_of_the_gpu_is_refused_before_any_starts(digits):
    """The estimate (meta-device forward, no GPU needed) against a GPU's memory: B0 at 224 px,
    batch 256, needs about 12 GiB (an H200 measured 12.3 GiB of torch's peak), so a quarter of
    an 80 GiB card holds it and an eighth of a 40 GiB card does not."""
    from scaling_search.models.scaling import Rounding
    from scaling_search.train.execution import check_gpu_memory
    from scaling_search.train.trial import TrialSpec

    rounding = {k: getattr(Rounding(), k) for k in Rounding.__dataclass_fields__}
    spec = TrialSpec("b0", "b0", 0, "efficientnet_b0", 1, 1, 1, 1.0, 1.0, 1.0, 224, rounding)
    paper = TrainSettings(batch_size=256, optimizer="rmsprop")
    columns = {"b0": {"activations": 1}}
    check_gpu_memory([spec], columns, digits, paper, 0.25, 80 * 2**30)
    with pytest.raises(ValueError, match=r"^a trial of b0 \(batch 256 at 224 px\) needs about 1\d\.\d GiB .*"
                                         r"runner.gpus_per_trial=0.125 of 40.0 GiB\) is 5.0 GiB; raise"):
        check_gpu_memory([spec], columns, digits, paper, 0.125, 40 * 2**30)
    check_gpu_memory([spec], columns, digits, paper, 0.125, None)  # no GPU here: nothing to check
    check_gpu_memory([spec], columns, digits, paper, 0.0, 40 * 2**30)  # trials on CPU


def test_the_saved_activation_count_is_autograds_own():
    """On the CPU, autograd's saved tensors of a real forward, counted by the same hook, equal the
    meta-device count: the estimate counts what the backward pass keeps."""
    from scaling_search.models.backbones import get_backbone
    from scaling_search.models.scaling import Multipliers
    from scaling_search.train.memory import saved_activation_bytes

    m = get_backbone("efficientnet_b0").scale(Multipliers(0.5, 0.5, 1.0), resolution_px=24)
    meta = saved_activation_bytes(m.build(10, device="meta"), 4, 24)
    real, net = 0, m.build(10)
    net.train()

    def pack(t):
        nonlocal real
        real += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(torch.randn(4, 3, 24, 24))
    assert meta == real and meta > 4 * 3 * 24 * 24 * 4


def test_evaluation_batches_are_at_most_twice_the_training_batch(digits):
    from scaling_search.train.trainer import eval_batch_size

    assert eval_batch_size(TrainSettings(batch_size=64, eval_batch_size=512)) == 128
    assert eval_batch_size(TrainSettings(batch_size=256, eval_batch_size=100)) == 100
    feed = device_feed(digits, 8, 64, eval_batch_size(TrainSettings(batch_size=64)), torch.device("cpu"))
    n = len(digits.val_labels)
    assert [len(y) for _, y in feed.val_batches()] == [128] * (n // 128) + [n % 128]


def test_on_cuda_with_the_autotuner_evaluation_runs_in_the_training_batch():
    from scaling_search.train.trainer import eval_batch_size

    cuda = torch.device("cuda")  # a device object only: nothing runs on it
    assert eval_batch_size(TrainSettings(batch_size=64, eval_batch_size=512, cudnn_benchmark=True), cuda) == 64
    assert eval_batch_size(TrainSettings(batch_size=64, eval_batch_size=512, cudnn_benchmark=False), cuda) == 128
    assert eval_batch_size(TrainSettings(batch_size=64, eval_batch_size=32, cudnn_benchmark=True), cuda) == 32
    assert eval_batch_size(TrainSettings(batch_size=64, eval_batch_size=512, cudnn_benchmark=True)) == 128


@pytest.mark.parametrize("channels_last", [False, True])
def test_padding_the_last_evaluation_batch_changes_no_result(digits, channels_last):
    from scaling_search.train.trainer import evaluate

    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    net = get_backbone("efficientnet_b0").scale(Multipliers(0.25, 0.25, 1.0), resolution_px=16).build(10)
    net = net.to(memory_format=fmt).eval()
    feed = device_feed(digits, 16, 64, 100, torch.device("cpu"), fmt)
    n = len(digits.val_labels)
    assert n % 100, "the last batch must be short for this test"
    plain = evaluate(net, feed.val_batches(), n, contextlib.nullcontext)
    shapes = []
    hook = net.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
    padded = evaluate(net, feed.val_batches(), n, contextlib.nullcontext, pad_to=100)
    hook.remove()
    assert {s[0] for s in shapes} == {100}  # every batch one shape
    assert padded[0] == plain[0] and torch.equal(padded[2], plain[2]) and len(padded[2]) == n
    assert padded[1] == pytest.approx(plain[1], rel=1e-5)
