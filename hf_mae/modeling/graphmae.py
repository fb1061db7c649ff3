"""GraphMAE: Self-Supervised Masked Graph Autoencoders (Hou et al., KDD 2022), arXiv:2205.10803.

The method, as in the official ``graphmae/models/edcoder.py`` (``PreModel``):
1. mask: ``int(mask_rate * N)`` random nodes are masked; of those, ``int(replace_rate * n)`` get the features of
   other random nodes and the rest get a learnable ``enc_mask_token`` (size num_features) in place of their
   features. The edges are kept;
2. a GNN encoder (GAT or GIN) encodes the whole graph with the corrupted features;
3. ``encoder_to_decoder`` (Linear, no bias) maps the codes to the decoder, and the masked nodes' codes are set to
   zero again ("re-mask") before a GNN decoder (a one-layer GAT or GIN; MLP / linear decoders skip the re-mask);
4. the loss is the scaled cosine error (SCE) between the reconstructed and original features of the masked nodes.

Graphs come as a disjoint union: ``node_features`` (N, F), ``edge_index`` (2, E) with ``edge_index[0]`` the source
and ``edge_index[1]`` the target of each message, and ``batch`` (N,) the graph of every node (``None``: one graph).
Message passing is plain torch (``index_add_`` / ``scatter_reduce_``, in ``graph_layers.py``): no DGL or PyG.
The processor (``graph_processing.GraphProcessor``) adds the self loops and symmetric edges the official code works
on.

Departures from the official code: the masked nodes and the replaced ones are drawn from a ``noise`` vector (so a
fixed noise fixes them, see :func:`graph_mask`), and replacement features come from the nodes with the smallest
noise (distinct from the replaced nodes) instead of ``randperm(N)``; the official split ``int((1 - r) n)`` /
``int(r n)`` can leave one masked node with its own features, here every masked node is either replaced or
tokenised. ``drop_edge_rate`` and ``concat_hidden`` are not implemented (0 / False in the node-level configs).

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import PreTrainedConfig
from transformers import initialization as init
from transformers.modeling_outputs import (
    BaseModelOutputWithPooling,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .base import MaskedModelPreTrainedModel, check_choice, check_heads, check_int, check_rate
from .graph_layers import (  # edge_softmax: kept importable from here
    GATLayer,
    GINLayer,
    MessagePassingLayer,
    edge_softmax,
    pool_nodes,
)
from .layers import init_torch_default
from .losses import classification_loss, scaled_cosine_error
from .masking import check_tensor_condition
from .outputs import MaskedPreTrainingOutput

ENCODER_TYPES = ("gat", "gin")
DECODER_TYPES = ("gat", "gin", "mlp", "linear")
ACTIVATIONS = ("prelu", "relu", "elu", "gelu", None)
NORMS = ("batchnorm", "layernorm", None)
POOLINGS = ("mean", "sum", "max")
LOSSES = ("sce", "mse")
FEATURE_NORMALIZATIONS = ("row", "standard", None)
# fields a collated graph batch may carry besides the model inputs; forwards accept and ignore them
DATA_FIELDS = ("labels", "label_mask", "train_mask", "val_mask", "test_mask", "num_nodes", "num_graphs")
# transformers' output options the forwards take as keyword arguments and pass down to the encoder
OUTPUT_OPTIONS = ("output_hidden_states",)


class GraphMAEConfig(PreTrainedConfig):
    r"""Configuration of a GraphMAE model. Defaults: the official Cora config (``configs.yml``).

    num_features: node feature size F (``in_dim``; Cora 1433). Set it to your data's width (the graphmae-tiny
        preset uses 16; ``hf-mae pretrain`` sizes it from the data unless ``--config-overrides num_features=F``).
    hidden_size: encoder output width (``num_hidden``); a GAT encoder concatenates ``num_attention_heads`` heads of
        ``hidden_size // num_attention_heads`` features.
    num_hidden_layers: encoder depth (``num_layers``).
    num_attention_heads, num_out_heads: GAT heads of the encoder and of the decoder (``nhead``, ``nhead_out``).
    encoder_type: "gat" | "gin"; decoder_type: "gat" | "gin" | "mlp" | "linear".
    hidden_act: "prelu" | "relu" | "elu" | "gelu" | None (``activation``), also on the last encoder layer.
    in_drop, attn_drop: dropout of every layer's input features and of GAT attention weights.
    negative_slope: LeakyReLU slope of GAT attention logits.
    residual: residual connections in the encoder; norm: None | "batchnorm" | "layernorm" after each encoder layer.
    mask_rate: share of nodes masked, in (0, 1); replace_rate: share of the masked nodes that get another node's
        features instead of the mask token, in [0, 1).
    loss_fn: "sce" (scaled cosine error with exponent ``alpha_l``) or "mse".
    pooling: "mean" | "sum" | "max" node pooling for graph-level outputs (``pooler_output``).
    feature_normalization: what the processor does to node features: "row" (rows sum to 1, citation graphs),
        "standard" (zero mean, unit variance per feature) or None.
    """

    model_type = "graphmae"

    num_features: int = 1433
    hidden_size: int = 512
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_out_heads: int = 1
    encoder_type: str = "gat"
    decoder_type: str = "gat"
    hidden_act: str | None = "prelu"
    in_drop: float = 0.2
    attn_drop: float = 0.1
    negative_slope: float = 0.2
    residual: bool = False
    norm: str | None = None
    mask_rate: float = 0.5
    replace_rate: float = 0.05
    loss_fn: str = "sce"
    alpha_l: float = 3.0
    pooling: str = "mean"
    feature_normalization: str | None = "row"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        for name in ("num_features", "hidden_size", "num_hidden_layers", "num_attention_heads", "num_out_heads"):
            check_int(name, getattr(self, name))
        for name, allowed in (
            ("encoder_type", ENCODER_TYPES), ("decoder_type", DECODER_TYPES), ("hidden_act", ACTIVATIONS),
            ("norm", NORMS), ("loss_fn", LOSSES), ("pooling", POOLINGS),
            ("feature_normalization", FEATURE_NORMALIZATIONS),
        ):  # fmt: skip
            check_choice(name, getattr(self, name), allowed)
        if self.encoder_type == "gat":
            check_heads("hidden_size", self.hidden_size, "num_attention_heads", self.num_attention_heads,
                        why="a GAT encoder concatenates its heads")  # fmt: skip
        check_rate("mask_rate", self.mask_rate, allow_zero=False)
        for name in ("replace_rate", "in_drop", "attn_drop"):
            check_rate(name, getattr(self, name))
        if isinstance(self.alpha_l, bool) or not isinstance(self.alpha_l, (int, float)) or self.alpha_l <= 0:
            raise ValueError(f"alpha_l must be a number > 0, got {self.alpha_l!r}")


# ------------------------------------------------------------------------------------------ input checks


def check_graph_inputs(node_features, edge_index, batch=None, num_features: int | None = None) -> torch.Tensor:
    """Validates a (union of) graph(s) and returns ``edge_index`` as long. Raises TypeError/ValueError naming the
    argument: node_features (N, F) float, edge_index (2, E) integer ids in [0, N), batch (N,) integer ids >= 0."""
    if not isinstance(node_features, torch.Tensor):
        raise TypeError(f"node_features must be a torch.Tensor (num_nodes, num_features), got {type(node_features).__name__}")
    if not node_features.is_floating_point():
        raise TypeError(f"node_features must be a floating-point tensor, got dtype {node_features.dtype}")
    if node_features.ndim != 2 or node_features.shape[0] == 0:
        raise ValueError(f"node_features must have shape (num_nodes >= 1, num_features), got {tuple(node_features.shape)}")
    num_nodes, width = node_features.shape
    if num_features is not None and width != num_features:
        raise ValueError(f"node_features has {width} features per node but the model expects num_features={num_features}")
    if not isinstance(edge_index, torch.Tensor):
        raise TypeError(f"edge_index must be a torch.Tensor (2, num_edges), got {type(edge_index).__name__}")
    if edge_index.is_floating_point() or edge_index.is_complex() or edge_index.dtype == torch.bool:
        raise TypeError(f"edge_index must be an integer tensor (torch.long), got dtype {edge_index.dtype}")
    if edge_index.ndim != 2 or edge_index.shape[0] != 2:
        raise ValueError(f"edge_index must have shape (2, num_edges), got {tuple(edge_index.shape)}")
    # value checks: runtime assertions under torch.export / torch.compile, which cannot read the tensors
    if edge_index.numel():
        check_tensor_condition(
            (edge_index.min() >= 0) & (edge_index.max() < num_nodes),
            f"edge_index holds node ids outside [0, {num_nodes - 1}] (node_features has {num_nodes} nodes)",
            lambda: f": they span [{int(edge_index.min())}, {int(edge_index.max())}]",
        )
    if batch is not None:
        if not isinstance(batch, torch.Tensor) or batch.is_floating_point() or batch.dtype == torch.bool:
            raise TypeError(f"batch must be an integer tensor (num_nodes,) of graph ids, got {_describe(batch)}")
        if batch.shape != (num_nodes,):
            raise ValueError(f"batch must have shape ({num_nodes},) (one graph id per node), got {tuple(batch.shape)}")
        check_tensor_condition(batch.min() >= 0, "batch holds negative graph ids (ids must be >= 0)",
                               lambda: f": min {int(batch.min())}")
    return edge_index.long()


def _describe(value) -> str:
    return f"dtype {value.dtype}" if isinstance(value, torch.Tensor) else type(value).__name__


def output_options(kwargs: dict, method: str) -> dict:
    """The output options among a forward's extra keyword arguments, to pass down to the encoder; the data fields of
    a collated batch are accepted and ignored; TypeError naming anything else."""
    unknown = sorted(set(kwargs) - set(DATA_FIELDS) - set(OUTPUT_OPTIONS))
    if unknown:
        raise TypeError(f"{method}() got unexpected argument(s) {unknown}; besides the model inputs and "
                        f"{list(OUTPUT_OPTIONS)} it accepts (and ignores) the data fields {list(DATA_FIELDS)}")
    return {name: value for name, value in kwargs.items() if name in OUTPUT_OPTIONS}


def check_label_count(labels: torch.Tensor, count: int, unit: str) -> None:
    """ValueError unless ``labels`` holds one label per ``unit`` (node or graph) of the batch."""
    if labels.shape[0] != count:
        raise ValueError(f"labels must hold one label per {unit} ({count} {unit}s in the batch), got shape "
                         f"{tuple(labels.shape)}")


# ------------------------------------------------------------------------------------------ GNN stacks


class GraphEncoder(nn.Module):
    """The official ``GAT`` / ``GIN`` stacks, for the encoder (``encoding=True``) and the one-layer GNN decoders.

    encoding=True: every layer but the first gets in and out width ``hidden_size``; the last layer has the
    residual, norm and activation of the others (the official ``encoding`` flag). Decoders have none of them.
    forward: x (N, in_dim), edge_index (2, E) -> (N, out_dim).
    """

    def __init__(self, config: GraphMAEConfig, layer_type: str, in_dim: int, out_dim: int, num_layers: int,
                 encoding: bool):  # fmt: skip
        super().__init__()
        c = config
        self.layers = nn.ModuleList()
        if layer_type == "gat":
            heads = c.num_attention_heads if encoding else c.num_out_heads
            per_head = c.hidden_size // c.num_attention_heads
            common = dict(feat_drop=c.in_drop, attn_drop=c.attn_drop, negative_slope=c.negative_slope)
            for index in range(num_layers - 1):
                width_in = in_dim if index == 0 else c.hidden_size
                self.layers.append(GATLayer(width_in, per_head, c.num_attention_heads, residual=c.residual,
                                            activation=c.hidden_act, norm=c.norm, **common))  # fmt: skip
            width_in = in_dim if num_layers == 1 else c.hidden_size
            last_dim = per_head if encoding else out_dim
            # the official one-layer stack passes no activation, even to an encoder
            last_act = c.hidden_act if encoding and num_layers > 1 else None
            self.layers.append(GATLayer(
                width_in, last_dim, heads, residual=encoding and c.residual, activation=last_act,
                norm=c.norm if encoding else None, concat=encoding or heads == 1, **common,
            ))  # fmt: skip
        else:
            for index in range(num_layers - 1):
                width_in = in_dim if index == 0 else c.hidden_size
                self.layers.append(GINLayer(width_in, c.hidden_size, c.hidden_size, c.in_drop, c.hidden_act, c.norm,
                                            post_norm=True, residual=c.residual))  # fmt: skip
            width_in = in_dim if num_layers == 1 else c.hidden_size
            # the official last GIN layer gets norm + activation only in an encoder with a norm configured
            self.layers.append(GINLayer(
                width_in, c.hidden_size, out_dim, c.in_drop, c.hidden_act, c.norm,
                post_norm=encoding and c.norm is not None, residual=encoding and c.residual,
            ))  # fmt: skip

    def forward(self, x, edge_index) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, edge_index)
        return x


class FeatureDecoder(nn.Module):
    """Codes (N, hidden_size) -> reconstructed features (N, num_features): a one-layer GAT / GIN on the graph, or
    the official "mlp" (Linear, PReLU, Dropout 0.2, Linear) / "linear" decoders, which ignore the edges."""

    def __init__(self, config: GraphMAEConfig):
        super().__init__()
        self.decoder_type = config.decoder_type
        hidden, features = config.hidden_size, config.num_features
        if config.decoder_type in ("gat", "gin"):
            self.net = GraphEncoder(config, config.decoder_type, hidden, features, num_layers=1, encoding=False)
        elif config.decoder_type == "mlp":
            self.net = nn.Sequential(nn.Linear(hidden, hidden), nn.PReLU(), nn.Dropout(0.2), nn.Linear(hidden, features))
        else:
            self.net = nn.Linear(hidden, features)

    @property
    def uses_graph(self) -> bool:
        return self.decoder_type in ("gat", "gin")

    def forward(self, codes, edge_index) -> torch.Tensor:
        return self.net(codes, edge_index) if self.uses_graph else self.net(codes)


# ------------------------------------------------------------------------------------------ masking


def graph_mask(num_nodes: int, mask_rate: float, replace_rate: float, noise: torch.Tensor | None = None,
               mask: torch.Tensor | None = None, device=None):  # fmt: skip
    """GraphMAE's node masking, made deterministic by ``noise``.

    Nodes are ranked by descending noise. Without ``mask``, the ``int(mask_rate * N)`` nodes with the largest
    noise are masked. Of the n masked nodes, the ``int(replace_rate * n)`` with the largest noise are *replaced*:
    the k-th of them gets the features of the node with the k-th smallest noise (a visible node whenever there are
    enough); the other masked nodes get the mask token. ``noise`` None draws ``torch.rand(N)`` (torch's global
    generator, so ``torch.manual_seed`` repeats it).

    noise: (N,) floats; mask: (N,) bool, True = masked (given: only the replaced nodes are drawn from the noise).
    Returns (mask (N,) bool, replaced (R,) long, sources (R,) long): node ``replaced[k]`` takes ``sources[k]``'s
    features.
    """
    if noise is None:
        noise = torch.rand(num_nodes, device=device)
    elif not isinstance(noise, torch.Tensor) or noise.shape != (num_nodes,):
        shape = tuple(noise.shape) if isinstance(noise, torch.Tensor) else type(noise).__name__
        raise ValueError(f"noise must be a tensor of shape ({num_nodes},) (one value per node), got {shape}")
    order = torch.argsort(noise, descending=True, stable=True)
    if mask is None:
        masked = order[: int(mask_rate * num_nodes)]
        mask = torch.zeros(num_nodes, dtype=torch.bool, device=noise.device)
        mask[masked] = True
    else:
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != (num_nodes,):
            raise ValueError(f"mask must be a bool tensor of shape ({num_nodes},), got {_shape_and_dtype(mask)}")
        masked = order[mask[order]]
    num_replaced = int(replace_rate * masked.numel())
    return mask, masked[:num_replaced], order.flip(0)[:num_replaced]


def _shape_and_dtype(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)}, dtype {value.dtype}"
    return type(value).__name__


def corrupt_features(x, mask_token, mask, replaced, sources) -> torch.Tensor:
    """x (N, F) with the masked nodes' features swapped: ``mask_token`` (1, F) on the masked nodes, except that node
    ``replaced[k]`` gets ``x[sources[k]]``. Out of place, so gradients reach ``mask_token``."""
    token_nodes = mask.clone()
    token_nodes[replaced] = False
    corrupted = torch.where(token_nodes[:, None], mask_token.to(x.dtype), x)
    return corrupted.index_put((replaced,), x[sources])


# ------------------------------------------------------------------------------------------ models


class GraphMAEPreTrainedModel(MaskedModelPreTrainedModel):
    config_class = GraphMAEConfig
    base_model_prefix = "graphmae"
    main_input_name = "node_features"
    input_modalities = ("graph",)
    # message passing, no attention backend and no gradient checkpointing (as before the shared base)
    supports_gradient_checkpointing = False
    _supports_sdpa = _supports_flash_attn = _supports_flex_attn = _supports_attention_backend = False

    @torch.no_grad()
    def _init_weights(self, module):
        """The official initialisation: GAT weights and attention vectors xavier-normal with ReLU gain, zero biases;
        other linears PyTorch's default (kaiming-uniform, a = sqrt(5)); PReLU slope 0.25; a zero mask token."""
        if isinstance(module, GATLayer):
            gain = math.sqrt(2.0)  # nn.init.calculate_gain("relu")
            for param in (module.weight, module.attn_l, module.attn_r, module.res_weight):
                if param is not None:
                    init.xavier_normal_(param, gain=gain)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            init_torch_default(module)
        elif isinstance(module, nn.PReLU):
            init.constant_(module.weight, 0.25)
        elif isinstance(module, GraphMAEForPreTraining):
            init.zeros_(module.enc_mask_token)
        else:
            super()._init_weights(module)  # norms (BatchNorm statistics too)


