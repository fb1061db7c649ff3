"""Hybrid Distillation: Connecting Masked Autoencoders with Contrastive Learners (Shi et al., ICLR 2024),
arXiv:2306.15876. No official code is released (lygsbw/hybriddistill holds only "The code is coming soon").

Two frozen teachers guide one student (a ViT, MAE's encoder :class:`MAEModel`): a **MIM teacher** (MAE ViT-B)
for *diversity* and a **supervised or contrastive feature teacher** (DeiT-B or CLIP ViT-B/16) for
*discrimination*. Both teachers see the whole image.
1. **token relations**: at intermediate blocks the student's attention maps imitate the MIM teacher's at the
   matching block (KL divergence per query row, ``losses.attention_kl``), so the student keeps MIM's local,
   diverse attention ("alleviates attention collapse");
2. **feature distillation**: the student's final features, through a linear projection, regress the feature
   teacher's final features, whitened by a parameter-free layer norm (SmoothL1), for discrimination;
3. **progressive redundant token masking**: at a few blocks the student drops the share of its remaining patch
   tokens that the feature teacher's CLS attention ranks lowest (``masking.keep_top_scores``), so deeper blocks
   and the losses run on fewer, less redundant tokens ("reduces the distilling costs").
``loss = relation_loss_weight * loss_relation + feature_loss_weight * loss_feature``.

What the paper's text available here fixes is the abstract (OpenReview: "emulates the token relations of the MIM
teacher at intermediate layers for diversity, while simultaneously distilling the final features of the CL teacher
... A progressive redundant token masking strategy is employed"). Everything below that is more specific is
**hf-mae's choice**, not verified against the paper's method section:
- relations are the attention probabilities (softmax(QK^T / sqrt(d))) per head, compared with KL(teacher ||
  student) on the rows of the tokens the student holds (the teacher's rows and columns gathered at those tokens and
  renormalised over them), averaged over heads (head by head when the head counts agree, else the head means),
  queries, batch and relation blocks; by default at every student block but the last (``relation_layers``);
  student block i meets teacher block ``round(i * T / S)``;
- the feature target is the feature teacher's last block output (before its final norm), whitened, at the cls
  token and the patches the student still holds; the student side is the encoder's final norm then a Linear
  (Feature Distillation's recipe, which the paper builds on), SmoothL1 (beta 1);
- redundancy is the feature teacher's last-block CLS->patch attention (mean over heads); tokens are dropped after
  blocks ``token_drop_layers`` ([4, 7, 10] of 12) keeping ``ceil(token_keep_rate * k)`` of the k held (0.7: EViT's
  schedule); an input ``mask_ratio`` (0 by default: the student sees the whole image, as in feature distillation)
  can hide a random share first;
- the loss weights are 1 and 1.

The teachers are frozen and kept out of the checkpoint: each is rebuilt from ``<prefix>_name_or_path``, from
``<prefix>_config`` (randomly initialised from ``<prefix>_seed``: tests) or passed as an instance
(``HybridDistillForPreTraining(config, mim_teacher=..., feature_teacher=...)``), with the prefixes ``mim_teacher``
and ``feature_teacher``.

Student attention maps: the relation blocks ask their attention for its weights (``output_attentions=True`` per
block), which runs that block's attention with the eager kernel (``layers.Attention.attend``); every other block
keeps the configured kernel (sdpa / flash). The cost is one materialised (batch, heads, tokens, tokens) map per
relation block, kept for the backward pass.

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Unpack

import torch
from torch import nn
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple

from .base import check_int, check_rate
from .losses import attention_kl
from .mae import MAEConfig, MAEForImageClassification, MAEModel, MAEPreTrainedModel
from .maskalign import CLIP_MEAN, CLIP_STD, check_image_statistics
from .masking import check_mask_ratio, gather_tokens, keep_top_scores, mask_from_noise
from .targets import whitened
from .teachers import (
    FrozenTeacherMixin,
    build_frozen_teacher,
    check_teacher_fields,
    described_teacher_config,
    resize_token_grid,
    teacher_forward,
    teacher_vision_config,
)

TEACHERS = ("mim_teacher", "feature_teacher")


class HybridDistillConfig(MAEConfig):
    r"""Configuration of a Hybrid Distill model. Defaults: ViT-B/16 student, MAE ViT-B/16 MIM teacher, CLIP
    ViT-B/16 feature teacher.

    The encoder's fields are :class:`MAEConfig`'s (its ``decoder_*`` and ``norm_pix_loss`` fields are unused). The
    paper fixes the two teachers' roles (relations of the MIM teacher at intermediate blocks, final features of the
    supervised / CL teacher, progressive redundant-token masking); every value below is **hf-mae's choice**:
    mask_ratio: a random share of patches hidden from the student's input before any dropping (0.0: the student
        sees the whole image, as in Feature Distillation).
    relation_layers: student blocks (1-based) whose attention imitates the MIM teacher's (block i meets teacher
        block ``round(i * T / S)``); None = every block but the last.
    token_drop_layers: student blocks (1-based, before the last) after which redundant tokens are dropped
        ([4, 7, 10], EViT's; an empty list switches dropping off).
    token_keep_rate: share of the held patch tokens kept at each drop, ``ceil(rate * k)``, in (0, 1] (0.7, EViT's).
    relation_loss_weight, feature_loss_weight: weights of the two losses (1, 1).
    mim_teacher_name_or_path / _config / _seed: the MIM teacher (by Hub id or folder, or a config dict of a
        randomly initialised one, from the seed); MAE ViT-B/16 by default.
    feature_teacher_name_or_path / _config / _seed: the supervised / contrastive teacher, likewise; CLIP ViT-B/16
        by default (DeiT-B in the ``-deit`` preset).
    mim_teacher_image_mean / _std, feature_teacher_image_mean / _std: each teacher's input normalisation; pixels
        normalised with ImageNet's statistics are re-normalised to them (CLIP's for CLIP); None keeps the
        student's (MAE, DeiT).
    feature_teacher_hidden_size: width of the feature teacher's block outputs (the projection's output; CLIP
        ViT-B/16: 768); set when the model is built from a teacher instance, ``feature_teacher_config`` or a local
        folder; for a Hub id set it to match (checked against the teacher at the first forward).
    """

    model_type = "hybrid_distill"

    mask_ratio: float = 0.0
    relation_layers: list[int] | None = None
    token_drop_layers: list[int] | tuple[int, ...] = (4, 7, 10)
    token_keep_rate: float = 0.7
    relation_loss_weight: float = 1.0
    feature_loss_weight: float = 1.0
    mim_teacher_name_or_path: str | None = "facebook/vit-mae-base"
    mim_teacher_config: dict | None = None
    mim_teacher_seed: int = 0
    mim_teacher_image_mean: list[float] | tuple[float, ...] | None = None
    mim_teacher_image_std: list[float] | tuple[float, ...] | None = None
    feature_teacher_name_or_path: str | None = "openai/clip-vit-base-patch16"
    feature_teacher_config: dict | None = None
    feature_teacher_seed: int = 0
    feature_teacher_image_mean: list[float] | tuple[float, ...] | None = CLIP_MEAN
    feature_teacher_image_std: list[float] | tuple[float, ...] | None = CLIP_STD
    feature_teacher_hidden_size: int = 768

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        depth = self.num_hidden_layers
        if self.relation_layers is not None:
            self.relation_layers = check_block_list("relation_layers", self.relation_layers, depth)
        self.token_drop_layers = check_block_list("token_drop_layers", self.token_drop_layers, depth - 1,
                                                  "before the last block")  # fmt: skip
        check_rate("token_keep_rate", self.token_keep_rate, closed=True, allow_zero=False)
        for name in ("relation_loss_weight", "feature_loss_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        check_int("feature_teacher_hidden_size", self.feature_teacher_hidden_size)
        for prefix in TEACHERS:
            check_teacher_fields(self, prefix=prefix)
            mean, std = f"{prefix}_image_mean", f"{prefix}_image_std"
            setattr(self, mean, check_image_statistics(mean, getattr(self, mean)))
            setattr(self, std, check_image_statistics(std, getattr(self, std)))
            if (getattr(self, mean) is None) != (getattr(self, std) is None):
                raise ValueError(f"{mean} and {std} must both be set or both be None")

    @property
    def student_relation_layers(self) -> list[int]:
        """The relation blocks (1-based): ``relation_layers``, or every block but the last."""
        if self.relation_layers is not None:
            return list(self.relation_layers)
        return list(range(1, self.num_hidden_layers))


def check_block_list(name: str, value, last: int, where: str = "") -> list[int]:
    """Distinct 1-based block numbers in [1, last], sorted."""
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= last for v in value
    ) or len(set(value)) != len(value):
        extra = f" ({where})" if where else ""
        raise ValueError(f"{name} must be a list of distinct block numbers in [1, {last}]{extra}, got {value!r}")
    return sorted(value)


def kept_after_drop(held: int, keep_rate: float) -> int:
    """Patch tokens kept of ``held`` at one drop: ``ceil(keep_rate * held)``, at least 1."""
    return max(1, math.ceil(keep_rate * held - 1e-9))


def teacher_relations(attention: torch.Tensor, num_prefix_tokens: int, grid, to_grid) -> torch.Tensor:
    """One teacher block's attention (n, heads, P + N, P + N) -> (n, heads, 1 + N', 1 + N') over the cls token (the
    first prefix token; the others are left out) and the patches, resized bilinearly (keys, then queries) from the
    teacher's ``grid`` to the student's ``to_grid`` when they differ. Rows are not renormalised here."""
    patches = torch.arange(num_prefix_tokens, attention.shape[-1], device=attention.device)
    index = torch.cat([patches.new_zeros(1), patches])
    relations = attention.float()[:, :, index][:, :, :, index]
    if tuple(grid) == tuple(to_grid):
        return relations

    def resize_keys(maps):  # (n, h, Q, 1 + N) -> (n, h, Q, 1 + N')
        n, h, q, _ = maps.shape
        image = maps[..., 1:].reshape(n * h * q, 1, *grid)
        image = nn.functional.interpolate(image, size=tuple(to_grid), mode="bilinear", align_corners=False)
        return torch.cat([maps[..., :1], image.reshape(n, h, q, -1).clamp_min(0)], dim=-1)

    return resize_keys(resize_keys(relations).transpose(2, 3)).transpose(2, 3)


def gather_relations(relations: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Rows and columns of (n, heads, 1 + N, 1 + N) at the cls token and the patches ``ids`` (n, k), in that order,
    rows renormalised over the kept keys: (n, heads, 1 + k, 1 + k), the attention restricted to those tokens."""
    index = torch.cat([ids.new_zeros(ids.shape[0], 1), ids + 1], dim=1)  # (n, 1 + k)
    heads, length = relations.shape[1], relations.shape[-1]
    rows = torch.gather(relations, 2, index[:, None, :, None].expand(-1, heads, -1, length))
    kept = torch.gather(rows, 3, index[:, None, None, :].expand(-1, heads, index.shape[1], -1))
    return kept / kept.sum(dim=-1, keepdim=True).clamp_min(1e-12)


