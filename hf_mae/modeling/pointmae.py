"""Point-MAE: Masked Autoencoders for Point Cloud Self-supervised Learning (Pang et al., ECCV 2022).

The method, as the official ``models/Point_MAE.py``:
1. group: farthest-point sampling picks ``num_groups`` centres of the cloud (batch, num_points, 3); each centre
   gathers its ``group_size`` nearest points, re-centred on it (a local patch, 64 x 32 on 1024 points);
2. embed: a mini-PointNet turns each patch into one token; the position of a token is an MLP (3 -> 128 -> GELU ->
   hidden) of its centre, added at the input of *every* transformer block (``x = block(x + pos)``);
3. mask: a random ``int(mask_ratio * G)`` of the groups (0.6) is hidden (``mask_type="block"``: the groups nearest
   to one random centre); the encoder (12 x 384, 6 heads) sees only the visible tokens;
4. decode: the visible tokens plus one shared mask token per hidden group, each with the decoder's own position MLP
   of its centre, run through a 4-block decoder; the last ``M`` (hidden) tokens predict ``group_size`` points each
   (a Conv1d to 3 * group_size);
5. loss: Chamfer-L2 between the predicted and the true (re-centred) points of every hidden group.

Fine-tuning (the official ``PointTransformer``) runs the encoder on every group with a cls token and cls position
prepended, and classifies ``concat(cls, max over group tokens)`` with an MLP 2D -> 256 -> 256 -> classes (BatchNorm,
ReLU, dropout 0.5).

Layout: tokens keep their group (FPS) order. The encoder sees the visible groups in ascending group order, the
decoder's hidden tokens and ``logits`` follow the hidden groups in ascending order (``neighborhoods[mask.bool()]``).

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

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
from .layers import Attention, TransformerBlock, build_blocks, build_encoder_blocks, init_torch_default, run_blocks
from .losses import chamfer_l2
from .masking import TokenMask, check_mask_ratio, feature_mask_ratio, gather_tokens, keep_all, mask_from_bool
from .outputs import pool_tokens
from .point_groups import (
    PointGroupEmbedding,
    check_group_noise,
    check_point_values,
    group_points,
    point_classifier_head,
    point_classifier_output,
)

MASK_TYPES = ("rand", "block")


class PointMAEConfig(PreTrainedConfig):
    r"""Configuration of a Point-MAE model. Defaults: the paper's ShapeNet pre-training (``cfgs/pretrain.yaml``).

    num_points: points per cloud the processor produces (the model groups any count >= num_groups, group_size).
    num_groups, group_size: FPS centres per cloud and nearest neighbours per centre.
    embedding_channels: widths (first MLP hidden, first MLP out, second MLP hidden) of the mini-PointNet.
    hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: encoder width, depth, heads, MLP width
        (the decoder has the same width and MLP).
    position_hidden_size: hidden width of the position MLPs (3 -> position_hidden_size -> hidden_size).
    qkv_bias: Point-MAE's attention has no qkv bias.
    drop_path_rate: stochastic depth, rising linearly over the blocks of the encoder and of the decoder.
    decoder_num_hidden_layers, decoder_num_attention_heads: decoder depth and heads.
    mask_ratio: fraction of groups hidden, ``int(mask_ratio * num_groups)``, in [0, 1).
    mask_type: "rand" (random groups) or "block" (the groups nearest to one random centre).
    classifier_hidden_size, classifier_dropout: the fine-tuning MLP head.
    """

    model_type = "pointmae"

    num_points: int = 1024
    num_groups: int = 64
    group_size: int = 32
    embedding_channels: list[int] | tuple[int, int, int] = (128, 256, 512)
    hidden_size: int = 384
    num_hidden_layers: int = 12
    num_attention_heads: int = 6
    intermediate_size: int = 1536
    position_hidden_size: int = 128
    hidden_act: str = "gelu"
    qkv_bias: bool = False
    layer_norm_eps: float = 1e-5
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    drop_path_rate: float = 0.1
    decoder_num_hidden_layers: int = 4
    decoder_num_attention_heads: int = 6
    mask_ratio: float = 0.6
    mask_type: str = "rand"
    classifier_hidden_size: int = 256
    classifier_dropout: float = 0.5
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        for name in ("num_points", "num_groups", "group_size", "hidden_size", "num_hidden_layers",
                     "num_attention_heads", "intermediate_size", "position_hidden_size", "decoder_num_hidden_layers",
                     "decoder_num_attention_heads", "classifier_hidden_size"):  # fmt: skip
            check_int(name, getattr(self, name))
        if self.group_size > self.num_points:
            raise ValueError(f"group_size ({self.group_size}) must be <= num_points ({self.num_points})")
        if self.num_groups > self.num_points:
            raise ValueError(f"num_groups ({self.num_groups}) must be <= num_points ({self.num_points})")
        channels = list(self.embedding_channels)
        if len(channels) != 3 or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in channels):
            raise ValueError(f"embedding_channels must be 3 positive ints, got {self.embedding_channels!r}")
        self.embedding_channels = channels  # a list: JSON round trip
        for name in ("num_attention_heads", "decoder_num_attention_heads"):  # the decoder has the encoder's width
            check_heads("hidden_size", self.hidden_size, name, getattr(self, name))
        check_mask_ratio(self.mask_ratio)
        check_choice("mask_type", self.mask_type, MASK_TYPES)


@dataclass
class PointMAEModelOutput(ModelOutput):
    """
    last_hidden_state: (batch, kept_groups, hidden) encoder output of the visible groups, in group order (every
        group, in FPS order, when nothing is masked: the default of a plain call).
    mask: (batch, num_groups) float, 1 = hidden from the encoder.
    ids_restore: (batch, num_groups) permutation that puts [visible, hidden] tokens back in group order.
    centers: (batch, num_groups, 3) group centres, in FPS order.
    neighborhoods: (batch, num_groups, group_size, 3) each group's points relative to its centre.
    hidden_states: the first block's input (positions added) and every block's output, (batch, kept_groups,
        hidden), when output_hidden_states.
    attentions: per block (batch, heads, kept_groups, kept_groups), when output_attentions.
    pooler_output: (batch, hidden) the mean of the group tokens (a feature per cloud); last, so the tuple positions
        of the fields above stay as they were.
    """

    last_hidden_state: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    ids_restore: torch.Tensor | None = None
    centers: torch.Tensor | None = None
    neighborhoods: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    pooler_output: torch.Tensor | None = None


@dataclass
class PointMAEForPreTrainingOutput(ModelOutput):
    """
    loss: mean Chamfer-L2 over the hidden groups.
    logits: (batch, hidden_groups, group_size, 3) predicted points of the hidden groups (ascending group order),
        relative to their centres; add ``centers[mask.bool()]`` to place them in the cloud.
    mask, ids_restore, centers, hidden_states, attentions: as in PointMAEModelOutput (from the encoder).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    ids_restore: torch.Tensor | None = None
    centers: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


