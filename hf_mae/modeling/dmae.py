"""DMAE: Masked Autoencoders Enable Efficient Knowledge Distillers (Bai et al., CVPR 2023), arXiv:2208.12256.

MAE pre-training of a student with feature distillation from a frozen, MAE-pretrained teacher, following the
official code (UCSC-VLAA/DMAE, ``models_mae_distill.py``, ``engine_distill.py``, ``pretrain.sh``):
1. one mask for both: the student and the teacher keep the same visible patches (the official teacher draws the
   mask and hands its ``ids_keep`` to the student; here one ``noise`` drives both);
2. the student is MAE: its encoder sees the visible patches, its decoder predicts every patch's (per-patch
   normalised) pixels, and the pixel loss is MAE's MSE on the masked patches;
3. the teacher encodes the same visible patches, **only up to the aligned block** (the paper's efficiency point:
   the blocks after it never run);
4. for each aligned pair (student block ``s``, teacher block ``t``), the student's block output (cls token and
   visible tokens, before the final norm) goes through a projection head (a Linear, ``fc-1layer``) to the
   teacher's width, and the distillation loss is ``mean |normalize(teacher) - normalize(head(student))|``
   (L2-normalised tokens, L1 over every element);
5. ``loss = pixel_loss + distillation_weight * sum of the distillation losses`` (weight 1 as the official code).

Departures from the official code:
- the teacher stops at the last aligned block; the official code runs the whole teacher and its decoder (whose
  prediction the default target never uses). The losses are the same; the teacher's cost falls (see
  ``benchmarks/dmae_teacher_cost.py``).
- any ViT-like ``AutoModel`` can teach. An MAE encoder (hf-mae's, or transformers' ``ViTMAEModel``) on the
  student's patch grid shares the mask through the noise; a teacher that cannot take a mask (a plain ``ViTModel``,
  DINO, CLIP) sees the whole image, and its tokens at the student's visible patches are gathered (resized to the
  student's grid first if the grids differ). That teacher attends to the masked patches too: a documented
  deviation from the paper, where the teacher sees what the student sees.
- block numbers are 1-based (``student_layers=[9]`` is the official 0-based ``aligned_blks_indices 8``).

The teacher is frozen and kept out of the checkpoint (``teachers.FrozenTeacherMixin``): it is rebuilt from
``teacher_name_or_path`` (a Hub id or a folder, loaded on first use), from ``teacher_config`` (a random model from
``teacher_seed``: tests), or passed as an instance (``DMAEForPreTraining(config, teacher=...)``).

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Unpack

import torch
from torch import nn
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple

from .base import check_choice, check_int
from .embeddings import to_2tuple
from .layers import PROJECTION_MODES, ProjectionHead
from .losses import FEATURE_LOSSES, feature_distillation_loss, masked_mse
from .mae import MAEConfig, MAEDecoder, MAEForImageClassification, MAEForPreTraining, MAEModel, MAEPreTrainedModel
from .masking import check_mask_ratio
from .outputs import MaskedPreTrainingOutput
from .targets import pixel_target
from .teachers import (
    FrozenTeacherMixin,
    build_frozen_teacher,
    check_teacher_fields,
    teacher_visible_tokens,
    teacher_width,
)


def check_block_numbers(name: str, value, depth: int | None = None) -> list[int]:
    """A non-empty list of 1-based block numbers (ints >= 1, at most ``depth`` when given)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{name} must be a non-empty list of block numbers (1-based), got {value!r}")
    for k in value:
        check_int(name, k)
        if depth is not None and k > depth:
            raise ValueError(f"{name} must be block numbers in 1..{depth}, got {list(value)}")
    return list(value)


