"""Point-cloud tokens: farthest-point sampling of group centres, k-nearest-neighbour grouping, and the mini-PointNet
that embeds each group as one token (Point-BERT / Point-MAE / I2P-MAE). Plain torch, CPU and GPU, no CUDA extension.

Shapes: ``points`` (batch, num_points, 3); ``num_groups`` centres per cloud; ``group_size`` neighbours per centre.

Remote-code rule: this file imports only the standard library, torch, transformers and siblings (see DESIGN.md).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from transformers.modeling_outputs import SequenceClassifierOutput

from .losses import classification_loss
from .masking import check_tensor_condition


def farthest_point_sample(points: torch.Tensor, num_samples: int, start: torch.Tensor | None = None) -> torch.Tensor:
    """Indices (batch, num_samples) of ``num_samples`` points picked greedily, each the point farthest (Euclidean)
    from those already picked. The first pick is ``start`` (batch,) or point 0, as pointnet2's CUDA FPS, so the
    result is deterministic; ties go to the lowest index."""
    batch, num_points, _ = points.shape
    if not 0 < num_samples <= num_points:
        raise ValueError(f"num_samples must be in [1, {num_points}] (the number of points), got {num_samples}")
    points = points.float()
    picked = torch.empty(batch, num_samples, dtype=torch.long, device=points.device)
    current = torch.zeros(batch, dtype=torch.long, device=points.device) if start is None else start.long()
    nearest = torch.full((batch, num_points), float("inf"), device=points.device)  # distance to the picked set
    rows = torch.arange(batch, device=points.device)
    for i in range(num_samples):
        picked[:, i] = current
        distance = (points - points[rows, current].unsqueeze(1)).pow(2).sum(-1)
        nearest = torch.minimum(nearest, distance)
        current = nearest.argmax(dim=1)
    return picked


def gather_points(values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``values`` (batch, N, C) at ``indices`` (batch, *shape) -> (batch, *shape, C)."""
    batch = values.shape[0]
    flat = indices.reshape(batch, -1)
    gathered = values.gather(1, flat.unsqueeze(-1).expand(-1, -1, values.shape[-1]))
    return gathered.reshape(*indices.shape, values.shape[-1])


def knn_indices(queries: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (batch, num_queries, k) of the ``k`` points nearest to each query, nearest first."""
    if not 0 < k <= points.shape[1]:
        raise ValueError(f"k (group_size) must be in [1, {points.shape[1]}] (the number of points), got {k}")
    distance = torch.cdist(queries.float(), points.float())
    return distance.topk(k, dim=-1, largest=False, sorted=True).indices


class PointGroups(NamedTuple):
    neighborhoods: torch.Tensor  # (batch, num_groups, group_size, 3): each group's points relative to its centre
    centers: torch.Tensor  # (batch, num_groups, 3)
    center_indices: torch.Tensor  # (batch, num_groups): the centres' indices into the input points
    member_indices: torch.Tensor  # (batch, num_groups, group_size): the members' indices into the input points


def group_points(points: torch.Tensor, num_groups: int, group_size: int) -> PointGroups:
    """Point-MAE's ``Group``: FPS picks ``num_groups`` centres, each gathers its ``group_size`` nearest points (itself
    included), re-centred on the centre so a token describes local shape and its position is carried separately."""
    center_indices = farthest_point_sample(points, num_groups)
    centers = gather_points(points, center_indices)
    member_indices = knn_indices(centers, points, group_size)
    neighborhoods = gather_points(points, member_indices) - centers.unsqueeze(2)
    return PointGroups(neighborhoods, centers, center_indices, member_indices)


class PointGroupEmbedding(nn.Module):
    """Mini-PointNet token embedding of a group: a shared per-point MLP, max-pooled to a group feature that is
    concatenated back onto every point, a second per-point MLP, max-pooled again (Point-MAE's ``Encoder``).

    (batch, groups, points per group, in_channels) -> (batch, groups, out_channels). The channel widths of the two
    MLPs default to Point-MAE's 3 -> 128 -> 256 and 512 -> 512 -> out."""

    def __init__(self, out_channels: int, in_channels: int = 3, first_channels=(128, 256), second_channels: int = 512):
        super().__init__()
        hidden, pooled = first_channels
        self.first = nn.Sequential(
            nn.Conv1d(in_channels, hidden, 1), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True), nn.Conv1d(hidden, pooled, 1)
        )
        self.second = nn.Sequential(
            nn.Conv1d(2 * pooled, second_channels, 1), nn.BatchNorm1d(second_channels), nn.ReLU(inplace=True),
            nn.Conv1d(second_channels, out_channels, 1),
        )

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        batch, num_groups, size, channels = groups.shape
        x = groups.reshape(batch * num_groups, size, channels).transpose(1, 2)  # (B*G, C, k): Conv1d over points
        x = x.to(self.first[0].weight.dtype)  # the grouping geometry runs in float32; the weights may be half
        x = self.first(x)
        pooled = x.max(dim=2, keepdim=True).values
        x = self.second(torch.cat([pooled.expand(-1, -1, size), x], dim=1))
        return x.max(dim=2).values.reshape(batch, num_groups, -1)


