"""Train one network on one dataset at one resolution; knows nothing of Ray or Optuna.

A plain loop over the batches of a feed (``feed.py``: tensors in memory, or DataLoader workers
reading an image folder's cache), converted and normalised on the device, with the model and
batches channels-last (oneDNN's and cuDNN's fast layout) and optionally compiled: SGD, AdamW or
RMSProp, a cosine or constant learning rate with linear warm-up, label smoothing, random flips
when the data allows them. CUDA with mixed precision (bfloat16 where supported, else float16 with
a gradient scaler) when a GPU is there; CPU otherwise, deterministic for a fixed seed and thread
count. After every epoch ``on_epoch`` receives the metrics and a function that returns the
training state, so a caller can report progress, checkpoint, or stop the run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from scaling_search.settings import TrainSettings
from scaling_search.train.data import FolderData, ImageData
from scaling_search.train.feed import Batches, make_feed

OnEpoch = Callable[[dict, Callable[[], dict]], None]


class Diverged(RuntimeError):
    """Training produced a non-finite loss: the trial stops at the end of that epoch and fails.

    A diverged network predicts a constant class, so its top-1 is chance and would look like a
    result; it must never be ranked or frozen.
    """

    def __init__(self, epoch: int, what: str, value: float):
        super().__init__(f"diverged in epoch {epoch}: {what} is {value}; lower trainer.lr "
                         "or raise trainer.warmup_epochs")
        self.epoch = epoch


@dataclass(frozen=True)
class TrainResult:
    """The run's per-epoch metrics and its totals."""

    history: list[dict]
    train_time_s: float
    images_per_s: float
    device: str
    # Per validation image (in the data's fixed validation order, the same for every trial),
    # whether the final model classified it right: what paired comparisons of two trials need.
    val_correct: torch.Tensor | None = None
    setup_time_s: float = 0.0  # from the call to the first training step: device, data, model
    peak_gpu_bytes: int | None = None  # the most GPU memory torch allocated (CUDA only)
    step: str = "eager"  # "cuda graph", "eager", or "eager (...)": why the graph was not captured
    # Where the call's time went, in seconds: "device" (picking it, CUDA's context), "data" (the
    # feed: resizing, uploading), "model" (to the device, the optimizer), "capture" (the CUDA
    # graph's warm-up passes and capture, cuDNN's first choices; inside the first epoch's
    # training time), "evaluation" and "checkpoints" (the on_epoch calls).
    phases: dict = field(default_factory=dict)

    @property
    def final_top1(self) -> float:
        return self.history[-1]["val/top1"]

    @property
    def best_top1(self) -> float:
        return max(h["val/top1"] for h in self.history)


