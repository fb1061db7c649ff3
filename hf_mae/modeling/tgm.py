"""TGM: Text-Guided Video Masked Autoencoder (Fan et al., ECCV 2024), arXiv:2408.00759.

VideoMAE whose mask is chosen by a caption instead of at random, trained with a joint objective:
1. a frozen CLIP-like dual encoder scores every video token against the clip's caption: its patch embeddings
   (post-LayerNorm, projected into the joint space) are compared with the caption embedding by cosine similarity,
   frame by frame; the CLIP patch grid is resized to the video token grid when they differ, and the similarities
   of a tubelet's frames are averaged;
2. the tokens **most** similar to the caption are masked (the text-salient object, the hardest part to rebuild),
   as many as VideoMAE's tube masking hides at the same ratio (0.9);
3. VideoMAE's encoder / decoder reconstruct the hidden tubelets (per-tubelet normalised pixels, MSE);
4. a text tower (CLIP's text model or any Hugging Face text ``AutoModel``) and two projections align the pooled
   encoding of the *masked* clip with the caption: symmetric InfoNCE over the batch.
   ``loss = reconstruction + contrastive_weight * InfoNCE``.

No official code was released; choices the paper summaries leave open are marked [ours] in the config docstring.
The dual encoder is frozen and kept out of the checkpoint (it is no submodule): it is rebuilt from
``clip_name_or_path`` (downloaded), from ``clip_config`` (randomly initialised from ``clip_seed``, for tests), or
passed as an instance to the constructor (``TGMForPreTraining(config, clip_model=...)``).

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Unpack

import torch
from torch import nn
from transformers import AutoConfig, AutoModel
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple

from .base import check_choice, check_int
from .losses import info_nce
from .masking import check_mask_ratio, num_kept
from .outputs import MaskedPreTrainingOutput
from .teachers import FrozenTeacherMixin, build_auto_model
from .videomae import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    HfVideoMAEConfig,
    VideoMAEForPreTraining,
    VideoMAEForVideoClassification,
    VideoMAEModel,
)

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MASK_SCOPES = ("slice", "clip")


class TGMConfig(HfVideoMAEConfig):
    r"""Configuration of a TGM model: VideoMAE's fields (ViT-B/16, 16 frames, ratio 0.9) plus

    clip_name_or_path: the frozen CLIP-like dual encoder that scores tokens (an ``AutoModel`` with ``vision_model``,
        ``visual_projection`` and ``get_text_features``, as ``CLIPModel``); [ours: openai/clip-vit-base-patch16].
    clip_config: instead, a config dict (with ``model_type``) of a randomly initialised dual encoder (tests).
    clip_seed: the seed of that random initialisation, so that a reloaded model scores the same way [ours].
    clip_image_mean, clip_image_std: the dual encoder's pixel normalisation (OpenAI CLIP's).
    text_config: config dict (with ``model_type``) of the trained text tower, any text ``AutoModel``; filled in from
        ``text_encoder_name_or_path`` when that is given, so a saved model rebuilds the tower without a download.
    text_encoder_name_or_path: a pretrained text tower (for a dual-encoder checkpoint, its text part) [ours: CLIP's
        text encoder, the same checkpoint as the scorer].
    tokenizer_name_or_path: the processor's caption tokenizer; None = a byte-level ByT5 tokenizer, which needs no
        files (tests). The caption ids feed both the scorer and the text tower, so both must use this tokenizer.
    max_text_length: captions are padded / truncated to this many tokens (CLIP: 77).
    projection_dim: width of the joint video-text space [ours: 512, CLIP B/16's].
    contrastive_weight: weight of the InfoNCE term [ours: 1; not given by the sources].
    contrastive_temperature: InfoNCE temperature [ours: 0.07, CLIP's initial value, fixed].
    mask_scope: "slice" hides the most caption-like positions of every time slice (the tube count per slice, so the
        mask follows the object through time) [ours]; "clip" hides the top-k over the whole clip.
    """

    model_type = "tgm"

    clip_name_or_path: str | None = "openai/clip-vit-base-patch16"
    clip_config: dict | None = None
    clip_seed: int = 0
    clip_image_mean: list[float] | tuple[float, ...] = OPENAI_CLIP_MEAN
    clip_image_std: list[float] | tuple[float, ...] = OPENAI_CLIP_STD
    text_config: dict | None = None
    text_encoder_name_or_path: str | None = "openai/clip-vit-base-patch16"
    tokenizer_name_or_path: str | None = "openai/clip-vit-base-patch16"
    max_text_length: int = 77
    projection_dim: int = 512
    contrastive_weight: float = 1.0
    contrastive_temperature: float = 0.07
    mask_scope: str = "slice"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_choice("mask_scope", self.mask_scope, MASK_SCOPES)
        for name in ("clip_config", "text_config"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, dict) and "model_type" in value):
                raise ValueError(f"{name} must be a config dict with a 'model_type' key, got {value!r}")
            setattr(self, name, copy.deepcopy(value))  # never share nested dicts with a preset table
        if self.contrastive_temperature <= 0:
            raise ValueError(f"contrastive_temperature must be > 0, got {self.contrastive_temperature}")
        check_int("max_text_length", self.max_text_length, minimum=2)


@dataclass
class TGMPreTrainingOutput(MaskedPreTrainingOutput):
    """MaskedPreTrainingOutput (``loss`` = reconstruction + weight * contrastive) plus
    reconstruction_loss, contrastive_loss: the two terms (the latter None without captions);
    contrastive_accuracy: share of clips whose most similar caption in the batch is their own (chance 1 / batch);
    similarity: (batch, num_tokens) the scorer's caption similarity of every token (None without captions);
    video_embeds, text_embeds: (batch, projection_dim) the projected, L2-normalised pair.
    """

    reconstruction_loss: torch.Tensor | None = None
    contrastive_loss: torch.Tensor | None = None
    contrastive_accuracy: torch.Tensor | None = None
    similarity: torch.Tensor | None = None
    video_embeds: torch.Tensor | None = None
    text_embeds: torch.Tensor | None = None


def text_guided_mask(similarity: torch.Tensor, grid_size, mask_ratio: float, scope: str = "slice") -> torch.Tensor:
    """The TGM mask: (batch, slices * rows * cols) bool, True = hidden, from ``similarity`` of the same shape.

    Hides as many tokens as tube masking does (``rows * cols - int(rows * cols * (1 - r))`` per slice): per slice
    the most similar positions (``scope="slice"``), or the most similar tokens of the whole clip (``"clip"``)."""
    slices, rows, cols = grid_size
    batch = similarity.shape[0]
    hidden_per_slice = rows * cols - num_kept(rows * cols, mask_ratio)
    if hidden_per_slice == rows * cols:
        raise ValueError(f"mask_ratio {mask_ratio} keeps none of the {rows}x{cols} spatial positions")
    scores = similarity.reshape(batch, slices, rows * cols) if scope == "slice" else similarity.reshape(batch, 1, -1)
    k = hidden_per_slice * (1 if scope == "slice" else slices)
    hidden = torch.zeros_like(scores, dtype=torch.bool)
    hidden.scatter_(2, scores.topk(k, dim=2).indices, True)
    return hidden.reshape(batch, -1)


def check_dual_encoder(model):
    missing = [name for name in ("vision_model", "visual_projection", "get_text_features") if not hasattr(model, name)]
    if missing:
        raise TypeError(
            f"clip_model must be a CLIP-like dual encoder (vision_model, visual_projection, get_text_features), "
            f"got {type(model).__name__} without {missing}"
        )
    return model.requires_grad_(False).eval()


def load_text_encoder(name_or_path: str):
    """A pretrained text ``AutoModel``; for a dual-encoder checkpoint (a config with ``text_config``) its text part."""
    config = AutoConfig.from_pretrained(name_or_path)
    return AutoModel.from_pretrained(name_or_path, config=getattr(config, "text_config", config))


class TGMModel(VideoMAEModel):
    config_class = TGMConfig


class TGMForPreTraining(FrozenTeacherMixin, VideoMAEForPreTraining):
    """VideoMAE encoder + decoder, masked where the caption points, + a text tower for video-text InfoNCE."""

    config_class = TGMConfig
    _keys_to_ignore_on_load_unexpected = [r"^clip\."]  # never saved; ignore it if someone saved it by hand

    def __init__(self, config: TGMConfig, clip_model=None, text_encoder=None):
        super().__init__(config)
        pretrained = None
        if text_encoder is None and config.text_config is None:
            if config.text_encoder_name_or_path is None:
                raise ValueError("TGM needs a text tower: set text_config, text_encoder_name_or_path, or pass text_encoder")
            pretrained = load_text_encoder(config.text_encoder_name_or_path)
            config.text_config = pretrained.config.to_dict()  # a saved model rebuilds the tower from its config
        if text_encoder is not None:
            config.text_config = text_encoder.config.to_dict()
        self.text_encoder = text_encoder if text_encoder is not None else build_auto_model(config=config.text_config)
        text_width = self.text_encoder.config.hidden_size
        self.video_projection = nn.Linear(config.hidden_size, config.projection_dim)
        self.text_projection = nn.Linear(text_width, config.projection_dim)
        # the frozen scorer (teachers.FrozenTeacherMixin): out of the state dict, the optimiser and DDP; built on
        # first use
        self.set_frozen_teacher("clip", check_dual_encoder(clip_model) if clip_model is not None else None)
        if text_encoder is not None or pretrained is not None:
            keep = (text_encoder or pretrained).state_dict()
            self.post_init()
            self.text_encoder.load_state_dict(keep)  # post_init re-initialises every submodule; keep the given weights
        else:
            self.post_init()

    def dual_encoder(self, device):
        """The frozen scorer on ``device``: the instance given, or one built from the config (first call only)."""
        return self.frozen_teacher("clip", device, self.build_dual_encoder)

    def build_dual_encoder(self):
        """The scorer the config describes: seeded random from ``clip_config``, else pretrained."""
        config = self.config
        if config.clip_config is None and config.clip_name_or_path is None:
            raise ValueError("TGM needs a dual encoder: set clip_name_or_path or clip_config, or pass clip_model")
        return check_dual_encoder(build_auto_model(config.clip_name_or_path, config.clip_config, seed=config.clip_seed))

    @torch.no_grad()
    def similarity_map(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask=None) -> torch.Tensor:
        """The scorer's cosine similarity of every video token to its clip's caption: (batch, num_tokens), in the
        tokens' (time, row, column) order.

        pixel_values (batch, frames, 3, H, W), ImageNet-normalised as the processor returns; input_ids /
        attention_mask (batch, text_length)."""
        clip = self.dual_encoder(pixel_values.device)
        batch, frames = pixel_values.shape[:2]
        dtype = clip.visual_projection.weight.dtype
        # the processor's normalisation undone, the scorer's applied, each frame resized to the scorer's input
        x = pixel_values.flatten(0, 1).float()
        x = x * x.new_tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1) + x.new_tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)
        x = (x - x.new_tensor(self.config.clip_image_mean).view(1, 3, 1, 1)) / x.new_tensor(
            self.config.clip_image_std
        ).view(1, 3, 1, 1)
        vision = clip.config.vision_config
        side = vision.image_size
        if tuple(x.shape[-2:]) != (side, side):
            x = nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
        patches = clip.vision_model(pixel_values=x.to(dtype)).last_hidden_state[:, 1:]  # drop the cls token
        patches = clip.visual_projection(clip.vision_model.post_layernorm(patches))
        text = clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        text = text if isinstance(text, torch.Tensor) else text.pooler_output  # transformers 5 returns an output
        patches = nn.functional.normalize(patches.float(), dim=-1)
        text = nn.functional.normalize(text.float(), dim=-1).repeat_interleave(frames, dim=0)
        grid = side // vision.patch_size
        similarity = torch.einsum("npd,nd->np", patches, text).reshape(batch * frames, 1, grid, grid)
        slices, rows, cols = self.config.grid_size
        if (grid, grid) != (rows, cols):  # the scorer's patch grid resized to the token grid
            similarity = nn.functional.interpolate(similarity, size=(rows, cols), mode="bilinear", align_corners=False)
        tubelet = self.config.tubelet_size
        return similarity.reshape(batch, slices, tubelet, rows, cols).mean(dim=2).reshape(batch, -1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask=None) -> torch.Tensor:
        """(batch, projection_dim) caption embeddings: the tower's pooled output (its mean over real tokens when it
        has none), projected."""
        out = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:
            weights = torch.ones_like(input_ids) if attention_mask is None else attention_mask
            weights = weights.unsqueeze(-1).to(out.last_hidden_state.dtype)
            pooled = (out.last_hidden_state * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return self.text_projection(pooled)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """
        pixel_values: (batch, frames, 3, H, W); input_ids, attention_mask: (batch, text_length) the captions.
        With captions the mask is text-guided (``bool_masked_pos`` overrides it) and the InfoNCE term is added;
        without them TGM is VideoMAE (tube masking, ``noise`` as there, reconstruction only).
        Returns TGMPreTrainingOutput; logits (batch, hidden tokens, tubelet * ph * pw * 3).
        """
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        ratio = check_mask_ratio(self.config.mask_ratio if mask_ratio is None else mask_ratio)
        similarity = None
        if input_ids is not None:
            if input_ids.ndim != 2 or input_ids.shape[0] != pixel_values.shape[0]:
                raise ValueError(
                    f"input_ids must have shape (batch, text_length) with batch {pixel_values.shape[0]} (one caption "
                    f"per clip), got {tuple(input_ids.shape)}"
                )
            if noise is not None:
                raise ValueError("noise fixes a random tube mask; with captions the mask is text-guided (use bool_masked_pos)")
            self.videomae.patch_embeddings.check(pixel_values, self.config.num_frames)
            similarity = self.similarity_map(pixel_values, input_ids, attention_mask)
            if bool_masked_pos is None and ratio > 0:
                bool_masked_pos = text_guided_mask(similarity, self.config.grid_size, ratio, self.config.mask_scope)
        encoded = self.videomae(
            pixel_values,
            bool_masked_pos=bool_masked_pos,
            noise=noise,
            mask_ratio=ratio,
            return_dict=True,
            **kwargs,
        )
        if encoded.mask.sum() == 0:
            raise ValueError("pre-training needs hidden tokens: mask_ratio is 0 and no bool_masked_pos hides any")
        logits = self.decoder(encoded.last_hidden_state, encoded.mask)
        target = self.target(pixel_values)[encoded.mask.bool()].reshape(logits.shape)
        reconstruction = nn.functional.mse_loss(logits.float(), target)
        loss, contrastive, accuracy, video_embeds, text_embeds = reconstruction, None, None, None, None
        if input_ids is not None:
            video_embeds = self.video_projection(encoded.last_hidden_state.mean(dim=1))  # the masked clip, pooled
            text_embeds = self.encode_text(input_ids, attention_mask)
            contrastive, accuracy = info_nce(video_embeds, text_embeds, self.config.contrastive_temperature)
            loss = reconstruction + self.config.contrastive_weight * contrastive
            video_embeds = nn.functional.normalize(video_embeds, dim=-1)
            text_embeds = nn.functional.normalize(text_embeds, dim=-1)
        output = TGMPreTrainingOutput(
            loss=loss,
            logits=logits,
            mask=encoded.mask,
            ids_restore=encoded.ids_restore,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
            reconstruction_loss=reconstruction,
            contrastive_loss=contrastive,
            contrastive_accuracy=accuracy,
            similarity=similarity,
            video_embeds=video_embeds,
            text_embeds=text_embeds,
        )
        return output


class TGMForVideoClassification(VideoMAEForVideoClassification):
    """The TGM video encoder fine-tuned as VideoMAE is (mean pooling, fc_norm, linear head); the text tower stays
    behind."""

    config_class = TGMConfig


__all__ = [
    "TGMConfig",
    "TGMModel",
    "TGMForPreTraining",
    "TGMForVideoClassification",
    "TGMPreTrainingOutput",
    "text_guided_mask",
]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
from .presets import TINY_VIDEO, VIT  # noqa: E402

METHOD = dict(
    name="tgm",
    paper="Text-Guided Video Masked Autoencoder (Fan et al., ECCV 2024), arXiv:2408.00759",
    config_class=TGMConfig,
    model_classes={
        "base": TGMModel, "pretraining": TGMForPreTraining, "video-classification": TGMForVideoClassification,
    },
    processor="TGMProcessor",  # MAEVideoProcessor + the config's caption tokenizer
    presets={
        # videomae-tiny's sizes; a tiny random CLIP (32 px, 8-px patches: the 4x4 token grid) scores the tokens,
        # a tiny CLIP text tower on ByT5 byte ids (no files) embeds the captions; nothing is downloaded
        "tgm-tiny": dict(
            TINY_VIDEO, projection_dim=64, max_text_length=32, tokenizer_name_or_path=None,
            clip_name_or_path=None, text_encoder_name_or_path=None,
            clip_config=dict(
                model_type="clip", projection_dim=32,
                text_config=dict(vocab_size=384, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, max_position_embeddings=32, pad_token_id=0,
                                 bos_token_id=0, eos_token_id=1),
                vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                   num_hidden_layers=1, num_attention_heads=2),
            ),
            text_config=dict(model_type="clip_text_model", vocab_size=384, hidden_size=64, intermediate_size=128,
                             num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=32,
                             pad_token_id=0, bos_token_id=0, eos_token_id=1),
        ),
        # ViT-B/16 VideoMAE at r = 0.9, scored by CLIP ViT-B/16, CLIP's text encoder and tokenizer (77 tokens)
        "tgm-vit-base-patch16": dict(patch_size=16, **VIT["base"]),
    },
    modality="video-text",  # clips + captions: not in the shared video suites (tests/test_tgm.py has its own)
)
