"""VideoMAE: Masked Autoencoders are Data-Efficient Learners for Self-Supervised Video Pre-Training (Tong et al.,
NeurIPS 2022).

MAE carried over to video, as in the paper's Section 3 and the official code (MCG-NJU/VideoMAE,
``modeling_pretrain.py``):
1. the clip (batch, frames, channels, H, W) is cut into tubelets of ``tubelet_size`` frames x patch x patch, each
   embedded by one Conv3d; a fixed 1-D sinusoid table over the flattened (time, row, column) order gives positions;
   there is no cls token;
2. **tube masking** at a very high ratio (0.9): one random spatial mask per clip, the same in every time slice, so
   a hidden patch cannot be copied from its neighbour in time; the encoder sees only the visible tubelets;
3. the decoder gets the visible tokens followed by a mask token for every hidden one (each with its position),
   and predicts the pixels of the hidden tubelets only;
4. the loss is the MSE against per-tubelet normalised pixels: the target is taken on the de-normalised clip (the
   processor's ImageNet normalisation undone) and normalised per tubelet and per channel.

Numerically this equals transformers' ``VideoMAEForPreTraining`` for the same weights and ``bool_masked_pos`` (see
``hf-mae convert videomae``): the encoder keeps VideoMAE's query and value biases (no key bias). The pre-training
encoder ends in a LayerNorm (``use_mean_pooling=False`` in transformers' converted pre-training checkpoints); the
video classifier pools the un-normalised tokens and normalises after (``fc_norm``), as VideoMAE fine-tunes.

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

from typing import Unpack

import torch
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .base import MaskedModelPreTrainedModel, ViTDecoderMixin, ViTImageConfig, check_int
from .embeddings import TubeletEmbedding, sinusoid_table, to_2tuple
from .layers import Attention, TransformerBlock, build_blocks, build_encoder_blocks, run_blocks
from .losses import classification_loss
from .masking import (
    build_mask_generator,
    check_mask_ratio,
    check_tensor_condition,
    feature_mask_ratio,
    data_dependent_count,
    gather_tokens,
    mask_from_bool,
    mask_from_noise,
)
from .outputs import MaskedEncoderOutput, MaskedPreTrainingOutput, pool_tokens
from .targets import tubelet_target

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)


class HfVideoMAEConfig(ViTImageConfig, ViTDecoderMixin):
    r"""Configuration of an hf-mae VideoMAE model (transformers owns the names ``VideoMAEConfig`` and "videomae",
    and its Auto classes refuse a second config class of the same name). Defaults: the paper's ViT-B/16, 16 frames,
    tubelets of 2 frames, a 384-d x 4 decoder, tube masking at 0.9.

    The ViT's fields are :class:`ViTImageConfig`'s (``image_size``, ``patch_size``, ``num_channels`` per frame) and
    the decoder's :class:`ViTDecoderMixin`'s, with these differences:
    qkv_bias: learned query and value biases (VideoMAE's ``qkv_bias``; the key has none), encoder and decoder.
    layer_norm_eps: the encoder and decoder blocks' LayerNorm eps (official: 1e-6).
    Besides:
    num_frames: frames per clip (a multiple of tubelet_size). tubelet_size: frames per token.
    decoder_norm_eps: eps of the decoder's last LayerNorm (None: layer_norm_eps; transformers' VideoMAE uses 1e-5).
    mask_ratio: share of the spatial positions hidden in every time slice (tube masking), in [0, 1).
    mask_generator: "tube" (VideoMAE) or "random" (per tubelet, the paper's ablation).
    norm_pix_loss: regress per-tubelet, per-channel normalised pixels.
    """

    model_type = "hf_videomae"  # "videomae" is transformers' own model: never shadow it

    num_frames: int = 16
    tubelet_size: int = 2
    decoder_norm_eps: float | None = None
    decoder_hidden_size: int = 384
    decoder_num_hidden_layers: int = 4
    decoder_num_attention_heads: int = 6
    decoder_intermediate_size: int = 1536
    mask_ratio: float = 0.9
    mask_generator: str = "tube"
    norm_pix_loss: bool = True

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_int("tubelet_size", self.tubelet_size)
        if self.num_frames % self.tubelet_size:
            raise ValueError(f"num_frames {self.num_frames} must be divisible by tubelet_size {self.tubelet_size}")
        check_mask_ratio(self.mask_ratio)

    @property
    def grid_size(self) -> tuple[int, int, int]:
        """(time slices, rows, columns) of the token grid."""
        image, patch = to_2tuple(self.image_size), to_2tuple(self.patch_size)
        return self.num_frames // self.tubelet_size, image[0] // patch[0], image[1] // patch[1]

    @property
    def num_tokens(self) -> int:
        slices, rows, cols = self.grid_size
        return slices * rows * cols

    def mask_generator_kwargs(self) -> dict:
        return {}


class VideoMAEPreTrainedModel(MaskedModelPreTrainedModel):
    config_class = HfVideoMAEConfig
    base_model_prefix = "videomae"
    input_modalities = ("video",)

    @torch.no_grad()
    def _init_weights(self, module):
        """VideoMAE's initialisation: xavier-uniform linears and tubelet projection, zero biases, sinusoid tables."""
        if isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, VideoMAEModel):
            init.copy_(module.position_embeddings, sinusoid_table(module.config.num_tokens, module.config.hidden_size)[None])
        elif isinstance(module, VideoMAEDecoder):
            init.normal_(module.mask_token, std=self.config.initializer_range)
            table = sinusoid_table(module.config.num_tokens, module.config.decoder_hidden_size)
            init.copy_(module.position_embeddings, table[None])
        elif getattr(module, "q_bias", None) is not None:  # attention with VideoMAE's query / value biases
            init.zeros_(module.q_bias)
            init.zeros_(module.v_bias)
        else:
            super()._init_weights(module)  # norms, LayerScale, the tubelet projection


