"""CRATE-MAE: Masked Completion via Structured Diffusion with White-Box Transformers (Pai et al., ICLR 2024).

A masked autoencoder whose encoder and decoder layers are unrolled optimisation steps ("white-box" blocks) instead of
ViT blocks. The method, as in the paper's Section 3 and Ma-Lab-Berkeley/CRATE ``model/crate_ae``:
1. split the image into patches and embed them; hide a random ``mask_ratio`` (0.75) of them as in MAE;
2. **unlike MAE the mask tokens enter the encoder**: every hidden patch's embedding is replaced by one learned
   ``mask_token``, the tokens stay in image order, the cls token is prepended and fixed 2D sin-cos positions are
   added to all 1 + N tokens;
3. each encoder layer compresses, then sparsifies, the tokens:
   - MSSA (multi-head subspace self-attention), one bias-free projection U whose output serves as query, key *and*
     value of every head, ``MSSA(y) = proj(softmax(Uy (Uy)^T / sqrt(head_dim)) Uy)``, as a residual step:
     ``z = x + MSSA(LN(x))``;
   - ISTA, one proximal-gradient step of sparse coding against a square dictionary D, with **no residual**:
     ``x' = ReLU(LN(z) + eta D^T (LN(z) - D LN(z)) - eta lambda)`` (eta = 0.1, lambda = 0.5), so many outputs are
     exactly zero;
4. the encoder's normalised output goes straight into the decoder (same width, no ``decoder_embed``), whose layers
   invert the encoder's: a bias-free linear step ``g = A LN(x)`` then ``x' = g - MSSA(LN(g))``; a LayerNorm and a
   linear head predict every patch's pixels;
5. the loss is MAE's mean squared error on the hidden patches (per-patch normalised pixels with ``norm_pix_loss``).

Each encoder layer has about 3 d^2 weights (U, the MSSA output projection, D) and each decoder layer 3 d^2 (A, U,
output), against 12 d^2 for a ViT block: the model has about a quarter of the parameters of an MAE of the same
sizes (the paper's "~30%"; ``tests/test_cratemae.py`` measures it).

Departures from the official code (none changes what a layer computes):
- the ISTA step computes ``D^T (y - D y)`` (two matmuls) instead of ``D^T y - D^T D y`` (three); equal up to
  rounding;
- the official model also builds MAE's unused ``pos_embed`` and ``decoder_embed`` (a 768 x 768 linear at base size
  that no forward uses); hf-mae leaves them out, so its parameter counts are those of the computation;
- attention goes through transformers' attention interface (eager, sdpa, flash) with U's output as q, k and v;
- stochastic depth (``drop_path_rate``, for fine-tuning) drops the MSSA residual branch of the encoder layers, the only
  residual a CRATE layer has; the official code has none (hf-mae's choice);
- the classifier pools the cls token by default, as CRATE's own classifiers do (``classifier_pooling``).

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

from typing import Unpack

import torch
from torch import nn
from torch.nn import functional as F
from transformers import initialization as init
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .base import ViTImageConfig, check_choice, check_int
from .embeddings import to_2tuple
from .heads import ImageClassifierMixin
from .layers import DropPath, eager_attention_forward, run_blocks
from .losses import masked_mse
from .mae import MAEEmbeddings, MAEForPreTraining, MAEPreTrainedModel
from .masking import build_mask_generator, check_mask_ratio, feature_mask_ratio, mask_from_noise
from .outputs import MaskedEncoderOutput, MaskedPreTrainingOutput, pool_tokens
from .targets import pixel_target

CrateMAEModelOutput = MaskedEncoderOutput
CrateMAEForPreTrainingOutput = MaskedPreTrainingOutput


class CrateMAEConfig(ViTImageConfig):
    r"""Configuration of a CRATE-MAE model. Defaults are the official ``mae_crate_base``: 768-d, 12 encoder and 12
    decoder layers, 12 heads, patch 16, 224 px.

    The encoder's fields are :class:`ViTImageConfig`'s (``hidden_size`` divisible by 4 for the 2D sin-cos positions),
    except that ``intermediate_size``, ``hidden_act`` and ``qkv_bias`` are not used: the ISTA dictionary is
    ``hidden_size x hidden_size`` with a ReLU, and U has no bias. The decoder has the encoder's width and heads.
    ``hidden_dropout_prob`` (after the MSSA output projection) and ``attention_probs_dropout_prob`` apply to the
    encoder only (0 in the official code). Besides:
    decoder_num_hidden_layers: decoder layers (the official models mirror the encoder: as many as it has).
    ista_step_size: eta, the ISTA step size (0.1, official).
    ista_lambda: lambda, the sparsity penalty of the ISTA step (0.5, official); the threshold is eta * lambda.
    mask_ratio: fraction of patches replaced by the mask token during pre-training, in [0, 1) (0.75, official).
    mask_generator: name of the mask generator (see ``masking.MASK_GENERATORS``; "random" is the official one).
    norm_pix_loss: regress per-patch normalised pixels (off: the official model's default).
    classifier_pooling: "cls" (the normalised cls token, as CRATE's classifiers; hf-mae's choice for CRATE-MAE,
        whose fine-tuning code is not published) or "mean" (average of the patch tokens, then fc_norm).
    drop_path_rate: stochastic depth on the encoder's MSSA residual branch, rising linearly over the layers
        (hf-mae's choice; the official code has none).
    """

    model_type = "cratemae"

    decoder_num_hidden_layers: int = 12
    ista_step_size: float = 0.1
    ista_lambda: float = 0.5
    mask_ratio: float = 0.75
    mask_generator: str = "random"
    norm_pix_loss: bool = False
    classifier_pooling: str = "cls"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.hidden_size % 4:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by 4 (2D sin-cos positions)")
        check_int("decoder_num_hidden_layers", self.decoder_num_hidden_layers)
        for name in ("ista_step_size", "ista_lambda"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if self.ista_step_size == 0:
            raise ValueError("ista_step_size must be > 0 (0 makes the ISTA step a plain ReLU), got 0")
        check_mask_ratio(self.mask_ratio)
        check_choice("classifier_pooling", self.classifier_pooling, ("mean", "cls"))

    def mask_generator_kwargs(self) -> dict:
        """Constructor arguments of ``mask_generator`` (none for the random generator)."""
        return {}


class CrateMSSA(nn.Module):
    """Multi-head subspace self-attention: one bias-free projection U (the heads' subspace bases stacked) whose output
    is the query, the key and the value of every head, then an output Linear (with bias).

    ``MSSA(y) = proj(concat_k softmax((U_k y)(U_k y)^T * head_dim^-1/2) U_k y)``.
    """

    def __init__(self, config, hidden_size: int, num_heads: int, attention_dropout: float = 0.0, dropout: float = 0.0):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_attention_heads ({num_heads})")
        self.config = config  # read at call time: config._attn_implementation may change after construction
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = attention_dropout
        self.is_causal = False  # sdpa defaults to causal when this attribute is missing
        self.subspaces = nn.Linear(hidden_size, hidden_size, bias=False)  # U
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states, attention_mask=None, output_attentions: bool = False, **kwargs):
        """hidden_states: (batch, tokens, hidden). Returns (output (batch, tokens, hidden), weights (batch, heads,
        tokens, tokens) or None)."""
        batch, tokens, _ = hidden_states.shape
        coordinates = self.subspaces(hidden_states).view(batch, tokens, self.num_heads, self.head_dim).transpose(1, 2)
        # only eager attention materialises the weights, so ask for it when they are wanted
        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        output, weights = attention(
            self, coordinates, coordinates, coordinates, attention_mask, scaling=self.scaling,
            dropout=self.attention_dropout if self.training else 0.0, **kwargs,
        )  # fmt: skip
        return self.dropout(self.proj(output.reshape(batch, tokens, -1))), weights


class CrateISTA(nn.Module):
    """One ISTA step of sparse coding against the square dictionary D (``weight``, (hidden, hidden)), started at its
    input y: ``ReLU(y + step_size * D^T (y - D y) - step_size * lambd)``. No residual: the output replaces y."""

    def __init__(self, hidden_size: int, step_size: float, lambd: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(hidden_size, hidden_size))  # D
        self.step_size = step_size
        self.lambd = lambd

    def forward(self, hidden_states):
        # F.linear(y, D) is D y per token and F.linear(r, D^T) is D^T r
        residual = hidden_states - F.linear(hidden_states, self.weight)
        step = F.linear(residual, self.weight.t())
        return F.relu(hidden_states + self.step_size * step - self.step_size * self.lambd)

    def extra_repr(self):
        return f"hidden_size={self.weight.shape[0]}, step_size={self.step_size}, lambd={self.lambd}"


class CrateDecoderProjection(nn.Module):
    """The decoder's bias-free linear step ``A y`` (``weight`` A, (hidden, hidden)), initialised as the official
    code does (kaiming-uniform), which differs from the xavier rule of the other linears."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(hidden_size, hidden_size))  # A

    def forward(self, hidden_states):
        return F.linear(hidden_states, self.weight)


class CrateEncoderBlock(GradientCheckpointingLayer):
    """``z = x + DropPath(MSSA(LN(x)))``, then ``x' = ISTA(LN(z))`` (no residual)."""

    def __init__(self, config: CrateMAEConfig, drop_path: float = 0.0):
        super().__init__()
        width, eps = config.hidden_size, config.layer_norm_eps
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attention = CrateMSSA(config, width, config.num_attention_heads, config.attention_probs_dropout_prob,
                                   config.hidden_dropout_prob)  # fmt: skip
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.ista = CrateISTA(width, config.ista_step_size, config.ista_lambda)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, hidden_states, attention_mask=None, output_attentions: bool = False):
        """hidden_states: (batch, tokens, hidden). Returns (hidden_states, attention weights or None)."""
        attended, weights = self.attention(self.norm1(hidden_states), attention_mask, output_attentions)
        compressed = hidden_states + self.drop_path(attended)
        return self.ista(self.norm2(compressed)), weights


class CrateDecoderBlock(GradientCheckpointingLayer):
    """``g = A LN(x)``, then ``x' = g - MSSA(LN(g))``: the inverse direction of an encoder block."""

    def __init__(self, config: CrateMAEConfig):
        super().__init__()
        width, eps = config.hidden_size, config.layer_norm_eps
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.projection = CrateDecoderProjection(width)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.attention = CrateMSSA(config, width, config.num_attention_heads)

    def forward(self, hidden_states, attention_mask=None, output_attentions: bool = False):
        """hidden_states: (batch, tokens, hidden). Returns (hidden_states, attention weights or None)."""
        expanded = self.projection(self.norm1(hidden_states))
        attended, weights = self.attention(self.norm2(expanded), attention_mask, output_attentions)
        return expanded - attended, weights


class CrateMAEEmbeddings(MAEEmbeddings):
    """Patch embedding, the mask token at hidden patches, cls token, fixed sin-cos positions on all 1 + N tokens (the
    official model adds them after the mask tokens are in place). ``use_mask_token=False`` (the classifier, which never
    masks) builds no mask token."""

    def __init__(self, config: CrateMAEConfig, use_mask_token: bool = True):
        super().__init__(config)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size)) if use_mask_token else None

    def forward(self, pixel_values, grid, mask: torch.Tensor | None = None) -> torch.Tensor:
        """pixel_values (batch, C, H, W), mask (batch, N) 1 = hidden, or None -> tokens (batch, 1 + N, hidden)."""
        patches = self.patch_embeddings(pixel_values)
        if mask is not None:
            patches = torch.where(mask.unsqueeze(-1).bool(), self.mask_token.to(patches.dtype), patches)
        cls = self.cls_token.to(patches.dtype).expand(patches.shape[0], -1, -1)
        return torch.cat([cls, patches], dim=1) + self.positions(grid)


