"""MTO: SimMIM with masked token optimisation, from "Emerging Property of Masked Token for Effective Pre-training"
(Choi et al., ECCV 2024, arXiv:2404.08330).

MTO is a plug-in, not a model: the mechanics live in ``masked_token_optimization.py`` and any method whose encoder
replaces hidden patches by a mask token turns them on with the config flag ``use_mto`` (SimMIM's config carries it;
``hf-mae pretrain --model simmim-tiny --config-overrides use_mto=true`` is the same model as ``mto-tiny``).
This file gives the plug-in a name: :class:`MTOConfig` is a :class:`SimMIMConfig` with ``use_mto=True``, and the
model classes are SimMIM's (weights named ``simmim.*`` and ``decoder.*``), so an MTO checkpoint loads into SimMIM
and back. The paper's first baseline is SimMIM with a ViT-B/16 (800-epoch recipe, 192 px, r = 0.6, 32-px cells).

What the paper defines and what hf-mae had to decide is written in ``masked_token_optimization.py``; in short:
- the paper (abstract, keywords, the third author's project page, third-party summaries: its method section and
  code could not be read here): three properties of a masked token (spatial randomness, substitutional
  consistency, data singularity: the mask token should be unlike anything in the data); MTO excludes the masked
  tokens from the visible tokens' attention aggregation (*weight recalibration*) and enforces data singularity with
  depth-dependent constraints, three losses ``L_spa``, ``L_e`` (row-wise attention entropy), ``L_r``; about 50 %
  fewer pre-training epochs to reach the baselines' converged accuracy.
- hf-mae's choices: the exclusion in every block (``mto_recalibration`` = 0; a gamma in (0, 1] down-weights
  instead); ``L_spa`` = the share of a masked query's attention on masked keys; ``L_e`` = the normalised entropy of
  every attention row; both averaged over the blocks with weights falling linearly with depth; ``L_r`` = the
  squared cosine between the mask token and the (detached) visible patch embeddings; weights 0.1 each.

Departures from the paper: every formula, weight and depth schedule above may differ from the paper's, which
hf-mae could not read; SimMIM's own departures (absolute positions instead of relative position biases) hold here
too. Flash attention cannot carry the recalibration bias (eager or sdpa; refused otherwise); L_spa and L_e make
pre-training attend eagerly.

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

from .simmim import SimMIMConfig, SimMIMForImageClassification, SimMIMForPreTraining, SimMIMModel


class MTOConfig(SimMIMConfig):
    r"""Configuration of SimMIM + MTO: a :class:`SimMIMConfig` (defaults: the paper's ViT-B/16 SimMIM pre-training,
    192 px, r=0.6, 32-px cells) with the masked token optimisation on. The MTO fields (``mto_recalibration``,
    ``mto_sparsity_weight``, ``mto_entropy_weight``, ``mto_singularity_weight``) are documented on
    :class:`MaskedTokenOptimizationMixin`; their defaults are hf-mae's choice (the paper's values could not be read).
    """

    model_type = "mto"

    use_mto: bool = True


# Thin subclasses: ``config_class`` ties them to MTOConfig for the Auto classes; ``base_model_prefix`` ("simmim") and
# every module are inherited, so the weight names are exactly SimMIM's.
class MTOModel(SimMIMModel):
    """The SimMIM ViT encoder with MTO's weight recalibration whenever it masks. Same inputs and outputs."""

    config_class = MTOConfig


class MTOForPreTraining(SimMIMForPreTraining):
    """SimMIM pre-training with MTO's recalibration and losses; the output reports ``reconstruction_loss`` and the
    unweighted ``mto_sparsity_loss``, ``mto_entropy_loss``, ``mto_singularity_loss`` beside the total ``loss``."""

    config_class = MTOConfig


class MTOForImageClassification(SimMIMForImageClassification):
    """An MTO encoder with SimMIM's fine-tuning classifier (no masking, so MTO plays no part). Same inputs and
    outputs."""

    config_class = MTOConfig


__all__ = ["MTOConfig", "MTOModel", "MTOForPreTraining", "MTOForImageClassification"]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
from .presets import TINY_ENCODER, VIT  # noqa: E402

METHOD = dict(
    name="mto",
    paper="Emerging Property of Masked Token for Effective Pre-training (Choi et al., ECCV 2024), arXiv:2404.08330",
    config_class=MTOConfig,
    model_classes={
        "base": MTOModel, "pretraining": MTOForPreTraining, "image-classification": MTOForImageClassification,
        "masked-image-modeling": MTOForPreTraining,  # as SimMIM
    },
    processor="MAEImageProcessor",
    # MTO changes no part of its baseline's recipe: SimMIM's augmentation, lr rule and betas (simmim.py)
    pretrain_augmentation=dict(crop_scale=(0.67, 1.0), crop_ratio=(3 / 4, 4 / 3), resample="bilinear"),
    pretrain_base_lr=5e-5, pretrain_batch=2048, pretrain_betas=(0.9, 0.999),
    presets={
        # simmim-tiny + MTO
        "mto-tiny": dict(TINY_ENCODER, mask_patch_size=8),
        # the paper's SimMIM ViT-B/16 + MTO: 192 px, r=0.6, 32-px mask cells
        "mto-simmim-vit-base-patch16": dict(
            image_size=192, patch_size=16, mask_ratio=0.6, mask_patch_size=32, **VIT["base"]
        ),
    },
)