class GraphMAEModel(GraphMAEPreTrainedModel):
    """The GraphMAE encoder (GAT or GIN) without masking: node embeddings and a pooled embedding per graph."""

    # transformers' output capture: every layer's output (no embedding state; message passing has no attention maps)
    _can_record_outputs = {"hidden_states": OutputRecorder(MessagePassingLayer, capture_initial_hidden_state=False)}

    def __init__(self, config: GraphMAEConfig):
        super().__init__(config)
        self.encoder = GraphEncoder(config, config.encoder_type, config.num_features, config.hidden_size,
                                    config.num_hidden_layers, encoding=True)  # fmt: skip
        self.post_init()

    @capture_outputs  # (no merge_with_config_defaults: it would pass config.use_cache, which a GNN has no use for)
    def forward(
        self,
        node_features: torch.Tensor | None = None,
        edge_index: torch.Tensor | None = None,
        batch: torch.Tensor | None = None,
        **kwargs,
    ):
        """
        node_features: (N, num_features) float; edge_index: (2, E) long, row 0 sources, row 1 targets (the
            processor adds self loops and both directions); batch: (N,) graph id of each node, None for one graph.
        kwargs: output_hidden_states and return_dict as in transformers; other fields of a collated batch (labels,
            train_mask, ...) are accepted and ignored.
        Returns BaseModelOutputWithPooling: last_hidden_state (N, hidden_size), pooler_output (num_graphs,
        hidden_size) pooled by ``config.pooling``, hidden_states (every layer's (N, width)) when asked.
        """
        output_options(kwargs, "GraphMAEModel.forward")
        if node_features is None or edge_index is None:
            raise ValueError("node_features and edge_index are required")
        edge_index = check_graph_inputs(node_features, edge_index, batch, self.config.num_features)
        hidden = self.encoder(node_features, edge_index)
        return BaseModelOutputWithPooling(last_hidden_state=hidden, pooler_output=pool_nodes(hidden, batch, self.config.pooling))