def point_mask_from_noise(noise: torch.Tensor, mask_ratio: float, centers: torch.Tensor, mask_type: str = "rand") -> TokenMask:
    """Point-MAE's group mask from ``noise`` (batch, G): ``int(mask_ratio * G)`` groups hidden per cloud.

    "rand": the groups with the largest noise (the smallest are kept, as MAE). "block": the groups nearest to the
    centre (batch, G, 3) of the largest-noise group, that group included (the official ``_mask_center_block``).
    Visible (and hidden) groups keep their ascending order, as the official boolean indexing does.
    """
    batch, num_groups = noise.shape
    num_masked = int(mask_ratio * num_groups)
    if mask_type == "block":
        seed = centers[torch.arange(batch, device=centers.device), noise.argmax(dim=1)]
        order = (centers - seed.unsqueeze(1)).norm(dim=-1).argsort(dim=1)[:, :num_masked]  # nearest first
    else:
        order = noise.argsort(dim=1)[:, num_groups - num_masked :]
    mask = torch.zeros(batch, num_groups, device=noise.device).scatter_(1, order, 1.0)
    return mask_from_bool(mask)


class PointPositionEmbedding(nn.Sequential):
    """Point-MAE's position MLP of a centre: (..., 3) -> Linear(3, h) -> GELU -> Linear(h, hidden) -> (..., hidden)."""

    def __init__(self, hidden_size: int, position_hidden_size: int = 128):
        super().__init__(nn.Linear(3, position_hidden_size), nn.GELU(), nn.Linear(position_hidden_size, hidden_size))

    def forward(self, centers: torch.Tensor) -> torch.Tensor:
        return super().forward(centers.to(self[0].weight.dtype))  # float32 geometry, possibly half weights


