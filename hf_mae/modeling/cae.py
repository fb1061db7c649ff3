"""CAE: Context Autoencoder for Self-Supervised Representation Learning (Chen et al., IJCV 2023), arXiv:2202.03026.

The method, as in the paper's Section 3 and the official code (Atten4Vis/CAE, ``models/modeling_cae.py``):
1. the image is split into patches; a block-wise mask (BEiT's generator: 50 %, rectangles of at least 16 patches)
   splits them into visible and masked ones;
2. the **encoder** (a ViT with LayerScale, fixed sin-cos positions) sees the cls token and the visible patches only;
3. the **latent contextual regressor**, a stack of cross-attention blocks, predicts the latents of the masked patches:
   its queries are a shared mask token at the masked positions (plus their positions), its keys
   ``LN(cat[visible latents, queries] + positions)`` and its values ``LN(cat[visible latents, queries])`` (no
   positions); the visible latents are never updated by it;
4. the **decoder**, a few ViT blocks over the *predicted masked latents only* (plus their positions), maps them to the
   target of each masked patch: tokenizer codes (cross-entropy) or normalised pixels (MSE);
5. the **alignment** term pulls the regressor's predictions towards the encoder's own latents of the masked patches,
   computed by the encoder on the masked patches without gradients (its cls output dropped);
   ``loss = L_target + align_loss_weight * MSE(prediction, alignment latents)``, ``align_loss_weight`` 2.

Departures from the paper / official code:
- Targets are pluggable (``config.target``): ``"tokenizer"`` takes any frozen tokenizer passed as
  ``CAEForPreTraining(config, tokenizer=...)`` (DALL-E's in the paper), by default a tiny random VQ tokenizer built
  from the config (``targets.VQTokenizer``: DALL-E's weights cannot be fetched here); ``"pixels"`` regresses per-patch
  normalised pixels (MSE over the masked patches). The tokenizer sees the model's input view; the official code feeds
  DALL-E a second, 112-px view of the same crop (DALL-E's 8x downsampling then lands on the 14x14 patch grid). A
  tokenizer must return one code per patch of the model's grid.
- The alignment encoder is the encoder module itself, called under ``torch.no_grad``: the official code keeps a
  second copy whose weights are re-assigned from the encoder's after every forward (``param.data = encoder.data``,
  shared storage from the first step on), which is the same function as the encoder at every step; no copy is kept
  and nothing extra is saved.
- Masks come from ``masking.BlockMaskGenerator``, which reaches the exact count in bounded time (see
  ``masking.block_mask``) instead of CAE's unbounded retry loop; ``mask_generator="random"`` and a fixed ``noise`` (the
  MAE convention) work too.
- The regressor's / decoder's LayerScale of 0 is no scale (the official code then multiplies by frozen ones: the
  same function).

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Unpack

import torch
from torch import nn
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .base import MaskedModelPreTrainedModel, check_choice, check_int
from .embeddings import PatchProjection, interpolate_pos_embed, sincos_2d, to_2tuple
from .heads import ImageClassifierMixin
from .layers import MLP, Attention, CrossAttention, DropPath, LayerScale, TransformerBlock, build_blocks
from .layers import build_encoder_blocks, run_blocks
from .losses import masked_mse
from .mae import MAEConfig, MAEEmbeddings
from .masking import (
    MASK_GENERATORS,
    TokenMask,
    build_mask_generator,
    feature_mask_ratio,
    gather_tokens,
    mask_from_bool,
    mask_from_noise,
)
from .outputs import MaskedEncoderOutput, pool_tokens
from .targets import VQTokenizer, pixel_target, tokenizer_target
from .teachers import FrozenTeacherMixin

CAEModelOutput = MaskedEncoderOutput
CAE_TARGETS = ("tokenizer", "pixels")


class CAEConfig(MAEConfig):
    r"""Configuration of a CAE model. Defaults are the official ViT-B/16 recipe (``scripts/cae_base_800e.sh``).

    The encoder's fields are :class:`ViTImageConfig`'s; ``decoder_hidden_size`` / ``decoder_num_attention_heads`` /
    ``decoder_intermediate_size`` are the width, heads and MLP width of the regressor *and* the decoder (the official
    ``decoder_embed_dim`` / ``decoder_num_heads``, MLP ratio 4), ``decoder_num_hidden_layers`` the decoder's depth (4).
    When the widths differ, a Linear + LayerNorm maps encoder latents (and alignment latents) to the regressor's width
    (official). ``qkv_bias`` gives every attention (encoder, regressor, decoder) learned query and value biases and
    no key bias, as the official BEiT-style attention. The regressor and the decoder share the encoder's
    ``drop_path_rate`` (rising over their own depth) and dropouts, as the official code. Besides MAE's fields
    (``layer_scale_init_value`` 0.1 here: the encoder's LayerScale; ``mask_ratio`` 0.5; ``mask_generator`` "block";
    ``norm_pix_loss`` for the pixel target; ``classifier_pooling``):

    mask_min_patches_per_block, mask_max_patches_per_block: the block generator's least and largest rectangle, in
        patches (16 and None = the masked count, official).
    mask_min_aspect, mask_max_aspect: its aspect-ratio range (0.3 and None = 1 / 0.3, official).
    regressor_num_hidden_layers: cross-attention blocks of the latent contextual regressor (4).
    decoder_layer_scale_init_value: LayerScale of the regressor's and decoder's blocks (0.1 for base, 1e-5 for large;
        0 = none).
    align_loss_weight: weight of the alignment MSE (2, official).
    target: "tokenizer" (cross-entropy on the codes of a frozen tokenizer: the paper's, with DALL-E's) or "pixels"
        (MSE on the masked patches' pixels, per-patch normalised with ``norm_pix_loss``: hf-mae's addition, the
        target of ``cae-tiny``).
    codebook_size: the tokenizer's vocabulary, the decoder's logits with ``target="tokenizer"`` (8192: DALL-E's).
    tokenizer_embedding_dim, tokenizer_seed: the default tokenizer when none is passed, a random VQ codebook
        (``targets.VQTokenizer``); hf-mae's choice (32-d, seed 0).
    """

    model_type = "cae"

    layer_scale_init_value: float = 0.1
    mask_ratio: float = 0.5
    mask_generator: str = "block"
    decoder_hidden_size: int = 768
    decoder_num_hidden_layers: int = 4
    decoder_num_attention_heads: int = 12
    decoder_intermediate_size: int = 3072
    mask_min_patches_per_block: int = 16
    mask_max_patches_per_block: int | None = None
    mask_min_aspect: float = 0.3
    mask_max_aspect: float | None = None
    regressor_num_hidden_layers: int = 4
    decoder_layer_scale_init_value: float = 0.1
    align_loss_weight: float = 2.0
    target: str = "tokenizer"
    codebook_size: int = 8192
    tokenizer_embedding_dim: int = 32
    tokenizer_seed: int = 0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_choice("mask_generator", self.mask_generator, tuple(MASK_GENERATORS))
        check_int("mask_min_patches_per_block", self.mask_min_patches_per_block)
        if self.mask_max_patches_per_block is not None:
            check_int("mask_max_patches_per_block", self.mask_max_patches_per_block, self.mask_min_patches_per_block)
        check_number("mask_min_aspect", self.mask_min_aspect, positive=True)
        max_aspect = self.mask_max_aspect
        if max_aspect is not None and check_number("mask_max_aspect", max_aspect) < self.mask_min_aspect:
            raise ValueError(f"mask_max_aspect must be None or >= mask_min_aspect {self.mask_min_aspect}, "
                             f"got {self.mask_max_aspect!r}")
        check_int("regressor_num_hidden_layers", self.regressor_num_hidden_layers)
        for name in ("layer_scale_init_value", "decoder_layer_scale_init_value", "align_loss_weight"):
            check_number(name, getattr(self, name))
        check_choice("target", self.target, CAE_TARGETS)
        check_int("codebook_size", self.codebook_size, 2)
        check_int("tokenizer_embedding_dim", self.tokenizer_embedding_dim)
        check_int("tokenizer_seed", self.tokenizer_seed, 0)

    def mask_generator_kwargs(self) -> dict:
        if self.mask_generator != "block":
            return {}
        return dict(min_patches=self.mask_min_patches_per_block, max_patches=self.mask_max_patches_per_block,
                    min_aspect=self.mask_min_aspect, max_aspect=self.mask_max_aspect)

    @property
    def attention_bias(self):
        """The ``qkv_bias`` of every CAE attention: "qv" (query and value biases, official) or none."""
        return "qv" if self.qkv_bias else False


def check_number(name: str, value, positive: bool = False) -> float:
    """A real number >= 0 (> 0 with ``positive``), not a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (positive and value == 0):
        raise ValueError(f"{name} must be a number {'> 0' if positive else '>= 0'}, got {value!r}")
    return value


def cae_position_table(grid_size, dim: int) -> torch.Tensor:
    """CAE's fixed 2D sin-cos table (1 + rows * cols, dim) with an all-zero cls row. The official code (MoCo v3's
    table) codes the row first (``[sin_h|cos_h|sin_w|cos_w]`` for square grids), MAE's the column first."""
    return sincos_2d(grid_size, dim, cls_token=True, width_first=False)


class CAEEmbeddings(MAEEmbeddings):
    """Patch embedding + CAE's fixed sin-cos positions + cls token (the position table a buffer (1, 1 + N, hidden))."""

    def __init__(self, config: CAEConfig):
        super().__init__(config)
        table = cae_position_table(self.patch_embeddings.grid_size, config.hidden_size)
        self.register_buffer("position_embeddings", table.unsqueeze(0))


class CAERegressorBlock(GradientCheckpointingLayer):
    """The official ``RegressorBlock``: queries attend to the context (the visible latents and the current queries),

    ``x = q + DropPath(LS1(CrossAttn(LN_q(q + pos_q), keys=LN_k(ctx + pos_ctx), values=LN_v(ctx))))``, then
    ``x = LN2(x)`` (on the residual stream itself) and ``x = x + DropPath(LS2(MLP(x)))``.
    """

    def __init__(self, config: CAEConfig, drop_path: float = 0.0):
        super().__init__()
        width, eps = config.decoder_hidden_size, config.layer_norm_eps
        self.norm_query = nn.LayerNorm(width, eps=eps)
        self.norm_key = nn.LayerNorm(width, eps=eps)
        self.norm_value = nn.LayerNorm(width, eps=eps)
        self.cross_attention = CrossAttention(
            config, width, config.decoder_num_attention_heads, config.attention_bias, config.attention_probs_dropout_prob
        )
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = MLP(width, config.decoder_intermediate_size, config.hidden_act, config.hidden_dropout_prob)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        scale = config.decoder_layer_scale_init_value
        self.layer_scale1 = LayerScale(width, scale) if scale else nn.Identity()
        self.layer_scale2 = LayerScale(width, scale) if scale else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, queries, context, query_positions, context_positions, output_attentions: bool = False):
        """queries (batch, M, width), context (batch, K, width) with positions of the same shapes. Returns
        (queries (batch, M, width), attention weights (batch, heads, M, K) or None)."""
        attended, weights = self.cross_attention(
            self.norm_query(queries + query_positions),
            self.norm_key(context + context_positions),
            output_attentions=output_attentions,
            value_context=self.norm_value(context),
        )
        hidden = self.norm2(queries + self.drop_path(self.layer_scale1(self.dropout(attended))))
        return hidden + self.drop_path(self.layer_scale2(self.mlp(hidden))), weights


