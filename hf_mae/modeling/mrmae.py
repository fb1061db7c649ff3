"""MR-MAE: Mimic before Reconstruct: Enhancing Masked Autoencoders with Feature Mimicking (Gao et al., 2023),
arXiv:2303.05475.

MAE with a second objective on the *encoder*: the visible tokens mimic the features of frozen pre-trained
teachers (CLIP and DINO in the paper), while the decoder still reconstructs the pixels of the masked ones. The two
targets act on disjoint token sets (high-level on the 25% visible tokens after the encoder, low-level on the 75%
masked tokens after the decoder), which is the paper's answer to their interference:
1. MAE's random masking; the encoder sees the visible patches only;
2. **mimic**: each teacher sees the whole image; a head per teacher (a Linear) maps the encoder's visible patch
   tokens to that teacher's width, and the mimic loss compares them with the teacher's tokens at the same patches;
3. **reconstruct**: MAE's decoder and its MSE on the (per-patch normalised) pixels of the masked patches;
4. ``loss = reconstruction + mimic_weight * sum over teachers of the mimic losses``.

There is no official code (the paper points to Alpha-VL/ConvMAE, which holds none), and only the paper's abstract
could be read here. What it fixes: the mimic loss is on the visible tokens of the encoder, against CLIP and DINO,
and MAE's pixel loss stays on the masked tokens. Everything else is hf-mae's choice and marked so in
:class:`MRMAEConfig`: a Linear head per teacher, the encoder's final-normed output as the mimicking tokens, each
teacher's last block (before its final norm), the MSE against per-token standardised teacher features, weight 1
per teacher, random masking.

Departures from the paper (as far as its abstract tells):
- no attention-guided ("focused") choice of the visible tokens, no multi-layer fusion and no masked-convolution
  stages (MR-MCMAE): the paper's refinements beyond the core recipe could not be checked, so they are left out;
- the teachers' tokens are resized to the student's patch grid when the grids differ (bilinear), and CLIP's
  images are re-normalised from the ImageNet statistics to CLIP's own (``teacher_image_mean`` / ``_std``).

Teachers. Up to two frozen teachers, each described by its prefix's fields as ``teachers.build_frozen_teacher``
reads them: ``teacher_*`` (required) and ``second_teacher_*`` (optional: off when neither
``second_teacher_name_or_path`` nor ``second_teacher_config`` is set and no instance is passed). Instances go to the
constructor, ``MRMAEForPreTraining(config, teacher=..., second_teacher=...)``; neither enters the state dict, the
optimiser or DDP.

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
    teacher_vision_config,
    teacher_width,
)

TEACHER_PREFIXES = ("teacher", "second_teacher")
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _check_statistics(name: str, value) -> list[float] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 3 or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        raise ValueError(f"{name} must be None or 3 numbers (one per RGB channel), got {value!r}")
    if name.endswith("std") and min(value) <= 0:
        raise ValueError(f"{name} must be positive, got {value!r}")
    return [float(v) for v in value]


class MRMAEConfig(MAEConfig):
    r"""Configuration of an MR-MAE model: MAE's fields (defaults: ViT-B/16 with MAE's 512-d x 8 decoder, r = 0.75,
    random masking) plus, for each teacher prefix ``teacher`` and ``second_teacher``:

    <prefix>_name_or_path: the frozen teacher, loaded with ``AutoModel.from_pretrained`` on first use (the paper's
        CLIP ViT-B/16, ``openai/clip-vit-base-patch16``, and DINO ViT-B/16, ``facebook/dino-vitb16``).
    <prefix>_config: instead, a config dict (with ``model_type``) of a randomly initialised teacher (tests).
    <prefix>_seed: seed of that random initialisation.
    <prefix>_hidden_size: the teacher's token width, the head's output (768 for both); None: read from the
        teacher's config when the model is built, or from the instance passed.
    <prefix>_layer: which teacher block's output (1-based, before the final norm) is mimicked; None: the last
        (hf-mae's choice).
    <prefix>_image_mean, <prefix>_image_std: the normalisation the teacher was trained with; the student's
        ImageNet-normalised images are re-normalised to it (CLIP's for ``teacher``, None = ImageNet's for DINO).

    The second teacher is off when neither ``second_teacher_name_or_path`` nor ``second_teacher_config`` is set
    (and no instance is passed). Besides:
    norm_pix_loss: on (MAE's best setting; hf-mae's choice, the abstract does not say).
    mimic_layer: which encoder output mimics: None = the final-normed output (the tokens the decoder reads), or a
        block number (1-based, before the final norm); visible patch tokens only, no cls (hf-mae's choice).
    projection_mode: the heads, one per teacher: "linear" (hf-mae's choice), "mlp" or "mlp2".
    mimic_loss: "mse_layernorm" (the MSE against per-token standardised teacher features, hf-mae's choice),
        "l1_normalized" (DMAE's) or "cosine" (``losses.feature_distillation_loss``).
    mimic_weight: weight of each teacher's mimic loss (1, hf-mae's choice).
    """

    model_type = "mrmae"

    teacher_name_or_path: str | None = "openai/clip-vit-base-patch16"
    teacher_config: dict | None = None
    teacher_seed: int = 0
    teacher_hidden_size: int | None = 768
    teacher_layer: int | None = None
    teacher_image_mean: list[float] | None = tuple(OPENAI_CLIP_MEAN)
    teacher_image_std: list[float] | None = tuple(OPENAI_CLIP_STD)
    second_teacher_name_or_path: str | None = "facebook/dino-vitb16"
    second_teacher_config: dict | None = None
    second_teacher_seed: int = 1
    second_teacher_hidden_size: int | None = 768
    second_teacher_layer: int | None = None
    second_teacher_image_mean: list[float] | None = None
    second_teacher_image_std: list[float] | None = None
    mimic_layer: int | None = None
    projection_mode: str = "linear"
    mimic_loss: str = "mse_layernorm"
    mimic_weight: float = 1.0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        for prefix in TEACHER_PREFIXES:
            check_teacher_fields(self, prefix)
            for field in ("hidden_size", "layer"):
                value = getattr(self, f"{prefix}_{field}")
                if value is not None:
                    check_int(f"{prefix}_{field}", value)
            for field in ("image_mean", "image_std"):
                name = f"{prefix}_{field}"
                setattr(self, name, _check_statistics(name, getattr(self, name)))
        if self.mimic_layer is not None:
            check_int("mimic_layer", self.mimic_layer)
            if self.mimic_layer > self.num_hidden_layers:
                raise ValueError(f"mimic_layer must be a block number in 1..{self.num_hidden_layers} or None, "
                                 f"got {self.mimic_layer}")
        check_choice("projection_mode", self.projection_mode, PROJECTION_MODES)
        check_choice("mimic_loss", self.mimic_loss, FEATURE_LOSSES)
        weight = self.mimic_weight
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight < 0:
            raise ValueError(f"mimic_weight must be a number >= 0, got {self.mimic_weight!r}")

    def teacher_configured(self, prefix: str) -> bool:
        """Whether the config names the teacher of ``prefix`` (by name/folder or config dict)."""
        return getattr(self, f"{prefix}_name_or_path") is not None or getattr(self, f"{prefix}_config") is not None


@dataclass
class MRMAEForPreTrainingOutput(MaskedPreTrainingOutput):
    """MAE's pre-training output (``loss`` is the total here) plus
    reconstruction_loss: MAE's masked MSE; mimic_loss: the sum of the teachers' mimic losses (unweighted);
    mimic_losses: (teachers,) each teacher's, ``teacher`` first."""

    reconstruction_loss: torch.Tensor | None = None
    mimic_loss: torch.Tensor | None = None
    mimic_losses: torch.Tensor | None = None


class MRMAEPreTrainedModel(MAEPreTrainedModel):
    config_class = MRMAEConfig
    _keys_to_ignore_on_load_unexpected = [r"^(second_)?teacher\."]  # never saved


class MRMAEModel(MAEModel):
    """The MR-MAE encoder (a MAE ViT); loads the ``mae.*`` weights of an MR-MAE pre-training checkpoint."""

    config_class = MRMAEConfig


class MRMAEForImageClassification(MAEForImageClassification):
    """The MR-MAE encoder (no masking) + MAE's fine-tuning classifier."""

    config_class = MRMAEConfig


class MRMAEForPreTraining(FrozenTeacherMixin, MRMAEPreTrainedModel, MAEForPreTraining):
    """MAE encoder + pixel decoder + one mimic head per frozen teacher; the visible tokens mimic the teachers, the
    decoder reconstructs the masked pixels."""

    def __init__(self, config: MRMAEConfig, teacher: nn.Module | None = None, second_teacher: nn.Module | None = None):
        given = {"teacher": teacher, "second_teacher": second_teacher}
        # the active teachers, in order: "teacher" always; "second_teacher" when configured or given
        self.__dict__["teacher_names"] = [p for p in TEACHER_PREFIXES
                                          if p == "teacher" or given[p] is not None or config.teacher_configured(p)]
        for prefix in self.teacher_names:
            if given[prefix] is not None:
                setattr(config, f"{prefix}_hidden_size", teacher_width(config, prefix, given[prefix]))
            elif getattr(config, f"{prefix}_hidden_size") is None:
                setattr(config, f"{prefix}_hidden_size", teacher_width(config, prefix))
        MRMAEPreTrainedModel.__init__(self, config)
        self.mae = MAEModel(config)
        self.decoder = MAEDecoder(config)
        self.mimic_heads = nn.ModuleList(
            ProjectionHead(config.hidden_size, getattr(config, f"{prefix}_hidden_size"), config.projection_mode,
                           config.hidden_act)
            for prefix in self.teacher_names
        )
        self.post_init()
        for prefix in self.teacher_names:  # frozen, out of the state dict; built on first use unless given
            self.set_frozen_teacher(prefix, given[prefix])

    def get_teacher(self, prefix: str, device) -> nn.Module:
        """The frozen teacher of ``prefix`` on ``device`` (built from the config the first time)."""
        return self.frozen_teacher(prefix, device, lambda: self.build_teacher(prefix))

    def build_teacher(self, prefix: str) -> nn.Module:
        teacher = build_frozen_teacher(self.config, prefix)
        width, expected = teacher_width(self.config, prefix, teacher), getattr(self.config, f"{prefix}_hidden_size")
        if width != expected:
            raise ValueError(f"the {prefix}'s tokens are {width}-d but config.{prefix}_hidden_size is {expected}; "
                             "set it to match")
        return teacher

    def teacher_layer(self, prefix: str, teacher: nn.Module) -> int:
        """The mimicked block of a teacher (1-based): ``<prefix>_layer``, else its last block."""
        layer = getattr(self.config, f"{prefix}_layer")
        return teacher_vision_config(teacher).num_hidden_layers if layer is None else layer

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """Inputs as :meth:`MAEForPreTraining.forward`. Returns MRMAEForPreTrainingOutput: ``loss`` =
        reconstruction + ``mimic_weight`` * the sum of the mimic losses, ``logits`` (batch, N, patch dim), ``mask``,
        ``mimic_losses`` (teachers,), ..."""
        config = self.config
        ratio = check_mask_ratio(config.mask_ratio if mask_ratio is None else mask_ratio)
        wants_hidden = kwargs.pop("output_hidden_states", None)
        if wants_hidden is None:
            wants_hidden = config.output_hidden_states
        encoded = self.mae(
            pixel_values,
            noise=noise,
            mask_ratio=ratio,
            interpolate_pos_encoding=interpolate_pos_encoding,
            output_hidden_states=config.mimic_layer is not None or wants_hidden,
            return_dict=True,
            **kwargs,
        )
        grid = self.mae.embeddings.patch_embeddings.grid_for(pixel_values, allow_other_size=True)
        logits = self.decoder(encoded.last_hidden_state, encoded.ids_restore, grid)
        target = pixel_target(pixel_values.float(), to_2tuple(config.patch_size), config.norm_pix_loss)
        reconstruction = masked_mse(logits, target, encoded.mask)

        # the mimicking tokens: the visible patch tokens (no cls) of the encoder's output
        student = encoded.last_hidden_state if config.mimic_layer is None else encoded.hidden_states[config.mimic_layer]
        student = student[:, 1:]
        ids_keep = encoded.ids_restore.argsort(dim=1)[:, : student.shape[1]]
        losses = []
        for prefix, head in zip(self.teacher_names, self.mimic_heads):
            teacher = self.get_teacher(prefix, pixel_values.device)
            (tokens,), _ = teacher_visible_tokens(
                teacher, pixel_values, [self.teacher_layer(prefix, teacher)], ids_keep, grid,
                image_mean=getattr(config, f"{prefix}_image_mean"), image_std=getattr(config, f"{prefix}_image_std"),
            )  # the teacher sees the whole image; its tokens at the visible patches, cls first
            losses.append(feature_distillation_loss(head(student), tokens[:, 1:].to(student.dtype), config.mimic_loss))
        losses = torch.stack(losses)
        mimic = losses.sum()
        return MRMAEForPreTrainingOutput(
            loss=reconstruction + config.mimic_weight * mimic,
            logits=logits,
            mask=encoded.mask,
            ids_restore=encoded.ids_restore,
            hidden_states=encoded.hidden_states if wants_hidden else None,
            attentions=encoded.attentions,
            reconstruction_loss=reconstruction,
            mimic_loss=mimic,
            mimic_losses=losses.detach(),
        )


__all__ = [
    "MRMAEConfig",
    "MRMAEPreTrainedModel",
    "MRMAEModel",
    "MRMAEForPreTraining",
    "MRMAEForImageClassification",
    "MRMAEForPreTrainingOutput",
]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
from .presets import TINY, VIT  # noqa: E402

METHOD = dict(
    name="mrmae",
    paper="Mimic before Reconstruct: Enhancing Masked Autoencoders with Feature Mimicking (Gao et al., 2023), "
          "arXiv:2303.05475",
    config_class=MRMAEConfig,
    model_classes={
        "base": MRMAEModel, "pretraining": MRMAEForPreTraining, "image-classification": MRMAEForImageClassification,
    },
    processor="MAEImageProcessor",
    # no official recipe: MAE's crop + flip and MAE's lr rule (hf-mae's choice)
    pretrain_augmentation=dict(crop_scale=(0.2, 1.0), resample="bicubic"),
    pretrain_base_lr=1.5e-4, pretrain_batch=4096,
    presets={
        # mae-tiny's sizes mimicking two tiny random teachers, as the paper's two: a ViT (DINO's architecture) and
        # a CLIP vision tower (with CLIP's normalisation), both 4-px patches at 32 px; nothing downloaded
        "mrmae-tiny": dict(
            TINY, teacher_name_or_path=None, teacher_hidden_size=64, second_teacher_name_or_path=None,
            second_teacher_hidden_size=48,
            teacher_config=dict(model_type="clip_vision_model", image_size=32, patch_size=4, hidden_size=64,
                                num_hidden_layers=2, num_attention_heads=2, intermediate_size=128),
            second_teacher_config=dict(model_type="vit", image_size=32, patch_size=4, hidden_size=48,
                                       num_hidden_layers=2, num_attention_heads=2, intermediate_size=96),
        ),
        # ViT-B/16 mimicking CLIP ViT-B/16 and DINO ViT-B/16 (768-d tokens each)
        "mrmae-vit-base-patch16": dict(patch_size=16, **VIT["base"]),
    },
)