class PointMAEDecoder(nn.Module):
    """Shared mask token + own position MLP + transformer blocks; predicts the points of the hidden groups."""

    def __init__(self, config: PointMAEConfig):
        super().__init__()
        self.config = config
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embedding = PointPositionEmbedding(config.hidden_size, config.position_hidden_size)
        self.layers = build_blocks(
            config,
            config.decoder_num_hidden_layers,
            drop_path_rate=config.drop_path_rate,
            hidden_size=config.hidden_size,
            num_heads=config.decoder_num_attention_heads,
            intermediate_size=config.intermediate_size,
            hidden_act=config.hidden_act,
            qkv_bias=config.qkv_bias,
            layer_norm_eps=config.layer_norm_eps,
            dropout=config.hidden_dropout_prob,
            attention_dropout=config.attention_probs_dropout_prob,
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.head = nn.Conv1d(config.hidden_size, 3 * config.group_size, 1)  # the official ``increase_dim``

    def forward(self, latent: torch.Tensor, centers: torch.Tensor, token_mask: TokenMask) -> torch.Tensor:
        """latent (batch, kept, hidden) encoder output, centers (batch, G, 3) -> (batch, hidden_groups, group_size, 3)."""
        batch, kept, hidden = latent.shape
        num_masked = centers.shape[1] - kept
        order = token_mask.ids_restore.argsort(dim=1)  # [visible groups, hidden groups], each ascending
        positions = self.position_embedding(gather_tokens(centers, order))
        tokens = torch.cat([latent, self.mask_token.to(latent.dtype).expand(batch, num_masked, hidden)], dim=1)
        tokens, _, _ = run_blocks(self.layers, tokens, positions=positions)
        predicted = self.norm(tokens[:, kept:])  # only the hidden groups' tokens are decoded into points
        points = self.head(predicted.transpose(1, 2)).transpose(1, 2).contiguous()  # (batch, M, 3 * group_size)
        return points.reshape(batch, num_masked, self.config.group_size, 3)


class PointMAEPreTrainedModel(MaskedModelPreTrainedModel):
    config_class = PointMAEConfig
    base_model_prefix = "pointmae"
    main_input_name = "point_values"

    @torch.no_grad()
    def _init_weights(self, module):
        """As the official code: trunc-normal(0.02) linears and convs with zero biases in the encoder and the
        classifier, xavier-uniform linears in the decoder blocks, PyTorch's default init for the decoder's position
        MLP and point head (the official code leaves them as built), trunc-normal(0.02) tokens."""
        std = self.config.initializer_range
        if isinstance(module, PointMAEDecoder):
            init.trunc_normal_(module.mask_token, std=std)
            for layer in [*module.position_embedding, module.head]:
                if hasattr(layer, "weight"):
                    init_torch_default(layer)
            for layer in module.layers.modules():
                if isinstance(layer, nn.Linear):
                    init.xavier_uniform_(layer.weight)
                    if layer.bias is not None:
                        init.zeros_(layer.bias)
            return
        # Children are initialised before their parent (transformers' smart_apply), so the decoder's own rule
        # above overrides this one for its layers.
        if isinstance(module, (nn.Linear, nn.Conv1d)):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, PointMAEForPointCloudClassification):
            init.trunc_normal_(module.cls_token, std=std)
            init.trunc_normal_(module.cls_position, std=std)
        else:
            super()._init_weights(module)  # norms (BatchNorm statistics too)


