"""Selfie: Self-supervised Pretraining for Image Embedding (Trinh, Luong, Le, 2019; arXiv:1906.02940).

Selfie is BERT's masked prediction for images, posed as a choice among real patches instead of pixel regression:
1. the image is cut into a grid of patches and a convolutional *patch network* P (the first blocks of a ResNet in
   the paper) encodes each patch on its own into one vector ``h_i``;
2. a random ``mask_ratio`` of the patches is masked. The visible patches' vectors, plus their position embeddings,
   and a learned query vector ``u_0`` go through transformer layers (the *attention pooling network*); the output
   at ``u_0`` is the summary ``u`` of the visible content;
3. for each masked location j the query is ``v_j = u + pos_j`` (the summary plus the position embedding of the
   location to fill in); it scores every masked patch k of the same image by the dot product ``v_j · h_k``, and a
   softmax cross-entropy over those candidates asks for the patch that was really at j: the other masked patches
   are the "distractors" (contrastive predictive coding's loss). There is no pixel prediction.
``SelfieForPreTraining`` returns that loss, the candidate logits ``(batch, M, M)`` (row j: location j, column k:
masked patch k, both in grid order; the right patch is on the diagonal), and ``accuracy``, the share of masked
locations whose top candidate is the right patch (chance: 1 / M).

Departures from the paper (no official code was found; the paper's full text was not read here, only its abstract
and summaries, so the sizes below are hf-mae's choices unless the preset says otherwise):
- the patch network is a small ResNet-like stack of basic residual blocks with GroupNorm (batch-independent
  features; the paper's ResNet-50 blocks use bottlenecks and BatchNorm), a 3x3 stem without downsampling (patches
  are small), stride 2 at the start of every later stage, global average pooling and a Linear to ``hidden_size``;
- position embeddings are one learned vector per grid cell (interpolated for other grids), added both to the
  visible patches' vectors before pooling and to ``u`` for the queries; the paper decomposes ImageNet's positions
  into row and column embeddings;
- the candidates are the masked patches of the same image only (the paper's distractors), scored by plain dot
  products (no temperature);
- fine-tuning: ``SelfieForImageClassification`` keeps the patch network *and* the attention pooling and classifies
  ``u`` over all patches (the paper fine-tunes a whole ResNet-50 whose first blocks are the pre-trained P).

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
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .base import MaskedModelPreTrainedModel, ViTImageConfig, check_choice, check_int
from .embeddings import interpolate_pos_embed, patch_grid_for, to_2tuple
from .heads import ImageClassifierMixin
from .layers import Attention, TransformerBlock, build_encoder_blocks, run_blocks
from .masking import RandomMaskGenerator, feature_mask_ratio, gather_tokens, mask_from_noise, num_kept
from .outputs import MaskedEncoderOutput, MaskedPreTrainingOutput, pool_tokens


class SelfieConfig(ViTImageConfig):
    r"""Configuration of a Selfie model. The ViT fields (:class:`ViTImageConfig`) size the attention pooling network
    (``hidden_size`` is also the patch vectors' width); ``image_size`` / ``patch_size`` cut the patch grid (the paper:
    8-px patches of 32-px images, 32-px patches of 224-px images). Besides:

    patch_channels: channels of the patch network's stages (hf-mae's choice; the paper uses ResNet-50's first three
        stages, 256 / 512 / 1024 channels).
    patch_blocks: residual blocks per stage, one entry per stage (ResNet-50: 3, 4, 6).
    mask_ratio: share of the patches masked (their locations become queries, their vectors the candidates); the
        ``num_patches - int(num_patches * (1 - mask_ratio))`` of MAE's rounding. hf-mae's choice 0.25 (4 of 16
        patches at 32 px) [unverified: the paper's count was not read].
    classifier_pooling: "cls" (the pooled summary ``u``, hf-mae's choice) or "mean" (the mean of the pooled patch
        tokens, then fc_norm).
    """

    model_type = "selfie"

    patch_channels: list[int] | tuple[int, ...] = (64, 128, 256)
    patch_blocks: list[int] | tuple[int, ...] = (1, 1, 1)
    mask_ratio: float = 0.25
    classifier_pooling: str = "cls"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.patch_channels = list(self.patch_channels)
        self.patch_blocks = list(self.patch_blocks)
        if not self.patch_channels:
            raise ValueError("patch_channels must name at least one stage, got []")
        for name, values in (("patch_channels", self.patch_channels), ("patch_blocks", self.patch_blocks)):
            for value in values:
                check_int(name, value)
        if len(self.patch_blocks) != len(self.patch_channels):
            raise ValueError(f"patch_blocks {self.patch_blocks} must have one entry per stage of patch_channels "
                             f"{self.patch_channels}")
        if isinstance(self.mask_ratio, bool) or not isinstance(self.mask_ratio, (int, float)) \
                or not 0.0 < self.mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in (0, 1): Selfie needs masked patches to choose among, got "
                             f"{self.mask_ratio!r}")
        rows, cols = self.grid_size
        if rows * cols - num_kept(rows * cols, self.mask_ratio) < 2 or num_kept(rows * cols, self.mask_ratio) < 1:
            raise ValueError(f"mask_ratio {self.mask_ratio} on the {rows}x{cols} patch grid must mask at least 2 "
                             "patches (one right answer, one distractor) and keep at least 1 visible")
        check_choice("classifier_pooling", self.classifier_pooling, ("cls", "mean"))

    @property
    def num_masked(self) -> int:
        """Masked patches per image at ``image_size``: the candidates of every query."""
        rows, cols = self.grid_size
        return rows * cols - num_kept(rows * cols, self.mask_ratio)


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(32, channels), channels)


class SelfieResidualBlock(nn.Module):
    """A basic residual block: conv3x3 - GN - ReLU - conv3x3 - GN, plus the input (a 1x1 conv + GN when the width
    or the resolution changes), then ReLU."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _group_norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.norm2 = _group_norm(out_channels)
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                          _group_norm(out_channels))

    def forward(self, x):
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class SelfiePatchNetwork(nn.Module):
    """P: encodes every patch on its own. (batch, C, H, W) -> (batch, num_patches, hidden_size), row-major."""

    def __init__(self, config: SelfieConfig):
        super().__init__()
        self.image_size = to_2tuple(config.image_size)
        self.patch_size = to_2tuple(config.patch_size)
        self.num_channels = config.num_channels
        self.grid_size = config.grid_size
        first = config.patch_channels[0]
        self.stem = nn.Sequential(nn.Conv2d(config.num_channels, first, 3, padding=1, bias=False), _group_norm(first),
                                  nn.ReLU())
        blocks, width = [], first
        for stage, (channels, depth) in enumerate(zip(config.patch_channels, config.patch_blocks)):
            for index in range(depth):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(SelfieResidualBlock(width, channels, stride))
                width = channels
        self.blocks = nn.Sequential(*blocks)
        self.projection = nn.Linear(width, config.hidden_size)

    def grid_for(self, pixel_values, allow_other_size: bool = False) -> tuple[int, int]:
        return patch_grid_for(pixel_values, self.image_size, self.patch_size, self.num_channels, allow_other_size)

    def forward(self, pixel_values: torch.Tensor, grid) -> torch.Tensor:
        batch, channels = pixel_values.shape[:2]
        (rows, cols), (ph, pw) = grid, self.patch_size
        patches = pixel_values.to(self.projection.weight.dtype).reshape(batch, channels, rows, ph, cols, pw)
        patches = patches.permute(0, 2, 4, 1, 3, 5).reshape(batch * rows * cols, channels, ph, pw)
        features = self.blocks(self.stem(patches)).mean(dim=(2, 3))
        return self.projection(features).reshape(batch, rows * cols, -1)


