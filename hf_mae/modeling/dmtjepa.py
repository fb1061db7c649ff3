"""DMT-JEPA: Discriminative Masked Targets for Joint-Embedding Predictive Architecture (Mo & Yun, 2024).

I-JEPA (``ijepa.py``: multi-block masks, context encoder, EMA target encoder, narrow predictor) with a
**local aggregation head** on both sides, following the official code (DMTJEPA/DMTJEPA, ``src/models/local_agg_head.py``,
``src/train.py``, ``configs/in1k_vitb16_ep600.yaml``):
1. target side: the target encoder's layer-normed output ``h`` (batch, N, d) goes through an EMA copy of the head with
   ``loc=True``: for each patch, the 8 neighbours of its 3x3 window (indices wrap around the grid's edges,
   :func:`neighbour_indices`) are ranked by cosine similarity to the patch and the top ``k = 4`` kept
   (:func:`select_neighbours`); two CaiT-style class-attention blocks then aggregate them, with the image's mean
   token as the first query and keys / values ``[query, 4 neighbours]``; a final LayerNorm. The aggregated token of
   each patch is its target; the target blocks are gathered from them;
2. context side: the same head (the trainable one) with ``loc=False``: each class-attention block pools the context
   tokens into one vector (query: their mean) and adds it to every context token, then each token's MLP; a final
   LayerNorm; the predictor follows (as I-JEPA's);
3. the loss is ``F.smooth_l1_loss`` between predictions and targets (the code's; a summary of the paper says L2);
4. the head's EMA copy moves with the target encoder (same momentum, after every optimiser step).

Departures from the official code (hf-mae's choice): those of I-JEPA (``ijepa.py``), and the first query of each
patch's aggregation is the mean token of *its own* image. The official ``cls_tokens.repeat(N, 1, 1)`` lays the batch
out image-minor while the neighbour rows are image-major, so for a batch of more than one image patch ``n`` of image
``b`` gets the mean token of image ``(b * N + n) % batch``; with one image per batch both agree.
Non-square grids are supported (the official head knows 14x14, 16x16 and 6x6 grids only).

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from .base import check_int
from .ijepa import (
    IJEPA_AUGMENTATION,
    HfIJEPAConfig,
    IJEPAForImageClassification,
    IJEPAForPreTraining,
    IJEPAForPreTrainingOutput,
    IJEPAModel,
    IJEPAPreTrainedModel,
    IJEPATeacher,
)
from .layers import MLP, CrossAttention


class DMTJEPAConfig(HfIJEPAConfig):
    r"""Configuration of a DMT-JEPA model: :class:`HfIJEPAConfig`'s fields (defaults: ViT-B/16, predictor 384-d x 6,
    as ``configs/in1k_vitb16_ep600.yaml``) plus

    num_neighbours: neighbours kept per patch by cosine similarity (official ``patch_k_num``: 4).
    neighbour_window: side of the window around each patch whose other patches are the candidates (official
        ``patch_k_size``: 3, i.e. 8 candidates); odd, at most the grid's smaller side (indices wrap around).
    The head's 2 class-attention blocks (official: fixed at 2) have the encoder's width and heads, MLP ratio 4, exact
    GELU and LayerNorm eps 1e-6 (the official ``LocalAggHead``).
    """

    model_type = "dmtjepa"

    num_neighbours: int = 4
    neighbour_window: int = 3

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_int("neighbour_window", self.neighbour_window, minimum=3)
        if self.neighbour_window % 2 == 0:
            raise ValueError(f"neighbour_window must be odd (a window centred on the patch), got {self.neighbour_window}")
        check_int("num_neighbours", self.num_neighbours)
        if self.num_neighbours > self.neighbour_window**2 - 1:
            raise ValueError(f"num_neighbours must be at most neighbour_window**2 - 1 = {self.neighbour_window**2 - 1} "
                             f"(the window's other patches), got {self.num_neighbours}")  # fmt: skip
        check_window(self.grid_size, self.neighbour_window, "image_size / patch_size")


def check_window(grid, window: int, what: str = "the patch grid") -> None:
    if min(grid) < window:
        raise ValueError(f"{what} gives a {grid[0]}x{grid[1]} patch grid, smaller than neighbour_window {window}: "
                         "the wrapped-around window would repeat patches")  # fmt: skip


@functools.lru_cache(maxsize=16)
def neighbour_indices(grid_size: tuple[int, int], window: int = 3) -> torch.Tensor:
    """(N, window**2 - 1) long: for each patch (row-major index ``r * cols + c``) the other patches of the
    ``window x window`` square centred on it, rows and columns taken modulo the grid (wrap-around), in ascending index
    order (the official ``get_local_index``)."""
    rows, cols = grid_size
    check_window(grid_size, window)
    half = window // 2
    table = []
    for r in range(rows):
        for c in range(cols):
            around = {((r + i) % rows) * cols + (c + j) % cols for i in range(-half, half + 1)
                      for j in range(-half, half + 1)}  # fmt: skip
            around.discard(r * cols + c)
            table.append(sorted(around))
    return torch.tensor(table, dtype=torch.long)


def select_neighbours(tokens: torch.Tensor, neighbours: torch.Tensor, k: int) -> torch.Tensor:
    """tokens (batch, N, d), neighbours (N, L) candidate indices -> (batch, N, k, d): for each patch the ``k``
    candidates with the highest cosine similarity to it, most similar first (``topk``)."""
    normed = F.normalize(tokens, dim=-1)
    candidates = tokens[:, neighbours]  # (batch, N, L, d)
    similarity = (normed[:, neighbours] * normed.unsqueeze(2)).sum(-1)  # (batch, N, L)
    top = similarity.topk(k, dim=-1).indices
    return torch.gather(candidates, 2, top.unsqueeze(-1).expand(-1, -1, -1, tokens.shape[-1]))


class ClassAttentionBlock(nn.Module):
    """CaiT's class-attention block as the official ``LayerScale_Block_CA`` (no LayerScale there): LayerNorm over
    ``[query, tokens]``, the normalised query attends to all of them (one query), then a residual and an MLP.
    ``local=True`` adds the result to the query (a per-patch aggregate), ``local=False`` to every token."""

    def __init__(self, config, hidden_size: int, num_heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.attention = CrossAttention(config, hidden_size, num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(hidden_size, eps=1e-6)
        self.mlp = MLP(hidden_size, 4 * hidden_size, "gelu")

    def forward(self, query: torch.Tensor, tokens: torch.Tensor, local: bool) -> torch.Tensor:
        """query (n, 1, d), tokens (n, L, d) -> (n, 1, d) with ``local``, else (n, L, d)."""
        normed = self.norm1(torch.cat([query, tokens], dim=1))
        pooled, _ = self.attention(normed[:, :1], normed)
        hidden = (query if local else tokens) + pooled
        return hidden + self.mlp(self.norm2(hidden))


class LocalAggregationHead(nn.Module):
    """DMT-JEPA's ``LocalAggHead``: two class-attention blocks and a final LayerNorm (eps 1e-6)."""

    def __init__(self, config: DMTJEPAConfig):
        super().__init__()
        self.num_neighbours, self.window = config.num_neighbours, config.neighbour_window
        self.blocks = nn.ModuleList(
            ClassAttentionBlock(config, config.hidden_size, config.num_attention_heads) for _ in range(2)
        )
        self.norm = nn.LayerNorm(config.hidden_size, eps=1e-6)

    def forward(self, tokens: torch.Tensor, grid=None, local: bool = False) -> torch.Tensor:
        """tokens (batch, n, d). ``local=True`` (the target side; ``grid`` the (rows, cols) of the n = N patches):
        each patch aggregates its selected neighbours. ``local=False`` (the context side): each block adds the
        attention-pooled context to every token. Returns (batch, n, d)."""
        batch, count, dim = tokens.shape
        query = tokens.mean(dim=1, keepdim=True)
        if local:
            if grid is None or grid[0] * grid[1] != count:
                raise ValueError(f"local aggregation needs the patch grid of the {count} tokens, got grid {grid}")
            neighbours = neighbour_indices(tuple(grid), self.window).to(tokens.device)
            keys = select_neighbours(tokens, neighbours, self.num_neighbours).reshape(batch * count, -1, dim)
            hidden = query.expand(batch, count, dim).reshape(batch * count, 1, dim)  # each patch: its image's mean
            for block in self.blocks:
                hidden = block(hidden, keys, local=True)
            return self.norm(hidden.reshape(batch, count, dim))
        hidden = tokens
        for index, block in enumerate(self.blocks):
            if index:
                query = hidden.mean(dim=1, keepdim=True)
            hidden = block(query, hidden, local=False)
        return self.norm(hidden)


