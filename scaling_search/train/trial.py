"""One Step-1 trial: a candidate at φ = 1 trained with one seed. Plain data in, plain row out.

A ``TrialSpec`` holds only names and numbers, so it pickles to any Ray worker, and the worker
rebuilds the network from the backbone registry (importing the user's plugin modules first).
``run_trial`` never lets a training error escape: the row says ``failed`` and why, and the
search goes on. It lets ``BaseException`` through, which is how Ray stops a trial early. The
row names the machine that trained it (``node``: its host name; ``node_id``: its Ray node id,
given by the Ray runner, empty in-process), so a user of a cluster sees where the work went.
"""

from __future__ import annotations

import socket
import time
import traceback
from dataclasses import asdict, dataclass

import torch

from scaling_search.models.backbones import ScaledModel, get_backbone, import_plugins
from scaling_search.models.scaling import Coefficients, Multipliers, Rounding
from scaling_search.plan.rules import regularised
from scaling_search.train.data import FolderData, ImageData
from scaling_search.train.records import pack_correct
from scaling_search.train.status import FAILED, OK
from scaling_search.train.trainer import Diverged, OnEpoch, TrainSettings, train


@dataclass(frozen=True)
class TrialSpec:
    """What one trial trains: a backbone at multipliers and resolution, with one seed."""

    trial_id: str
    candidate_id: str
    seed: int
    backbone: str
    depth_coef: float
    width_coef: float
    resolution_coef: float
    depth_mult: float
    width_mult: float
    resolution_mult: float
    base_resolution_px: int | None
    rounding: dict
    imports: tuple[str, ...] = ()
    dropout: float | None = None  # None: the backbone's own (Step 2 sets it by the member's cost)
    drop_path: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["imports"] = list(self.imports)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TrialSpec:
        return cls(**{**d, "imports": tuple(d.get("imports", ()))})

    @classmethod
    def of(cls, trial_id: str, candidate_id: str, seed: int, coefficients: Coefficients, model: ScaledModel,
           base_resolution_px: int | None, rounding: Rounding, imports: tuple[str, ...] = ()) -> TrialSpec:
        """The spec that trains ``model`` (reached by ``coefficients``) with ``seed``."""
        c, m = coefficients, model.multipliers
        return cls(trial_id, candidate_id, seed, model.backbone, c.depth_coef, c.width_coef,
                   c.resolution_coef, m.depth_mult, m.width_mult, m.resolution_mult, base_resolution_px,
                   asdict(rounding), tuple(imports))


def trial_id(backbone_tag: str, candidate_id: str, seed: int) -> str:
    """``b0_d1.20_w1.10_r1.15_s0``: readable, unique per (candidate, seed), safe as a folder name."""
    return f"{backbone_tag}_{candidate_id}_s{seed}"


def scaled_model(spec: TrialSpec) -> ScaledModel:
    """The spec's network, not built: its backbone at its multipliers, with its regularisation
    (the user's plugin modules imported first)."""
    import_plugins(list(spec.imports))
    model = get_backbone(spec.backbone).scale(
        Multipliers(spec.depth_mult, spec.width_mult, spec.resolution_mult),
        Rounding(**spec.rounding), spec.base_resolution_px)
    return regularised(model, spec.dropout, spec.drop_path)


def run_trial(spec: TrialSpec, data: ImageData | FolderData, settings: TrainSettings,
              on_epoch: OnEpoch | None = None, state: dict | None = None, node_id: str = "") -> dict:
    """Builds and trains the spec's network; returns the final row (never raises ``Exception``).

    ``node_id``: the Ray node this runs on (the Ray runner's; empty in-process).
    """
    start = time.perf_counter()
    row = {"trial_id": spec.trial_id, "status": FAILED, "error": "", "node": socket.gethostname(),
           "node_id": node_id}
    try:
        model = scaled_model(spec)
        torch.manual_seed(spec.seed)  # the same initial weights for the same seed, any process
        module = model.build(data.num_classes, zero_init_residual=settings.zero_init_residual)
        built = time.perf_counter()
        result = train(module, data, model.resolution_px, settings, spec.seed, on_epoch, state)
        row.update(status=OK, resolution_px=model.resolution_px,
                   final_top1=result.final_top1, best_top1=result.best_top1,
                   final_val_loss=result.history[-1]["val/loss"], epochs=len(result.history),
                   train_time_s=result.train_time_s, images_per_s=result.images_per_s,
                   val_correct=pack_correct(None if result.val_correct is None else result.val_correct.numpy()),
                   device=result.device,
                   # before the first training step: plugins, build, device, data, model on it
                   setup_time_s=built - start + result.setup_time_s,
                   peak_gpu_mib=None if result.peak_gpu_bytes is None else result.peak_gpu_bytes / 2**20,
                   step=result.step)
    except Exception as e:  # noqa: BLE001 - a failed trial is a result, not a crash
        row["error"] = f"{type(e).__name__}: {e}".strip()
        if isinstance(e, Diverged):
            row["epochs"] = e.epoch
        row["traceback"] = traceback.format_exc(limit=8)
    row["wall_time_s"] = time.perf_counter() - start
    return row
