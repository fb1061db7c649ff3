"""I2P-MAE: Learning 3D Representations from 2D Pre-trained Models via Image-to-Point Masked Autoencoders
(Zhang et al., CVPR 2023), arXiv:2212.06785.

A hierarchical point-cloud MAE (Point-M2AE's backbone) taught by a frozen 2-D image encoder:
1. tokens at several scales: FPS + kNN groups of the points (scale 0), then groups of the scale-0 centres (scale 1),
   and so on; scale 0 embeds raw neighbourhoods with a mini-PointNet, every later scale merges the features of its
   members with another mini-PointNet;
2. each cloud is projected to 3 depth-like images (one per axis permutation xyz / zxy / yzx) that a frozen 2-D
   encoder (CLIP ViT-B/16 by default, any Hugging Face ViT-like ``AutoModel``) turns into patch features and a
   last-layer CLS->patch attention map;
3. **2-D-guided masking**: every top-scale centre gets the attention at its pixel (mean over the views); the visible
   centres are the first ``1 - r`` of a draw without replacement from ``softmax(saliency)``, so salient parts tend to
   stay visible; the mask goes down the scales (a lower token is visible iff a visible upper group contains it);
4. each scale's encoder sees its visible tokens only; a decoder goes back up from the top scale with mask tokens
   and PointNet++ feature propagation (3-NN interpolation fused with the encoder's visible features);
5. targets at the last decoded scale (the middle one with the paper's 3 scales and 2 decoder stages):
   Chamfer-L2 of the points of the *masked* groups, and, for the *visible* groups, the 3-view 2-D features at each
   member point's pixel (MSE). ``loss = loss_3d_weight * loss_3d + loss_2d_weight * loss_2d``.

The teacher is frozen and kept out of the checkpoint (it is no submodule): it is rebuilt from
``teacher_name_or_path`` (downloaded on first use), from ``teacher_config`` (randomly initialised from
``teacher_seed``: tests), or passed as an instance (``I2PMAEForPreTraining(config, teacher=...)``).

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Unpack

import torch
from torch import nn
from transformers import PreTrainedConfig
from transformers import initialization as init
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .base import MaskedModelPreTrainedModel, check_choice, check_heads, check_int
from .layers import Attention, DropPath, TransformerBlock, build_blocks, run_blocks
from .losses import chamfer_l2
from .masking import check_mask_ratio, data_dependent_count, feature_mask_ratio, gather_tokens, restore_tokens
from .outputs import pool_tokens
from .point_groups import (
    PointGroupEmbedding,
    PointGroups,
    check_group_noise,
    check_point_values,
    gather_points,
    group_points,
    knn_indices,
    point_classifier_head,
    point_classifier_output,
)
from .pointmae import PointPositionEmbedding, point_mask_from_noise
from .point_projection import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    VIEW_AXES,
    point_pixels,
    project_to_depth_maps,
    sample_at_pixels,
)
from .teachers import FrozenTeacherMixin, build_auto_model

MASKINGS = ("guided", "topk", "random")


class I2PMAEConfig(PreTrainedConfig):
    r"""Configuration of an I2P-MAE model. Defaults are the paper's pre-training config (``cfgs/pre-training/i2p-mae
    .yaml``): 2048 points, 3 scales, CLIP ViT-B/16 teacher.

    num_points: points per cloud the model is built for (the processor's ``num_points``).
    group_counts: groups per scale, bottom to top ([512, 256, 64]); scale 0 groups the points, scale i the centres
        of scale i - 1. ``num_groups`` / ``num_groups_top`` (read-only) is the top count, the masked token count.
    group_sizes: members per group per scale ([16, 8, 8]).
    hidden_sizes, depths: encoder width and blocks per scale ([96, 192, 384], [5, 5, 5]).
    embedding_channels: the scale-0 mini-PointNet's widths: first MLP (hidden, pooled), second MLP hidden
        ([128, 256, 512], Point-MAE's); later scales merge with widths equal to the scale below.
    num_attention_heads, mlp_ratio, qkv_bias, drop_path_rate, layer_norm_eps: the transformer blocks (6 heads, 4,
        no qkv bias, 0.1 spread over all encoder blocks, 1e-5 as nn.LayerNorm).
    decoder_depths: blocks per decoder stage, top scale first ([1, 1]); stage j runs at scale ``S - 1 - j`` with that
        scale's width, so the last stage's scale is where the losses are computed.
    decoder_up_blocks: residual conv blocks of the feature propagation into each stage after the first ([1]).
    mask_ratio: share of top-scale groups hidden (0.8); ``int(mask_ratio * num_groups)`` are masked.
    masking: "guided" (the paper: Gumbel-top-k draw from softmax(saliency / temperature)), "topk" (keep the most
        salient groups, deterministic) or "random" (Point-MAE's uniform masking, an ablation).
    guided_masking_temperature: the softmax temperature of "guided" (1 as the paper; note that CLS attention values
        are ~1 / patches, so at 1 the draw is close to uniform, as in the official code).
    image_size: side of the depth images, in pixels (the teacher's input size, 224).
    densify: each point is splatted onto a ``densify x densify`` pixel square (5).
    image_mean, image_std: normalisation of the depth images (ImageNet's, as the official code, also for CLIP).
    teacher_name_or_path: the frozen 2-D encoder, loaded with ``AutoModel.from_pretrained`` on first use.
    teacher_config: instead, a config dict (with ``model_type``) of a randomly initialised teacher (tests).
    teacher_seed: seed of that random initialisation, so a reloaded model sees the same teacher.
    teacher_feature_dim: width of the teacher's patch features (CLIP ViT-B/16 projected: 512); set automatically
        when a teacher instance is given.
    loss_3d_weight, loss_2d_weight: weights of the two losses (1, 1).
    classifier_hidden_size, classifier_dropout: the fine-tuning MLP head (256, 0.5).
    """

    model_type = "i2pmae"

    num_points: int = 2048
    group_counts: list[int] | tuple[int, ...] = (512, 256, 64)
    group_sizes: list[int] | tuple[int, ...] = (16, 8, 8)
    hidden_sizes: list[int] | tuple[int, ...] = (96, 192, 384)
    depths: list[int] | tuple[int, ...] = (5, 5, 5)
    embedding_channels: list[int] | tuple[int, ...] = (128, 256, 512)
    num_attention_heads: int = 6
    mlp_ratio: float = 4.0
    qkv_bias: bool = False
    hidden_act: str = "gelu"
    drop_path_rate: float = 0.1
    layer_norm_eps: float = 1e-5
    decoder_depths: list[int] | tuple[int, ...] = (1, 1)
    decoder_up_blocks: list[int] | tuple[int, ...] = (1,)
    mask_ratio: float = 0.8
    masking: str = "guided"
    guided_masking_temperature: float = 1.0
    image_size: int = 224
    densify: int = 5
    image_mean: list[float] | tuple[float, ...] = IMAGENET_DEFAULT_MEAN
    image_std: list[float] | tuple[float, ...] = IMAGENET_DEFAULT_STD
    teacher_name_or_path: str | None = "openai/clip-vit-base-patch16"
    teacher_config: dict | None = None
    teacher_seed: int = 0
    teacher_feature_dim: int = 512
    loss_3d_weight: float = 1.0
    loss_2d_weight: float = 1.0
    initializer_range: float = 0.02
    classifier_hidden_size: int = 256
    classifier_dropout: float = 0.5

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        for name in ("group_counts", "group_sizes", "hidden_sizes", "depths", "embedding_channels", "decoder_depths",
                     "decoder_up_blocks"):
            value = getattr(self, name)
            if not isinstance(value, (list, tuple)) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
            ):
                raise ValueError(f"{name} must be a list of positive ints, got {value!r}")
            setattr(self, name, list(value))
        if len(self.embedding_channels) != 3:
            raise ValueError(f"embedding_channels must have 3 entries (hidden, pooled, second hidden), "
                             f"got {self.embedding_channels}")
        scales = len(self.group_counts)
        if scales == 0 or any(len(getattr(self, n)) != scales for n in ("group_sizes", "hidden_sizes", "depths")):
            raise ValueError(
                "group_counts, group_sizes, hidden_sizes and depths need one entry per scale, got "
                f"{self.group_counts}, {self.group_sizes}, {self.hidden_sizes}, {self.depths}"
            )
        available = self.num_points
        for i, (count, size) in enumerate(zip(self.group_counts, self.group_sizes)):
            source = "num_points" if i == 0 else f"group_counts[{i - 1}]"
            if count > available:
                raise ValueError(f"group_counts[{i}] ({count}) must be <= {source} ({available})")
            if size > available:
                raise ValueError(f"group_sizes[{i}] ({size}) must be <= {source} ({available}): kNN needs that many")
            available = count
        check_int("num_attention_heads", self.num_attention_heads)
        for i, width in enumerate(self.hidden_sizes):
            check_heads(f"hidden_sizes[{i}]", width, "num_attention_heads", self.num_attention_heads)
        if not 1 <= len(self.decoder_depths) <= scales:
            raise ValueError(f"decoder_depths needs 1 to {scales} stages (one per scale), got {self.decoder_depths}")
        if len(self.decoder_up_blocks) != len(self.decoder_depths) - 1:
            raise ValueError(f"decoder_up_blocks needs one entry per decoder stage after the first "
                             f"({len(self.decoder_depths) - 1}), got {self.decoder_up_blocks}")
        check_mask_ratio(self.mask_ratio)
        check_choice("masking", self.masking, MASKINGS)
        if not self.guided_masking_temperature > 0:
            raise ValueError(f"guided_masking_temperature must be > 0, got {self.guided_masking_temperature}")
        if self.densify < 1 or self.densify % 2 == 0:
            raise ValueError(f"densify must be an odd int >= 1 (a square centred on the point), got {self.densify}")
        check_int("image_size", self.image_size, minimum=4)  # pixels
        if self.teacher_config is not None and not (
            isinstance(self.teacher_config, dict) and "model_type" in self.teacher_config
        ):
            raise ValueError(f"teacher_config must be a config dict with a 'model_type' key, got {self.teacher_config!r}")
        self.teacher_config = copy.deepcopy(self.teacher_config)  # never share nested dicts with a preset table

    @property
    def num_groups(self) -> int:
        """Top-scale group count (the masked tokens, ``mask`` (batch, num_groups))."""
        return self.group_counts[-1]

    @property
    def num_groups_top(self) -> int:
        return self.group_counts[-1]

    @property
    def loss_scale(self) -> int:
        """The scale the last decoder stage reaches, where both losses are computed."""
        return len(self.group_counts) - len(self.decoder_depths)


# ---------------------------------------------------------------------------------------------------------------
# Masking


def gumbel_topk_noise(scores: torch.Tensor, uniform: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Sort keys (the smallest kept, as ``masking.mask_from_noise``) that keep the tokens drawn first when sampling
    without replacement from ``softmax(scores / temperature)``: scores, uniform (batch, G) -> (batch, G).

    Gumbel-top-k (Kool et al., 2019): adding i.i.d. Gumbel noise ``-log(-log u)`` to the logits and sorting in
    descending order gives an ordering with exactly the distribution of successive draws without replacement
    (``torch.multinomial(softmax(s), G)``, the official code), so the first ``k`` of the sort are the first ``k``
    draws. Unlike ``multinomial``, a given ``uniform`` fixes the draw."""
    tiny = torch.finfo(torch.float32).tiny
    gumbel = -torch.log(-torch.log(uniform.float().clamp(tiny, 1 - 1e-7)))
    return -(scores.float() / temperature + gumbel)


def propagate_mask(upper_mask: torch.Tensor, member_indices: torch.Tensor, num_lower: int) -> torch.Tensor:
    """The mask one scale down: a lower token stays visible iff at least one *visible* upper group contains it, so
    every member of a visible group is visible and the rest is masked (kNN groups overlap: a token in both a
    visible and a masked group is visible, as the official code). upper_mask (batch, G_up) bool, True = masked;
    member_indices (batch, G_up, k) into the lower scale -> (batch, num_lower) bool."""
    batch = upper_mask.shape[0]
    votes = (~upper_mask).float().unsqueeze(-1).expand_as(member_indices).reshape(batch, -1)
    hits = torch.zeros(batch, num_lower, device=upper_mask.device).scatter_add_(1, member_indices.reshape(batch, -1), votes)
    return hits == 0


# ---------------------------------------------------------------------------------------------------------------
# Model pieces


class ConvBNAct(nn.Sequential):
    """Point-wise Conv1d + BatchNorm (+ GELU): (batch, in, points) -> (batch, out, points)."""

    def __init__(self, in_channels: int, out_channels: int, activation: bool = True):
        layers = [nn.Conv1d(in_channels, out_channels, 1), nn.BatchNorm1d(out_channels)]
        super().__init__(*layers, *([nn.GELU()] if activation else []))


class ResidualConvBlock(nn.Module):
    """PointMLP's ConvBNReLURes1D (with GELU): x -> GELU(BN(Conv(GELU(BN(Conv(x))))) + x)."""

    def __init__(self, channels: int):
        super().__init__()
        self.net = nn.Sequential(ConvBNAct(channels, channels), ConvBNAct(channels, channels, activation=False))
        self.act = nn.GELU()

    def forward(self, x):
        return self.act(self.net(x) + x)


class FeaturePropagation(nn.Module):
    """PointNet++ feature propagation as Point-M2AE's decoder uses it: features of the coarse centres are
    interpolated to the fine centres (inverse squared distance over the 3 nearest), concatenated with the fine
    scale's own features, fused by a Conv-BN-GELU and ``blocks`` residual conv blocks.

    fine_xyz (batch, N, 3), coarse_xyz (batch, S, 3), fine_features (batch, N, C_fine), coarse_features
    (batch, S, C_coarse) -> (batch, N, out_channels)."""

    def __init__(self, fine_channels: int, coarse_channels: int, out_channels: int, blocks: int = 1):
        super().__init__()
        self.fuse = ConvBNAct(fine_channels + coarse_channels, out_channels)
        self.extraction = nn.Sequential(*[ResidualConvBlock(out_channels) for _ in range(blocks)])

    def forward(self, fine_xyz, coarse_xyz, fine_features, coarse_features):
        neighbours = knn_indices(fine_xyz, coarse_xyz, min(3, coarse_xyz.shape[1]))  # (B, N, 3)
        distance = (fine_xyz.unsqueeze(2) - gather_points(coarse_xyz, neighbours)).pow(2).sum(-1)
        weights = 1.0 / (distance + 1e-8)
        weights = weights / weights.sum(dim=-1, keepdim=True)
        interpolated = (gather_points(coarse_features, neighbours) * weights.unsqueeze(-1)).sum(dim=2)
        interpolated = interpolated.to(fine_features.dtype)  # float32 distances, possibly half features
        x = torch.cat([fine_features, interpolated], dim=-1).transpose(1, 2)
        return self.extraction(self.fuse(x)).transpose(1, 2)


def visible_first(mask: torch.Tensor):
    """Indices that gather each sample's visible tokens first, in their original order, padded to the batch's
    largest visible count with masked ones: mask (batch, G) bool -> (ids (batch, n), valid (batch, n) bool)."""
    order = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)
    count = data_dependent_count((~mask).sum(dim=1).max(), mask.shape[1])  # symbolic under torch.export
    ids = order[:, :count]
    return ids, ~mask.gather(1, ids)


def key_padding_bias(valid: torch.Tensor, dtype) -> torch.Tensor | None:
    """Additive attention mask (batch, 1, 1, n) hiding the padded keys; None when nothing is padded (always a mask
    under torch.export / torch.compile, which cannot read ``valid``: zeros where nothing is padded)."""
    if not torch.compiler.is_compiling() and bool(valid.all()):
        return None
    return torch.zeros(valid.shape, dtype=dtype, device=valid.device).masked_fill(
        ~valid, torch.finfo(dtype).min
    )[:, None, None, :]


@dataclass
class I2PMAEModelOutput(ModelOutput):
    """
    last_hidden_state: (batch, kept, hidden_sizes[-1]) normalised encoder output of the visible top-scale groups in
        their FPS order (all ``num_groups`` when nothing is masked: the default of a plain call).
    mask: (batch, num_groups) float, 1 = masked top-scale group.
    centers: (batch, num_groups, 3) top-scale group centres.
    scale_masks: per scale (batch, group_counts[i]) float masks (propagated down from the top).
    scale_features: per scale (batch, group_counts[i], hidden_sizes[i]): encoder outputs at visible groups, token
        embeddings at masked ones (not normalised; the decoder's skip connections).
    hidden_states: the first block's input (positions added) and every block's output, scale 0 first (1 +
        sum(depths) tensors (batch, visible at that scale (padded), width)), when output_hidden_states.
    attentions: per block, scale 0 first (batch, heads, n, n), when output_attentions.
    pooler_output: (batch, hidden_sizes[-1]) the mean of last_hidden_state (a feature per cloud); last, so the
        tuple positions of the fields above stay as they were.
    """

    last_hidden_state: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    centers: torch.Tensor | None = None
    scale_masks: tuple[torch.Tensor, ...] | None = None
    scale_features: tuple[torch.Tensor, ...] | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    pooler_output: torch.Tensor | None = None


@dataclass
class I2PMAEPreTrainingOutput(ModelOutput):
    """
    loss: ``loss_3d_weight * loss_3d + loss_2d_weight * loss_2d``.
    loss_3d: Chamfer-L2 between predicted and true points of the masked groups at ``config.loss_scale``.
    loss_2d: MSE between predicted and teacher 2-D features (3 views concatenated) at the member points of the
        visible groups at ``config.loss_scale``.
    logits: (masked groups at loss_scale over the batch, group_sizes[loss_scale], 3) predicted re-centred points,
        batch-major (``scale_masks[loss_scale].bool()`` selects their groups).
    mask: (batch, num_groups) top-scale mask, 1 = masked; scale_masks: the mask at every scale.
    centers: (batch, num_groups, 3); saliency: (batch, num_groups) the teacher's attention at every top centre.
    hidden_states, attentions: the encoder's, as in I2PMAEModelOutput.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    loss_3d: torch.Tensor | None = None
    loss_2d: torch.Tensor | None = None
    scale_masks: tuple[torch.Tensor, ...] | None = None
    centers: torch.Tensor | None = None
    saliency: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


def scale_blocks(config: I2PMAEConfig, width: int, depth: int) -> nn.ModuleList:
    """``depth`` transformer blocks of one scale's ``width`` (encoder and decoder alike), without stochastic depth."""
    return build_blocks(config, depth, hidden_size=width, num_heads=config.num_attention_heads,
                        intermediate_size=int(width * config.mlp_ratio), hidden_act=config.hidden_act,
                        qkv_bias=config.qkv_bias, layer_norm_eps=config.layer_norm_eps)  # fmt: skip


def check_scale0_points(point_values, config: I2PMAEConfig) -> None:
    """The shared input check, with enough points for the scale-0 grouping."""
    check_point_values(point_values, config.group_counts[0], config.group_sizes[0], "group_counts[0] and group_sizes[0]")


class I2PMAEPreTrainedModel(MaskedModelPreTrainedModel):
    config_class = I2PMAEConfig
    base_model_prefix = "i2pmae"
    main_input_name = "point_values"
    input_modalities = ("point-cloud",)
    _supports_flash_attn = False  # padded visible sets need an attention mask
    _supports_flex_attn = False
    _keys_to_ignore_on_load_unexpected = [r"^teacher\."]  # never saved; ignore it if someone saved it by hand

    @torch.no_grad()
    def _init_weights(self, module):
        """The official init: truncated normal (0.02) linear and conv weights, zero biases, unit norms."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, I2PMAEDecoder):
            init.trunc_normal_(module.mask_token, std=std)
        else:
            super()._init_weights(module)  # norms (BatchNorm statistics too)


class I2PMAEModel(I2PMAEPreTrainedModel):
    """The hierarchical encoder. Masks the top scale (random from ``noise``, or guided by a given ``saliency``),
    propagates the mask down, and encodes each scale's visible tokens; a plain call keeps every group."""

    # transformers' output capture: hidden states from the blocks, attention weights from their attention modules
    _can_record_outputs = {"hidden_states": TransformerBlock, "attentions": Attention}

    def __init__(self, config: I2PMAEConfig):
        super().__init__(config)
        self.embeddings = nn.ModuleList()
        self.position_embeddings = nn.ModuleList()
        self.stages = nn.ModuleList()
        total = sum(config.depths)
        rates = [config.drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # over all blocks, as official
        start = 0
        for i, (width, depth) in enumerate(zip(config.hidden_sizes, config.depths)):
            if i == 0:  # Point-MAE's mini-PointNet on raw neighbourhoods
                hidden, pooled, second = config.embedding_channels
                self.embeddings.append(PointGroupEmbedding(width, 3, (hidden, pooled), second))
            else:  # token merging: the same two-MLP PointNet on the members' features (official Token_Embed)
                previous = config.hidden_sizes[i - 1]
                self.embeddings.append(PointGroupEmbedding(width, previous, (previous, previous), width))
            self.position_embeddings.append(PointPositionEmbedding(width, width))
            blocks = scale_blocks(config, width, depth)
            for block, rate in zip(blocks, rates[start:start + depth]):
                block.drop_path = DropPath(rate) if rate > 0 else nn.Identity()
            self.stages.append(blocks)
            start += depth
        self.layernorm = nn.LayerNorm(config.hidden_sizes[-1], eps=config.layer_norm_eps)
        self.post_init()

    def tokenize(self, point_values: torch.Tensor) -> list[PointGroups]:
        """Groups at every scale: scale 0 groups the points, scale i the centres of scale i - 1."""
        scales, source = [], point_values.float()
        for count, size in zip(self.config.group_counts, self.config.group_sizes):
            groups = group_points(source, count, size)
            scales.append(groups)
            source = groups.centers
        return scales

    def top_mask(self, batch, mask_ratio, noise=None, saliency=None, masking=None, device=None) -> torch.Tensor:
        """(batch, num_groups) bool, True = masked; ``int(mask_ratio * num_groups)`` per sample.

        masking "random" (or no saliency): the groups with the smallest ``noise`` are kept (MAE's rule);
        "guided": Gumbel-top-k on ``saliency / temperature`` with ``noise`` as the uniforms (:func:`gumbel_topk_noise`);
        "topk": the most salient groups are kept (``noise`` unused)."""
        groups = self.config.num_groups
        masking = self.config.masking if masking is None else masking
        check_group_noise(noise, batch, groups)
        if mask_ratio == 0.0:
            return torch.zeros(batch, groups, dtype=torch.bool, device=device)
        guided = saliency is not None and masking != "random"
        if guided and masking == "topk":
            sort_key = -saliency.float()
        else:
            noise = torch.rand(batch, groups, device=device) if noise is None else noise.to(device)
            sort_key = gumbel_topk_noise(saliency, noise, self.config.guided_masking_temperature) if guided else noise
        return point_mask_from_noise(sort_key, mask_ratio, None).mask.bool()  # the int(r * G) largest keys hidden

    def encode(self, scales: list[PointGroups], top_mask: torch.Tensor) -> I2PMAEModelOutput:
        """Encodes every scale's visible tokens given the groups (:meth:`tokenize`) and the top mask."""
        masks = [top_mask]
        for i in range(len(scales) - 1, 0, -1):
            masks.insert(0, propagate_mask(masks[0], scales[i].member_indices, scales[i - 1].centers.shape[1]))
        features = []
        for i, groups in enumerate(scales):
            if i == 0:
                tokens = self.embeddings[0](groups.neighborhoods)
            else:  # merge: each group's members' features from the scale below
                tokens = self.embeddings[i](gather_points(features[-1], groups.member_indices))
            ids, valid = visible_first(masks[i])
            visible = gather_tokens(tokens, ids)
            pos = self.position_embeddings[i](gather_tokens(groups.centers, ids))
            encoded, _, _ = run_blocks(self.stages[i], visible, key_padding_bias(valid, visible.dtype), positions=pos)
            # masked groups keep their embedding (what the next scale's merge reads for them, as the official)
            encoded = torch.where(valid.unsqueeze(-1), encoded, visible)
            features.append(tokens.scatter(1, ids.unsqueeze(-1).expand_as(encoded), encoded))
        ids, _ = visible_first(top_mask)  # the top scale keeps the same count in every sample: no padding
        hidden = self.layernorm(gather_tokens(features[-1], ids))
        return I2PMAEModelOutput(
            last_hidden_state=hidden,
            mask=top_mask.float(),
            centers=scales[-1].centers,
            scale_masks=tuple(m.float() for m in masks),
            scale_features=tuple(features),
            pooler_output=pool_tokens(hidden, has_cls_token=False),
        )

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        point_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        saliency: torch.Tensor | None = None,
        point_groups: list[PointGroups] | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """
        point_values: (batch, num_points, 3) float clouds (the processor's output).
        noise: (batch, num_groups) uniform values fixing the mask (see :meth:`top_mask`); drawn when None.
        mask_ratio: default 0.0 (``config.mask_ratio`` with ``noise`` or ``saliency``): a plain call keeps every
            top-scale group in FPS order, the same features on every call. Pre-training passes its ratio.
        saliency: (batch, num_groups) optional scores of the top-scale groups for "guided"/"topk" masking (the
            pre-training model computes them with its 2-D teacher); without it the mask is random.
        point_groups: the groups of every scale of ``point_values`` (:meth:`tokenize`) when the caller has them
            already (the pre-training model needs the top centres for the saliency); grouped here when None.
        output_hidden_states, output_attentions, return_dict: as in transformers (captured from the blocks).
        Returns I2PMAEModelOutput (last_hidden_state (batch, kept, hidden_sizes[-1]), mask, centers, ...,
        pooler_output (batch, hidden_sizes[-1])).
        """
        check_scale0_points(point_values, self.config)
        mask_ratio = feature_mask_ratio(mask_ratio, self.config, noise, saliency)
        scales = self.tokenize(point_values) if point_groups is None else point_groups
        top_mask = self.top_mask(point_values.shape[0], mask_ratio, noise, saliency, device=point_values.device)
        return self.encode(scales, top_mask)


class I2PMAEDecoder(nn.Module):
    """Point-M2AE's hierarchical decoder: the top stage fills masked groups with a mask token; each later stage
    propagates the previous stage's features to the next scale down (:class:`FeaturePropagation`), fused with that
    scale's normalised encoder features at visible groups (zeros at masked ones). Every stage adds its own position
    MLP before each block. Output: (batch, group_counts[loss_scale], hidden_sizes[loss_scale]), normalised."""

    def __init__(self, config: I2PMAEConfig):
        super().__init__()
        scales = len(config.group_counts)
        self.scale_ids = [scales - 1 - j for j in range(len(config.decoder_depths))]
        widths = [config.hidden_sizes[s] for s in self.scale_ids]
        self.mask_token = nn.Parameter(torch.zeros(1, 1, widths[0]))
        self.position_embeddings = nn.ModuleList(PointPositionEmbedding(w, w) for w in widths)
        self.stages = nn.ModuleList(scale_blocks(config, w, depth) for w, depth in zip(widths, config.decoder_depths))
        # the encoder's normalisation of the skip features each later stage reads (official encoder_norms)
        self.skip_norms = nn.ModuleList(nn.LayerNorm(w, eps=config.layer_norm_eps) for w in widths[1:])
        self.propagations = nn.ModuleList(
            FeaturePropagation(widths[j], widths[j - 1], widths[j], config.decoder_up_blocks[j - 1])
            for j in range(1, len(widths))
        )
        self.norm = nn.LayerNorm(widths[-1], eps=config.layer_norm_eps)

    def forward(self, encoded: I2PMAEModelOutput, scales: list[PointGroups]) -> torch.Tensor:
        top_mask = encoded.mask.bool()
        ids_restore = torch.argsort(torch.argsort(top_mask.to(torch.uint8), dim=1, stable=True), dim=1)
        x = restore_tokens(encoded.last_hidden_state, self.mask_token, ids_restore)  # (B, G, D) in FPS order
        for j, scale in enumerate(self.scale_ids):
            centers = scales[scale].centers
            if j > 0:
                visible = (encoded.scale_masks[scale] == 0).unsqueeze(-1)
                skip = torch.where(visible, self.skip_norms[j - 1](encoded.scale_features[scale]), 0.0)
                x = self.propagations[j - 1](centers, scales[scale + 1].centers, skip, x)
            x, _, _ = run_blocks(self.stages[j], x, positions=self.position_embeddings[j](centers))
        return self.norm(x)


class I2PMAEForPreTraining(FrozenTeacherMixin, I2PMAEPreTrainedModel):
    """Hierarchical encoder + decoder, masked where the frozen 2-D teacher looks, with the 3-D (Chamfer) and 2-D
    (teacher feature) reconstruction losses."""

    def __init__(self, config: I2PMAEConfig, teacher=None):
        if teacher is not None:
            config.teacher_feature_dim = teacher_feature_dim(check_teacher(teacher))
        super().__init__(config)
        self.i2pmae = I2PMAEModel(config)
        self.decoder = I2PMAEDecoder(config)
        width = config.hidden_sizes[config.loss_scale]
        size = config.group_sizes[config.loss_scale]
        self.head_3d = nn.Linear(width, 3 * size)
        self.head_2d = nn.Linear(width, len(VIEW_AXES) * config.teacher_feature_dim * size)
        # the frozen teacher (teachers.FrozenTeacherMixin): out of the state dict, the optimiser and DDP; built on
        # first use
        self.set_frozen_teacher("teacher", teacher)
        self.post_init()

    def get_teacher(self, device):
        """The frozen 2-D encoder on ``device``: the instance given, or one built from the config (first call)."""
        return self.frozen_teacher("teacher", device, self.build_teacher)

    def build_teacher(self):
        """The 2-D teacher the config describes: seeded random from ``teacher_config``, else pretrained."""
        config = self.config
        if config.teacher_config is None and config.teacher_name_or_path is None:
            raise ValueError("I2P-MAE needs a 2-D teacher: set teacher_name_or_path or teacher_config, or pass teacher=")
        model = check_teacher(build_auto_model(
            config.teacher_name_or_path, config.teacher_config, seed=config.teacher_seed, attn_implementation="eager"
        ))  # fmt: skip
        if teacher_feature_dim(model) != config.teacher_feature_dim:
            raise ValueError(f"the teacher's patch features are {teacher_feature_dim(model)}-d but "
                             f"config.teacher_feature_dim is {config.teacher_feature_dim}; set it to match")
        return model

    @torch.no_grad()
    def teacher_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Depth images (batch, views, 3, S, S) -> (patch features (batch, views, F, h, w), CLS->patch attention
        of the last layer averaged over heads (batch, views, 1, h, w))."""
        batch, views = images.shape[:2]
        teacher = self.get_teacher(images.device)
        features, attention = teacher_outputs(teacher, images.flatten(0, 1), self.config.image_size)
        return features.unflatten(0, (batch, views)), attention.unflatten(0, (batch, views))

    @can_return_tuple
    def forward(
        self,
        point_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """
        point_values: (batch, num_points, 3); noise: (batch, num_groups) uniform values fixing the mask (the Gumbel
        uniforms of "guided" masking, the sort keys of "random"); mask_ratio overrides the config's (must hide some).
        Returns I2PMAEPreTrainingOutput.
        """
        config = self.config
        check_scale0_points(point_values, config)
        ratio = check_mask_ratio(config.mask_ratio if mask_ratio is None else mask_ratio)
        if ratio == 0.0:
            raise ValueError("pre-training needs masked groups: mask_ratio must be > 0")
        points = point_values.float()
        scales = self.i2pmae.tokenize(points)

        images, grid = project_to_depth_maps(
            points, config.image_size, config.densify, config.image_mean, config.image_std, return_grid=True
        )
        features, attention = self.teacher_maps(images)
        # saliency of a top centre: the upsampled attention at its pixel, averaged over the views
        saliency = sample_at_pixels(attention, point_pixels(scales[-1].centers, grid), config.image_size)
        saliency = saliency.squeeze(-1).mean(dim=1)  # (B, G)
        encoded = self.i2pmae(points, noise=noise, mask_ratio=ratio, saliency=saliency, point_groups=scales,
                              return_dict=True, **kwargs)  # fmt: skip
        decoded = self.decoder(encoded, scales)  # (B, G_s, D_s) at the loss scale

        s = config.loss_scale
        groups, size = scales[s], config.group_sizes[s]
        masked = encoded.scale_masks[s].bool()
        logits = self.head_3d(decoded[masked]).reshape(-1, size, 3)
        loss_3d = chamfer_l2(logits, groups.neighborhoods[masked]).mean()

        # 2-D targets: the teacher's features at each member point's pixel, the 3 views concatenated
        source = points if s == 0 else scales[s - 1].centers
        members = gather_points(source, groups.member_indices).flatten(1, 2)  # original coordinates (B, G_s*k, 3)
        target = sample_at_pixels(features, point_pixels(members, grid), config.image_size)  # (B, V, G_s*k, F)
        batch, views, _, dim = target.shape
        target = target.permute(0, 2, 1, 3).reshape(batch, -1, size, views * dim)[~masked]  # (visible, k, V*F)
        prediction_2d = self.head_2d(decoded[~masked]).reshape(-1, size, views * dim)
        loss_2d = nn.functional.mse_loss(prediction_2d.float(), target)

        return I2PMAEPreTrainingOutput(
            loss=config.loss_3d_weight * loss_3d + config.loss_2d_weight * loss_2d,
            logits=logits,
            mask=encoded.mask,
            loss_3d=loss_3d,
            loss_2d=loss_2d,
            scale_masks=encoded.scale_masks,
            centers=encoded.centers,
            saliency=saliency,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
        )


def check_teacher(model):
    """The teacher frozen and in eval mode; TypeError if it is no ViT-like image encoder."""
    core = getattr(model, "vision_model", model)
    if not isinstance(model, nn.Module) or not hasattr(getattr(core, "config", None), "patch_size"):
        raise TypeError(
            "teacher must be a Hugging Face ViT-like image encoder (CLIPModel, CLIPVisionModel, ViTModel, DINO...) "
            f"whose config has image_size and patch_size, got {type(model).__name__}"
        )
    return model.requires_grad_(False).eval()


def teacher_feature_dim(model) -> int:
    """Width of the patch features :func:`teacher_outputs` returns (after a CLIP projection if there is one)."""
    projection = getattr(model, "visual_projection", None)
    if projection is not None:
        return projection.out_features
    return getattr(model, "vision_model", model).config.hidden_size


def teacher_outputs(model, images: torch.Tensor, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs a ViT-like teacher: images (n, 3, S, S) -> (patch features (n, F, h, w), CLS->patch attention of the
    last layer, averaged over heads, (n, 1, h, w)).

    Patch tokens are the last ``h * w`` tokens (after cls / register / distillation tokens); CLIP's
    ``post_layernorm`` and ``visual_projection`` are applied to them as the official CLIP-attention code does."""
    core = getattr(model, "vision_model", model)
    config = core.config
    if config.image_size != image_size:
        raise ValueError(f"the teacher takes {config.image_size}-px images but config.image_size is {image_size}")
    side = image_size // config.patch_size
    dtype = next(model.parameters()).dtype
    out = core(pixel_values=images.to(dtype), output_attentions=True)
    if not out.attentions:
        raise ValueError(
            f"the teacher ({type(model).__name__}) returned no attention weights; load it with "
            'attn_implementation="eager" (sdpa / flash attention do not return them)'
        )
    patches = out.last_hidden_state[:, -side * side:]
    if hasattr(core, "post_layernorm"):  # CLIP's final norm (ViT / DINO normalise last_hidden_state already)
        patches = core.post_layernorm(patches)
    if getattr(model, "visual_projection", None) is not None:
        patches = model.visual_projection(patches)
    features = patches.float().transpose(1, 2).reshape(images.shape[0], -1, side, side)
    attention = out.attentions[-1].float().mean(dim=1)[:, 0, -side * side:]
    return features, attention.reshape(images.shape[0], 1, side, side)


class I2PMAEForPointCloudClassification(I2PMAEPreTrainedModel):
    """The unmasked hierarchical encoder and the official fine-tuning head: the normalised top-scale tokens, mean-
    and max-pooled and concatenated, then MLP (2D -> 256 -> 256 -> labels) with BatchNorm, ReLU and dropout."""

    def __init__(self, config: I2PMAEConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.i2pmae = I2PMAEModel(config)
        self.classifier = point_classifier_head(2 * config.hidden_sizes[-1], config.classifier_hidden_size,
                                                config.num_labels, config.classifier_dropout)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        point_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """point_values (batch, num_points, 3); labels (batch,). Returns SequenceClassifierOutput (logits (batch,
        num_labels)); the encoder never masks here."""
        encoded = self.i2pmae(point_values, mask_ratio=0.0, return_dict=True, **kwargs)
        tokens = encoded.last_hidden_state
        features = torch.cat([tokens.mean(dim=1), tokens.amax(dim=1)], dim=-1)
        return point_classifier_output(self.classifier, features, labels, self.config, encoded)


__all__ = [
    "I2PMAEConfig",
    "I2PMAEPreTrainedModel",
    "I2PMAEModel",
    "I2PMAEForPreTraining",
    "I2PMAEForPointCloudClassification",
    "I2PMAEModelOutput",
    "I2PMAEPreTrainingOutput",
    "project_to_depth_maps",
    "point_pixels",
    "sample_at_pixels",
    "gumbel_topk_noise",
    "propagate_mask",
]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
METHOD = dict(
    name="i2pmae",
    paper=(
        "Learning 3D Representations from 2D Pre-trained Models via Image-to-Point Masked Autoencoders "
        "(Zhang et al., CVPR 2023), arXiv:2212.06785"
    ),
    config_class=I2PMAEConfig,
    model_classes={
        "base": I2PMAEModel, "pretraining": I2PMAEForPreTraining,
        "point-cloud-classification": I2PMAEForPointCloudClassification,
    },
    processor="PointCloudFeatureExtractor",
    presets={
        # CPU-sized: 256 points, 3 scales of 64 / 32 / 16 groups, 32/64/96-d x 1 block each; a tiny random ViT
        # (32-px depth images, 8-px patches, 32-d) is the 2-D teacher, so nothing is downloaded
        "i2pmae-tiny": dict(
            num_points=256, group_counts=[64, 32, 16], group_sizes=[8, 4, 4], hidden_sizes=[32, 64, 96],
            depths=[1, 1, 1], embedding_channels=[32, 64, 128], num_attention_heads=4, decoder_depths=[1, 1],
            decoder_up_blocks=[1], image_size=32, densify=3, teacher_name_or_path=None, teacher_feature_dim=32,
            teacher_config=dict(model_type="vit", image_size=32, patch_size=8, hidden_size=32,
                                num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
        ),
        # the paper's ShapeNet-55 pre-training: 2048 points, groups [512, 256, 64] x [16, 8, 8], widths
        # [96, 192, 384] x 5 blocks, decoder [1, 1], r = 0.8, CLIP ViT-B/16 teacher (512-d projected features)
        "i2pmae-shapenet": dict(),
    },
    modality="point-cloud",
    pretrain_lr=1e-3,  # I2P-MAE: AdamW 1e-3 at batch 64
)