class PointMAEModel(PointMAEPreTrainedModel):
    """The Point-MAE encoder: groups -> mini-PointNet tokens -> transformer over the visible groups, the centres'
    position MLP added at every block. A plain call encodes every group, in FPS order."""

    # transformers' output capture: hidden states from the blocks, attention weights from their attention modules
    _can_record_outputs = {"hidden_states": TransformerBlock, "attentions": Attention}

    def __init__(self, config: PointMAEConfig):
        super().__init__(config)
        first, pooled, second = config.embedding_channels
        self.group_embedding = PointGroupEmbedding(config.hidden_size, 3, (first, pooled), second)
        self.position_embedding = PointPositionEmbedding(config.hidden_size, config.position_hidden_size)
        self.layers = build_encoder_blocks(config)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self):
        return self.group_embedding

    def mask_groups(self, centers: torch.Tensor, noise, mask_ratio: float) -> TokenMask:
        """Every group, in order, when nothing is hidden and no noise is given; else Point-MAE's mask of ``noise``
        (batch, G) (drawn when None) over the centres (batch, G, 3)."""
        batch, num_groups = centers.shape[:2]
        if mask_ratio == 0.0 and noise is None:
            return keep_all(batch, num_groups, centers.device)
        if noise is None:
            noise = torch.rand(batch, num_groups, device=centers.device)
        return point_mask_from_noise(noise.to(centers.device), mask_ratio, centers, self.config.mask_type)

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        point_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        cls_token: torch.Tensor | None = None,
        cls_position: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """
        point_values: (batch, num_points, 3) float clouds (the processor normalises them to the unit sphere).
        noise: (batch, num_groups), optional; fixes the mask (the int(mask_ratio * G) largest values are hidden).
        mask_ratio: default 0.0 (``config.mask_ratio`` with ``noise``): a plain call encodes every group in FPS
            order, the same features on every call. Pre-training passes ``config.mask_ratio``.
        cls_token, cls_position: (1, 1, hidden), optional: a token and its position put before the group tokens
            (the fine-tuning model's); last_hidden_state then starts with it.
        output_hidden_states, output_attentions, return_dict: as in transformers (captured from the blocks; the
            first hidden state is the first block's input, positions included).
        Returns PointMAEModelOutput: last_hidden_state (batch, kept, hidden), mask (batch, G), centers (batch, G, 3),
        pooler_output (batch, hidden) the mean of the group tokens.
        """
        config = self.config
        check_point_values(point_values, config.num_groups, config.group_size,
                           f"num_groups={config.num_groups} and group_size={config.group_size}")
        check_group_noise(noise, point_values.shape[0], config.num_groups)
        mask_ratio = feature_mask_ratio(mask_ratio, config, noise)
        groups = group_points(point_values, config.num_groups, config.group_size)
        token_mask = self.mask_groups(groups.centers, noise, mask_ratio)
        tokens = gather_tokens(self.group_embedding(groups.neighborhoods.to(point_values.dtype)), token_mask.ids_keep)
        positions = self.position_embedding(gather_tokens(groups.centers.to(point_values.dtype), token_mask.ids_keep))
        if cls_token is not None:
            batch = tokens.shape[0]
            tokens = torch.cat([cls_token.to(tokens.dtype).expand(batch, -1, -1), tokens], dim=1)
            positions = torch.cat([cls_position.to(positions.dtype).expand(batch, -1, -1), positions], dim=1)
        hidden, _, _ = run_blocks(self.layers, tokens, positions=positions)
        hidden = self.layernorm(hidden)
        return PointMAEModelOutput(
            last_hidden_state=hidden,
            mask=token_mask.mask,
            ids_restore=token_mask.ids_restore,
            centers=groups.centers,
            neighborhoods=groups.neighborhoods,
            pooler_output=pool_tokens(hidden, has_cls_token=cls_token is not None),
        )


