"""Optimisation pieces shared by pre-training and fine-tuning: parameter groups (no weight decay on norms,
biases, position embeddings and tokens; optional per-parameter lr scale for layer-wise decay), MAE's lr scaling
rule and the pre-training default built on it for small batches, AdamW and the warm-up + cosine schedule."""

from __future__ import annotations

import math
from typing import Callable

import torch

# Names that mark parameters that must not be decayed even when they are not 1-D (cls/mask tokens, position tables,
# the latent codebooks of ``quantization.LatentQuantizer``, which QLAE's official code leaves "unregularized").
NO_DECAY_KEYWORDS = ("token", "pos_embed", "position", "codebook")


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """True for norms and biases (every 1-D parameter), position embeddings, cls / mask tokens and latent codebooks."""
    return param.ndim <= 1 or any(key in name for key in NO_DECAY_KEYWORDS)


def param_groups(
    model: torch.nn.Module,
    weight_decay: float,
    lr: float | None = None,
    lr_scale: Callable[[str], float] | None = None,
) -> list[dict]:
    """AdamW parameter groups of the trainable parameters of ``model``.

    One group per (decayed or not, lr scale). ``lr_scale(name) -> float`` multiplies the learning rate of each
    parameter (e.g. layer-wise lr decay in fine-tuning); each group keeps it as ``"lr_scale"``, and when ``lr`` is
    given its ``"lr"`` is ``lr * lr_scale`` (an LR scheduler then scales every group from there).
    """
    groups: dict[tuple[bool, float], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:  # frozen teachers etc. stay out of the optimiser
            continue
        decay = not no_weight_decay(name, param)
        scale = float(lr_scale(name)) if lr_scale is not None else 1.0
        group = groups.setdefault(
            (decay, scale),
            {"params": [], "param_names": [], "weight_decay": weight_decay if decay else 0.0, "lr_scale": scale},
        )
        group["params"].append(param)
        group["param_names"].append(name)
    result = list(groups.values())
    if lr is not None:
        for group in result:
            group["lr"] = lr * group["lr_scale"]
    return result


def scaled_lr(base_lr: float, effective_batch_size: int) -> float:
    """MAE's linear scaling rule: ``lr = base_lr * effective_batch_size / 256``."""
    return base_lr * effective_batch_size / 256


def small_batch_lr(base_lr: float, effective_batch_size: int, reference_batch: int) -> float:
    """``hf-mae pretrain``'s default lr: the paper's linear rule ``base_lr * batch / 256`` at and above the paper's
    batch ``reference_batch``; below it, square-root scaling from the paper's lr,
    ``base_lr * reference_batch / 256 * sqrt(batch / reference_batch)`` (Adam's rule: Malladi et al., 2022).
    The linear rule taken down to a batch 64 times smaller gives a tiny model a 64x smaller lr, which barely trains
    it (the figures are in the README)."""
    if effective_batch_size >= reference_batch:
        return scaled_lr(base_lr, effective_batch_size)
    return scaled_lr(base_lr, reference_batch) * math.sqrt(effective_batch_size / reference_batch)


def build_adamw(
    model: torch.nn.Module,
    lr: float,
    weight_decay: float = 0.05,
    betas: tuple[float, float] = (0.9, 0.95),
    lr_scale: Callable[[str], float] | None = None,
) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups` with MAE's betas (0.9, 0.95)."""
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay}")
    # The fused kernel (CPU and CUDA) is 4-5x faster than the default foreach one on this project's CPUs
    # (benchmarks/RESULTS.md); it needs floating-point parameters on one of those devices.
    params = [p for p in model.parameters() if p.requires_grad]
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(param_groups(model, weight_decay, lr, lr_scale), lr=lr, betas=betas, fused=fused)


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier at optimiser step ``step`` (0-based): linear warm-up to 1 over ``warmup_steps`` steps
    (the first step already gets ``1 / warmup_steps``), then a half cosine that reaches 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def warmup_cosine_schedule(optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` following :func:`warmup_cosine`; call ``step()`` once per optimiser step."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be >= 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps={total_steps}], got {warmup_steps}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_cosine(step, warmup_steps, total_steps)
    )