def token_mask_for(config, batch, device, mask_generator, noise=None, bool_masked_pos=None, mask_ratio=None):
    """The TokenMask of a forward: from ``bool_masked_pos`` (batch, tokens), from ``noise`` (batch, rows*cols) for
    tube masking or (batch, tokens) for random masking, or drawn by ``mask_generator``. Kept tokens stay in their
    original order (as VideoMAE's ``x[~mask]``)."""
    slices, rows, cols = config.grid_size
    num_tokens = slices * rows * cols
    if bool_masked_pos is not None:
        if noise is not None:
            raise ValueError("pass either noise or bool_masked_pos, not both")
        if tuple(bool_masked_pos.shape) != (batch, num_tokens):
            raise ValueError(
                f"bool_masked_pos must have shape (batch, num_tokens) = {(batch, num_tokens)}, "
                f"got {tuple(bool_masked_pos.shape)}"
            )
        return mask_from_bool(bool_masked_pos.to(device))
    if noise is None:
        return mask_generator(batch, num_tokens, mask_ratio, config.grid_size, device)
    if hasattr(mask_generator, "from_noise"):  # tube masking: noise over (rows * cols), checked there
        return mask_generator.from_noise(noise.to(device), mask_ratio, config.grid_size)
    if tuple(noise.shape) != (batch, num_tokens):
        raise ValueError(f"noise must have shape (batch, num_tokens) = {(batch, num_tokens)}, got {tuple(noise.shape)}")
    return mask_from_bool(mask_from_noise(noise.to(device), mask_ratio).mask)