class DMTJEPAPreTrainedModel(IJEPAPreTrainedModel):
    config_class = DMTJEPAConfig


class DMTJEPAModel(IJEPAModel):
    """The DMT-JEPA encoder (I-JEPA's ViT without cls token); loads the ``ijepa.*`` weights of a pre-training
    checkpoint (the context encoder)."""

    config_class = DMTJEPAConfig


class DMTJEPAForImageClassification(IJEPAForImageClassification):
    """The encoder + a linear classifier on the mean of the patch tokens (no cls token)."""

    config_class = DMTJEPAConfig


class DMTJEPAForPreTraining(IJEPAForPreTraining):
    """I-JEPA's context encoder, predictor and EMA target encoder, plus the local aggregation head (trainable, on the
    context side with ``loc=False``) and its EMA copy (on the target side with ``loc=True``)."""

    config_class = DMTJEPAConfig

    def build_heads(self, config) -> None:
        self.agg_head = LocalAggregationHead(config)

    def build_teacher(self, config):
        return IJEPATeacher(config, agg_head=LocalAggregationHead(config))

    def teacher_student(self) -> dict:
        return {"encoder": self.ijepa, "agg_head": self.agg_head}

    def target_features(self, features, grid):
        return self.teacher.agg_head(features, grid, local=True)

    def context_features(self, context):
        return self.agg_head(context, local=False)