class PointMAEForPreTraining(PointMAEPreTrainedModel):
    """Point-MAE encoder + decoder with the Chamfer-L2 loss on the hidden groups."""

    def __init__(self, config: PointMAEConfig):
        super().__init__(config)
        self.pointmae = PointMAEModel(config)
        self.decoder = PointMAEDecoder(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        point_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """Same inputs as :meth:`PointMAEModel.forward`, masking ``config.mask_ratio`` by default. Returns
        PointMAEForPreTrainingOutput: the Chamfer-L2 ``loss`` averaged over the hidden groups, ``logits`` (batch,
        hidden_groups, group_size, 3), ``mask``."""
        mask_ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        encoded = self.pointmae(point_values, noise=noise, mask_ratio=mask_ratio, return_dict=True, **kwargs)
        token_mask = TokenMask(None, encoded.ids_restore, encoded.mask)
        logits = self.decoder(encoded.last_hidden_state, encoded.centers, token_mask)
        batch, num_masked = logits.shape[:2]
        if num_masked:
            target = encoded.neighborhoods[encoded.mask.bool()].reshape(batch * num_masked, -1, 3)
            loss = chamfer_l2(logits.reshape(batch * num_masked, -1, 3), target).mean()
        else:  # nothing hidden (mask_ratio 0): nothing to reconstruct
            loss = logits.new_zeros(())
        return PointMAEForPreTrainingOutput(
            loss=loss,
            logits=logits,
            mask=encoded.mask,
            ids_restore=encoded.ids_restore,
            centers=encoded.centers,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
        )


class PointMAEForPointCloudClassification(PointMAEPreTrainedModel):
    """The official fine-tuning model: encoder over every group with a cls token (and cls position) prepended,
    feature = concat(cls token, max over group tokens), MLP head 2 * hidden -> 256 -> 256 -> num_labels with
    BatchNorm, ReLU and dropout 0.5. Never masks."""

    def __init__(self, config: PointMAEConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.pointmae = PointMAEModel(config)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.cls_position = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.classifier = point_classifier_head(2 * config.hidden_size, config.classifier_hidden_size, config.num_labels,
                                                config.classifier_dropout)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        point_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """point_values (batch, num_points, 3); labels (batch,). Returns SequenceClassifierOutput with logits
        (batch, num_labels); hidden states and attentions include the cls token (position 0)."""
        encoded = self.pointmae(point_values, mask_ratio=0.0, cls_token=self.cls_token, cls_position=self.cls_position,
                                return_dict=True, **kwargs)  # fmt: skip
        hidden = encoded.last_hidden_state
        features = torch.cat([hidden[:, 0], hidden[:, 1:].max(dim=1).values], dim=-1)
        return point_classifier_output(self.classifier, features, labels, self.config, encoded)


__all__ = [
    "PointMAEConfig",
    "PointMAEPreTrainedModel",
    "PointMAEModel",
    "PointMAEForPreTraining",
    "PointMAEForPointCloudClassification",
    "PointMAEModelOutput",
    "PointMAEForPreTrainingOutput",
    "point_mask_from_noise",
]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
METHOD = dict(
    name="pointmae",
    paper="Masked Autoencoders for Point Cloud Self-supervised Learning (Pang et al., ECCV 2022), arXiv:2203.06604",
    config_class=PointMAEConfig,
    model_classes={
        "base": PointMAEModel, "pretraining": PointMAEForPreTraining,
        "point-cloud-classification": PointMAEForPointCloudClassification,
    },
    processor="PointCloudFeatureExtractor",
    presets={
        # CPU-sized: 256 points in 16 groups of 16, a 64-d x 2 encoder, 1 decoder block, a slim mini-PointNet
        "pointmae-tiny": dict(
            num_points=256, num_groups=16, group_size=16, embedding_channels=[32, 64, 128], hidden_size=64,
            num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, position_hidden_size=32,
            decoder_num_hidden_layers=1, decoder_num_attention_heads=4,
        ),
        # the paper's ShapeNet pre-training: 1024 points, 64 x 32 groups, 384-d x 12 (6 heads), decoder x 4, r=0.6
        "pointmae-shapenet": dict(),
    },
    modality="point-cloud",
    pretrain_lr=1e-3,  # Point-MAE: AdamW 1e-3 at batch 128
)
