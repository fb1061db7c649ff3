"""Transformer building blocks shared by every hf-mae method.

Attention goes through transformers' attention interface, so ``attn_implementation`` set on the config
("eager", "sdpa", "flash_attention_2", ...) chooses the kernel. Blocks are pre-norm ViT blocks with optional
LayerScale and DropPath, and subclass ``GradientCheckpointingLayer`` so activation checkpointing works.

Remote-code rule: this file imports only torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.utils.output_capturing import _active_collector as _active_output_collector


def eager_attention_forward(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
    """Plain softmax attention. query/key/value: (batch, heads, tokens, head_dim).

    Returns ``(output (batch, tokens, heads, head_dim), weights (batch, heads, tokens, tokens))``, the same
    contract as transformers' sdpa/flash interfaces.
    """
    scores = torch.matmul(query, key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    output = torch.matmul(weights, value).transpose(1, 2).contiguous()
    return output, weights


# How an Attention holds its input projections: "fused", one (3 * hidden, hidden) ``qkv`` Linear (one matmul; the
# default and the layout of every checkpoint that does not say otherwise), or "split", separate ``query`` / ``key`` /
# ``value`` Linears named as in transformers' ViT, which adapters that target projections by name (PEFT's
# ``target_modules=["query", "value"]``) find. Read from ``config.qkv_layout``; models switch between the two
# losslessly with ``split_qkv_projections()`` / ``fuse_qkv_projections()``.
QKV_LAYOUTS = ("fused", "split")


def qkv_layout_of(config) -> str:
    """``config.qkv_layout``, "fused" when the config does not set it."""
    layout = getattr(config, "qkv_layout", "fused")
    if layout not in QKV_LAYOUTS:
        raise ValueError(f"config.qkv_layout must be one of {', '.join(map(repr, QKV_LAYOUTS))}; got {layout!r}")
    return layout


def _linear_like(reference: nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """A Linear holding copies of ``weight`` / ``bias``, on ``reference``'s device and dtype and with its
    ``requires_grad``; built without initialisation (no random draw: converting leaves the RNG as it was)."""
    out_features, in_features = weight.shape
    linear = torch.nn.utils.skip_init(
        nn.Linear, in_features, out_features, bias=bias is not None, device=weight.device, dtype=weight.dtype
    )
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    linear.requires_grad_(reference.weight.requires_grad)
    return linear


def _replace_children(module: nn.Module, old: tuple[str, ...], new: dict[str, nn.Module]) -> None:
    """Puts the ``new`` children where the first of ``old`` was and drops ``old``, so that named_modules() and
    state_dict() list them in place (a fused -> split -> fused round trip gives back the same state dict)."""
    children = list(module._modules.items())
    module._modules.clear()
    for name, child in children:
        if name == old[0]:
            module._modules.update(new)
        elif name not in old:
            module._modules[name] = child


class Attention(nn.Module):
    """Multi-head self-attention. Its projections are one fused ``qkv`` Linear (one matmul instead of three) or,
    with ``config.qkv_layout == "split"``, ``query`` / ``key`` / ``value`` Linears (same weights, same outputs)."""

    def __init__(
        self, config, hidden_size: int, num_heads: int, qkv_bias: bool | str = True, attention_dropout: float = 0.0
    ):
        """qkv_bias: True (a bias on queries, keys and values), False (none), or "qv": learned query and value
        biases and none on the keys (BEiT / VideoMAE; a key bias cancels in the softmax anyway)."""
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_attention_heads ({num_heads})")
        self.config = config  # read at call time: config._attn_implementation may change after construction
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = attention_dropout
        self.is_causal = False  # sdpa defaults to causal when this attribute is missing
        if qkv_bias not in (True, False, "qv"):
            raise ValueError(f"qkv_bias must be True, False or 'qv', got {qkv_bias!r}")
        self.qkv_layout = qkv_layout_of(config)
        if self.qkv_layout == "split":
            self.query, self.key, self.value = (
                nn.Linear(hidden_size, hidden_size, bias=qkv_bias is True) for _ in range(3)
            )
        else:
            self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=qkv_bias is True)
        # "qv" biases are parameters of their own in both layouts (the same state-dict keys)
        self.q_bias = nn.Parameter(torch.zeros(hidden_size)) if qkv_bias == "qv" else None
        self.v_bias = nn.Parameter(torch.zeros(hidden_size)) if qkv_bias == "qv" else None
        self.proj = nn.Linear(hidden_size, hidden_size)

    def forward(self, hidden_states, attention_mask=None, output_attentions: bool = False, **kwargs):
        """hidden_states: (batch, tokens, hidden). Returns (output (batch, tokens, hidden), weights or None)."""
        query, key, value = self.project(hidden_states)
        return self.attend(query, key, value, attention_mask, output_attentions, **kwargs)

    def project(self, hidden_states, context=None, value_context=None):
        """Queries from ``hidden_states`` (batch, queries, hidden), keys from ``context`` (batch, keys, hidden;
        default: ``hidden_states``) and values from ``value_context`` (same shape as ``context``; default:
        ``context``: CAE's regressor feeds keys and values differently normalised inputs), each (batch, heads,
        tokens, head_dim), in either layout."""
        configured = qkv_layout_of(self.config)
        if self.qkv_layout != configured:
            # a save would write a config that rebuilds this attention in the other layout, with its weights lost
            raise RuntimeError(
                f"this attention holds {self.qkv_layout} q/k/v projections but its config says qkv_layout="
                f"{configured!r}: convert with split_qkv_projections() / fuse_qkv_projections() on the top-level "
                "model (the one you save), not on a part of it"
            )
        if value_context is not None and context is None:
            raise ValueError("value_context needs a context (the keys' input) too")
        if self.qkv_layout == "split":
            context = hidden_states if context is None else context
            value_context = context if value_context is None else value_context
            # called as modules, so that adapters wrapping them (PEFT's LoRA layers) take part
            query, key, value = self.query(hidden_states), self.key(context), self.value(value_context)
            if self.q_bias is not None:
                query, value = query + self.q_bias, value + self.v_bias
            return tuple(
                states.view(*states.shape[:2], self.num_heads, self.head_dim).transpose(1, 2)
                for states in (query, key, value)
            )
        weight, bias = self.qkv.weight, self.qkv.bias
        if self.q_bias is not None:  # qkv_bias="qv": no key bias
            bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        if context is None:
            batch, tokens, _ = hidden_states.shape
            # the module itself when it holds the whole bias, so that hooks and adapters on ``qkv`` take part
            qkv = self.qkv(hidden_states) if self.q_bias is None else nn.functional.linear(hidden_states, weight, bias)
            qkv = qkv.view(batch, tokens, 3, self.num_heads, self.head_dim)
            # Unbind, then transpose each to (batch, heads, tokens, head_dim): the backward then stacks the three
            # gradients straight into qkv's layout (one copy; permuting first costs a second one).
            return tuple(states.transpose(1, 2) for states in qkv.unbind(2))
        width = self.num_heads * self.head_dim
        query = nn.functional.linear(hidden_states, weight[:width], None if bias is None else bias[:width])
        query = query.view(*hidden_states.shape[:2], self.num_heads, self.head_dim).transpose(1, 2)
        if value_context is None:  # keys and values from one input: one matmul
            key_value = nn.functional.linear(context, weight[width:], None if bias is None else bias[width:])
            key_value = key_value.view(*context.shape[:2], 2, self.num_heads, self.head_dim)
            key, value = (states.transpose(1, 2) for states in key_value.unbind(2))
            return query, key, value
        key_bias, value_bias = (None, None) if bias is None else (bias[width : 2 * width], bias[2 * width :])
        key = nn.functional.linear(context, weight[width : 2 * width], key_bias)
        value = nn.functional.linear(value_context, weight[2 * width :], value_bias)
        key, value = (
            states.view(*states.shape[:2], self.num_heads, self.head_dim).transpose(1, 2) for states in (key, value)
        )
        return query, key, value

    def wrapped_projections(self) -> list[str]:
        """Names of the projections (``qkv``, or ``query`` / ``key`` / ``value``) that are no longer plain Linears: an
        adapter such as PEFT's LoRA wraps them, and converting would drop it."""
        names = ("qkv",) if self.qkv_layout == "fused" else ("query", "key", "value")
        return [name for name in names if type(getattr(self, name)) is not nn.Linear]

    def _check_convertible(self) -> None:
        wrapped = self.wrapped_projections()
        if wrapped:
            found = ", ".join(f"{name} is a {type(getattr(self, name)).__name__}" for name in wrapped)
            raise TypeError(
                f"converting the qkv projections needs plain nn.Linear ones, but {found}: merge the adapter into the "
                "weights first (PEFT: model = model.merge_and_unload())"
            )

    @torch.no_grad()
    def split_projections(self) -> None:
        """Fused -> split in place: ``query`` / ``key`` / ``value`` get rows [0, h), [h, 2h), [2h, 3h) of ``qkv``
        (copies, exactly). A split attention is left as it is."""
        if self.qkv_layout == "split":
            return
        self._check_convertible()
        fused = self.qkv
        biases = (None,) * 3 if fused.bias is None else fused.bias.chunk(3)
        parts = [_linear_like(fused, w, b) for w, b in zip(fused.weight.chunk(3), biases)]
        _replace_children(self, ("qkv",), dict(zip(("query", "key", "value"), parts)))
        self.qkv_layout = "split"

    @torch.no_grad()
    def fuse_projections(self) -> None:
        """Split -> fused in place: ``qkv`` is ``query``, ``key`` and ``value`` stacked (exactly). A fused attention is
        left as it is. Adapters must be merged first (PEFT: ``merge_and_unload()``)."""
        if self.qkv_layout == "fused":
            return
        self._check_convertible()
        parts = (self.query, self.key, self.value)
        bias = None if self.query.bias is None else torch.cat([part.bias for part in parts])
        fused = _linear_like(self.query, torch.cat([part.weight for part in parts]), bias)
        _replace_children(self, ("query", "key", "value"), {"qkv": fused})
        self.qkv_layout = "fused"

    def attend(self, query, key, value, attention_mask=None, output_attentions: bool = False, **kwargs):
        """Attention through the configured interface, then the output projection.

        query: (batch, heads, queries, head_dim); key, value: (batch, heads, keys, head_dim).
        Returns (output (batch, queries, hidden), weights (batch, heads, queries, keys) or None).
        """
        # Only eager attention materialises the weights, so ask for it when they are wanted.
        implementation = "eager" if output_attentions else self.config._attn_implementation
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(implementation, eager_attention_forward)
        output, weights = attention(
            self,
            query,
            key,
            value,
            attention_mask,
            scaling=self.scaling,
            dropout=self.attention_dropout if self.training else 0.0,
            **kwargs,
        )
        return self.proj(output.reshape(query.shape[0], query.shape[2], -1)), weights


