"""FMAE-IAT: Representation Learning and Identity Adversarial Training for Facial Behavior Understanding
(Ning, Salah & Onal Ertugrul, FG 2025; arXiv:2407.11243).

Two parts, as in the paper and its code (forever208/FMAE-IAT):
1. **FMAE** is plain MAE pre-trained on faces (Face9M): ViT-S/B/L with patch 16, mask ratio 0.75, per-patch
   normalised pixels, blr 1.5e-4, weight decay 0.05, 50 epochs with 2 warm-up epochs. The model, decoder, target and
   loss are MAE's (``mae.py``); the classes below only rename MAE's so that a checkpoint says ``"model_type":
   "fmae"`` (weights keep MAE's layout, ``mae.*`` / ``decoder.*``, so an MAE checkpoint loads into FMAE and back).
2. **IAT**, identity-adversarial fine-tuning for facial action-unit (AU) detection: the encoder's pooled feature
   (mean of the patch tokens, then ``fc_norm``) feeds a multi-label AU head *and*, through a gradient-reversal layer
   of strength λ (``identity_adversarial_lambda``; the code's ``--grad_reverse``: BP4D 2, BP4D+ 1, DISFA 0.5), a
   linear identity head over the training subjects. The loss is ``BCE(AU) + BCE(identity one-hot)``: the identity
   head learns to recognise the subject while the reversed gradient trains the encoder to make that impossible, so
   the features keep less of the subject's identity, a shortcut that AU data sets (few subjects, many frames each)
   invite. λ = 0 is plain fine-tuning (no identity head, as in the code).

What the code fixes that the card left open: the identity head is a single ``nn.Linear(hidden, num_subjects)`` on
the same pooled, normalised feature as the AU head (the repo's ``BP4D_ID_head_ablation`` branch tries 2- and 3-layer
MLPs; the released branches use the linear one), the identity target is a one-hot vector under the same
``BCEWithLogitsLoss`` as the AUs, and the two losses are added with weight 1.

Departures from the paper / code:
- the pre-training augmentation is the code's ``Resize((224, 224))`` + horizontal flip, written as hf-mae's crop
  recipe with the whole image always taken (``crop_scale=(1, 1)``, every aspect ratio allowed) and squashed to size;
- the AU head and the identity head are initialised as MAE initialises linears (xavier-uniform, zero bias) rather
  than timm's/torch's defaults;
- integer ``labels`` (batch,) give single-label cross-entropy (transformers' rule), so the same class is FMAE's
  ``AutoModelForImageClassification``; the AU task passes float multi-hot labels (batch, num_labels) and gets BCE,
  also with a single AU (where transformers' rule would regress);
- ``identity_labels`` are subject indices (batch,) in ``[0, num_identities)``, turned into the one-hot target here;
  without them (evaluation, inference, subjects unseen in training) only the AU loss is computed;
- three options the code does not have, all off by default (the code's behaviour): cross-entropy for the identity
  head (``identity_loss="cross_entropy"``), the DANN ramp of λ (``identity_adversarial_schedule="dann"``) and an
  identity head on every patch token (``identity_head_input="tokens"``). The code's λ is constant (``--grad_reverse``
  read once), its identity loss the AU criterion (BCE) on one-hot subjects, its head on the pooled feature.

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

from .base import check_int
from .heads import ImageClassifierMixin
from .layers import GradientReversal
from .losses import classification_loss
from .mae import MAEConfig, MAEForPreTraining, MAEModel, MAEPreTrainedModel


IDENTITY_LOSSES = ("bce", "cross_entropy")
IDENTITY_SCHEDULES = ("constant", "dann")
IDENTITY_HEAD_INPUTS = ("pooled", "tokens")


class FMAEConfig(MAEConfig):
    r"""Configuration of an FMAE model: an :class:`MAEConfig` (defaults: ViT-B/16, r=0.75, norm-pix) plus the
    identity-adversarial fine-tuning fields, read by :class:`FMAEForFacialActionUnitDetection` only:

    identity_adversarial_lambda: λ, the strength of the gradient reversal in front of the identity head, a number
        >= 0 (the code's ``--grad_reverse``: BP4D 2, BP4D+ 1, DISFA 0.5). 0 (default) = plain fine-tuning, no
        identity head.
    num_identities: subjects the identity head tells apart (the code's ``--nb_subjects``: 41 / 140 / 27); >= 1 when
        λ > 0, else unused. Default 0.
    identity_loss: the identity head's loss. ``"bce"`` (default, the code's: ``BCEWithLogitsLoss`` against the
        one-hot subject vector, averaged over the ``num_identities`` logits too, so its gradient is about
        1 / num_identities of cross-entropy's) or ``"cross_entropy"`` (softmax cross-entropy over the subjects: an
        option, hf-mae's).
    identity_adversarial_schedule: the reversal strength over training. ``"constant"`` (default, the code's: λ from
        the first step) or ``"dann"`` (an option, hf-mae's: Ganin & Lempitsky's ramp
        ``λ_p = λ (2 / (1 + exp(-10 p)) - 1)``, p = training progress in [0, 1], set through
        :meth:`FMAEForFacialActionUnitDetection.set_training_progress`; ``hf-mae finetune`` calls it every step).
    identity_head_input: what the identity head reads. ``"pooled"`` (default, the code's: the pooled, normalised
        feature the AU head reads) or ``"tokens"`` (an option, hf-mae's: every patch token after ``fc_norm``, its
        loss averaged over the tokens, so no single token may keep the subject, not only their mean).
    """

    model_type = "fmae"
    # Trainer's evaluation keeps only ``logits`` for the metrics (the identity scores and the loss terms are training
    # diagnostics)
    keys_to_ignore_at_inference = ["identity_logits", "action_unit_loss", "identity_loss"]

    identity_adversarial_lambda: float = 0.0
    num_identities: int = 0
    identity_loss: str = "bce"
    identity_adversarial_schedule: str = "constant"
    identity_head_input: str = "pooled"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        strength = self.identity_adversarial_lambda
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not strength >= 0:
            raise ValueError(
                f"identity_adversarial_lambda must be a number >= 0 (0: no identity adversary), got {strength!r}"
            )
        if strength > 0:
            check_int("num_identities", self.num_identities, minimum=1)
        else:
            check_int("num_identities", self.num_identities, minimum=0)
        for name, allowed in (("identity_loss", IDENTITY_LOSSES), ("identity_adversarial_schedule", IDENTITY_SCHEDULES),
                              ("identity_head_input", IDENTITY_HEAD_INPUTS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")


def dann_strength(strength: float, progress: float) -> float:
    """Ganin & Lempitsky's ramp of the reversal strength: ``strength * (2 / (1 + exp(-10 progress)) - 1)``, 0 at
    progress 0, 0.987 * strength at progress 0.5, 0.99991 * strength at 1."""
    return strength * (2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0)


@dataclass
class FMAEActionUnitOutput(ModelOutput):
    """Output of :class:`FMAEForFacialActionUnitDetection`.

    loss: the AU loss plus, with ``identity_labels``, the identity head's loss (the encoder sees it reversed).
    logits: (batch, num_labels) AU scores (sigmoid them for probabilities).
    identity_logits: (batch, num_identities) identity scores ((batch, patches, num_identities) with
        ``identity_head_input="tokens"``); None without an identity head (λ = 0).
    action_unit_loss, identity_loss: the two terms (None where not computed).
    hidden_states, attentions: as in transformers, when asked for.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    identity_logits: torch.Tensor | None = None
    action_unit_loss: torch.Tensor | None = None
    identity_loss: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class FMAEPreTrainedModel(MAEPreTrainedModel):
    config_class = FMAEConfig


# Thin subclasses of MAE's: ``config_class`` ties them to FMAEConfig for the Auto classes; ``base_model_prefix``
# ("mae") and every module are inherited, so the weight names are exactly MAE's.
class FMAEModel(MAEModel):
    """The FMAE ViT encoder (:class:`MAEModel`). Same inputs and outputs."""

    config_class = FMAEConfig


class FMAEForPreTraining(MAEForPreTraining):
    """FMAE pre-training on faces (:class:`MAEForPreTraining`). Same inputs and outputs."""

    config_class = FMAEConfig


class FMAEForFacialActionUnitDetection(ImageClassifierMixin, FMAEPreTrainedModel):
    """The FMAE encoder (no masking) + an AU head and, when ``config.identity_adversarial_lambda > 0``, an identity
    head behind a gradient-reversal layer (IAT). Both heads read the same pooled feature: the mean of the patch
    tokens and ``fc_norm`` (``classifier_pooling="mean"``, the code's ``global_pool``), or the normalised cls token.
    """

    def __init__(self, config: FMAEConfig):
        super().__init__(config)
        self.mae = FMAEModel(config, add_final_norm=config.classifier_pooling == "cls")
        self.build_classifier(config)  # fc_norm + classifier (the AU head)
        if config.identity_adversarial_lambda > 0:
            self.gradient_reversal = GradientReversal(self.adversarial_strength(0.0))
            self.identity_classifier = nn.Linear(config.hidden_size, config.num_identities)
        else:
            self.gradient_reversal = self.identity_classifier = None
        self.post_init()

    def adversarial_strength(self, progress: float) -> float:
        """The reversal strength at ``progress`` in [0, 1] of training: λ (``"constant"``) or the DANN ramp."""
        strength = float(self.config.identity_adversarial_lambda)
        if self.config.identity_adversarial_schedule == "dann":
            return dann_strength(strength, progress)
        return strength

    def set_training_progress(self, progress: float) -> float:
        """Sets the reversal strength for ``progress`` (a number in [0, 1]: steps done / total steps) and returns it.
        ``hf-mae finetune`` calls it after every optimiser step (``callbacks.TrainingProgressCallback``); a model
        never told starts at progress 0 (λ, or 0 under the DANN ramp)."""
        if isinstance(progress, bool) or not isinstance(progress, (int, float)) or not 0.0 <= progress <= 1.0:
            raise ValueError(f"progress must be a number in [0, 1] (steps done / total steps), got {progress!r}")
        strength = self.adversarial_strength(float(progress))
        if self.gradient_reversal is not None:
            self.gradient_reversal.strength = strength
        return strength

    def pooled_features(self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False, **kwargs):
        """(pooled feature (batch, hidden) that both heads read, the encoder's output)."""
        encoded = self.mae(
            pixel_values, mask_ratio=0.0, interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True, **kwargs
        )
        tokens = encoded.last_hidden_state
        pooled = tokens[:, 1:].mean(dim=1) if self.config.classifier_pooling == "mean" else tokens[:, 0]
        return self.fc_norm(pooled), encoded

    def action_unit_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Float labels of the logits' shape (multi-hot AUs) -> BCE averaged over AUs and samples (the code's
        ``BCEWithLogitsLoss``); otherwise transformers' rule (``losses.classification_loss``)."""
        multi_hot = labels.is_floating_point() and tuple(labels.shape) == tuple(logits.shape)
        if self.config.problem_type in (None, "multi_label_classification") and multi_hot:
            return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.to(logits.device).float())
        return classification_loss(logits, labels, self.config)

    def identity_loss(self, identity_logits: torch.Tensor, identity_labels: torch.Tensor) -> torch.Tensor:
        """``identity_loss="bce"``: BCE between the identity scores and the one-hot subject vector, averaged over
        samples and subjects (the code's ``BCEWithLogitsLoss``); ``"cross_entropy"``: softmax cross-entropy averaged
        over samples. Per-token scores (batch, tokens, num_identities) are scored against every token's subject."""
        labels = identity_labels.long().to(identity_logits.device)
        if identity_logits.dim() == 3:  # identity_head_input="tokens": each token is scored
            labels = labels[:, None].expand(-1, identity_logits.shape[1]).reshape(-1)
            identity_logits = identity_logits.reshape(-1, identity_logits.shape[-1])
        if self.config.identity_loss == "cross_entropy":
            return nn.functional.cross_entropy(identity_logits.float(), labels)
        target = nn.functional.one_hot(labels, self.config.num_identities)
        return nn.functional.binary_cross_entropy_with_logits(identity_logits.float(), target.float())

    def _check_identity_labels(self, identity_labels: torch.Tensor, batch: int) -> None:
        if self.identity_classifier is None:
            raise ValueError(
                "identity_labels were given but the model has no identity head: set identity_adversarial_lambda > 0 "
                f"and num_identities in the config (got identity_adversarial_lambda="
                f"{self.config.identity_adversarial_lambda})"
            )
        if identity_labels.is_floating_point() or tuple(identity_labels.shape) != (batch,):
            raise ValueError(
                f"identity_labels must be integer subject indices of shape (batch,) = ({batch},), got "
                f"{identity_labels.dtype} {tuple(identity_labels.shape)}"
            )
        if not torch.compiler.is_compiling():  # reads values: eager only
            low, high = int(identity_labels.min()), int(identity_labels.max())
            if low < 0 or high >= self.config.num_identities:
                raise ValueError(
                    f"identity_labels must be in [0, num_identities={self.config.num_identities}), got values "
                    f"in [{low}, {high}]"
                )

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        identity_labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """pixel_values (batch, channels, H, W); labels: float multi-hot AUs (batch, num_labels), or class indices
        (batch,); identity_labels: subject indices (batch,) (training only; they need the identity head).
        Returns :class:`FMAEActionUnitOutput`; output_hidden_states / output_attentions / return_dict as in
        transformers."""
        if identity_labels is not None:
            self._check_identity_labels(identity_labels, pixel_values.shape[0])
        pooled, encoded = self.pooled_features(pixel_values, interpolate_pos_encoding, **kwargs)
        logits = self.classifier(pooled)
        identity_logits = None
        if self.identity_classifier is not None:
            if self.config.identity_head_input == "tokens":
                identity_input = self.fc_norm(encoded.last_hidden_state[:, 1:])
            else:
                identity_input = pooled
            identity_logits = self.identity_classifier(self.gradient_reversal(identity_input))
        au_loss = self.action_unit_loss(logits, labels) if labels is not None else None
        id_loss = self.identity_loss(identity_logits, identity_labels) if identity_labels is not None else None
        if au_loss is None:
            loss = id_loss
        else:
            loss = au_loss if id_loss is None else au_loss + id_loss
        return FMAEActionUnitOutput(
            loss=loss, logits=logits, identity_logits=identity_logits, action_unit_loss=au_loss, identity_loss=id_loss,
            hidden_states=encoded.hidden_states, attentions=encoded.attentions,
        )


