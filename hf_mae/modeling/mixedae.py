"""MixedAE: Mixed Autoencoder for Self-supervised Visual Representation Learning (Chen et al., CVPR 2023).

MAE with image mixing as the masking, made useful by a pretext task that undoes the mixing:
1. **mixing**: the batch is cut into groups of ``mix_group`` consecutive images (paper: mixing ratio r = 0.25, so 4).
   Each group becomes ONE mixed image: every patch position is taken from exactly one member, each member supplying
   ``L / mix_group`` positions (disjoint sets covering the grid). Seen from one source image this is MAE masking at
   ratio ``1 - 1 / mix_group`` (0.75), and the encoder sees as many tokens as MAE's, but in a quarter of the images.
2. **segment embeddings**: a learned vector per group member (which image a patch came from) is added to each token
   of the mixed image, as BERT's sentence A/B embeddings.
3. **homologous attention**: in the chosen encoder layers each patch query attends only to its ``homologous_topk``
   highest-scoring patch keys (``TopK(QK^T / sqrt(d))``, default ``L / mix_group``: the number of homologous
   patches) plus the cls token; the cls query attends to everything. The selection is per head and carries no
   gradient; the kept scores go through the usual softmax. It is "replaceable": same weights as plain attention,
   so fine-tuning and feature extraction run the plain ViT on unmixed images.
4. **unmixing decoder**: for each source image the MAE decoder gets the encoded tokens of the positions it supplied
   plus the mask token everywhere else (and the mixed image's cls token), and the loss is the norm-pix MSE on the
   positions it did not supply: exactly MAE's loss per source.
5. **homologous recognition** (the homologous contrastive loss): a projection head (Linear-GELU-Linear) on the
   encoded patch tokens of each mixed image, centred over the image and l2-normalised; every token is an anchor whose positives are the other
   tokens of the same source and whose negatives are the tokens of the other sources in the same mixed image
   (supervised-contrastive form, temperature ``contrast_temperature``). Total loss:
   ``reconstruction + contrast_weight * homologous``. The reported ``homologous_accuracy`` is the share of each
   token's ``L / mix_group - 1`` most similar tokens that are homologous (chance: ``(L/g - 1) / (L - 1)``).

A fixed ``noise`` (batch, L) fixes the partition: each group ranks the positions by the noise of its FIRST member
(ascending), and ranks ``[j * L/g, (j + 1) * L/g)`` go to member j (member 0 thus gets MAE's kept set for that noise).

No official code was released; Natyren/MixedAE is an unofficial, incomplete re-implementation. Choices made here
without a released reference are marked "[ours]" in :class:`MixedAEConfig`.

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Unpack

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import capture_outputs

from .base import check_int
from .embeddings import to_2tuple
from .layers import Attention, capturing_attentions
from .losses import masked_mse
from .mae import MAEConfig, MAEDecoder, MAEForImageClassification, MAEForPreTraining, MAEModel, MAEPreTrainedModel
from .masking import check_mask_ratio, feature_mask_ratio
from .outputs import MaskedPreTrainingOutput
from .targets import pixel_target


class MixedAEConfig(MAEConfig):
    r"""Configuration of a MixedAE model: MAE's fields (defaults: the paper's ViT-B/16 with MAE's 512-d x 8 decoder,
    norm-pix loss) plus

    mix_group: images mixed into one (paper: mixing ratio 0.25 -> 4). The batch and the patch count must be
        divisible by it.
    mask_ratio: fixed by the mixing, ``1 - 1 / mix_group`` (None: derived; another value is a ValueError).
    homologous_topk: keys each patch query keeps in homologous attention (None: ``L // mix_group``, the paper's
        "top-k = homologous patch count", which follows the resolution).
    homologous_attention_layers: encoder layer indices (0-based) that use homologous attention during pre-training
        (None: all of them [ours: the layer choice of the paper was not available]).
    use_segment_embeddings: add a learned embedding per group member to the mixed tokens (paper: yes).
    homologous_projection_dim: output width of the homologous-recognition projection head [ours].
    contrast_temperature: temperature of the homologous contrastive loss [ours: 0.5, the value the unofficial
        Natyren/MixedAE attaches to its contrastive term].
    contrast_weight: weight of the homologous contrastive loss added to the reconstruction loss [ours: 1].
    """

    model_type = "mixedae"

    mask_ratio: float | None = None
    mix_group: int = 4
    homologous_topk: int | None = None
    homologous_attention_layers: list[int] | None = None
    use_segment_embeddings: bool = True
    homologous_projection_dim: int = 256
    contrast_temperature: float = 0.5
    contrast_weight: float = 1.0

    def __post_init__(self, **kwargs):
        group = check_int("mix_group", self.mix_group, minimum=2)  # images per mixed image
        if self.mask_ratio is None:
            self.mask_ratio = 1.0 - 1.0 / group
        super().__post_init__(**kwargs)  # validates mask_ratio's type and range first
        check_mixing_ratio(self.mask_ratio, group, allow_zero=False)
        if self.homologous_topk is not None:
            check_int("homologous_topk", self.homologous_topk)
        layers = self.homologous_attention_layers
        if layers is not None:
            bad = [i for i in layers if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < self.num_hidden_layers]
            if bad:
                raise ValueError(
                    f"homologous_attention_layers must hold layer indices in [0, {self.num_hidden_layers}), got {layers!r}"
                )
        if not self.contrast_temperature > 0:
            raise ValueError(f"contrast_temperature must be > 0, got {self.contrast_temperature}")
        if self.contrast_weight < 0:
            raise ValueError(f"contrast_weight must be >= 0, got {self.contrast_weight}")


# ---------------------------------------------------------------------------------------------------------------
# The mixing partition


def check_mixing_ratio(mask_ratio, mix_group: int, allow_zero: bool = True) -> float:
    """``mask_ratio`` must be ``1 - 1 / mix_group`` (what mixing hides from each source), or 0 (no masking) where
    allowed. Returns it as a float."""
    mask_ratio = check_mask_ratio(mask_ratio)
    if (allow_zero and mask_ratio == 0.0) or math.isclose(mask_ratio, 1.0 - 1.0 / mix_group):
        return mask_ratio
    allowed = f"1 - 1/mix_group = {1.0 - 1.0 / mix_group:g}" + (" or 0.0 (no masking)" if allow_zero else "")
    raise ValueError(f"mask_ratio of MixedAE is fixed by mix_group={mix_group}: got {mask_ratio}, allowed {allowed}")


def mixing_noise(noise, batch: int, num_patches: int, mix_group: int, device=None) -> torch.Tensor:
    """Checks that a batch of ``batch`` images of ``num_patches`` patches can be mixed and returns the noise
    (batch, num_patches) that fixes the partition: ``noise`` itself (shape-checked) or a uniform draw."""
    if batch % mix_group:
        raise ValueError(
            f"pixel_values batch size {batch} is not divisible by mix_group={mix_group}: MixedAE mixes groups of "
            f"{mix_group} consecutive images; use a batch size that is a multiple of {mix_group}"
        )
    if num_patches % mix_group:
        raise ValueError(
            f"the patch grid holds {num_patches} patches, not divisible by mix_group={mix_group}: each image of a "
            "group must supply the same number of positions; choose another image size"
        )
    if noise is None:
        return torch.rand(batch, num_patches, device=device)
    if tuple(noise.shape) != (batch, num_patches):
        raise ValueError(f"noise must have shape (batch, num_patches) = {(batch, num_patches)}, got {tuple(noise.shape)}")
    return noise.to(device)


def mixing_partition(noise: torch.Tensor, mix_group: int) -> torch.Tensor:
    """noise (batch, L) -> partition (batch // mix_group, L) long: the member (0 .. mix_group - 1) of each group
    whose patch fills each position of the group's mixed image. Positions are ranked by the noise of the group's
    first member; ranks ``[j * L/g, (j + 1) * L/g)`` go to member j."""
    ranks = noise[::mix_group].argsort(dim=1).argsort(dim=1)
    return ranks // (noise.shape[1] // mix_group)


def source_mask(partition: torch.Tensor, mix_group: int) -> torch.Tensor:
    """partition (groups, L) -> mask (groups * mix_group, L) float, per source image: 1 where another member of its
    group supplied the position (hidden from that image), 0 where it supplied its own patch."""
    members = torch.arange(mix_group, device=partition.device)
    return (partition[:, None, :] != members[None, :, None]).flatten(0, 1).float()


def partition_noise(noise: torch.Tensor, mix_group: int) -> torch.Tensor:
    """MAE-style noise per source image (batch, L) whose ``L / mix_group`` smallest values sit exactly on the
    positions the image supplies to its mixed image, so ``masking.mask_from_noise`` reproduces :func:`source_mask`
    (used by the per-image encoder :class:`MixedAEModel` and for ``ids_restore``)."""
    batch, num_patches = noise.shape
    share = num_patches // mix_group
    ranks = noise[::mix_group].argsort(dim=1).argsort(dim=1).repeat_interleave(mix_group, dim=0)
    member = torch.arange(batch, device=noise.device).remainder(mix_group)[:, None]
    return (ranks - member * share).remainder(num_patches).to(noise.dtype)


def mix_tokens(tokens: torch.Tensor, partition: torch.Tensor) -> torch.Tensor:
    """tokens (batch, L, dim) of the source images -> (batch // g, L, dim): position l of mixed image n is token l
    of image ``n * g + partition[n, l]``."""
    batch, num_patches, dim = tokens.shape
    grouped = tokens.view(partition.shape[0], batch // partition.shape[0], num_patches, dim)
    index = partition[:, None, :, None].expand(-1, 1, -1, dim)
    return grouped.gather(1, index).squeeze(1)


# ---------------------------------------------------------------------------------------------------------------
# Homologous attention and homologous recognition


@torch.no_grad()
def homologous_keys(attention: Attention, hidden_states: torch.Tensor, topk: int) -> torch.Tensor:
    """Which keys each query of ``attention`` may attend to under homologous (TopK) attention, for this input.

    hidden_states: (batch, 1 + L, hidden), the attention's input (after the block's norm1), cls token first.
    Returns (batch, heads, 1 + L, 1 + L) bool. Per head, each patch query keeps the cls key and its ``topk``
    highest-scoring patch keys (scores ``q.k * scaling``, from the attention's own q/k projections); the cls query
    keeps every key. Computed without gradient: the selection is discrete, the softmax over the kept scores is
    differentiated as usual.
    """
    batch, tokens, _ = hidden_states.shape
    heads = attention.num_heads
    # the attention's own projections, in either qkv layout (and with any adapter on them)
    query, key, _ = attention.project(hidden_states)
    scores = torch.matmul(query[:, :, 1:], key[:, :, 1:].transpose(-1, -2))  # patch queries x patch keys
    chosen = scores.topk(min(topk, tokens - 1), dim=-1).indices
    keep = torch.ones(batch, heads, tokens, tokens, dtype=torch.bool, device=hidden_states.device)
    keep[:, :, 1:, 1:] = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, chosen, True)
    return keep


@torch.no_grad()
def homologous_attention_mask(attention: Attention, hidden_states: torch.Tensor, topk: int) -> torch.Tensor:
    """The additive attention mask (batch, heads, 1 + L, 1 + L) of :func:`homologous_keys`: 0 where a query may
    attend, the dtype's minimum elsewhere (eager and sdpa attention)."""
    keep = homologous_keys(attention, hidden_states, topk)
    blocked = torch.zeros(keep.shape, dtype=hidden_states.dtype, device=hidden_states.device)
    return blocked.masked_fill_(~keep, torch.finfo(hidden_states.dtype).min)


def homologous_block_mask(attention: Attention, hidden_states: torch.Tensor, topk: int):
    """:func:`homologous_keys` as a flex-attention ``BlockMask``: flex attention reads an additive mask tensor
    through a score function, which crashes the process on CPU (torch 2.13); a mask function over ``keep`` does
    not."""
    from torch.nn.attention.flex_attention import create_block_mask

    keep = homologous_keys(attention, hidden_states, topk)
    batch, heads, tokens, _ = keep.shape

    def may_attend(b, h, query, key):
        return keep[b, h, query, key]

    return create_block_mask(may_attend, batch, heads, tokens, tokens, device=keep.device.type)


def homologous_contrastive_loss(features: torch.Tensor, partition: torch.Tensor, temperature: float, mix_group: int):
    """Homologous recognition within each mixed image.

    features: (groups, L, dim) projected patch tokens; partition: (groups, L) source (0 .. mix_group - 1) of each
    token. With s the cosine similarities of the features centred over each mixed image, for every anchor i:
    ``-mean_{p homologous to i, p != i} log(exp(s_ip / t) / sum_{a != i} exp(s_ia / t))``, averaged over anchors and mixed images. Returns ``(loss, accuracy)``: accuracy is the share of
    each token's ``L/g - 1`` most similar other tokens that come from its own source (no gradient).
    """
    groups, num_patches, _ = features.shape
    # Centred per mixed image first: only how its tokens differ matters, and without centring a tiny model fell
    # into a constant projection (loss stuck at log(L - 1), vanishing gradients) in our digits runs.
    features = features.float()
    features = F.normalize(features - features.mean(dim=1, keepdim=True), dim=-1)
    similarity = torch.matmul(features, features.transpose(1, 2)) / temperature
    self_pair = torch.eye(num_patches, dtype=torch.bool, device=features.device)
    homologous = (partition[:, :, None] == partition[:, None, :]) & ~self_pair
    logits = similarity.masked_fill(self_pair, float("-inf"))
    log_prob = logits - logits.logsumexp(dim=-1, keepdim=True)
    positives = homologous.sum(-1).clamp_min(1)
    loss = -(log_prob.masked_fill(~homologous, 0.0).sum(-1) / positives).mean()
    with torch.no_grad():
        neighbours = logits.topk(max(num_patches // mix_group - 1, 1), dim=-1).indices
        accuracy = homologous.gather(-1, neighbours).float().mean()
    return loss, accuracy


class HomologousHead(nn.Module):
    """Projection of encoded patch tokens for homologous recognition: Linear -> GELU -> Linear."""

    def __init__(self, config: MixedAEConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = nn.GELU()
        self.projection = nn.Linear(config.hidden_size, config.homologous_projection_dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(groups, L, hidden) -> (groups, L, homologous_projection_dim)."""
        return self.projection(self.act(self.dense(tokens)))


# ---------------------------------------------------------------------------------------------------------------
# Models


@dataclass
class MixedAEForPreTrainingOutput(MaskedPreTrainingOutput):
    """MAE's pre-training output, per source image (``loss`` is the total here; ``mask`` (batch, L) is 1 where the
    image is hidden, i.e. where another member supplied the patch; ``hidden_states``/``attentions`` are the mixed
    encoder's, (batch // mix_group, 1 + L, ...)), plus
    reconstruction_loss: norm-pix MSE of every source on its hidden positions;
    homologous_loss: the homologous contrastive loss; homologous_accuracy: its top-(L/g - 1) recognition accuracy;
    partition: (batch // mix_group, L) the member of each group that supplied each position of its mixed image.
    """

    reconstruction_loss: torch.Tensor | None = None
    homologous_loss: torch.Tensor | None = None
    homologous_accuracy: torch.Tensor | None = None
    partition: torch.Tensor | None = None


class MixedAEModel(MAEModel):
    """The MixedAE ViT encoder, on unmixed images with plain attention (as the paper fine-tunes and evaluates).

    With ``mask_ratio=0`` it is a plain ViT (features). With masking it encodes each image alone on the patches that
    image supplies to its mixed image (the pre-training partition of the same ``noise``), MAE-style, so a fixed
    ``noise`` gives the same ``mask`` here and in :class:`MixedAEForPreTraining`; then the batch must be divisible
    by ``mix_group``.
    """

    config_class = MixedAEConfig

    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """Inputs and outputs as :meth:`MAEModel.forward` (default: nothing masked; with ``noise``,
        ``config.mask_ratio``); ``mask_ratio`` is 0 or ``1 - 1 / mix_group``."""
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        grid = self.embeddings.patch_embeddings.grid_for(pixel_values, allow_other_size=interpolate_pos_encoding)
        mask_ratio = check_mixing_ratio(feature_mask_ratio(mask_ratio, self.config, noise), self.config.mix_group)
        if mask_ratio > 0.0:
            noise = mixing_noise(noise, pixel_values.shape[0], grid[0] * grid[1], self.config.mix_group, pixel_values.device)
            noise = partition_noise(noise, self.config.mix_group)
        return super().forward(
            pixel_values, noise=noise, mask_ratio=mask_ratio, interpolate_pos_encoding=interpolate_pos_encoding, **kwargs
        )

    @capture_outputs(tie_last_hidden_states=False)
    def encode_mixed(self, mixed: torch.Tensor, cls: torch.Tensor, **kwargs: Unpack[TransformersKwargs]):
        """Runs the blocks on mixed images (pre-training) with homologous attention in
        ``homologous_attention_layers``.

        mixed: (groups, L, hidden) mixed patch tokens with positions (and segment embeddings); cls: (groups, 1,
        hidden). Returns BaseModelOutput: last_hidden_state (groups, 1 + L, hidden) after the final norm; hidden
        states and attentions captured from the blocks as in :meth:`forward` (output_hidden_states, ...).
        """
        config = self.config
        layers = config.homologous_attention_layers
        layers = set(range(config.num_hidden_layers)) if layers is None else set(layers)
        topk = config.homologous_topk or mixed.shape[1] // config.mix_group
        hidden = torch.cat([cls, mixed], dim=1)
        output_attentions = capturing_attentions()  # eager attention only while attentions are recorded
        # flex attention takes the selection as a BlockMask; weights (output_attentions) come from eager attention
        flex = config._attn_implementation == "flex_attention" and not output_attentions
        build_mask = homologous_block_mask if flex else homologous_attention_mask
        for index, block in enumerate(self.layers):
            # the selection is made outside the block, so activation checkpointing replays the same mask
            mask = build_mask(block.attention, block.norm1(hidden), topk) if index in layers else None
            hidden, _ = block(hidden, mask, output_attentions)
        return BaseModelOutput(last_hidden_state=self.layernorm(hidden))


class MixedAEForImageClassification(MAEForImageClassification):
    """A MixedAE encoder with MAE's fine-tuning classifier: unmixed images, plain attention, no masking."""

    config_class = MixedAEConfig


class MixedAEForPreTraining(MAEForPreTraining):
    """Mixed encoder (segment embeddings, homologous attention) + per-source MAE decoder + homologous recognition."""

    config_class = MixedAEConfig

    def __init__(self, config: MixedAEConfig):
        MAEPreTrainedModel.__init__(self, config)
        self.mae = MixedAEModel(config)
        self.decoder = MAEDecoder(config)
        # pre-training only (the encoder never sees mixed images afterwards), so kept out of the base model
        self.segment_embeddings = (
            nn.Parameter(torch.zeros(config.mix_group, config.hidden_size)) if config.use_segment_embeddings else None
        )
        self.homologous_head = HomologousHead(config)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, MixedAEForPreTraining) and module.segment_embeddings is not None:
            init.normal_(module.segment_embeddings, std=self.config.initializer_range)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """
        pixel_values: (batch, channels, height, width), batch divisible by ``mix_group``; groups of ``mix_group``
            consecutive images are mixed.
        noise: (batch, num_patches), optional; fixes the partition (see :func:`mixing_partition`).
        mask_ratio: only ``1 - 1 / mix_group`` (the default) is accepted: mixing fixes it.
        Returns MixedAEForPreTrainingOutput: ``loss`` = reconstruction + ``contrast_weight`` * homologous loss,
        ``logits`` (batch, L, patch_h * patch_w * channels) per source image, ``mask`` (batch, L), ``ids_restore``.
        """
        config = self.config
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        embeddings = self.mae.embeddings
        grid = embeddings.patch_embeddings.grid_for(pixel_values, allow_other_size=interpolate_pos_encoding)
        check_mixing_ratio(config.mask_ratio if mask_ratio is None else mask_ratio, config.mix_group, allow_zero=False)
        group = config.mix_group
        noise = mixing_noise(noise, pixel_values.shape[0], grid[0] * grid[1], group, pixel_values.device)

        # 1-2. mix each group's patches (with their positions) into one image; tell the encoder which member is where
        partition = mixing_partition(noise, group)
        mask = source_mask(partition, group).to(pixel_values.dtype)
        patches, cls = embeddings(pixel_values, grid)
        mixed = mix_tokens(patches, partition)
        if self.segment_embeddings is not None:
            mixed = mixed + self.segment_embeddings[partition].to(mixed.dtype)
        # 3. encode the mixed images with homologous attention
        encoded = self.mae.encode_mixed(mixed, cls[::group], return_dict=True, **kwargs)
        latent = encoded.last_hidden_state

        # 4. unmix: each source keeps the encoded tokens it supplied, mask tokens elsewhere, and its group's cls token
        decoded = self.decoder.decoder_embed(latent).repeat_interleave(group, dim=0)
        tokens = torch.where(mask.bool().unsqueeze(-1), self.decoder.mask_token.to(decoded.dtype), decoded[:, 1:])
        decoder_input = torch.cat([decoded[:, :1], tokens], dim=1) + self.decoder.positions(grid)
        logits = self.decoder.predict(decoder_input)
        target = pixel_target(pixel_values.float(), to_2tuple(config.patch_size), config.norm_pix_loss)
        reconstruction = masked_mse(logits, target, mask)

        # 5. homologous recognition on the encoded patch tokens of each mixed image
        homologous, accuracy = homologous_contrastive_loss(
            self.homologous_head(latent[:, 1:]), partition, config.contrast_temperature, group
        )
        output = MixedAEForPreTrainingOutput(
            loss=reconstruction + config.contrast_weight * homologous,
            logits=logits,
            mask=mask,
            ids_restore=partition_noise(noise, group).argsort(dim=1).argsort(dim=1),
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
            reconstruction_loss=reconstruction,
            homologous_loss=homologous,
            homologous_accuracy=accuracy,
            partition=partition,
        )
        return output


__all__ = [
    "MixedAEConfig",
    "MixedAEModel",
    "MixedAEForPreTraining",
    "MixedAEForImageClassification",
    "MixedAEForPreTrainingOutput",
    "mixing_partition",
    "source_mask",
    "homologous_keys",
    "homologous_attention_mask",
    "homologous_block_mask",
    "homologous_contrastive_loss",
]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
from .presets import TINY, VIT  # noqa: E402

METHOD = dict(
    name="mixedae",
    paper=(
        "Mixed Autoencoder for Self-supervised Visual Representation Learning (Chen et al., CVPR 2023), "
        "arXiv:2303.17152"
    ),
    config_class=MixedAEConfig,
    model_classes={
        "base": MixedAEModel,
        "pretraining": MixedAEForPreTraining,
        "image-classification": MixedAEForImageClassification,
    },
    processor="MAEImageProcessor",
    # no official code (see the method card); the paper builds on MAE's pipeline, so MAE's crop + flip [unverified]
    pretrain_augmentation=dict(crop_scale=(0.2, 1.0), resample="bicubic"),
    # no official code: MAE's blr 1.5e-4 at 4096 (hf-mae's choice; the paper follows MAE's recipe [unverified])
    pretrain_base_lr=1.5e-4, pretrain_batch=4096,
    presets={
        # mae-tiny's sizes, groups of 4 (16 of the 64 patches per source), a 64-d recognition head
        "mixedae-tiny": dict(TINY, homologous_projection_dim=64),
        # the paper's ViT-B/16 with MAE's decoder, mixing ratio 0.25 (groups of 4, r = 0.75 per source)
        "mixedae-vit-base-patch16": dict(patch_size=16, mix_group=4, **VIT["base"]),
    },
)
