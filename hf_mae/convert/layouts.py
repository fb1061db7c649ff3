"""The weight names of the ViT layouts that hold the same numbers: hf-mae's MAE, transformers' ViTMAE and the
official facebookresearch/mae (one table, ``_NAMES``), and hf-mae's SimMIM vs transformers'
ViTForMaskedImageModeling; and the check of MAE's 2D sin-cos position tables, which are copied as stored."""

from __future__ import annotations

import warnings

import torch

from ..modeling.embeddings import sincos_2d
from ..modeling.mae import MAEConfig
from .common import rename_all

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


def rename_keys(state_dict: dict, source: str, target: str) -> dict:
    """Renames a state dict from layout ``source`` to ``target`` (each one of "mae", "vit-mae", "mae-official"; or
    SimMIM's "mae" <-> "vit-mim").

    The qkv projection stays fused (``attention.qkv`` under ViTMAE names): see :func:`fuse_qkv` / :func:`split_qkv`.
    Raises ValueError listing every weight that has no counterpart.
    """
    rows = _SIMMIM_NAMES if "vit-mim" in (source, target) else _NAMES
    renamed, unknown = rename_all(state_dict, _COLUMN[source], _COLUMN[target], rows, _BLOCK_NAMES)
    if unknown:
        raise ValueError(f"{len(unknown)} weight(s) of the {source} checkpoint have no {target} counterpart: {unknown}")
    return renamed


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