__all__ = [
    "FMAEConfig",
    "FMAEPreTrainedModel",
    "FMAEModel",
    "FMAEForPreTraining",
    "FMAEForFacialActionUnitDetection",
    "FMAEActionUnitOutput",
]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
from .presets import TINY, VIT  # noqa: E402

METHOD = dict(
    name="fmae",
    paper=(
        "Representation Learning and Identity Adversarial Training for Facial Behavior Understanding "
        "(Ning, Salah & Onal Ertugrul, FG 2025), arXiv:2407.11243"
    ),
    config_class=FMAEConfig,
    model_classes={
        "base": FMAEModel, "pretraining": FMAEForPreTraining,
        # the AU / identity-adversarial head is FMAE's classifier: AutoModelForImageClassification and hf-mae
        # finetune load it (integer labels: single-label cross-entropy)
        "image-classification": FMAEForFacialActionUnitDetection,
    },
    processor="MAEImageProcessor",
    # forever208/FMAE-IAT main_pretrain.py (branch mae_pretraining): Resize((224, 224)) + RandomHorizontalFlip(), no
    # random crop; here the whole image is always taken (scale 1, any aspect ratio) and squashed to the model's size
    pretrain_augmentation=dict(crop_scale=(1.0, 1.0), crop_ratio=(1e-3, 1e3), resample="bicubic", flip_probability=0.5),
    # the README's recipe: blr 1.5e-4 (per 256 images), weight decay 0.05, 50 epochs with 2 warm-up; the effective
    # batch is 512 (256 x 2 GPUs for ViT-S/B, 128 x 4 for ViT-L), so lr = 1.5e-4 * 512 / 256 = 3e-4
    pretrain_base_lr=1.5e-4, pretrain_batch=512, pretrain_weight_decay=0.05,
    presets={
        # mae-tiny's sizes (32 px, 4 px patches), r=0.75, norm-pix
        "fmae-tiny": dict(TINY),
        # the paper's FMAE ViT-S/B/L, patch 16 at 224 px, r=0.75, norm-pix
        "fmae-vit-small-patch16": dict(patch_size=16, mask_ratio=0.75, norm_pix_loss=True, **VIT["small"]),
        "fmae-vit-base-patch16": dict(patch_size=16, mask_ratio=0.75, norm_pix_loss=True, **VIT["base"]),
        "fmae-vit-large-patch16": dict(patch_size=16, mask_ratio=0.75, norm_pix_loss=True, **VIT["large"]),
    },
    exports=["FMAEPreTrainedModel", "FMAEActionUnitOutput"],
)
