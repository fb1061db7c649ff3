"""CrossVideoMAE: Self-Supervised Image-Video Representation Learning with Masked Autoencoders (Ahamed et al., 2025,
arXiv:2502.07811).

No official code is public; this follows the abstract and the method card (../shared/methods/other.md, section 3).
Choices the sources leave open are marked [ours] in :class:`CrossVideoMAEConfig`. One forward:
1. **video branch** (VideoMAE): the clip is encoded twice, under two tube masks (two masked "views" of the same
   clip); each view's visible tokens are decoded into the pixels of its hidden tubelets, as VideoMAE;
2. **frame branch**: ``num_sampled_frames`` frames of the same clip go through an image encoder (by default an
   hf-mae MAE encoder with the video's sizes, masked at ``frame_mask_ratio``; or any Hugging Face image
   ``AutoModel``, by name, config dict or instance);
3. projection heads map the pooled video features (mean of the visible tokens) and frame features into one space;
   **intra-modal** NT-Xent pulls the clip's two views together, **cross-modal** InfoNCE pulls each view towards
   the clip's sampled frames and away from the other clips' frames;
4. ``loss = reconstruction + intra_weight * intra + cross_weight * cross``.

A fixed ``noise`` (or ``bool_masked_pos``) fixes every random choice of a forward: the first view's tube mask,
the second view's (the first rolled by half the spatial grid), the sampled frames (evenly spaced) and the frames'
mask (none, unless ``frame_noise`` is given).

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Unpack

import torch
from torch import nn
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple

from .base import check_int
from .losses import info_nce, nt_xent
from .mae import MAEConfig, MAEModel
from .masking import check_mask_ratio
from .outputs import MaskedPreTrainingOutput
from .teachers import build_auto_model
from .videomae import HfVideoMAEConfig, VideoMAEForPreTraining, VideoMAEForVideoClassification, VideoMAEModel


class CrossVideoMAEConfig(HfVideoMAEConfig):
    r"""Configuration of a CrossVideoMAE model: VideoMAE's fields (the video branch; tube masking at 0.9) plus

    frame_encoder_config: a config dict that builds the frame encoder with random weights: an hf-mae MAE encoder
        when it has no ``model_type`` or ``"mae"``, else ``AutoModel.from_config`` of that ``model_type``. None: an
        MAE encoder with the video encoder's sizes (the paper's image branch is a ViT-B/16 MAE). After the model is
        built it holds the frame encoder's full config, so a saved model rebuilds it without a download.
    frame_encoder_name_or_path: a Hugging Face name or folder, loaded with ``AutoModel.from_pretrained`` when
        ``frame_encoder_config`` is None (pretrained weights, as the paper's pre-trained image MAE).
    frame_mask_ratio: share of each frame's patches hidden from an MAE frame encoder (paper: 0.75-0.9) [ours: 0.75].
    num_sampled_frames: frames per clip given to the frame branch [ours: 2; the paper's count is not verified].
    projection_dim, projection_hidden_size: the heads Linear(hidden, projection_hidden_size) - GELU -
        Linear(projection_dim), one for video, one for frames [ours: SimCLR's shape, projection_dim 256,
        projection_hidden_size None = the video encoder's hidden_size].
    contrast_temperature: temperature of both contrastive losses [ours: 0.1].
    intra_weight, cross_weight: weights of the intra-modal (view-view NT-Xent) and cross-modal (video-frame
        InfoNCE) losses added to the reconstruction loss [ours: 1 and 1].
    The frame encoder is trained with the video branch (the paper's "end-to-end") and saved in the checkpoint.
    """

    model_type = "crossvideomae"

    frame_encoder_config: dict | None = None
    frame_encoder_name_or_path: str | None = None
    frame_mask_ratio: float = 0.75
    num_sampled_frames: int = 2
    projection_dim: int = 256
    projection_hidden_size: int | None = None
    contrast_temperature: float = 0.1
    intra_weight: float = 1.0
    cross_weight: float = 1.0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_mask_ratio(self.frame_mask_ratio)
        for name in ("num_sampled_frames", "projection_dim"):
            check_int(name, getattr(self, name))
        if self.num_sampled_frames > self.num_frames:
            raise ValueError(f"num_sampled_frames {self.num_sampled_frames} exceeds num_frames {self.num_frames}")
        if not self.contrast_temperature > 0:
            raise ValueError(f"contrast_temperature must be > 0, got {self.contrast_temperature}")
        for name in ("intra_weight", "cross_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.frame_encoder_config is not None and not isinstance(self.frame_encoder_config, dict):
            raise TypeError(f"frame_encoder_config must be a dict or None, got {type(self.frame_encoder_config).__name__}")

    def default_frame_encoder_config(self) -> dict:
        """An MAE encoder with the video encoder's frame size, patch size and widths (no cls-token change)."""
        return dict(
            model_type="mae", image_size=self.image_size, patch_size=self.patch_size, num_channels=self.num_channels,
            hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads, intermediate_size=self.intermediate_size,
            mask_ratio=self.frame_mask_ratio, layer_norm_eps=self.layer_norm_eps,
        )  # fmt: skip


def build_frame_encoder(config: CrossVideoMAEConfig, frame_encoder: nn.Module | None = None) -> nn.Module:
    """The frame encoder: ``frame_encoder`` if given, else from ``config.frame_encoder_config``, else
    ``config.frame_encoder_name_or_path``, else the default MAE. Records its config dict in the config.
    Unlike a teacher it is trained: a submodule, saved with the model (``teachers.build_auto_model`` builds it)."""
    if frame_encoder is None:
        settings = config.frame_encoder_config
        if settings is None and config.frame_encoder_name_or_path:
            frame_encoder = build_auto_model(config.frame_encoder_name_or_path)
        else:
            settings = {"model_type": "mae", **(config.default_frame_encoder_config() if settings is None else settings)}
            if settings["model_type"] == "mae":  # built from the sibling module: loads where hf_mae is not installed
                frame_encoder = MAEModel(MAEConfig(**{k: v for k, v in settings.items() if k != "model_type"}))
            else:
                frame_encoder = build_auto_model(config=settings)
    if not isinstance(frame_encoder, nn.Module) or not hasattr(frame_encoder, "config"):
        raise TypeError(f"frame_encoder must be a transformers model (an nn.Module with a config), got {type(frame_encoder).__name__}")
    # only the non-default fields (and model_type): enough to rebuild it, short in config.json
    config.frame_encoder_config = {"model_type": frame_encoder.config.model_type, **frame_encoder.config.to_diff_dict()}
    return frame_encoder


def projection_head(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_features, hidden), nn.GELU(), nn.Linear(hidden, out_features))


def sample_frames(pixel_values: torch.Tensor, count: int, random: bool, frame_indices=None) -> torch.Tensor:
    """(batch, T, C, H, W) -> (batch, count, C, H, W): the frames at ``frame_indices`` (batch, count), else ``count``
    distinct random frames per clip (``random``), else ``count`` evenly spaced ones (centres of equal segments)."""
    batch, frames = pixel_values.shape[:2]
    device = pixel_values.device
    if frame_indices is not None:
        frame_indices = torch.as_tensor(frame_indices, device=device).long()
        if frame_indices.ndim != 2 or frame_indices.shape[0] != batch:
            raise ValueError(f"frame_indices must have shape (batch, frames) with batch {batch}, got {tuple(frame_indices.shape)}")
        if frame_indices.numel() and not (0 <= int(frame_indices.min()) and int(frame_indices.max()) < frames):
            raise ValueError(f"frame_indices must lie in [0, {frames}), got {frame_indices.tolist()}")
    elif random:
        frame_indices = torch.rand(batch, frames, device=device).argsort(dim=1)[:, :count].sort(dim=1).values
    else:
        centres = ((torch.arange(count, device=device) + 0.5) * frames / count).long()
        frame_indices = centres.expand(batch, -1)
    rows = torch.arange(batch, device=device)[:, None]
    return pixel_values[rows, frame_indices]


def roll_tube_mask(mask: torch.Tensor, grid_size) -> torch.Tensor:
    """A second tube mask from a first one (batch, tokens): every time slice's spatial mask shifted by half the
    spatial positions (the same count per clip, the same mask in every slice if the first was a tube mask)."""
    slices, rows, cols = grid_size
    spatial = rows * cols
    return mask.reshape(mask.shape[0], slices, spatial).roll(spatial // 2, dims=2).reshape(mask.shape)


@dataclass
class CrossVideoMAEPreTrainingOutput(MaskedPreTrainingOutput):
    """MaskedPreTrainingOutput of the first view (logits, mask, ids_restore as VideoMAE) plus
    reconstruction_loss: the mean of the two views' masked MSE; intra_loss / intra_accuracy: the view-view NT-Xent
    and its top-1 view retrieval; cross_loss / cross_accuracy: the video-frame InfoNCE and its top-1 within-batch
    video->frame retrieval (chance 1 / batch), averaged over both views and the sampled frames.
    mask_2: (batch, num_tokens) the second view's mask; video_embeds (2, batch, projection_dim) and frame_embeds
    (num_sampled_frames, batch, projection_dim): the projected features (not normalised).
    """

    reconstruction_loss: torch.Tensor | None = None
    intra_loss: torch.Tensor | None = None
    intra_accuracy: torch.Tensor | None = None
    cross_loss: torch.Tensor | None = None
    cross_accuracy: torch.Tensor | None = None
    mask_2: torch.Tensor | None = None
    video_embeds: torch.Tensor | None = None
    frame_embeds: torch.Tensor | None = None


class CrossVideoMAEModel(VideoMAEModel):
    """The video encoder (VideoMAE's): what fine-tuning and feature extraction use."""

    config_class = CrossVideoMAEConfig


class CrossVideoMAEForPreTraining(VideoMAEForPreTraining):
    """VideoMAE (two tube-masked views) + a frame encoder + projection heads, trained with reconstruction,
    intra-modal NT-Xent and cross-modal InfoNCE.

    frame_encoder: optional instance (any transformers image model) used instead of the one the config describes.
    """

    config_class = CrossVideoMAEConfig

    def __init__(self, config: CrossVideoMAEConfig, frame_encoder: nn.Module | None = None):
        super().__init__(config)
        self.frame_encoder = build_frame_encoder(config, frame_encoder)
        frame_hidden = self.frame_encoder.config.hidden_size
        hidden = config.projection_hidden_size or config.hidden_size
        self.video_projector = projection_head(config.hidden_size, hidden, config.projection_dim)
        self.frame_projector = projection_head(frame_hidden, hidden, config.projection_dim)
        self.post_init()  # initialises only the new heads: the encoders are already marked initialised

    def frame_features(self, frames: torch.Tensor, frame_noise: torch.Tensor | None, masked: bool) -> torch.Tensor:
        """frames (batch * k, C, h, w) -> pooled features (batch * k, frame hidden): the mean of an MAE encoder's
        visible patch tokens (masked at ``frame_mask_ratio`` when ``masked`` or ``frame_noise`` is given), else the
        encoder's ``pooler_output`` or the mean of its tokens."""
        if isinstance(self.frame_encoder, MAEModel):
            ratio = self.config.frame_mask_ratio if masked or frame_noise is not None else 0.0
            out = self.frame_encoder(frames, noise=frame_noise, mask_ratio=ratio, return_dict=True)
            return out.last_hidden_state[:, 1:].mean(dim=1)
        out = self.frame_encoder(pixel_values=frames.to(self.frame_encoder.dtype), return_dict=True)
        pooled = getattr(out, "pooler_output", None)
        return pooled if pooled is not None else out.last_hidden_state.mean(dim=1)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        bool_masked_pos_2: torch.Tensor | None = None,
        frame_pixel_values: torch.Tensor | None = None,
        frame_indices: torch.Tensor | None = None,
        frame_noise: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """VideoMAE's inputs (they set the first view's mask) plus
        bool_masked_pos_2: (batch, num_tokens) bool, the second view's mask; default: drawn, or the first view's
            rolled by half the spatial grid when the first is fixed (``noise`` / ``bool_masked_pos``).
        frame_pixel_values: (batch, k, C, h, w) frames for the frame branch (at the frame encoder's size); default:
            ``num_sampled_frames`` frames of ``pixel_values``, at ``frame_indices`` (batch, k) if given, else drawn
            at random, or evenly spaced when the first view's mask is fixed.
        frame_noise: (batch * k, frame patches), fixes an MAE frame encoder's mask; without it frames are masked
            at ``frame_mask_ratio`` only when the first view's mask is drawn.
        Returns CrossVideoMAEPreTrainingOutput: ``loss`` = reconstruction + intra_weight * intra + cross_weight * cross.
        """
        config = self.config
        fixed = noise is not None or bool_masked_pos is not None
        mask_ratio = config.mask_ratio if mask_ratio is None else mask_ratio
        first = self.videomae(
            pixel_values, bool_masked_pos=bool_masked_pos, noise=noise, mask_ratio=mask_ratio, return_dict=True, **kwargs
        )
        if first.mask.sum() == 0:
            raise ValueError("pre-training needs hidden tokens: mask_ratio is 0 and no bool_masked_pos hides any")
        if bool_masked_pos_2 is None and fixed:
            bool_masked_pos_2 = roll_tube_mask(first.mask, config.grid_size).bool()
        second = self.videomae(pixel_values, bool_masked_pos=bool_masked_pos_2, mask_ratio=mask_ratio, return_dict=True)

        target = self.target(pixel_values)
        logits, reconstruction = [], []
        for view in (first, second):
            hidden = view.mask.bool()
            predicted = self.decoder(view.last_hidden_state, view.mask)
            logits.append(predicted)
            reconstruction.append(nn.functional.mse_loss(predicted.float(), target[hidden].reshape(predicted.shape)))
        reconstruction = (reconstruction[0] + reconstruction[1]) / 2

        # video features: the mean of each view's visible tokens; frame features: the sampled frames' pooled tokens
        video = self.video_projector(torch.stack([first.last_hidden_state.mean(1), second.last_hidden_state.mean(1)]))
        if frame_pixel_values is None:
            frame_pixel_values = sample_frames(pixel_values, config.num_sampled_frames, not fixed, frame_indices)
        elif frame_pixel_values.ndim != 5 or frame_pixel_values.shape[0] != pixel_values.shape[0]:
            raise ValueError(
                f"frame_pixel_values must have shape (batch, frames, channels, height, width) with batch "
                f"{pixel_values.shape[0]}, got {tuple(frame_pixel_values.shape)}"
            )
        batch, count = frame_pixel_values.shape[:2]
        pooled = self.frame_features(frame_pixel_values.flatten(0, 1), frame_noise, masked=not fixed)
        frames = self.frame_projector(pooled).reshape(batch, count, -1).transpose(0, 1).contiguous()  # (k, batch, dim)

        temperature = config.contrast_temperature
        intra, intra_accuracy = nt_xent(video[0], video[1], temperature)
        pairs = [info_nce(v, f, temperature) for v in video for f in frames]
        cross = torch.stack([loss for loss, _ in pairs]).mean()
        cross_accuracy = torch.stack([accuracy for _, accuracy in pairs]).mean()
        loss = reconstruction + config.intra_weight * intra + config.cross_weight * cross
        output = CrossVideoMAEPreTrainingOutput(
            loss=loss,
            logits=logits[0],
            mask=first.mask,
            ids_restore=first.ids_restore,
            hidden_states=first.hidden_states,
            attentions=first.attentions,
            reconstruction_loss=reconstruction.detach(),
            intra_loss=intra.detach(),
            intra_accuracy=intra_accuracy,
            cross_loss=cross.detach(),
            cross_accuracy=cross_accuracy,
            mask_2=second.mask,
            video_embeds=video,
            frame_embeds=frames,
        )
        return output


class CrossVideoMAEForVideoClassification(VideoMAEForVideoClassification):
    config_class = CrossVideoMAEConfig


__all__ = [
    "CrossVideoMAEConfig",
    "CrossVideoMAEModel",
    "CrossVideoMAEForPreTraining",
    "CrossVideoMAEForVideoClassification",
    "CrossVideoMAEPreTrainingOutput",
]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
from .presets import TINY_VIDEO, VIT  # noqa: E402

METHOD = dict(
    name="crossvideomae",
    paper=(
        "CrossVideoMAE: Self-Supervised Image-Video Representation Learning with Masked Autoencoders "
        "(Ahamed et al., 2025), arXiv:2502.07811"
    ),
    config_class=CrossVideoMAEConfig,
    model_classes={
        "base": CrossVideoMAEModel, "pretraining": CrossVideoMAEForPreTraining,
        "video-classification": CrossVideoMAEForVideoClassification,
    },
    processor="MAEVideoProcessor",
    presets={
        # videomae-tiny's sizes; the frame branch is an MAE encoder of the same sizes on 2 frames, 128-d heads
        "crossvideomae-tiny": dict(TINY_VIDEO, projection_dim=128),
        # the paper's two ViT-B/16 branches: tube masking 0.9 for video, 0.75 for the sampled frames
        "crossvideomae-vit-base-patch16": dict(patch_size=16, **VIT["base"]),
    },
    modality="video",
)