def check_point_values(point_values, num_groups: int, group_size: int, fields: str) -> None:
    """Raises TypeError/ValueError naming ``point_values`` unless it is a float tensor (batch, N, 3) without NaN and
    with N >= max(num_groups, group_size), the points the first grouping needs (``fields`` names the config values
    that ask for them, for the message)."""
    if not isinstance(point_values, torch.Tensor):
        raise TypeError(f"point_values must be a torch.Tensor (batch, num_points, 3), got {type(point_values).__name__}")
    if not point_values.is_floating_point():
        raise TypeError(f"point_values must be a floating-point tensor, got dtype {point_values.dtype}; use the processor")
    if point_values.ndim != 3:
        raise ValueError(f"point_values must have 3 dimensions (batch, num_points, 3), got shape {tuple(point_values.shape)}")
    batch, count, channels = point_values.shape
    if channels != 3:
        raise ValueError(f"point_values must have x, y, z in its last dimension (size 3), got size {channels}")
    if batch == 0:
        raise ValueError("point_values is an empty batch (batch size 0)")
    needed = max(num_groups, group_size)
    if count < needed:
        raise ValueError(f"point_values has {count} points per cloud; {fields} need at least {needed}")
    # a runtime assertion under torch.export / torch.compile, where the values cannot be read
    check_tensor_condition(torch.isfinite(point_values).all(), "point_values contains NaN or infinite coordinates")


def check_group_noise(noise, batch: int, num_groups: int) -> None:
    """Raises ValueError unless ``noise`` is None or a tensor (batch, num_groups), the per-group sort keys that fix a
    mask."""
    if noise is not None and (not isinstance(noise, torch.Tensor) or tuple(noise.shape) != (batch, num_groups)):
        shape = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
        raise ValueError(f"noise must be a tensor of shape (batch, num_groups) = {(batch, num_groups)}, got {shape}")


def point_classifier_head(in_features: int, hidden_size: int, num_labels: int, dropout: float) -> nn.Sequential:
    """Point-MAE's / I2P-MAE's fine-tuning MLP: in -> hidden -> hidden -> labels, BatchNorm, ReLU and dropout after
    each hidden layer (the official ``cls_head_finetune``; layer indices 0, 1, 4, 5, 8 as its state dict)."""
    return nn.Sequential(
        nn.Linear(in_features, hidden_size), nn.BatchNorm1d(hidden_size), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden_size, hidden_size), nn.BatchNorm1d(hidden_size), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden_size, num_labels),
    )


def point_classifier_output(head: nn.Module, features: torch.Tensor, labels, config, encoded) -> SequenceClassifierOutput:
    """A point-cloud classifier's output: ``head`` on the pooled ``features`` (batch, in_features), the loss of
    ``labels`` (batch,) when given, the encoder's (``encoded``) hidden states and attentions."""
    logits = head(features)
    loss = classification_loss(logits, labels, config) if labels is not None else None
    return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=encoded.hidden_states,
                                    attentions=encoded.attentions)


__all__ = ["farthest_point_sample", "gather_points", "knn_indices", "PointGroups", "group_points", "PointGroupEmbedding",
           "check_point_values", "check_group_noise", "point_classifier_head", "point_classifier_output"]
