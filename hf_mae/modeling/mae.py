"""MAE: Masked Autoencoders Are Scalable Vision Learners (He et al., 2021).

The method in four steps, as in the paper's Section 3:
1. split the image into patches, embed them, add fixed 2D sin-cos positions;
2. hide a random ``mask_ratio`` of the patches; the ViT encoder sees only the visible ones (and a cls token);
3. a light decoder gets the encoded visible tokens plus a shared learned mask token at every hidden position
   (with its own sin-cos positions) and predicts the pixels of every patch;
4. the loss is the MSE on the hidden patches only, against per-patch normalised pixels (``norm_pix_loss``).

Numerically this matches transformers' ``ViTMAEForPreTraining`` (see ``hf-mae convert vit-mae``); the only
layout difference is a fused qkv projection, which is one matmul instead of three.

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

from typing import Unpack

import torch
from torch import nn
from transformers import initialization as init
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .base import MaskedModelPreTrainedModel, ViTDecoderMixin, ViTImageConfig, check_choice, check_int
from .embeddings import PatchEmbedding2D, interpolate_pos_embed, sincos_2d, to_2tuple
from .heads import ImageClassifierMixin
from .layers import Attention, TransformerBlock, build_blocks, build_encoder_blocks, run_blocks
from .losses import masked_mse
from .masking import (
    build_mask_generator,
    check_mask_ratio,
    feature_mask_ratio,
    gather_tokens,
    mask_from_noise,
    restore_tokens,
)
from .outputs import MaskedEncoderOutput, MaskedPreTrainingOutput, pool_tokens
from .quantization import COMMITMENT_LOSS_WEIGHT, QUANTIZATION_LOSS_WEIGHT, LatentQuantizer
from .targets import patch_statistics, patchify, pixel_target, unpatchify

MAEModelOutput = MaskedEncoderOutput
MAEForPreTrainingOutput = MaskedPreTrainingOutput


class MAEConfig(ViTImageConfig, ViTDecoderMixin):
    r"""Configuration of an MAE model. Defaults are the paper's ViT-B/16 with its 512-d, 8-block decoder.

    The ViT encoder's fields (image and patch size, width, depth, heads, dropouts, ...) are :class:`ViTImageConfig`'s
    and the decoder's (``decoder_*``) :class:`ViTDecoderMixin`'s; both widths must be divisible by 4 (2D sin-cos
    positions). Besides:
    layer_scale_init_value: LayerScale of the encoder blocks (0 = off).
    mask_ratio: fraction of patches hidden from the encoder during pre-training, in [0, 1).
    mask_generator: name of the mask generator (see ``masking.MASK_GENERATORS``).
    norm_pix_loss: regress per-patch normalised pixels (the paper's best setting).
    classifier_pooling: "mean" (global average pool + fc_norm, MAE fine-tuning) or "cls".
    latent_quantization: quantise the encoder's output before the decoder with QLAE's bottleneck
        (``quantization.LatentQuantizer``: a learnable scalar codebook per feature, nearest value, straight-through
        gradient; its quantisation and commitment terms join the loss with QLAE's weights, 0.01 each). hf-mae's
        option, not in the MAE paper; MAE's own class only (the variants' forwards do not apply it). Default False.
    num_latent_values: values in each feature's codebook when ``latent_quantization`` (QLAE's 10).
    """

    model_type = "mae"

    layer_scale_init_value: float = 0.0
    mask_ratio: float = 0.75
    mask_generator: str = "random"
    norm_pix_loss: bool = True
    classifier_pooling: str = "mean"
    latent_quantization: bool = False
    num_latent_values: int = 10

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if not isinstance(self.latent_quantization, bool):
            raise ValueError(f"latent_quantization must be True or False, got {self.latent_quantization!r}")
        if self.latent_quantization:
            check_int("num_latent_values", self.num_latent_values, minimum=2)
            if type(self).model_type != MAEConfig.model_type:
                raise ValueError(
                    f"latent_quantization=True is offered by MAE (model_type 'mae') only, not by "
                    f"{type(self).__name__}: its forward would not apply the quantiser"
                )
        for name in ("hidden_size", "decoder_hidden_size"):
            if getattr(self, name) % 4:
                raise ValueError(f"{name} {getattr(self, name)} must be divisible by 4 (2D sin-cos positions)")
        check_mask_ratio(self.mask_ratio)
        check_choice("classifier_pooling", self.classifier_pooling, ("mean", "cls"))

    def mask_generator_kwargs(self) -> dict:
        """Constructor arguments of ``mask_generator``; a method whose generator has options overrides this."""
        return {}


class MAEEmbeddings(nn.Module):
    """Patch embedding + fixed sin-cos positions + cls token. The position table is a buffer (1, 1 + N, hidden)."""

    def __init__(self, config: MAEConfig):
        super().__init__()
        self.config = config
        self.patch_embeddings = PatchEmbedding2D(
            config.image_size, config.patch_size, config.num_channels, config.hidden_size
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        table = sincos_2d(self.patch_embeddings.grid_size, config.hidden_size, cls_token=True)
        self.register_buffer("position_embeddings", table.unsqueeze(0))

    def positions(self, grid) -> torch.Tensor:
        """Position table (1, 1 + rows*cols, hidden) for a patch grid, interpolated if it is not the native one."""
        # in the weights' dtype: the fixed table stays float32 when a model is loaded in half precision
        table = self.position_embeddings.to(self.cls_token.dtype)
        if tuple(grid) == self.patch_embeddings.grid_size:
            return table
        patch_pos = interpolate_pos_embed(table[:, 1:], self.patch_embeddings.grid_size, grid)
        return torch.cat([table[:, :1], patch_pos], dim=1)

    def forward(self, pixel_values, grid) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (patch tokens (batch, N, hidden) with positions, cls token (batch, 1, hidden) with position)."""
        positions = self.positions(grid)
        patches = self.patch_embeddings(pixel_values) + positions[:, 1:]
        cls = (self.cls_token + positions[:, :1]).expand(patches.shape[0], -1, -1)
        return patches, cls