def relation_loss(teacher: torch.Tensor, student: torch.Tensor) -> torch.Tensor:
    """KL(teacher || student) of (n, heads, q, k) maps; with different head counts the head means are compared."""
    if teacher.shape[1] != student.shape[1]:
        teacher, student = teacher.mean(dim=1, keepdim=True), student.mean(dim=1, keepdim=True)
    return attention_kl(teacher, student)


@dataclass
class HybridDistillStudentOutput(ModelOutput):
    """The student's pre-training pass.
    last_hidden_state: (batch, 1 + k_final, hidden) after the final norm, at the cls token and the patches held last.
    token_mask: the input's TokenMask (``mask`` 1 = hidden from the input).
    block_ids: per block, (batch, k_i) the patch ids its input holds, in order.
    attentions: relation block (1-based) -> its attention (batch, heads, 1 + k_i, 1 + k_i).
    """

    last_hidden_state: torch.Tensor | None = None
    token_mask: object = None
    block_ids: tuple[torch.Tensor, ...] | None = None
    attentions: dict | None = None


@dataclass
class HybridDistillForPreTrainingOutput(ModelOutput):
    """
    loss: ``relation_loss_weight * loss_relation + feature_loss_weight * loss_feature``.
    logits: (batch, 1 + k_final, feature_teacher_hidden) the projected student features at the cls token and the
        patches held by the last block.
    mask: (batch, N) 1 = hidden from the student's input (``mask_ratio``); ``final_mask``: 1 = not held by the last
        block (input-masked or dropped as redundant).
    loss_relation, loss_feature: the two losses (scalars).
    kept_ids: (batch, k_final) the patch ids the last block holds.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    final_mask: torch.Tensor | None = None
    loss_relation: torch.Tensor | None = None
    loss_feature: torch.Tensor | None = None
    kept_ids: torch.Tensor | None = None


class HybridDistillPreTrainedModel(MAEPreTrainedModel):
    config_class = HybridDistillConfig
    _keys_to_ignore_on_load_unexpected = [r"^(mim_teacher|feature_teacher)\."]  # never saved


class HybridDistillModel(MAEModel):
    """The Hybrid Distill ViT encoder (:class:`MAEModel`): a plain ViT by default (no token is dropped outside
    pre-training); random masking when asked to mask."""

    config_class = HybridDistillConfig


class HybridDistillForImageClassification(MAEForImageClassification):
    """The Hybrid Distill encoder (no masking, no dropping) + linear classifier, pooled as MAE fine-tunes."""

    config_class = HybridDistillConfig


class HybridDistillForPreTraining(FrozenTeacherMixin, HybridDistillPreTrainedModel):
    """The student encoder with progressive redundant-token dropping, the MIM teacher's token relations at the
    relation blocks and the feature teacher's final features through a linear projection."""

    def __init__(self, config: HybridDistillConfig, mim_teacher: nn.Module | None = None,
                 feature_teacher: nn.Module | None = None):  # fmt: skip
        if mim_teacher is not None:
            teacher_vision_config(mim_teacher)  # a TypeError now rather than at the first forward
        # the feature teacher's width fixes the projection: from the instance, else the config dict or folder
        vision = (teacher_vision_config(feature_teacher) if feature_teacher is not None
                  else described_teacher_config(config, "feature_teacher"))  # fmt: skip
        if vision is not None:
            config.feature_teacher_hidden_size = vision.hidden_size
        super().__init__(config)
        self.mae = MAEModel(config)
        self.feature_head = nn.Linear(config.hidden_size, config.feature_teacher_hidden_size)
        # the frozen teachers (teachers.FrozenTeacherMixin): out of the state dict, the optimiser and DDP; built on
        # first use
        self.set_frozen_teacher("mim_teacher", mim_teacher)
        self.set_frozen_teacher("feature_teacher", feature_teacher)
        self.post_init()

    def get_teacher(self, prefix: str, device) -> nn.Module:
        """The frozen teacher ``prefix`` ("mim_teacher" / "feature_teacher") on ``device``, built on first use."""
        return self.frozen_teacher(prefix, device, lambda: build_frozen_teacher(self.config, prefix=prefix))

    def teacher_features(self, prefix: str, pixel_values: torch.Tensor, output_attentions: bool):
        config = self.config
        return teacher_forward(
            self.get_teacher(prefix, pixel_values.device), pixel_values, output_attentions=output_attentions,
            image_mean=getattr(config, f"{prefix}_image_mean"), image_std=getattr(config, f"{prefix}_image_std"),
        )  # fmt: skip

    def encode_student(self, pixel_values, token_mask, grid, scores=None, relation_layers=()):
        """The student's pass: the cls token and the patches ``token_mask`` keeps, through every block; after each
        block of ``config.token_drop_layers`` only the ``ceil(token_keep_rate * k)`` held patches with the highest
        ``scores`` (batch, N) go on (no dropping without scores). Returns HybridDistillStudentOutput."""
        config = self.config
        patches, cls = self.mae.embeddings(pixel_values, grid)
        ids = token_mask.ids_keep
        hidden = torch.cat([cls, gather_tokens(patches, ids)], dim=1)
        block_ids, attentions = (), {}
        drops = set(config.token_drop_layers) if scores is not None else set()
        for number, block in enumerate(self.mae.layers, 1):
            block_ids += (ids,)
            # eager attention for this block only when its weights are needed (layers.Attention.attend)
            hidden, weights = block(hidden, None, number in relation_layers)
            if weights is not None:
                attentions[number] = weights
            if number in drops:
                positions = keep_top_scores(ids, scores, kept_after_drop(ids.shape[1], config.token_keep_rate))
                ids = torch.gather(ids, 1, positions)
                hidden = torch.cat([hidden[:, :1], gather_tokens(hidden[:, 1:], positions)], dim=1)
        return HybridDistillStudentOutput(
            last_hidden_state=self.mae.layernorm(hidden), token_mask=token_mask, block_ids=block_ids,
            attentions=attentions,
        )  # fmt: skip

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """
        pixel_values: (batch, channels, height, width), normalised with ImageNet's statistics (the processor's).
        noise: (batch, num_patches), optional: fixes the input mask as in MAE (the smallest noise stays visible,
            in that order; with ``mask_ratio`` 0 it only orders the tokens).
        mask_ratio: overrides ``config.mask_ratio`` (the input's random masking).
        Returns HybridDistillForPreTrainingOutput.
        """
        config = self.config
        ratio = check_mask_ratio(config.mask_ratio if mask_ratio is None else mask_ratio)
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        grid = self.mae.embeddings.patch_embeddings.grid_for(pixel_values, allow_other_size=interpolate_pos_encoding)
        batch, num_patches = pixel_values.shape[0], grid[0] * grid[1]
        if noise is not None:
            if tuple(noise.shape) != (batch, num_patches):
                raise ValueError(f"noise must have shape (batch, num_patches) = {(batch, num_patches)}, "
                                 f"got {tuple(noise.shape)}")  # fmt: skip
            token_mask = mask_from_noise(noise.to(pixel_values.device), ratio)
        else:
            token_mask = self.mae.mask_generator(batch, num_patches, ratio, grid, pixel_values.device)

        relation_layers = config.student_relation_layers
        dropping = bool(config.token_drop_layers)
        mim = self.teacher_features("mim_teacher", pixel_values, output_attentions=bool(relation_layers))
        feature = self.teacher_features("feature_teacher", pixel_values, output_attentions=dropping)
        width = feature.hidden_states[-1].shape[-1]
        if width != config.feature_teacher_hidden_size:
            raise ValueError(f"the feature teacher's features are {width}-d but config.feature_teacher_hidden_size is "
                             f"{config.feature_teacher_hidden_size}; set it to match")  # fmt: skip
        scores = None
        if dropping:  # redundancy: how little the feature teacher's CLS token attends to a patch
            scores = resize_token_grid(feature.cls_attention()[..., None], feature.grid, grid)[..., 0]  # on our grid
            scores = scores.to(pixel_values.device)
        student = self.encode_student(pixel_values, token_mask, grid, scores, relation_layers)

        loss_relation = pixel_values.new_zeros((), dtype=torch.float32)
        teacher_depth, depth = len(mim.hidden_states), config.num_hidden_layers
        for number in relation_layers:
            layer = min(max(round(number * teacher_depth / depth), 1), teacher_depth)  # 1-based teacher block
            relations = teacher_relations(mim.attentions[layer - 1], mim.num_prefix_tokens, mim.grid, grid)
            target = gather_relations(relations.to(pixel_values.device), student.block_ids[number - 1])
            loss_relation = loss_relation + relation_loss(target, student.attentions[number]) / len(relation_layers)

        ids = student.block_ids[-1]  # no drop after the last block: its input's tokens are the output's
        tokens = feature.hidden_states[-1]
        target = torch.cat([whitened(tokens[:, :1]), gather_tokens(whitened(feature.patch_tokens(tokens, grid=grid)),
                                                                   ids.to(tokens.device))], dim=1)  # fmt: skip
        logits = self.feature_head(student.last_hidden_state)
        loss_feature = nn.functional.smooth_l1_loss(logits.float(), target.to(logits.device))
        final_mask = torch.ones(batch, num_patches, device=pixel_values.device).scatter_(1, ids, 0.0)
        return HybridDistillForPreTrainingOutput(
            loss=config.relation_loss_weight * loss_relation + config.feature_loss_weight * loss_feature,
            logits=logits,
            mask=token_mask.mask,
            final_mask=final_mask,
            loss_relation=loss_relation,
            loss_feature=loss_feature,
            kept_ids=ids,
        )


