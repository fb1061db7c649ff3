"""Point-cloud data for tests, examples and benchmarks: procedural 3-D shapes, and ModelNet10 from voxel grids.

Procedural shapes (generated on the fly, nothing to download): points sampled on the *surface* of a sphere, a cube,
a cylinder, a cone, a torus, a square pyramid, a capsule and a disc, uniformly by area (each face or part is chosen
with probability proportional to its area). Every cloud then gets a random anisotropic scale (per axis
U[0.75, 1.25]), a uniformly random 3-D rotation and Gaussian noise (std 0.01), so a class is a shape, not a pose.

    points, labels = make_shapes(num_per_class=32, num_points=1024, seed=0)   # (256, 1024, 3) float32, (256,)
    train = shapes_dataset("train")          # datasets.Dataset: "points" (Array2D) + "label" (ClassLabel)
"""

from __future__ import annotations

import numpy as np

SHAPE_CLASSES = ("sphere", "cube", "cylinder", "cone", "torus", "pyramid", "capsule", "disc")
SPLITS = ("train", "test")
# ModelNet10's classes in the order of its labels (alphabetical, as the official split files)
MODELNET10_CLASSES = ("bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet")

SCALE_RANGE = (0.75, 1.25)
NOISE_STD = 0.01


def _pick_parts(rng, n: int, areas) -> np.ndarray:
    """Which part (index into ``areas``) each of ``n`` points lies on, with probability proportional to area."""
    areas = np.asarray(areas, dtype=np.float64)
    return rng.choice(len(areas), size=n, p=areas / areas.sum())


def _disc(rng, n: int, radius: float = 1.0) -> np.ndarray:
    """(n, 2) uniform on a disc (sqrt of a uniform radius: area grows with r^2)."""
    r = radius * np.sqrt(rng.random(n))
    angle = rng.uniform(0, 2 * np.pi, n)
    return np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)


def _triangle(rng, n: int, a, b, c) -> np.ndarray:
    """(n, 3) uniform on the triangle abc (the square-root trick on barycentric coordinates)."""
    u, v = np.sqrt(rng.random((n, 1))), rng.random((n, 1))
    return (1 - u) * np.asarray(a) + u * (1 - v) * np.asarray(b) + u * v * np.asarray(c)


def _sphere(rng, n, radius=1.0):
    x = rng.normal(size=(n, 3))
    return radius * x / np.linalg.norm(x, axis=1, keepdims=True)


def _cube(rng, n):
    face = rng.integers(0, 6, n)  # six equal faces
    points = rng.uniform(-1, 1, (n, 3))
    axis, sign = face % 3, np.where(face < 3, -1.0, 1.0)
    points[np.arange(n), axis] = sign
    return points


def _cylinder(rng, n, radius=1.0, half_height=1.0):
    """Side (area 2 pi r h) and two caps (pi r^2 each)."""
    part = _pick_parts(rng, n, [2 * np.pi * radius * 2 * half_height, np.pi * radius**2, np.pi * radius**2])
    angle = rng.uniform(0, 2 * np.pi, n)
    points = np.stack([radius * np.cos(angle), radius * np.sin(angle), rng.uniform(-half_height, half_height, n)], 1)
    caps = part > 0
    points[caps, :2] = _disc(rng, int(caps.sum()), radius)
    points[caps, 2] = np.where(part[caps] == 1, -half_height, half_height)
    return points


def _cone(rng, n):
    """Apex (0, 0, 1), base radius 1 at z = -1: side (pi r l, slant l = sqrt 5) and base (pi r^2)."""
    part = _pick_parts(rng, n, [np.pi * np.sqrt(5.0), np.pi])
    t = np.sqrt(rng.random(n))  # distance from the apex as a fraction: the circumference grows linearly
    angle = rng.uniform(0, 2 * np.pi, n)
    points = np.stack([t * np.cos(angle), t * np.sin(angle), 1 - 2 * t], axis=1)
    base = part == 1
    points[base, :2] = _disc(rng, int(base.sum()))
    points[base, 2] = -1.0
    return points


def _torus(rng, n, major=1.0, minor=0.35):
    """Uniform by area: the tube angle phi is accepted with probability (R + r cos phi) / (R + r)."""
    phis = []
    while sum(len(p) for p in phis) < n:
        phi = rng.uniform(0, 2 * np.pi, 2 * n)
        phis.append(phi[rng.random(2 * n) < (major + minor * np.cos(phi)) / (major + minor)])
    phi = np.concatenate(phis)[:n]
    theta = rng.uniform(0, 2 * np.pi, n)
    ring = major + minor * np.cos(phi)
    return np.stack([ring * np.cos(theta), ring * np.sin(theta), minor * np.sin(phi)], axis=1)


def _pyramid(rng, n):
    """Square base [-1, 1]^2 at z = -1 (area 4) and apex (0, 0, 1): four triangles of area sqrt 5."""
    corners = [(-1, -1, -1), (1, -1, -1), (1, 1, -1), (-1, 1, -1)]
    part = _pick_parts(rng, n, [4.0] + [np.sqrt(5.0)] * 4)
    points = np.empty((n, 3))
    base = part == 0
    points[base] = np.concatenate([rng.uniform(-1, 1, (int(base.sum()), 2)), -np.ones((int(base.sum()), 1))], 1)
    for side in range(4):
        chosen = part == side + 1
        points[chosen] = _triangle(rng, int(chosen.sum()), (0, 0, 1), corners[side], corners[(side + 1) % 4])
    return points