def drop_path_rates(rate: float, depth: int) -> list[float]:
    """Stochastic depth rising linearly from 0 to ``rate`` over ``depth`` blocks (``torch.linspace``, official)."""
    return [rate * i / max(depth - 1, 1) for i in range(depth)]


class CAERegressor(nn.Module):
    """The latent contextual regressor: a mask token at each masked position queries the visible latents through
    ``regressor_num_hidden_layers`` :class:`CAERegressorBlock`; a final LayerNorm. Owns the mask token and the
    regressor / decoder position table (1, 1 + N, width) (the official ``rd_pos_embed``)."""

    def __init__(self, config: CAEConfig):
        super().__init__()
        self.grid_size = config.grid_size
        width = config.decoder_hidden_size
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.register_buffer("position_embeddings", cae_position_table(self.grid_size, width).unsqueeze(0))
        rates = drop_path_rates(config.drop_path_rate, config.regressor_num_hidden_layers)
        self.layers = nn.ModuleList(CAERegressorBlock(config, rate) for rate in rates)
        self.norm = nn.LayerNorm(width, eps=config.layer_norm_eps)

    def positions(self, grid) -> torch.Tensor:
        """Patch positions (1, rows * cols, width), interpolated when ``grid`` is not the native one."""
        table = self.position_embeddings.to(self.mask_token.dtype)[:, 1:]  # float32 table, half-precision weights
        return interpolate_pos_embed(table, self.grid_size, grid)

    def forward(self, latents, ids_visible, ids_masked, grid) -> tuple[torch.Tensor, torch.Tensor]:
        """latents (batch, kept, width) of the visible patches ``ids_visible`` (batch, kept), in that order;
        ``ids_masked`` (batch, M). Returns (predicted latents (batch, M, width), positions of the masked patches
        (batch, M, width))."""
        batch = latents.shape[0]
        positions = self.positions(grid).expand(batch, -1, -1)
        visible_positions, masked_positions = gather_tokens(positions, ids_visible), gather_tokens(positions, ids_masked)
        context_positions = torch.cat([visible_positions, masked_positions], dim=1)
        queries = self.mask_token.to(latents.dtype).expand(batch, ids_masked.shape[1], -1)
        for block in self.layers:
            queries, _ = block(queries, torch.cat([latents, queries], dim=1), masked_positions, context_positions)
        return self.norm(queries), masked_positions


