"""Message passing on graphs given as a disjoint union, in plain torch (``index_add_`` / ``scatter_reduce_``, no DGL
or PyG): the softmax over a node's incoming edges, per-graph pooling, and GraphMAE's GAT and GIN layers (the
official DGL ``GATConv`` / ``GINConv``). ``edge_index`` (2, E) holds the source (row 0) and the target (row 1) of
every message; ``batch`` (N,) the graph of every node.

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def edge_softmax(scores: torch.Tensor, target: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Softmax of edge scores (E, heads) over the incoming edges of each target node (``target`` (E,))."""
    index = target[:, None].expand_as(scores)
    with torch.no_grad():  # the shift only keeps exp() finite; softmax does not depend on it
        shift = scores.new_full((num_nodes, scores.shape[1]), -math.inf).scatter_reduce_(0, index, scores, "amax")
    weights = (scores - shift[target]).exp()
    total = weights.new_zeros(num_nodes, scores.shape[1]).index_add_(0, target, weights)
    return weights / total[target]


def pool_nodes(hidden: torch.Tensor, batch: torch.Tensor | None, mode: str, num_graphs: int | None = None) -> torch.Tensor:
    """Node states (N, d) -> one vector per graph (num_graphs, d) by "mean", "sum" or "max" (``batch`` None: one
    graph). A graph id without nodes pools to zeros."""
    if batch is None:
        reduce = {"mean": torch.mean, "sum": torch.sum, "max": torch.amax}[mode]
        return reduce(hidden, dim=0, keepdim=True)
    num_graphs = count_graphs(batch) if num_graphs is None else num_graphs
    out = hidden.new_zeros(num_graphs, hidden.shape[1])
    if mode == "max":
        return out.scatter_reduce_(0, batch[:, None].expand_as(hidden), hidden, "amax", include_self=False)
    out = out.index_add_(0, batch, hidden)
    if mode == "mean":
        # nodes per graph by index_add (bincount's output size would depend on the data under torch.export)
        counts = batch.new_zeros(num_graphs).index_add_(0, batch, torch.ones_like(batch))
        out = out / counts.clamp_min(1).to(hidden.dtype)[:, None]
    return out


def count_graphs(batch: torch.Tensor) -> int:
    """The graphs of a union, ``max(batch) + 1``: an int, or a symbolic size under torch.export / torch.compile
    (which cannot read ``batch``)."""
    if not torch.compiler.is_compiling():
        return int(batch.max()) + 1
    count = batch.max().item() + 1
    torch._check(count >= 1)
    return count


def make_activation(name: str | None) -> nn.Module:
    return {"prelu": nn.PReLU, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, None: nn.Identity}[name]()


def make_norm(name: str | None, width: int) -> nn.Module:
    return {"batchnorm": nn.BatchNorm1d, "layernorm": nn.LayerNorm}[name](width) if name else nn.Identity()


class MessagePassingLayer(nn.Module):
    """A layer of a GNN stack, x (N, in_dim), edge_index (2, E) -> (N, out_dim): the unit whose outputs a model's
    output capture records as its hidden states."""


