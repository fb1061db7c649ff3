"""Checkpoint conversion between hf-mae, transformers' ViTMAE / ViT-MIM / VideoMAE and the official
facebookresearch/mae and Pang-Yatian/Point-MAE layouts.

```
hf-mae convert vit-mae      SRC_DIR  DST_DIR   # transformers ViTMAEForPreTraining folder -> hf-mae MAEForPreTraining
hf-mae convert --to vit-mae SRC_DIR  DST_DIR   # hf-mae MAEForPreTraining folder -> ViTMAEForPreTraining folder
hf-mae convert mae-official SRC.pth  DST_DIR   # facebookresearch/mae checkpoint -> hf-mae folder
hf-mae convert --to mae-official SRC_DIR DST.pth   # hf-mae folder -> {"model": state_dict} in the official layout
hf-mae convert vit-mim      SRC_DIR  DST_DIR   # transformers ViTForMaskedImageModeling folder -> hf-mae SimMIM
hf-mae convert --to vit-mim SRC_DIR  DST_DIR   # hf-mae SimMIMForPreTraining folder -> ViTForMaskedImageModeling
hf-mae convert videomae     SRC_DIR  DST_DIR   # transformers VideoMAEForPreTraining folder -> hf-mae VideoMAE
hf-mae convert --to videomae SRC_DIR DST_DIR   # hf-mae VideoMAEForPreTraining folder -> VideoMAEForPreTraining
hf-mae convert pointmae-official SRC.pth DST_DIR   # Pang-Yatian/Point-MAE checkpoint -> hf-mae Point-MAE folder
hf-mae convert --to pointmae-official SRC_DIR DST.pth   # hf-mae Point-MAE folder -> {"base_model": state_dict}
```

The three MAE layouts hold the same numbers under different names (one table, ``_NAMES``); the only reshaping is
ViTMAE's separate q/k/v projections, which hf-mae and the official code fuse into one ``qkv`` Linear (q, k, v
stacked along the output dimension). The sin-cos position tables are copied as stored, never recomputed, so a
converted model gives the same outputs as its source for the same ``noise``.

Official checkpoints:
* ``{"model": state_dict}`` of ``models_mae.MaskedAutoencoderViT`` (encoder + decoder) -> ``MAEForPreTraining``;
  an encoder-only one (the released ``mae_pretrain_vit_*.pth``) -> ``MAEModel``; a ``models_vit`` fine-tuned one
  -> ``MAEForImageClassification``, with cls pooling (``norm`` + ``head``) or global pooling (``fc_norm`` +
  ``head``, no ``norm``: tokens are averaged before normalising, as hf-mae's ``classifier_pooling="mean"``).
* Shapes give every size except the head counts (``num_heads``: the paper's 12 for width 768, 16 for 1024 and
  1280; ``decoder_num_heads``: 16). LayerNorm eps is 1e-6 and ``norm_pix_loss`` defaults to True (the released
  models). The official sin-cos table is width-first (its meshgrid swaps h and w); a table in another layout is
  reported (warning, or ValueError with ``strict``) and still copied as stored.

Official Point-MAE checkpoints (``{"base_model": state_dict}``; ``{"model": ...}``, bare and ``module.``-prefixed
ones too): ``Point_MAE`` (pre-training: ``MAE_encoder.*``, ``MAE_decoder.*``, ``mask_token``, ``decoder_pos_embed``,
``increase_dim``) -> ``PointMAEForPreTraining``; ``PointTransformer`` (fine-tuned: ``encoder.*``, ``blocks.*``,
``cls_token``, ``cls_pos``, ``pos_embed``, ``norm``, ``cls_head_finetune``) -> ``PointMAEForPointCloudClassification``.
The names map 1:1 (``_POINTMAE_NAMES``), BatchNorm statistics included. Shapes give the widths, depths, qkv bias,
``group_size`` (pre-training head) and ``num_labels``; heads default to the paper's 6, and ``num_points`` /
``num_groups`` (and a fine-tuned model's ``group_size``) come from the config defaults (1024, 64, 32) or arguments.

To ViTMAE: ViTMAEConfig has one int for image and patch size and no LayerScale, so non-square sizes and
``layer_scale_init_value`` are refused; ``drop_path_rate`` and ``mask_generator`` only act in training and are
dropped with a warning.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pickle
import re
import warnings
from pathlib import Path
from typing import Callable

import torch

from .files import replace_atomically
from .modeling.embeddings import sincos_2d, to_2tuple
from .modeling.mae import MAEConfig, MAEForImageClassification, MAEForPreTraining, MAEModel
from .modeling.pointmae import PointMAEConfig, PointMAEForPointCloudClassification, PointMAEForPreTraining
from .modeling.simmim import SimMIMConfig, SimMIMForPreTraining
from .registry import processor_for_config

# "mae" is hf-mae's own folder layout
FORMATS = ("mae", "vit-mae", "mae-official", "vit-mim", "videomae", "pointmae-official")

# One row per weight group: (hf-mae name, transformers ViTMAE name, facebookresearch/mae name).
# "#" stands for a block index; None: that layout has no such weight.
_NAMES = (
    ("mae.embeddings.cls_token", "vit.embeddings.cls_token", "cls_token"),
    ("mae.embeddings.position_embeddings", "vit.embeddings.position_embeddings", "pos_embed"),
    ("mae.embeddings.patch_embeddings.projection", "vit.embeddings.patch_embeddings.projection", "patch_embed.proj"),
    ("mae.layers.#", "vit.layers.#", "blocks.#"),
    ("mae.layernorm", "vit.layernorm", "norm"),
    ("decoder.decoder_embed", "decoder.decoder_embed", "decoder_embed"),
    ("decoder.mask_token", "decoder.mask_token", "mask_token"),
    ("decoder.decoder_pos_embed", "decoder.decoder_pos_embed", "decoder_pos_embed"),
    ("decoder.decoder_layers.#", "decoder.decoder_layers.#", "decoder_blocks.#"),
    ("decoder.decoder_norm", "decoder.decoder_norm", "decoder_norm"),
    ("decoder.decoder_pred", "decoder.decoder_pred", "decoder_pred"),
    ("fc_norm", None, "fc_norm"),
    ("classifier", None, "head"),
)
# Inside a transformer block. ViTMAE's q_proj/k_proj/v_proj are fused into "attention.qkv" before renaming.
_BLOCK_NAMES = (
    ("norm1", "layernorm_before", "norm1"),
    ("attention.qkv", "attention.qkv", "attn.qkv"),
    ("attention.proj", "attention.o_proj", "attn.proj"),
    ("norm2", "layernorm_after", "norm2"),
    ("mlp.fc1", "mlp.fc1", "mlp.fc1"),
    ("mlp.fc2", "mlp.fc2", "mlp.fc2"),
)
_COLUMN = {"mae": 0, "vit-mae": 1, "mae-official": 2, "vit-mim": 1}
# SimMIM (hf-mae name, transformers ViTForMaskedImageModeling name); blocks as ViTMAE's (``_BLOCK_NAMES``), and
# the embeddings (cls/mask tokens, learned positions, patch projection) and the 1x1-conv head keep their names.
_SIMMIM_NAMES = (
    ("simmim.embeddings", "vit.embeddings"),
    ("simmim.layers.#", "vit.layers.#"),
    ("simmim.layernorm", "vit.layernorm"),
    ("decoder", "decoder"),
)

# MAEConfig and ViTMAEConfig fields with the same name and meaning
_VIT_MAE_FIELDS = (
    "image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "intermediate_size", "hidden_act", "qkv_bias", "layer_norm_eps", "hidden_dropout_prob",
    "attention_probs_dropout_prob", "decoder_hidden_size", "decoder_num_hidden_layers",
    "decoder_num_attention_heads", "decoder_intermediate_size", "mask_ratio", "norm_pix_loss", "initializer_range",
)  # fmt: skip
# hf-mae settings that only act during training: dropped (with a warning) when ViTMAE cannot hold them
_TRAINING_ONLY = {"drop_path_rate": 0.0, "mask_generator": "random"}

# The paper's head count per encoder width (ViT-B/L/H); its decoders use 16 heads.
PAPER_NUM_HEADS = {768: 12, 1024: 16, 1280: 16}
PAPER_DECODER_NUM_HEADS = 16
OFFICIAL_LAYER_NORM_EPS = 1e-6


# ----------------------------------------------------------------------------------------------------------------
# state-dict renaming


def _prefix_pattern(prefix: str) -> str:
    return r"(\d+)".join(re.escape(part) for part in prefix.split("#"))


def _rename(key: str, source: int, target: int, rows=_NAMES, block_rows=_BLOCK_NAMES) -> str:
    """The name of weight ``key`` of layout column ``source`` in layout ``target``; KeyError if unknown."""
    for row in rows:
        old, new = row[source], row[target]
        if old is None or new is None:
            continue
        match = re.fullmatch(_prefix_pattern(old) + r"(?:\.(.+))?", key)
        if match is None:
            continue
        *index, rest = match.groups()
        if index:  # a transformer block: rename inside it too
            new = new.replace("#", index[0])
            rest = _rename(rest, source, target, block_rows) if rest else rest
        return new if rest is None else f"{new}.{rest}"
    raise KeyError(key)


def _rename_all(state_dict: dict, source: int, target: int, rows, block_rows) -> tuple[dict, list]:
    """(the state dict renamed from column ``source`` to ``target`` of ``rows``, the keys that have no counterpart)."""
    renamed, unknown = {}, []
    for key, tensor in state_dict.items():
        try:
            renamed[_rename(key, source, target, rows, block_rows)] = tensor
        except KeyError:
            unknown.append(key)
    return renamed, unknown


def rename_keys(state_dict: dict, source: str, target: str) -> dict:
    """Renames a state dict from layout ``source`` to ``target`` (each one of "mae", "vit-mae", "mae-official"; or
    SimMIM's "mae" <-> "vit-mim").

    The qkv projection stays fused (``attention.qkv`` under ViTMAE names): see :func:`fuse_qkv` / :func:`split_qkv`.
    Raises ValueError listing every weight that has no counterpart.
    """
    rows = _SIMMIM_NAMES if "vit-mim" in (source, target) else _NAMES
    renamed, unknown = _rename_all(state_dict, _COLUMN[source], _COLUMN[target], rows, _BLOCK_NAMES)
    if unknown:
        raise ValueError(f"{len(unknown)} weight(s) of the {source} checkpoint have no {target} counterpart: {unknown}")
    return renamed


def fuse_qkv(state_dict: dict) -> dict:
    """ViTMAE ``...attention.{q,k,v}_proj.{weight,bias}`` -> ``...attention.qkv.*`` (q, k, v stacked on dim 0)."""
    fused = {}
    for key, tensor in state_dict.items():
        match = re.fullmatch(r"(.+\.attention\.)([qkv])_proj\.(weight|bias)", key)
        if match is None:
            fused[key] = tensor
        elif match.group(2) == "q":
            start, kind = match.group(1), match.group(3)
            fused[f"{start}qkv.{kind}"] = torch.cat([state_dict[f"{start}{x}_proj.{kind}"] for x in "qkv"], dim=0)
    return fused


def split_qkv(state_dict: dict) -> dict:
    """Inverse of :func:`fuse_qkv`."""
    split = {}
    for key, tensor in state_dict.items():
        match = re.fullmatch(r"(.+\.attention\.)qkv\.(weight|bias)", key)
        if match is None:
            split[key] = tensor
            continue
        for name, part in zip("qkv", tensor.chunk(3, dim=0)):
            split[f"{match.group(1)}{name}_proj.{match.group(2)}"] = part.clone()
    return split


def _build(model_class, config, state_dict: dict, source: str):
    """A ``model_class`` holding exactly ``state_dict`` (every weight, no extra), in the checkpoint's dtype."""
    dtype = next((t.dtype for t in state_dict.values() if t.is_floating_point()), torch.float32)
    model = model_class(config)
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"{source} does not fit {model_class.__name__} built from its own config: {error}") from None
    if missing or unexpected:
        raise ValueError(
            f"{source} does not fit {model_class.__name__}: missing weights {missing}, unexpected weights {unexpected}"
        )
    return model.to(dtype).eval()


