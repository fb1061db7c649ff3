"""Audio-MAE: Masked Autoencoders that Listen (Huang et al., NeurIPS 2022).

Audio-MAE is MAE on a log-mel filterbank seen as a one-channel image, time down the rows, frequency across:
1. ``input_values`` (batch, num_frames, num_mel_bins) -- what ``ASTFeatureExtractor`` and our
   ``AudioMAEFeatureExtractor`` return -- becomes (batch, 1, num_frames, num_mel_bins) and is cut into 16x16
   patches (1024 x 128 -> a 64 x 8 grid of 512 tokens) with fixed 2D sin-cos positions;
2. a random 80% of the patches is hidden; MAE's ViT encoder sees the rest (plus a cls token);
3. the decoder fills the hidden positions with the mask token. The paper's decoder (``decoder_mode="swin"``) drops
   the cls token and attends *locally*: each block attends within (4, 4) windows of the (time, frequency) token
   grid, every odd block with the windows shifted by (2, 0) (Swin). ``decoder_mode="global"`` is MAE's plain ViT
   decoder (Bird-MAE uses it);
4. the loss is MAE's: MSE on the hidden patches against per-patch normalised filterbank values.

Departure from the official code: its Swin blocks are timm's ``swin_transformer_v2_cr`` blocks (cosine attention,
a learned relative-position bias, post-norm). Here the decoder blocks are the shared pre-norm ViT blocks and the
shifted windows are an additive attention mask over the whole grid, so every attention kernel (eager, sdpa, ...)
runs them unchanged. The mask reproduces the windows of the official cyclic shift, including the masking of the
strip that wraps around (see :func:`window_attention_mask`).

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

from typing import Unpack

import torch
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple

from .base import check_choice, check_int
from .embeddings import to_2tuple
from .heads import ImageClassifierMixin
from .losses import masked_mse
from .mae import MAEConfig, MAEDecoder, MAEForPreTraining, MAEModel, MAEPreTrainedModel
from .outputs import MaskedPreTrainingOutput
from .targets import pixel_target

DECODER_MODES = ("swin", "global")


class AudioMAEConfig(MAEConfig):
    r"""Configuration of an Audio-MAE model. Defaults: the paper's AudioSet ViT-B/16 (1024 frames x 128 mel bins,
    mask ratio 0.8, a 512-d decoder of 16 shifted-window blocks).

    num_mel_bins, max_length: filterbank size (frequency bins, frames); ``image_size`` is derived as
        (max_length, num_mel_bins) and ``num_channels`` is 1.
    sampling_rate, mean, std: what the feature extractor uses (waveform rate; the filterbank is normalised as
        ``(fbank - mean) / (2 * std)``, AudioSet's statistics by default).
    decoder_mode: "swin" (local windows, the paper) or "global" (MAE's ViT decoder).
    decoder_window_size, decoder_shift_size: (time, frequency) window of the Swin decoder and the shift of its odd
        blocks, in tokens. Along an axis no longer than the window the window spans the axis and does not shift.
    Every other field is :class:`MAEConfig`'s.
    """

    model_type = "audiomae"

    num_mel_bins: int = 128
    max_length: int = 1024
    sampling_rate: int = 16000
    mean: float = -4.2677393
    std: float = 4.5689974
    image_size: int | list[int] | tuple[int, int] = (1024, 128)
    num_channels: int = 1
    mask_ratio: float = 0.8
    decoder_mode: str = "swin"
    decoder_window_size: int | list[int] | tuple[int, int] = (4, 4)
    decoder_shift_size: int | list[int] | tuple[int, int] = (2, 0)
    decoder_num_hidden_layers: int = 16

    def __post_init__(self, **kwargs):
        for name in ("num_mel_bins", "max_length"):
            check_int(name, getattr(self, name))
        if self.num_channels != 1:
            raise ValueError(f"num_channels must be 1 for a filterbank (a one-channel image), got {self.num_channels!r}")
        # The filterbank is the image: its size follows max_length and num_mel_bins, never the other way round.
        self.image_size = (self.max_length, self.num_mel_bins)
        super().__post_init__(**kwargs)
        if check_choice("decoder_mode", self.decoder_mode, DECODER_MODES) == "swin":
            window_and_shift(self.grid_size, self.decoder_window_size, self.decoder_shift_size)  # raises if invalid


def window_and_shift(grid, window_size, shift_size) -> tuple[tuple[int, int], tuple[int, int]]:
    """The window and shift actually used on a (rows, cols) token grid, per axis as timm's Swin does: an axis no
    longer than the window gets one window spanning it and no shift. Raises ValueError when they do not fit."""
    grid, window_size, shift_size = to_2tuple(grid), to_2tuple(window_size), to_2tuple(shift_size)
    window = tuple(min(w, g) for w, g in zip(window_size, grid))
    shift = tuple(0 if g <= w else s for g, w, s in zip(grid, window_size, shift_size))
    for axis, g, w, s in zip(("time", "frequency"), grid, window, shift):
        if w < 1 or g % w:
            raise ValueError(f"the {axis} token grid {g} must be a multiple of decoder_window_size {window_size}")
        if not 0 <= s < w:
            raise ValueError(f"decoder_shift_size {shift_size} must be in [0, window) along {axis} (window {w})")
    return window, shift


def _window_ids(size: int, window: int, shift: int) -> torch.Tensor:
    """(size,) window id of every row (or column) after Swin's cyclic shift by ``-shift``. The last window then holds
    ``shift`` rows that wrapped around from the start; Swin forbids them to attend across, so they get their own
    id (three regions: the first ``window - shift`` rows of that window, then the wrapped ``shift`` rows)."""
    position = (torch.arange(size) - shift) % size  # where each row lands after torch.roll(x, -shift)
    region = (position >= size - window).long() + (position >= size - shift).long() if shift else 0
    return (position // window) * 3 + region


def window_ids(grid, window_size, shift_size) -> torch.Tensor:
    """(N,) id of the (shifted) window of every token of a row-major (rows, cols) grid of N = rows * cols tokens:
    two tokens attend to each other when their ids are equal."""
    rows, cols = to_2tuple(grid)
    (window_r, window_c), (shift_r, shift_c) = window_and_shift(grid, window_size, shift_size)
    row_ids, col_ids = _window_ids(rows, window_r, shift_r), _window_ids(cols, window_c, shift_c)
    return (row_ids[:, None] * (3 * cols) + col_ids[None, :]).flatten()  # one id per (row window, column window)


def window_attention_mask(grid, window_size, shift_size, dtype=torch.float32, device=None) -> torch.Tensor:
    """Additive attention mask (1, 1, N, N) of (shifted) window attention over a row-major (rows, cols) grid of
    N = rows * cols tokens: 0 where two tokens share a window, the dtype's most negative (finite) value elsewhere.

    Equivalent to Swin's roll -> window partition -> region mask -> roll back, without moving any token.
    """
    ids = window_ids(grid, window_size, shift_size)
    same_window = ids[:, None] == ids[None, :]
    mask = torch.zeros(same_window.shape, dtype=dtype).masked_fill(~same_window, torch.finfo(dtype).min)
    return mask[None, None].to(device)


def window_block_mask(grid, window_size, shift_size, device=None):
    """The same windows as a flex-attention ``BlockMask``: flex attention reads an additive mask tensor through a
    score function, which crashes the process on CPU (torch 2.13); a mask function over window ids does not."""
    from torch.nn.attention.flex_attention import create_block_mask

    ids = window_ids(grid, window_size, shift_size).to(device)

    def same_window(batch, head, query, key):
        return ids[query] == ids[key]

    return create_block_mask(same_window, None, None, ids.numel(), ids.numel(), device=ids.device.type)


def audio_to_pixels(input_values, config: AudioMAEConfig, allow_other_length: bool = False) -> torch.Tensor:
    """Checks ``input_values`` (batch, num_frames, num_mel_bins) and returns it as a one-channel image
    (batch, 1, num_frames, num_mel_bins); raises TypeError/ValueError naming the argument."""
    if not isinstance(input_values, torch.Tensor):
        raise TypeError(f"input_values must be a torch.Tensor, got {type(input_values).__name__}")
    if not input_values.is_floating_point():
        raise TypeError(
            f"input_values must be a floating-point tensor, got dtype {input_values.dtype}; use the feature extractor"
        )
    if input_values.ndim != 3:
        shape = tuple(input_values.shape)
        raise ValueError(f"input_values must have 3 dimensions (batch, num_frames, num_mel_bins), got shape {shape}")
    batch, frames, bins = input_values.shape
    if batch == 0:
        raise ValueError("input_values is an empty batch (batch size 0)")
    if bins != config.num_mel_bins:
        raise ValueError(f"input_values has {bins} mel bins but the model expects num_mel_bins={config.num_mel_bins}")
    patch = to_2tuple(config.patch_size)[0]
    if allow_other_length and frames % patch:
        raise ValueError(f"input_values has {frames} frames, which is not a multiple of the patch size {patch}")
    if not allow_other_length and frames != config.max_length:
        raise ValueError(
            f"input_values has {frames} frames but the model expects max_length={config.max_length}; pad or cut "
            "(the feature extractor does) or pass interpolate_pos_encoding=True"
        )
    return input_values.unsqueeze(1)


class AudioMAEDecoder(MAEDecoder):
    """MAE's decoder; with ``decoder_mode="swin"`` it drops the cls token and its blocks attend within windows of
    the token grid, shifted by ``decoder_shift_size`` in every odd block."""

    def forward(self, latent, ids_restore, grid) -> torch.Tensor:
        """latent: (batch, 1 + kept, hidden) encoder output -> logits (batch, N, patch_h * patch_w)."""
        decoder_input = self.embed(latent, ids_restore, grid)
        if self.config.decoder_mode == "global":
            return self.predict(decoder_input)
        hidden = decoder_input[:, 1:]  # the Swin decoder works on the token grid only
        window, shift = self.config.decoder_window_size, self.config.decoder_shift_size
        if self.config._attn_implementation == "flex_attention":
            masks = [window_block_mask(grid, window, s, hidden.device) for s in ((0, 0), shift)]
        else:
            masks = [window_attention_mask(grid, window, s, hidden.dtype, hidden.device) for s in ((0, 0), shift)]
        for index, block in enumerate(self.decoder_layers):
            hidden, _ = block(hidden, masks[index % 2])
        return self.decoder_pred(self.decoder_norm(hidden))


class AudioMAEPreTrainedModel(MAEPreTrainedModel):
    config_class = AudioMAEConfig
    main_input_name = "input_values"
    input_modalities = ("audio",)


class AudioMAEModel(AudioMAEPreTrainedModel, MAEModel):
    """The Audio-MAE ViT encoder (:class:`MAEModel` on the filterbank). ``mask_ratio=0`` gives features of every
    patch, in order."""

    def forward(
        self,
        input_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """
        input_values: (batch, max_length, num_mel_bins) float filterbanks.
        noise: (batch, num_patches), optional; fixes the mask as in MAE (ascending noise = kept first).
        mask_ratio: default 0.0 (``config.mask_ratio`` with ``noise``): every patch, in order.
        interpolate_pos_encoding: allow another frame count (a multiple of the patch size).
        Returns a MaskedEncoderOutput: last_hidden_state (batch, 1 + kept, hidden), mask and ids_restore (batch, N),
        pooler_output (batch, hidden) as :meth:`MAEModel.forward`.
        """
        if input_values is None:
            raise ValueError("input_values is required")
        pixel_values = audio_to_pixels(input_values, self.config, interpolate_pos_encoding)
        return super().forward(
            pixel_values, noise=noise, mask_ratio=mask_ratio, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs
        )


class AudioMAEForPreTraining(AudioMAEPreTrainedModel, MAEForPreTraining):
    """Audio-MAE encoder + (Swin or global) decoder with MAE's masked, norm-pix MSE loss."""

    encoder_class = AudioMAEModel  # a method's own encoder class (Bird-MAE's), so base_model has its name

    def __init__(self, config: AudioMAEConfig):
        MAEPreTrainedModel.__init__(self, config)
        self.mae = self.encoder_class(config)
        self.decoder = AudioMAEDecoder(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        input_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """Same inputs as :meth:`AudioMAEModel.forward`. Returns a MaskedPreTrainingOutput: the masked MSE ``loss``,
        ``logits`` (batch, N, patch_h * patch_w) (normalised per patch when ``norm_pix_loss``), ``mask`` and
        ``ids_restore`` (batch, N)."""
        encoded = self.mae(
            input_values,
            noise=noise,
            mask_ratio=self.config.mask_ratio if mask_ratio is None else mask_ratio,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
            **kwargs,
        )
        pixel_values = input_values.unsqueeze(1)  # checked by the encoder
        patch = to_2tuple(self.config.patch_size)
        grid = (pixel_values.shape[-2] // patch[0], pixel_values.shape[-1] // patch[1])
        logits = self.decoder(encoded.last_hidden_state, encoded.ids_restore, grid)
        target = pixel_target(pixel_values.float(), patch, self.config.norm_pix_loss)  # float32 even under autocast
        output = MaskedPreTrainingOutput(
            loss=masked_mse(logits, target, encoded.mask),
            logits=logits,
            mask=encoded.mask,
            ids_restore=encoded.ids_restore,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
        )
        return output

    @torch.no_grad()
    def reconstruct(self, input_values: torch.Tensor, output) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Filterbanks (batch, 1, frames, mel bins) from a pre-training output: masked input, reconstruction, and the
        reconstruction with the visible patches pasted back (see :meth:`MAEForPreTraining.reconstruct`)."""
        return super().reconstruct(input_values.unsqueeze(1), output)


class AudioMAEForAudioClassification(ImageClassifierMixin, AudioMAEPreTrainedModel):
    """Audio-MAE encoder (no masking) + mean pooling of the patch tokens + fc_norm + linear, as Audio-MAE
    fine-tunes (``classifier_pooling="cls"`` uses the normalised cls token instead)."""

    encoder_class = AudioMAEModel

    def __init__(self, config: AudioMAEConfig):
        super().__init__(config)
        # Mean pooling averages the un-normalised tokens and normalises after (fc_norm).
        self.mae = self.encoder_class(config, add_final_norm=config.classifier_pooling == "cls")
        self.build_classifier(config)
        self.post_init()

    def forward(
        self,
        input_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """input_values (batch, max_length, num_mel_bins); labels (batch,) or multi-label (batch, num_labels).
        Returns logits (batch, num_labels) and the loss when labels are given."""
        return super().forward(input_values, labels=labels, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs)


__all__ = [
    "AudioMAEConfig",
    "AudioMAEPreTrainedModel",
    "AudioMAEModel",
    "AudioMAEForPreTraining",
    "AudioMAEForAudioClassification",
    "window_attention_mask",
    "window_block_mask",
    "window_ids",
]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
from .presets import TINY_AUDIO, VIT  # noqa: E402

METHOD = dict(
    name="audiomae",
    paper="Masked Autoencoders that Listen (Huang et al., NeurIPS 2022), arXiv:2207.06405",
    config_class=AudioMAEConfig,
    model_classes={
        "base": AudioMAEModel, "pretraining": AudioMAEForPreTraining,
        "audio-classification": AudioMAEForAudioClassification,
    },
    processor="AudioMAEFeatureExtractor",
    presets={
        # 128 frames x 128 mel bins: an 8 x 8 grid of 16x16 patches, Swin decoder windows (4, 4) shifted (2, 0)
        "audiomae-tiny": dict(TINY_AUDIO, max_length=128),
        # the paper's AudioSet ViT-B/16: 1024 x 128 (64 x 8 tokens), mask 0.8, Swin decoder 512-d x 16 blocks
        "audiomae-vit-base-patch16": dict(**VIT["base"]),
    },
    modality="audio",
)
