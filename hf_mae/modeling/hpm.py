"""HPM: Hard Patches Mining for Masked Image Modeling (Wang et al., CVPR 2023).

MAE, plus a model of its own difficulty, following the official code (Haochen-Wang409/HPM,
``models_mae_learn_loss.py`` and ``engine_pretrain.py``):
1. a **loss predictor**, a second decoder as deep as the pixel decoder, reads the same decoder input (encoded
   visible tokens + mask tokens, with positions) and outputs one scalar per patch: the mean of a
   ``Linear(decoder_hidden -> patch_h * patch_w * channels)``, as the official ``decoder_pred_losspred``;
2. it learns the *ordering* of the true per-patch reconstruction losses of the masked patches (detached): for every
   pair (i, j) of masked patches of an image with ``l_j > l_i`` it minimises ``-log sigmoid(s_j - s_i)`` (and
   ``-log(1 - sigmoid(s_j - s_i))`` when ``l_j < l_i``), summed and divided by the number of ordered pairs
   (``forward_learning_loss(relative=True)``); the total loss is ``L_rec + loss_predictor_weight * L_learn``;
3. **hard patches mining**: an EMA copy of the encoder and loss predictor (timm ``ModelEma``, decay 0.999 -> 0.9999
   over the first 100 epochs) predicts every patch's loss on the *unmasked* image; the
   ``int(num_masked * hard_ratio_max * progress)`` patches it ranks hardest are masked, the other masked patches
   are random (``generate_mask``: easy-to-hard, the hard share grows from 0 to ``hard_ratio_max = 0.5``).

Training progress. The official code uses ``(epoch + 1) / total_epochs``. Here ``progress`` is a float in [0, 1]:
pass ``progress=`` to ``forward``, or let the model count its training forwards in the buffer ``hpm_step``
(saved with the weights, so a resumed run continues the schedule) and use ``hpm_step / config.total_steps``.
Set ``total_steps`` to the length of your run (``hf-mae pretrain ... --config-overrides total_steps=N``).

The EMA teacher (``teachers.EMATeacher``) moves after every optimiser step, as the official update: the training
loop calls ``model.after_optimizer_step(step)`` (``hf-mae pretrain`` does, once per accumulated step), which also
sets ``hpm_step`` to the optimiser steps done. A model that never gets that call moves its teacher at the start of
every mining forward and counts training forwards instead (exact without gradient accumulation). With an explicit
``noise`` (or outside training) nothing is mined: the mask is exactly MAE's.

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Unpack

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple

from .base import check_int, check_rate
from .embeddings import to_2tuple
from .layers import build_blocks, run_blocks
from .losses import masked_mse
from .mae import MAEConfig, MAEDecoder, MAEForImageClassification, MAEModel, MAEPreTrainedModel, MAEForPreTraining
from .masking import check_mask_ratio, num_kept
from .outputs import MaskedPreTrainingOutput
from .targets import pixel_target
from .teachers import EMATeacher, EMATeacherMixin, MomentumSchedule


class HPMConfig(MAEConfig):
    r"""Configuration of an HPM model: MAE's fields (defaults: ViT-B/16, 512-d x 8 decoder, r = 0.75) plus

    norm_pix_loss: off, as the official scripts (``--norm_pix_loss`` is never set).
    loss_predictor_num_hidden_layers: depth of the loss-prediction decoder (None: ``decoder_num_hidden_layers``, the
        official choice); its width and heads are the decoder's.
    loss_predictor_weight: weight of the loss-prediction term (official: 1, ``loss += loss_learn``).
    relative_loss: True: the pairwise ranking loss (the paper's); False: MSE to the per-image standardised losses.
    hard_ratio_max: share of the masked patches mined as hard at the end of training (official: 0.5).
    total_steps: training forwards over which the hard share grows from 0 to ``hard_ratio_max`` (when ``forward``
        gets no ``progress``).
    ema_decay, ema_decay_end, ema_decay_warmup: the teacher's EMA decay rises linearly from ``ema_decay`` to
        ``ema_decay_end`` over the first ``ema_decay_warmup`` of training (official: 0.999 -> 0.9999 over 100 of
        800 epochs = 0.125), then stays.
    """

    model_type = "hpm"

    norm_pix_loss: bool = False
    loss_predictor_num_hidden_layers: int | None = None
    loss_predictor_weight: float = 1.0
    relative_loss: bool = True
    hard_ratio_max: float = 0.5
    total_steps: int = 250_000
    ema_decay: float = 0.999
    ema_decay_end: float = 0.9999
    ema_decay_warmup: float = 0.125

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        for name in ("hard_ratio_max", "ema_decay", "ema_decay_end", "ema_decay_warmup"):
            check_rate(name, getattr(self, name), closed=True)
        check_int("total_steps", self.total_steps)
        if self.loss_predictor_num_hidden_layers is not None:
            check_int("loss_predictor_num_hidden_layers", self.loss_predictor_num_hidden_layers)


# ---------------------------------------------------------------------------------------------------------------
# The method's three functions: how many hard patches, which ones, and the ranking loss


def num_hard_patches(num_patches: int, mask_ratio: float, progress: float, hard_ratio_max: float = 0.5) -> int:
    """How many masked patches are mined as hard: ``int(num_masked * hard_ratio_max * progress)``, the official
    ``int((L - len_keep) * keep_ratio)`` with ``keep_ratio = (epoch + 1) / total_epochs * 0.5``."""
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"progress must be in [0, 1], got {progress}")
    num_masked = num_patches - num_kept(num_patches, mask_ratio)
    return int(num_masked * hard_ratio_max * progress)


def hard_patch_noise(predicted_loss: torch.Tensor, num_hard: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """MAE-style noise (lower = kept) that masks the ``num_hard`` patches with the highest ``predicted_loss``.

    predicted_loss: (batch, N). Returns noise (batch, N): uniform in [0, 1) everywhere except 2.0 at the hard patches,
    so :func:`masking.mask_from_noise` masks them and picks the other masked patches (and the kept ones) at random
    among the rest, as the official ``generate_mask``.
    """
    batch, num_patches = predicted_loss.shape
    if generator is not None:
        noise = torch.rand(batch, num_patches, generator=generator, device=generator.device).to(predicted_loss.device)
    else:
        noise = torch.rand(batch, num_patches, device=predicted_loss.device)
    if num_hard > 0:
        hardest = predicted_loss.topk(num_hard, dim=1).indices
        noise = noise.scatter(1, hardest, 2.0)
    return noise


def ranking_loss(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """HPM's relative loss: binary cross-entropy on the ordering of every pair of masked patches of an image.

    predicted: (batch, N) predicted losses s; target: (batch, N) true per-patch losses l (detached here);
    mask: (batch, N), 1 = masked (only masked patches have a target). For each ordered pair (i, j) with
    ``l_j > l_i`` the term is ``-log sigmoid(s_j - s_i)``; with ``l_j < l_i`` it is ``-log(1 - sigmoid(s_j - s_i))``;
    ties are left out. Returns the sum over pairs divided by the number of such pairs (both orders counted, as
    the official ``forward_learning_loss``; it adds 1e-6 inside the logs, here ``logsigmoid`` is exact).
    """
    target = target.detach().float()
    predicted = predicted.float()
    both = mask.bool().unsqueeze(2) & mask.bool().unsqueeze(1)  # [n, i, j]: i and j are masked
    positive = (target.unsqueeze(1) > target.unsqueeze(2)) & both  # l_j > l_i
    negative = (target.unsqueeze(1) < target.unsqueeze(2)) & both
    difference = predicted.unsqueeze(1) - predicted.unsqueeze(2)  # s_j - s_i
    # -log(1 - sigmoid(x)) = -logsigmoid(-x)
    loss = -(positive * F.logsigmoid(difference) + negative * F.logsigmoid(-difference))
    return loss.sum() / (positive | negative).sum().clamp_min(1)


def standardised_loss_mse(predicted: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The official non-relative variant: MSE between the predicted losses and the true ones standardised per image
    (over the masked patches), averaged over the masked patches. Shapes as :func:`ranking_loss`."""
    target = target.detach().float()
    mask = mask.to(target.dtype)
    count = mask.sum(1, keepdim=True).clamp_min(2)
    mean = (target * mask).sum(1, keepdim=True) / count
    var = ((target - mean).pow(2) * mask).sum(1, keepdim=True) / (count - 1)  # unbiased, as torch.var
    standardised = (target - mean) / (var + 1e-6).sqrt()
    return ((predicted.float() - standardised).pow(2) * mask).sum() / mask.sum().clamp_min(1)


def per_patch_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(batch, N, dim) predictions and targets -> (batch, N) squared error averaged over ``dim`` (official 'matrix')."""
    return (logits.float() - target.float()).pow(2).mean(dim=-1)


# ---------------------------------------------------------------------------------------------------------------
# Modules


class HPMLossPredictor(nn.Module):
    """The loss-prediction decoder: blocks of the decoder's width over the decoder input, LayerNorm, a Linear to
    patch_h * patch_w * channels averaged to one score per patch (official ``decoder_*_losspred``)."""

    def __init__(self, config: HPMConfig):
        super().__init__()
        patch = to_2tuple(config.patch_size)
        depth = config.loss_predictor_num_hidden_layers or config.decoder_num_hidden_layers
        self.layers = build_blocks(config, depth, **config.decoder_block_kwargs())
        self.norm = nn.LayerNorm(config.decoder_hidden_size, eps=config.layer_norm_eps)
        self.pred = nn.Linear(config.decoder_hidden_size, patch[0] * patch[1] * config.num_channels)

    def forward(self, decoder_input: torch.Tensor) -> torch.Tensor:
        """decoder_input (batch, 1 + N, decoder_hidden) -> predicted loss (batch, N) (cls row dropped)."""
        hidden, _, _ = run_blocks(self.layers, decoder_input)
        return self.pred(self.norm(hidden))[:, 1:].mean(dim=-1)


class HPMTeacher(EMATeacher):
    """The EMA copy that mines hard patches: encoder, decoder input projection and loss predictor (the official EMA
    copies the whole model; the pixel decoder's copy is never used, so it is left out). Weights as buffers (see
    ``teachers.EMATeacher``); momentum linear from ``ema_decay`` to ``ema_decay_end`` over ``ema_decay_warmup``.
    """

    def __init__(self, config: HPMConfig):
        schedule = MomentumSchedule(
            config.ema_decay, config.ema_decay_end, config.total_steps, kind="linear", ramp=config.ema_decay_warmup
        )
        super().__init__(
            schedule,
            encoder=MAEModel(config),
            decoder_embed=nn.Linear(config.hidden_size, config.decoder_hidden_size),
            loss_predictor=HPMLossPredictor(config),
        )


@dataclass
class HPMForPreTrainingOutput(MaskedPreTrainingOutput):
    """MAE's pre-training output (``loss`` is the total here) plus
    reconstruction_loss: masked MSE; loss_prediction_loss: the predictor's ranking (or MSE) loss;
    predicted_loss: (batch, N) the online predictor's scores (compare them on masked patches: it is trained there);
    patch_loss: (batch, N) the true per-patch reconstruction loss (detached);
    hard_mask: (batch, N) 1 where a patch was masked because the teacher ranked it hard (None when not mining).
    """

    reconstruction_loss: torch.Tensor | None = None
    loss_prediction_loss: torch.Tensor | None = None
    predicted_loss: torch.Tensor | None = None
    patch_loss: torch.Tensor | None = None
    hard_mask: torch.Tensor | None = None


class HPMPreTrainedModel(MAEPreTrainedModel):
    config_class = HPMConfig

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, HPMForPreTraining):
            init.zeros_(module.hpm_step)


class HPMModel(MAEModel):
    """The HPM encoder (a MAE ViT); loads the ``mae.*`` weights of an HPM pre-training checkpoint."""

    config_class = HPMConfig


class HPMForImageClassification(MAEForImageClassification):
    """HPM encoder + classifier, pooled as MAE fine-tunes."""

    config_class = HPMConfig


class HPMForPreTraining(EMATeacherMixin, HPMPreTrainedModel, MAEForPreTraining):
    """MAE encoder + pixel decoder + loss predictor, with an EMA teacher that mines hard patches to mask.
    Call ``after_optimizer_step(step)`` after every optimiser step (``teachers.EMATeacherMixin``)."""

    teacher_step_buffer = "hpm_step"

    def __init__(self, config: HPMConfig):
        HPMPreTrainedModel.__init__(self, config)
        self.mae = MAEModel(config)
        self.decoder = MAEDecoder(config)
        self.loss_predictor = HPMLossPredictor(config)
        self.teacher = HPMTeacher(config)
        # optimiser steps the teacher followed (forwards, when no loop calls after_optimizer_step)
        self.register_buffer("hpm_step", torch.zeros((), dtype=torch.long))
        self.post_init()
        self.teacher.copy_from(self.teacher_student())  # the EMA starts as a copy (timm ModelEma)

    def teacher_student(self) -> dict:
        """The online modules the teacher tracks, by the teacher's part names."""
        return {"encoder": self.mae, "decoder_embed": self.decoder.decoder_embed, "loss_predictor": self.loss_predictor}

    def progress(self) -> float:
        """Training progress in [0, 1] from the step counter: ``hpm_step / total_steps``."""
        return min(1.0, self.hpm_step.item() / self.config.total_steps)

    def ema_decay(self, progress: float) -> float:
        """Official schedule: linear from ``ema_decay`` to ``ema_decay_end`` over ``ema_decay_warmup``, then flat."""
        return self.teacher.schedule.at_progress(progress)

    def update_teacher(self, decay: float) -> None:
        """teacher <- decay * teacher + (1 - decay) * online, parameters only (buffers are fixed sin-cos tables)."""
        self.teacher.move_towards(self.teacher_student(), decay)

    @torch.no_grad()
    def predict_difficulty(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """The teacher's predicted loss (batch, N) of every patch, from the unmasked image (official: the EMA model
        with an all-visible mask)."""
        teacher = self.teacher
        latent = teacher.encoder(pixel_values, mask_ratio=0.0, interpolate_pos_encoding=interpolate_pos_encoding).last_hidden_state
        grid = self.mae.embeddings.patch_embeddings.grid_for(pixel_values, allow_other_size=True)
        return teacher.loss_predictor(teacher.decoder_embed(latent) + self.decoder.positions(grid))

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        progress: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """Inputs as :meth:`MAEForPreTraining.forward`, plus ``progress`` in [0, 1] (default: the step counter).

        In training mode without ``noise`` the mask is mined: the teacher's ``num_hard_patches`` hardest patches
        plus random ones. With ``noise`` (or in eval mode) the mask is MAE's. Returns HPMForPreTrainingOutput:
        ``loss`` = reconstruction + ``loss_predictor_weight`` * loss prediction, logits (batch, N, patch dim), ...
        """
        if progress is not None and (isinstance(progress, bool) or not isinstance(progress, (int, float)) or not 0.0 <= progress <= 1.0):
            raise ValueError(f"progress must be a float in [0, 1], got {progress!r}")
        ratio = check_mask_ratio(self.config.mask_ratio if mask_ratio is None else mask_ratio)
        hard_mask = None
        if self.training:
            if progress is None:
                progress = self.progress()
            moves_in_forward = not self.teacher.updated_by_hook  # no loop calls after_optimizer_step
            if moves_in_forward:
                self.hpm_step += 1
            if noise is None and ratio > 0.0:
                if moves_in_forward:
                    self.update_teacher(self.ema_decay(progress))
                predicted = self.predict_difficulty(pixel_values, interpolate_pos_encoding)
                num_hard = num_hard_patches(predicted.shape[1], ratio, progress, self.config.hard_ratio_max)
                noise = hard_patch_noise(predicted, num_hard)
                hard_mask = (noise == 2.0).to(pixel_values.dtype)

        encoded = self.mae(
            pixel_values,
            noise=noise,
            mask_ratio=ratio,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
            **kwargs,
        )
        grid = self.mae.embeddings.patch_embeddings.grid_for(pixel_values, allow_other_size=True)
        decoder_input = self.decoder.embed(encoded.last_hidden_state, encoded.ids_restore, grid)
        logits = self.decoder.predict(decoder_input)
        # the predictor reads the same input as the pixel decoder (official: loss_pred = x.clone()); gradients of the
        # ranking loss reach the encoder through it, as in the official code
        predicted_loss = self.loss_predictor(decoder_input)

        target = pixel_target(pixel_values.float(), to_2tuple(self.config.patch_size), self.config.norm_pix_loss)
        reconstruction = masked_mse(logits, target, encoded.mask)
        patch_loss = per_patch_loss(logits, target).detach()
        learn = ranking_loss if self.config.relative_loss else standardised_loss_mse
        prediction_loss = learn(predicted_loss, patch_loss, encoded.mask)
        output = HPMForPreTrainingOutput(
            loss=reconstruction + self.config.loss_predictor_weight * prediction_loss,
            logits=logits,
            mask=encoded.mask,
            ids_restore=encoded.ids_restore,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
            reconstruction_loss=reconstruction,
            loss_prediction_loss=prediction_loss,
            predicted_loss=predicted_loss,
            patch_loss=patch_loss,
            hard_mask=hard_mask,
        )
        return output


__all__ = [
    "HPMConfig",
    "HPMPreTrainedModel",
    "HPMModel",
    "HPMForPreTraining",
    "HPMForImageClassification",
    "HPMForPreTrainingOutput",
    "HPMLossPredictor",
    "num_hard_patches",
    "hard_patch_noise",
    "ranking_loss",
]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
from .presets import TINY, VIT  # noqa: E402

METHOD = dict(
    name="hpm",
    paper="Hard Patches Mining for Masked Image Modeling (Wang et al., CVPR 2023), arXiv:2304.05919",
    config_class=HPMConfig,
    model_classes={
        "base": HPMModel, "pretraining": HPMForPreTraining, "image-classification": HPMForImageClassification,
    },
    processor="MAEImageProcessor",
    # Haochen-Wang409/HPM mask_transform.py MaskTransform: MAE's RandomResizedCrop(scale=(0.2, 1.0), BICUBIC) + flip
    pretrain_augmentation=dict(crop_scale=(0.2, 1.0), resample="bicubic"),
    # README / scripts: blr 1.5e-4 at an effective batch of 2048 (the method card, image.md section 11)
    pretrain_base_lr=1.5e-4, pretrain_batch=2048,
    presets={
        # mae-tiny's sizes; the curriculum spans 1000 forwards and the EMA is faster than the paper's
        # (0.99 -> 0.999), since tiny runs last a few hundred steps; set total_steps to your run's length
        "hpm-tiny": dict(TINY, total_steps=1000, ema_decay=0.99, ema_decay_end=0.999),
        "hpm-vit-base-patch16": dict(patch_size=16, **VIT["base"]),
    },
)
