"""``hf-mae embed-segments``: LV-MAE's offline step. Long videos are cut into fixed-length segments, each segment is
embedded once by a frozen Hugging Face encoder, and the (segments, dim) embeddings of every video are cached on disk,
so that pre-training never decodes a video again.

    hf-mae embed-segments videos/ --encoder openai/clip-vit-base-patch32 --cache-dir cache/ --dataset-dir data/
    hf-mae pretrain --model lvmae-tiny --dataset data/ --output-dir runs/lvmae \
        --config-overrides embedding_dim=512 ...

- Segments: ``segment_seconds`` of video (LV-MAE: 5 s) at the file's frame rate (frame arrays: ``fps``); from each,
  ``frames_per_segment`` frames in the middle of equal sub-windows (LanguageBind samples 8 uniformly). A last,
  shorter segment is kept when it covers at least ``min_segment_fraction`` of a segment [ours: 0.5], and a video
  shorter than that still gets one. Files are decoded as a stream: only the sampled frames are held.
- Encoder: any model given by name/path, by a config dict (``{"model_type": "vit", ...}``, randomly initialised:
  tests) or as an instance. Video models (``input_modalities`` holds "video") embed the clip (1, T, C, H, W); image
  models embed each frame and the frame vectors are averaged. The vector is ``get_image_features`` (CLIP-like dual
  encoders: the shared image-text space), else ``pooler_output``, else the mean of ``last_hidden_state``. hf-mae's
  own models are called with ``mask_ratio=0``.
- Cache: one safetensors file per video (``embeddings``: (segments, dim) float32, and the video, encoder and
  segmenting in its metadata), written to a temporary file and renamed; a video whose file exists is skipped.
  ``build_dataset`` gathers a cache into a ``datasets`` folder (``train.parquet``: ``inputs_embeds``, ``video``,
  ``num_segments`` and ``label`` when known) that ``hf-mae pretrain`` reads.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import os
from pathlib import Path

import numpy as np
import torch

from ..files import replace_atomically
from ..modeling.embeddings import to_2tuple
from ..processors.video_processing_mae import MAEVideoProcessor, open_video, sample_frame_indices

CACHE_SUFFIX = ".safetensors"


def load_encoder(encoder):
    """A frozen encoder in eval mode from a model instance, a Hugging Face name / folder, or a config dict with a
    ``model_type`` (a randomly initialised model of that type; nothing is downloaded)."""
    from transformers import AutoConfig, AutoModel

    if isinstance(encoder, torch.nn.Module):
        model = encoder
    elif isinstance(encoder, (str, os.PathLike)):
        from .arguments import check_model_path

        model = AutoModel.from_pretrained(check_model_path(encoder, "encoder", what="a model folder"))
    elif isinstance(encoder, dict):
        if "model_type" not in encoder:
            raise ValueError(f"encoder config dict needs a 'model_type' key, got keys {sorted(encoder)}")
        settings = dict(encoder)
        model = AutoModel.from_config(AutoConfig.for_model(settings.pop("model_type"), **settings))
    else:
        raise TypeError(
            f"encoder must be a torch.nn.Module, a model name or folder, or a config dict, got {type(encoder).__name__}"
        )
    return model.eval().requires_grad_(False)


def cache_name(video) -> str:
    """The cache file name of a video path: its stem plus a hash of its absolute path (two ``clip.mp4`` in different
    folders do not collide)."""
    path = os.path.abspath(os.fspath(video))
    return f"{Path(path).stem}-{hashlib.sha1(path.encode()).hexdigest()[:12]}{CACHE_SUFFIX}"


def load_cached(path) -> tuple[torch.Tensor, dict]:
    """(embeddings (segments, dim) float32, metadata dict) of one cache file."""
    from safetensors import safe_open

    with safe_open(os.fspath(path), framework="pt") as handle:
        return handle.get_tensor("embeddings"), dict(handle.metadata() or {})


class SegmentEmbedder:
    """Cuts videos into segments and embeds each with a frozen encoder (see the module docstring).

    encoder: a model instance, a name / folder, or a config dict. processor: turns a list of segments (each a list of
    ``frames_per_segment`` frames) into ``pixel_values`` (segments, frames, C, H, W); default: an MAEVideoProcessor
    at the encoder's ``image_size`` with ImageNet normalisation (pass the encoder's own for its normalisation).
    segment_seconds: seconds per segment; fps: frame rate of frame arrays (files use their own).
    frames_per_segment: frames sampled per segment. batch_size: segments per encoder call.
    """

    def __init__(self, encoder, processor=None, segment_seconds: float = 5.0, frames_per_segment: int = 8,
                 fps: float | None = None, batch_size: int = 16, min_segment_fraction: float = 0.5):
        if not segment_seconds > 0:
            raise ValueError(f"segment_seconds must be > 0, got {segment_seconds!r}")
        for name, value in (("frames_per_segment", frames_per_segment), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if fps is not None and not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps!r}")
        if not 0.0 <= min_segment_fraction <= 1.0:
            raise ValueError(f"min_segment_fraction must be in [0, 1], got {min_segment_fraction!r}")
        self.encoder_name = encoder if isinstance(encoder, (str, os.PathLike)) else type(encoder).__name__
        if isinstance(encoder, dict):
            self.encoder_name = f"random {encoder.get('model_type')}"
        self.encoder = load_encoder(encoder)
        self.segment_seconds, self.frames_per_segment, self.fps = float(segment_seconds), frames_per_segment, fps
        self.batch_size, self.min_segment_fraction = batch_size, min_segment_fraction
        if processor is None:
            height, width = to_2tuple(getattr(self.encoder.config, "image_size", 224))
            processor = MAEVideoProcessor(
                num_frames=frames_per_segment, frame_sampling="segment",
                size={"height": height, "width": width}, do_center_crop=False,
            )  # fmt: skip
        self.processor = processor
        self.video_encoder = "video" in (getattr(self.encoder, "input_modalities", None) or ())
        self.call_kwargs = {"mask_ratio": 0.0} if "mask_ratio" in inspect.signature(self.encoder.forward).parameters else {}

    @classmethod
    def from_config(cls, config, encoder=None, **kwargs) -> "SegmentEmbedder":
        """The embedder an LVMAEConfig names: ``encoder`` (an instance) or else the config's
        ``segment_encoder_name_or_path`` / ``segment_encoder_config``, with its segment length and frame count."""
        if encoder is None:
            encoder = config.segment_encoder_name_or_path or config.segment_encoder_config
        if encoder is None:
            raise ValueError("the config names no segment encoder (segment_encoder_name_or_path / _config): pass encoder=")
        kwargs.setdefault("segment_seconds", config.segment_seconds)
        kwargs.setdefault("frames_per_segment", config.frames_per_segment)
        return cls(encoder, **kwargs)

    # ------------------------------------------------------------------------------------------ segmenting

    def _frames(self, video, fps):
        """(frame rate, iterator over the video's frames); a path is decoded as a stream with PyAV."""
        if isinstance(video, (str, os.PathLike)):
            container = open_video(video)  # clear errors for a missing PyAV or file
            rate = float(container.streams.video[0].average_rate or fps or 0)

            def decode():
                with container:
                    for frame in container.decode(video=0):
                        yield frame.to_ndarray(format="rgb24")

            return rate, decode()
        rate = fps or self.fps
        if rate is None:
            raise ValueError("fps is required for frame arrays (the segment length is given in seconds)")
        return float(rate), iter(video)

    def segments(self, video, fps: float | None = None):
        """Yields each segment's sampled frames (a list of ``frames_per_segment`` frames, fewer for a short tail).

        video: a file path, a (T, H, W, C) array, a (T, C, H, W) tensor or a list of frames."""
        rate, frames = self._frames(video, fps)
        if not rate > 0:
            raise ValueError(f"the frame rate of {video!r} is unknown; pass fps")
        length = max(1, round(rate * self.segment_seconds))  # frames per segment
        wanted = sample_frame_indices(length, self.frames_per_segment, frame_sampling="segment")
        picked, position, emitted = {}, 0, 0
        for frame in frames:
            if position in wanted:
                picked[position] = frame
            position += 1
            if position == length:
                yield [picked[i] for i in wanted]
                picked, position, emitted = {}, 0, emitted + 1
        if position and (position >= self.min_segment_fraction * length or not emitted):
            yield [picked[i] for i in wanted if i in picked]

    # ------------------------------------------------------------------------------------------- embedding

    @torch.no_grad()
    def pool(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """pixel_values (segments, frames, C, H, W) -> one vector per segment (segments, dim), float32."""
        inputs = pixel_values if self.video_encoder else pixel_values.flatten(0, 1)
        inputs = inputs.to(next(self.encoder.parameters()).dtype)
        if not self.video_encoder and hasattr(self.encoder, "get_image_features"):
            out = self.encoder.get_image_features(pixel_values=inputs)
        else:
            out = self.encoder(pixel_values=inputs, **self.call_kwargs)
        if not isinstance(out, torch.Tensor):
            pooled = getattr(out, "pooler_output", None)
            out = pooled if pooled is not None else out.last_hidden_state.mean(dim=1)
        if not self.video_encoder:  # an image encoder: average the frame vectors of each segment
            out = out.reshape(pixel_values.shape[0], pixel_values.shape[1], -1).mean(dim=1)
        return out.float()

    def embed(self, video, fps: float | None = None) -> torch.Tensor:
        """(segments, dim) float32 embeddings of one video, ``batch_size`` segments per encoder call."""
        vectors, pending = [], []
        for segment in self.segments(video, fps):
            pending.append(segment)
            if len(pending) == self.batch_size:
                vectors.append(self.pool(self.processor(pending, return_tensors="pt")["pixel_values"]))
                pending = []
        if pending:
            vectors.append(self.pool(self.processor(pending, return_tensors="pt")["pixel_values"]))
        if not vectors:
            raise ValueError(f"the video {video if isinstance(video, (str, os.PathLike)) else ''!s} has no frames")
        return torch.cat(vectors)

    def cache(self, videos, cache_dir, overwrite: bool = False, fps: float | None = None, progress: bool = False) -> dict:
        """Embeds every video not cached yet into ``cache_dir/<name>.safetensors``.

        videos: a list of file paths (named by :func:`cache_name`), or a dict name -> video (paths or frame arrays).
        progress: show a progress bar over the videos (the CLI does).
        Returns {"files": [cache file per video, in order], "computed": n, "skipped": n}.
        """
        from safetensors.torch import save_file
        from tqdm.auto import tqdm

        items = list(videos.items()) if isinstance(videos, dict) else [(cache_name(v), v) for v in videos]
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        files, computed, skipped = [], 0, 0
        for name, video in tqdm(items, desc="embed-segments", disable=not progress, unit="video"):
            target = cache_dir / (name if str(name).endswith(CACHE_SUFFIX) else f"{name}{CACHE_SUFFIX}")
            files.append(target)
            if target.exists() and not overwrite:
                skipped += 1
                continue
            embeddings = self.embed(video, fps).contiguous()
            metadata = {
                "video": os.fspath(video) if isinstance(video, (str, os.PathLike)) else str(name),
                "encoder": str(self.encoder_name),
                "segment_seconds": str(self.segment_seconds),
                "frames_per_segment": str(self.frames_per_segment),
            }
            replace_atomically(target, lambda path: save_file({"embeddings": embeddings}, str(path), metadata=metadata))
            computed += 1
        return {"files": files, "computed": computed, "skipped": skipped}


def build_dataset(cache_files, output_dir, labels: dict | None = None, split: str = "train") -> Path:
    """Writes ``output_dir/<split>.parquet`` (columns ``inputs_embeds`` (segments x dim), ``video``,
    ``num_segments``, and ``label`` when ``labels`` maps each cached video to an int) from cache files or a cache
    folder; renamed into place, so it appears whole or not at all. Returns ``output_dir``."""
    import datasets

    if isinstance(cache_files, (str, os.PathLike)):
        cache_files = sorted(Path(cache_files).glob(f"*{CACHE_SUFFIX}"))
    columns = {"inputs_embeds": [], "video": [], "num_segments": []}
    for path in cache_files:
        embeddings, metadata = load_cached(path)
        columns["inputs_embeds"].append(embeddings.numpy().astype(np.float32))
        columns["video"].append(metadata.get("video", Path(path).stem))
        columns["num_segments"].append(int(embeddings.shape[0]))
    if not columns["video"]:
        raise ValueError(f"no cached embeddings (*{CACHE_SUFFIX}) found in {cache_files!r}")
    if labels is not None:
        missing = [video for video in columns["video"] if video not in labels]
        if missing:
            raise ValueError(f"labels has no entry for {len(missing)} cached video(s), e.g. {missing[:3]}")
        columns["label"] = [int(labels[video]) for video in columns["video"]]
    dataset = datasets.Dataset.from_dict(columns)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    replace_atomically(output_dir / f"{split}.parquet", lambda path: dataset.to_parquet(str(path)))
    return output_dir


# ------------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .arguments import positive_float, positive_int

    parser.add_argument("videos", nargs="+", help="video files, or folders searched for them (<class>/<file> gives labels)")
    parser.add_argument("--encoder", required=True, help="Hugging Face model id or folder of the segment encoder")
    parser.add_argument("--cache-dir", required=True, help="one safetensors file per video; cached videos are skipped")
    parser.add_argument("--dataset-dir", default=None, help="also write a datasets folder (train.parquet) for pretrain")
    parser.add_argument("--segment-seconds", type=positive_float, default=5.0, help="seconds of video per segment")
    parser.add_argument("--frames-per-segment", type=positive_int, default=8, help="frames sampled from each segment")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="segments per encoder call")
    parser.add_argument("--overwrite", action="store_true", help="embed cached videos again")


def run(args) -> int:
    from .data import VIDEO_EXTENSIONS

    videos, labels, classes = [], {}, set()
    for item in args.videos:
        if os.path.isdir(item):
            for root, _, names in sorted(os.walk(item)):
                for name in sorted(n for n in names if n.lower().endswith(VIDEO_EXTENSIONS)):
                    path = os.path.join(root, name)
                    videos.append(path)
                    if os.path.abspath(root) != os.path.abspath(item):
                        labels[path] = os.path.relpath(root, item)
        elif os.path.isfile(item):
            videos.append(item)
        else:
            raise ValueError(f"videos: {item!r} is neither a video file nor a folder")
    if not videos:
        raise ValueError(f"videos: no video files ({', '.join(VIDEO_EXTENSIONS)}) found in {args.videos}")
    embedder = SegmentEmbedder(args.encoder, segment_seconds=args.segment_seconds,
                               frames_per_segment=args.frames_per_segment, batch_size=args.batch_size)
    report = embedder.cache(videos, args.cache_dir, overwrite=args.overwrite, progress=True)
    print(f"embedded {report['computed']} video(s), {report['skipped']} already cached, in {args.cache_dir}")
    if args.dataset_dir:
        classes = sorted(set(labels.values()))
        ids = {path: classes.index(label) for path, label in labels.items()} if len(labels) == len(videos) else None
        build_dataset(report["files"], args.dataset_dir, labels=ids)
        print(f"wrote {len(videos)} sequences to {args.dataset_dir}")
    return 0


__all__ = ["SegmentEmbedder", "build_dataset", "cache_name", "load_cached", "load_encoder"]
