"""Multi-view projection of point clouds to depth-like images (I2P-MAE's ``proj2img``) and back-projection of
image features to the points (its ``I2P``), plain torch. Used by I2P-MAE (``i2pmae.py``); it stands on its own for
any method that teaches a point-cloud model with a 2-D image encoder.

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
# the three projections, in the official order (xyz, zxy, yzx): image rows, image columns, depth
VIEW_AXES = ((0, 1, 2), (2, 0, 1), (1, 2, 0))


class ProjectionGrid(NamedTuple):
    """Where a cloud landed on its depth images, per view; maps any point of that cloud to its pixel."""

    origin: torch.Tensor  # (batch, views, 2) the smallest (row, column) coordinates of the cloud
    cell: torch.Tensor  # (batch, views) side of a pixel in point units
    shift: torch.Tensor  # (batch, views, 2) pixels added to centre the cloud on the image
    image_size: int


def view_coordinates(points: torch.Tensor) -> torch.Tensor:
    """(batch, N, 3) -> (batch, 3 views, N, 3): each view's (row, column, depth) axes, see ``VIEW_AXES``."""
    return torch.stack([points[..., list(axes)] for axes in VIEW_AXES], dim=1)


def _unshifted_pixels(plane: torch.Tensor, origin: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """(batch, views, M, 2) coordinates -> integer pixels before centring (one pixel of margin, as the official)."""
    return torch.floor((plane - origin.unsqueeze(2)) / cell[..., None, None]) + 1


def project_to_depth_maps(
    points: torch.Tensor,
    image_size: int = 224,
    densify: int = 5,
    image_mean=IMAGENET_DEFAULT_MEAN,
    image_std=IMAGENET_DEFAULT_STD,
    return_grid: bool = False,
):
    """Depth-like images of each cloud from 3 views: (batch, N, 3) -> (batch, 3 views, 3 channels, S, S).

    Per view the first two permuted axes index the image (rows, columns) and the third is the intensity: the cloud's
    longest in-plane side spans ``S - 3`` pixels (pixel side ``cell``), each point is splatted on a
    ``densify x densify`` square around its pixel, the object is centred, the depths landing on a pixel are summed
    (scatter-add), then ``sigmoid`` (empty pixels: 0.5), copied to 3 channels and normalised with
    ``image_mean`` / ``image_std``. With ``return_grid`` also returns the :class:`ProjectionGrid` that maps points to
    pixels (:func:`point_pixels`).
    """
    views = view_coordinates(points.float())  # (B, V, N, 3)
    batch, num_views, num_points, _ = views.shape
    plane = views[..., :2]
    origin = plane.amin(dim=2)
    extent = plane.amax(dim=2) - origin
    cell = (extent.amax(dim=-1) / (image_size - 3)).clamp_min(1e-12)  # a single point: any cell size
    pixels = _unshifted_pixels(plane, origin, cell)  # (B, V, N, 2), in [1, S - 2]
    # centre the object: the middle of its pixel box (splats included: they widen it symmetrically) goes to S/2 - 1
    middle = torch.floor((pixels.amin(dim=2) + pixels.amax(dim=2)) / 2)
    shift = image_size // 2 - middle - 1
    radius = densify // 2
    steps = torch.arange(-radius, radius + 1, device=points.device, dtype=pixels.dtype)
    offsets = torch.stack(torch.meshgrid(steps, steps, indexing="ij"), dim=-1).reshape(-1, 2)  # (d*d, 2)
    splats = pixels.unsqueeze(3) + offsets + shift[:, :, None, None]  # (B, V, N, d*d, 2)
    splats = splats.clamp_(0, image_size - 1).long()  # splats at most one pixel outside: onto the border
    index = (splats[..., 0] * image_size + splats[..., 1]).reshape(batch * num_views, -1)
    depth = views[..., 2:].expand(-1, -1, -1, offsets.shape[0]).reshape(batch * num_views, -1)
    canvas = torch.zeros(batch * num_views, image_size * image_size, device=points.device, dtype=depth.dtype)
    canvas.scatter_add_(1, index, depth)
    images = torch.sigmoid(canvas).reshape(batch, num_views, 1, image_size, image_size).expand(-1, -1, 3, -1, -1)
    mean = torch.as_tensor(image_mean, dtype=images.dtype, device=images.device).view(1, 1, 3, 1, 1)
    std = torch.as_tensor(image_std, dtype=images.dtype, device=images.device).view(1, 1, 3, 1, 1)
    images = (images - mean) / std
    if return_grid:
        return images, ProjectionGrid(origin, cell, shift, image_size)
    return images


def point_pixels(points: torch.Tensor, grid: ProjectionGrid) -> torch.Tensor:
    """The (row, column) pixel of each point of the projected clouds: (batch, M, 3) -> (batch, views, M, 2) long."""
    plane = view_coordinates(points.float())[..., :2]
    pixels = _unshifted_pixels(plane, grid.origin, grid.cell) + grid.shift.unsqueeze(2)
    return pixels.clamp_(0, grid.image_size - 1).long()


def sample_at_pixels(maps: torch.Tensor, pixels: torch.Tensor, image_size: int) -> torch.Tensor:
    """Values of feature maps bicubically upsampled to ``image_size`` at given pixels: maps (batch, views, C, h, w),
    pixels (batch, views, M, 2) -> (batch, views, M, C).

    Equals ``F.interpolate(maps, image_size, mode="bicubic")`` read at the pixels (the official ``I2P``) but evaluates
    only those pixels: ``grid_sample`` at the pixel centres, border padding (= interpolate's edge clamping)."""
    batch, views, channels, height, width = maps.shape
    centres = (2 * pixels.float() + 1) / image_size - 1  # align_corners=False normalised pixel centres
    grid = centres.flip(-1).reshape(batch * views, 1, -1, 2)  # grid_sample wants (x = column, y = row)
    sampled = nn.functional.grid_sample(
        maps.reshape(batch * views, channels, height, width).float(), grid, mode="bicubic", padding_mode="border",
        align_corners=False,
    )  # (B*V, C, 1, M)
    return sampled.reshape(batch, views, channels, -1).transpose(2, 3)