__all__ = [
    "HybridDistillConfig",
    "HybridDistillPreTrainedModel",
    "HybridDistillModel",
    "HybridDistillForPreTraining",
    "HybridDistillForImageClassification",
    "HybridDistillForPreTrainingOutput",
]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
from .presets import TINY_ENCODER, VIT  # noqa: E402

TINY_VIT_TEACHER = dict(model_type="vit", image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=4,
                        num_attention_heads=4, intermediate_size=128)  # fmt: skip

METHOD = dict(
    name="hybriddistill",
    paper="Hybrid Distillation: Connecting Masked Autoencoders with Contrastive Learners (Shi et al., ICLR 2024), "
    "arXiv:2306.15876",
    config_class=HybridDistillConfig,
    model_classes={
        "base": HybridDistillModel, "pretraining": HybridDistillForPreTraining,
        "image-classification": HybridDistillForImageClassification,
    },
    processor="MAEImageProcessor",
    pretrain_augmentation=dict(crop_scale=(0.2, 1.0), crop_ratio=(3 / 4, 4 / 3), resample="bicubic", flip_probability=0.5),
    presets={
        # CPU-sized: MAE's tiny ViT (32 px, 4-px patches, 128-d x 4 blocks, 4 heads) taught by two tiny random ViTs
        # on the same 8x8 grid (64-d x 4 blocks, 4 heads; seeds 0 and 1); relations at blocks 1-3, tokens dropped
        # after blocks 2 and 3 (64 -> 45 -> 32); nothing is downloaded
        "hybriddistill-tiny": dict(
            TINY_ENCODER, token_drop_layers=[2, 3],
            mim_teacher_name_or_path=None, mim_teacher_config=dict(TINY_VIT_TEACHER), mim_teacher_seed=0,
            feature_teacher_name_or_path=None, feature_teacher_config=dict(TINY_VIT_TEACHER), feature_teacher_seed=1,
            feature_teacher_image_mean=None, feature_teacher_image_std=None, feature_teacher_hidden_size=64,
        ),
        # ViT-B/16 student, MAE ViT-B/16 MIM teacher, CLIP ViT-B/16 contrastive teacher
        "hybriddistill-vit-base-patch16": dict(patch_size=16, **VIT["base"]),
        # ViT-B/16 student, MAE ViT-B/16 MIM teacher, supervised DeiT-B/16 teacher (ImageNet-normalised)
        "hybriddistill-vit-base-patch16-deit": dict(
            patch_size=16, **VIT["base"], feature_teacher_name_or_path="facebook/deit-base-patch16-224",
            feature_teacher_image_mean=None, feature_teacher_image_std=None,
        ),
    },
)