class MAEDecoder(nn.Module):
    """Light transformer that fills hidden positions with the mask token and predicts every patch's pixels."""

    def __init__(self, config: MAEConfig):
        super().__init__()
        self.config = config
        self.grid_size = config.grid_size
        patch = to_2tuple(config.patch_size)
        self.decoder_embed = nn.Linear(config.hidden_size, config.decoder_hidden_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.decoder_hidden_size))
        table = sincos_2d(self.grid_size, config.decoder_hidden_size, cls_token=True)
        self.register_buffer("decoder_pos_embed", table.unsqueeze(0))
        self.decoder_layers = build_blocks(config, config.decoder_num_hidden_layers, **config.decoder_block_kwargs())
        self.decoder_norm = nn.LayerNorm(config.decoder_hidden_size, eps=config.layer_norm_eps)
        self.decoder_pred = nn.Linear(config.decoder_hidden_size, patch[0] * patch[1] * config.num_channels)

    def positions(self, grid) -> torch.Tensor:
        """Decoder position table (1, 1 + rows*cols, decoder_hidden), interpolated if ``grid`` is not the native one."""
        positions = self.decoder_pos_embed.to(self.mask_token.dtype)  # float32 table, half-precision weights
        if tuple(grid) != tuple(self.grid_size):
            patch_pos = interpolate_pos_embed(positions[:, 1:], self.grid_size, grid)
            positions = torch.cat([positions[:, :1], patch_pos], dim=1)
        return positions

    def embed(self, latent, ids_restore, grid) -> torch.Tensor:
        """The decoder's input: latent (batch, 1 + kept, hidden) -> (batch, 1 + N, decoder_hidden), mask tokens at the
        hidden positions, tokens in their original order, positions added."""
        hidden = self.decoder_embed(latent)
        tokens = restore_tokens(hidden[:, 1:], self.mask_token, ids_restore)
        return torch.cat([hidden[:, :1], tokens], dim=1) + self.positions(grid)

    def forward(self, latent, ids_restore, grid) -> torch.Tensor:
        """latent: (batch, 1 + kept, hidden) encoder output -> logits (batch, N, patch_h * patch_w * channels)."""
        return self.predict(self.embed(latent, ids_restore, grid))

    def predict(self, decoder_input: torch.Tensor) -> torch.Tensor:
        """Decoder blocks and head: (batch, 1 + N, decoder_hidden) from :meth:`embed` -> logits (batch, N, patch dim)."""
        hidden, _, _ = run_blocks(self.decoder_layers, decoder_input)
        # Predict every row, then drop the cls one: slicing before the norm would copy (batch, N, decoder_hidden).
        return self.decoder_pred(self.decoder_norm(hidden))[:, 1:]


