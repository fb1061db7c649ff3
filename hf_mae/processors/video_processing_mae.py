"""Video processor for masked video models (VideoMAE and its family): frame sampling, then the same resize, crop,
rescale and normalisation for every frame of a clip; ``pixel_values`` of shape (batch, frames, channels, H, W).

Inputs, one video or a batch of them:
- a list of frames (PIL images, (H, W, C) numpy arrays or (C, H, W) torch tensors), a (T, H, W, C) numpy array or
  a (T, C, H, W) tensor is ONE video; a list of those is a batch;
- a path (``str`` / ``os.PathLike``) to a video file, decoded with PyAV (``pip install av``; it bundles FFmpeg).

Frame sampling (``frame_sampling``):
- ``"stride"`` (VideoMAE on Kinetics): ``num_frames`` frames ``frame_stride`` apart, a window centred in the video,
  or at a random start when ``random_sampling=True`` (training);
- ``"segment"`` (VideoMAE on Something-Something, TSN): the video is cut into ``num_frames`` equal segments and
  the middle frame of each is taken, or a random one with ``random_sampling=True``.
Videos shorter than the window repeat their last frame. Random draws use torch's global generator.
``do_sample_frames=False`` keeps every frame as given (the videos of a batch must then have equal lengths).

transformers' pipelines: ``pipeline("video-classification")`` calls a video processor as
``processor(path, num_frames=config.num_frames, do_sample_frames=True, return_tensors="pt")``; this processor
accepts exactly that and samples as above, so the pipeline sees the frames hf-mae's own processing sees. It is a
Pillow-backed image processor (transformers' ``BaseVideoProcessor`` needs torchvision for every resize), saved to
``preprocessor_config.json`` as before; ``AutoVideoProcessor`` finds it through the ``AutoImageProcessor`` entry of
that file's ``auto_map`` (remote code) or through ``hf_mae.auto.register_video_processor`` (hf-mae imported).

Remote-code rule: this file imports only transformers, torch, numpy and (lazily) PyAV.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.processing_utils import ImagesKwargs

from .image_processing_mae import image_size_pair

FRAME_SAMPLINGS = ("stride", "segment")


class VideoKwargs(ImagesKwargs, total=False):
    num_frames: int
    frame_stride: int
    frame_sampling: str
    random_sampling: bool
    do_sample_frames: bool  # transformers' name (VideosKwargs); the video pipeline passes it


# the call arguments that choose frames; every other one goes to the per-frame image processing
SAMPLING_KWARGS = ("num_frames", "frame_stride", "frame_sampling", "random_sampling", "do_sample_frames")


def open_video(path):
    """``av.open(path)``, with clear errors for a missing PyAV or a missing file."""
    try:
        import av
    except ImportError as error:
        raise ImportError(
            f"reading the video file {os.fspath(path)!r} needs PyAV: `pip install av` (or `pip install hf-mae[video]`); "
            "or pass the frames themselves (a list of images or a (T, H, W, C) array)"
        ) from error
    if not os.path.isfile(path):
        raise FileNotFoundError(f"video file {os.fspath(path)!r} does not exist")
    return av.open(os.fspath(path))


def read_video(path, indices=None) -> list[np.ndarray]:
    """The (H, W, 3) uint8 RGB frames of the video file at ``path`` (only those at ``indices`` when given)."""
    wanted = None if indices is None else set(int(i) for i in indices)
    frames = {}
    with open_video(path) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if wanted is None or index in wanted:
                frames[index] = frame.to_ndarray(format="rgb24")
            if wanted is not None and index >= max(wanted):
                break
    if wanted is None:
        return [frames[i] for i in sorted(frames)]
    if not frames:
        raise ValueError(f"video file {os.fspath(path)!r} has no decodable frames")
    last = max(frames)
    return [frames[min(int(i), last)] for i in indices]


def count_frames(path) -> int:
    """Number of frames of a video file (the container's count, or a full decode when it has none)."""
    with open_video(path) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for _ in container.decode(video=0))


def sample_frame_indices(length: int, num_frames: int, frame_stride: int = 1, frame_sampling: str = "stride",
                         random_sampling: bool = False) -> list[int]:
    """``num_frames`` frame indices into a video of ``length`` frames (see the module docstring); indices past the
    end are clamped to the last frame."""
    if length < 1:
        raise ValueError(f"the video has no frames (length {length})")
    if frame_sampling == "stride":
        span = (num_frames - 1) * frame_stride + 1
        slack = max(length - span, 0)
        start = int(torch.randint(0, slack + 1, ()).item()) if random_sampling else slack // 2
        indices = [start + i * frame_stride for i in range(num_frames)]
    elif frame_sampling == "segment":
        bounds = np.linspace(0, length, num_frames + 1)
        indices = []
        for low, high in zip(bounds[:-1], bounds[1:]):
            if random_sampling and int(high) > int(low):
                indices.append(int(torch.randint(int(low), int(high), ()).item()))
            else:
                indices.append(int((low + high) / 2))
    else:
        raise ValueError(f"frame_sampling must be one of {FRAME_SAMPLINGS}, got {frame_sampling!r}")
    return [min(i, length - 1) for i in indices]