class CrateMAEDecoder(nn.Module):
    """CRATE decoder layers on the encoder's output, then a LayerNorm and the pixel head."""

    def __init__(self, config: CrateMAEConfig):
        super().__init__()
        patch = to_2tuple(config.patch_size)
        self.decoder_layers = nn.ModuleList(CrateDecoderBlock(config) for _ in range(config.decoder_num_hidden_layers))
        self.decoder_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder_pred = nn.Linear(config.hidden_size, patch[0] * patch[1] * config.num_channels)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """latent: (batch, 1 + N, hidden) encoder output -> logits (batch, N, patch_h * patch_w * channels)."""
        hidden, _, _ = run_blocks(self.decoder_layers, latent, output_attentions=False)
        return self.decoder_pred(self.decoder_norm(hidden))[:, 1:]


class CrateMAEPreTrainedModel(MAEPreTrainedModel):
    config_class = CrateMAEConfig
    base_model_prefix = "crate_mae"
    _no_split_modules = ["CrateEncoderBlock", "CrateDecoderBlock", "CrateMAEEmbeddings"]

    @torch.no_grad()
    def _init_weights(self, module):
        """The official initialisation: D and A kaiming-uniform (torch's default a=0: U(+-sqrt(6 / hidden))), every
        nn.Linear (U, the output projections, the head) xavier-uniform with zero biases, the patch projection
        xavier-uniform as a Linear, cls and mask tokens N(0, 0.02), sin-cos positions."""
        if isinstance(module, (CrateISTA, CrateDecoderProjection)):
            init.kaiming_uniform_(module.weight)
        elif isinstance(module, CrateMAEEmbeddings):
            if module.mask_token is not None:
                init.normal_(module.mask_token, std=self.config.initializer_range)
            super()._init_weights(module)  # cls token and positions (MAE's rule)
        else:
            super()._init_weights(module)  # linears, norms, the patch projection (MAE's rules)