class SelfiePositions(nn.Module):
    """The query vector ``u_0`` and one learned position embedding per grid cell (interpolated for other grids)."""

    def __init__(self, config: SelfieConfig):
        super().__init__()
        rows, cols = config.grid_size
        self.grid_size = (rows, cols)
        self.query_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, rows * cols, config.hidden_size))

    def table(self, grid) -> torch.Tensor:
        """(1, rows * cols, hidden) for ``grid``."""
        if tuple(grid) == self.grid_size:
            return self.position_embeddings
        return interpolate_pos_embed(self.position_embeddings, self.grid_size, tuple(grid))


@dataclass
class SelfieModelOutput(MaskedEncoderOutput):
    """MaskedEncoderOutput (last_hidden_state (batch, 1 + visible, hidden): ``u`` first, then the visible patches in
    grid order; ``ids_restore`` None: no shuffling) plus ``patch_features`` (batch, num_patches, hidden): P's vector
    of every patch, masked or not, in grid order (the candidates of pre-training)."""

    patch_features: torch.Tensor | None = None


@dataclass
class SelfieForPreTrainingOutput(MaskedPreTrainingOutput):
    """loss: the cross-entropy of picking each masked location's patch among the image's masked patches.
    logits: (batch, M, M): row j scores the M masked patches for masked location j (grid order; right = diagonal).
    mask: (batch, num_patches), 1 = masked. accuracy: share of locations whose top candidate is right (chance 1/M)."""

    accuracy: torch.Tensor | None = None