class GATLayer(MessagePassingLayer):
    """Graph attention (the official DGL ``GATConv``): per head h,
    ``out_i = sum_{j -> i} softmax_j(LeakyReLU(a_l . W x_j + a_r . W x_i)) W x_j + bias`` over the incoming edges of
    i, then (optional) residual, heads concatenated (or averaged), norm, activation. Dropout on the input features
    (``feat_drop``) and the attention weights (``attn_drop``).

    x (N, in_dim), edge_index (2, E) -> (N, num_heads * out_dim) when ``concat`` else (N, out_dim).
    """

    def __init__(self, in_dim, out_dim, num_heads, feat_drop=0.0, attn_drop=0.0, negative_slope=0.2, residual=False,
                 activation=None, norm=None, concat=True):  # fmt: skip
        super().__init__()
        self.in_dim, self.out_dim, self.num_heads, self.concat = in_dim, out_dim, num_heads, concat
        width = num_heads * out_dim
        self.weight = nn.Parameter(torch.empty(width, in_dim))  # W of every head, stacked
        self.attn_l = nn.Parameter(torch.empty(1, num_heads, out_dim))  # a_l: scores the source (neighbour)
        self.attn_r = nn.Parameter(torch.empty(1, num_heads, out_dim))  # a_r: scores the target
        self.bias = nn.Parameter(torch.zeros(width))
        # residual: identity when the widths match, else a bias-free projection (as the official layer)
        self.res_weight = nn.Parameter(torch.empty(width, in_dim)) if residual and in_dim != width else None
        self.residual = residual
        self.feat_drop = nn.Dropout(feat_drop)
        self.attn_drop = nn.Dropout(attn_drop)
        self.negative_slope = negative_slope
        self.norm = make_norm(norm, width if concat else out_dim)
        self.activation = make_activation(activation)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        num_nodes = x.shape[0]
        source, target = edge_index
        heads, out_dim = self.num_heads, self.out_dim
        h = self.feat_drop(x)
        weight = self.weight.view(heads, out_dim, self.in_dim)
        if self.in_dim < out_dim:
            # Narrow input (the decoder: 512 -> 1433): aggregate the inputs, then project, W sum(a x) = sum(a W x),
            # and score with (W^T a) . x; fewer numbers move along the edges. Same result as the branch below.
            score_l = h @ torch.einsum("hdi,hd->ih", weight, self.attn_l[0])
            score_r = h @ torch.einsum("hdi,hd->ih", weight, self.attn_r[0])
            attention = self._attention(score_l, score_r, source, target, num_nodes)  # (E, heads)
            messages = h[source, None, :] * attention[..., None]  # (E, heads, in_dim)
            summed = h.new_zeros(num_nodes, heads, self.in_dim).index_add_(0, target, messages)
            out = torch.einsum("nhi,hdi->nhd", summed, weight)
        else:
            feat = nn.functional.linear(h, self.weight).view(num_nodes, heads, out_dim)
            score_l, score_r = (feat * self.attn_l).sum(-1), (feat * self.attn_r).sum(-1)  # (N, heads)
            attention = self._attention(score_l, score_r, source, target, num_nodes)
            messages = feat[source] * attention[..., None]  # (E, heads, out_dim)
            out = feat.new_zeros(num_nodes, heads, out_dim).index_add_(0, target, messages)
        out = out + self.bias.view(1, heads, out_dim)
        if self.residual:
            skip = h if self.res_weight is None else nn.functional.linear(h, self.res_weight)
            out = out + skip.view(num_nodes, -1, out_dim)
        out = out.flatten(1) if self.concat else out.mean(dim=1)
        return self.activation(self.norm(out))

    def _attention(self, score_l, score_r, source, target, num_nodes) -> torch.Tensor:
        scores = nn.functional.leaky_relu(score_l[source] + score_r[target], self.negative_slope)
        return self.attn_drop(edge_softmax(scores, target, num_nodes))


class GINMLP(nn.Sequential):
    """GIN's two-layer MLP: Linear -> norm -> activation -> Linear (the official ``MLP(2, ...)``)."""

    def __init__(self, in_dim, hidden_dim, out_dim, activation, norm):
        super().__init__(
            nn.Linear(in_dim, hidden_dim), make_norm(norm, hidden_dim), make_activation(activation),
            nn.Linear(hidden_dim, out_dim),
        )  # fmt: skip


class GINLayer(MessagePassingLayer):
    """Graph isomorphism layer (the official ``GINConv`` with eps = 0, sum aggregation):
    ``out_i = f(x_i + sum_{j -> i} x_j)`` (+ a residual), with ``f`` an MLP, optionally followed by norm and
    activation (``post_norm``). With self loops in ``edge_index`` the sum includes x_i itself once more, as in the
    official code (DGL graphs with ``add_self_loop``).

    x (N, in_dim), edge_index (2, E) -> (N, out_dim).
    """

    def __init__(self, in_dim, hidden_dim, out_dim, feat_drop=0.0, activation="relu", norm=None, post_norm=False,
                 residual=False):  # fmt: skip
        super().__init__()
        self.feat_drop = nn.Dropout(feat_drop)
        self.mlp = GINMLP(in_dim, hidden_dim, out_dim, activation, norm)
        # the official ApplyNodeFunc: norm + activation after the MLP
        self.post = nn.Sequential(make_norm(norm, out_dim), make_activation(activation)) if post_norm else nn.Identity()
        self.res_fc = (nn.Linear(in_dim, out_dim, bias=False) if in_dim != out_dim else nn.Identity()) if residual else None

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        source, target = edge_index
        h = self.feat_drop(x)
        summed = h.index_add(0, target, h[source])
        out = self.post(self.mlp(summed))
        return out if self.res_fc is None else out + self.res_fc(h)
