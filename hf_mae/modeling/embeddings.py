"""Token embeddings and position tables shared by every hf-mae method.

Remote-code rule: this file imports only the standard library, torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

import torch
from torch import nn


def to_2tuple(value) -> tuple[int, int]:
    """``16 -> (16, 16)``; ``(32, 48) -> (32, 48)``; lists (as JSON stores tuples) are accepted."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"expected an int or a pair (height, width), got {value!r}")
        return int(value[0]), int(value[1])
    return int(value), int(value)


def sincos_1d(positions: torch.Tensor, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """Transformer sin-cos code of ``positions`` (n,) -> (n, dim) laid out as ``[sin | cos]``; computed in float64."""
    if dim % 2:
        raise ValueError(f"sin-cos embedding dim must be even, got {dim}")
    omega = 1.0 / temperature ** (torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0))
    angles = positions.to(torch.float64).reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


def sincos_2d(grid_size, dim: int, cls_token: bool = False, width_first: bool = True) -> torch.Tensor:
    """2D sin-cos table for a (height, width) patch grid in row-major order -> (h*w [+1], dim), float32.

    Half of the channels code the row, half the column. ``width_first=True`` puts the column code first
    (``[sin_w|cos_w|sin_h|cos_h]``): the layout of the original MAE code (whose meshgrid swaps h and w) and
    therefore of every released MAE/ViTMAE checkpoint. ``cls_token`` prepends an all-zero row.
    """
    if dim % 4:
        raise ValueError(f"2D sin-cos embedding dim must be divisible by 4, got {dim}")
    height, width = to_2tuple(grid_size)
    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    row_code, col_code = sincos_1d(rows.flatten(), dim // 2), sincos_1d(cols.flatten(), dim // 2)
    table = torch.cat([col_code, row_code] if width_first else [row_code, col_code], dim=1)
    if cls_token:
        table = torch.cat([torch.zeros(1, dim, dtype=table.dtype), table], dim=0)
    return table.float()


def interpolate_pos_embed(patch_table: torch.Tensor, old_grid, new_grid) -> torch.Tensor:
    """Resizes a patch position table (1, old_h*old_w, dim) to (1, new_h*new_w, dim) by bicubic interpolation.

    Used to run a model at another resolution or aspect ratio than it was built for.
    """
    old_grid, new_grid = to_2tuple(old_grid), to_2tuple(new_grid)
    if old_grid == new_grid:
        return patch_table
    dim = patch_table.shape[-1]
    grid = patch_table.reshape(1, *old_grid, dim).permute(0, 3, 1, 2)
    # bicubic is not implemented for bf16 on every device: compute in float32
    grid = nn.functional.interpolate(grid.float(), size=new_grid, mode="bicubic", align_corners=False)
    return grid.to(patch_table.dtype).permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim)


class PatchProjection(nn.Conv2d):
    """The Conv2d of :class:`PatchEmbedding2D`. A class of its own so that ``_init_weights`` meets the patch projection
    on the module that owns its weights (transformers skips a parent without parameters of its own)."""


class TubeletProjection(nn.Conv3d):
    """The Conv3d of :class:`TubeletEmbedding`, a class of its own for the same reason as :class:`PatchProjection`."""


