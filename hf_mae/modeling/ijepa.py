"""I-JEPA: Self-Supervised Learning from Images with a Joint-Embedding Predictive Architecture (Assran et al.,
CVPR 2023).

The method, following the official code (facebookresearch/ijepa, ``src/train.py``, ``src/models/vision_transformer.py``,
``src/masks/multiblock.py``):
1. **multi-block masks** (``masking.MultiBlockMaskGenerator``): 4 target blocks (area share 0.15-0.2, aspect ratio
   0.75-1.5) and one context block (share 0.85-1.0, square) with the target blocks removed;
2. the **context encoder**, a ViT without cls token (fixed 2D sin-cos positions, final LayerNorm), encodes the
   context patches only;
3. the **target encoder**, an EMA copy of the context encoder (momentum linear from 0.996 to 1 over training, one step
   per optimiser step), encodes the whole image without gradients; its outputs are layer-normed once more (no affine,
   ``F.layer_norm``) and the tokens of each target block are the targets;
4. the **predictor**, a narrow ViT (384-d), reads the projected context tokens plus, for one target block at a time,
   a shared mask token at each target position (with sin-cos positions of its width) and maps its outputs back to the
   encoder's width: one prediction per target token;
5. the loss is ``F.smooth_l1_loss(prediction, target)`` (beta 1, mean over every element): the official code's; the
   paper writes an L2 distance.

Departures from the official code (all hf-mae's choice):
- the mask generator draws a block's corner anywhere it fits (the official never masks the last row or column) and
  applies ``min_keep`` to the context only (see ``masking.MultiBlockMaskGenerator``);
- the momentum after ``s`` optimiser steps is ``m(s / total_steps)`` (``teachers.MomentumSchedule``); the official
  generator uses ``m((s - 1) / total_steps)`` for the ``s``-th update (one step apart);
- the target encoder runs in eval mode (no drop path; the official configs use none anyway);
- predictions of the ``num_targets`` blocks are computed in one batch of ``batch * num_targets`` sequences, grouped
  by image (the official groups by block); every sequence is independent, so the numbers are the same.

``AutoModel`` on a pre-training checkpoint gives the *context* encoder (``ijepa.*``). The paper evaluates the target
encoder: :meth:`IJEPAForPreTraining.target_encoder_model` returns it as an :class:`IJEPAModel`.
Weights of transformers' ``IJepaModel`` convert exactly: ``hf_mae.convert.convert_ijepa`` / ``hf-mae convert ijepa``.

Names: transformers owns ``model_type="ijepa"`` (``IJepaConfig`` / ``IJepaModel``). Following DESIGN.md this config is
``HfIJEPAConfig`` with ``model_type="hf_ijepa"``; the model classes are ``IJEPAModel``, ``IJEPAForPreTraining`` and
``IJEPAForImageClassification`` (upper-case JEPA, distinct from transformers' ``IJepa*`` names).

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Unpack

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .base import MaskedModelPreTrainedModel, ViTDecoderMixin, ViTImageConfig, check_int, check_rate
from .embeddings import PatchEmbedding2D, PatchProjection, interpolate_pos_embed, sincos_2d
from .layers import Attention, TransformerBlock, build_blocks, build_encoder_blocks, run_blocks
from .losses import classification_loss
from .masking import (
    MultiBlockMaskGenerator,
    check_mask_ratio,
    check_tensor_condition,
    context_mask,
    gather_tokens,
    target_mask,
)
from .outputs import MaskedEncoderOutput
from .teachers import EMATeacher, EMATeacherMixin, MomentumSchedule

IJEPAModelOutput = MaskedEncoderOutput
RANGE_FIELDS = ("target_scale", "target_aspect_ratio", "context_scale", "context_aspect_ratio")


class HfIJEPAConfig(ViTImageConfig, ViTDecoderMixin):
    r"""Configuration of an I-JEPA model. Defaults: a ViT-B/16 context encoder with DMT-JEPA's ViT-B predictor (384-d,
    6 blocks, the encoder's 12 heads; I-JEPA's released ViT-H/14 uses 12 blocks: preset ``ijepa-vit-huge-patch14``).

    The encoder's fields are :class:`ViTImageConfig`'s; the ``decoder_*`` fields of :class:`ViTDecoderMixin` size the
    **predictor** (official ``pred_emb_dim``, ``pred_depth``; its heads are the encoder's, ``num_heads=encoder.num_heads``;
    MLP ratio 4). Both widths must be divisible by 4 (2D sin-cos positions). Besides:
    num_target_blocks: target blocks per image (official ``num_pred_masks``: 4).
    target_scale, target_aspect_ratio: (low, high) area share and height / width ratio of the target blocks
        (official (0.15, 0.2) and (0.75, 1.5)).
    context_scale, context_aspect_ratio: the same for the context block (official (0.85, 1.0) and (1.0, 1.0)).
    min_keep: the context keeps more than this many patches (official 10; ``-tiny``: 4, for an 8x8 grid).
    allow_overlap: let the context see the target blocks (official False).
    ema_momentum, ema_momentum_end: the target encoder's EMA momentum rises linearly from the first to the second
        over ``total_steps`` optimiser steps (official ``ema: [0.996, 1.0]``).
    total_steps: optimiser steps of the momentum ramp (default 187,500 = the official ViT-H/14 run: 300 epochs of 625
        iterations at batch 2048); hf-mae's choice for the default, set it to your run's length.
    The classifier (``IJEPAForImageClassification``) mean-pools the encoder's normalised patch tokens (there is no cls
    token) and applies a linear layer, as transformers' ``IJepaForImageClassification``.
    """

    model_type = "hf_ijepa"

    decoder_hidden_size: int = 384
    decoder_num_hidden_layers: int = 6
    decoder_num_attention_heads: int = 12
    decoder_intermediate_size: int = 1536
    num_target_blocks: int = 4
    target_scale: list[float] | tuple[float, float] = (0.15, 0.2)
    target_aspect_ratio: list[float] | tuple[float, float] = (0.75, 1.5)
    context_scale: list[float] | tuple[float, float] = (0.85, 1.0)
    context_aspect_ratio: list[float] | tuple[float, float] = (1.0, 1.0)
    min_keep: int = 10
    allow_overlap: bool = False
    ema_momentum: float = 0.996
    ema_momentum_end: float = 1.0
    total_steps: int = 187_500

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        for name in ("hidden_size", "decoder_hidden_size"):
            if getattr(self, name) % 4:
                raise ValueError(f"{name} {getattr(self, name)} must be divisible by 4 (2D sin-cos positions)")
        check_int("num_target_blocks", self.num_target_blocks)
        check_int("min_keep", self.min_keep, minimum=0)
        check_int("total_steps", self.total_steps)
        for name in ("ema_momentum", "ema_momentum_end"):
            check_rate(name, getattr(self, name), closed=True)
        if not isinstance(self.allow_overlap, bool):
            raise ValueError(f"allow_overlap must be a bool, got {self.allow_overlap!r}")
        generator = self.mask_generator()  # checks the ranges (ValueError naming the field)
        for name in RANGE_FIELDS:  # lists: what config.json gives back
            setattr(self, name, list(getattr(generator, name)))

    def mask_generator(self) -> MultiBlockMaskGenerator:
        """The multi-block mask generator these fields describe."""
        return MultiBlockMaskGenerator(
            num_targets=self.num_target_blocks, target_scale=self.target_scale,
            target_aspect_ratio=self.target_aspect_ratio, context_scale=self.context_scale,
            context_aspect_ratio=self.context_aspect_ratio, min_keep=self.min_keep, allow_overlap=self.allow_overlap,
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------------
# Modules


class IJEPAEmbeddings(nn.Module):
    """Patch embedding + fixed 2D sin-cos positions (a buffer (1, N, hidden), MAE's width-first layout, which is the
    official ``get_2d_sincos_pos_embed``'s); no cls token."""

    def __init__(self, config: HfIJEPAConfig):
        super().__init__()
        self.patch_embeddings = PatchEmbedding2D(
            config.image_size, config.patch_size, config.num_channels, config.hidden_size
        )
        self.register_buffer("position_embeddings", sincos_2d(self.patch_embeddings.grid_size, config.hidden_size)[None])

    def positions(self, grid, dtype) -> torch.Tensor:
        """(1, rows * cols, hidden) in ``dtype``, interpolated (bicubic) for another grid than the native one."""
        table = self.position_embeddings.to(dtype)
        return interpolate_pos_embed(table, self.patch_embeddings.grid_size, grid)

    def forward(self, pixel_values, grid) -> torch.Tensor:
        """(batch, C, H, W) -> patch tokens with positions (batch, N, hidden)."""
        patches = self.patch_embeddings(pixel_values)
        return patches + self.positions(grid, patches.dtype)


def check_index_tensor(name: str, ids, shape: tuple, num_tokens: int) -> torch.Tensor:
    """``ids`` must be an integer tensor of ``shape`` (None entries: any size >= 1) with values in [0, num_tokens)."""
    if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.long, torch.int, torch.int16, torch.uint8):
        raise TypeError(f"{name} must be an integer torch.Tensor of patch indices, got "
                        f"{type(ids).__name__ if not isinstance(ids, torch.Tensor) else ids.dtype}")  # fmt: skip
    given = tuple(ids.shape)
    if len(given) != len(shape) or any(s is not None and s != g for s, g in zip(shape, given)) or 0 in given[1:]:
        wanted = "(" + ", ".join("any" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{name} must have shape {wanted} with no empty dimension, got {given}")
    if ids.numel():
        check_tensor_condition((ids.min() >= 0) & (ids.max() < num_tokens),
                               f"{name} must hold patch indices in [0, {num_tokens})")  # fmt: skip
    return ids.long()


class IJEPAPredictor(nn.Module):
    """The narrow ViT that predicts the target encoder's features of the target blocks from the context tokens
    (official ``VisionTransformerPredictor``)."""

    def __init__(self, config: HfIJEPAConfig):
        super().__init__()
        self.grid_size = config.grid_size
        width = config.decoder_hidden_size
        self.predictor_embed = nn.Linear(config.hidden_size, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.register_buffer("predictor_pos_embed", sincos_2d(self.grid_size, width)[None])
        self.predictor_layers = build_blocks(config, config.decoder_num_hidden_layers, **config.decoder_block_kwargs())
        self.predictor_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.predictor_proj = nn.Linear(width, config.hidden_size)

    def forward(self, context, context_ids, target_ids, grid) -> torch.Tensor:
        """context: (batch, K, hidden) encoded context tokens at ``context_ids`` (batch, K); target_ids (batch, T, M).
        Returns the predictions (batch, T, M, hidden): each of the T blocks predicted from the context alone."""
        batch, num_targets, size = target_ids.shape
        positions = interpolate_pos_embed(self.predictor_pos_embed.to(context.dtype), self.grid_size, grid)
        positions = positions.expand(batch, -1, -1)
        hidden = self.predictor_embed(context) + gather_tokens(positions, context_ids)
        queries = self.mask_token.to(hidden.dtype) + gather_tokens(positions, target_ids.reshape(batch, -1))
        # one sequence per (image, target block): the context followed by that block's mask tokens
        hidden = hidden.repeat_interleave(num_targets, dim=0)
        queries = queries.reshape(batch * num_targets, size, -1)
        hidden, _, _ = run_blocks(self.predictor_layers, torch.cat([hidden, queries], dim=1), output_attentions=False)
        predicted = self.predictor_proj(self.predictor_norm(hidden[:, -size:]))
        return predicted.reshape(batch, num_targets, size, -1)


# ---------------------------------------------------------------------------------------------------------------
# Models


class IJEPAPreTrainedModel(MaskedModelPreTrainedModel):
    config_class = HfIJEPAConfig
    base_model_prefix = "ijepa"
    input_modalities = ("image",)
    _no_split_modules = ["TransformerBlock", "IJEPAEmbeddings"]

    @torch.no_grad()
    def _init_weights(self, module):
        """The official initialisation (``helper.init_model``): truncated-normal (std 0.02) linears, patch projection
        and mask token, zero biases, unit LayerNorms, fixed sin-cos tables. (The official constructors also divide each
        block's output projections by sqrt(2 * depth), but ``init_model`` re-draws every Linear afterwards.)"""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, PatchProjection)):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, IJEPAEmbeddings):
            grid = module.patch_embeddings.grid_size
            init.copy_(module.position_embeddings, sincos_2d(grid, module.position_embeddings.shape[-1])[None])
        elif isinstance(module, IJEPAPredictor):
            init.trunc_normal_(module.mask_token, std=std)
            init.copy_(module.predictor_pos_embed, sincos_2d(module.grid_size, module.mask_token.shape[-1])[None])
        else:
            super()._init_weights(module)  # norms
        if isinstance(module, IJEPAForPreTraining):
            init.zeros_(getattr(module, module.teacher_step_buffer))