class CrateMAEModel(CrateMAEPreTrainedModel):
    """The CRATE-MAE encoder: every patch goes in, the hidden ones as the mask token, in image order.

    ``add_final_norm=False`` leaves out the last LayerNorm (the mean-pooling classifier normalises after pooling);
    ``use_mask_token=False`` builds no mask token (the classifier).
    """

    # transformers' output capture: hidden states from the encoder blocks, attention weights from their MSSA
    _can_record_outputs = {"hidden_states": CrateEncoderBlock, "attentions": CrateMSSA}

    def __init__(self, config: CrateMAEConfig, add_final_norm: bool = True, use_mask_token: bool = True):
        super().__init__(config)
        self.embeddings = CrateMAEEmbeddings(config, use_mask_token)
        depth = config.num_hidden_layers
        rates = [config.drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
        self.layers = nn.ModuleList(CrateEncoderBlock(config, drop_path=rate) for rate in rates)
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
        noise: (batch, num_patches), optional. Fixes the mask as in MAE: the ``int(num_patches * (1 - mask_ratio))``
            patches with the smallest noise stay visible, the others get the mask token (tokens keep their order).
        mask_ratio: default 0.0 (``config.mask_ratio`` with ``noise``): a plain call masks nothing, the same
            features on every call. Pre-training passes ``config.mask_ratio``.
        interpolate_pos_encoding: allow other image sizes than ``config.image_size`` (positions are interpolated).
        output_hidden_states, output_attentions, return_dict: as in transformers (captured from the blocks).
        Returns CrateMAEModelOutput: last_hidden_state (batch, 1 + num_patches, hidden) in patch order, mask
        (batch, num_patches) 1 = replaced by the mask token, ids_restore None (nothing is reordered), pooler_output
        (batch, hidden): the cls token (the mean of the patch tokens with ``classifier_pooling="mean"``).
        """
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        grid = self.embeddings.patch_embeddings.grid_for(pixel_values, allow_other_size=interpolate_pos_encoding)
        mask_ratio = feature_mask_ratio(mask_ratio, self.config, noise)
        batch, num_patches = pixel_values.shape[0], grid[0] * grid[1]
        mask = None
        if noise is not None:
            if not isinstance(noise, torch.Tensor) or tuple(noise.shape) != (batch, num_patches):
                got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
                raise ValueError(f"noise must have shape (batch, num_patches) = {(batch, num_patches)}, got {got}")
            mask = mask_from_noise(noise.to(pixel_values.device), mask_ratio).mask
        elif mask_ratio > 0.0:
            mask = self.mask_generator(batch, num_patches, mask_ratio, grid, pixel_values.device).mask
        if mask is not None and self.embeddings.mask_token is None:
            raise ValueError("this encoder was built without a mask token (use_mask_token=False); it cannot mask")

        hidden, _, _ = run_blocks(self.layers, self.embeddings(pixel_values, grid, mask))
        hidden = self.layernorm(hidden)
        if mask is None:
            mask = torch.zeros(batch, num_patches, device=pixel_values.device)
        return CrateMAEModelOutput(
            last_hidden_state=hidden, mask=mask, pooler_output=pool_tokens(hidden, self.config.classifier_pooling)
        )


class CrateMAEForPreTraining(CrateMAEPreTrainedModel):
    """CRATE-MAE encoder + CRATE decoder with MAE's masked pixel-reconstruction loss."""

    def __init__(self, config: CrateMAEConfig):
        super().__init__(config)
        self.crate_mae = CrateMAEModel(config)
        self.decoder = CrateMAEDecoder(config)
        self.post_init()

    # MAE's patch layout and reconstruction images: the logits and the mask mean the same as MAE's
    patchify = MAEForPreTraining.patchify
    unpatchify = MAEForPreTraining.unpatchify
    reconstruct = MAEForPreTraining.reconstruct

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """Same inputs as :meth:`CrateMAEModel.forward`, masking ``config.mask_ratio`` by default. Returns
        CrateMAEForPreTrainingOutput with the masked MSE ``loss``, ``logits`` (batch, N, patch_h * patch_w *
        channels) of every patch (normalised pixels with ``norm_pix_loss``), ``mask``; ``ids_restore`` is None."""
        encoded = self.crate_mae(
            pixel_values,
            noise=noise,
            mask_ratio=self.config.mask_ratio if mask_ratio is None else mask_ratio,
            interpolate_pos_encoding=interpolate_pos_encoding,
            return_dict=True,
            **kwargs,
        )
        logits = self.decoder(encoded.last_hidden_state)
        # the target in float32 even under autocast: per-patch normalisation in bf16 would blur it
        target = pixel_target(pixel_values.float(), to_2tuple(self.config.patch_size), self.config.norm_pix_loss)
        return CrateMAEForPreTrainingOutput(
            loss=masked_mse(logits, target, encoded.mask),
            logits=logits,
            mask=encoded.mask,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
        )


class CrateMAEForImageClassification(ImageClassifierMixin, CrateMAEPreTrainedModel):
    """CRATE-MAE encoder (no masking, no mask token) + linear classifier on the normalised cls token
    (``classifier_pooling="cls"``) or on the mean of the patch tokens followed by fc_norm ("mean")."""

    def __init__(self, config: CrateMAEConfig):
        super().__init__(config)
        self.crate_mae = CrateMAEModel(config, add_final_norm=config.classifier_pooling == "cls", use_mask_token=False)
        self.build_classifier(config)
        self.post_init()


__all__ = [
    "CrateMAEConfig",
    "CrateMAEPreTrainedModel",
    "CrateMAEModel",
    "CrateMAEForPreTraining",
    "CrateMAEForImageClassification",
    "CrateMAEModelOutput",
    "CrateMAEForPreTrainingOutput",
]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
from .presets import TINY_ENCODER  # noqa: E402

# the official sizes (model/crate_ae/crate_ae.py, mae_crate_*): the decoder mirrors the encoder's width, depth, heads
_CRATE = {
    "tiny": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, decoder_num_hidden_layers=12),
    "small": dict(hidden_size=576, num_hidden_layers=12, num_attention_heads=12, decoder_num_hidden_layers=12),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, decoder_num_hidden_layers=12),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, decoder_num_hidden_layers=24),
}