def _capsule(rng, n, radius=0.5, half_height=0.5):
    """A cylinder side (2 pi r h) with two hemispherical ends (4 pi r^2 together)."""
    part = _pick_parts(rng, n, [2 * np.pi * radius * 2 * half_height, 4 * np.pi * radius**2])
    angle = rng.uniform(0, 2 * np.pi, n)
    points = np.stack([radius * np.cos(angle), radius * np.sin(angle), rng.uniform(-half_height, half_height, n)], 1)
    ends = part == 1
    sphere = _sphere(rng, int(ends.sum()), radius)
    sphere[:, 2] += np.sign(sphere[:, 2]) * half_height  # each half of the sphere moves to its end
    points[ends] = sphere
    return points


def _flat_disc(rng, n):
    return np.concatenate([_disc(rng, n), np.zeros((n, 1))], axis=1)


SAMPLERS = {
    "sphere": _sphere, "cube": _cube, "cylinder": _cylinder, "cone": _cone, "torus": _torus, "pyramid": _pyramid,
    "capsule": _capsule, "disc": _flat_disc,
}  # fmt: skip


def random_rotation(rng) -> np.ndarray:
    """A uniformly random 3x3 rotation (QR of a Gaussian matrix, signs fixed so the law is Haar, det +1)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def make_shapes(num_per_class: int, num_points: int = 1024, seed=0, classes=None) -> tuple[np.ndarray, np.ndarray]:
    """``num_per_class`` clouds of every class: points (n, num_points, 3) float32 and labels (n,) int64 (the index
    into ``classes``), class by class. The same arguments give the same clouds.

    classes: names from ``SHAPE_CLASSES`` (default: all of them).
    seed: anything ``numpy.random.default_rng`` takes (an int, or a tuple such as (seed, split)).
    """
    classes = SHAPE_CLASSES if classes is None else tuple(classes)
    unknown = [name for name in classes if name not in SAMPLERS]
    if unknown or not classes:
        raise ValueError(f"classes must be a non-empty list of {list(SHAPE_CLASSES)}, got {list(classes)}")
    for name, value in (("num_per_class", num_per_class), ("num_points", num_points)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    rng = np.random.default_rng(seed)
    points = np.empty((len(classes) * num_per_class, num_points, 3), dtype=np.float32)
    labels = np.repeat(np.arange(len(classes)), num_per_class)
    for index, label in enumerate(labels):
        cloud = SAMPLERS[classes[label]](rng, num_points)
        cloud = cloud * rng.uniform(*SCALE_RANGE, size=3)  # anisotropic scale in the shape's own frame
        cloud = cloud @ random_rotation(rng).T
        points[index] = cloud + rng.normal(scale=NOISE_STD, size=cloud.shape)
    return points, labels.astype(np.int64)


def _to_dataset(points: np.ndarray, labels: np.ndarray, names):
    import datasets

    features = datasets.Features(
        {"points": datasets.Array2D(shape=points.shape[1:], dtype="float32"), "label": datasets.ClassLabel(names=list(names))}
    )
    return datasets.Dataset.from_dict({"points": points, "label": labels}, features=features)


def shapes_dataset(split: str = "train", num_per_class: int = 64, num_points: int = 1024, classes=None, seed: int = 0):
    """The procedural shapes as a ``datasets.Dataset``: ``points`` (num_points, 3) float32 and ``label`` (ClassLabel).
    The splits draw from different random streams (``(seed, 0)`` for train, ``(seed, 1)`` for test)."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} does not exist for shapes; choose one of {SPLITS}")
    classes = SHAPE_CLASSES if classes is None else tuple(classes)
    points, labels = make_shapes(num_per_class, num_points, seed=(seed, SPLITS.index(split)), classes=classes)
    return _to_dataset(points, labels, classes)


def modelnet10_points(npz_path, split: str = "train", num_points: int = 1024, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """ModelNet10 clouds from the 30^3 occupancy grids of ``npz_path`` (``X_train``/``y_train``, ``X_test``/``y_test``):
    ``num_points`` points per grid, each in an occupied voxel drawn uniformly (with replacement), placed uniformly
    inside it (voxel centre + jitter of up to half a voxel), in [-1, 1]^3. Empty grids are dropped.
    Returns points (n, num_points, 3) float32 and labels (n,) int64 (see ``MODELNET10_CLASSES``)."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} does not exist for modelnet10; choose one of {SPLITS}")
    with np.load(npz_path) as archive:
        grids, labels = archive[f"X_{split}"], archive[f"y_{split}"]
    rng = np.random.default_rng((seed, SPLITS.index(split)))
    size = grids.shape[1]
    keep = grids.reshape(len(grids), -1).any(axis=1)
    grids, labels = grids[keep], labels[keep]
    points = np.empty((len(grids), num_points, 3), dtype=np.float32)
    for index, grid in enumerate(grids):
        occupied = np.argwhere(grid > 0)
        voxels = occupied[rng.integers(0, len(occupied), num_points)]
        points[index] = (voxels + rng.random((num_points, 3))) * (2.0 / size) - 1.0
    return points, labels.astype(np.int64)


def modelnet10_dataset(npz_path, split: str = "train", num_points: int = 1024, seed: int = 0):
    """:func:`modelnet10_points` as a ``datasets.Dataset`` with ``points`` and ``label`` columns."""
    points, labels = modelnet10_points(npz_path, split, num_points, seed)
    return _to_dataset(points, labels, MODELNET10_CLASSES)


__all__ = [
    "SHAPE_CLASSES", "MODELNET10_CLASSES", "make_shapes", "shapes_dataset", "modelnet10_points", "modelnet10_dataset",
    "random_rotation",
]  # fmt: skip