class PatchEmbedding2D(nn.Module):
    """Splits (batch, channels, height, width) images into non-overlapping patches and projects each one.

    Any channel count and non-square images are supported. Output: (batch, num_patches, hidden_size), patches in
    row-major order.
    """

    def __init__(self, image_size, patch_size, num_channels: int, hidden_size: int):
        super().__init__()
        self.image_size = to_2tuple(image_size)
        self.patch_size = to_2tuple(patch_size)
        for size, patch, name in zip(self.image_size, self.patch_size, ("height", "width")):
            if size % patch:
                raise ValueError(f"image_size {name} {size} is not divisible by patch_size {patch}")
        self.num_channels = num_channels
        self.grid_size = (self.image_size[0] // self.patch_size[0], self.image_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.projection = PatchProjection(num_channels, hidden_size, kernel_size=self.patch_size, stride=self.patch_size)

    def grid_for(self, pixel_values: torch.Tensor, allow_other_size: bool = False) -> tuple[int, int]:
        """Checks ``pixel_values`` and returns its patch grid (rows, cols); raises ValueError/TypeError naming it."""
        return patch_grid_for(pixel_values, self.image_size, self.patch_size, self.num_channels, allow_other_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.projection(pixel_values.to(self.projection.weight.dtype)).flatten(2).transpose(1, 2)


def patch_grid_for(pixel_values, image_size, patch_size, num_channels: int, allow_other_size: bool = False):
    """Checks ``pixel_values`` (see :func:`check_pixel_values`) against a model's ``image_size`` / ``patch_size`` and
    returns its patch grid (rows, cols); other sizes (multiples of the patch) only with ``allow_other_size``."""
    image_size, patch_size = to_2tuple(image_size), to_2tuple(patch_size)
    check_pixel_values(pixel_values, num_channels)
    height, width = pixel_values.shape[-2:]
    if height % patch_size[0] or width % patch_size[1]:
        raise ValueError(
            f"pixel_values height and width must be divisible by the patch size {patch_size}, got {height}x{width}"
        )
    if not allow_other_size and (height, width) != image_size:
        raise ValueError(
            f"pixel_values size {height}x{width} does not match the model's image_size "
            f"{image_size[0]}x{image_size[1]}; resize the images or pass interpolate_pos_encoding=True"
        )
    return height // patch_size[0], width // patch_size[1]


def check_pixel_values(pixel_values, num_channels: int, ndim: int = 4) -> None:
    """Clear errors for the inputs users get wrong most (type, dtype, rank, empty batch, channel count)."""
    if not isinstance(pixel_values, torch.Tensor):
        raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
    if not pixel_values.is_floating_point():
        raise TypeError(
            f"pixel_values must be a floating-point tensor, got dtype {pixel_values.dtype}; "
            "use the model's processor or convert with .float()"
        )
    if pixel_values.ndim != ndim:
        raise ValueError(f"pixel_values must have {ndim} dimensions, got shape {tuple(pixel_values.shape)}")
    if pixel_values.shape[0] == 0:
        raise ValueError("pixel_values is an empty batch (batch size 0)")
    channels = pixel_values.shape[-3]
    if channels != num_channels:
        raise ValueError(f"pixel_values has {channels} channels but the model expects num_channels={num_channels}")


def sinusoid_table(num_positions: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """The Transformer's 1-D sinusoid table with sin and cos *interleaved* (channel 2i: sin, 2i + 1: cos, both at
    frequency ``temperature ** (-2i / dim)``) -> (num_positions, dim) float32; computed in float64. VideoMAE's
    ``get_sinusoid_encoding_table`` (positions over the flattened (time, row, column) tokens)."""
    if dim % 2:
        raise ValueError(f"sinusoid table dim must be even, got {dim}")
    exponent = torch.arange(dim, dtype=torch.float64).div(2, rounding_mode="floor") * 2 / dim
    angles = torch.arange(num_positions, dtype=torch.float64)[:, None] / temperature**exponent[None]
    table = torch.empty_like(angles)
    table[:, 0::2], table[:, 1::2] = angles[:, 0::2].sin(), angles[:, 1::2].cos()
    return table.float()


class TubeletEmbedding(nn.Module):
    """Splits (batch, frames, channels, height, width) clips into tubelets of ``tubelet_size`` frames x patch and
    projects each one with a Conv3d. Output: (batch, num_tokens, hidden_size), tokens ordered (time, row, column)."""

    def __init__(self, image_size, patch_size, tubelet_size: int, num_channels: int, hidden_size: int):
        super().__init__()
        self.image_size, self.patch_size = to_2tuple(image_size), to_2tuple(patch_size)
        self.tubelet_size, self.num_channels = int(tubelet_size), num_channels
        kernel = (self.tubelet_size, *self.patch_size)
        self.projection = TubeletProjection(num_channels, hidden_size, kernel_size=kernel, stride=kernel)

    def check(self, pixel_values, num_frames: int) -> None:
        """Clear errors for clips of the wrong type, rank, channel count, frame count or size."""
        check_pixel_values(pixel_values, self.num_channels, ndim=5)
        frames, _, height, width = pixel_values.shape[1:]
        if frames != num_frames:
            raise ValueError(f"pixel_values has {frames} frames but the model expects num_frames={num_frames}")
        if (height, width) != self.image_size:
            raise ValueError(
                f"pixel_values frame size {height}x{width} does not match the model's image_size "
                f"{self.image_size[0]}x{self.image_size[1]}; resize the frames (the video processor does)"
            )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        clips = pixel_values.to(self.projection.weight.dtype).transpose(1, 2)  # (batch, channels, frames, H, W)
        return self.projection(clips).flatten(2).transpose(1, 2)