# ----------------------------------------------------------------------------------------------------------------
# position tables


def pos_embed_layout(table: torch.Tensor, grid_size) -> str:
    """Which 2D sin-cos layout a position table (1, 1 + rows*cols, dim) holds.

    Returns "width-first" (MAE's and ViTMAE's: ``[sin_w|cos_w|sin_h|cos_h]``), "height-first" (the canonical
    ``[sin_h|cos_h|sin_w|cos_w]``), "zeros" or "other" (learned, interpolated, ...).
    """
    atol = 1e-2 if table.dtype in (torch.float16, torch.bfloat16) else 1e-4
    table = table.detach().float().reshape(-1, table.shape[-1])
    if not table.any():
        return "zeros"
    for name, width_first in (("width-first", True), ("height-first", False)):
        expected = sincos_2d(grid_size, table.shape[-1], cls_token=True, width_first=width_first)
        if expected.shape == table.shape and torch.allclose(table, expected, atol=atol):
            return name
    return "other"


def check_position_tables(state_dict: dict, config: MAEConfig, source: str, strict: bool = False) -> None:
    """Warns (ValueError if ``strict``) when the sin-cos tables of an hf-mae-named state dict are not width-first.

    The tables are copied as stored either way, so the converted model computes what the checkpoint computed.
    """
    for key in ("mae.embeddings.position_embeddings", "decoder.decoder_pos_embed"):
        if key not in state_dict:
            continue
        layout = pos_embed_layout(state_dict[key], config.grid_size)
        if layout == "width-first":
            continue
        message = f"{source}: {key} is {layout!r}, not MAE's width-first 2D sin-cos table; copied as stored"
        if layout == "zeros":
            message += " (transformers' ViTMAE zeroes its sin-cos tables when a model is built from a config)"
        if layout == "height-first":
            message += " (a table built h-first, not with the original MAE's h/w swap)"
        if strict:
            raise ValueError(message)
        warnings.warn(message, stacklevel=3)


# ----------------------------------------------------------------------------------------------------------------
# transformers ViTMAE <-> hf-mae


def mae_config_from_vit_mae(vit_config) -> MAEConfig:
    """MAEConfig with every field of a ``ViTMAEConfig`` (its layer_norm_eps, 1e-12 by default, included)."""
    return MAEConfig(**{name: getattr(vit_config, name) for name in _VIT_MAE_FIELDS})


def vit_mae_config_from_mae(config: MAEConfig):
    """ViTMAEConfig of an hf-mae MAEConfig; ValueError for what ViTMAE cannot express."""
    from transformers import ViTMAEConfig

    kwargs = {name: getattr(config, name) for name in _VIT_MAE_FIELDS}
    for name in ("image_size", "patch_size"):
        height, width = to_2tuple(kwargs[name])
        if height != width:
            raise ValueError(
                f"{name} must be square to convert to vit-mae (ViTMAEConfig holds one int), got {kwargs[name]!r}"
            )
        kwargs[name] = height
    if config.layer_scale_init_value:
        raise ValueError(
            f"layer_scale_init_value={config.layer_scale_init_value}: ViTMAE blocks have no LayerScale, "
            "so this model cannot be converted to vit-mae (allowed: 0)"
        )
    dropped = {name: getattr(config, name) for name, off in _TRAINING_ONLY.items() if getattr(config, name) != off}
    if dropped:
        message = f"ViTMAE has no {dropped}: dropped (they act only in training; the weights are unaffected)"
        warnings.warn(message, stacklevel=2)
    return ViTMAEConfig(**kwargs)