METHOD = dict(
    name="cratemae",
    paper="Masked Completion via Structured Diffusion with White-Box Transformers (Pai et al., ICLR 2024), "
          "arXiv:2404.02446",
    config_class=CrateMAEConfig,
    model_classes={
        "base": CrateMAEModel, "pretraining": CrateMAEForPreTraining,
        "image-classification": CrateMAEForImageClassification,
    },
    processor="MAEImageProcessor",
    # no pre-training script is published with model/crate_ae: MAE's crop + flip and learning-rate rule
    # (hf-mae's choice)
    pretrain_augmentation=dict(crop_scale=(0.2, 1.0), crop_ratio=(3 / 4, 4 / 3), resample="bicubic", flip_probability=0.5),
    pretrain_base_lr=1.5e-4, pretrain_batch=4096,
    presets={
        # CPU-sized: TINY's 128-d x 4 encoder on 32 px / 4 px patches, mirrored by a 4-layer decoder
        "cratemae-tiny": dict({k: v for k, v in TINY_ENCODER.items() if k != "intermediate_size"},
                              decoder_num_hidden_layers=4),
        **{f"cratemae-crate-{size}-patch16": dict(patch_size=16, **sizes) for size, sizes in _CRATE.items()},
    },
    exports=["CrateMAEPreTrainedModel", "CrateMAEModelOutput", "CrateMAEForPreTrainingOutput"],
)