class MAEPreTrainedModel(MaskedModelPreTrainedModel):
    config_class = MAEConfig
    base_model_prefix = "mae"
    input_modalities = ("image",)
    _no_split_modules = ["TransformerBlock", "MAEEmbeddings"]

    @torch.no_grad()
    def _init_weights(self, module):
        """MAE's initialisation: xavier-uniform linears (and patch projection), N(0, 0.02) tokens, sin-cos tables."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, MAEEmbeddings):
            init.normal_(module.cls_token, std=std)
            grid = module.patch_embeddings.grid_size
            init.copy_(module.position_embeddings, sincos_2d(grid, module.cls_token.shape[-1], cls_token=True)[None])
        elif isinstance(module, MAEDecoder):
            init.normal_(module.mask_token, std=std)
            table = sincos_2d(module.grid_size, module.mask_token.shape[-1], cls_token=True)
            init.copy_(module.decoder_pos_embed, table[None])
        else:
            super()._init_weights(module)  # norms, LayerScale, the patch projection


class MAEModel(MAEPreTrainedModel):
    """The MAE ViT encoder. With masking it encodes the visible patches; with ``mask_ratio=0`` it is a plain ViT.

    ``add_final_norm=False`` leaves out the last LayerNorm: MAE's mean-pooling classifier replaces it by ``fc_norm``
    after pooling.
    """

    # transformers' output capture: hidden states from the blocks, attention weights from their attention modules
    _can_record_outputs = {"hidden_states": TransformerBlock, "attentions": Attention}

    def __init__(self, config: MAEConfig, add_final_norm: bool = True):
        super().__init__(config)
        self.embeddings = MAEEmbeddings(config)
        self.layers = build_encoder_blocks(config)
        self.layernorm = (
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if add_final_norm else nn.Identity()
        )
        self.mask_generator = build_mask_generator(config.mask_generator, **config.mask_generator_kwargs())
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embeddings

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """
        pixel_values: (batch, channels, height, width) float.
        noise: (batch, num_patches), optional. Fixes the mask: patches are sorted by ascending noise and the first
            ``int(num_patches * (1 - mask_ratio))`` are kept, exactly as ViTMAE; the encoder sees them in that order.
        mask_ratio: default 0.0 (``config.mask_ratio`` with ``noise``): a plain call encodes every patch in its
            original order, the same features on every call. Pre-training passes ``config.mask_ratio``.
        interpolate_pos_encoding: allow other image sizes than ``config.image_size`` (positions are interpolated).
        output_hidden_states, output_attentions, return_dict: as in transformers (captured from the blocks).
        Returns MAEModelOutput with last_hidden_state (batch, 1 + kept, hidden), mask and ids_restore (batch, N),
        pooler_output (batch, hidden): the mean of the patch tokens (the cls token with ``classifier_pooling="cls"``).
        """
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        grid = self.embeddings.patch_embeddings.grid_for(pixel_values, allow_other_size=interpolate_pos_encoding)
        mask_ratio = feature_mask_ratio(mask_ratio, self.config, noise)

        patches, cls = self.embeddings(pixel_values, grid)
        batch, num_patches, _ = patches.shape
        if noise is not None:
            if tuple(noise.shape) != (batch, num_patches):
                raise ValueError(f"noise must have shape (batch, num_patches) = {(batch, num_patches)}, got {tuple(noise.shape)}")
            token_mask = mask_from_noise(noise.to(patches.device), mask_ratio)
        else:
            token_mask = self.mask_generator(batch, num_patches, mask_ratio, grid, patches.device)
        if mask_ratio > 0.0 or noise is not None:  # with nothing masked and no noise the order is the identity
            patches = gather_tokens(patches, token_mask.ids_keep)

        hidden, _, _ = run_blocks(self.layers, torch.cat([cls, patches], dim=1))
        hidden = self.layernorm(hidden)
        return MAEModelOutput(
            last_hidden_state=hidden,
            mask=token_mask.mask,
            ids_restore=token_mask.ids_restore,
            pooler_output=pool_tokens(hidden, self.config.classifier_pooling),
        )


class MAEForPreTraining(MAEPreTrainedModel):
    """MAE encoder + decoder with the masked pixel-reconstruction loss; with ``config.latent_quantization`` a
    :class:`~quantization.LatentQuantizer` (``latent_quantizer``) between them."""

    def __init__(self, config: MAEConfig):
        super().__init__(config)
        self.mae = MAEModel(config)
        self.decoder = MAEDecoder(config)
        self.latent_quantizer = (
            LatentQuantizer(config.hidden_size, config.num_latent_values)
            if getattr(config, "latent_quantization", False) else None
        )  # fmt: skip
        self.post_init()

    def quantize_latent(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The decoder's input from the encoder's output (batch, 1 + kept, hidden): as it is, or quantised per feature
        (straight-through) when ``config.latent_quantization``; with the weighted quantisation + commitment terms
        (None without quantisation)."""
        if self.latent_quantizer is None:
            return latent, None
        out = self.latent_quantizer(latent)
        return out.quantized, QUANTIZATION_LOSS_WEIGHT * out.quantization_loss + COMMITMENT_LOSS_WEIGHT * out.commitment_loss

    def patchify(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(batch, channels, H, W) -> (batch, N, patch_h * patch_w * channels)."""
        return patchify(pixel_values, to_2tuple(self.config.patch_size))

    def unpatchify(self, patches: torch.Tensor, image_size=None) -> torch.Tensor:
        """(batch, N, patch_h * patch_w * channels) -> (batch, channels, H, W); ``image_size`` defaults to the config's."""
        patch = to_2tuple(self.config.patch_size)
        height, width = to_2tuple(image_size if image_size is not None else self.config.image_size)
        return unpatchify(patches, patch, (height // patch[0], width // patch[1]), self.config.num_channels)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """Same inputs as :meth:`MAEModel.forward`, masking ``config.mask_ratio`` by default. Returns
        MAEForPreTrainingOutput with the masked MSE ``loss``, ``logits`` (batch, N, patch_h * patch_w * channels) in
        the normalised-pixel space when ``norm_pix_loss``, ``mask`` and ``ids_restore``."""
        encoded = self.mae(
            pixel_values,
            noise=noise,
            mask_ratio=self.config.mask_ratio if mask_ratio is None else mask_ratio,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
            **kwargs,
        )
        grid = self.mae.embeddings.patch_embeddings.grid_for(pixel_values, allow_other_size=True)
        latent, quantization_terms = self.quantize_latent(encoded.last_hidden_state)
        logits = self.decoder(latent, encoded.ids_restore, grid)
        # The target in float32 even under autocast: per-patch normalisation in bf16 would blur it.
        target = pixel_target(pixel_values.float(), to_2tuple(self.config.patch_size), self.config.norm_pix_loss)
        loss = masked_mse(logits, target, encoded.mask)
        return MAEForPreTrainingOutput(
            loss=loss if quantization_terms is None else loss + quantization_terms,
            logits=logits,
            mask=encoded.mask,
            ids_restore=encoded.ids_restore,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
        )

    @torch.no_grad()
    def reconstruct(self, pixel_values: torch.Tensor, output) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Images from a pre-training output, in the processor's (normalised) pixel space.

        Returns ``(masked_input, reconstruction, pasted)``, each (batch, channels, H, W): the input with hidden
        patches zeroed, the decoder's prediction of every patch (norm-pix undone with each patch's own mean and
        std, as the MAE demo does), and the prediction with the visible patches pasted back from the input.
        """
        patch = to_2tuple(self.config.patch_size)
        patches = patchify(pixel_values.to(output.logits.dtype), patch)
        prediction = output.logits
        if self.config.norm_pix_loss:
            mean, std = patch_statistics(patches)
            prediction = prediction * std + mean
        hidden = output.mask.unsqueeze(-1).to(patches.dtype)
        size = pixel_values.shape[-2:]
        masked_input = self.unpatchify(patches * (1 - hidden), size)
        reconstruction = self.unpatchify(prediction, size)
        pasted = self.unpatchify(patches * (1 - hidden) + prediction * hidden, size)
        return masked_input, reconstruction, pasted


class MAEForImageClassification(ImageClassifierMixin, MAEPreTrainedModel):
    """MAE encoder (no masking) + linear classifier, pooled as MAE fine-tunes: global average of the tokens before
    the final norm, then fc_norm (``classifier_pooling="mean"``), or the normalised cls token ("cls")."""

    def __init__(self, config: MAEConfig):
        super().__init__(config)
        # As MAE fine-tunes: mean pooling averages the un-normalised tokens and normalises after (fc_norm).
        self.mae = MAEModel(config, add_final_norm=config.classifier_pooling == "cls")
        self.build_classifier(config)
        self.post_init()


__all__ = [
    "MAEConfig",
    "MAEPreTrainedModel",
    "MAEModel",
    "MAEForPreTraining",
    "MAEForImageClassification",
    "MAEModelOutput",
    "MAEForPreTrainingOutput",
]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
from .presets import TINY, VIT  # noqa: E402

METHOD = dict(
    name="mae",
    paper="Masked Autoencoders Are Scalable Vision Learners (He et al., 2021), arXiv:2111.06377",
    config_class=MAEConfig,
    model_classes={
        "base": MAEModel, "pretraining": MAEForPreTraining, "image-classification": MAEForImageClassification,
    },
    processor="MAEImageProcessor",
    # facebookresearch/mae main_pretrain.py: RandomResizedCrop(scale=(0.2, 1.0), interpolation=3 (bicubic)),
    # torchvision's ratio (3/4, 4/3), RandomHorizontalFlip() (hf_mae.training.augmentation)
    pretrain_augmentation=dict(crop_scale=(0.2, 1.0), crop_ratio=(3 / 4, 4 / 3), resample="bicubic", flip_probability=0.5),
    # the paper's recipe (Appendix A.1): blr 1.5e-4 per 256 images at batch 4096, AdamW betas (0.9, 0.95)
    pretrain_base_lr=1.5e-4, pretrain_batch=4096,
    presets={
        "mae-tiny": dict(TINY),
        "mae-vit-base-patch16": dict(patch_size=16, **VIT["base"]),
        "mae-vit-large-patch16": dict(patch_size=16, **VIT["large"]),
        "mae-vit-huge-patch14": dict(patch_size=14, **VIT["huge"]),
    },
    exports=["MAEPreTrainedModel", "MAEModelOutput", "MAEForPreTrainingOutput"],  # further names for hf_mae
)