def convert_vit_mae(vit_model, strict: bool = False) -> MAEForPreTraining:
    """transformers ``ViTMAEForPreTraining`` -> hf-mae ``MAEForPreTraining`` with the same weights and outputs."""
    config = mae_config_from_vit_mae(vit_model.config)
    state = rename_keys(fuse_qkv(vit_model.state_dict()), "vit-mae", "mae")
    check_position_tables(state, config, "the ViTMAE checkpoint", strict)
    return _build(MAEForPreTraining, config, state, "the ViTMAE checkpoint")


def convert_to_vit_mae(model: MAEForPreTraining):
    """hf-mae ``MAEForPreTraining`` -> transformers ``ViTMAEForPreTraining`` with the same weights and outputs."""
    from transformers import ViTMAEForPreTraining

    if not isinstance(model, MAEForPreTraining):
        raise TypeError(f"model must be an MAEForPreTraining, got {type(model).__name__}")
    config = vit_mae_config_from_mae(model.config)
    state = split_qkv(rename_keys(model.state_dict(), "mae", "vit-mae"))
    return _build(ViTMAEForPreTraining, config, state, "the hf-mae model")


# ----------------------------------------------------------------------------------------------------------------
# transformers ViTForMaskedImageModeling <-> hf-mae SimMIM

# SimMIMConfig and ViTConfig fields with the same name and meaning
_VIT_MIM_FIELDS = (
    "image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "intermediate_size", "hidden_act", "qkv_bias", "layer_norm_eps", "hidden_dropout_prob",
    "attention_probs_dropout_prob", "initializer_range", "encoder_stride",
)  # fmt: skip


def simmim_config_from_vit(vit_config) -> SimMIMConfig:
    """SimMIMConfig with every field of a ``ViTConfig`` (its layer_norm_eps, 1e-12 by default, included).

    ViTConfig has no masking settings: SimMIM's 32-px cells and r=0.6 are used where 32 px tiles the image and is a
    multiple of the patch size, else one-patch cells.
    """
    kwargs = {name: getattr(vit_config, name) for name in _VIT_MIM_FIELDS}
    cell = SimMIMConfig.mask_patch_size
    height, width = to_2tuple(kwargs["image_size"])
    fits = cell % kwargs["patch_size"] == 0 and height % cell == 0 and width % cell == 0
    return SimMIMConfig(mask_patch_size=cell if fits else kwargs["patch_size"], **kwargs)


def vit_config_from_simmim(config: SimMIMConfig):
    """ViTConfig of an hf-mae SimMIMConfig; ValueError for what ViTForMaskedImageModeling cannot express.

    The masking settings (mask_ratio, mask_patch_size) have no ViTConfig field and are not kept.
    """
    from transformers import ViTConfig

    kwargs = {name: getattr(config, name) for name in _VIT_MIM_FIELDS}
    height, width = to_2tuple(kwargs["image_size"])
    if height != width:  # ViTForMaskedImageModeling reshapes its tokens to a square grid
        raise ValueError(f"image_size must be square to convert to vit-mim, got {config.image_size!r}")
    kwargs["image_size"] = height
    if config.layer_scale_init_value:
        raise ValueError(
            f"layer_scale_init_value={config.layer_scale_init_value}: ViT blocks have no LayerScale, "
            "so this model cannot be converted to vit-mim (allowed: 0)"
        )
    if config.drop_path_rate:
        message = f"ViT has no drop_path_rate={config.drop_path_rate}: dropped (it acts only in training)"
        warnings.warn(message, stacklevel=2)
    return ViTConfig(**kwargs)


def convert_vit_mim(vit_model) -> SimMIMForPreTraining:
    """transformers ``ViTForMaskedImageModeling`` -> hf-mae ``SimMIMForPreTraining``, same weights and outputs."""
    state = rename_keys(fuse_qkv(vit_model.state_dict()), "vit-mim", "mae")
    return _build(SimMIMForPreTraining, simmim_config_from_vit(vit_model.config), state, "the ViT checkpoint")


def convert_to_vit_mim(model: SimMIMForPreTraining):
    """hf-mae ``SimMIMForPreTraining`` -> transformers ``ViTForMaskedImageModeling``, same weights and outputs."""
    from transformers import ViTForMaskedImageModeling

    if not isinstance(model, SimMIMForPreTraining):
        raise TypeError(f"model must be a SimMIMForPreTraining, got {type(model).__name__}")
    config = vit_config_from_simmim(model.config)  # refuses what ViT cannot hold before renaming the weights
    state = split_qkv(rename_keys(model.state_dict(), "mae", "vit-mim"))
    return _build(ViTForMaskedImageModeling, config, state, "the hf-mae model")


# ----------------------------------------------------------------------------------------------------------------
# facebookresearch/mae <-> hf-mae


def _load_checkpoint(path):
    """``torch.load(path, weights_only=True)`` on CPU; training checkpoints also pickle their
    ``argparse.Namespace`` arguments, which is allowed as a safe global. ValueError if the file cannot be read."""
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ValueError(
            f"SRC {str(path)!r} cannot be read by torch.load(weights_only=True): {error}. If you trust the file, "
            "re-save it as torch.save({'model': state_dict}, path) and convert that"
        ) from None


def load_mae_official(path) -> dict:
    """The state dict of a facebookresearch/mae ``.pth`` (``{"model": state_dict, ...}`` or a bare state dict).

    Loaded with ``torch.load(weights_only=True)`` (see :func:`_load_checkpoint`).
    """
    checkpoint = _load_checkpoint(path)
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or "patch_embed.proj.weight" not in state:
        found = sorted(state)[:8] if isinstance(state, dict) else type(checkpoint).__name__
        raise ValueError(
            f"SRC {str(path)!r} is not a facebookresearch/mae checkpoint: expected {{'model': state_dict}} with "
            f"'patch_embed.proj.weight', 'pos_embed', 'blocks.N...'; found {found}"
        )
    return state


def _num_blocks(state_dict: dict, prefix: str) -> int:
    indices = {int(m.group(1)) for key in state_dict if (m := re.match(rf"{prefix}\.(\d+)\.", key))}
    return max(indices) + 1 if indices else 0


