"""LUT: Learning with Unmasked Tokens drives stronger vision learners (Kim et al., NAVER, ECCV 2024).

MAE, plus a "broader context" objective that teaches the masked encoder what the whole image looks like, following
the official code (naver-ai/lut: ``models/models_lut.py``, ``engines/engine_lut.py``, ``util/model_ema_sched.py``,
``docs/PRETRAIN.md``):
1. two augmented views of each image and ONE noise draw; with ``k = int(L * (1 - mask_ratio))`` view 1 keeps the
   patches ``ids_shuffle[:k]`` and view 2 keeps ``ids_shuffle[k:2k]``: the visible sets are disjoint;
2. the encoder runs on both masked views; the decoder reconstructs view 1 only (MAE's norm-pix masked MSE);
3. student embedding ``q_v = predictor(projector(mean of the patch tokens of masked view v))``, the projector and
   predictor being 2-layer MLPs without biases, BatchNorm + ReLU after the hidden layer (768 -> 4096 -> 768);
4. an EMA teacher (encoder + projector) embeds the *unmasked* views: ``t_u = projector(mean of patch tokens of u)``;
5. ``L_bc = mean over v != u of mean_batch (2 - 2 cos(q_v, t_u))`` (BYOL's loss: masked view 1 predicts unmasked
   view 2 and vice versa), and ``L = mae_loss_weight * L_mae + bc_loss_weight * L_bc``.

The teacher follows the official ``ModelEma_sched``: a copy of the student at start, then
``teacher <- d * teacher + (1 - d) * student`` with ``d`` rising from ``ema_decay`` to ``ema_decay_end`` (1) on a
half cosine over ``total_steps`` (``teachers.EMATeacher``). It moves after every optimiser step, as the official
update: the training loop calls ``model.after_optimizer_step(step)`` (``hf-mae pretrain`` does, once per accumulated
step); a model that never gets that call moves it at the start of every training forward instead (exact without
gradient accumulation). The steps are counted in the saved buffer ``lut_step`` so that a resumed run continues the
schedule. Its weights are buffers, like HPM's teacher: saved with the model, invisible to the optimiser and to DDP.

Deviation from the official code: the official teacher (always in eval mode) normalises its projector's BatchNorm
with the EMA of the student's *running* statistics; here the teacher's BatchNorm uses the batch statistics of its
own features (as BYOL's target network) and the EMA covers parameters only. Then the teacher is a function of its
EMA weights alone: two forwards without an optimiser step see the same teacher (the official one would drift with
the student's running statistics), which keeps training reproducible and gradient checkpointing exact. A
consequence: ``LUTForPreTraining`` needs at least 2 images per batch, in eval mode too.

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
from .losses import masked_mse
from .mae import MAEConfig, MAEDecoder, MAEForImageClassification, MAEForPreTraining, MAEModel, MAEPreTrainedModel
from .masking import check_mask_ratio, num_kept
from .outputs import MaskedPreTrainingOutput
from .targets import pixel_target
from .teachers import EMATeacher, EMATeacherMixin, MomentumSchedule


class LUTConfig(MAEConfig):
    r"""Configuration of a LUT model: MAE's fields (defaults: ViT-B/16, 512-d x 8 decoder, r = 0.75, norm-pix loss
    on, as the official ``--norm_pix_loss``) plus

    projector_hidden_size: hidden width of the projector and the predictor (official ``head_mlp_dim`` = 4096).
    projector_num_layers, predictor_num_layers: Linear layers of each MLP (official ``depth_head`` = ``depth_pred``
        = 2; 0 makes it the identity). Both map ``hidden_size`` to ``hidden_size``.
    mae_loss_weight: weight of the reconstruction loss (official ``w_mae`` = 1).
    bc_loss_weight: weight of the broader-context loss (official recommended ``w_bc`` = 0.25).
    ema_decay, ema_decay_end: the teacher's EMA decay follows a half cosine from ``ema_decay`` (official recommended
        0.996) to ``ema_decay_end`` (official 1) over ``total_steps`` training forwards, then stays.
    total_steps: length of the decay schedule in training forwards (official: every iteration of the run, 1600
        epochs x 1251 = 2,001,600); set it to your run's length.
    """

    model_type = "lut"

    projector_hidden_size: int = 4096
    projector_num_layers: int = 2
    predictor_num_layers: int = 2
    mae_loss_weight: float = 1.0
    bc_loss_weight: float = 0.25
    ema_decay: float = 0.996
    ema_decay_end: float = 1.0
    total_steps: int = 2_001_600

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        for name in ("projector_hidden_size", "projector_num_layers", "predictor_num_layers", "total_steps"):
            check_int(name, getattr(self, name), minimum=0 if name.endswith("num_layers") else 1)
        for name in ("ema_decay", "ema_decay_end"):
            check_rate(name, getattr(self, name), closed=True)
        for name in ("mae_loss_weight", "bc_loss_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        rows, cols = self.grid_size
        check_two_views(rows * cols, self.mask_ratio)


# ---------------------------------------------------------------------------------------------------------------
# The method's functions: two disjoint views from one noise draw, the heads, the broader-context loss


def check_two_views(num_patches: int, mask_ratio: float) -> int:
    """``k = int(L * (1 - mask_ratio))`` patches per view; ValueError unless two disjoint views fit (2k <= L)."""
    keep = num_kept(num_patches, mask_ratio)
    if 2 * keep > num_patches:
        raise ValueError(
            f"mask_ratio {mask_ratio} leaves {keep} of {num_patches} patches visible per view, but LUT's two views "
            f"need disjoint visible sets (2 * {keep} > {num_patches}); use mask_ratio >= 0.5"
        )
    return keep


def second_view_noise(noise: torch.Tensor, num_keep: int) -> torch.Tensor:
    """Noise (batch, L) for the second view: with it, ``masking.mask_from_noise`` keeps ``ids_shuffle[:, k:2k]`` of
    the first view's ``noise`` (k = ``num_keep``), in that order. It is each patch's rank in the shared shuffle,
    shifted down by k (cyclically): ranks k..2k-1 become the k smallest values."""
    ranks = noise.argsort(dim=1).argsort(dim=1)
    return ((ranks - num_keep) % noise.shape[1]).to(noise.dtype)


def projection_mlp(config: LUTConfig, num_layers: int, track_running_stats: bool = True) -> nn.Module:
    """The official ``_build_mlp``: ``num_layers`` Linear layers without bias (hidden -> projector_hidden_size ->
    ... -> hidden), each but the last followed by BatchNorm1d and ReLU; (batch, hidden) -> (batch, hidden)."""
    if num_layers == 0:
        return nn.Identity()
    layers = []
    for index in range(num_layers):
        in_size = config.hidden_size if index == 0 else config.projector_hidden_size
        last = index == num_layers - 1
        layers.append(nn.Linear(in_size, config.hidden_size if last else config.projector_hidden_size, bias=False))
        if not last:
            layers += [nn.BatchNorm1d(config.projector_hidden_size, track_running_stats=track_running_stats), nn.ReLU()]
    return nn.Sequential(*layers)


def mean_patch_token(last_hidden_state: torch.Tensor) -> torch.Tensor:
    """(batch, 1 + tokens, hidden) encoder output -> (batch, hidden) mean of the patch tokens (cls left out)."""
    return last_hidden_state[:, 1:].mean(dim=1)


def broader_context_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """LUT's ``L_bc``: student[v] (batch, dim) embeds masked view v, teacher[u] (batch, dim) unmasked view u. The mean
    over the pairs v != u of the batch mean of ``2 - 2 cos(q_v, t_u)``, in [0, 4]; 2 when they are orthogonal.
    The teacher side is detached."""
    terms = []
    for u, target in enumerate(teacher):
        target = F.normalize(target.detach().float(), dim=-1)
        for v, prediction in enumerate(student):
            if v != u:
                cosine = (F.normalize(prediction.float(), dim=-1) * target).sum(dim=-1)
                terms.append((2 - 2 * cosine).mean())
    return torch.stack(terms).mean()


# ---------------------------------------------------------------------------------------------------------------
# Modules


class LUTTeacher(EMATeacher):
    """The EMA teacher: an encoder and a projector (the official EMA copies the whole model; only these two are
    used). Weights as buffers (see ``teachers.EMATeacher``): saved with the model, but outside the optimiser, DDP's
    gradient sync and "every parameter gets a gradient" checks. It always runs in eval mode (no drop-path), and its
    BatchNorm uses batch statistics (module docstring)."""

    def __init__(self, config: LUTConfig):
        super().__init__(
            MomentumSchedule(config.ema_decay, config.ema_decay_end, config.total_steps, kind="cosine"),
            encoder=MAEModel(config),
            projector=projection_mlp(config, config.projector_num_layers, track_running_stats=False),
        )
        self.train(False)

    def train(self, mode: bool = True):
        return super().train(False)  # the official teacher is never switched to training

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False) -> torch.Tensor:
        """pixel_values (batch, C, H, W), unmasked -> t (batch, hidden)."""
        encoded = self.encoder(pixel_values, mask_ratio=0.0, interpolate_pos_encoding=interpolate_pos_encoding)
        return self.projector(mean_patch_token(encoded.last_hidden_state))


@dataclass
class LUTForPreTrainingOutput(MaskedPreTrainingOutput):
    """MAE's pre-training output for view 1 (``loss`` is the total here: mae_loss_weight * reconstruction_loss +
    bc_loss_weight * bc_loss; ``mask`` is view 1's, equal to MAE's mask for the same ``noise``) plus
    reconstruction_loss: masked norm-pix MSE on view 1; bc_loss: the broader-context loss;
    mask_2: (batch, N) view 2's mask (1 = hidden); its visible patches are hidden in ``mask`` and vice versa.
    """

    reconstruction_loss: torch.Tensor | None = None
    bc_loss: torch.Tensor | None = None
    mask_2: torch.Tensor | None = None


class LUTPreTrainedModel(MAEPreTrainedModel):
    config_class = LUTConfig

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)  # MAE's rules; the base's cover the projector's BatchNorm
        if isinstance(module, LUTForPreTraining):
            init.zeros_(module.lut_step)


class LUTModel(MAEModel):
    """The LUT encoder (a MAE ViT); loads the ``mae.*`` weights of a LUT pre-training checkpoint."""

    config_class = LUTConfig


class LUTForImageClassification(MAEForImageClassification):
    """LUT encoder + classifier, pooled as MAE fine-tunes."""

    config_class = LUTConfig


class LUTForPreTraining(EMATeacherMixin, LUTPreTrainedModel, MAEForPreTraining):
    """MAE encoder + pixel decoder + projector + predictor, with an EMA teacher of the encoder and projector.
    Call ``after_optimizer_step(step)`` after every optimiser step (``teachers.EMATeacherMixin``)."""

    teacher_step_buffer = "lut_step"

    def __init__(self, config: LUTConfig):
        LUTPreTrainedModel.__init__(self, config)
        self.mae = MAEModel(config)
        self.decoder = MAEDecoder(config)
        self.projector = projection_mlp(config, config.projector_num_layers)  # the official ``head``
        self.predictor = projection_mlp(config, config.predictor_num_layers)
        self.teacher = LUTTeacher(config)
        # optimiser steps the teacher followed (training forwards, when no loop calls after_optimizer_step)
        self.register_buffer("lut_step", torch.zeros((), dtype=torch.long))
        self.post_init()
        self.teacher.copy_from(self.teacher_student())  # the EMA starts as a copy

    def teacher_student(self) -> dict:
        """The online modules the teacher tracks, by the teacher's part names."""
        return {"encoder": self.mae, "projector": self.projector}

    def _student_parameters(self) -> dict:
        """The online parameters the teacher tracks, under the teacher's buffer names."""
        return {f"{part}.{name}": p for part, module in self.teacher_student().items() for name, p in module.named_parameters()}

    def ema_decay(self, step: int) -> float:
        """The official cosine schedule: ``end - (end - start) * (1 + cos(pi * step / total_steps)) / 2``, flat after."""
        return self.teacher.schedule(step)

    def update_teacher(self, decay: float) -> None:
        """teacher <- decay * teacher + (1 - decay) * student (parameters; decay 0 copies, decay 1 keeps)."""
        self.teacher.move_towards(self.teacher_student(), decay)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        pixel_values_2: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """
        pixel_values: (batch, C, H, W) view 1, the masked and reconstructed one (its mask is returned).
        pixel_values_2: (batch, C, H, W) a second augmentation of the same images; None uses ``pixel_values``.
        noise: (batch, num_patches), optional: fixes both masks. View 1 keeps the ``k`` patches with the smallest
            noise (MAE's mask), view 2 the next ``k``.
        mask_ratio: overrides ``config.mask_ratio``; two disjoint views need ``2 * int(L * (1 - r)) <= L``.
        Other inputs as :meth:`MAEForPreTraining.forward`; hidden states and attentions are view 1's.
        In training mode each call first moves the teacher one EMA step, unless a loop calls
        ``after_optimizer_step``. Returns LUTForPreTrainingOutput.
        """
        patch_embeddings = self.mae.embeddings.patch_embeddings
        grid = patch_embeddings.grid_for(pixel_values, allow_other_size=interpolate_pos_encoding)
        if pixel_values_2 is None:
            pixel_values_2 = pixel_values
        else:
            patch_embeddings.grid_for(pixel_values_2, allow_other_size=interpolate_pos_encoding)
            if pixel_values_2.shape != pixel_values.shape:
                raise ValueError(
                    f"pixel_values_2 must have the shape of pixel_values {tuple(pixel_values.shape)}, "
                    f"got {tuple(pixel_values_2.shape)}"
                )
        ratio = check_mask_ratio(self.config.mask_ratio if mask_ratio is None else mask_ratio)
        batch, num_patches = pixel_values.shape[0], grid[0] * grid[1]
        keep = check_two_views(num_patches, ratio)
        if batch < 2 and max(self.config.projector_num_layers, self.config.predictor_num_layers) > 1:
            raise ValueError(
                f"pixel_values holds {batch} image; LUT needs at least 2 per batch (the projector's BatchNorm "
                "normalises over the batch)"
            )
        if noise is None:
            noise = self.mae.mask_generator.noise(batch, num_patches, grid, pixel_values.device)
        elif tuple(noise.shape) != (batch, num_patches):
            raise ValueError(f"noise must have shape (batch, num_patches) = {(batch, num_patches)}, got {tuple(noise.shape)}")
        if self.training and not self.teacher.updated_by_hook:  # no loop calls after_optimizer_step
            self.update_teacher(self.ema_decay(self.lut_step.item()))
            self.lut_step += 1

        view_1 = self.mae(
            pixel_values,
            noise=noise,
            mask_ratio=ratio,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
            **kwargs,
        )
        view_2 = self.mae(
            pixel_values_2,
            noise=second_view_noise(noise, keep),
            mask_ratio=ratio,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
        )
        logits = self.decoder(view_1.last_hidden_state, view_1.ids_restore, grid)
        target = pixel_target(pixel_values.float(), to_2tuple(self.config.patch_size), self.config.norm_pix_loss)
        reconstruction = masked_mse(logits, target, view_1.mask)

        # each view through the heads on its own, as the official code (BatchNorm statistics per view)
        student = [self.predictor(self.projector(mean_patch_token(v.last_hidden_state))) for v in (view_1, view_2)]
        teacher = [self.teacher(x, interpolate_pos_encoding) for x in (pixel_values, pixel_values_2)]
        bc_loss = broader_context_loss(student, teacher)

        output = LUTForPreTrainingOutput(
            loss=self.config.mae_loss_weight * reconstruction + self.config.bc_loss_weight * bc_loss,
            logits=logits,
            mask=view_1.mask,
            ids_restore=view_1.ids_restore,
            hidden_states=view_1.hidden_states,
            attentions=view_1.attentions,
            reconstruction_loss=reconstruction,
            bc_loss=bc_loss,
            mask_2=view_2.mask,
        )
        return output


