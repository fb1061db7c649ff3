"""What every hf-mae model shares: config validators, the ViT config bases (encoder, image input, decoder) and the
``PreTrainedModel`` base with the common init.

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

import os

import torch
from torch import nn
from transformers import PreTrainedConfig, PreTrainedModel
from transformers import initialization as init

from .embeddings import PatchProjection, TubeletProjection, to_2tuple
from .layers import Attention, LayerScale, init_flat_xavier, init_norm
from .quantization import LatentQuantizer

# ---------------------------------------------------------------------------------------------------------------
# Config validators: each raises ValueError naming the field, the value given and what is allowed.


def check_int(name: str, value, minimum: int = 1) -> int:
    """An int (not a bool) >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_rate(name: str, value, closed: bool = False, allow_zero: bool = True) -> float:
    """A number in [0, 1) (``closed=False``: a fraction that must leave something, e.g. a mask ratio) or [0, 1];
    ``allow_zero=False`` excludes 0 too ((0, 1) or (0, 1])."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    lower_ok = number and (value >= 0.0 if allow_zero else value > 0.0)
    if not (lower_ok and (value <= 1.0 if closed else value < 1.0)):
        allowed = ("[" if allow_zero else "(") + "0, 1" + ("]" if closed else ")")
        raise ValueError(f"{name} must be a number in {allowed}, got {value!r}")
    return value


def check_choice(name: str, value, choices) -> object:
    """One of ``choices``."""
    if value not in tuple(choices):
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")
    return value


def check_heads(width_name: str, width: int, heads_name: str, heads: int, why: str = "") -> None:
    """The attention width must split evenly into heads (both already checked to be ints >= 1)."""
    if width % heads:
        reason = f" ({why})" if why else ""
        raise ValueError(f"{width_name} {width} must be divisible by {heads_name} {heads}{reason}")


def check_transformer_sizes(config, prefix: str = "") -> None:
    """Width, depth, heads and MLP width of a transformer (``prefix`` "decoder_": the decoder's fields) are ints >= 1
    and the width splits evenly into the heads."""
    for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        check_int(prefix + name, getattr(config, prefix + name))
    width, heads = prefix + "hidden_size", prefix + "num_attention_heads"
    check_heads(width, getattr(config, width), heads, getattr(config, heads))


# ---------------------------------------------------------------------------------------------------------------
# Config bases. A method's config derives from the ones it needs and declares only its own fields; redeclaring an
# inherited field with an annotation (``hidden_size: int = 1024``) changes its default (configs are dataclasses).
# The bases are no models: they have no ``model_type`` and are never registered.


class ViTEncoderConfig(PreTrainedConfig):
    r"""The transformer encoder's fields. Defaults: ViT-B (768-d, 12 blocks, 12 heads, MLP 3072).

    hidden_size, num_hidden_layers, num_attention_heads, intermediate_size: encoder width, depth (blocks), attention
        heads and MLP width; the width must split evenly into the heads.
    hidden_act: activation of the MLPs (a transformers ``ACT2FN`` name; "gelu" is the exact erf GELU).
    qkv_bias: learned biases of the q/k/v projection.
    layer_norm_eps: eps of the blocks' LayerNorms (1e-6 as the official ViTs; transformers' ViT uses 1e-12).
    hidden_dropout_prob, attention_probs_dropout_prob: dropout after each sub-layer and on the attention weights,
        in [0, 1).
    drop_path_rate: stochastic depth of the encoder, rising linearly over its blocks to this rate, in [0, 1).
    initializer_range: std of the (truncated-)normal init of tokens and (where not xavier-uniform, as MAE's are)
        of the linear layers.
    """

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    drop_path_rate: float = 0.0
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_transformer_sizes(self)
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob", "drop_path_rate"):
            check_rate(name, getattr(self, name))


class ViTImageConfig(ViTEncoderConfig):
    r"""An encoder over image patches: :class:`ViTEncoderConfig` plus

    image_size, patch_size: an int or (height, width); the image size must be a multiple of the patch size.
    num_channels: channels of the input images.
    """

    image_size: int | list[int] | tuple[int, int] = 224
    patch_size: int | list[int] | tuple[int, int] = 16
    num_channels: int = 3

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_int("num_channels", self.num_channels)
        image, patch = to_2tuple(self.image_size), to_2tuple(self.patch_size)
        if image[0] % patch[0] or image[1] % patch[1]:
            raise ValueError(f"image_size {self.image_size} must be divisible by patch_size {self.patch_size}")

    @property
    def grid_size(self) -> tuple[int, int]:
        """(rows, columns) of the patch grid."""
        image, patch = to_2tuple(self.image_size), to_2tuple(self.patch_size)
        return image[0] // patch[0], image[1] // patch[1]


class ViTDecoderMixin(ViTEncoderConfig):
    r"""The light transformer decoder of a masked autoencoder, beside an encoder config (with :class:`ViTImageConfig`
    for MAE and VideoMAE, alone for LV-MAE). Defaults: MAE's 512-d decoder of 8 blocks, 16 heads, MLP 2048.

    decoder_hidden_size, decoder_num_hidden_layers, decoder_num_attention_heads, decoder_intermediate_size: the
        decoder's width, depth, heads and MLP width; its blocks share the encoder's ``hidden_act``, ``qkv_bias``
        and ``layer_norm_eps`` (:meth:`decoder_block_kwargs`).
    """

    decoder_hidden_size: int = 512
    decoder_num_hidden_layers: int = 8
    decoder_num_attention_heads: int = 16
    decoder_intermediate_size: int = 2048

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_transformer_sizes(self, prefix="decoder_")

    def decoder_block_kwargs(self, **overrides) -> dict:
        """``layers.build_blocks`` keywords of the decoder's blocks: the decoder's sizes, the encoder's activation,
        qkv bias and LayerNorm eps, no dropout, stochastic depth or LayerScale; ``overrides`` replace any of them
        (VideoMAE's ``qkv_bias="qv"``)."""
        sizes = dict(num_heads=self.decoder_num_attention_heads, intermediate_size=self.decoder_intermediate_size)
        shared = {name: getattr(self, name) for name in ("hidden_act", "qkv_bias", "layer_norm_eps")}
        return {"hidden_size": self.decoder_hidden_size, **sizes, **shared, **overrides}


# ---------------------------------------------------------------------------------------------------------------
# The PreTrainedModel base.

# transformers model types that an ``hf-mae convert`` route reads (model_type -> the route's FORMAT). Loaded directly
# into an hf-mae class their weights would not match a single key, and transformers would initialise everything.
CONVERTIBLE_MODEL_TYPES = {"vit_mae": "vit-mae", "vit": "vit-mim", "videomae": "videomae", "ijepa": "ijepa"}
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "subfolder", "proxies")


class MaskedModelPreTrainedModel(PreTrainedModel):
    """The base of every hf-mae ``*PreTrainedModel``: attention-backend flags and the init every method shares.

    A method's ``_init_weights`` applies its own rules (its linears, tokens, position tables) and hands every other
    module to ``super()._init_weights``, which initialises norms (running statistics included), LayerScale and
    patch / tubelet projections. Every rule is keyed on the module that *owns* the tensors: transformers calls
    ``_init_weights`` on each module, children first, and skips a module without parameters or buffers of its own.
    """

    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True
    _no_split_modules = ["TransformerBlock"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    # The losses are batch means, not sums over ``num_items_in_batch``: Trainer must divide them for gradient
    # accumulation itself (a forward taking ``**kwargs`` would otherwise tell it the model normalises them).
    accepts_loss_kwargs = False

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, (nn.LayerNorm, nn.modules.batchnorm._BatchNorm)):
            init_norm(module)
        elif isinstance(module, LayerScale):
            init.constant_(module.gamma, module.init_value)
        elif isinstance(module, (PatchProjection, TubeletProjection)):
            init_flat_xavier(module)  # the ViT / MAE rule: the projection is a Linear on flattened patches
        elif isinstance(module, LatentQuantizer):  # QLAE's codebooks (and MAE's optional bottleneck): the linspace
            init.copy_(module.codebook, module.initial_codebook(module.codebook.device))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        config = kwargs.get("config")
        if not isinstance(config, PreTrainedConfig):
            refuse_convertible_folder(cls, config if config is not None else pretrained_model_name_or_path, kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    def split_qkv_projections(self):
        """Gives every attention separate ``query`` / ``key`` / ``value`` Linears (as transformers' ViT), in place
        and exactly: the rows of each fused ``qkv`` are copied, the outputs stay the same. Adapters that target the
        projections by name then find them (PEFT: ``LoraConfig(target_modules=["query", "value"])``).

        Sets ``config.qkv_layout = "split"``: ``save_pretrained`` writes the split weights and that config, and
        ``from_pretrained`` builds the split layout from it directly. Call it on the model you save (the top-level
        one): it converts the attentions that read this model's config. Returns the model.
        """
        return self._set_qkv_layout("split")

    def fuse_qkv_projections(self):
        """The inverse of :meth:`split_qkv_projections`: every attention's ``query`` / ``key`` / ``value`` are stacked
        back into one ``qkv`` Linear (exactly) and ``config.qkv_layout = "fused"``, the layout every hf-mae
        checkpoint loads in. Adapters must be merged first (PEFT: ``merge_and_unload()``). Returns the model."""
        return self._set_qkv_layout("fused")

    def _set_qkv_layout(self, layout: str):
        # A nested model with a config of its own (CrossVideoMAE's frame encoder) is rebuilt from that config, so
        # only the attentions built from this config follow this config's layout.
        attentions = [(name, module) for name, module in self.named_modules()
                      if isinstance(module, Attention) and module.config is self.config]
        # check them all first, so that a refusal leaves the model as it was
        wrapped = [f"{name}.{part}" for name, module in attentions
                   if module.qkv_layout != layout for part in module.wrapped_projections()]
        if wrapped:
            raise TypeError(
                f"{'split' if layout == 'split' else 'fuse'}_qkv_projections needs plain nn.Linear projections, but "
                f"{', '.join(wrapped[:4])}{' ...' if len(wrapped) > 4 else ''} carry an adapter (converting would drop "
                "it): merge it into the weights first (PEFT: model = model.merge_and_unload())"
            )
        for _, module in attentions:
            if layout == "split":
                module.split_projections()
            else:
                module.fuse_projections()
        self.config.qkv_layout = layout
        return self

    @torch.no_grad()
    def initialize_weights(self):
        # A nested transformers model (TGM's text tower) is initialised by its own rules first. Left to transformers'
        # recursion it would get this model's "custom code" flag, which skips its parameter-less modules (CLIP's
        # attention, whose q/k/v/out init lives there) and leaves those weights to the generic Linear rule.
        for module in self.modules():
            if module is not self and isinstance(module, PreTrainedModel) and not module.is_custom_code():
                module.initialize_weights()
        super().initialize_weights()


def refuse_convertible_folder(model_class, name_or_path, kwargs) -> None:
    """Raises ValueError when ``name_or_path`` holds a transformers model that ``hf-mae convert`` reads (e.g. a
    ``vit_mae`` folder) instead of an hf-mae one, naming the command that converts it."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        return
    try:
        config, _ = PreTrainedConfig.get_config_dict(
            name_or_path, **{k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
        )
    except (OSError, ValueError):
        return  # no readable config: transformers' own loading reports it
    model_type = config.get("model_type")
    route = CONVERTIBLE_MODEL_TYPES.get(model_type)
    if route is None or model_type == model_class.config_class.model_type:
        return
    raise ValueError(
        f"{str(name_or_path)!r} holds a transformers {model_type!r} model, not an hf-mae "
        f"{model_class.config_class.model_type!r} one: loaded into {model_class.__name__} none of its weights would "
        f"match and the model would be random. Convert it first: hf-mae convert {route} {name_or_path} OUTPUT_DIR, "
        f"then load OUTPUT_DIR."
    )
