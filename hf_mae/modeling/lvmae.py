"""LV-MAE: Learning Long Video Representations through Masked-Embedding Autoencoders (Naiman et al., ICCV 2025).

An MAE over *embeddings* instead of pixels, following the paper and the official code (amazon-science/lv-mae:
``models_mae.py``, ``data/CombinedData.py``):
1. a long video is cut into short (5 s) segments and a frozen off-the-shelf encoder embeds each one, offline
   (``hf_mae.training.segment_embeddings``); the model sees a sequence of segment embeddings (batch, L, D),
   L2-normalised, padded to a common length with an attention mask;
2. a share ``mask_ratio`` of each video's segments is hidden. **Random** masking draws it as MAE does;
   **importance** masking (the README's recommended run) scores every segment by its cosine similarity to its
   predecessor (the first one scores 0), and keeps the ``int(length * (1 - r))`` lowest: the change points stay
   visible and the redundant segments are masked;
3. a ViT encoder (cls token, fixed 1-D sin-cos positions) sees the visible segments; a light decoder gets them plus
   a mask token at every hidden position and predicts each segment's embedding;
4. the loss is the MSE (or ``1 - cos``) between prediction and normalised input embedding on the hidden segments.

Batched variable lengths are exact: padding is never attended to, never kept and never in the loss, and every video
keeps its own ``int(length * (1 - r))`` segments (the official code loops over samples; here padding masks do it).

The processor (``LVMAEFeatureExtractor``: padding and windows) is ``processors/feature_extraction_lvmae.py``.

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Unpack

import torch
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .base import MaskedModelPreTrainedModel, ViTDecoderMixin, check_choice, check_int
from .embeddings import sincos_1d
from .layers import Attention, TransformerBlock, build_blocks, run_blocks
from .losses import classification_loss, masked_mse
from .masking import (
    check_mask_ratio,
    check_tensor_condition,
    data_dependent_count,
    feature_mask_ratio,
    gather_tokens,
    num_kept,
    restore_tokens,
)
from .outputs import MaskedEncoderOutput, MaskedPreTrainingOutput
from .targets import patch_statistics

MASKING_STRATEGIES = ("random", "importance")
LOSSES = ("mse", "cosine")


class LVMAEConfig(ViTDecoderMixin):
    r"""Configuration of an LV-MAE model. Defaults: the README's recommended pre-training run (LanguageBind-Huge
    1024-d segment embeddings, up to 256 segments of 5 s, encoder 1024-d x 32 with 16 heads, decoder 512-d x 8 with
    16 heads, importance masking at 0.5, MSE loss).

    The encoder's fields are :class:`ViTEncoderConfig`'s (MLP ratio 4) and the decoder's :class:`ViTDecoderMixin`'s;
    both widths must be even (sin-cos positions). The official encoder width equals embedding_dim; when they differ
    a linear layer maps embeddings to the encoder width [ours]. Besides:
    embedding_dim: size D of the segment embeddings the model reads and predicts.
    max_segments: the longest sequence (the sin-cos tables' length; official ``num_patches``).
    segment_seconds: seconds per segment at extraction (official ``SEGMENT_LENGTH = 5``).
    frames_per_segment: frames the segment encoder sees per segment (LanguageBind's processor samples 8).
    segment_encoder_name_or_path: the Hugging Face model (id or folder) that embeds segments, recorded so that a
        checkpoint says which embedding space it reads (the paper's ``LanguageBind_Video_Huge_V1.5_FT`` has no
        transformers class, so the default is None) [ours].
    segment_encoder_config: instead of a name, the config dict (with ``model_type``) of a randomly initialised
        segment encoder (tests) [ours].
    mask_ratio: share of each video's segments hidden from the encoder, in [0, 1) (README 0.5).
    masking_strategy: "importance" (README's ``--masking_strategy``) or "random".
    loss: "mse" (official default) or "cosine" (``1 - cos``, official ``--cos_loss``).
    normalize_embeddings: L2-normalise the input embeddings (done by the official data loader).
    norm_target_loss: standardise each target embedding (official ``--norm_pix_loss``, off by default).
    classifier_pooling: "cls" (the encoder's normalised cls token) or "mean" (of the segment tokens) [ours].
    """

    model_type = "lvmae"

    embedding_dim: int = 1024
    max_segments: int = 256
    segment_seconds: float = 5.0
    frames_per_segment: int = 8
    segment_encoder_name_or_path: str | None = None
    segment_encoder_config: dict | None = None
    hidden_size: int = 1024
    num_hidden_layers: int = 32
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    mask_ratio: float = 0.5
    masking_strategy: str = "importance"
    loss: str = "mse"
    normalize_embeddings: bool = True
    norm_target_loss: bool = False
    classifier_pooling: str = "cls"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        for name in ("hidden_size", "decoder_hidden_size"):
            if getattr(self, name) % 2:
                raise ValueError(f"{name} {getattr(self, name)} must be even (sin-cos positions)")
        for name in ("embedding_dim", "max_segments", "frames_per_segment"):
            check_int(name, getattr(self, name))
        check_mask_ratio(self.mask_ratio)
        check_choice("masking_strategy", self.masking_strategy, MASKING_STRATEGIES)
        check_choice("loss", self.loss, LOSSES)
        check_choice("classifier_pooling", self.classifier_pooling, ("cls", "mean"))
        if self.segment_encoder_config is not None and "model_type" not in self.segment_encoder_config:
            raise ValueError("segment_encoder_config must be a config dict with a 'model_type' key")


def position_table(num_segments: int, dim: int) -> torch.Tensor:
    """MAE's 1-D sin-cos table with a zero row for the cls token: (1, 1 + num_segments, dim) float32."""
    table = sincos_1d(torch.arange(num_segments), dim).float()
    return torch.cat([torch.zeros(1, dim), table])[None]


def key_padding_mask(valid: torch.Tensor, dtype: torch.dtype) -> torch.Tensor | None:
    """Additive attention mask (batch, 1, 1, keys) from ``valid`` (batch, keys) bool: the dtype's most negative value
    at padded keys (finite, so no row turns to NaN), or None when nothing is padded (always a mask under
    torch.export / torch.compile, which cannot read ``valid``: zeros where nothing is padded)."""
    if not torch.compiler.is_compiling() and bool(valid.all()):
        return None
    additive = torch.zeros(valid.shape, dtype=dtype, device=valid.device).masked_fill(~valid, torch.finfo(dtype).min)
    return additive[:, None, None, :]


def importance_scores(embeddings: torch.Tensor) -> torch.Tensor:
    """LV-MAE's importance score: each segment's cosine similarity to its predecessor, 0 for the first.

    embeddings: (batch, L, D) -> (batch, L). Low = a change point (kept first by importance masking).
    """
    similarity = nn.functional.cosine_similarity(embeddings[:, 1:].float(), embeddings[:, :-1].float(), dim=-1)
    return torch.cat([similarity.new_zeros(similarity.shape[0], 1), similarity], dim=1)


def keep_lowest(scores: torch.Tensor, attention_mask: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """(batch, L) bool, True = kept: per sample, the ``int(length * (1 - mask_ratio))`` real segments with the lowest
    ``scores`` (ties: the earlier segment), as MAE's argsort of the noise. Padding (attention_mask 0) is never kept."""
    real = attention_mask.bool()
    # the kept count of every possible length, looked up (a table, not a read of the lengths: torch.export traces it)
    counts = torch.tensor([num_kept(n, mask_ratio) for n in range(real.shape[1] + 1)], device=scores.device)
    kept = counts[real.sum(dim=1)]
    order = torch.argsort(scores.float().masked_fill(~real, float("inf")), dim=1, stable=True)
    ranks = torch.argsort(order, dim=1)
    return (ranks < kept[:, None]) & real


@dataclass
class LVMAEEncoderOutput(MaskedEncoderOutput):
    """MaskedEncoderOutput (last_hidden_state (batch, 1 + K, hidden): the cls token then the kept segments in their
    order, K = the batch's largest kept count; mask (batch, L), 1 = a real segment hidden; ids_restore) plus
    ids_keep: (batch, K) the kept segments' positions (slots past a video's own count are padding);
    token_mask: (batch, 1 + K) long, 1 = a real token of last_hidden_state, 0 = padding;
    attention_mask: (batch, L) long, the input's real segments."""

    ids_keep: torch.Tensor | None = None
    token_mask: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None


class LVMAEPreTrainedModel(MaskedModelPreTrainedModel):
    config_class = LVMAEConfig
    base_model_prefix = "lvmae"
    main_input_name = "inputs_embeds"
    input_modalities = ("video",)
    _supports_flash_attn = False  # no flash / flex attention: padding needs an additive attention mask
    _supports_flex_attn = False

    @torch.no_grad()
    def _init_weights(self, module):
        """The official initialisation: xavier-uniform linears, zero biases, N(0, 0.02) cls and mask tokens."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, LVMAEModel):
            init.normal_(module.cls_token, std=std)
            init.copy_(module.position_embeddings, position_table(self.config.max_segments, self.config.hidden_size))
        elif isinstance(module, LVMAEDecoder):
            init.normal_(module.mask_token, std=std)
            table = position_table(self.config.max_segments, self.config.decoder_hidden_size)
            init.copy_(module.position_embeddings, table)
        else:
            super()._init_weights(module)  # norms, LayerScale


def _blocks(config, depth, width, heads, intermediate, drop_path_rate=0.0, dropout=0.0, attention_dropout=0.0):
    return build_blocks(
        config, depth, drop_path_rate=drop_path_rate, hidden_size=width, num_heads=heads,
        intermediate_size=intermediate, hidden_act=config.hidden_act, qkv_bias=config.qkv_bias,
        layer_norm_eps=config.layer_norm_eps, dropout=dropout, attention_dropout=attention_dropout,
    )  # fmt: skip


class LVMAEModel(LVMAEPreTrainedModel):
    """The LV-MAE encoder over segment embeddings. With masking it encodes the cls token and the kept segments; with
    ``mask_ratio=0`` every real segment, in order.

    ``add_final_norm=False`` leaves out the last LayerNorm (a mean-pooling classifier normalises after pooling)."""

    # transformers' output capture: hidden states from the blocks, attention weights from their attention modules
    _can_record_outputs = {"hidden_states": TransformerBlock, "attentions": Attention}

    def __init__(self, config: LVMAEConfig, add_final_norm: bool = True):
        super().__init__(config)
        same = config.embedding_dim == config.hidden_size
        self.embed = nn.Identity() if same else nn.Linear(config.embedding_dim, config.hidden_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.register_buffer("position_embeddings", position_table(config.max_segments, config.hidden_size))
        self.layers = _blocks(
            config, config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.intermediate_size,
            config.drop_path_rate, config.hidden_dropout_prob, config.attention_probs_dropout_prob,
        )  # fmt: skip
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if add_final_norm else nn.Identity()
        self.post_init()

    def check_inputs(self, inputs_embeds, attention_mask) -> torch.Tensor:
        """Clear errors for bad inputs; returns the attention mask (batch, L) long (all ones when None)."""
        if not isinstance(inputs_embeds, torch.Tensor) or not inputs_embeds.is_floating_point():
            got = inputs_embeds.dtype if isinstance(inputs_embeds, torch.Tensor) else type(inputs_embeds).__name__
            raise TypeError(f"inputs_embeds must be a floating-point torch.Tensor (batch, segments, dim), got {got}")
        if inputs_embeds.ndim != 3 or inputs_embeds.shape[0] == 0 or inputs_embeds.shape[1] == 0:
            raise ValueError(f"inputs_embeds must have shape (batch, segments, dim), got {tuple(inputs_embeds.shape)}")
        batch, length, dim = inputs_embeds.shape
        if dim != self.config.embedding_dim:
            raise ValueError(f"inputs_embeds has dim {dim} but the model expects embedding_dim={self.config.embedding_dim}")
        if length > self.config.max_segments:
            raise ValueError(
                f"inputs_embeds has {length} segments, more than max_segments={self.config.max_segments}; "
                "cut the video into windows (the feature extractor does)"
            )
        if attention_mask is None:
            return torch.ones(batch, length, dtype=torch.long, device=inputs_embeds.device)
        if tuple(attention_mask.shape) != (batch, length):
            raise ValueError(
                f"attention_mask must have shape (batch, segments) = {(batch, length)}, got {tuple(attention_mask.shape)}"
            )
        # a runtime assertion under torch.export / torch.compile, which cannot read the mask
        check_tensor_condition(attention_mask.bool().any(dim=1).all(),
                               "attention_mask has a sample without any real segment (a row of zeros)")
        return attention_mask.to(inputs_embeds.device).long()

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        masking_strategy: str | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """
        inputs_embeds: (batch, L, embedding_dim) segment embeddings (L <= max_segments).
        attention_mask: (batch, L), 1 = a real segment, 0 = padding (anywhere); default: all real.
        noise: (batch, L) optional, fixes random masking (the lowest noise is kept); ignored by importance masking,
            which is deterministic.
        mask_ratio: default 0.0 (``config.mask_ratio`` with ``noise``): every real segment, in order, the same
            features on every call; pre-training passes ``config.mask_ratio``. masking_strategy: overrides
            ``config.masking_strategy`` ("random" or "importance").
        output_hidden_states, output_attentions, return_dict: as in transformers (captured from the blocks).
        Returns LVMAEEncoderOutput.
        """
        if inputs_embeds is None:
            raise ValueError("inputs_embeds is required")
        attention_mask = self.check_inputs(inputs_embeds, attention_mask)
        mask_ratio = feature_mask_ratio(mask_ratio, self.config, noise)
        strategy = self.config.masking_strategy if masking_strategy is None else masking_strategy
        if strategy not in MASKING_STRATEGIES:
            raise ValueError(f"masking_strategy must be one of {MASKING_STRATEGIES}, got {strategy!r}")
        embeddings = self.normalize(inputs_embeds)
        batch, length, _ = embeddings.shape

        if noise is not None and tuple(noise.shape) != (batch, length):
            raise ValueError(f"noise must have shape (batch, segments) = {(batch, length)}, got {tuple(noise.shape)}")
        if strategy == "importance":
            scores = importance_scores(embeddings)
        else:
            scores = torch.rand(batch, length, device=embeddings.device) if noise is None else noise.to(embeddings.device)
        keep = keep_lowest(scores, attention_mask, mask_ratio)
        # kept segments first, each group in its original order; every video keeps its own count
        ids_shuffle = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
        counts = keep.sum(dim=1)
        ids_keep = ids_shuffle[:, : data_dependent_count(counts.max(), length)]
        slot_valid = torch.arange(ids_keep.shape[1], device=keep.device)[None] < counts[:, None]

        positions = self.position_embeddings.to(embeddings.dtype)
        tokens = self.embed(embeddings.to(self.cls_token.dtype)) + positions[:, 1 : length + 1]
        tokens = gather_tokens(tokens, ids_keep)
        cls = (self.cls_token + positions[:, :1]).expand(batch, -1, -1)
        hidden = torch.cat([cls, tokens], dim=1)
        token_mask = torch.cat([slot_valid.new_ones(batch, 1), slot_valid], dim=1)
        hidden, _, _ = run_blocks(self.layers, hidden, key_padding_mask(token_mask, hidden.dtype))
        return LVMAEEncoderOutput(
            last_hidden_state=self.layernorm(hidden),
            mask=(attention_mask.bool() & ~keep).float(),
            ids_restore=torch.argsort(ids_shuffle, dim=1),
            ids_keep=ids_keep,
            token_mask=token_mask.long(),
            attention_mask=attention_mask,
        )

    def normalize(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """The embeddings the model reads and reconstructs: L2-normalised (official data loader) unless disabled."""
        if not self.config.normalize_embeddings:
            return inputs_embeds
        return nn.functional.normalize(inputs_embeds.float(), dim=-1).to(inputs_embeds.dtype)


class LVMAEDecoder(nn.Module):
    """Kept segments plus a mask token at every hidden one, cls token first, 1-D sin-cos positions; predicts every
    segment's embedding. Padding is attended by nobody."""

    def __init__(self, config: LVMAEConfig):
        super().__init__()
        self.config = config
        self.decoder_embed = nn.Linear(config.hidden_size, config.decoder_hidden_size)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.decoder_hidden_size))
        self.register_buffer("position_embeddings", position_table(config.max_segments, config.decoder_hidden_size))
        self.decoder_layers = _blocks(
            config, config.decoder_num_hidden_layers, config.decoder_hidden_size, config.decoder_num_attention_heads,
            config.decoder_intermediate_size,
        )  # fmt: skip
        self.decoder_norm = nn.LayerNorm(config.decoder_hidden_size, eps=config.layer_norm_eps)
        self.decoder_pred = nn.Linear(config.decoder_hidden_size, config.embedding_dim)

    def forward(self, encoded: LVMAEEncoderOutput) -> torch.Tensor:
        """encoded: the encoder's output -> logits (batch, L, embedding_dim) for every position, in order."""
        hidden = self.decoder_embed(encoded.last_hidden_state)
        # a padded slot of ``hidden`` must not land on a hidden segment: make it a mask token before unshuffling
        visible = torch.where(encoded.token_mask[:, 1:, None].bool(), hidden[:, 1:], self.mask_token.to(hidden.dtype))
        tokens = restore_tokens(visible, self.mask_token, encoded.ids_restore)
        positions = self.position_embeddings.to(hidden.dtype)
        tokens = torch.cat([hidden[:, :1], tokens], dim=1) + positions[:, : tokens.shape[1] + 1]
        real = torch.cat([encoded.attention_mask.new_ones(tokens.shape[0], 1), encoded.attention_mask], dim=1).bool()
        tokens, _, _ = run_blocks(self.decoder_layers, tokens, key_padding_mask(real, tokens.dtype))
        return self.decoder_pred(self.decoder_norm(tokens))[:, 1:]


def reconstruction_loss(prediction, target, mask, kind: str = "mse") -> torch.Tensor:
    """Mean over the hidden segments (mask (batch, L), 1 = hidden) of the per-segment MSE (mean over dim) or
    ``1 - cos``; prediction, target: (batch, L, dim)."""
    if kind == "mse":
        return masked_mse(prediction, target, mask)
    per_segment = 1.0 - nn.functional.cosine_similarity(prediction.float(), target.float(), dim=-1, eps=1e-6)
    mask = mask.to(per_segment.dtype)
    return (per_segment * mask).sum() / mask.sum().clamp_min(1.0)


class LVMAEForPreTraining(LVMAEPreTrainedModel):
    """LV-MAE encoder + decoder with the masked embedding-reconstruction loss."""

    def __init__(self, config: LVMAEConfig):
        super().__init__(config)
        self.lvmae = LVMAEModel(config)
        self.decoder = LVMAEDecoder(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        masking_strategy: str | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """Same inputs as :meth:`LVMAEModel.forward`. Returns MaskedPreTrainingOutput: ``logits`` (batch, L,
        embedding_dim) predicted embeddings of every position, ``loss`` over the hidden real segments, ``mask``."""
        encoded = self.lvmae(
            inputs_embeds,
            attention_mask=attention_mask,
            noise=noise,
            mask_ratio=self.config.mask_ratio if mask_ratio is None else mask_ratio,
            masking_strategy=masking_strategy,
            return_dict=True,
            **kwargs,
        )
        if encoded.mask.sum() == 0:
            raise ValueError("pre-training needs hidden segments: mask_ratio hides none of these videos' segments")
        logits = self.decoder(encoded)
        loss = reconstruction_loss(logits, self.target(inputs_embeds), encoded.mask, self.config.loss)
        output = MaskedPreTrainingOutput(
            loss=loss,
            logits=logits,
            mask=encoded.mask,
            ids_restore=encoded.ids_restore,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
        )
        return output

    def target(self, inputs_embeds: torch.Tensor) -> torch.Tensor:
        """(batch, L, embedding_dim) float32 targets: the normalised input embeddings, standardised per segment with
        ``norm_target_loss`` (the official norm_pix_loss: unbiased variance, eps 1e-6)."""
        target = self.lvmae.normalize(inputs_embeds).float()
        if self.config.norm_target_loss:
            mean, std = patch_statistics(target)  # per segment, as MAE's per patch
            target = (target - mean) / std
        return target


class LVMAEForVideoClassification(LVMAEPreTrainedModel):
    """LV-MAE encoder (no masking) + the cls token (or the mean of the real segment tokens, then fc_norm) + a linear
    classifier: a linear probe / fine-tuning head on long-video labels."""

    def __init__(self, config: LVMAEConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        mean = config.classifier_pooling == "mean"
        self.lvmae = LVMAEModel(config, add_final_norm=not mean)
        self.fc_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if mean else nn.Identity()
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        inputs_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """inputs_embeds (batch, L, embedding_dim), attention_mask (batch, L); labels (batch,). Returns logits
        (batch, num_labels)."""
        encoded = self.lvmae(
            inputs_embeds,
            attention_mask=attention_mask,
            mask_ratio=0.0,
            return_dict=True,
            **kwargs,
        )
        tokens = encoded.last_hidden_state
        if self.config.classifier_pooling == "mean":
            real = encoded.token_mask[:, 1:, None].to(tokens.dtype)
            pooled = self.fc_norm((tokens[:, 1:] * real).sum(1) / real.sum(1))
        else:
            pooled = tokens[:, 0]
        logits = self.classifier(pooled)
        loss = classification_loss(logits, labels, self.config) if labels is not None else None
        output = ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=encoded.hidden_states, attentions=encoded.attentions
        )
        return output


__all__ = [
    "LVMAEConfig",
    "LVMAEPreTrainedModel",
    "LVMAEModel",
    "LVMAEForPreTraining",
    "LVMAEForVideoClassification",
    "importance_scores",
    "keep_lowest",
]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
METHOD = dict(
    name="lvmae",
    paper=(
        "LV-MAE: Learning Long Video Representations through Masked-Embedding Autoencoders "
        "(Naiman et al., ICCV 2025), arXiv:2504.03501"
    ),
    config_class=LVMAEConfig,
    model_classes={
        "base": LVMAEModel, "pretraining": LVMAEForPreTraining, "video-classification": LVMAEForVideoClassification,
    },
    processor="LVMAEFeatureExtractor",
    presets={
        # 32-d segment embeddings, up to 64 segments; a 64-d x 2 encoder and a 32-d x 1 decoder
        "lvmae-tiny": dict(
            embedding_dim=32, max_segments=64, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=256, decoder_hidden_size=32, decoder_num_hidden_layers=1,
            decoder_num_attention_heads=4, decoder_intermediate_size=128,
        ),
        # the README's run on LanguageBind-Huge embeddings: 256 x 1024-d, encoder 1024 x 32, decoder 512 x 8,
        # importance masking at 0.5, MSE
        "lvmae-languagebind-huge": dict(),
    },
    modality="embeddings",  # (batch, segments, dim) embeddings, not clips: the shared suites skip it
)