def mae_official_config(
    state_dict: dict, num_heads: int | None = None, decoder_num_heads: int | None = None, norm_pix_loss: bool = True
) -> MAEConfig:
    """MAEConfig of an official state dict, read from its shapes; head counts default to the paper's.

    The official models are square: the image size is the patch size times sqrt(number of positions).
    """
    required = ("cls_token", "pos_embed", "patch_embed.proj.weight", "blocks.0.mlp.fc1.weight")
    missing = [key for key in required if key not in state_dict]
    if missing:
        raise ValueError(f"SRC is not a complete facebookresearch/mae state dict: it lacks {missing}")
    hidden, channels, patch_h, patch_w = state_dict["patch_embed.proj.weight"].shape
    num_positions = state_dict["pos_embed"].shape[1] - 1
    grid = math.isqrt(num_positions)
    if grid * grid != num_positions:
        raise ValueError(f"SRC pos_embed has {num_positions} patch positions, not a square grid as in official MAE")
    if num_heads is None:
        if hidden not in PAPER_NUM_HEADS:
            raise ValueError(
                f"num_heads (--num-heads) is required: encoder width {hidden} has no paper default "
                f"(known: {PAPER_NUM_HEADS})"
            )
        num_heads = PAPER_NUM_HEADS[hidden]
    kwargs = dict(
        image_size=grid * patch_h if patch_h == patch_w else (grid * patch_h, grid * patch_w),
        patch_size=patch_h if patch_h == patch_w else (patch_h, patch_w),
        num_channels=channels,
        hidden_size=hidden,
        num_hidden_layers=_num_blocks(state_dict, "blocks"),
        num_attention_heads=num_heads,
        intermediate_size=state_dict["blocks.0.mlp.fc1.weight"].shape[0],
        hidden_act="gelu",  # timm's nn.GELU: the exact (erf) GELU
        qkv_bias="blocks.0.attn.qkv.bias" in state_dict,
        layer_norm_eps=OFFICIAL_LAYER_NORM_EPS,
        norm_pix_loss=norm_pix_loss,
    )
    if "decoder_embed.weight" in state_dict:
        kwargs.update(
            decoder_hidden_size=state_dict["decoder_embed.weight"].shape[0],
            decoder_num_hidden_layers=_num_blocks(state_dict, "decoder_blocks"),
            decoder_num_attention_heads=decoder_num_heads or PAPER_DECODER_NUM_HEADS,
            decoder_intermediate_size=state_dict["decoder_blocks.0.mlp.fc1.weight"].shape[0],
        )
    if "head.weight" in state_dict:
        pooling = "mean" if "fc_norm.weight" in state_dict else "cls"  # models_vit's global_pool has fc_norm
        kwargs.update(num_labels=state_dict["head.weight"].shape[0], classifier_pooling=pooling)
    return MAEConfig(**kwargs)


def convert_mae_official(
    state_dict: dict,
    num_heads: int | None = None,
    decoder_num_heads: int | None = None,
    norm_pix_loss: bool = True,
    strict: bool = False,
):
    """An official state dict -> ``MAEForPreTraining`` (with decoder), ``MAEModel`` (encoder only) or
    ``MAEForImageClassification`` (a ``models_vit`` fine-tune: ``norm`` + ``head`` or ``fc_norm`` + ``head``)."""
    config = mae_official_config(state_dict, num_heads, decoder_num_heads, norm_pix_loss)
    state = rename_keys(state_dict, "mae-official", "mae")
    if "head.weight" in state_dict:  # fine-tuned: its pos_embed was trained, so it is no sin-cos table any more
        return _build(MAEForImageClassification, config, state, "the official checkpoint")
    check_position_tables(state, config, "the official checkpoint", strict)
    if "decoder_embed.weight" in state_dict:
        return _build(MAEForPreTraining, config, state, "the official checkpoint")
    encoder = {key.removeprefix("mae."): tensor for key, tensor in state.items()}
    return _build(MAEModel, config, encoder, "the official checkpoint")


def to_mae_official_state_dict(model) -> dict:
    """The state dict of an hf-mae MAEForPreTraining / MAEModel / MAEForImageClassification under the
    official key names and shapes; ValueError for what the official code cannot express."""
    config = model.config
    problems = []
    if len(set(to_2tuple(config.image_size))) > 1 or len(set(to_2tuple(config.patch_size))) > 1:
        problems.append(f"non-square image_size {config.image_size} / patch_size {config.patch_size}")
    if config.layer_scale_init_value:
        problems.append(f"layer_scale_init_value={config.layer_scale_init_value} (no LayerScale)")
    if not config.qkv_bias:
        problems.append("qkv_bias=False (official blocks always have a qkv bias)")
    if config.hidden_act != "gelu":
        problems.append(f"hidden_act={config.hidden_act!r} (official blocks use 'gelu')")
    if problems:
        raise ValueError(f"the model cannot be converted to mae-official: {'; '.join(problems)}")
    if config.layer_norm_eps != OFFICIAL_LAYER_NORM_EPS:
        warnings.warn(f"layer_norm_eps={config.layer_norm_eps}; the official code uses 1e-6", stacklevel=2)
    state = model.state_dict()
    if isinstance(model, MAEModel):
        state = {f"mae.{key}": tensor for key, tensor in state.items()}
    return rename_keys(state, "mae", "mae-official")


# ----------------------------------------------------------------------------------------------------------------
# transformers VideoMAE <-> hf-mae VideoMAE

# (hf-mae name, transformers VideoMAEForPreTraining name); "#" is a block index
_VIDEOMAE_NAMES = (
    ("videomae.patch_embeddings.projection", "videomae.embeddings.patch_embeddings.projection"),
    ("videomae.layers.#", "videomae.encoder.layer.#"),
    ("videomae.layernorm", "videomae.layernorm"),
    ("decoder.encoder_to_decoder", "encoder_to_decoder"),
    ("decoder.mask_token", "mask_token"),
    ("decoder.decoder_layers.#", "decoder.decoder_layers.#"),
    ("decoder.decoder_norm", "decoder.norm"),
    ("decoder.decoder_pred", "decoder.head"),
)
# Inside a block. transformers' separate query/key/value weights are fused into "attention.attention.qkv" first;
# VideoMAE's query and value biases keep their own parameters (the key has none).
_VIDEOMAE_BLOCK_NAMES = (
    ("norm1", "layernorm_before"),
    ("attention.qkv", "attention.attention.qkv"),
    ("attention.q_bias", "attention.attention.query.bias"),
    ("attention.v_bias", "attention.attention.value.bias"),
    ("attention.proj", "attention.output.dense"),
    ("norm2", "layernorm_after"),
    ("mlp.fc1", "intermediate.dense"),
    ("mlp.fc2", "output.dense"),
)
# VideoMAEConfig fields (hf-mae name, transformers name) with the same meaning
_VIDEOMAE_FIELDS = tuple((name, name) for name in (
    "image_size", "patch_size", "num_channels", "num_frames", "tubelet_size", "hidden_size", "num_hidden_layers",
    "num_attention_heads", "intermediate_size", "hidden_act", "layer_norm_eps", "hidden_dropout_prob",
    "attention_probs_dropout_prob", "decoder_hidden_size", "decoder_num_hidden_layers", "decoder_num_attention_heads",
    "decoder_intermediate_size", "norm_pix_loss", "initializer_range",
)) + (("qkv_bias", "qv_bias"),)  # fmt: skip
TRANSFORMERS_VIDEOMAE_DECODER_NORM_EPS = 1e-5  # transformers' VideoMAEDecoder.norm is nn.LayerNorm(width)


def _videomae_rename(state_dict: dict, source: int, target: int) -> dict:
    renamed, unknown = _rename_all(state_dict, source, target, _VIDEOMAE_NAMES, _VIDEOMAE_BLOCK_NAMES)
    if unknown:
        raise ValueError(f"{len(unknown)} weight(s) have no counterpart in the other VideoMAE layout: {unknown}")
    return renamed


def convert_videomae(hf_model):
    """transformers ``VideoMAEForPreTraining`` -> hf-mae ``VideoMAEForPreTraining``, same weights and outputs."""
    from .modeling.videomae import HfVideoMAEConfig, VideoMAEForPreTraining

    source = hf_model.config
    if source.use_mean_pooling:
        raise ValueError(
            "the VideoMAE checkpoint has use_mean_pooling=True, so its pre-training encoder has no final LayerNorm; "
            "hf-mae's VideoMAE pre-training encoder (like the official one) always ends in one"
        )
    config = HfVideoMAEConfig(
        **{ours: getattr(source, theirs) for ours, theirs in _VIDEOMAE_FIELDS},
        decoder_norm_eps=TRANSFORMERS_VIDEOMAE_DECODER_NORM_EPS,
    )
    state = {}
    for key, tensor in hf_model.state_dict().items():
        match = re.fullmatch(r"(.+\.attention\.attention\.)(query|key|value)\.weight", key)
        if match is None:
            state[key] = tensor
        elif match.group(2) == "query":
            parts = [hf_model.state_dict()[f"{match.group(1)}{name}.weight"] for name in ("query", "key", "value")]
            state[f"{match.group(1)}qkv.weight"] = torch.cat(parts, dim=0)
    state = _videomae_rename(state, 1, 0)
    model = VideoMAEForPreTraining(config)  # the sinusoid tables are buffers rebuilt from the config
    state.update({key: model.state_dict()[key] for key in ("videomae.position_embeddings", "decoder.position_embeddings")})
    return _build(VideoMAEForPreTraining, config, state, "the VideoMAE checkpoint")