class CrossAttention(Attention):
    """Multi-head attention of ``hidden_states`` (queries) over ``context`` (keys and values).

    The fused projections are packed in one (3 * hidden, hidden) ``qkv`` as in :class:`Attention` and in
    ``nn.MultiheadAttention``'s ``in_proj_weight``: rows [0, hidden) project the queries, the rest the keys and
    values of the context (``query`` / ``key`` / ``value`` in the split layout). Same attention interface (eager,
    sdpa, ...) as self-attention.
    """

    def forward(
        self, hidden_states, context, attention_mask=None, output_attentions: bool = False, value_context=None, **kwargs
    ):
        """hidden_states: (batch, queries, hidden); context: (batch, keys, hidden), the keys' and (without
        ``value_context``, same shape) the values' input; attention_mask broadcastable to (batch, heads, queries,
        keys). Returns (output (batch, queries, hidden), weights or None)."""
        query, key, value = self.project(hidden_states, context, value_context)
        return self.attend(query, key, value, attention_mask, output_attentions, **kwargs)


class MLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, hidden_act: str = "gelu", dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.act = ACT2FN[hidden_act]
        self.fc2 = nn.Linear(intermediate_size, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states):
        return self.dropout(self.fc2(self.dropout(self.act(self.fc1(hidden_states)))))