class GraphMAEForPreTraining(GraphMAEPreTrainedModel):
    """GraphMAE: mask node features, encode, re-mask, decode, scaled cosine error on the masked nodes."""

    def __init__(self, config: GraphMAEConfig):
        super().__init__(config)
        self.graphmae = GraphMAEModel(config)
        self.enc_mask_token = nn.Parameter(torch.zeros(1, config.num_features))
        self.encoder_to_decoder = nn.Linear(config.hidden_size, config.hidden_size, bias=False)
        self.decoder = FeatureDecoder(config)
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        node_features: torch.Tensor | None = None,
        edge_index: torch.Tensor | None = None,
        batch: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        **kwargs,
    ):
        """
        node_features, edge_index, batch: as in :meth:`GraphMAEModel.forward` (a batch is masked as one union).
        noise: (N,) floats fixing the masking (see :func:`graph_mask`): the ``int(mask_rate * N)`` nodes with the
            largest noise are masked; of those, the ``int(replace_rate * n)`` with the largest noise take the
            features of the nodes with the smallest noise, the rest the mask token. None: ``torch.rand(N)``.
        mask: (N,) bool, True = masked; overrides the noise's choice of masked nodes.
        kwargs: output_hidden_states, return_dict and ignored data fields, as in :meth:`GraphMAEModel.forward`.
        Returns MaskedPreTrainingOutput: loss (SCE or MSE over the masked nodes), logits (N, num_features) the
        reconstructed features of every node, mask (N,) bool, hidden_states of the encoder when asked.
        """
        options = output_options(kwargs, "GraphMAEForPreTraining.forward")
        if node_features is None:
            raise ValueError("node_features is required")
        edge_index = check_graph_inputs(node_features, edge_index, batch, self.config.num_features)
        mask, replaced, sources = graph_mask(node_features.shape[0], self.config.mask_rate, self.config.replace_rate,
                                             noise, mask, device=node_features.device)  # fmt: skip
        if not mask.any():
            raise ValueError(
                f"no node is masked (mask_rate={self.config.mask_rate} of {node_features.shape[0]} nodes rounds down "
                "to 0, or the given mask is all False): the loss would be empty"
            )
        corrupted = corrupt_features(node_features, self.enc_mask_token, mask, replaced, sources)
        encoded = self.graphmae(corrupted, edge_index, batch, return_dict=True, **options)
        codes = self.encoder_to_decoder(encoded.last_hidden_state)
        if self.decoder.uses_graph:  # re-mask: the decoder must rebuild masked nodes from their neighbours' codes
            codes = codes.masked_fill(mask[:, None], 0.0)
        logits = self.decoder(codes, edge_index)
        target, prediction = node_features[mask].float(), logits[mask].float()
        if self.config.loss_fn == "sce":
            loss = scaled_cosine_error(prediction, target, self.config.alpha_l)
        else:
            loss = nn.functional.mse_loss(prediction, target)
        return MaskedPreTrainingOutput(loss=loss, logits=logits, mask=mask, hidden_states=encoded.hidden_states)