class DMAEConfig(MAEConfig):
    r"""Configuration of a DMAE model: MAE's fields (defaults: the paper's ViT-B/16 student with MAE's 512-d x 8
    decoder, r = 0.75) plus

    norm_pix_loss: on, as ``pretrain.sh`` (``--norm_pix_loss``).
    teacher_name_or_path: the frozen teacher, loaded with ``AutoModel.from_pretrained`` on first use (default
        ``facebook/vit-mae-large``: the MAE ViT-L/16 of the paper, in transformers' ViTMAE format, which shares the
        mask through ``noise`` when its ``mask_ratio`` is the student's; the official checkpoint is
        ``mae_visualize_vit_large.pth``). An hf-mae MAE folder (``MAEForPreTraining.save_pretrained``) works too.
    teacher_config: instead, a config dict (with ``model_type``) of a randomly initialised teacher (tests).
    teacher_seed: seed of that random initialisation, so a reloaded model sees the same teacher.
    teacher_hidden_size: the teacher's width, the projection heads' output (1024 for ViT-L). None: read from the
        teacher's config when the model is built; set from the instance when one is passed.
    student_layers, teacher_layers: the aligned blocks, 1-based, pairwise ([9] and [18]: the official 0-based
        ``aligned_blks_indices 8`` / ``teacher_aligned_blks_indices 17``). The student's block output is taken
        before the final norm, with its cls token, as the official code.
    projection_mode: the heads: "linear" (official default ``fc-1layer``), "mlp" (``mlp-1layer``) or "mlp2".
    distillation_loss: "l1_normalized" (official: L1 of L2-normalised tokens); "mse_layernorm" and "cosine" are
        hf-mae's alternatives (``losses.feature_distillation_loss``).
    distillation_weight: weight of the summed distillation losses (official: 1).
    share_teacher_mask: give an MAE teacher the student's noise, so it encodes only the visible patches (the
        paper). False, or a teacher that cannot mask: the teacher sees the whole image and its tokens at the visible
        patches are gathered (hf-mae's deviation for such teachers).
    """

    model_type = "dmae"

    teacher_name_or_path: str | None = "facebook/vit-mae-large"
    teacher_config: dict | None = None
    teacher_seed: int = 0
    teacher_hidden_size: int | None = 1024
    student_layers: list[int] | tuple[int, ...] = (9,)
    teacher_layers: list[int] | tuple[int, ...] = (18,)
    projection_mode: str = "linear"
    distillation_loss: str = "l1_normalized"
    distillation_weight: float = 1.0
    share_teacher_mask: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_teacher_fields(self, "teacher")
        self.student_layers = check_block_numbers("student_layers", self.student_layers, self.num_hidden_layers)
        self.teacher_layers = check_block_numbers("teacher_layers", self.teacher_layers)
        if len(self.student_layers) != len(self.teacher_layers):
            raise ValueError(
                f"student_layers {self.student_layers} and teacher_layers {self.teacher_layers} must pair up "
                "(one teacher block per student block)"
            )
        if self.teacher_hidden_size is not None:
            check_int("teacher_hidden_size", self.teacher_hidden_size)
        check_choice("projection_mode", self.projection_mode, PROJECTION_MODES)
        check_choice("distillation_loss", self.distillation_loss, FEATURE_LOSSES)
        if isinstance(self.distillation_weight, bool) or not isinstance(self.distillation_weight, (int, float)) \
                or self.distillation_weight < 0:
            raise ValueError(f"distillation_weight must be a number >= 0, got {self.distillation_weight!r}")


@dataclass
class DMAEForPreTrainingOutput(MaskedPreTrainingOutput):
    """MAE's pre-training output (``loss`` is the total here) plus
    reconstruction_loss: MAE's masked MSE; distillation_loss: the sum over the aligned pairs;
    distillation_losses: (pairs,) each pair's loss, in the order of ``student_layers``;
    teacher_shared_mask: whether the teacher encoded only the student's visible patches (False: it saw the whole
    image and its visible tokens were gathered)."""

    reconstruction_loss: torch.Tensor | None = None
    distillation_loss: torch.Tensor | None = None
    distillation_losses: torch.Tensor | None = None
    teacher_shared_mask: bool | None = None


class DMAEPreTrainedModel(MAEPreTrainedModel):
    config_class = DMAEConfig
    _keys_to_ignore_on_load_unexpected = [r"^teacher\."]  # never saved; ignore it if someone saved it by hand


class DMAEModel(MAEModel):
    """The DMAE student encoder (a MAE ViT); loads the ``mae.*`` weights of a DMAE pre-training checkpoint."""

    config_class = DMAEConfig


class DMAEForImageClassification(MAEForImageClassification):
    """The DMAE student encoder (no masking) + MAE's fine-tuning classifier."""

    config_class = DMAEConfig


