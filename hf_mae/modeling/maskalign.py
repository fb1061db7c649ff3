"""MaskAlign: Stare at What You See: Masked Image Modeling without Reconstruction (Xue et al., CVPR 2023),
arXiv:2211.08887. Official code: OpenDriveLab/maskalign (``models_pretrain.py``, ``main_pretrain.py``).

Masked image modeling without a decoder and without mask tokens: the student aligns the features of what it *sees*
with a frozen teacher's features of the same tokens, the teacher seeing the whole image.
1. the frozen teacher (CLIP ViT-B/16 by default, DINO or any Hugging Face ViT-like ``AutoModel``) encodes the full
   image, re-normalised from the student's (ImageNet) normalisation to the teacher's (CLIP's mean / std);
2. **attention-guided masking**: the teacher's last-block CLS->patch attention, averaged over the heads, is the
   importance of each patch; every patch is drawn without replacement with probability proportional to it
   (``torch.multinomial``) and the first ``int(N * (1 - r))`` drawn stay visible (r = 0.7), so salient patches tend
   to be seen (``masking.score_guided_mask``);
3. the student (MAE's ViT encoder, :class:`MAEModel`) encodes the cls token and the visible patches only;
4. **Dynamic Alignment**: the student's block outputs (before the final norm) are mixed by a learnable matrix W
   (initialised to I + 0.01) and projected by one linear head per teacher block;
5. targets are the teacher's block outputs with a parameter-free layer norm ("whitened",
   ``targets.whitened``), at the cls token and the visible patches; the loss is ``2 * SmoothL1`` averaged over the
   last 5 teacher blocks (``loss_layers``).

The teacher is frozen and kept out of the checkpoint: it is rebuilt from ``teacher_name_or_path`` (downloaded on
first use), from ``teacher_config`` (randomly initialised from ``teacher_seed``: tests and the tiny preset), or
passed as an instance (``MaskAlignForPreTraining(config, teacher=...)``).

Departures from the official code (hf-mae's choices):
- W and the heads exist only for the loss's teacher blocks (the official code builds all 12 rows and heads but its
  ``top5`` weights give the others no gradient, so they never change): W is (loss layers, student blocks), its
  rows the matching rows of I + 0.01. For a student deeper or shallower than its teacher (ViT-L/16 with CLIP-B/16:
  24 vs 12 blocks), where the released linear fusion needs equal depths, teacher block t starts from student block
  ``round((t + 1) * S / T) - 1`` (+ 0.01 everywhere).
- A fixed ``noise=`` fixes the mask as in MAE (the smallest noise stays visible) instead of an attention draw, so
  that a call is reproducible; the draw otherwise uses the global RNG, as the official code.
- Images of another size than the teacher's are resized to it (bicubic), and the teacher's patch features and
  attention are resized bilinearly to the student's grid when the grids differ (the official code only handles
  CLIP-L/14 at 196 px, by resizing the image).
- The base model (:class:`MaskAlignModel`, no teacher) masks at random when asked to mask, and has no final
  LayerNorm (the official one is never trained: the loss reads the block outputs before it).

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Unpack

import torch
from torch import nn
from transformers import initialization as init
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple

from .base import check_choice, check_int
from .mae import MAEConfig, MAEForImageClassification, MAEModel, MAEPreTrainedModel
from .masking import check_mask_ratio, gather_tokens, num_kept, order_to_noise, score_guided_order
from .outputs import MaskedPreTrainingOutput
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

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MASKINGS = ("attention", "random")


def check_image_statistics(name: str, value):
    """None or 3 numbers (per-channel mean or std; std > 0)."""
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        raise ValueError(f"{name} must be None or 3 numbers (one per RGB channel), got {value!r}")
    if name.endswith("std") and min(value) <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return [float(v) for v in value]


class MaskAlignConfig(MAEConfig):
    r"""Configuration of a MaskAlign model. Defaults are the paper's ViT-B/16 recipe (README: r = 0.7, attention
    masking, ``target_norm=whiten``, ``loss_type=smoothl1``, ``loss_weights=top5``, ``fusion_type=linear``,
    drop path 0.1, CLIP ViT-B/16 teacher).

    The encoder's fields are :class:`MAEConfig`'s (its ``decoder_*`` and ``norm_pix_loss`` fields are unused:
    MaskAlign has no decoder). Besides:
    mask_ratio: share of patches hidden from the student (0.7).
    masking: "attention" (the paper: a draw guided by the teacher's CLS attention) or "random" (MAE's, the
        official ``mask_type=random`` ablation).
    loss_layers: how many of the teacher's last blocks are aligned (5, the official ``top5``, each weighted 1/5);
        ``min(loss_layers, teacher_num_hidden_layers)`` are used (hf-mae's choice for teachers shallower than 5).
    teacher_name_or_path: the frozen teacher, loaded with ``AutoModel.from_pretrained`` on first use (the official
        code loads CLIP / DINO by this Hub id too).
    teacher_config: instead, a config dict (with ``model_type``) of a randomly initialised teacher (tests;
        hf-mae's).
    teacher_seed: seed of that random initialisation, so a reloaded model sees the same teacher (hf-mae's).
    teacher_image_mean, teacher_image_std: the teacher's input normalisation; pixels normalised with ImageNet's
        statistics (the processor's) are re-normalised to them (CLIP's, as the official ``forward_clip``); None
        keeps the student's normalisation (DINO, as the official ``forward_dino``; ViT; the tiny preset's teacher).
    teacher_hidden_size, teacher_num_hidden_layers: width and depth of the teacher's image tower (CLIP ViT-B/16:
        768, 12; the official code infers them from the teacher's name); set when the model is built from a
        teacher instance, ``teacher_config`` or a local folder; for a Hub id set them to match (checked against the
        teacher at the first forward) (hf-mae's).
    Also hf-mae's: W's initial value for unequal depths (:func:`dynamic_alignment_init`) and W / heads for the
    aligned blocks only (see the module docstring).
    """

    model_type = "maskalign"

    drop_path_rate: float = 0.1
    mask_ratio: float = 0.7
    masking: str = "attention"
    loss_layers: int = 5
    teacher_name_or_path: str | None = "openai/clip-vit-base-patch16"
    teacher_config: dict | None = None
    teacher_seed: int = 0
    teacher_image_mean: list[float] | tuple[float, ...] | None = CLIP_MEAN
    teacher_image_std: list[float] | tuple[float, ...] | None = CLIP_STD
    teacher_hidden_size: int = 768
    teacher_num_hidden_layers: int = 12

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_choice("masking", self.masking, MASKINGS)
        for name in ("loss_layers", "teacher_hidden_size", "teacher_num_hidden_layers"):
            check_int(name, getattr(self, name))
        check_teacher_fields(self, prefix="teacher")
        self.teacher_image_mean = check_image_statistics("teacher_image_mean", self.teacher_image_mean)
        self.teacher_image_std = check_image_statistics("teacher_image_std", self.teacher_image_std)
        if (self.teacher_image_mean is None) != (self.teacher_image_std is None):
            raise ValueError("teacher_image_mean and teacher_image_std must both be set or both be None")

    @property
    def aligned_teacher_layers(self) -> list[int]:
        """The teacher blocks (0-based) the loss aligns: the last ``min(loss_layers, teacher depth)``."""
        depth = self.teacher_num_hidden_layers
        return list(range(depth - min(self.loss_layers, depth), depth))


def dynamic_alignment_init(student_depth: int, teacher_depth: int, teacher_layers) -> torch.Tensor:
    """W's initial value (len(teacher_layers), student_depth): 0.01 everywhere plus 1 where teacher block t meets
    student block ``round((t + 1) * S / T) - 1``, i.e. the rows ``teacher_layers`` of I + 0.01 for equal depths."""
    weight = torch.full((len(teacher_layers), student_depth), 0.01)
    for row, layer in enumerate(teacher_layers):
        column = min(max(round((layer + 1) * student_depth / teacher_depth) - 1, 0), student_depth - 1)
        weight[row, column] += 1.0
    return weight


class MaskAlignDynamicAlignment(nn.Module):
    """Dynamic Alignment: the student's S block outputs mixed by W (K, S), then one Linear head per aligned teacher
    block (student width -> teacher width)."""

    def __init__(self, config: MaskAlignConfig):
        super().__init__()
        self.student_depth = config.num_hidden_layers
        self.teacher_depth = config.teacher_num_hidden_layers
        self.teacher_layers = config.aligned_teacher_layers
        self.weight = nn.Parameter(dynamic_alignment_init(self.student_depth, self.teacher_depth, self.teacher_layers))
        self.heads = nn.ModuleList(
            nn.Linear(config.hidden_size, config.teacher_hidden_size) for _ in self.teacher_layers
        )

    def forward(self, hidden_states) -> torch.Tensor:
        """hidden_states: S tensors (batch, tokens, hidden) -> predictions (batch, K, tokens, teacher_hidden)."""
        stacked = torch.stack(tuple(hidden_states))  # (S, batch, tokens, hidden)
        mixed = torch.einsum("ks,sbnd->kbnd", self.weight.to(stacked.dtype), stacked)
        return torch.stack([head(part) for head, part in zip(self.heads, mixed)], dim=1)


@dataclass
class MaskAlignForPreTrainingOutput(MaskedPreTrainingOutput):
    """
    loss: ``2 * SmoothL1`` between predictions and whitened teacher features, averaged over the aligned blocks.
    logits: (batch, K, 1 + kept, teacher_hidden) the aligned predictions at the cls token and the visible patches
        (in the order the student sees them), one row per aligned teacher block.
    mask, ids_restore, hidden_states, attentions: the student encoder's (:class:`MaskedPreTrainingOutput`).
    importance: (batch, num_patches) the teacher's CLS attention that guided the mask (None when ``noise`` or
        random masking fixed it).
    """

    importance: torch.Tensor | None = None


class MaskAlignPreTrainedModel(MAEPreTrainedModel):
    config_class = MaskAlignConfig
    _keys_to_ignore_on_load_unexpected = [r"^teacher\."]  # never saved; ignore it if someone saved it by hand

    @torch.no_grad()
    def _init_weights(self, module):
        """MAE's initialisation (xavier-uniform linears, the heads included, as the official code) and W = I + 0.01."""
        if isinstance(module, MaskAlignDynamicAlignment):
            init.copy_(module.weight, dynamic_alignment_init(module.student_depth, module.teacher_depth,
                                                             module.teacher_layers))  # fmt: skip
        else:
            super()._init_weights(module)


class MaskAlignModel(MAEModel):
    """The MaskAlign ViT encoder (:class:`MAEModel`): a plain ViT by default; random masking when asked to mask
    (the teacher that guides the pre-training masks lives in :class:`MaskAlignForPreTraining`).

    Without MAE's final LayerNorm by default: the loss reads the block outputs before it, so pre-training never
    trains it (the official checkpoints hold it at weight 1, bias 0) and ``last_hidden_state`` is the last block's
    output. MAE's mean-pooling classifier drops that norm anyway (it normalises after pooling, ``fc_norm``)."""

    config_class = MaskAlignConfig

    def __init__(self, config: MaskAlignConfig, add_final_norm: bool = False):
        super().__init__(config, add_final_norm=add_final_norm)


class MaskAlignForImageClassification(MAEForImageClassification):
    """The MaskAlign encoder (no masking) + linear classifier, pooled as MAE fine-tunes."""

    config_class = MaskAlignConfig


class MaskAlignForPreTraining(FrozenTeacherMixin, MaskAlignPreTrainedModel):
    """The student encoder on the visible patches, Dynamic Alignment, and the feature-alignment loss against a
    frozen teacher that sees the whole image and chooses (by its attention) what the student sees."""

    def __init__(self, config: MaskAlignConfig, teacher: nn.Module | None = None):
        # the teacher's sizes fix the heads: from the instance, else from the config dict or folder naming it
        vision = teacher_vision_config(teacher) if teacher is not None else described_teacher_config(config, "teacher")
        if vision is not None:
            config.teacher_hidden_size = vision.hidden_size
            config.teacher_num_hidden_layers = vision.num_hidden_layers
        super().__init__(config)
        self.mae = MAEModel(config, add_final_norm=False)  # never trained (see MaskAlignModel)
        self.alignment = MaskAlignDynamicAlignment(config)
        # the frozen teacher (teachers.FrozenTeacherMixin): out of the state dict, the optimiser and DDP; built on
        # first use
        self.set_frozen_teacher("teacher", teacher)
        self.post_init()

    def get_teacher(self, device) -> nn.Module:
        """The frozen teacher on ``device``: the instance given, or one built from the config (first call)."""
        return self.frozen_teacher("teacher", device, lambda: build_frozen_teacher(self.config, prefix="teacher"))

    def teacher_features(self, pixel_values: torch.Tensor, output_attentions: bool):
        """The teacher on the whole image (no gradients); ValueError if its size disagrees with the config."""
        config = self.config
        features = teacher_forward(
            self.get_teacher(pixel_values.device), pixel_values, output_attentions=output_attentions,
            image_mean=config.teacher_image_mean, image_std=config.teacher_image_std,
        )  # fmt: skip
        depth, width = len(features.hidden_states), features.hidden_states[-1].shape[-1]
        if (depth, width) != (config.teacher_num_hidden_layers, config.teacher_hidden_size):
            raise ValueError(
                f"the teacher has {depth} blocks of width {width} but the config says teacher_num_hidden_layers="
                f"{config.teacher_num_hidden_layers}, teacher_hidden_size={config.teacher_hidden_size}; set them to match"
            )
        return features

    def alignment_targets(self, features, ids_keep: torch.Tensor, grid) -> torch.Tensor:
        """Whitened teacher features of the aligned blocks at the cls token and the kept patches ``ids_keep``
        (batch, kept), in the student's order: (batch, K, 1 + kept, teacher_hidden), float32."""
        targets = []
        for layer in self.alignment.teacher_layers:
            tokens = features.hidden_states[layer]
            patches = whitened(features.patch_tokens(tokens, grid=grid))
            cls = whitened(tokens[:, :1])
            targets.append(torch.cat([cls, gather_tokens(patches, ids_keep.to(patches.device))], dim=1))
        return torch.stack(targets, dim=1)

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
        noise: (batch, num_patches), optional: fixes the mask as in MAE (the smallest noise stays visible) instead
            of the teacher-guided draw.
        mask_ratio: overrides ``config.mask_ratio``.
        Returns MaskAlignForPreTrainingOutput.
        """
        config = self.config
        ratio = check_mask_ratio(config.mask_ratio if mask_ratio is None else mask_ratio)
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        grid = self.mae.embeddings.patch_embeddings.grid_for(pixel_values, allow_other_size=interpolate_pos_encoding)
        guided = noise is None and config.masking == "attention" and ratio > 0.0
        features = self.teacher_features(pixel_values, output_attentions=guided)
        importance = None
        if guided:  # the official draw: multinomial without replacement on the last block's CLS attention
            importance = resize_token_grid(features.cls_attention()[..., None], features.grid, grid)[..., 0]  # on our grid
            noise = order_to_noise(score_guided_order(importance)).to(pixel_values.device)

        return_hidden = kwargs.pop("output_hidden_states", None) or self.config.output_hidden_states
        encoded = self.mae(
            pixel_values, noise=noise, mask_ratio=ratio, interpolate_pos_encoding=interpolate_pos_encoding,
            output_hidden_states=True, return_dict=True, **kwargs,
        )  # fmt: skip
        logits = self.alignment(encoded.hidden_states[1:])  # the block outputs, before the final norm
        ids_keep = encoded.ids_restore.argsort(dim=1)[:, : num_kept(grid[0] * grid[1], ratio)]
        targets = self.alignment_targets(features, ids_keep, grid)
        loss = 2 * nn.functional.smooth_l1_loss(logits.float(), targets)  # the mean over the K blocks of each's
        return MaskAlignForPreTrainingOutput(
            loss=loss,
            logits=logits,
            mask=encoded.mask,
            ids_restore=encoded.ids_restore,
            hidden_states=encoded.hidden_states if return_hidden else None,
            attentions=encoded.attentions,
            importance=importance,
        )


__all__ = [
    "MaskAlignConfig",
    "MaskAlignPreTrainedModel",
    "MaskAlignModel",
    "MaskAlignForPreTraining",
    "MaskAlignForImageClassification",
    "MaskAlignForPreTrainingOutput",
    "MaskAlignDynamicAlignment",
    "dynamic_alignment_init",
]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
from .presets import TINY_ENCODER, VIT  # noqa: E402

METHOD = dict(
    name="maskalign",
    paper="Stare at What You See: Masked Image Modeling without Reconstruction (Xue et al., CVPR 2023), arXiv:2211.08887",
    config_class=MaskAlignConfig,
    model_classes={
        "base": MaskAlignModel, "pretraining": MaskAlignForPreTraining,
        "image-classification": MaskAlignForImageClassification,
    },
    processor="MAEImageProcessor",
    # main_pretrain.py: RandomResizedCrop(scale=(0.2, 1.0), bicubic), RandomHorizontalFlip (MAE's)
    pretrain_augmentation=dict(crop_scale=(0.2, 1.0), crop_ratio=(3 / 4, 4 / 3), resample="bicubic", flip_probability=0.5),
    # README: blr 1.5e-4 per 256 images at batch 1024 (128 x 8 GPUs); main_pretrain.py: AdamW betas (0.9, 0.95)
    pretrain_base_lr=1.5e-4, pretrain_batch=1024, pretrain_betas=(0.9, 0.95),
    presets={
        # CPU-sized: MAE's tiny ViT (32 px, 4-px patches, 128-d x 4 blocks) taught by a tiny random ViT on the same
        # 8x8 grid (64-d x 4 blocks, the student's ImageNet normalisation): nothing is downloaded
        "maskalign-tiny": dict(
            TINY_ENCODER, drop_path_rate=0.0, teacher_name_or_path=None, teacher_image_mean=None,
            teacher_image_std=None, teacher_hidden_size=64, teacher_num_hidden_layers=4,
            teacher_config=dict(model_type="vit", image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=4,
                                num_attention_heads=4, intermediate_size=128),
        ),
        # the paper's defaults: ViT-B/16 student, CLIP ViT-B/16 teacher (FT 85.4 at 200 epochs)
        "maskalign-vit-base-patch16": dict(patch_size=16, **VIT["base"]),
        # ViT-B/16 with DINO ViT-B/16 as the teacher (README: the third supported teacher), ImageNet-normalised
        "maskalign-vit-base-patch16-dino": dict(
            patch_size=16, **VIT["base"], teacher_name_or_path="facebook/dino-vitb16", teacher_image_mean=None,
            teacher_image_std=None,
        ),
        # ViT-L/16 (drop path 0.2) with the CLIP ViT-B/16 teacher (FT 86.5)
        "maskalign-vit-large-patch16": dict(patch_size=16, drop_path_rate=0.2, **VIT["large"]),
    },
)