class GraphMAEClassifierMixin:
    """``__init__`` of the node-level and the graph-level heads: the encoder and a linear classifier (a mixin, not a
    model class: the registry lists every model class a file defines as a task)."""

    def __init__(self, config: GraphMAEConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.graphmae = GraphMAEModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()


class GraphMAEForNodeClassification(GraphMAEClassifierMixin, GraphMAEPreTrainedModel):
    """The encoder + a linear classifier on every node's embedding (the linear probe, when the encoder is frozen)."""

    @can_return_tuple
    def forward(
        self,
        node_features: torch.Tensor | None = None,
        edge_index: torch.Tensor | None = None,
        batch: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        label_mask: torch.Tensor | None = None,
        **kwargs,
    ):
        """
        labels: (N,) class ids (float (N,) or (N, k) targets follow ``config.problem_type``).
        label_mask: (N,) bool, the nodes whose labels count in the loss. None: the batch's ``train_mask`` if it
            carries one (a Planetoid split: validation and test labels never reach the loss), else every node.
        Returns TokenClassifierOutput: loss, logits (N, num_labels), hidden_states.
        """
        options = output_options(kwargs, "GraphMAEForNodeClassification.forward")
        encoded = self.graphmae(node_features, edge_index, batch, return_dict=True, **options)
        logits = self.classifier(encoded.last_hidden_state)
        loss = None
        if labels is not None:
            check_label_count(labels, logits.shape[0], "node")
            label_mask = kwargs.get("train_mask") if label_mask is None else label_mask
            if label_mask is not None:
                if not isinstance(label_mask, torch.Tensor) or label_mask.shape != (logits.shape[0],):
                    raise ValueError(f"label_mask must be a bool tensor of shape ({logits.shape[0]},), "
                                     f"got {_shape_and_dtype(label_mask)}")  # fmt: skip
                label_mask = label_mask.bool()
                loss = classification_loss(logits[label_mask], labels[label_mask], self.config)
            else:
                loss = classification_loss(logits, labels, self.config)
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=encoded.hidden_states)