class _GraphedPass:
    """A training step's forward and backward captured as one CUDA graph and replayed.

    A small proxy's step on a GPU is bound by kernel launches (hundreds per step, microseconds
    of work each); a replay launches them all at once. Captured after a few eager passes on a
    side stream (PyTorch's rule: lazy initialisation must not happen during capture), with the
    model's state and the RNG put back afterwards, so the warm-up leaves no trace on training.
    Each replay writes the gradients into the same tensors, which the optimizer then reads.
    ``capture`` returns False (and training runs eagerly) where the model cannot be captured.
    """

    def __init__(self, graph, static_x, static_y, static_loss):
        self.graph, self.x, self.y, self.loss = graph, static_x, static_y, static_loss

    @classmethod
    def capture(cls, model: nn.Module, forward, criterion, autocast, x: torch.Tensor, y: torch.Tensor):
        import warnings

        saved = {k: v.clone() for k, v in model.state_dict().items()}
        rng = torch.cuda.get_rng_state(x.device)
        static_x, static_y = x.clone(), y.clone()
        try:
            side = torch.cuda.Stream(x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            with torch.cuda.stream(side):
                for _ in range(3):
                    model.zero_grad(set_to_none=True)
                    with autocast():
                        criterion(forward(static_x), static_y).backward()
            torch.cuda.current_stream(x.device).wait_stream(side)
            model.zero_grad(set_to_none=True)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                with autocast():
                    static_loss = criterion(forward(static_x), static_y)
                static_loss.backward()
        except RuntimeError as e:  # an op that cannot be captured: train eagerly instead
            reason = str(e).splitlines()[0][:200]
            warnings.warn(f"trainer.cuda_graphs: the step could not be captured ({reason}); training eagerly",
                          stacklevel=2)
            model.zero_grad(set_to_none=True)
            graph = None
        with torch.no_grad():
            model.load_state_dict(saved)
        torch.cuda.set_rng_state(rng, x.device)
        return cls(graph, static_x, static_y, static_loss) if graph is not None else reason

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.x.copy_(x, non_blocking=True)
        self.y.copy_(y, non_blocking=True)
        self.graph.replay()
        return self.loss


def _lap(device: torch.device, since: float | None) -> tuple[float, float]:
    """Seconds since ``since`` once the device has finished its queued work, and the time now."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    now = time.perf_counter()
    return (now - since if since is not None else 0.0), now


def eval_batch_size(s: TrainSettings, device: torch.device | None = None) -> int:
    """The evaluation batch: ``eval_batch_size``, at most twice the training batch. A training
    step keeps every layer's output of its batch for the backward pass; an evaluation forward
    keeps about two at a time, so twice the training batch stays under the training step's peak
    (on CPU, 6,000 images at 160 px peaked at 3.3 GB RSS with an evaluation batch of 512 against
    1.9 GB with 64, training at 64).

    On CUDA with ``cudnn_benchmark``, the training batch itself: evaluation then runs the
    convolutions in the shapes the training step already autotuned (its last batch padded to
    that size, see ``evaluate``), so cuDNN times no new shape for it.
    """
    if device is not None and device.type == "cuda" and s.cudnn_benchmark:
        return min(s.eval_batch_size, s.batch_size)
    return min(s.eval_batch_size, 2 * s.batch_size)


def pick_device(setting: str) -> torch.device:
    if setting == "cpu" or (setting == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda")


def _optimizer(model: nn.Module, s: TrainSettings, device: torch.device) -> torch.optim.Optimizer:
    # No weight decay on biases and normalisation parameters (1-d tensors), as timm and pycls do.
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": s.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    # On a GPU, one fused kernel per step for all parameters where torch has one (SGD, AdamW):
    # a small proxy's step is bound by kernel launches, not arithmetic.
    fused = {"fused": True} if device.type == "cuda" else {}
    if s.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, nesterov=s.momentum > 0, **fused)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=s.lr, **fused)
    return torch.optim.RMSprop(groups, lr=s.lr, momentum=s.momentum, alpha=0.9, eps=1e-3,
                               foreach=device.type == "cuda")


def _lr_factor(s: TrainSettings, steps_per_epoch: int) -> Callable[[int], float]:
    total = s.epochs * steps_per_epoch
    warmup = round(s.warmup_epochs * steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if s.lr_schedule == "constant":
            return 1.0
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))
    return factor


@torch.no_grad()
def evaluate(model: nn.Module, batches: Batches, count: int, autocast,
             pad_to: int | None = None) -> tuple[float, float, torch.Tensor]:
    """Validation over ``count`` images in ``batches``, in the training's precision policy
    (``autocast``): top-1 accuracy, mean cross-entropy, and per image whether it was right.
    ``pad_to``: a shorter batch is padded with zero images to this size and the padding's
    outputs dropped (every batch one shape: no new shape for cuDNN's autotuner)."""
    model.eval()
    right, loss_sum = [], None
    for x, y in batches:  # no host sync per batch: the sums stay on the device until the end
        n = len(y)
        if pad_to is not None and n < pad_to:
            fmt = torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
                else torch.contiguous_format
            x = torch.cat([x, x.new_zeros((pad_to - n, *x.shape[1:]))]).contiguous(memory_format=fmt)
        with autocast():
            logits = model(x)[:n]
        loss = F.cross_entropy(logits.float(), y, reduction="sum")
        loss_sum = loss if loss_sum is None else loss_sum + loss
        right.append(logits.argmax(1) == y)
    correct = torch.cat(right).cpu() if right else torch.zeros(0, dtype=torch.bool)
    total = loss_sum.item() if loss_sum is not None else 0.0
    return int(correct.sum()) / count, total / count, correct


def train(model: nn.Module, data: ImageData | FolderData, resolution_px: int, settings: TrainSettings,
          seed: int, on_epoch: OnEpoch | None = None, state: dict | None = None) -> TrainResult:
    """Trains ``model`` on ``data`` at ``resolution_px`` for ``settings.epochs`` epochs.

    Args:
        seed: seeds the shuffling, the flips and dropout (build the model after seeding too).
        on_epoch: called after each epoch with its metrics (``epoch``, ``train/loss``,
            ``val/loss``, ``val/top1``, ``lr``, ``time_s``) and a function returning the state.
        state: a state that function returned earlier; training resumes after its epoch.
    """
    called = time.perf_counter()
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    device = pick_device(settings.device)
    phases = {"device": 0.0, "data": 0.0, "model": 0.0, "capture": 0.0, "evaluation": 0.0, "checkpoints": 0.0}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        # cuDNN's autotuner times every algorithm for every new shape: a short proxy with dozens
        # of distinct layer shapes can spend most of its time there (docs/benchmarks.md).
        torch.backends.cudnn.benchmark = settings.cudnn_benchmark
    use_amp = settings.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp)

    nhwc = settings.cuda_channels_last if device.type == "cuda" else settings.channels_last
    memory_format = torch.channels_last if nhwc else torch.contiguous_format
    mark = time.perf_counter()
    phases["device"] = mark - called
    eval_batch = eval_batch_size(settings, device)
    pad_to = eval_batch if device.type == "cuda" and settings.cudnn_benchmark else None
    feed = make_feed(data, resolution_px, settings.batch_size, eval_batch, device, memory_format,
                     workers=settings.num_threads)
    phases["data"], mark = _lap(device, mark)
    model = model.to(device, memory_format=memory_format)
    forward = torch.compile(model) if settings.compile else model  # state_dict stays the model's
    batch, steps_per_epoch = feed.batch, feed.steps_per_epoch
    optimizer = _optimizer(model, settings, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(settings, steps_per_epoch))
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and amp_dtype == torch.float16)
    criterion = nn.CrossEntropyLoss(label_smoothing=settings.label_smoothing)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)

    history: list[dict] = []
    start_epoch, train_time, images_seen = 0, 0.0, 0
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        history, start_epoch = list(state["history"]), state["epoch"]
        train_time, images_seen = state["train_time_s"], state["images_seen"]

    phases["model"], mark = _lap(device, mark)
    setup_time, graphed = None, None
    # CUDA graphs: forward and backward recorded once, replayed per batch (not with fp16's
    # loss scaling or torch.compile, which has its own).
    use_graphs = (settings.cuda_graphs and device.type == "cuda" and not scaler.is_enabled()
                  and not settings.compile)
    for epoch in range(start_epoch, settings.epochs):
        model.train()
        t0 = time.perf_counter()
        if setup_time is None:
            setup_time = t0 - called
        loss_sum = torch.zeros((), device=device)
        for x, y in feed.train_batches(gen):
            if graphed is None and use_graphs:
                mark = _lap(device, None)[1]
                graphed = _GraphedPass.capture(model, forward, criterion, autocast, x, y)
                phases["capture"], _ = _lap(device, mark)
            if isinstance(graphed, _GraphedPass):
                loss = graphed(x, y)  # forward and backward replayed; the grads are in place
            else:
                with autocast():
                    loss = criterion(forward(x), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += loss.detach().float()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        epoch_train_s = time.perf_counter() - t0
        train_time += epoch_train_s
        images_seen += steps_per_epoch * batch
        train_loss = loss_sum.item() / steps_per_epoch
        if not math.isfinite(train_loss):
            raise Diverged(epoch + 1, "the training loss", train_loss)
        mark = time.perf_counter()
        top1, val_loss, val_correct = evaluate(forward, feed.val_batches(), feed.num_val, autocast, pad_to)
        phases["evaluation"] += time.perf_counter() - mark
        if not math.isfinite(val_loss):
            raise Diverged(epoch + 1, "the validation loss", val_loss)
        metrics = {"epoch": epoch + 1, "train/loss": train_loss,
                   "val/loss": val_loss, "val/top1": top1, "lr": scheduler.get_last_lr()[0],
                   "time_s": time.perf_counter() - t0,
                   "images_per_s": steps_per_epoch * batch / epoch_train_s}
        history.append(metrics)
        if on_epoch is not None:
            snapshot = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(), "generator": gen.get_state(),
                        "torch_rng": torch.get_rng_state(), "history": list(history),
                        "epoch": epoch + 1, "train_time_s": train_time, "images_seen": images_seen}
            mark = time.perf_counter()
            on_epoch(metrics, lambda s=snapshot: s)
            phases["checkpoints"] += time.perf_counter() - mark
    if start_epoch >= settings.epochs:  # resumed after the last epoch: nothing evaluated here
        val_correct = None
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    step = ("cuda graph" if isinstance(graphed, _GraphedPass) else
            f"eager (graph not captured: {graphed})" if isinstance(graphed, str) else "eager")
    return TrainResult(history, train_time, images_seen / train_time if train_time else 0.0,
                       str(device), val_correct, setup_time if setup_time is not None else 0.0, peak, step,
                       phases)