class SelfiePreTrainedModel(MaskedModelPreTrainedModel):
    config_class = SelfieConfig
    base_model_prefix = "selfie"
    input_modalities = ("image",)
    _no_split_modules = ["TransformerBlock", "SelfiePatchNetwork"]

    @torch.no_grad()
    def _init_weights(self, module):
        """ResNet's He init (fan-out) for convolutions, unit GroupNorms; truncated N(0, 0.02) for linears, the query
        vector and the position embeddings (the ViT rule; hf-mae's choice)."""
        std = self.config.initializer_range
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.GroupNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init.trunc_normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, SelfiePositions):
            init.trunc_normal_(module.query_token, mean=0.0, std=std)
            init.trunc_normal_(module.position_embeddings, mean=0.0, std=std)
        else:
            super()._init_weights(module)


def masked_and_visible_ids(mask: torch.Tensor, num_visible: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(visible ids (batch, num_visible), masked ids (batch, N - num_visible)), each in grid order, of a mask
    (batch, N) with 1 = masked."""
    order = torch.argsort(mask, dim=1, stable=True)
    return order[:, :num_visible], order[:, num_visible:]


class SelfieModel(SelfiePreTrainedModel):
    """Patch network + attention pooling over the visible patches: the Selfie encoder (``AutoModel``: features)."""

    _can_record_outputs = {"hidden_states": TransformerBlock, "attentions": Attention}

    def __init__(self, config: SelfieConfig, add_final_norm: bool = True):
        super().__init__(config)
        self.patch_network = SelfiePatchNetwork(config)
        self.positions = SelfiePositions(config)
        self.layers = build_encoder_blocks(config)
        self.layernorm = (
            nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if add_final_norm else nn.Identity()
        )
        self.mask_generator = RandomMaskGenerator()
        self.post_init()

    def get_input_embeddings(self):
        return self.patch_network

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
        noise: (batch, num_patches), optional: the ``int(N * (1 - mask_ratio))`` patches with the smallest noise stay
            visible (MAE's rule).
        mask_ratio: default 0.0 (``config.mask_ratio`` with ``noise``): every patch visible, the same features on
            every call. Pre-training passes ``config.mask_ratio``.
        interpolate_pos_encoding: allow other image sizes (multiples of the patch; positions interpolated).
        Returns SelfieModelOutput: last_hidden_state (batch, 1 + visible, hidden), ``u`` first then the visible
        patches in grid order; mask (batch, num_patches), 1 = masked; pooler_output (batch, hidden): ``u`` (the mean
        of the patch tokens with ``classifier_pooling="mean"``); patch_features (batch, num_patches, hidden).
        """
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        grid = self.patch_network.grid_for(pixel_values, allow_other_size=interpolate_pos_encoding)
        mask_ratio = feature_mask_ratio(mask_ratio, self.config, noise)
        features = self.patch_network(pixel_values, grid)
        batch, num_patches, _ = features.shape
        if noise is not None:
            if not isinstance(noise, torch.Tensor) or tuple(noise.shape) != (batch, num_patches):
                got = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
                raise ValueError(f"noise must have shape (batch, num_patches) = {(batch, num_patches)}, got {got}")
            mask = mask_from_noise(noise.to(features.device), mask_ratio).mask
        else:
            mask = self.mask_generator(batch, num_patches, mask_ratio, grid, features.device).mask
        tokens = features + self.positions.table(grid).to(features.dtype)
        if mask_ratio > 0.0:
            visible, _ = masked_and_visible_ids(mask, num_kept(num_patches, mask_ratio))
            tokens = gather_tokens(tokens, visible)
        query = self.positions.query_token.to(tokens.dtype).expand(batch, -1, -1)
        hidden, _, _ = run_blocks(self.layers, torch.cat([query, tokens], dim=1))
        hidden = self.layernorm(hidden)
        return SelfieModelOutput(
            last_hidden_state=hidden, mask=mask, pooler_output=pool_tokens(hidden, self.config.classifier_pooling),
            patch_features=features,
        )


class SelfieForPreTraining(SelfiePreTrainedModel):
    """Selfie encoder + the patch choice: each masked location's query ``u + pos_j`` picks its patch among the
    image's masked patches (cross-entropy over dot products)."""

    def __init__(self, config: SelfieConfig):
        super().__init__(config)
        self.selfie = SelfieModel(config)
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
        """Same inputs as :meth:`SelfieModel.forward` (``mask_ratio`` defaults to ``config.mask_ratio`` and must
        mask at least 2 patches). Returns SelfieForPreTrainingOutput (loss, logits (batch, M, M), mask, accuracy)."""
        mask_ratio = self.config.mask_ratio if mask_ratio is None else mask_ratio
        encoded = self.selfie(pixel_values, noise=noise, mask_ratio=mask_ratio,
                              interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True, **kwargs)
        features = encoded.patch_features
        batch, num_patches, _ = features.shape
        num_visible = num_kept(num_patches, mask_ratio)
        if num_patches - num_visible < 2:
            raise ValueError(f"mask_ratio {mask_ratio} masks {num_patches - num_visible} of {num_patches} patches; "
                             "Selfie pre-training needs at least 2 (the right patch and a distractor)")
        _, masked = masked_and_visible_ids(encoded.mask, num_visible)
        grid = self.selfie.patch_network.grid_for(pixel_values, allow_other_size=True)
        positions = self.selfie.positions.table(grid).to(features.dtype).expand(batch, -1, -1)
        summary = encoded.last_hidden_state[:, :1]  # u: (batch, 1, hidden)
        queries = summary + gather_tokens(positions, masked)  # (batch, M, hidden)
        candidates = gather_tokens(features, masked)  # (batch, M, hidden)
        logits = queries @ candidates.transpose(1, 2)
        num_masked = logits.shape[1]
        target = torch.arange(num_masked, device=logits.device)
        loss = F.cross_entropy(logits.float().reshape(-1, num_masked), target.repeat(batch))
        return SelfieForPreTrainingOutput(
            loss=loss, logits=logits, mask=encoded.mask, hidden_states=encoded.hidden_states,
            attentions=encoded.attentions, accuracy=pick_accuracy(logits),
        )


class SelfieForImageClassification(ImageClassifierMixin, SelfiePreTrainedModel):
    """Selfie encoder over every patch (no masking) + a linear classifier on ``u`` (``classifier_pooling="cls"``)
    or on the mean of the pooled patch tokens + fc_norm ("mean")."""

    def __init__(self, config: SelfieConfig):
        super().__init__(config)
        self.selfie = SelfieModel(config, add_final_norm=config.classifier_pooling == "cls")
        self.build_classifier(config)
        self.post_init()


def pick_accuracy(logits: torch.Tensor) -> torch.Tensor:
    """Share of masked locations whose highest-scoring candidate is their own patch (logits (batch, M, M))."""
    return (logits.argmax(dim=-1) == torch.arange(logits.shape[1], device=logits.device)).float().mean()


__all__ = [
    "SelfieConfig",
    "SelfiePreTrainedModel",
    "SelfieModel",
    "SelfieForPreTraining",
    "SelfieForImageClassification",
    "SelfieModelOutput",
    "SelfieForPreTrainingOutput",
    "pick_accuracy",
]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.

METHOD = dict(
    name="selfie",
    paper="Selfie: Self-supervised Pretraining for Image Embedding (Trinh, Luong, Le, 2019), arXiv:1906.02940",
    config_class=SelfieConfig,
    model_classes={
        "base": SelfieModel, "pretraining": SelfieForPreTraining, "image-classification": SelfieForImageClassification,
    },
    processor="MAEImageProcessor",
    # no official code and no recipe read: MAE's crop + flip and blr 1.5e-4 at 4096 (hf-mae's choices [unverified])
    pretrain_augmentation=dict(crop_scale=(0.2, 1.0), resample="bicubic"),
    pretrain_base_lr=1.5e-4, pretrain_batch=4096,
    presets={
        # 32-px images, a 4x4 grid of 8-px patches, 4 masked (chance 1/4); a 3-stage 32/64/128 patch network and a
        # 2-layer 128-d attention pooling
        "selfie-tiny": dict(image_size=32, patch_size=8, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=512, patch_channels=[32, 64, 128], patch_blocks=[1, 1, 1]),
        # the paper's CIFAR-10 setting: 8-px patches of 32-px images; P sized as ResNet-50's first three stages
        # (256 / 512 / 1024 channels, 3 / 4 / 6 blocks; basic blocks here), a 1024-d pooling of 3 layers
        # [unverified: the pooling depth and width]
        "selfie-resnet50-cifar10": dict(image_size=32, patch_size=8, hidden_size=1024, num_hidden_layers=3,
                                        num_attention_heads=16, intermediate_size=4096,
                                        patch_channels=[256, 512, 1024], patch_blocks=[3, 4, 6]),
    },
)
