"""A trial's GPU memory, estimated before it runs, and the refusal of one that would not fit.

The estimate runs the network's forward pass on the meta device (no memory, no arithmetic) at the
trial's batch size and counts the bytes autograd saves for the backward pass, then adds the
parameters with their gradients and optimizer state, the data the trial holds on the GPU, and
a fixed allowance for the CUDA context and cuDNN's workspaces. Under mixed precision the saved
activations are mostly 16-bit: half their float32 bytes. Against torch's peak on one H200
(2026-12-04), the estimate less the context allowance: 11.7 GiB for EfficientNet-B0 at 224 px,
batch 256, with 1.1 GiB of images held (peak 12.3 GiB: 0.95x); 0.07 GiB for the demo's proxy
(peak 0.21 GiB, where cuDNN's workspaces and the graph's pool dominate; the allowance covers
them). It is a guard against a trial that cannot fit, not a packing planner.
"""

from __future__ import annotations

import torch

CONTEXT_BYTES = 512 * 2**20  # the CUDA context, cuDNN and cuBLAS handles and workspaces


def saved_activation_bytes(module: torch.nn.Module, batch: int, resolution_px: int) -> int:
    """Float32 bytes autograd keeps for the backward pass of one training forward, counted on
    the meta device (``module`` must be built there)."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    module.train()
    x = torch.empty(batch, 3, resolution_px, resolution_px, device="meta")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module(x)
    return total


def trial_gpu_bytes(module: torch.nn.Module, batch: int, resolution_px: int, amp: bool, data_bytes: int,
                    optimizer_states: int = 1) -> int:
    """Estimated peak GPU memory of one trial of ``module`` (built on the meta device)."""
    saved = saved_activation_bytes(module, batch, resolution_px)
    params = sum(p.numel() for p in module.parameters()) * 4
    return (saved // 2 if amp else saved) + params * (2 + optimizer_states) + data_bytes + CONTEXT_BYTES


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def check_fits(need: int, share: float, total: int, what: str) -> None:
    """Refuses a trial whose estimate ``need`` exceeds its ``share`` of a GPU of ``total`` bytes."""
    have = share * total
    if need > have:
        raise ValueError(f"a trial of {what} needs about {gib(need)} of GPU memory but its share "
                         f"(runner.gpus_per_trial={share:g} of {gib(total)}) is {gib(have)}; raise "
                         "runner.gpus_per_trial or lower trainer.batch_size")