def convert_to_videomae(model):
    """hf-mae ``VideoMAEForPreTraining`` -> transformers ``VideoMAEForPreTraining``, same weights and outputs."""
    from transformers import VideoMAEConfig as TransformersVideoMAEConfig
    from transformers import VideoMAEForPreTraining as TransformersVideoMAE

    from .modeling.videomae import VideoMAEForPreTraining

    if not isinstance(model, VideoMAEForPreTraining):
        raise TypeError(f"model must be an hf-mae VideoMAEForPreTraining, got {type(model).__name__}")
    config = model.config
    problems = [f"{name} {getattr(config, name)!r} is not square" for name in ("image_size", "patch_size")
                if len(set(to_2tuple(getattr(config, name)))) > 1]  # fmt: skip
    if problems:
        raise ValueError(f"transformers' VideoMAEConfig holds one int per size: {'; '.join(problems)}")
    norm_eps = config.layer_norm_eps if config.decoder_norm_eps is None else config.decoder_norm_eps
    if norm_eps != TRANSFORMERS_VIDEOMAE_DECODER_NORM_EPS:
        warnings.warn(
            f"the decoder's last LayerNorm uses eps {norm_eps}; transformers' VideoMAE fixes it at 1e-5, so "
            "decoder outputs will differ slightly",
            stacklevel=2,
        )
    kwargs = {theirs: getattr(config, ours) for ours, theirs in _VIDEOMAE_FIELDS}
    kwargs.update(image_size=to_2tuple(config.image_size)[0], patch_size=to_2tuple(config.patch_size)[0])
    target = TransformersVideoMAEConfig(**kwargs, use_mean_pooling=False)
    state = {key: tensor for key, tensor in model.state_dict().items() if not key.endswith("position_embeddings")}
    state = _videomae_rename(state, 0, 1)
    for key in [key for key in state if key.endswith("attention.attention.qkv.weight")]:
        start = key.removesuffix("qkv.weight")
        for name, part in zip(("query", "key", "value"), state.pop(key).chunk(3, dim=0)):
            state[f"{start}{name}.weight"] = part.clone()
    return _build(TransformersVideoMAE, target, state, "the hf-mae VideoMAE model")


# ----------------------------------------------------------------------------------------------------------------
# Pang-Yatian/Point-MAE <-> hf-mae Point-MAE

# One row per weight group: (hf-mae name, official ``Point_MAE`` (pre-training) name, official ``PointTransformer``
# (fine-tuning) name); "#" is a block index, None: that model has no such weight. The official encoders nest their
# blocks twice (``TransformerEncoder.blocks``), the decoder once; ``MAE_decoder.head`` is an Identity (no weights).
_POINTMAE_NAMES = (
    ("pointmae.group_embedding.first", "MAE_encoder.encoder.first_conv", "encoder.first_conv"),
    ("pointmae.group_embedding.second", "MAE_encoder.encoder.second_conv", "encoder.second_conv"),
    ("pointmae.position_embedding", "MAE_encoder.pos_embed", "pos_embed"),
    ("pointmae.layers.#", "MAE_encoder.blocks.blocks.#", "blocks.blocks.#"),
    ("pointmae.layernorm", "MAE_encoder.norm", "norm"),
    ("decoder.mask_token", "mask_token", None),
    ("decoder.position_embedding", "decoder_pos_embed", None),
    ("decoder.layers.#", "MAE_decoder.blocks.#", None),
    ("decoder.norm", "MAE_decoder.norm", None),
    ("decoder.head", "increase_dim.0", None),
    ("cls_token", None, "cls_token"),
    ("cls_position", None, "cls_pos"),
    ("classifier", None, "cls_head_finetune"),
)
_POINTMAE_BLOCK_NAMES = tuple((ours, theirs, theirs) for ours, theirs in (
    ("norm1", "norm1"), ("attention.qkv", "attn.qkv"), ("attention.proj", "attn.proj"), ("norm2", "norm2"),
    ("mlp.fc1", "mlp.fc1"), ("mlp.fc2", "mlp.fc2"),
))  # fmt: skip
_POINTMAE_PRETRAINING, _POINTMAE_FINETUNED = 1, 2  # columns of the table
_POINTMAE_CLASSES = {
    _POINTMAE_PRETRAINING: PointMAEForPreTraining, _POINTMAE_FINETUNED: PointMAEForPointCloudClassification
}  # fmt: skip
POINTMAE_PAPER_NUM_HEADS = 6  # encoder and decoder (cfgs/pretrain.yaml, cfgs/finetune_*.yaml)
POINTMAE_OFFICIAL_LAYER_NORM_EPS = 1e-5  # nn.LayerNorm's default
# What the official modules hard-code, as hf-mae config fields: Encoder 3 -> 128 -> 256, 512 -> 512 -> width, the
# position MLPs 3 -> 128 -> width, Block(mlp_ratio=4, qkv_bias=False, nn.GELU), the fine-tuning head's 256 units.
_POINTMAE_OFFICIAL_FIXED = dict(embedding_channels=[128, 256, 512], position_hidden_size=128, qkv_bias=False,
                                hidden_act="gelu", classifier_hidden_size=256)  # fmt: skip


def unwrap_pointmae_official(checkpoint) -> dict:
    """The state dict of an official Point-MAE checkpoint: ``{"base_model": state_dict, ...}`` (what the repo saves),
    ``{"model": state_dict}`` or a bare state dict, with the ``module.`` prefix of DataParallel/DDP removed."""
    if not isinstance(checkpoint, dict):
        raise TypeError(
            f"checkpoint must be a dict (a state dict or {{'base_model': state_dict}}), got {type(checkpoint).__name__}"
        )
    for key in ("model", "base_model"):  # the order of the official tools/builder.load_model
        if isinstance(checkpoint.get(key), dict):
            checkpoint = checkpoint[key]
            break
    return {key.removeprefix("module."): value for key, value in checkpoint.items()}


def _pointmae_official_column(state_dict: dict) -> int:
    """Which official model a (unwrapped) state dict holds: ``Point_MAE`` or ``PointTransformer``; else ValueError."""
    if "MAE_encoder.encoder.first_conv.0.weight" in state_dict:
        return _POINTMAE_PRETRAINING
    if "encoder.first_conv.0.weight" in state_dict:
        return _POINTMAE_FINETUNED
    raise ValueError(
        "the checkpoint is not an official Point-MAE state dict: expected 'MAE_encoder.encoder.first_conv.0.weight' "
        f"(Point_MAE) or 'encoder.first_conv.0.weight' (PointTransformer); found {sorted(state_dict)[:8]}"
    )


