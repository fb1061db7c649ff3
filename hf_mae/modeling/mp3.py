"""MP3: Position Prediction as an Effective Pretraining Strategy (Zhai et al., ICML 2022).

MP3 ("masked position prediction pre-training") replaces content reconstruction by a jigsaw-like pretext task:
1. the image is cut into patches and embedded **without any position embedding**, so a token knows only its content;
2. a random ``1 - mask_ratio`` subset of the patches is the *context*; in every transformer block every token (as a
   query) attends only to the context tokens (as keys and values): key masking, done with an additive attention mask
   so that every attention kernel (eager, sdpa, ...) computes the same thing;
3. a LayerNorm + Linear head classifies each token's output among the ``num_patches`` positions of the grid; the
   loss is the cross-entropy over the position of **every** token, context or not.
A non-context token thus sees only itself and the context, so it has to place its own content relative to a sparse
set of unplaced pieces. ``mask_ratio=0`` switches key masking off (the paper's eta = 0): every token sees all others.

Fine-tuning (as the paper): the position classifier is discarded and learned absolute position embeddings,
initialised to zero (so fine-tuning starts from the pre-trained function), are added to the patch tokens; attention
is full. ``MP3ForImageClassification`` builds them when ``config.finetune_position_embeddings`` (default True);
``MP3Model`` (``AutoModel``: features, probes) is the position-free pre-training encoder.

Differences from the unofficial lucidrains/vit-pytorch ``mp3.py`` (no official code was released): the patch
embedding is the ViT/DeiT convolution the paper uses (not LayerNorm -> Linear -> LayerNorm); keys are masked
inside self-attention rather than computed by a cross-attention over the gathered context (the same attention
weights on the context, but every key is projected); a cls token is kept (always a context token: it carries no
position, and it gives the shared classifier its "cls" pooling); the head's LayerNorm is the encoder's final norm.

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

from typing import Unpack

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .base import MaskedModelPreTrainedModel, ViTImageConfig, check_choice
from .embeddings import PatchEmbedding2D, interpolate_pos_embed
from .heads import ImageClassifierMixin
from .layers import Attention, TransformerBlock, build_encoder_blocks, run_blocks
from .masking import RandomMaskGenerator, check_mask_ratio, feature_mask_ratio, mask_from_noise
from .outputs import MaskedEncoderOutput, MaskedPreTrainingOutput, pool_tokens

MP3ModelOutput = MaskedEncoderOutput
MP3ForPreTrainingOutput = MaskedPreTrainingOutput


class MP3Config(ViTImageConfig):
    r"""Configuration of an MP3 ViT. Defaults are the paper's ImageNet ViT-B/16 (DeiT sizes, 224 px).

    The ViT's fields are :class:`ViTImageConfig`'s (DeiT/timm: gelu, qkv bias, eps 1e-6, no dropout, truncated-normal
    init with std 0.02). The position classifier has one class per patch of the ``image_size`` / ``patch_size`` grid,
    so pre-training runs at this size only. Besides:
    layer_scale_init_value: LayerScale of the encoder blocks (0 = off).
    mask_ratio: the paper's eta, the fraction of patches that are *not* context (keys masked away from every query);
        0.75 as the paper's ImageNet runs and the unofficial replications; 0 switches key masking off.
    finetune_position_embeddings: the classifier adds learned, zero-initialised absolute position embeddings to the
        patch tokens (the paper's fine-tuning); False fine-tunes position-free as pre-trained.
    classifier_pooling: "cls" (the normalised cls token, DeiT fine-tuning, the paper's code base) or "mean"
        (average of the tokens, then fc_norm).
    """

    model_type = "mp3"

    layer_scale_init_value: float = 0.0
    mask_ratio: float = 0.75
    finetune_position_embeddings: bool = True
    classifier_pooling: str = "cls"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_mask_ratio(self.mask_ratio)
        check_choice("classifier_pooling", self.classifier_pooling, ("mean", "cls"))

    @property
    def num_positions(self) -> int:
        """Classes of the position classifier: the patches of the pre-training grid."""
        rows, cols = self.grid_size
        return rows * cols


def context_attention_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive attention mask that lets every query see only the context keys.

    mask: (batch, num_patches), 1 = not a context token. Returns (batch, 1, 1, 1 + num_patches): 0 for the cls token
    (always context) and the context patches, the dtype's most negative value elsewhere, so that the softmax gives
    those keys exactly zero weight (a finite value: -inf would turn a fully masked row into NaN).
    """
    hidden = torch.cat([torch.zeros_like(mask[:, :1]), mask], dim=1).bool()
    additive = torch.zeros(hidden.shape, dtype=dtype, device=mask.device).masked_fill(hidden, torch.finfo(dtype).min)
    return additive[:, None, None, :]


def position_accuracy(logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Top-1 accuracy of position logits (batch, num_patches, num_patches) against each token's true position.

    ``mask`` (batch, num_patches): if given, only the tokens where it is 1 (the non-context ones) count.
    """
    correct = (logits.argmax(-1) == torch.arange(logits.shape[1], device=logits.device)).float()
    if mask is None:
        return correct.mean()
    mask = mask.to(correct.dtype)
    return (correct * mask).sum() / mask.sum().clamp_min(1.0)


class MP3Embeddings(nn.Module):
    """Patch embedding + cls token, no positions; the fine-tuning encoder adds learned positions (zero-initialised).

    ``position_embeddings`` (1, 1 + N, hidden), when built, is interpolated for other grids.
    """

    def __init__(self, config: MP3Config, use_position_embeddings: bool = False):
        super().__init__()
        self.patch_embeddings = PatchEmbedding2D(
            config.image_size, config.patch_size, config.num_channels, config.hidden_size
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embeddings = None
        if use_position_embeddings:
            num_positions = 1 + self.patch_embeddings.num_patches
            self.position_embeddings = nn.Parameter(torch.zeros(1, num_positions, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, pixel_values, grid) -> torch.Tensor:
        """pixel_values (batch, C, H, W) -> tokens (batch, 1 + N, hidden): cls first, patches in row-major order."""
        patches = self.patch_embeddings(pixel_values)
        tokens = torch.cat([self.cls_token.expand(patches.shape[0], -1, -1).to(patches.dtype), patches], dim=1)
        if self.position_embeddings is not None:
            positions = self.position_embeddings
            if tuple(grid) != self.patch_embeddings.grid_size:
                patch_pos = interpolate_pos_embed(positions[:, 1:], self.patch_embeddings.grid_size, grid)
                positions = torch.cat([positions[:, :1], patch_pos], dim=1)
            tokens = tokens + positions
        return self.dropout(tokens)


class MP3PreTrainedModel(MaskedModelPreTrainedModel):
    config_class = MP3Config
    base_model_prefix = "mp3"
    input_modalities = ("image",)
    _no_split_modules = ["TransformerBlock", "MP3Embeddings"]
    _supports_flash_attn = False  # its kernels take no additive attention mask, which key masking needs
    _supports_flex_attn = False

    @torch.no_grad()
    def _init_weights(self, module):
        """DeiT's initialisation (the paper's code base): truncated N(0, 0.02) linears, convs and cls token; the
        fine-tuning position embeddings start at zero."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, MP3Embeddings):
            init.trunc_normal_(module.cls_token, mean=0.0, std=std)
            if module.position_embeddings is not None:
                init.zeros_(module.position_embeddings)
        else:
            super()._init_weights(module)  # norms, LayerScale


class MP3Model(MP3PreTrainedModel):
    """The MP3 ViT encoder: every token goes in, in order, without positions; non-context tokens are masked as keys.

    ``add_final_norm=False`` leaves out the last LayerNorm (the mean-pooling classifier normalises after pooling);
    ``use_position_embeddings=True`` adds the fine-tuning position embeddings.
    """

    # transformers' output capture: hidden states from the blocks, attention weights from their attention modules
    _can_record_outputs = {"hidden_states": TransformerBlock, "attentions": Attention}

    def __init__(self, config: MP3Config, add_final_norm: bool = True, use_position_embeddings: bool = False):
        super().__init__(config)
        self.embeddings = MP3Embeddings(config, use_position_embeddings)
        self.layers = build_encoder_blocks(config)
        self.layernorm = (
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if add_final_norm else nn.Identity()
        )
        self.mask_generator = RandomMaskGenerator()
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
        noise: (batch, num_patches), optional. Fixes the context: the ``int(num_patches * (1 - mask_ratio))``
            patches with the smallest noise are the context, as MAE's kept patches.
        mask_ratio: default 0.0 (``config.mask_ratio`` with ``noise``): every patch is context (full attention), the
            same features on every call. Pre-training passes ``config.mask_ratio``.
        interpolate_pos_encoding: allow other image sizes than ``config.image_size`` (the fine-tuning positions
            are interpolated; the pre-training encoder has none).
        Returns MP3ModelOutput: last_hidden_state (batch, 1 + num_patches, hidden), every token in order; mask
        (batch, num_patches), 1 = not a context token; ids_restore None (tokens are never reordered);
        attentions (batch, heads, 1 + N, 1 + N) with zero weight on non-context keys (captured from the blocks, as
        the hidden states); pooler_output (batch, hidden): the cls token (the mean of the patch tokens with
        ``classifier_pooling="mean"``).
        """
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        grid = self.embeddings.patch_embeddings.grid_for(pixel_values, allow_other_size=interpolate_pos_encoding)
        mask_ratio = feature_mask_ratio(mask_ratio, self.config, noise)

        tokens = self.embeddings(pixel_values, grid)
        batch, num_patches = tokens.shape[0], tokens.shape[1] - 1
        if noise is not None:
            if not isinstance(noise, torch.Tensor) or tuple(noise.shape) != (batch, num_patches):
                got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
                raise ValueError(f"noise must have shape (batch, num_patches) = {(batch, num_patches)}, got {got}")
            mask = mask_from_noise(noise.to(tokens.device), mask_ratio).mask
        else:
            mask = self.mask_generator(batch, num_patches, mask_ratio, grid, tokens.device).mask
        # With every patch in the context (mask_ratio 0) no mask is needed: sdpa then runs its unmasked kernel.
        attention_mask = context_attention_mask(mask, tokens.dtype) if mask_ratio > 0.0 else None

        hidden, _, _ = run_blocks(self.layers, tokens, attention_mask)
        hidden = self.layernorm(hidden)
        return MP3ModelOutput(
            last_hidden_state=hidden, mask=mask, pooler_output=pool_tokens(hidden, self.config.classifier_pooling)
        )


class MP3ForPreTraining(MP3PreTrainedModel):
    """MP3 encoder + position classifier (the encoder's final LayerNorm, then a Linear to ``num_positions``) with
    the cross-entropy over every token's position."""

    def __init__(self, config: MP3Config):
        super().__init__(config)
        self.mp3 = MP3Model(config)
        self.position_classifier = nn.Linear(config.hidden_size, config.num_positions)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """Same inputs as :meth:`MP3Model.forward`, at ``config.image_size`` only. Returns MP3ForPreTrainingOutput
        with the position cross-entropy ``loss``, ``logits`` (batch, num_patches, num_patches): row i scores where
        patch i is, ``mask`` (batch, num_patches), 1 = not a context token."""
        if pixel_values is not None:  # the encoder reports a missing or malformed pixel_values itself
            patch_embeddings = self.mp3.embeddings.patch_embeddings
            grid = patch_embeddings.grid_for(pixel_values, allow_other_size=interpolate_pos_encoding)
            if tuple(grid) != patch_embeddings.grid_size:
                height, width = patch_embeddings.image_size
                raise ValueError(
                    f"MP3 pre-training classifies each patch among the {self.config.num_positions} positions of the "
                    f"config's image_size {height}x{width}; pixel_values of size {tuple(pixel_values.shape[-2:])} has "
                    f"a {grid[0]}x{grid[1]} patch grid, whose positions the classifier cannot name. Resize the images "
                    "(the encoder alone, MP3Model, accepts other sizes with interpolate_pos_encoding=True)"
                )
        encoded = self.mp3(
            pixel_values,
            noise=noise,
            mask_ratio=self.config.mask_ratio if mask_ratio is None else mask_ratio,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
            **kwargs,
        )
        logits = self.position_classifier(encoded.last_hidden_state[:, 1:])
        batch, num_patches, _ = logits.shape
        positions = torch.arange(num_patches, device=logits.device).repeat(batch)
        loss = F.cross_entropy(logits.reshape(-1, num_patches).float(), positions)
        output = MP3ForPreTrainingOutput(
            loss=loss,
            logits=logits,
            mask=encoded.mask,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
        )
        return output


class MP3ForImageClassification(ImageClassifierMixin, MP3PreTrainedModel):
    """MP3 encoder (full attention) + linear classifier, fine-tuned as the paper: learned absolute position
    embeddings, zero-initialised, are added (``finetune_position_embeddings``); pooled by the normalised cls token
    (``classifier_pooling="cls"``) or the mean of the tokens + fc_norm ("mean")."""

    def __init__(self, config: MP3Config):
        super().__init__(config)
        self.mp3 = MP3Model(
            config,
            add_final_norm=config.classifier_pooling == "cls",
            use_position_embeddings=config.finetune_position_embeddings,
        )
        self.build_classifier(config)
        self.post_init()


__all__ = [
    "MP3Config",
    "MP3PreTrainedModel",
    "MP3Model",
    "MP3ForPreTraining",
    "MP3ForImageClassification",
    "MP3ModelOutput",
    "MP3ForPreTrainingOutput",
    "context_attention_mask",
    "position_accuracy",
]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
from .presets import TINY_ENCODER, VIT  # noqa: E402

METHOD = dict(
    name="mp3",
    paper="Position Prediction as an Effective Pretraining Strategy (Zhai et al., ICML 2022), arXiv:2207.07611",
    config_class=MP3Config,
    model_classes={
        "base": MP3Model, "pretraining": MP3ForPreTraining, "image-classification": MP3ForImageClassification,
    },
    processor="MAEImageProcessor",
    # no official code (see the method card): MAE's crop + flip, the row's default for image methods [unverified]
    pretrain_augmentation=dict(crop_scale=(0.2, 1.0), resample="bicubic"),
    # no official code and no recipe read: MAE's blr 1.5e-4 at 4096 (hf-mae's choice [unverified])
    pretrain_base_lr=1.5e-4, pretrain_batch=4096,
    presets={
        # mae-tiny's encoder (no decoder): 64 positions to classify, 16 context patches at eta = 0.75
        "mp3-tiny": dict(TINY_ENCODER),
        # the paper's ImageNet ViT-S/16 and ViT-B/16 (DeiT sizes), eta = 0.75
        "mp3-vit-small-patch16": dict(patch_size=16, **VIT["small"]),
        "mp3-vit-base-patch16": dict(patch_size=16, **VIT["base"]),
    },
)