class VideoMAEModel(VideoMAEPreTrainedModel):
    """The VideoMAE encoder. With masking it encodes the visible tubelets; with ``mask_ratio=0`` every one.

    ``add_final_norm=False`` leaves out the last LayerNorm (the classifier's fc_norm replaces it after pooling).
    """

    # transformers' output capture: hidden states from the blocks, attention weights from their attention modules
    _can_record_outputs = {"hidden_states": TransformerBlock, "attentions": Attention}

    def __init__(self, config: HfVideoMAEConfig, add_final_norm: bool = True):
        super().__init__(config)
        self.patch_embeddings = TubeletEmbedding(
            config.image_size, config.patch_size, config.tubelet_size, config.num_channels, config.hidden_size
        )
        self.register_buffer("position_embeddings", sinusoid_table(config.num_tokens, config.hidden_size)[None])
        self.layers = build_encoder_blocks(config, qkv_bias="qv" if config.qkv_bias else False)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if add_final_norm else nn.Identity()
        self.mask_generator = build_mask_generator(config.mask_generator, **config.mask_generator_kwargs())
        self.post_init()

    def get_input_embeddings(self):
        return self.patch_embeddings

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """
        pixel_values: (batch, frames, channels, height, width) float, as the video processor returns.
        bool_masked_pos: (batch, num_tokens) bool, optional: True = hidden (transformers' VideoMAE argument); every
            clip must hide the same number of tokens.
        noise: optional, fixes the mask: (batch, rows * cols) for tube masking (the ``int(rows * cols * (1 - r))``
            positions with the smallest noise stay visible in every time slice), (batch, num_tokens) otherwise.
        mask_ratio: default 0.0 (``config.mask_ratio`` with ``noise``): a plain call encodes every token, in order,
            the same features on every call. Pre-training passes ``config.mask_ratio``.
        output_hidden_states, output_attentions, return_dict: as in transformers (captured from the blocks).
        Returns MaskedEncoderOutput: last_hidden_state (batch, kept, hidden) in the tokens' original order, mask
        (batch, num_tokens) 1 = hidden, ids_restore, pooler_output (batch, hidden): the mean of the tokens (VideoMAE
        has no cls token; its classifier pools the same way).
        """
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        self.patch_embeddings.check(pixel_values, self.config.num_frames)
        mask_ratio = feature_mask_ratio(mask_ratio, self.config, noise)
        tokens = self.patch_embeddings(pixel_values) + self.position_embeddings.to(pixel_values.dtype)
        token_mask = token_mask_for(
            self.config, tokens.shape[0], tokens.device, self.mask_generator, noise, bool_masked_pos, mask_ratio
        )
        if mask_ratio > 0.0 or noise is not None or bool_masked_pos is not None:  # else every token, in order
            tokens = gather_tokens(tokens, token_mask.ids_keep)
        hidden, _, _ = run_blocks(self.layers, tokens)
        hidden = self.layernorm(hidden)
        return MaskedEncoderOutput(
            last_hidden_state=hidden,
            mask=token_mask.mask,
            ids_restore=token_mask.ids_restore,
            pooler_output=pool_tokens(hidden, has_cls_token=False),
        )


class VideoMAEDecoder(nn.Module):
    """VideoMAE's decoder: visible tokens then one mask token per hidden tubelet, each with its sinusoid position;
    predicts the pixels of the hidden tubelets only."""

    def __init__(self, config: HfVideoMAEConfig):
        super().__init__()
        self.config = config
        patch = to_2tuple(config.patch_size)
        self.encoder_to_decoder = nn.Linear(config.hidden_size, config.decoder_hidden_size, bias=False)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.decoder_hidden_size))
        table = sinusoid_table(config.num_tokens, config.decoder_hidden_size)
        self.register_buffer("position_embeddings", table[None])
        qkv_bias = "qv" if config.qkv_bias else False
        self.decoder_layers = build_blocks(
            config, config.decoder_num_hidden_layers, **config.decoder_block_kwargs(qkv_bias=qkv_bias)
        )
        norm_eps = config.layer_norm_eps if config.decoder_norm_eps is None else config.decoder_norm_eps
        self.decoder_norm = nn.LayerNorm(config.decoder_hidden_size, eps=norm_eps)
        target_dim = config.tubelet_size * patch[0] * patch[1] * config.num_channels
        self.decoder_pred = nn.Linear(config.decoder_hidden_size, target_dim)

    def forward(self, latent: torch.Tensor, mask: torch.Tensor, decode: torch.Tensor | None = None) -> torch.Tensor:
        """latent (batch, kept, hidden): the encoded visible tokens in original order; mask (batch, num_tokens), 1 =
        hidden from the encoder; decode (batch, num_tokens) bool: the positions to predict, each given a mask token
        (default: the hidden ones; VideoMAE V2 decodes a subset). Returns logits (batch, decoded, tubelet * patch_h *
        patch_w * channels) for the decoded positions in original order."""
        batch, kept = latent.shape[:2]
        decode = mask.bool() if decode is None else decode
        num_decoded = data_dependent_count(decode[0].sum(), decode.shape[1])
        visible = torch.argsort(mask.float(), dim=1, stable=True)[:, :kept]  # visible positions, in order
        decoded = torch.argsort((~decode).float(), dim=1, stable=True)[:, :num_decoded]
        table = self.position_embeddings.expand(batch, -1, -1).to(latent.dtype)
        visible = self.encoder_to_decoder(latent) + gather_tokens(table, visible)
        queries = self.mask_token.to(latent.dtype) + gather_tokens(table, decoded)
        states, _, _ = run_blocks(self.decoder_layers, torch.cat([visible, queries], dim=1))
        return self.decoder_pred(self.decoder_norm(states[:, kept:]))


