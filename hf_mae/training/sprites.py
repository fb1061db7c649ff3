"""Procedural sprites with known factors of variation (a dSprites-like generator, nothing downloaded), for the
disentanglement benchmarks of QLAE (``benchmarks/qlae_disentanglement.py``) and ``hf-mae pretrain --dataset sprites``.

One white shape on black, anti-aliased (4x4 supersampling), drawn from five independent factors:

    shape     3 values: square, ellipse (2:1), triangle (equilateral)
    scale     4 values: 0.55 .. 1.0 of the largest size
    rotation  6 values: 0 .. 75 degrees in 15-degree steps (below 90, the square's symmetry: every image differs)
    x, y      6 values each: positions that keep every shape inside the frame

As dSprites, the data set is the full product of the factors (3 * 4 * 6 * 6 * 6 = 2592 images), so the factors are
exactly uniform and independent; a seed shuffles it and splits it into train (80 %) and test (20 %), disjoint.

    images, factors = make_sprites(image_size=32)          # (2592, 32, 32) uint8, (2592, 5) int64 (factor indices)
    train = sprites_dataset("train")                       # datasets.Dataset: image, label (= shape), shape, ... y
"""

from __future__ import annotations

import numpy as np

FACTOR_NAMES = ("shape", "scale", "rotation", "x", "y")
SHAPES = ("square", "ellipse", "triangle")
NUM_SCALES, NUM_ROTATIONS, NUM_POSITIONS = 4, 6, 6
FACTOR_SIZES = (len(SHAPES), NUM_SCALES, NUM_ROTATIONS, NUM_POSITIONS, NUM_POSITIONS)
SPLITS = ("train", "test")
TRAIN_FRACTION = 0.8
SUPERSAMPLE = 4  # sub-pixels per side: anti-aliased edges, so small moves change the image smoothly


def factor_grid() -> np.ndarray:
    """(2592, 5) int64: every combination of the factor indices, in C order (shape slowest, y fastest)."""
    axes = np.meshgrid(*[np.arange(size) for size in FACTOR_SIZES], indexing="ij")
    return np.stack([axis.reshape(-1) for axis in axes], axis=1).astype(np.int64)


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether the points (u, v) in the shape's own frame (unit size: the square's half side is 1) are inside."""
    if shape == 0:  # square
        return (np.abs(u) <= 1.0) & (np.abs(v) <= 1.0)
    if shape == 1:  # ellipse, semi-axes 1.2 and 0.6
        return (u / 1.2) ** 2 + (v / 0.6) ** 2 <= 1.0
    # equilateral triangle with circumradius 1.3, a vertex up (v grows downwards in image rows, so "up" is -v)
    radius = 1.3
    # three half-planes: the edge opposite each vertex lies at distance radius / 2 from the centre
    inside = np.ones_like(u, dtype=bool)
    for angle in (np.pi / 2, np.pi / 2 + 2 * np.pi / 3, np.pi / 2 + 4 * np.pi / 3):
        normal_u, normal_v = np.cos(angle), -np.sin(angle)
        inside &= -(u * normal_u + v * normal_v) <= radius / 2
    return inside


def render(factors: np.ndarray, image_size: int = 32) -> np.ndarray:
    """(n, 5) factor indices -> (n, image_size, image_size) uint8 images (0 background, 255 inside)."""
    factors = np.asarray(factors, dtype=np.int64)
    if factors.ndim != 2 or factors.shape[1] != len(FACTOR_NAMES):
        raise ValueError(f"factors must have shape (n, {len(FACTOR_NAMES)}), got {factors.shape}")
    for column, (name, size) in enumerate(zip(FACTOR_NAMES, FACTOR_SIZES)):
        if factors.size and (factors[:, column].min() < 0 or factors[:, column].max() >= size):
            raise ValueError(f"factor {name!r} must be an index in [0, {size - 1}]")
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 16:
        raise ValueError(f"image_size must be an int >= 16, got {image_size!r}")
    largest = 0.16 * image_size  # the square's half side at scale 1 (a 45-degree square reaches 1.41x that)
    scales = np.linspace(0.55, 1.0, NUM_SCALES)
    angles = np.deg2rad(np.arange(NUM_ROTATIONS) * 90.0 / NUM_ROTATIONS)
    margin = 1.5 * largest * 1.05
    positions = np.linspace(margin, image_size - margin, NUM_POSITIONS)
    # sub-pixel centres in image coordinates
    fine = (np.arange(image_size * SUPERSAMPLE) + 0.5) / SUPERSAMPLE
    rows, cols = np.meshgrid(fine, fine, indexing="ij")
    images = np.empty((len(factors), image_size, image_size), dtype=np.uint8)
    for index, (shape, scale, rotation, x, y) in enumerate(factors):
        size = largest * scales[scale]
        du, dv = (cols - positions[x]) / size, (rows - positions[y]) / size
        cos, sin = np.cos(angles[rotation]), np.sin(angles[rotation])
        u, v = cos * du + sin * dv, -sin * du + cos * dv  # rotate the sample points by -angle
        cover = _inside(int(shape), u, v).reshape(image_size, SUPERSAMPLE, image_size, SUPERSAMPLE).mean(axis=(1, 3))
        images[index] = np.round(cover * 255.0).astype(np.uint8)
    return images


def sprite_factors(seed: int = 0, split: str | None = None) -> np.ndarray:
    """(n, 5) int64 factor indices: the full grid shuffled by ``seed``; ``split`` "train" or "test" takes the first
    80 % or the rest (disjoint), None the whole grid."""
    if split is not None and split not in SPLITS:
        raise ValueError(f"split {split!r} does not exist for sprites; choose one of {', '.join(SPLITS)} (or None)")
    grid = factor_grid()
    order = np.random.RandomState(seed).permutation(len(grid))
    cut = int(round(TRAIN_FRACTION * len(grid)))
    if split == "train":
        order = order[:cut]
    elif split == "test":
        order = order[cut:]
    return grid[order]


def make_sprites(image_size: int = 32, seed: int = 0, split: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images (n, image_size, image_size) uint8, factors (n, 5) int64) of :func:`sprite_factors`."""
    factors = sprite_factors(seed, split)
    return render(factors, image_size), factors


def sprites_dataset(split: str = "train", image_size: int = 32, seed: int = 0):
    """The sprites as a ``datasets.Dataset``: ``image`` (grey PIL), ``label`` (the shape, a ClassLabel) and one int
    column per factor (``shape``, ``scale``, ``rotation``, ``x``, ``y``)."""
    import datasets
    from PIL import Image

    if split == "validation":
        split = "test"
    images, factors = make_sprites(image_size, seed, split)
    columns = {"image": [Image.fromarray(image) for image in images], "label": factors[:, 0].tolist()}
    columns.update({name: factors[:, i].tolist() for i, name in enumerate(FACTOR_NAMES)})
    features = {"image": datasets.Image(), "label": datasets.ClassLabel(names=list(SHAPES))}
    features.update({name: datasets.Value("int64") for name in FACTOR_NAMES})
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


__all__ = ["FACTOR_NAMES", "FACTOR_SIZES", "SHAPES", "factor_grid", "render", "sprite_factors", "make_sprites",
           "sprites_dataset"]
