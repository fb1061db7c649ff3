"""Synthetic clips for video tests (no video data set can be downloaded here): bright squares moving at a known
velocity over a dark background, and a writer that encodes them to files with PyAV."""

from pathlib import Path

import numpy as np

# (dy, dx) pixels per frame of each motion class
MOTIONS = {"right": (0, 1), "left": (0, -1), "down": (1, 0), "up": (-1, 0)}


def moving_square(motion: str, frames: int = 16, size: int = 32, square: int = 8, seed: int = 0) -> np.ndarray:
    """(frames, size, size, 3) uint8: a square of side ``square`` with a random colour and start, moving by
    ``MOTIONS[motion]`` pixels per frame (wrapping around the border)."""
    rng = np.random.default_rng(seed)
    dy, dx = MOTIONS[motion]
    colour = rng.integers(128, 256, 3)
    y0, x0 = rng.integers(0, size, 2)
    clip = np.full((frames, size, size, 3), 16, np.uint8)
    for t in range(frames):
        rows = (y0 + dy * t + np.arange(square)) % size
        cols = (x0 + dx * t + np.arange(square)) % size
        clip[t][np.ix_(rows, cols)] = colour
    return clip


def write_clip(path, clip: np.ndarray, fps: int = 10) -> Path:
    """Encodes (frames, H, W, 3) uint8 to ``path`` (MPEG-4 part 2 in .mp4; lossy, within a few levels)."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = clip.shape[1:3]
        stream.pix_fmt = "yuv420p"
        for frame in clip:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_motion_dataset(folder, per_class: int = 4, frames: int = 16, size: int = 32, splits=("train",)) -> Path:
    """``folder/<split>/<motion>/<i>.mp4`` for every motion class: a video folder ``hf-mae pretrain`` reads."""
    folder = Path(folder)
    for split_index, split in enumerate(splits):
        for motion in MOTIONS:
            for i in range(per_class):
                seed = 1000 * split_index + 10 * list(MOTIONS).index(motion) + i
                write_clip(folder / split / motion / f"{i}.mp4", moving_square(motion, frames, size, seed=seed))
    return folder
