"""The LV-MAE processor: sequences of segment embeddings (one video's (segments, dim) array, or a list of them) ->
``inputs_embeds`` and ``attention_mask``, padded and cut to the model's ``max_segments``. The embeddings themselves
come from a frozen video encoder, offline (``hf_mae.training.segment_embeddings``).

Remote-code rule: only sibling imports (``from .x import y``), numpy, torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature, FeatureExtractionMixin


class LVMAEFeatureExtractor(FeatureExtractionMixin):
    """Turns sequences of segment embeddings (from ``hf_mae.training.segment_embeddings``) into model inputs:
    ``inputs_embeds`` (batch, L, D) float32 and ``attention_mask`` (batch, L), padded with zeros at the end.

    A video longer than ``max_segments`` is cut to a window of ``max_segments`` segments: the first one, or one at a
    random start with ``random_window=True`` (what ``hf-mae pretrain`` passes; the official loader also draws a random
    start). ``padding="max_length"`` pads every batch to ``max_segments`` (so single examples stack), ``"longest"``
    to the batch's longest video."""

    model_input_names = ["inputs_embeds", "attention_mask"]
    training_call_kwargs = {"random_window": True}

    def __init__(self, max_segments: int = 256, embedding_dim: int | None = None, padding: str = "max_length", **kwargs):
        super().__init__(**kwargs)
        self.max_segments = max_segments
        self.embedding_dim = embedding_dim
        self.padding = padding

    @classmethod
    def from_model_config(cls, config) -> "LVMAEFeatureExtractor":
        """The extractor for an ``LVMAEConfig``: its ``max_segments`` and ``embedding_dim``."""
        return cls(max_segments=config.max_segments, embedding_dim=config.embedding_dim)

    def __call__(self, sequences, return_tensors=None, padding: str | None = None, random_window: bool = False,
                 **kwargs) -> BatchFeature:
        """sequences: one video's (L, D) embeddings (array, tensor or nested list) or a list of them."""
        padding = self.padding if padding is None else padding
        if padding not in ("max_length", "longest"):
            raise ValueError(f"padding must be 'max_length' or 'longest', got {padding!r}")
        if isinstance(sequences, (np.ndarray, torch.Tensor)) and sequences.ndim == 2:
            sequences = [sequences]
        elif isinstance(sequences, (list, tuple)) and sequences and np.ndim(sequences[0]) == 1:
            sequences = [sequences]  # one video as a nested list
        videos = []
        for sequence in sequences if isinstance(sequences, (list, tuple, np.ndarray, torch.Tensor)) else []:
            array = sequence.detach().float().cpu().numpy() if isinstance(sequence, torch.Tensor) else sequence
            videos.append(np.asarray(array, dtype=np.float32))
        if not videos or any(v.ndim != 2 or len(v) == 0 for v in videos):
            raise ValueError(
                "sequences must be one video's segment embeddings (segments, dim) or a non-empty list of them, "
                f"got {type(sequences).__name__} with shapes {[v.shape for v in videos]}"
            )
        dims = {v.shape[1] for v in videos}
        if len(dims) > 1 or (self.embedding_dim is not None and dims != {self.embedding_dim}):
            raise ValueError(f"every embedding must have dim {self.embedding_dim or 'the same'}, got dims {sorted(dims)}")
        windows = []
        for video in videos:
            start = 0
            if random_window and len(video) > self.max_segments:
                start = int(torch.randint(0, len(video) - self.max_segments + 1, ()).item())
            windows.append(video[start : start + self.max_segments])
        length = self.max_segments if padding == "max_length" else max(len(w) for w in windows)
        embeds = np.zeros((len(windows), length, dims.pop()), dtype=np.float32)
        attention_mask = np.zeros((len(windows), length), dtype=np.int64)
        for i, window in enumerate(windows):
            embeds[i, : len(window)], attention_mask[i, : len(window)] = window, 1
        return BatchFeature({"inputs_embeds": embeds, "attention_mask": attention_mask}, tensor_type=return_tensors)


__all__ = ["LVMAEFeatureExtractor"]