__all__ = [
    "LUTConfig",
    "LUTPreTrainedModel",
    "LUTModel",
    "LUTForPreTraining",
    "LUTForImageClassification",
    "LUTForPreTrainingOutput",
    "LUTTeacher",
    "broader_context_loss",
    "second_view_noise",
]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
from .presets import TINY, VIT  # noqa: E402

METHOD = dict(
    name="lut",
    paper="Learning with Unmasked Tokens Drives Stronger Vision Learners (Kim et al., ECCV 2024), arXiv:2310.13593",
    config_class=LUTConfig,
    model_classes={
        "base": LUTModel, "pretraining": LUTForPreTraining, "image-classification": LUTForImageClassification,
    },
    # pre-training views: two independent random resized crops (area 0.2-1) with flips, MAE's crop
    processor="TwoViewImageProcessor",
    processor_settings=dict(view_mode="independent"),
    # naver-ai/lut: the two views above are the augmentation; only their draws are seeded per sample
    pretrain_augmentation="views",
    # docs/PRETRAIN.md: blr 1.5e-4 at 128 x accum 4 per GPU on 8 GPUs = 4096 (the GPU count [unverified])
    pretrain_base_lr=1.5e-4, pretrain_batch=4096,
    presets={
        # mae-tiny's sizes, 256-d heads; the EMA is faster than the paper's (0.99 -> 1 over 1000 forwards),
        # since tiny runs last a few hundred steps; set total_steps to your run's length
        "lut-tiny": dict(TINY, projector_hidden_size=256, ema_decay=0.99, total_steps=1000),
        # the official recommended ViT-B/16 run: r=0.75, norm-pix, heads 768-4096-768, w_bc 0.25, EMA 0.996 -> 1
        "lut-vit-base-patch16": dict(patch_size=16, **VIT["base"]),
    },
)
