"""TGM's processor: a video processor for the clips plus a tokenizer for their captions.

``processor(videos, text=captions, return_tensors="pt")`` returns ``pixel_values`` (batch, frames, 3, H, W) and
``input_ids`` / ``attention_mask`` (batch, max_text_length): captions are padded to a fixed length so that single
examples stack into batches. The tokenizer is the scorer's (CLIP's) or, for the tiny preset, a byte-level ByT5
tokenizer that needs no files.

Remote-code rule: only sibling imports (``from .x import y``), torch, numpy and transformers (see DESIGN.md).
"""

from __future__ import annotations

from transformers import AutoTokenizer, ByT5Tokenizer
from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .video_processing_mae import MAEVideoProcessor


class TGMProcessor(ProcessorMixin):
    """image_processor: an ``MAEVideoProcessor`` (any video processor returning ``pixel_values``); tokenizer: any
    tokenizer; max_text_length: captions are padded / truncated to this many tokens."""

    takes_captions = True  # the data pipeline passes a caption column as ``text`` (see training/data.py)

    def __init__(self, image_processor=None, tokenizer=None, max_text_length: int = 77, **kwargs):
        if isinstance(max_text_length, bool) or not isinstance(max_text_length, int) or max_text_length < 2:
            raise ValueError(f"max_text_length must be an int >= 2, got {max_text_length!r}")
        self.max_text_length = max_text_length
        super().__init__(image_processor, tokenizer, **kwargs)

    @classmethod
    def from_model_config(cls, config, **video_settings):
        """The processor for ``config``: its video processor (``MAEVideoProcessor.from_model_config`` with the fixed
        ``video_settings``) and its tokenizer."""
        return cls.for_config(config, MAEVideoProcessor.from_model_config(config, **video_settings))

    @classmethod
    def for_config(cls, config, video_processor) -> "TGMProcessor":
        """The processor of a TGM config: ``video_processor`` plus the config's tokenizer (ByT5 when it names none)."""
        name = config.tokenizer_name_or_path
        tokenizer = ByT5Tokenizer() if name is None else AutoTokenizer.from_pretrained(name)
        return cls(video_processor, tokenizer, max_text_length=config.max_text_length)

    @property
    def num_frames(self):  # the data pipeline reads video paths for processors that sample frames
        return self.image_processor.num_frames

    @property
    def training_call_kwargs(self) -> dict:
        return dict(getattr(self.image_processor, "training_call_kwargs", {}))

    def __call__(self, videos=None, text=None, return_tensors=None, **kwargs) -> BatchFeature:
        """videos: one video or a list (see MAEVideoProcessor); text: a caption or a list, one per video.
        ``kwargs`` go to the video processor."""
        if videos is None and text is None:
            raise ValueError("pass videos, text (captions) or both")
        data = {}
        if videos is not None:
            data.update(self.image_processor(videos, return_tensors="pt", **kwargs))
        if text is not None:
            captions = [text] if isinstance(text, str) else list(text)
            if not captions or not all(isinstance(c, str) for c in captions):
                raise TypeError(f"text must be a caption (str) or a non-empty list of str, got {text!r}")
            if videos is not None and len(captions) != data["pixel_values"].shape[0]:
                raise ValueError(
                    f"text must hold one caption per video: got {len(captions)} captions for "
                    f"{data['pixel_values'].shape[0]} videos"
                )
            tokens = self.tokenizer(captions, padding="max_length", truncation=True, max_length=self.max_text_length,
                                    return_tensors="pt")  # fmt: skip
            data.update(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"])
        return BatchFeature(data, tensor_type=return_tensors)


__all__ = ["TGMProcessor"]