def pointmae_official_config(state_dict: dict, num_heads: int | None = None, decoder_num_heads: int | None = None,
                             **overrides):  # fmt: skip
    """PointMAEConfig of an official Point-MAE state dict, read from its shapes: widths, depths, qkv bias, the
    mini-PointNet and position-MLP widths, ``group_size`` (pre-training: the head's outputs / 3) or ``num_labels``
    and the head's width (fine-tuned). Head counts default to the paper's 6.

    ``overrides``: config fields the weights do not hold (``num_points``, ``num_groups``, ``group_size`` of a
    fine-tuned model, ``mask_ratio``, ``mask_type``, ``drop_path_rate``, ...); the defaults are the paper's
    (1024 points, 64 groups of 32). A field that the weights give is refused unless it agrees.
    """
    state = unwrap_pointmae_official(state_dict)
    column = _pointmae_official_column(state)
    prefix = "MAE_encoder." if column == _POINTMAE_PRETRAINING else ""

    def shape(name: str) -> torch.Size:
        if name not in state:
            raise ValueError(f"the checkpoint is not a complete official Point-MAE state dict: it lacks {name!r}")
        return state[name].shape

    hidden = shape(f"{prefix}norm.weight")[0]
    inferred = dict(
        hidden_size=hidden,
        embedding_channels=[shape(f"{prefix}encoder.{name}.weight")[0]
                            for name in ("first_conv.0", "first_conv.3", "second_conv.0")],  # fmt: skip
        position_hidden_size=shape(f"{prefix}pos_embed.0.weight")[0],
        num_hidden_layers=_num_blocks(state, f"{prefix}blocks.blocks"),
        intermediate_size=shape(f"{prefix}blocks.blocks.0.mlp.fc1.weight")[0],
        qkv_bias=f"{prefix}blocks.blocks.0.attn.qkv.bias" in state,
        hidden_act="gelu",  # nn.GELU: the exact (erf) GELU
        layer_norm_eps=POINTMAE_OFFICIAL_LAYER_NORM_EPS,
    )
    if column == _POINTMAE_PRETRAINING:
        outputs = shape("increase_dim.0.weight")[0]
        if outputs % 3:
            raise ValueError(f"increase_dim.0 has {outputs} outputs, not 3 coordinates x group_size points")
        inferred.update(group_size=outputs // 3, decoder_num_hidden_layers=_num_blocks(state, "MAE_decoder.blocks"))
    else:
        inferred.update(
            num_labels=shape("cls_head_finetune.8.weight")[0],
            classifier_hidden_size=shape("cls_head_finetune.0.weight")[0],
        )
    head_fields = {"num_attention_heads", "decoder_num_attention_heads"}  # given as num_heads / decoder_num_heads
    allowed = {field.name for field in dataclasses.fields(PointMAEConfig)} - set(inferred) - head_fields
    unknown = sorted(name for name in overrides if name not in allowed and name not in inferred)
    if unknown:
        raise ValueError(
            f"unknown PointMAEConfig field(s) {unknown}; allowed: {sorted(allowed)} (and the head counts as "
            "num_heads / decoder_num_heads)"
        )
    clashes = {name: (value, inferred[name]) for name, value in overrides.items()
               if name in inferred and value is not None and value != inferred[name]}  # fmt: skip
    if clashes:
        details = "; ".join(f"{name}={given!r} but the weights give {read!r}"
                            for name, (given, read) in clashes.items())  # fmt: skip
        raise ValueError(f"the checkpoint's weights fix these fields: {details}")
    heads = {}
    for name, given in (("num_attention_heads", num_heads), ("decoder_num_attention_heads", decoder_num_heads)):
        if given is None and hidden % POINTMAE_PAPER_NUM_HEADS:
            flag = "--num-heads" if name == "num_attention_heads" else "--decoder-num-heads"
            raise ValueError(
                f"{name} ({flag}) is required: width {hidden} is not divisible by the paper's "
                f"{POINTMAE_PAPER_NUM_HEADS} heads"
            )
        heads[name] = POINTMAE_PAPER_NUM_HEADS if given is None else given
    settings = {name: value for name, value in overrides.items() if value is not None}
    return PointMAEConfig(**{**settings, **inferred, **heads})


def convert_pointmae_official(state_dict: dict, num_heads: int | None = None, decoder_num_heads: int | None = None,
                              **overrides):  # fmt: skip
    """An official Point-MAE state dict (or checkpoint) -> ``PointMAEForPreTraining`` (from ``Point_MAE``) or
    ``PointMAEForPointCloudClassification`` (from ``PointTransformer``), every weight and BatchNorm statistic
    copied; ValueError naming every missing or unexpected official key. Options as :func:`pointmae_official_config`."""
    state = unwrap_pointmae_official(state_dict)
    config = pointmae_official_config(state, num_heads, decoder_num_heads, **overrides)
    column = _pointmae_official_column(state)
    model_class = _POINTMAE_CLASSES[column]
    # the official names of every weight the hf-mae model holds, to report problems in the checkpoint's own names
    expected, _ = _rename_all(model_class(config).state_dict(), 0, column, _POINTMAE_NAMES, _POINTMAE_BLOCK_NAMES)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        official = "Point_MAE" if column == _POINTMAE_PRETRAINING else "PointTransformer"
        raise ValueError(
            f"the checkpoint does not fit the official {official} of its own shapes: missing {missing}, "
            f"unexpected {unexpected}"
        )
    renamed, _ = _rename_all(state, column, 0, _POINTMAE_NAMES, _POINTMAE_BLOCK_NAMES)
    return _build(model_class, config, renamed, "the official Point-MAE checkpoint")


def to_pointmae_official_state_dict(model) -> dict:
    """The state dict of an hf-mae ``PointMAEForPreTraining`` / ``PointMAEForPointCloudClassification`` under the
    official ``Point_MAE`` / ``PointTransformer`` names; ValueError for what the official modules cannot hold.

    Head counts, ``num_groups``, ``num_points`` and the masking settings are not weights: give them to the official
    yaml config (``num_heads``, ``num_group``, ``npoints``, ``mask_ratio``) yourself.
    """
    columns = {model_class: column for column, model_class in _POINTMAE_CLASSES.items()}
    column = columns.get(type(model))
    if column is None:
        allowed = sorted(model_class.__name__ for model_class in columns)
        raise TypeError(f"model must be one of {allowed}, got {type(model).__name__}")
    config = model.config
    fixed = dict(_POINTMAE_OFFICIAL_FIXED, intermediate_size=4 * config.hidden_size)
    if column == _POINTMAE_PRETRAINING:
        del fixed["classifier_hidden_size"]  # the pre-training model has no classifier
    problems = [f"{name}={getattr(config, name)!r} (official: {value!r})"
                for name, value in fixed.items() if getattr(config, name) != value]  # fmt: skip
    if problems:
        raise ValueError(
            f"the model cannot be converted to pointmae-official, whose modules fix: {'; '.join(problems)}"
        )
    if config.layer_norm_eps != POINTMAE_OFFICIAL_LAYER_NORM_EPS:
        warnings.warn(f"layer_norm_eps={config.layer_norm_eps}; the official code uses 1e-5", stacklevel=2)
    state, unknown = _rename_all(model.state_dict(), 0, column, _POINTMAE_NAMES, _POINTMAE_BLOCK_NAMES)
    if unknown:
        raise ValueError(f"{len(unknown)} weight(s) have no counterpart in the official Point-MAE: {unknown}")
    return state


# ----------------------------------------------------------------------------------------------------------------
# folders and files


def check_destination(dst, overwrite: bool) -> None:
    if Path(dst).exists() and not overwrite:
        raise ValueError(f"DST {str(dst)!r} already exists; pass --overwrite (overwrite=True) to replace it")


def write_atomically(dst, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Calls ``write(path)`` on a temporary path beside ``dst`` (file or folder), then renames it to ``dst``.

    Nothing half-written is ever left at ``dst``; an existing ``dst`` is replaced only with ``overwrite``.
    """
    check_destination(dst, overwrite)
    return replace_atomically(dst, write)


def _processor_settings(folder: Path) -> dict:
    """Normalisation and resampling of a folder's ``preprocessor_config.json`` (empty if it has none)."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return {}
    saved = json.loads(path.read_text())
    return {key: saved[key] for key in ("image_mean", "image_std", "resample") if key in saved}


def _save_hf_mae(model, processor_settings: dict) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        model.save_pretrained(path)
        processor = processor_for_config(model.config)
        for key, value in processor_settings.items():  # keep the source's normalisation
            setattr(processor, key, value)
        processor.save_pretrained(path)

    return write


def _read_config(src: Path, model_type: str) -> dict:
    """The config.json of folder ``src``, refusing a folder without one or of another model type."""
    config_path = src / "config.json"
    if not config_path.is_file():
        raise ValueError(f"SRC {str(src)!r} is not a model folder: it has no config.json")
    config = json.loads(config_path.read_text())
    if config.get("model_type") != model_type:
        raise ValueError(
            f"SRC {str(src)!r} holds a {config.get('model_type')!r} model; this conversion reads {model_type!r} folders"
        )
    return config


def _load_folder(model_class, src: Path, model_type: str):
    """``model_class.from_pretrained(src)``, refusing a folder of another model type or with missing weights."""
    _read_config(src, model_type)
    model, info = model_class.from_pretrained(src, output_loading_info=True)
    if info["missing_keys"] or info["mismatched_keys"]:
        raise ValueError(
            f"SRC {str(src)!r} is not a complete {model_class.__name__}: missing {sorted(info['missing_keys'])}, "
            f"mismatched {info['mismatched_keys']}"
        )
    return model.eval()


def convert_vit_mae_folder(src, dst, overwrite: bool = False, strict: bool = False) -> Path:
    """A transformers ViTMAEForPreTraining folder -> an hf-mae MAEForPreTraining folder (+ processor json)."""
    from transformers import ViTMAEForPreTraining

    src = Path(src)
    model = convert_vit_mae(_load_folder(ViTMAEForPreTraining, src, "vit_mae"), strict=strict)
    return write_atomically(dst, _save_hf_mae(model, _processor_settings(src)), overwrite)


def convert_to_vit_mae_folder(src, dst, overwrite: bool = False) -> Path:
    """An hf-mae MAEForPreTraining folder -> a transformers ViTMAEForPreTraining folder (+ ViTImageProcessor json)."""
    src = Path(src)
    model = _load_folder(MAEForPreTraining, src, MAEConfig.model_type)
    return write_atomically(dst, _save_vit_folder(convert_to_vit_mae(model), model.config, src), overwrite)


def _save_vit_folder(vit_model, config, src: Path) -> Callable[[Path], None]:
    """Writes a transformers model and a ViTImageProcessor with hf-mae's normalisation (or the folder's own)."""
    from transformers import ViTImageProcessorPil

    size = vit_model.config.image_size
    default = processor_for_config(config)  # hf-mae's normalisation, unless the folder's processor says else
    settings = {key: getattr(default, key) for key in ("image_mean", "image_std", "resample")}
    settings.update(_processor_settings(src))

    def write(path: Path) -> None:
        vit_model.save_pretrained(path)
        ViTImageProcessorPil(size={"height": size, "width": size}, **settings).save_pretrained(path)

    return write


def convert_vit_mim_folder(src, dst, overwrite: bool = False) -> Path:
    """A transformers ViTForMaskedImageModeling folder -> an hf-mae SimMIMForPreTraining folder (+ processor json)."""
    from transformers import ViTForMaskedImageModeling

    src = Path(src)
    model = convert_vit_mim(_load_folder(ViTForMaskedImageModeling, src, "vit"))
    return write_atomically(dst, _save_hf_mae(model, _processor_settings(src)), overwrite)


def convert_to_vit_mim_folder(src, dst, overwrite: bool = False) -> Path:
    """An hf-mae SimMIMForPreTraining folder -> a ViTForMaskedImageModeling folder (+ ViTImageProcessor json)."""
    src = Path(src)
    model = _load_folder(SimMIMForPreTraining, src, SimMIMConfig.model_type)
    return write_atomically(dst, _save_vit_folder(convert_to_vit_mim(model), model.config, src), overwrite)


def convert_videomae_folder(src, dst, overwrite: bool = False) -> Path:
    """A transformers VideoMAEForPreTraining folder -> an hf-mae VideoMAEForPreTraining folder (+ processor json)."""
    from transformers import VideoMAEForPreTraining as TransformersVideoMAE

    src = Path(src)
    model = convert_videomae(_load_folder(TransformersVideoMAE, src, "videomae"))
    return write_atomically(dst, _save_hf_mae(model, _processor_settings(src)), overwrite)


def convert_to_videomae_folder(src, dst, overwrite: bool = False) -> Path:
    """An hf-mae VideoMAEForPreTraining folder -> a transformers VideoMAEForPreTraining folder (+ its image processor
    json, with hf-mae's normalisation or the folder's own)."""
    from transformers import VideoMAEImageProcessorPil

    from .modeling.videomae import HfVideoMAEConfig, VideoMAEForPreTraining

    src = Path(src)
    model = _load_folder(VideoMAEForPreTraining, src, HfVideoMAEConfig.model_type)
    converted = convert_to_videomae(model)
    default = processor_for_config(model.config)
    settings = {key: getattr(default, key) for key in ("image_mean", "image_std", "resample")}
    settings.update(_processor_settings(src))
    size = converted.config.image_size

    def write(path: Path) -> None:
        converted.save_pretrained(path)
        processor = VideoMAEImageProcessorPil(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}, **settings
        )
        processor.save_pretrained(path)

    return write_atomically(dst, write, overwrite)


def convert_mae_official_file(src, dst, overwrite: bool = False, **options) -> Path:
    """A facebookresearch/mae ``.pth`` -> an hf-mae folder; ``options`` go to :func:`convert_mae_official`."""
    model = convert_mae_official(load_mae_official(src), **options)
    return write_atomically(dst, _save_hf_mae(model, {}), overwrite)


def convert_to_mae_official_file(src, dst, overwrite: bool = False) -> Path:
    """An hf-mae folder (pre-training, encoder or cls-pooled classifier) -> ``{"model": state_dict}`` ``.pth``."""
    src = Path(src)
    architecture = (_read_config(src, MAEConfig.model_type).get("architectures") or ["MAEForPreTraining"])[0]
    classes = {cls.__name__: cls for cls in (MAEForPreTraining, MAEModel, MAEForImageClassification)}
    if architecture not in classes:
        raise ValueError(f"SRC {str(src)!r} holds a {architecture}; --to mae-official reads {sorted(classes)}")
    state = to_mae_official_state_dict(_load_folder(classes[architecture], src, MAEConfig.model_type))
    return write_atomically(dst, lambda path: torch.save({"model": state}, path), overwrite)


def load_pointmae_official(path) -> dict:
    """The state dict of an official Point-MAE ``.pth`` (``{"base_model": state_dict, ...}``, ``{"model": ...}`` or
    bare; ``module.`` prefixes removed), read with ``torch.load(weights_only=True)``; ValueError if it is none."""
    checkpoint = _load_checkpoint(path)
    try:
        state = unwrap_pointmae_official(checkpoint)
        _pointmae_official_column(state)
    except (TypeError, ValueError) as error:
        raise ValueError(f"SRC {str(path)!r}: {error}") from None
    return state


def convert_pointmae_official_file(src, dst, overwrite: bool = False, **options) -> Path:
    """An official Point-MAE ``.pth`` -> an hf-mae folder (model + processor); ``options`` go to
    :func:`convert_pointmae_official` (``num_heads``, ``num_groups``, ``num_points``, ...)."""
    model = convert_pointmae_official(load_pointmae_official(src), **options)
    return write_atomically(dst, _save_hf_mae(model, {}), overwrite)


def convert_to_pointmae_official_file(src, dst, overwrite: bool = False) -> Path:
    """An hf-mae Point-MAE folder (pre-training or classification) -> ``{"base_model": state_dict}`` ``.pth``, the
    layout the official ``tools/builder.load_model`` and ``PointTransformer.load_model_from_ckpt`` read."""
    src = Path(src)
    classes = {cls.__name__: cls for cls in _POINTMAE_CLASSES.values()}
    architecture = (_read_config(src, PointMAEConfig.model_type).get("architectures") or ["PointMAEForPreTraining"])[0]
    if architecture not in classes:
        raise ValueError(f"SRC {str(src)!r} holds a {architecture}; --to pointmae-official reads {sorted(classes)}")
    state = to_pointmae_official_state_dict(_load_folder(classes[architecture], src, PointMAEConfig.model_type))
    return write_atomically(dst, lambda path: torch.save({"base_model": state}, path), overwrite)


# ----------------------------------------------------------------------------------------------------------------
# command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "hf-mae convert [options] FORMAT SRC DST   |   hf-mae convert --to FORMAT [options] SRC DST"
    parser.add_argument(
        "paths", nargs="+", metavar="[FORMAT] SRC DST",
        help="FORMAT of SRC: vit-mae (transformers ViTMAEForPreTraining folder), mae-official (facebookresearch/mae "
        ".pth), vit-mim (transformers ViTForMaskedImageModeling folder, to SimMIM), videomae (transformers "
        "VideoMAEForPreTraining folder), pointmae-official (Pang-Yatian/Point-MAE .pth, pre-trained or fine-tuned) "
        "or mae (an hf-mae folder, the default with --to)",
    )  # fmt: skip
    parser.add_argument(
        "--to", metavar="FORMAT",
        help="target format: mae (default), vit-mae, mae-official, vit-mim, videomae, pointmae-official",
    )  # fmt: skip
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    parser.add_argument("--strict", action="store_true", help="fail (not warn) when a sin-cos table is not MAE's")
    official = parser.add_argument_group(
        "mae-official and pointmae-official (head counts are not stored in the checkpoint)"
    )
    official.add_argument(
        "--num-heads", type=int,
        help="encoder heads (mae-official default: 12 for 768, 16 for 1024/1280; pointmae-official: 6)",
    )  # fmt: skip
    official.add_argument(
        "--decoder-num-heads", type=int, help="decoder heads (mae-official default 16; pointmae-official 6)"
    )
    official.add_argument(
        "--norm-pix-loss", action=argparse.BooleanOptionalAction, default=True,
        help="whether the checkpoint was trained on normalised pixels (default: yes, as the released models)",
    )  # fmt: skip
    point = parser.add_argument_group("pointmae-official (the yaml settings that are not weights)")
    point.add_argument("--num-points", type=int, help="points per cloud, the yaml's npoints (default 1024)")
    point.add_argument("--num-groups", type=int, help="groups per cloud, the yaml's num_group (default 64)")
    point.add_argument(
        "--group-size", type=int,
        help="points per group of a fine-tuned checkpoint (default 32; pre-training ones give it in their head)",
    )  # fmt: skip


def _parse_route(args) -> tuple[str, str, Path, Path]:
    """(source format, target format, SRC, DST) from the positional arguments and --to."""
    target = args.to or "mae"
    if target not in FORMATS:
        raise ValueError(f"--to {target!r} is not a known format; allowed: {', '.join(FORMATS)}")
    if len(args.paths) == 3:
        source, src, dst = args.paths
    elif len(args.paths) == 2 and target != "mae":
        source, (src, dst) = "mae", args.paths
    else:
        raise ValueError(f"expected FORMAT SRC DST (or --to FORMAT SRC DST), got {args.paths}")
    if source not in FORMATS:
        raise ValueError(f"FORMAT {source!r} is not a known format; allowed: {', '.join(FORMATS)}")
    if (source == "mae") == (target == "mae"):
        raise ValueError(f"cannot convert FORMAT {source!r} --to {target!r}: one side must be hf-mae ('mae')")
    return source, target, Path(src), Path(dst)


def run(args) -> int:
    source, target, src, dst = _parse_route(args)
    if not src.exists():
        raise ValueError(f"SRC {str(src)!r} does not exist")
    check_destination(dst, args.overwrite)  # before the (possibly long) conversion
    if (args.num_heads is not None or args.decoder_num_heads is not None) and source not in (
        "mae-official", "pointmae-official"
    ):
        raise ValueError("--num-heads and --decoder-num-heads apply only to FORMAT mae-official and pointmae-official")
    if not args.norm_pix_loss and source != "mae-official":
        raise ValueError("--no-norm-pix-loss applies only to FORMAT mae-official")
    point_settings = {name: getattr(args, name) for name in ("num_points", "num_groups", "group_size")
                      if getattr(args, name) is not None}  # fmt: skip
    if point_settings and source != "pointmae-official":
        raise ValueError("--num-points, --num-groups and --group-size apply only to FORMAT pointmae-official")
    if source == "vit-mae":
        convert_vit_mae_folder(src, dst, args.overwrite, args.strict)
    elif source == "vit-mim":
        convert_vit_mim_folder(src, dst, args.overwrite)
    elif source == "videomae":
        convert_videomae_folder(src, dst, args.overwrite)
    elif target == "videomae":
        convert_to_videomae_folder(src, dst, args.overwrite)
    elif source == "mae-official":
        convert_mae_official_file(
            src, dst, args.overwrite, num_heads=args.num_heads, decoder_num_heads=args.decoder_num_heads,
            norm_pix_loss=args.norm_pix_loss, strict=args.strict,
        )  # fmt: skip
    elif source == "pointmae-official":
        convert_pointmae_official_file(
            src, dst, args.overwrite, num_heads=args.num_heads, decoder_num_heads=args.decoder_num_heads,
            **point_settings,
        )  # fmt: skip
    elif target == "pointmae-official":
        convert_to_pointmae_official_file(src, dst, args.overwrite)
    elif target == "vit-mae":
        convert_to_vit_mae_folder(src, dst, args.overwrite)
    elif target == "vit-mim":
        convert_to_vit_mim_folder(src, dst, args.overwrite)
    else:
        convert_to_mae_official_file(src, dst, args.overwrite)
    print(f"converted {source} {src} -> {target} {dst}")
    return 0


__all__ = [
    "FORMATS",
    "check_position_tables",
    "convert_mae_official",
    "convert_mae_official_file",
    "convert_pointmae_official",
    "convert_pointmae_official_file",
    "convert_to_pointmae_official_file",
    "convert_to_mae_official_file",
    "convert_to_vit_mae",
    "convert_to_vit_mae_folder",
    "convert_to_vit_mim",
    "convert_to_vit_mim_folder",
    "convert_to_videomae",
    "convert_to_videomae_folder",
    "convert_videomae",
    "convert_videomae_folder",
    "convert_vit_mae",
    "convert_vit_mae_folder",
    "convert_vit_mim",
    "convert_vit_mim_folder",
    "fuse_qkv",
    "load_mae_official",
    "load_pointmae_official",
    "mae_config_from_vit_mae",
    "mae_official_config",
    "pointmae_official_config",
    "pos_embed_layout",
    "rename_keys",
    "simmim_config_from_vit",
    "split_qkv",
    "to_mae_official_state_dict",
    "to_pointmae_official_state_dict",
    "unwrap_pointmae_official",
    "vit_config_from_simmim",
    "vit_mae_config_from_mae",
    "write_atomically",
]