class CAEDecoder(nn.Module):
    """ViT blocks over the predicted masked latents (plus their positions) only, LayerNorm, a linear head to
    ``codebook_size`` logits (tokenizer target) or a patch's pixels."""

    def __init__(self, config: CAEConfig):
        super().__init__()
        patch = to_2tuple(config.patch_size)
        kwargs = config.decoder_block_kwargs(
            qkv_bias=config.attention_bias, layer_scale_init_value=config.decoder_layer_scale_init_value,
            dropout=config.hidden_dropout_prob, attention_dropout=config.attention_probs_dropout_prob,
        )
        self.layers = build_blocks(config, config.decoder_num_hidden_layers, config.drop_path_rate, **kwargs)
        self.norm = nn.LayerNorm(config.decoder_hidden_size, eps=config.layer_norm_eps)
        out = config.codebook_size if config.target == "tokenizer" else patch[0] * patch[1] * config.num_channels
        self.head = nn.Linear(config.decoder_hidden_size, out)

    def forward(self, predicted, positions) -> torch.Tensor:
        """predicted, positions: (batch, M, width) -> logits (batch, M, codebook_size or patch dim)."""
        hidden, _, _ = run_blocks(self.layers, predicted + positions, output_attentions=False)
        return self.head(self.norm(hidden))