def _is_path(value) -> bool:
    return isinstance(value, (str, os.PathLike))


def _is_one_video(value) -> bool:
    """A path, a 4-D array / tensor, or a list of frames (each a PIL image or a 2-D / 3-D array)."""
    if _is_path(value):
        return True
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.ndim == 4
    if isinstance(value, (list, tuple)) and value:
        first = value[0]
        return hasattr(first, "convert") or (isinstance(first, (np.ndarray, torch.Tensor)) and first.ndim in (2, 3))
    return False


def _as_frames(video) -> list:
    if isinstance(video, torch.Tensor):
        return list(video.unbind(0))
    if isinstance(video, np.ndarray):
        return list(video)
    return list(video)


class MAEVideoProcessor(PilBackend):
    """Samples ``num_frames`` frames per video and processes them like ``VideoMAEImageProcessor`` (shortest edge
    resized to ``size["shortest_edge"]``, centre crop ``crop_size``, bilinear, ImageNet normalisation)."""

    valid_kwargs = VideoKwargs
    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BILINEAR
    image_mean = IMAGENET_DEFAULT_MEAN  # the official VideoMAE normalisation
    image_std = IMAGENET_DEFAULT_STD
    size = {"shortest_edge": 224}
    default_to_square = False
    crop_size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    num_frames = 16
    frame_stride = 4
    frame_sampling = "stride"
    random_sampling = False
    do_sample_frames = True
    training_call_kwargs = {"random_sampling": True}  # what ``hf-mae pretrain`` passes (see training/data.py)

    @classmethod
    def from_model_config(cls, config, **settings):
        """The processor for ``config``: ``num_frames`` frames, shortest edge resized to and centre crop of its
        ``image_size``, plus the fixed ``settings``."""
        height, width = image_size_pair(config.image_size)
        return cls(num_frames=config.num_frames, size={"shortest_edge": min(height, width)},
                   crop_size={"height": height, "width": width}, **settings)

    def __call__(self, videos, **kwargs) -> BatchFeature:
        """``videos``: one video or a list of videos (see the module docstring). Returns ``pixel_values`` of shape
        (batch, num_frames, channels, height, width) with ``return_tensors="pt"``; call-time ``size``,
        ``do_normalize``, ... override the processor's settings as in any image processor."""
        sampling = {key: kwargs.pop(key, getattr(self, key)) for key in SAMPLING_KWARGS}
        num_frames, stride = sampling["num_frames"], sampling["frame_stride"]
        for name, value in (("num_frames", num_frames), ("frame_stride", stride)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if sampling["frame_sampling"] not in FRAME_SAMPLINGS:
            raise ValueError(f"frame_sampling must be one of {FRAME_SAMPLINGS}, got {sampling['frame_sampling']!r}")
        if not isinstance(sampling["do_sample_frames"], bool):
            raise TypeError(f"do_sample_frames must be True or False, got {sampling['do_sample_frames']!r}")
        batch = [videos] if _is_one_video(videos) else list(videos) if isinstance(videos, (list, tuple)) else []
        if not batch or not all(_is_one_video(video) for video in batch):
            raise TypeError(
                "videos must be a video (a path, a list of frames, a (T, H, W, C) array or a (T, C, H, W) tensor) "
                f"or a non-empty list of videos, got {type(videos).__name__}"
            )
        return_tensors = kwargs.pop("return_tensors", None)
        clips = [self._sampled_frames(video, sampling) for video in batch]
        lengths = sorted({len(clip) for clip in clips})
        if len(lengths) > 1:
            raise ValueError(
                f"with do_sample_frames=False the videos of a batch must have equal lengths, got lengths {lengths}"
            )
        frames = [frame for clip in clips for frame in clip]
        pixel_values = super().__call__(frames, return_tensors="pt", **kwargs)["pixel_values"]
        pixel_values = pixel_values.reshape(len(batch), lengths[0], *pixel_values.shape[1:])
        return BatchFeature({"pixel_values": pixel_values}, tensor_type=return_tensors)

    @staticmethod
    def _sampled_frames(video, sampling: dict) -> list:
        """The frames of one video that ``sampling`` (the SAMPLING_KWARGS values) selects."""
        if not sampling["do_sample_frames"]:
            return read_video(video) if _is_path(video) else _as_frames(video)
        length = count_frames(video) if _is_path(video) else len(_as_frames(video))
        indices = sample_frame_indices(length, sampling["num_frames"], sampling["frame_stride"],
                                       sampling["frame_sampling"], sampling["random_sampling"])
        if _is_path(video):
            return read_video(video, indices)
        clip = _as_frames(video)
        return [clip[i] for i in indices]


__all__ = ["MAEVideoProcessor", "read_video", "sample_frame_indices"]