# Projection heads from a student's tokens to a teacher's width (DMAE's ``aligned_feature_projection_mode``)
PROJECTION_MODES = ("linear", "mlp", "mlp2")


class ProjectionHead(nn.Module):
    """Maps student tokens (..., in_features) to a teacher's width (..., out_features), one head per aligned layer:

    - ``"linear"``: one Linear (DMAE's ``fc-1layer``, its default);
    - ``"mlp"``: Linear(in -> out), activation, Linear(out -> out) (DMAE's ``mlp-1layer``);
    - ``"mlp2"``: that MLP followed by a second out -> out MLP (DMAE's ``mlp-2layer``).
    """

    def __init__(self, in_features: int, out_features: int, mode: str = "linear", hidden_act: str = "gelu"):
        super().__init__()
        if mode not in PROJECTION_MODES:
            raise ValueError(f"mode must be one of {', '.join(map(repr, PROJECTION_MODES))}; got {mode!r}")
        self.mode = mode
        if mode == "linear":
            self.layers = nn.ModuleList([nn.Linear(in_features, out_features)])
        else:
            widths = [in_features] + [out_features] * (4 if mode == "mlp2" else 2)
            self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))
        self.act = ACT2FN[hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            hidden_states = layer(hidden_states)
            if i % 2 == 0 and i + 1 < len(self.layers):  # an activation inside each two-layer MLP, none after it
                hidden_states = self.act(hidden_states)
        return hidden_states


class LayerScale(nn.Module):
    """Per-channel learnable scale of a residual branch (CaiT); starts small so deep stacks train stably."""

    def __init__(self, hidden_size: int, init_value: float):
        super().__init__()
        self.init_value = init_value
        self.gamma = nn.Parameter(torch.full((hidden_size,), float(init_value)))

    def forward(self, hidden_states):
        return hidden_states * self.gamma


class DropPath(nn.Module):
    """Stochastic depth: drops a whole residual branch per sample while training."""

    def __init__(self, drop_prob: float = 0.0):
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, hidden_states):
        if self.drop_prob == 0.0 or not self.training:
            return hidden_states
        keep = 1.0 - self.drop_prob
        shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
        mask = hidden_states.new_empty(shape).bernoulli_(keep)
        return hidden_states * mask / keep

    def extra_repr(self):
        return f"drop_prob={self.drop_prob}"