class DMAEForPreTraining(FrozenTeacherMixin, DMAEPreTrainedModel, MAEForPreTraining):
    """MAE student (encoder + pixel decoder) + one projection head per aligned block, distilled from a frozen
    teacher that encodes the student's visible patches up to its last aligned block."""

    def __init__(self, config: DMAEConfig, teacher: nn.Module | None = None):
        if teacher is not None:
            config.teacher_hidden_size = teacher_width(config, "teacher", teacher)
        elif config.teacher_hidden_size is None:
            config.teacher_hidden_size = teacher_width(config, "teacher")
        DMAEPreTrainedModel.__init__(self, config)
        self.mae = MAEModel(config)
        self.decoder = MAEDecoder(config)
        self.projection_heads = nn.ModuleList(
            ProjectionHead(config.hidden_size, config.teacher_hidden_size, config.projection_mode, config.hidden_act)
            for _ in config.student_layers
        )
        self.post_init()
        # the frozen teacher (teachers.FrozenTeacherMixin): out of the state dict, the optimiser and DDP; built on
        # first use unless given
        self.set_frozen_teacher("teacher", teacher)

    def get_teacher(self, device) -> nn.Module:
        """The frozen teacher on ``device`` (built from the config the first time)."""
        return self.frozen_teacher("teacher", device, self.build_teacher)

    def build_teacher(self) -> nn.Module:
        teacher = build_frozen_teacher(self.config, "teacher")
        width = teacher_width(self.config, "teacher", teacher)
        if width != self.config.teacher_hidden_size:
            raise ValueError(f"the teacher's tokens are {width}-d but config.teacher_hidden_size is "
                             f"{self.config.teacher_hidden_size}; set it to match")
        return teacher

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """Inputs as :meth:`MAEForPreTraining.forward`. Without ``noise`` one is drawn from the mask generator, and
        the student and the teacher both mask with it. Returns DMAEForPreTrainingOutput: ``loss`` =
        reconstruction + ``distillation_weight`` * distillation, ``logits`` (batch, N, patch dim), ``mask``, ..."""
        config = self.config
        ratio = check_mask_ratio(config.mask_ratio if mask_ratio is None else mask_ratio)
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        grid = self.mae.embeddings.patch_embeddings.grid_for(pixel_values, allow_other_size=interpolate_pos_encoding)
        if noise is None:  # one draw for both: the mask the teacher shares
            noise = self.mae.mask_generator.noise(pixel_values.shape[0], grid[0] * grid[1], grid, pixel_values.device)
        wants_hidden = kwargs.pop("output_hidden_states", None)
        if wants_hidden is None:
            wants_hidden = config.output_hidden_states
        encoded = self.mae(
            pixel_values,
            noise=noise,
            mask_ratio=ratio,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_hidden_states=True,
            return_dict=True,
            **kwargs,
        )
        logits = self.decoder(encoded.last_hidden_state, encoded.ids_restore, grid)
        target = pixel_target(pixel_values.float(), to_2tuple(config.patch_size), config.norm_pix_loss)
        reconstruction = masked_mse(logits, target, encoded.mask)

        ids_keep = encoded.ids_restore.argsort(dim=1)[:, : encoded.last_hidden_state.shape[1] - 1]
        teacher_tokens, shared = teacher_visible_tokens(
            self.get_teacher(pixel_values.device),
            pixel_values,
            config.teacher_layers,
            ids_keep,
            grid,
            noise=noise if config.share_teacher_mask else None,
            mask_ratio=ratio,
        )
        # hidden_states[k] is block k's output (index 0: the blocks' input), before the final norm, cls first
        losses = torch.stack([
            feature_distillation_loss(head(encoded.hidden_states[s]), t.to(encoded.last_hidden_state.dtype),
                                      config.distillation_loss)
            for head, s, t in zip(self.projection_heads, config.student_layers, teacher_tokens)
        ])
        distillation = losses.sum()
        return DMAEForPreTrainingOutput(
            loss=reconstruction + config.distillation_weight * distillation,
            logits=logits,
            mask=encoded.mask,
            ids_restore=encoded.ids_restore,
            hidden_states=encoded.hidden_states if wants_hidden else None,
            attentions=encoded.attentions,
            reconstruction_loss=reconstruction,
            distillation_loss=distillation,
            distillation_losses=losses.detach(),
            teacher_shared_mask=shared,
        )


__all__ = [
    "DMAEConfig",
    "DMAEPreTrainedModel",
    "DMAEModel",
    "DMAEForPreTraining",
    "DMAEForImageClassification",
    "DMAEForPreTrainingOutput",
]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
from .presets import TINY, VIT  # noqa: E402

METHOD = dict(
    name="dmae",
    paper="Masked Autoencoders Enable Efficient Knowledge Distillers (Bai et al., CVPR 2023), arXiv:2208.12256",
    config_class=DMAEConfig,
    model_classes={
        "base": DMAEModel, "pretraining": DMAEForPreTraining, "image-classification": DMAEForImageClassification,
    },
    processor="MAEImageProcessor",
    # main_distill.py: RandomResizedCrop(scale=(0.2, 1.0), bicubic) + RandomHorizontalFlip, as MAE
    pretrain_augmentation=dict(crop_scale=(0.2, 1.0), resample="bicubic"),
    # pretrain.sh: blr 1.5e-4 at 128 x 8 GPUs x accum 4 = 4096, wd 0.05, AdamW (0.9, 0.95), 100 epochs
    pretrain_base_lr=1.5e-4, pretrain_batch=4096,
    presets={
        # mae-tiny's student distilled from a tiny random MAE encoder (transformers' ViTMAE, so that the remote-code
        # copy builds it too; 192-d x 6, the same 4-px patches at 32 px, so it shares the mask): block 3 of 4 against
        # teacher block 4 of 6, the paper's 3/4-depth alignment
        "dmae-tiny": dict(
            TINY, teacher_name_or_path=None, teacher_hidden_size=192, student_layers=[3], teacher_layers=[4],
            teacher_config=dict(model_type="vit_mae", image_size=32, patch_size=4, hidden_size=192, num_hidden_layers=6,
                                num_attention_heads=3, intermediate_size=768, mask_ratio=0.75, layer_norm_eps=1e-6),
        ),
        # pretrain.sh: ViT-B/16 student (512-d x 8 decoder) from the MAE ViT-L/16, blocks 9 / 18 (1-based)
        "dmae-vit-base-patch16": dict(patch_size=16, **VIT["base"]),
    },
)
