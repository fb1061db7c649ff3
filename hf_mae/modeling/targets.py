"""Reconstruction targets. For now: (normalised) pixels of each patch.

Patch vectors are laid out (ph, pw, channels), the order of MAE's ``patchify`` (``nchpwq->nhwpqc``), so
hf-mae's decoder outputs are interchangeable with MAE's and transformers' ViTMAE's.

Remote-code rule: this file imports only the standard library and torch (see DESIGN.md).
"""

from __future__ import annotations

import torch


def patchify(pixel_values: torch.Tensor, patch_size) -> torch.Tensor:
    """(batch, channels, H, W) -> (batch, (H/ph)*(W/pw), ph*pw*channels)."""
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    batch, channels, height, width = pixel_values.shape
    rows, cols = height // ph, width // pw
    patches = pixel_values.reshape(batch, channels, rows, ph, cols, pw).permute(0, 2, 4, 3, 5, 1)
    return patches.reshape(batch, rows * cols, ph * pw * channels)


def unpatchify(patches: torch.Tensor, patch_size, grid_size, num_channels: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: (batch, rows*cols, ph*pw*channels) -> (batch, channels, rows*ph, cols*pw)."""
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    rows, cols = grid_size
    batch, num_patches, _ = patches.shape
    if num_patches != rows * cols:
        raise ValueError(f"patches hold {num_patches} patches but grid_size {rows}x{cols} needs {rows * cols}")
    images = patches.reshape(batch, rows, cols, ph, pw, num_channels).permute(0, 5, 1, 3, 2, 4)
    return images.reshape(batch, num_channels, rows * ph, cols * pw)


def patch_statistics(patches: torch.Tensor, eps: float = 1e-6):
    """Per-patch mean and std (unbiased variance + eps, as MAE), each (batch, num_patches, 1)."""
    mean = patches.mean(dim=-1, keepdim=True)
    std = (patches.var(dim=-1, keepdim=True) + eps) ** 0.5
    return mean, std


def pixel_target(pixel_values: torch.Tensor, patch_size, norm_pix: bool) -> torch.Tensor:
    """The MAE target: patchified pixels, each patch normalised to zero mean / unit variance if ``norm_pix``."""
    target = patchify(pixel_values, patch_size)
    if norm_pix:
        mean, std = patch_statistics(target)
        target = (target - mean) / std
    return target