class TransformerBlock(GradientCheckpointingLayer):
    """Pre-norm ViT block: x + DropPath(LS(Attn(LN(x)))), then x + DropPath(LS(MLP(LN(x))))."""

    def __init__(
        self,
        config,
        hidden_size: int,
        num_heads: int,
        intermediate_size: int,
        hidden_act: str = "gelu",
        qkv_bias: bool = True,
        layer_norm_eps: float = 1e-6,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        drop_path: float = 0.0,
        layer_scale_init_value: float | None = None,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.attention = Attention(config, hidden_size, num_heads, qkv_bias, attention_dropout)
        self.norm2 = nn.LayerNorm(hidden_size, eps=layer_norm_eps)
        self.mlp = MLP(hidden_size, intermediate_size, hidden_act, dropout)
        self.dropout = nn.Dropout(dropout)
        use_layer_scale = bool(layer_scale_init_value)
        self.layer_scale1 = LayerScale(hidden_size, layer_scale_init_value) if use_layer_scale else nn.Identity()
        self.layer_scale2 = LayerScale(hidden_size, layer_scale_init_value) if use_layer_scale else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, hidden_states, attention_mask=None, output_attentions: bool = False):
        """hidden_states: (batch, tokens, hidden). Returns (hidden_states, attention weights or None)."""
        attended, weights = self.attention(self.norm1(hidden_states), attention_mask, output_attentions)
        hidden_states = hidden_states + self.drop_path(self.layer_scale1(self.dropout(attended)))
        hidden_states = hidden_states + self.drop_path(self.layer_scale2(self.mlp(self.norm2(hidden_states))))
        return hidden_states, weights


def build_blocks(config, depth: int, drop_path_rate: float = 0.0, **block_kwargs) -> nn.ModuleList:
    """``depth`` TransformerBlocks with stochastic depth rising linearly from 0 to ``drop_path_rate``."""
    rates = [drop_path_rate * i / max(depth - 1, 1) for i in range(depth)]
    return nn.ModuleList(TransformerBlock(config, drop_path=rate, **block_kwargs) for rate in rates)


def build_encoder_blocks(config, **overrides) -> nn.ModuleList:
    """The encoder's blocks from the standard ViT config fields (``num_hidden_layers``, ``hidden_size``, ...);
    ``overrides`` replace any of them (e.g. VideoMAE's ``qkv_bias="qv"``)."""
    kwargs = dict(
        drop_path_rate=config.drop_path_rate,
        hidden_size=config.hidden_size,
        num_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        hidden_act=config.hidden_act,
        qkv_bias=config.qkv_bias,
        layer_norm_eps=config.layer_norm_eps,
        dropout=config.hidden_dropout_prob,
        attention_dropout=config.attention_probs_dropout_prob,
        layer_scale_init_value=getattr(config, "layer_scale_init_value", None),
    )
    return build_blocks(config, config.num_hidden_layers, **{**kwargs, **overrides})


def capturing_attentions() -> bool:
    """True while transformers' output capture (``@capture_outputs`` on a model's forward, driven by its
    ``_can_record_outputs``) is recording attention weights: only the eager kernel returns them."""
    collected = _active_output_collector.get()
    return collected is not None and "attentions" in collected