DMTJEPAForPreTrainingOutput = IJEPAForPreTrainingOutput

__all__ = [
    "DMTJEPAConfig",
    "DMTJEPAPreTrainedModel",
    "DMTJEPAModel",
    "DMTJEPAForPreTraining",
    "DMTJEPAForImageClassification",
    "LocalAggregationHead",
    "neighbour_indices",
    "select_neighbours",
]


# ----------------------------------------------------------------------------------------------- registry row
from .ijepa import IJEPA_TINY  # noqa: E402
from .presets import VIT  # noqa: E402

METHOD = dict(
    name="dmtjepa",
    paper="DMT-JEPA: Discriminative Masked Targets for Joint-Embedding Predictive Architecture (Mo & Yun, 2024), "
          "arXiv:2405.17995",
    config_class=DMTJEPAConfig,
    model_classes={
        "base": DMTJEPAModel, "pretraining": DMTJEPAForPreTraining, "image-classification": DMTJEPAForImageClassification,
    },
    processor="MAEImageProcessor",
    pretrain_augmentation=IJEPA_AUGMENTATION,  # the same make_transforms and crop scale (0.3, 1.0)
    # configs/in1k_vitb16_ep600.yaml: lr 1e-3 (the total batch is not in the config; I-JEPA's 2048 assumed)
    pretrain_base_lr=1.25e-4, pretrain_batch=2048, pretrain_betas=(0.9, 0.999),
    presets={
        "dmtjepa-tiny": dict(IJEPA_TINY),
        "dmtjepa-vit-base-patch16": dict(patch_size=16, **VIT["base"]),  # predictor 384-d x 6, 12 heads
    },
    exports=["DMTJEPAPreTrainedModel", "LocalAggregationHead", "neighbour_indices", "select_neighbours"],
)