class IJEPAModel(IJEPAPreTrainedModel):
    """The I-JEPA ViT encoder (context encoder; the target encoder has the same architecture): patch tokens with
    sin-cos positions, no cls token, a final LayerNorm. By default every patch is encoded, in order."""

    _can_record_outputs = {"hidden_states": TransformerBlock, "attentions": Attention}
    has_cls_token = False  # tools that pool (hf-mae probe) read it: every token is a patch

    def __init__(self, config: HfIJEPAConfig):
        super().__init__(config)
        self.embeddings = IJEPAEmbeddings(config)
        self.layers = build_encoder_blocks(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embeddings

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        context_ids: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """
        pixel_values: (batch, channels, height, width) float.
        context_ids: (batch, K) patch indices, optional: encode only these patches, in this order (the context of a
            multi-block mask). None: every patch, in order.
        mask_ratio: None or 0 only (every patch; hf-mae's common feature-extraction argument): I-JEPA masks with
            blocks, not with a ratio.
        interpolate_pos_encoding: allow other image sizes than ``config.image_size`` (positions are interpolated).
        Returns IJEPAModelOutput: last_hidden_state (batch, K or N, hidden) after the final LayerNorm, mask (batch, N)
        (1 = not encoded), ids_restore None, pooler_output (batch, hidden) the mean of the tokens.
        """
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        if mask_ratio is not None and check_mask_ratio(mask_ratio) != 0.0:
            raise ValueError(
                f"mask_ratio must be 0 or None for {type(self).__name__}, got {mask_ratio!r}: I-JEPA masks with blocks; "
                "pass context_ids (e.g. from config.mask_generator()) to encode a context"
            )
        grid = self.embeddings.patch_embeddings.grid_for(pixel_values, allow_other_size=interpolate_pos_encoding)
        tokens = self.embeddings(pixel_values, grid)
        batch, num_patches, _ = tokens.shape
        mask = torch.zeros(batch, num_patches, device=tokens.device)
        if context_ids is not None:
            context_ids = check_index_tensor("context_ids", context_ids, (batch, None), num_patches).to(tokens.device)
            tokens = gather_tokens(tokens, context_ids)
            mask = context_mask(context_ids, num_patches)
        hidden, _, _ = run_blocks(self.layers, tokens)
        hidden = self.layernorm(hidden)
        return IJEPAModelOutput(last_hidden_state=hidden, mask=mask, pooler_output=hidden.mean(dim=1))


class IJEPATeacher(EMATeacher):
    """The target side: an EMA copy of the context encoder (weights as buffers, ``teachers.EMATeacher``), always in
    eval mode; momentum linear from ``ema_momentum`` to ``ema_momentum_end`` over ``total_steps``."""

    def __init__(self, config: HfIJEPAConfig, **parts: nn.Module):
        schedule = MomentumSchedule(config.ema_momentum, config.ema_momentum_end, config.total_steps, kind="linear")
        super().__init__(schedule, encoder=IJEPAModel(config), **parts)

    def train(self, mode: bool = True):
        return super().train(False)


@dataclass
class IJEPAForPreTrainingOutput(ModelOutput):
    """
    loss: smooth L1 between predictions and targets (mean over every element).
    logits: (batch, num_targets, M, hidden) the predictor's output for each target block's tokens.
    mask: (batch, N) 1 = hidden from the context encoder.
    hidden_states, attentions: the context encoder's, when asked.
    targets: (batch, num_targets, M, hidden) the target features (no gradient).
    target_mask: (batch, N) 1 = in a target block.
    context_ids: (batch, K), target_ids: (batch, num_targets, M): the mask that was used.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    targets: torch.Tensor | None = None
    target_mask: torch.Tensor | None = None
    context_ids: torch.Tensor | None = None
    target_ids: torch.Tensor | None = None


class IJEPAForPreTraining(EMATeacherMixin, IJEPAPreTrainedModel):
    """Context encoder + predictor, with the EMA target encoder. Call ``after_optimizer_step(step)`` after every
    optimiser step (``teachers.EMATeacherMixin``; ``hf-mae pretrain`` does); without that call each training forward
    first moves the target encoder one step."""

    teacher_step_buffer = "ijepa_step"

    def __init__(self, config: HfIJEPAConfig):
        super().__init__(config)
        self.ijepa = IJEPAModel(config)
        self.predictor = IJEPAPredictor(config)
        self.build_heads(config)
        self.teacher = self.build_teacher(config)
        # optimiser steps the target encoder followed (training forwards, when no loop calls after_optimizer_step)
        self.register_buffer(self.teacher_step_buffer, torch.zeros((), dtype=torch.long))
        self.mask_generator = config.mask_generator()
        self.post_init()
        self.teacher.copy_from(self.teacher_student())  # the target encoder starts as a copy (copy.deepcopy)

    # -- what DMT-JEPA extends --
    def build_heads(self, config) -> None:
        """Trainable modules between the encoders and the predictor (none in I-JEPA)."""

    def build_teacher(self, config) -> EMATeacher:
        return IJEPATeacher(config)

    def teacher_student(self) -> dict:
        """The online modules the target side tracks, by the teacher's part names."""
        return {"encoder": self.ijepa}

    def target_features(self, features: torch.Tensor, grid) -> torch.Tensor:
        """The target encoder's layer-normed output (batch, N, hidden) -> the target of every patch (I-JEPA: itself)."""
        return features

    def context_features(self, context: torch.Tensor) -> torch.Tensor:
        """The context encoder's output (batch, K, hidden) -> the predictor's input (I-JEPA: itself)."""
        return context

    # --
    def target_encoder_model(self) -> IJEPAModel:
        """The target encoder as a stand-alone :class:`IJEPAModel` (what the paper evaluates): a copy with the EMA
        weights as parameters; ``save_pretrained`` it to load it with ``AutoModel``."""
        encoder = IJEPAModel(copy.deepcopy(self.config))
        encoder.load_state_dict(self.teacher.encoder.state_dict())
        return encoder.to(self.ijepa.layernorm.weight.device).eval()

    @torch.no_grad()
    def targets(self, pixel_values, target_ids, grid, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """The targets (batch, T, M, hidden): the target encoder on the whole image, ``F.layer_norm`` over the
        features (no affine), :meth:`target_features`, gathered at each block's patches."""
        features = self.teacher.encoder(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding).last_hidden_state
        features = self.target_features(F.layer_norm(features, features.shape[-1:]), grid)
        batch, num_targets, size = target_ids.shape
        gathered = gather_tokens(features, target_ids.reshape(batch, -1))
        return gathered.reshape(batch, num_targets, size, -1)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        context_ids: torch.Tensor | None = None,
        target_ids: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """
        pixel_values: (batch, channels, height, width).
        context_ids: (batch, K) and target_ids: (batch, num_targets, M) patch indices, optional (both or neither):
            fix the mask. Without them a multi-block mask is drawn (``config.mask_generator()``, torch's global RNG).
        Returns IJEPAForPreTrainingOutput (loss, logits (batch, num_targets, M, hidden), mask, ...).
        """
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        grid = self.ijepa.embeddings.patch_embeddings.grid_for(pixel_values, allow_other_size=interpolate_pos_encoding)
        batch, num_patches = pixel_values.shape[0], grid[0] * grid[1]
        if (context_ids is None) != (target_ids is None):
            raise ValueError("context_ids and target_ids fix the mask together: pass both or neither")
        if context_ids is None:
            drawn = self.mask_generator(batch, grid, device=pixel_values.device)
            context_ids, target_ids = drawn.context_ids, drawn.target_ids
        target_ids = check_index_tensor("target_ids", target_ids, (batch, None, None), num_patches)
        target_ids = target_ids.to(pixel_values.device)
        if self.training and not self.teacher.updated_by_hook:  # no loop calls after_optimizer_step
            step = getattr(self, self.teacher_step_buffer)
            self.teacher.update(self.teacher_student(), int(step.item()))
            step += 1

        encoded = self.ijepa(pixel_values, context_ids=context_ids, interpolate_pos_encoding=interpolate_pos_encoding,
                             return_dict=True, **kwargs)  # fmt: skip
        context_ids = context_ids.to(pixel_values.device).long()
        predicted = self.predictor(self.context_features(encoded.last_hidden_state), context_ids, target_ids, grid)
        targets = self.targets(pixel_values, target_ids, grid, interpolate_pos_encoding)
        loss = F.smooth_l1_loss(predicted.float(), targets.float())  # official loss_fn (beta 1, mean)
        return IJEPAForPreTrainingOutput(
            loss=loss,
            logits=predicted,
            mask=encoded.mask,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
            targets=targets,
            target_mask=target_mask(target_ids, num_patches),
            context_ids=context_ids,
            target_ids=target_ids,
        )


class IJEPAForImageClassification(IJEPAPreTrainedModel):
    """The encoder (every patch) + a linear classifier on the mean of its normalised patch tokens: there is no cls
    token, so the pooling is the mean, as transformers' ``IJepaForImageClassification``."""

    def __init__(self, config: HfIJEPAConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.ijepa = IJEPAModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """pixel_values (batch, channels, H, W); labels (batch,). Returns ImageClassifierOutput (logits (batch,
        num_labels))."""
        encoded = self.ijepa(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True, **kwargs)
        logits = self.classifier(encoded.pooler_output)
        loss = classification_loss(logits, labels, self.config) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=encoded.hidden_states,
                                     attentions=encoded.attentions)  # fmt: skip


__all__ = [
    "HfIJEPAConfig",
    "IJEPAPreTrainedModel",
    "IJEPAModel",
    "IJEPAForPreTraining",
    "IJEPAForImageClassification",
    "IJEPAForPreTrainingOutput",
    "IJEPAPredictor",
]


# ----------------------------------------------------------------------------------------------- registry row
from .presets import TINY, VIT  # noqa: E402

# official make_transforms with the in1k configs: RandomResizedCrop(crop_scale (0.3, 1.0), torchvision's default
# ratio and bilinear resampling), no flip, no colour distortion or blur
IJEPA_AUGMENTATION = dict(crop_scale=(0.3, 1.0), crop_ratio=(3 / 4, 4 / 3), resample="bilinear", flip_probability=0.0)
# the tiny grid (8x8): the context keeps more than 4 patches (10 of 64 would often fail)
IJEPA_TINY = dict(TINY, decoder_num_attention_heads=4, min_keep=4, total_steps=1000)

METHOD = dict(
    name="ijepa",
    paper="Self-Supervised Learning from Images with a Joint-Embedding Predictive Architecture (Assran et al., "
          "CVPR 2023), arXiv:2301.08243",
    config_class=HfIJEPAConfig,
    model_classes={
        "base": IJEPAModel, "pretraining": IJEPAForPreTraining, "image-classification": IJEPAForImageClassification,
    },
    processor="MAEImageProcessor",
    pretrain_augmentation=IJEPA_AUGMENTATION,
    # configs/in1k_vith14_ep300.yaml: lr 1e-3 at batch 2048 (= 1.25e-4 per 256 images), AdamW's default betas
    pretrain_base_lr=1.25e-4, pretrain_batch=2048, pretrain_betas=(0.9, 0.999),
    presets={
        "ijepa-tiny": IJEPA_TINY,
        # DMT-JEPA's ViT-B/16 setting (configs/in1k_vitb16_ep600.yaml): predictor 384-d x 6, 12 heads
        "ijepa-vit-base-patch16": dict(patch_size=16, **VIT["base"]),
        # the released I-JEPA ViT-H/14 (configs/in1k_vith14_ep300.yaml): predictor 384-d x 12, 16 heads
        "ijepa-vit-huge-patch14": dict(patch_size=14, decoder_num_hidden_layers=12, decoder_num_attention_heads=16,
                                       **VIT["huge"]),
    },
    exports=["IJEPAPreTrainedModel", "IJEPAForPreTrainingOutput", "IJEPAPredictor"],
)