class CAEPreTrainedModel(MaskedModelPreTrainedModel):
    config_class = CAEConfig
    base_model_prefix = "cae"
    input_modalities = ("image",)
    _no_split_modules = ["TransformerBlock", "CAERegressorBlock", "CAEEmbeddings"]

    @torch.no_grad()
    def _init_weights(self, module):
        """The official init (``fix_init_weight`` off, the scripts' default): xavier-uniform linears with zero biases,
        a truncated normal (std 0.02, cut at +-0.02 as the official ``trunc_normal_``) for the patch projection and
        the cls / mask tokens, the fixed sin-cos tables."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, PatchProjection):
            init.trunc_normal_(module.weight, std=std, a=-std, b=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, CAEEmbeddings):
            init.trunc_normal_(module.cls_token, std=std, a=-std, b=std)
            table = cae_position_table(module.patch_embeddings.grid_size, module.cls_token.shape[-1])
            init.copy_(module.position_embeddings, table[None])
        elif isinstance(module, CAERegressor):
            init.trunc_normal_(module.mask_token, std=std, a=-std, b=std)
            init.copy_(module.position_embeddings, cae_position_table(module.grid_size, module.mask_token.shape[-1])[None])
        elif isinstance(module, Attention) and module.q_bias is not None:  # the query / value biases (official: 0)
            init.zeros_(module.q_bias)
            init.zeros_(module.v_bias)
        else:
            super()._init_weights(module)  # norms, LayerScale


class CAEModel(CAEPreTrainedModel):
    """The CAE encoder: a ViT (LayerScale, query/value biases, CAE's sin-cos positions) on the cls token and the
    visible patches. A plain call encodes every patch in order (``mask_ratio=0``); ``bool_masked_pos``, ``noise`` or
    ``mask_ratio`` mask it. ``add_final_norm=False`` leaves out the last LayerNorm (mean-pooling classifiers)."""

    _can_record_outputs = {"hidden_states": TransformerBlock, "attentions": Attention}

    def __init__(self, config: CAEConfig, add_final_norm: bool = True):
        super().__init__(config)
        self.embeddings = CAEEmbeddings(config)
        self.layers = build_encoder_blocks(config, qkv_bias=config.attention_bias)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if add_final_norm else nn.Identity()
        self.mask_generator = build_mask_generator(config.mask_generator, **config.mask_generator_kwargs())
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.patch_embeddings

    def token_mask(self, batch, grid, device, bool_masked_pos=None, noise=None, mask_ratio=0.0) -> TokenMask:
        """The mask of a forward: ``bool_masked_pos`` (batch, N) as given, else the ``noise`` rule of MAE, else a mask
        of ``mask_ratio`` drawn by the config's generator."""
        num_patches = grid[0] * grid[1]
        if bool_masked_pos is not None:
            if noise is not None:
                raise ValueError("pass either bool_masked_pos or noise, not both (each fixes the mask)")
            if tuple(bool_masked_pos.shape) != (batch, num_patches):
                raise ValueError(f"bool_masked_pos must have shape (batch, num_patches) = {(batch, num_patches)}, "
                                 f"got {tuple(bool_masked_pos.shape)}")
            return mask_from_bool(bool_masked_pos.to(device))
        if noise is not None:
            if tuple(noise.shape) != (batch, num_patches):
                raise ValueError(f"noise must have shape (batch, num_patches) = {(batch, num_patches)}, "
                                 f"got {tuple(noise.shape)}")
            return mask_from_noise(noise.to(device), mask_ratio)
        return self.mask_generator(batch, num_patches, mask_ratio, grid, device)

    def encode_patches(self, pixel_values, ids_keep, grid) -> torch.Tensor:
        """The cls token and the patches ``ids_keep`` (batch, kept), in that order, through the blocks and the final
        norm -> (batch, 1 + kept, hidden). ``ids_keep=None`` encodes every patch in order."""
        patches, cls = self.embeddings(pixel_values, grid)
        if ids_keep is not None:
            patches = gather_tokens(patches, ids_keep)
        hidden, _, _ = run_blocks(self.layers, torch.cat([cls, patches], dim=1))
        return self.layernorm(hidden)

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """
        pixel_values: (batch, channels, height, width) float.
        bool_masked_pos: (batch, num_patches), True / 1 = masked, the same count in every row (transformers' BEiT /
            SimMIM argument); the visible patches are encoded in their original order.
        noise: (batch, num_patches), MAE's rule: the ``int(N * (1 - mask_ratio))`` smallest are kept, in that order.
        mask_ratio: default 0.0 (``config.mask_ratio`` with ``noise``); pre-training passes ``config.mask_ratio``.
        interpolate_pos_encoding: allow other image sizes than ``config.image_size`` (positions are interpolated).
        Returns CAEModelOutput: last_hidden_state (batch, 1 + kept, hidden), mask and ids_restore (batch, N),
        pooler_output (batch, hidden).
        """
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        grid = self.embeddings.patch_embeddings.grid_for(pixel_values, allow_other_size=interpolate_pos_encoding)
        mask_ratio = feature_mask_ratio(mask_ratio, self.config, noise, bool_masked_pos)
        token_mask = self.token_mask(pixel_values.shape[0], grid, pixel_values.device, bool_masked_pos, noise, mask_ratio)
        masked = bool_masked_pos is not None or noise is not None or mask_ratio > 0.0
        hidden = self.encode_patches(pixel_values, token_mask.ids_keep if masked else None, grid)
        return CAEModelOutput(
            last_hidden_state=hidden,
            mask=token_mask.mask,
            ids_restore=token_mask.ids_restore,
            pooler_output=pool_tokens(hidden, self.config.classifier_pooling),
        )


@dataclass
class CAEForPreTrainingOutput(ModelOutput):
    """
    loss: ``reconstruction_loss + align_loss_weight * alignment_loss``.
    logits: (batch, M, codebook_size or patch_h * patch_w * channels), the decoder's predictions of the M masked
        patches ``ids_masked``, in that order (normalised pixels with ``target="pixels"`` and ``norm_pix_loss``).
    mask, ids_restore: (batch, N) as in MAE (1 = masked).
    hidden_states, attentions: the encoder's, when asked.
    reconstruction_loss: the target term (cross-entropy on tokenizer codes or MSE on pixels) over the masked patches.
    alignment_loss: MSE between the regressor's predictions and the alignment latents (unweighted).
    latent_prediction: (batch, M, width) the regressor's output; latent_target: (batch, M, width) the encoder's own
        latents of the masked patches (no gradient).
    ids_masked: (batch, M) the masked patches, in the order of ``logits`` and the latents.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    ids_restore: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    reconstruction_loss: torch.Tensor | None = None
    alignment_loss: torch.Tensor | None = None
    latent_prediction: torch.Tensor | None = None
    latent_target: torch.Tensor | None = None
    ids_masked: torch.Tensor | None = None


class CAEForPreTraining(FrozenTeacherMixin, CAEPreTrainedModel):
    """CAE: encoder, latent contextual regressor, decoder and alignment, with the target term and the alignment term.

    ``tokenizer``: with ``config.target="tokenizer"``, any frozen module mapping images to codes (batch, N) in
    [0, codebook_size) (``get_codebook_indices`` is used when it has one: BEiT's / DALL-E's API); held as a frozen
    teacher (``teachers.FrozenTeacherMixin``: not in the state dict, the optimiser or DDP). None builds the random VQ
    tokenizer of the config on first use.
    """

    def __init__(self, config: CAEConfig, tokenizer: nn.Module | None = None):
        if tokenizer is not None and config.target != "tokenizer":
            raise ValueError(f"a tokenizer was passed but config.target is {config.target!r}; set target='tokenizer'")
        super().__init__(config)
        self.cae = CAEModel(config)
        if config.decoder_hidden_size != config.hidden_size:  # official: MAE's bridge from encoder to regressor
            self.encoder_to_regressor = nn.Linear(config.hidden_size, config.decoder_hidden_size)
            self.encoder_to_regressor_norm = nn.LayerNorm(config.decoder_hidden_size, eps=config.layer_norm_eps)
        else:
            self.encoder_to_regressor = self.encoder_to_regressor_norm = None
        self.regressor = CAERegressor(config)
        self.decoder = CAEDecoder(config)
        self.set_frozen_teacher("tokenizer", tokenizer)
        self.post_init()

    def get_tokenizer(self, device) -> nn.Module:
        """The frozen tokenizer on ``device``: the one given, or the config's random VQ tokenizer (built once)."""
        config = self.config
        return self.frozen_teacher("tokenizer", device, lambda: VQTokenizer(
            config.patch_size, config.num_channels, config.codebook_size, config.tokenizer_embedding_dim,
            config.tokenizer_seed,
        ))  # fmt: skip

    def to_regressor(self, latents: torch.Tensor) -> torch.Tensor:
        """Encoder latents (batch, tokens, hidden) -> the regressor's width (the identity when the widths agree)."""
        if self.encoder_to_regressor is None:
            return latents
        return self.encoder_to_regressor_norm(self.encoder_to_regressor(latents))

    def targets(self, pixel_values: torch.Tensor, ids_masked: torch.Tensor) -> torch.Tensor:
        """The target of each masked patch: codes (batch, M) long, or pixels (batch, M, patch dim) float32."""
        config = self.config
        if config.target == "tokenizer":
            tokenizer = self.get_tokenizer(pixel_values.device)
            rows, cols = self.cae.embeddings.patch_embeddings.grid_for(pixel_values, allow_other_size=True)
            codes = tokenizer_target(tokenizer, pixel_values, rows * cols, config.codebook_size)
            return torch.gather(codes, 1, ids_masked)
        # float32 even under autocast: per-patch normalisation in bf16 would blur it
        pixels = pixel_target(pixel_values.float(), to_2tuple(config.patch_size), config.norm_pix_loss)
        return gather_tokens(pixels, ids_masked)

    def reconstruction_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over the masked patches' codes, or MSE over their pixels (mean per patch, then over the
        masked patches of the batch)."""
        if self.config.target == "tokenizer":
            return nn.functional.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        return masked_mse(logits, targets, torch.ones(targets.shape[:2], device=targets.device))

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """Same inputs as :meth:`CAEModel.forward`, masking ``config.mask_ratio`` with the config's generator by
        default; some patches must be masked. Returns CAEForPreTrainingOutput."""
        encoded = self.cae(
            pixel_values,
            bool_masked_pos=bool_masked_pos,
            noise=noise,
            mask_ratio=self.config.mask_ratio if mask_ratio is None else mask_ratio,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
            **kwargs,
        )
        grid = self.cae.embeddings.patch_embeddings.grid_for(pixel_values, allow_other_size=True)
        kept = encoded.last_hidden_state.shape[1] - 1
        if kept == encoded.mask.shape[1]:
            raise ValueError("CAE pre-training needs masked patches: mask_ratio must be > 0 (or mask some patches)")
        # the patches in the encoder's order: the visible ones as it saw them, then the masked ones
        ids_shuffle = torch.argsort(encoded.ids_restore, dim=1)
        ids_visible, ids_masked = ids_shuffle[:, :kept], ids_shuffle[:, kept:]

        # The alignment latents: the encoder's own output on the masked patches, cls dropped, without gradients. The
        # official code keeps a copy whose weights are the encoder's at every step; calling the encoder itself under
        # no_grad is the same function (same weights, same train/eval mode) with nothing to copy or save.
        with torch.no_grad():
            latent_target = self.to_regressor(self.cae.encode_patches(pixel_values, ids_masked, grid)[:, 1:])

        latents = self.to_regressor(encoded.last_hidden_state)[:, 1:]  # the regressor never sees the cls token
        latent_prediction, masked_positions = self.regressor(latents, ids_visible, ids_masked, grid)
        logits = self.decoder(latent_prediction, masked_positions)

        reconstruction = self.reconstruction_loss(logits, self.targets(pixel_values, ids_masked))
        alignment = nn.functional.mse_loss(latent_prediction.float(), latent_target.float())
        return CAEForPreTrainingOutput(
            loss=reconstruction + self.config.align_loss_weight * alignment,
            logits=logits,
            mask=encoded.mask,
            ids_restore=encoded.ids_restore,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
            reconstruction_loss=reconstruction,
            alignment_loss=alignment,
            latent_prediction=latent_prediction,
            latent_target=latent_target,
            ids_masked=ids_masked,
        )


class CAEForImageClassification(ImageClassifierMixin, CAEPreTrainedModel):
    """CAE encoder (no masking) + linear classifier: the mean of the patch tokens then fc_norm (BEiT-style
    fine-tuning, ``classifier_pooling="mean"``), or the normalised cls token ("cls", CAE's linear probing)."""

    def __init__(self, config: CAEConfig):
        super().__init__(config)
        self.cae = CAEModel(config, add_final_norm=config.classifier_pooling == "cls")
        self.build_classifier(config)
        self.post_init()


__all__ = [
    "CAEConfig",
    "CAEPreTrainedModel",
    "CAEModel",
    "CAEForPreTraining",
    "CAEForImageClassification",
    "CAEModelOutput",
    "CAEForPreTrainingOutput",
]


# ----------------------------------------------------------------------------------------------- registry row
from .presets import TINY, VIT  # noqa: E402

METHOD = dict(
    name="cae",
    paper="Context Autoencoder for Self-Supervised Representation Learning (Chen et al., IJCV 2023), arXiv:2202.03026",
    config_class=CAEConfig,
    model_classes={
        "base": CAEModel, "pretraining": CAEForPreTraining, "image-classification": CAEForImageClassification,
    },
    processor="MAEImageProcessor",
    # Atten4Vis/CAE scripts/cae_base_800e.sh: lr 1.5e-3 at batch 2048 (64 x 32 GPUs), AdamW with timm's default
    # betas (0.9, 0.999) (no --opt_betas), weight decay 0.05, warm-up 20 of 800 epochs, clip-grad 3;
    # RandomResizedCrop(scale=(0.08, 1.0)) (--crop_min_size 0.08), bicubic, flip, no colour jitter
    pretrain_base_lr=1.5e-3 * 256 / 2048, pretrain_batch=2048, pretrain_betas=(0.9, 0.999),
    pretrain_augmentation=dict(crop_scale=(0.08, 1.0), crop_ratio=(3 / 4, 4 / 3), resample="bicubic", flip_probability=0.5),
    presets={
        # CPU-sized: TINY's encoder, a 128-d regressor / decoder (no bridge, as base and large) of 2 + 2 blocks,
        # per-patch normalised pixels as the target (no tokenizer to fetch)
        "cae-tiny": dict(TINY, decoder_hidden_size=128, decoder_intermediate_size=512, decoder_num_attention_heads=4,
                         regressor_num_hidden_layers=2, target="pixels"),
        # cae_small_patch16_224_8k_vocab: 384-d x 12 with 12 heads; the regressor / decoder keep run_pretraining's
        # default width (768, 12 heads) behind the Linear + LayerNorm bridge; no published script: base's settings
        "cae-vit-small-patch16": dict(patch_size=16, **{**VIT["small"], "num_attention_heads": 12}),
        # scripts/cae_base_800e.sh
        "cae-vit-base-patch16": dict(patch_size=16, **VIT["base"]),
        # scripts/cae_large_1600e.sh: LayerScale 1e-5 in the encoder, regressor and decoder; a 1024-d, 16-head
        # regressor / decoder (the script's --decoder_embed_dim 1024 --decoder_num_heads 16). As written, those
        # options (and --fix_init_weight) follow a line without its trailing backslash and never reach the command,
        # which would then run the 768-d default behind the bridge; hf-mae follows the options' evident intent.
        "cae-vit-large-patch16": dict(
            patch_size=16, layer_scale_init_value=1e-5, decoder_layer_scale_init_value=1e-5, decoder_hidden_size=1024,
            decoder_num_attention_heads=16, decoder_intermediate_size=4096, **VIT["large"],
        ),
    },
    exports=["CAEPreTrainedModel", "CAEModelOutput", "CAEForPreTrainingOutput"],
)