class VideoMAEForPreTraining(VideoMAEPreTrainedModel):
    """VideoMAE encoder + decoder with the masked, per-tubelet normalised pixel loss."""

    def __init__(self, config: HfVideoMAEConfig):
        super().__init__(config)
        self.videomae = VideoMAEModel(config)
        self.decoder = VideoMAEDecoder(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """Same inputs as :meth:`VideoMAEModel.forward`. Returns MaskedPreTrainingOutput with the MSE ``loss`` over the
        hidden tubelets and ``logits`` (batch, hidden tubelets, tubelet * patch_h * patch_w * channels) in their
        original order, as transformers' VideoMAEForPreTraining."""
        encoded = self.videomae(
            pixel_values,
            bool_masked_pos=bool_masked_pos,
            noise=noise,
            mask_ratio=self.config.mask_ratio if mask_ratio is None else mask_ratio,
            return_dict=True,
            **kwargs,
        )
        check_tensor_condition(
            encoded.mask.sum() > 0,
            "pre-training needs hidden tokens: mask_ratio is 0 and no bool_masked_pos hides any",
        )
        logits = self.decoder(encoded.last_hidden_state, encoded.mask)
        target = self.target(pixel_values)[encoded.mask.bool()].reshape(logits.shape)
        output = MaskedPreTrainingOutput(
            loss=nn.functional.mse_loss(logits.float(), target),
            logits=logits,
            mask=encoded.mask,
            ids_restore=encoded.ids_restore,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
        )
        return output

    def target(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(batch, num_tokens, tubelet * ph * pw * channels) regression targets, in float32, from the clip in [0, 1]
        (the processor's ImageNet normalisation undone for RGB clips, as VideoMAE does)."""
        frames = pixel_values.float()
        if self.config.num_channels == 3:
            mean = frames.new_tensor(IMAGENET_DEFAULT_MEAN).view(1, 1, 3, 1, 1)
            std = frames.new_tensor(IMAGENET_DEFAULT_STD).view(1, 1, 3, 1, 1)
            frames = frames * std + mean
        return tubelet_target(
            frames, self.config.tubelet_size, to_2tuple(self.config.patch_size), self.config.norm_pix_loss
        )


class VideoMAEForVideoClassification(VideoMAEPreTrainedModel):
    """VideoMAE encoder (no masking, no final norm) + mean pooling + fc_norm + linear classifier, as VideoMAE
    fine-tunes."""

    def __init__(self, config: HfVideoMAEConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.videomae = VideoMAEModel(config, add_final_norm=False)
        self.fc_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """pixel_values (batch, frames, channels, H, W); labels (batch,). Returns logits (batch, num_labels)."""
        encoded = self.videomae(pixel_values, mask_ratio=0.0, return_dict=True, **kwargs)
        logits = self.classifier(self.fc_norm(encoded.last_hidden_state.mean(dim=1)))
        loss = classification_loss(logits, labels, self.config) if labels is not None else None
        output = ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=encoded.hidden_states, attentions=encoded.attentions
        )
        return output


__all__ = [
    "HfVideoMAEConfig",
    "VideoMAEPreTrainedModel",
    "VideoMAEModel",
    "VideoMAEForPreTraining",
    "VideoMAEForVideoClassification",
]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
from .presets import TINY_VIDEO, VIT  # noqa: E402

METHOD = dict(
    name="videomae",
    paper=(
        "VideoMAE: Masked Autoencoders are Data-Efficient Learners for Self-Supervised Video Pre-Training "
        "(Tong et al., NeurIPS 2022), arXiv:2203.12602"
    ),
    config_class=HfVideoMAEConfig,
    model_classes={
        "base": VideoMAEModel, "pretraining": VideoMAEForPreTraining,
        "video-classification": VideoMAEForVideoClassification,
    },
    processor="MAEVideoProcessor",
    presets={
        # 64 tokens, 4 of them visible (r = 0.9 keeps 1 of 16 positions per time slice)
        "videomae-tiny": dict(TINY_VIDEO),
        # the paper's ViT-B and ViT-L: 16 frames at 224 px, tubelets 2x16x16, tube masking at 0.9
        "videomae-vit-base-patch16": dict(patch_size=16, **VIT["base"]),
        "videomae-vit-large-patch16": dict(
            patch_size=16, decoder_hidden_size=512, decoder_num_attention_heads=8, decoder_intermediate_size=2048,
            **VIT["large"],
        ),
    },
    modality="video",
)
