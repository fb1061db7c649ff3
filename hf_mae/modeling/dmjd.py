"""DMJD: Disjoint Masking with Joint Distillation for Efficient Masked Image Modeling (Ma et al., 2023).

MAE with more training signal per image, following the official code (mx-mark/DMJD: ``models_dmjd.py``,
``engine_pretrain.py``, ``util/hog_tensor.py``, ``util/instance_whitening.py``):
1. **disjoint masking**: every image is encoded twice, with two masks at the same ratio ``r``. View 1 is MAE's
   random mask. View 2 hides ``int(min(pred_ratio - r, r) * L)`` of view 1's *visible* tokens and fills the rest of
   its masked set from view 1's masked tokens. With the official ``pred_ratio = 1`` (and r >= 0.5) view 2 sees only
   tokens that view 1 hid, and the two masked sets together cover every token (see :func:`disjoint_masks`);
2. **HOG targets**: the target of every patch is its histograms of oriented gradients (8-px cells, 9 unsigned
   bins, per channel), each histogram standardised over its bins (``targets.hog_target``);
3. **joint distillation**, two branches on the encoder output of both views:
   - masked branch: MAE's decoder with a linear head to the HOG dimension, L2 on the masked tokens (``L_mim``);
   - visible branch: a projector (``[Linear, LN, GELU] x 2, Linear, LN`` without affine) and a linear predictor
     to HOG at the *visible* tokens, smooth-L1 with beta 2 (``L_vis``);
   ``L = L_mim + visible_loss_weight * L_vis`` (theta = 1).

Deliberate deviations from the official code:
- the encoder is MAE's plain ViT (with a cls token): the official backbone is a ConvMAE hybrid (two masked-conv
  stages before the ViT), while this library is about ViT encoders; only random masking is offered (the official
  "block" masking is ConvMAE's 2x2-patch-group masking for that backbone);
- the official visible branch compares predictions in the encoder's (shuffled) token order with targets in
  positional order; here each visible prediction is compared with the target of its own token;
- view 2's choices come from the same ``noise`` as view 1 (see :func:`disjoint_masks`) rather than from a second
  ``randperm`` shared by the batch, so a fixed ``noise`` fixes both views (and the loss). The distribution of the
  two masks is the official one;
- HOG is computed on the model's input pixels (usually ImageNet-normalised) instead of the raw 0..255 crop; the
  per-histogram standardisation removes the scale, so the targets agree up to the standardisation's ``eps``.
Only two views exist, as in the official code (it concatenates the batch with itself once).

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Unpack

import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple

from .base import check_int, check_rate
from .embeddings import to_2tuple
from .losses import masked_mse
from .mae import MAEConfig, MAEDecoder, MAEForImageClassification, MAEModel, MAEPreTrainedModel
from .masking import check_mask_ratio, gather_tokens, num_kept
from .outputs import MaskedPreTrainingOutput
from .targets import hog_target


class DMJDConfig(MAEConfig):
    r"""Configuration of a DMJD model: MAE's fields (ViT-B/16 encoder; decoder 512-d x 8 blocks, 16 heads) plus

    mask_ratio: the corruption ratio r of each view (official ``--mask_ratio`` default 0.75; PRETRAIN.md's
        ConvMAE-B recipe uses 0.6 with block masking).
    pred_ratio: the prediction ratio: view 2 hides ``int(min(pred_ratio - r, r) * L)`` of view 1's visible tokens
        (official default 1.0, every token is predicted in one of the two views).
    decoder_intermediate_size: 4096, the official decoder's MLP ratio 8 (``mlp_ratio[0]`` of the ConViT factories).
    hog_cell_size: pixels per HOG cell side (official ``pixels_per_cell=(8, 8)``); must divide the patch size.
    hog_num_bins: unsigned orientation bins over 0..180 degrees (official 9).
    visible_loss_weight: theta, the weight of the visible-distillation loss (official ``--theta`` 1.0).
    visible_loss_beta: beta of the visible branch's smooth-L1 loss (official 2.0).
    norm_pix_loss: unused (the targets are HOG, not pixels); False.
    The HOG target of a patch has ``hog_dim = (patch / cell)^2 * bins * channels`` values (108 for the official
    16-px patches, 8-px cells, 9 bins, RGB).
    """

    model_type = "dmjd"

    decoder_intermediate_size: int = 4096
    pred_ratio: float = 1.0
    hog_cell_size: int = 8
    hog_num_bins: int = 9
    visible_loss_weight: float = 1.0
    visible_loss_beta: float = 2.0
    norm_pix_loss: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_rate("pred_ratio", self.pred_ratio, closed=True)
        for name in ("hog_cell_size", "hog_num_bins"):
            check_int(name, getattr(self, name))
        patch = to_2tuple(self.patch_size)
        if patch[0] % self.hog_cell_size or patch[1] % self.hog_cell_size:
            raise ValueError(f"patch_size {self.patch_size} must be divisible by hog_cell_size {self.hog_cell_size}")
        if self.visible_loss_weight < 0 or self.visible_loss_beta <= 0:
            raise ValueError(
                f"visible_loss_weight must be >= 0 and visible_loss_beta > 0, got "
                f"{self.visible_loss_weight} and {self.visible_loss_beta}"
            )

    @property
    def hog_dim(self) -> int:
        """Values of one patch's HOG target: cells per patch * bins * channels."""
        patch = to_2tuple(self.patch_size)
        cells = (patch[0] // self.hog_cell_size) * (patch[1] // self.hog_cell_size)
        return cells * self.hog_num_bins * self.num_channels


def disjoint_masks(noise: torch.Tensor, mask_ratio: float, pred_ratio: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The two views' token orders (lower = kept first) from one noise (batch, L): ``(noise_1, noise_2)``.

    ``noise_1`` is ``noise`` itself: view 1 keeps the ``K = int(L * (1 - r))`` tokens with the smallest noise, as
    MAE. View 2 keeps the ``K - E`` smallest-noise tokens of view 1's visible set and the ``E`` *largest*-noise tokens
    of view 1's masked set, ``E = min(int(min(pred_ratio - r, r) * L), K, L - K)``; so it hides E of view 1's visible
    tokens, as the official ``random_masking``. Within each set the noise order is a uniform random permutation,
    so this picks the same random subsets as the official ``randperm``s. ``noise_2`` is a rank (batch, L) float:
    ``masking.mask_from_noise(noise_2, r)`` gives view 2's mask.
    """
    batch, length = noise.shape
    keep = num_kept(length, mask_ratio)
    extra = max(0, min(int(min(pred_ratio - mask_ratio, mask_ratio) * length), keep, length - keep))
    order = torch.argsort(noise, dim=1)
    visible, masked = order[:, :keep], order[:, keep:]
    num_masked = length - keep
    # [view-2 visible (K), view-2 masked (L - K)]
    order_2 = torch.cat(
        [visible[:, : keep - extra], masked[:, num_masked - extra :], visible[:, keep - extra :], masked[:, : num_masked - extra]],
        dim=1,
    )
    rank = torch.arange(length, dtype=noise.dtype, device=noise.device).expand(batch, length)
    return noise, torch.empty_like(noise).scatter_(1, order_2, rank)


class DMJDDecoder(MAEDecoder):
    """MAE's decoder with a linear head to the HOG dimension: logits (batch, N, hog_dim)."""

    def __init__(self, config: DMJDConfig):
        super().__init__(config)
        self.decoder_pred = nn.Linear(config.decoder_hidden_size, config.hog_dim)


class DMJDVisibleHead(nn.Module):
    """The visible-distillation branch: official ``proj_embed`` ([Linear, LN, GELU] x 2, Linear, LN without affine,
    all ``decoder_hidden_size`` wide) + ``predictor`` (Linear to hog_dim). (batch, k, hidden) -> (batch, k, hog_dim)."""

    def __init__(self, config: DMJDConfig):
        super().__init__()
        width, eps = config.decoder_hidden_size, config.layer_norm_eps
        self.projector = nn.Sequential(
            nn.Linear(config.hidden_size, width), nn.LayerNorm(width, eps=eps), nn.GELU(),
            nn.Linear(width, width), nn.LayerNorm(width, eps=eps), nn.GELU(),
            nn.Linear(width, width), nn.LayerNorm(width, eps=eps, elementwise_affine=False),
        )  # fmt: skip
        self.predictor = nn.Linear(width, config.hog_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.predictor(self.projector(tokens))


@dataclass
class DMJDForPreTrainingOutput(MaskedPreTrainingOutput):
    """MAE's pre-training output for view 1 (``loss`` is the total of both views) plus
    masked_loss: L2 of the decoder's HOG predictions on the masked tokens of both views (``L_mim``);
    visible_loss: smooth-L1 of the visible branch on the visible tokens of both views (``L_vis``);
    mask_2: (batch, N) view 2's mask, 1 = hidden;
    logits_2: (batch, N, hog_dim) the decoder's predictions for view 2;
    visible_logits: (2 * batch, kept, hog_dim) the visible branch's predictions, view 1 then view 2, tokens in the
        encoder's order (``ids_restore.argsort(1)[:, :kept]``).
    ``logits`` (batch, N, hog_dim) are view 1's HOG predictions; ``hidden_states``/``attentions`` are view 1's.
    """

    masked_loss: torch.Tensor | None = None
    visible_loss: torch.Tensor | None = None
    mask_2: torch.Tensor | None = None
    logits_2: torch.Tensor | None = None
    visible_logits: torch.Tensor | None = None


class DMJDPreTrainedModel(MAEPreTrainedModel):
    config_class = DMJDConfig



class DMJDModel(MAEModel):
    """The DMJD encoder (a MAE ViT); loads the ``mae.*`` weights of a DMJD pre-training checkpoint."""

    config_class = DMJDConfig


class DMJDForImageClassification(MAEForImageClassification):
    """DMJD encoder + classifier, pooled as MAE fine-tunes."""

    config_class = DMJDConfig


class DMJDForPreTraining(DMJDPreTrainedModel):
    """MAE encoder run on two disjointly masked views, a HOG decoder for the masked tokens and a visible-token
    distillation head. Weight names follow MAE's (``mae.*``, ``decoder.*``) plus ``visible_head.*``. There is no
    ``reconstruct``: the predictions are HOG histograms, not pixels."""

    def __init__(self, config: DMJDConfig):
        super().__init__(config)
        self.mae = MAEModel(config)
        self.decoder = DMJDDecoder(config)
        self.visible_head = DMJDVisibleHead(config)
        self.post_init()

    def hog_target(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(batch, C, H, W) -> the whitened per-patch HOG target (batch, N, hog_dim), in float32."""
        config = self.config
        return hog_target(pixel_values.float(), to_2tuple(config.patch_size), config.hog_cell_size, config.hog_num_bins)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """Inputs as :meth:`MAEForPreTraining.forward`; ``noise`` (batch, N) fixes both views (view 1's mask is MAE's
        for that noise). Returns DMJDForPreTrainingOutput: ``loss = L_mim + visible_loss_weight * L_vis``,
        ``logits`` (batch, N, hog_dim) and ``mask`` (batch, N) of view 1, view 2's ``mask_2`` and ``logits_2``."""
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        embeddings = self.mae.embeddings.patch_embeddings
        grid = embeddings.grid_for(pixel_values, allow_other_size=interpolate_pos_encoding)
        ratio = check_mask_ratio(self.config.mask_ratio if mask_ratio is None else mask_ratio)
        batch, num_patches = pixel_values.shape[0], grid[0] * grid[1]
        if noise is None:
            noise = self.mae.mask_generator.noise(batch, num_patches, grid, pixel_values.device)
        elif tuple(noise.shape) != (batch, num_patches):
            raise ValueError(f"noise must have shape (batch, num_patches) = {(batch, num_patches)}, got {tuple(noise.shape)}")
        noise_1, noise_2 = disjoint_masks(noise.to(pixel_values.device), ratio, self.config.pred_ratio)

        # both views in one batch: view 1's rows first, then view 2's
        encoded = self.mae(
            torch.cat([pixel_values, pixel_values]),
            noise=torch.cat([noise_1, noise_2]),
            mask_ratio=ratio,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
            **kwargs,
        )
        latent, mask, ids_restore = encoded.last_hidden_state, encoded.mask, encoded.ids_restore
        logits = self.decoder(latent, ids_restore, grid)  # (2B, N, hog_dim)
        visible_logits = self.visible_head(latent[:, 1:])  # (2B, kept, hog_dim), encoder order

        target = self.hog_target(pixel_values).repeat(2, 1, 1)
        ids_keep = ids_restore.argsort(dim=1)[:, : latent.shape[1] - 1]
        masked_loss = masked_mse(logits, target, mask)
        visible_loss = F.smooth_l1_loss(
            visible_logits.float(), gather_tokens(target, ids_keep), beta=self.config.visible_loss_beta
        )

        def view_1(states):
            return None if states is None else tuple(state[:batch] for state in states)

        output = DMJDForPreTrainingOutput(
            loss=masked_loss + self.config.visible_loss_weight * visible_loss,
            logits=logits[:batch],
            mask=mask[:batch],
            ids_restore=ids_restore[:batch],
            hidden_states=view_1(encoded.hidden_states),
            attentions=view_1(encoded.attentions),
            masked_loss=masked_loss,
            visible_loss=visible_loss,
            mask_2=mask[batch:],
            logits_2=logits[batch:],
            visible_logits=visible_logits,
        )
        return output


__all__ = [
    "DMJDConfig",
    "DMJDPreTrainedModel",
    "DMJDModel",
    "DMJDForPreTraining",
    "DMJDForImageClassification",
    "DMJDForPreTrainingOutput",
    "disjoint_masks",
]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
from .presets import TINY, VIT  # noqa: E402

METHOD = dict(
    name="dmjd",
    paper=(
        "Disjoint Masking with Joint Distillation for Efficient Masked Image Modeling "
        "(Ma et al., 2023), arXiv:2301.00230"
    ),
    config_class=DMJDConfig,
    model_classes={
        "base": DMJDModel, "pretraining": DMJDForPreTraining, "image-classification": DMJDForImageClassification,
    },
    processor="MAEImageProcessor",
    # mx-mark/DMJD main_pretrain.py: RandomResizedCrop(scale=(0.5, 1.0), interpolation=3 (bicubic)) + flip
    pretrain_augmentation=dict(crop_scale=(0.5, 1.0), resample="bicubic"),
    # PRETRAIN.md: blr 6e-4 per 256 unique images at 64 x 8 GPUs = 512 (each seen in two masked views)
    pretrain_base_lr=6e-4, pretrain_batch=512,
    presets={
        # mae-tiny's sizes; 2-px HOG cells make 2x2 cells per 4-px patch, as 8-px cells per 16-px patch
        "dmjd-tiny": dict(TINY, hog_cell_size=2),
        # ViT-B/16 with the official defaults: r=0.75, pred_ratio 1, decoder 512-d x 8 (MLP 4096), HOG 8-px cells
        "dmjd-vit-base-patch16": dict(patch_size=16, **VIT["base"]),
    },
)