class GraphMAEForGraphClassification(GraphMAEClassifierMixin, GraphMAEPreTrainedModel):
    """The encoder, node embeddings pooled per graph (``config.pooling``), then a linear classifier."""

    @can_return_tuple
    def forward(
        self,
        node_features: torch.Tensor | None = None,
        edge_index: torch.Tensor | None = None,
        batch: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ):
        """
        batch: (N,) graph id of every node (None: one graph); labels: (num_graphs,) class ids.
        Returns SequenceClassifierOutput: loss, logits (num_graphs, num_labels), hidden_states.
        """
        options = output_options(kwargs, "GraphMAEForGraphClassification.forward")
        encoded = self.graphmae(node_features, edge_index, batch, return_dict=True, **options)
        logits = self.classifier(encoded.pooler_output)
        loss = None
        if labels is not None:
            check_label_count(labels, logits.shape[0], "graph")
            loss = classification_loss(logits, labels, self.config)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=encoded.hidden_states)


__all__ = [
    "GraphMAEConfig",
    "GraphMAEPreTrainedModel",
    "GraphMAEModel",
    "GraphMAEForPreTraining",
    "GraphMAEForNodeClassification",
    "GraphMAEForGraphClassification",
]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
METHOD = dict(
    name="graphmae",
    paper="GraphMAE: Self-Supervised Masked Graph Autoencoders (Hou et al., KDD 2022), arXiv:2205.10803",
    config_class=GraphMAEConfig,
    model_classes={
        "base": GraphMAEModel, "pretraining": GraphMAEForPreTraining,
        "node-classification": GraphMAEForNodeClassification, "graph-classification": GraphMAEForGraphClassification,
    },
    processor="GraphProcessor",
    presets={
        # CPU-sized GAT (2 layers, 4 heads x 8); num_features=16 is a placeholder: hf-mae pretrain sets it to
        # the data's width (or give num_features=<F> as a config override)
        "graphmae-tiny": dict(num_features=16, hidden_size=32),
        # the official configs.yml: GAT 2 layers, 4 x 128 heads, PReLU, in_drop 0.2, attn_drop 0.1, mask 0.5,
        # replace 0.05, SCE alpha 3 (pre-train: Adam 1e-3, wd 2e-4, cosine, 1500 epochs)
        "graphmae-cora": dict(num_features=1433),
        # 2 x 256 heads, mask 0.5, replace 0.1, alpha 1 (wd 2e-5, 300 epochs)
        "graphmae-citeseer": dict(num_features=3703, num_attention_heads=2, replace_rate=0.1, alpha_l=1.0),
        # 4 x 256 heads, mask 0.75, no replacement, alpha 3 (wd 1e-5, 1000 epochs)
        "graphmae-pubmed": dict(num_features=500, hidden_size=1024, mask_rate=0.75, replace_rate=0.0),
        # the official MUTAG graph-classification config: GIN encoder and decoder, 5 layers x 32, batch norm,
        # mask 0.75, replace 0.1, alpha 2, sum pooling; 7 one-hot atom types, not normalised
        "graphmae-gin": dict(
            num_features=7, encoder_type="gin", decoder_type="gin", hidden_size=32, num_hidden_layers=5,
            norm="batchnorm", mask_rate=0.75, replace_rate=0.1, alpha_l=2.0, pooling="sum",
            feature_normalization=None,
        ),
    },
    modality="graph",
    pretrain_lr=1e-3,  # GraphMAE: Adam 1e-3, one graph per step
)
