"""CropMAE: Efficient Image Pre-Training with Siamese Cropped Masked Autoencoders (Eymaël et al., ECCV 2024).

MAE on two crops of one image, following the official code (alexandre-eymael/CropMAE, ``models/SiamMAE.py``,
``models/components/DecoderBlock.py``, ``scripts/train_cropmae_in.sh``):
1. two views of the same image: a *reference* view (the global crop, ``pixel_values_2``) and a *masked* view (a
   local crop of the global one, ``pixel_values``); the views come from the data pipeline (the two-view processor);
2. one shared ViT encoder (MAE's) encodes the reference view whole and the masked view with MAE's random masking at
   an extreme ratio, r = 0.985: 2 of 196 patches stay visible;
3. the decoder embeds both (one ``decoder_embed``), fills the masked view's hidden positions with the mask token,
   adds its sin-cos positions, and runs *post-norm* decoder blocks, each cross-attention (queries: the masked view,
   keys/values: the reference view) -> feed-forward -> self-attention, with dropout 0.1 (PyTorch's
   ``nn.TransformerDecoderLayer`` with the sub-layers reordered);
4. the loss is MAE's masked MSE on per-patch normalised pixels of the masked view.
With two visible patches the decoder can only reconstruct the masked view by finding it inside the reference view,
which is what the encoder's features learn to support (the paper targets video label propagation).

When ``pixel_values_2`` is not given the model uses ``pixel_values`` as both views (the official ``SameViews``
strategy), so ``model(**processor(images))`` works with a one-view processor.

The encoder is exactly MAE's and its weights keep MAE's names (``mae.*``), so a CropMAE checkpoint's encoder loads
into :class:`CropMAEModel`, :class:`CropMAEForImageClassification`, or MAE's classes.

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

from typing import Unpack

import torch
from torch import nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple

from .base import check_rate
from .embeddings import to_2tuple
from .layers import MLP, Attention, CrossAttention
from .losses import masked_mse
from .mae import MAEConfig, MAEDecoder, MAEForImageClassification, MAEForPreTraining, MAEModel, MAEPreTrainedModel
from .outputs import MaskedPreTrainingOutput
from .targets import pixel_target


class CropMAEConfig(MAEConfig):
    r"""Configuration of a CropMAE model: MAE's fields with the official defaults (``train_cropmae_in.sh``):

    hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: the encoder, ViT-S/16 (384, 12, 6, 1536);
        the official ``--architecture`` default is ``vits``.
    decoder_hidden_size, decoder_num_hidden_layers, decoder_num_attention_heads: 256, 4, 8 (``--decoder_embed_dim``,
        ``--decoder_depth``, ``--decoder_num_heads``).
    decoder_intermediate_size: the decoder blocks' feed-forward width, 2048 (``DecoderBlock``'s ``dim_feedforward``).
    decoder_dropout_prob: dropout of the decoder blocks (after each sub-layer, inside the feed-forward and on the
        attention weights), 0.1 (``DecoderBlock``'s ``dropout``).
    mask_ratio: share of the masked view's patches hidden, 0.985 (``--masking_ratio``): int(196 * 0.015) = 2 visible
        patches of a 224-px image. Keep at least one visible patch for other grids (the tiny preset's 64 patches
        use 0.96875, which keeps exactly 2).
    norm_pix_loss: True (``--norm_pix_loss``).
    """

    model_type = "cropmae"

    hidden_size: int = 384
    num_attention_heads: int = 6
    intermediate_size: int = 1536
    decoder_hidden_size: int = 256
    decoder_num_hidden_layers: int = 4
    decoder_num_attention_heads: int = 8
    decoder_dropout_prob: float = 0.1
    mask_ratio: float = 0.985

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_rate("decoder_dropout_prob", self.decoder_dropout_prob)


class CropMAEDecoderBlock(GradientCheckpointingLayer):
    """Post-norm decoder block in CropMAE's order (official ``DecoderBlock`` with ``norm_first=False``):

    x = LN(x + Drop(CrossAttn(x, reference)));  x = LN(x + Drop(FFN(x)));  x = LN(x + Drop(SelfAttn(x))).
    """

    def __init__(self, config: CropMAEConfig):
        super().__init__()
        width, heads, dropout = config.decoder_hidden_size, config.decoder_num_attention_heads, config.decoder_dropout_prob
        eps = config.layer_norm_eps
        self.cross_attention = CrossAttention(config, width, heads, qkv_bias=True, attention_dropout=dropout)
        self.norm_cross = nn.LayerNorm(width, eps=eps)
        self.mlp = MLP(width, config.decoder_intermediate_size, config.hidden_act, dropout)
        self.norm_mlp = nn.LayerNorm(width, eps=eps)
        self.self_attention = Attention(config, width, heads, qkv_bias=True, attention_dropout=dropout)
        self.norm_self = nn.LayerNorm(width, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states, reference, output_attentions: bool = False):
        """hidden_states: (batch, 1 + N, decoder_hidden) masked view; reference: (batch, 1 + M, decoder_hidden).
        Returns (hidden_states, (cross-attention weights, self-attention weights) or None)."""
        attended, cross_weights = self.cross_attention(hidden_states, reference, None, output_attentions)
        hidden_states = self.norm_cross(hidden_states + self.dropout(attended))
        # MLP applies its dropout after fc2 as well, which is the official dropout3 after the feed-forward
        hidden_states = self.norm_mlp(hidden_states + self.mlp(hidden_states))
        attended, self_weights = self.self_attention(hidden_states, None, output_attentions)
        hidden_states = self.norm_self(hidden_states + self.dropout(attended))
        return hidden_states, (cross_weights, self_weights) if output_attentions else None


class CropMAEDecoder(MAEDecoder):
    """MAE's decoder (embedding, mask token, sin-cos positions, final norm and pixel head) with its blocks replaced by
    :class:`CropMAEDecoderBlock` s that cross-attend to the reference view, as the official ``SiameseMAE`` overwrites
    MAE's ``decoder_blocks``."""

    def __init__(self, config: CropMAEConfig):
        super().__init__(config)
        self.decoder_layers = nn.ModuleList(CropMAEDecoderBlock(config) for _ in range(config.decoder_num_hidden_layers))

    def forward(self, latent, ids_restore, grid, reference_latent) -> torch.Tensor:
        """latent: (batch, 1 + kept, hidden) masked-view encoding; reference_latent: (batch, 1 + M, hidden) the
        reference view's full encoding (its encoder positions only: the official code adds no decoder positions to
        it). Returns logits (batch, N, patch_h * patch_w * channels) for the masked view."""
        hidden = self.embed(latent, ids_restore, grid)
        reference = self.decoder_embed(reference_latent)
        for block in self.decoder_layers:
            hidden, _ = block(hidden, reference)
        return self.decoder_pred(self.decoder_norm(hidden))[:, 1:]


class CropMAEModel(MAEModel):
    """The CropMAE ViT encoder (:class:`MAEModel`); loads the ``mae.*`` weights of a CropMAE pre-training
    checkpoint. Same inputs and outputs (one view; use ``mask_ratio=0.0`` for features)."""

    config_class = CropMAEConfig


class CropMAEForImageClassification(MAEForImageClassification):
    """A CropMAE encoder with MAE's fine-tuning classifier (no masking). Same inputs and outputs."""

    config_class = CropMAEConfig


class CropMAEForPreTraining(MAEForPreTraining):
    """Shared MAE encoder over two views + a decoder that reconstructs the masked view by cross-attending to the
    reference view. ``patchify``, ``unpatchify`` and ``reconstruct`` (of the masked view) are MAE's."""

    config_class = CropMAEConfig
    _no_split_modules = MAEForPreTraining._no_split_modules + ["CropMAEDecoderBlock"]

    def __init__(self, config: CropMAEConfig):
        MAEPreTrainedModel.__init__(self, config)
        self.mae = MAEModel(config)
        self.decoder = CropMAEDecoder(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        pixel_values_2: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """
        pixel_values: (batch, channels, H, W) the masked (local) view; ``noise``, ``mask_ratio`` and the returned
            ``mask`` / ``ids_restore`` refer to it, as in :meth:`MAEForPreTraining.forward`.
        pixel_values_2: (batch, channels, H2, W2) the reference (global) view of the same images, encoded unmasked;
            None: ``pixel_values`` serves as both views. H2, W2 may differ from H, W with ``interpolate_pos_encoding``.
        Returns MaskedPreTrainingOutput: the masked MSE ``loss`` of the masked view, ``logits`` (batch, N,
        patch_h * patch_w * channels), ``mask`` and ``ids_restore`` (batch, N); hidden states and attentions of the
        masked view's encoding.
        """
        encoded = self.mae(  # validates pixel_values
            pixel_values,
            noise=noise,
            mask_ratio=self.config.mask_ratio if mask_ratio is None else mask_ratio,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
            **kwargs,
        )
        reference = pixel_values if pixel_values_2 is None else pixel_values_2
        if not isinstance(reference, torch.Tensor):
            raise TypeError(f"pixel_values_2 must be a torch.Tensor (batch, channels, height, width), got {type(reference).__name__}")
        if reference.ndim != 4 or reference.shape[:2] != pixel_values.shape[:2]:
            raise ValueError(
                "pixel_values_2 must be (batch, channels, height, width) with the batch size and channels of "
                f"pixel_values {tuple(pixel_values.shape[:2])}, got shape {tuple(reference.shape)}"
            )
        reference_latent = self.mae(
            reference, mask_ratio=0.0, interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True
        ).last_hidden_state
        grid = self.mae.embeddings.patch_embeddings.grid_for(pixel_values, allow_other_size=True)
        logits = self.decoder(encoded.last_hidden_state, encoded.ids_restore, grid, reference_latent)
        # The target in float32 even under autocast, as MAE.
        target = pixel_target(pixel_values.float(), to_2tuple(self.config.patch_size), self.config.norm_pix_loss)
        output = MaskedPreTrainingOutput(
            loss=masked_mse(logits, target, encoded.mask),
            logits=logits,
            mask=encoded.mask,
            ids_restore=encoded.ids_restore,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
        )
        return output


__all__ = [
    "CropMAEConfig",
    "CropMAEModel",
    "CropMAEForPreTraining",
    "CropMAEForImageClassification",
    "CropMAEDecoder",
    "CropMAEDecoderBlock",
]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
from .presets import TINY, VIT  # noqa: E402

METHOD = dict(
    name="cropmae",
    paper=(
        "Efficient Image Pre-Training with Siamese Cropped Masked Autoencoders "
        "(Eymaël et al., ECCV 2024), arXiv:2403.17823"
    ),
    config_class=CropMAEConfig,
    model_classes={
        "base": CropMAEModel,
        "pretraining": CropMAEForPreTraining,
        "image-classification": CropMAEForImageClassification,
    },
    # pre-training views (official GlobalToLocal): a global crop (area 0.1-1) and a local crop of it (0.3-0.6)
    processor="TwoViewImageProcessor",
    processor_settings=dict(view_mode="global_to_local", crop_scale=[0.1, 1.0], local_crop_scale=[0.3, 0.6]),
    # alexandre-eymael/CropMAE GlobalToLocal: the processor's two views are the augmentation (seeded per sample)
    pretrain_augmentation="views",
    # scripts/train_cropmae_in.sh: blr 1e-4 at 128 images x 16 GPUs (4 nodes x 4) = 2048, betas (0.9, 0.95)
    pretrain_base_lr=1e-4, pretrain_batch=2048,
    presets={
        # mae-tiny's sizes; r = 1 - 2/64 keeps 2 of the 64 patches, as r = 0.985 keeps 2 of 196
        "cropmae-tiny": dict(TINY, mask_ratio=0.96875),
        # the official ViT-S/16 with its 256-d x 4 cross-attention decoder (FFN 2048), r = 0.985
        "cropmae-vit-small-patch16": dict(
            patch_size=16, decoder_hidden_size=256, decoder_num_hidden_layers=4, decoder_num_attention_heads=8,
            decoder_intermediate_size=2048, mask_ratio=0.985, **VIT["small"],
        ),
    },
)