def run_blocks(
    blocks, hidden_states, attention_mask=None, output_hidden_states=False, output_attentions=None, positions=None
):
    """Runs a stack of TransformerBlocks.

    positions: optional, broadcastable to ``hidden_states``; added to the input of *every* block (Point-MAE's
    ``x = block(x + pos)``), not only the first.
    output_attentions: None asks the blocks for their weights exactly when the model's output capture records
    attentions (the usual case: an encoder whose forward is decorated with ``capture_outputs``).
    Returns ``(hidden_states, all_hidden_states or None, all_attentions or None)``; ``all_hidden_states`` holds the
    input of every block plus the output of the last one (len(blocks) + 1 tensors), as transformers does. Models
    with ``_can_record_outputs`` leave both flags at their defaults and get those tuples from the capture instead.
    """
    if output_attentions is None:
        output_attentions = capturing_attentions()
    all_hidden = (hidden_states,) if output_hidden_states else None
    all_attentions = () if output_attentions else None
    for block in blocks:
        block_input = hidden_states if positions is None else hidden_states + positions
        hidden_states, weights = block(block_input, attention_mask, output_attentions)
        if output_hidden_states:
            all_hidden += (hidden_states,)
        if all_attentions is not None:
            all_attentions += (weights,)
    return hidden_states, all_hidden, all_attentions


def init_norm(module: nn.Module) -> None:
    """A fresh LayerNorm / BatchNorm: unit weight, zero bias and, for BatchNorm, zero mean, unit variance and no
    batches tracked. Every ``_init_weights`` must reset the running statistics too: a head loaded with
    ``from_pretrained`` gets its missing buffers from ``_init_weights`` alone, and uninitialised memory there makes
    eval-mode outputs NaN. Norms without affine parameters keep only their statistics."""
    if module.weight is not None:
        init.ones_(module.weight)
    if module.bias is not None:
        init.zeros_(module.bias)
    if getattr(module, "running_mean", None) is not None:
        init.zeros_(module.running_mean)
        init.ones_(module.running_var)
        init.zeros_(module.num_batches_tracked)


def init_flat_xavier(layer: nn.Module) -> None:
    """Xavier-uniform on a patch projection's kernel seen as a (out, in * kernel) matrix, as the Linear it is (MAE,
    VideoMAE), and a zero bias. Written on the parameter itself, not a view, so a loaded weight (flagged
    ``_is_hf_initialized``) is never overwritten."""
    weight = layer.weight
    fan_out, fan_in = weight.shape[0], weight[0].numel()
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    init.uniform_(weight, -bound, bound)
    if layer.bias is not None:
        init.zeros_(layer.bias)


def init_torch_default(layer: nn.Module) -> None:
    """PyTorch's own Linear / Conv initialisation (kaiming-uniform with a = sqrt(5), biases U(+-1/sqrt(fan_in))), for
    layers the official code leaves as built; transformers' loading would otherwise leave them to ``_init_weights``."""
    init.kaiming_uniform_(layer.weight, a=math.sqrt(5))
    if layer.bias is not None:
        bound = 1 / math.sqrt(layer.weight[0].numel())
        init.uniform_(layer.bias, -bound, bound)


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the backward multiplies the incoming gradient by ``-strength`` (no gradient to strength)."""

    @staticmethod
    def forward(ctx, x, strength):
        ctx.strength = strength
        return x.view_as(x)  # a new tensor object, so autograd records this node even for an identity

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output * -ctx.strength, None


def reverse_gradient(x: torch.Tensor, strength: float) -> torch.Tensor:
    """Gradient reversal (Ganin & Lempitsky, 2015): returns ``x`` unchanged, and in the backward pass hands the layers
    before it ``-strength`` times the gradient that reaches it. A head behind it learns to predict its target from
    ``x`` while the network that produced ``x`` is trained to defeat that head (FMAE-IAT's identity adversary).
    ``strength`` is a float >= 0 (0: the head still trains, the encoder gets no gradient from it)."""
    if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not strength >= 0:
        raise ValueError(f"strength must be a number >= 0, got {strength!r}")
    return _ReverseGradient.apply(x, float(strength))


class GradientReversal(nn.Module):
    """:func:`reverse_gradient` as a module with a fixed ``strength`` (parameter-free, nothing in the state dict)."""

    def __init__(self, strength: float = 1.0):
        super().__init__()
        reverse_gradient(torch.zeros(()), strength)  # validates strength
        self.strength = float(strength)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return reverse_gradient(x, self.strength)

    def extra_repr(self) -> str:
        return f"strength={self.strength}"
