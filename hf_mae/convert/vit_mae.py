"""FORMAT vit-mae: transformers ``ViTMAEForPreTraining`` <-> hf-mae ``MAEForPreTraining``.

ViTMAEConfig has one int for image and patch size and no LayerScale, so non-square sizes and
``layer_scale_init_value`` are refused; ``drop_path_rate`` and ``mask_generator`` only act in training and are
dropped with a warning.
"""

from __future__ import annotations

import functools
from pathlib import Path

from transformers import ViTMAEConfig

from ..modeling.mae import MAEConfig, MAEForPreTraining
from .common import (
    Format,
    build_exactly,
    check_vit_blocks,
    fuse_qkv,
    one_int_sizes,
    read_transformers_folder,
    shared_config_fields,
    split_qkv,
    write_vit_folder,
)
from .layouts import check_position_tables, rename_keys

# hf-mae settings that only act during training: dropped (with a warning) when ViTMAE cannot hold them
_TRAINING_ONLY = {"drop_path_rate": 0.0, "mask_generator": "random"}


def vit_mae_fields() -> tuple[tuple[str, str], ...]:
    """(MAEConfig field, ViTMAEConfig field) pairs with the same meaning: every field both classes declare."""
    return shared_config_fields(MAEConfig, ViTMAEConfig)


def mae_config_from_vit_mae(vit_config) -> MAEConfig:
    """MAEConfig with every field of a ``ViTMAEConfig`` (its layer_norm_eps, 1e-12 by default, included)."""
    return MAEConfig(**{ours: getattr(vit_config, theirs) for ours, theirs in vit_mae_fields()})


def vit_mae_config_from_mae(config: MAEConfig):
    """ViTMAEConfig of an hf-mae MAEConfig; ValueError for what ViTMAE cannot express."""
    if getattr(config, "latent_quantization", False):
        raise ValueError("latent_quantization=True: transformers' ViTMAE has no latent quantiser between encoder and "
                         "decoder, so the converted model would decode another latent; convert an MAE without it")
    kwargs = one_int_sizes({theirs: getattr(config, ours) for ours, theirs in vit_mae_fields()}, "vit-mae")
    check_vit_blocks(config, "vit-mae", _TRAINING_ONLY)
    return ViTMAEConfig(**kwargs)


def convert_vit_mae(vit_model, strict: bool = False) -> MAEForPreTraining:
    """transformers ``ViTMAEForPreTraining`` -> hf-mae ``MAEForPreTraining`` with the same weights and outputs."""
    config = mae_config_from_vit_mae(vit_model.config)
    state = rename_keys(fuse_qkv(vit_model.state_dict()), "vit-mae", "mae")
    check_position_tables(state, config, "the ViTMAE checkpoint", strict)
    return build_exactly(MAEForPreTraining, config, state, "the ViTMAE checkpoint")


def convert_to_vit_mae(model: MAEForPreTraining):
    """hf-mae ``MAEForPreTraining`` -> transformers ``ViTMAEForPreTraining`` with the same weights and outputs."""
    from transformers import ViTMAEForPreTraining

    if not isinstance(model, MAEForPreTraining):
        raise TypeError(f"model must be an MAEForPreTraining, got {type(model).__name__}")
    config = vit_mae_config_from_mae(model.config)
    state = split_qkv(rename_keys(model.state_dict(), "mae", "vit-mae"))
    return build_exactly(ViTMAEForPreTraining, config, state, "the hf-mae model")


def convert_vit_mae_folder(src, dst, overwrite: bool = False, strict: bool = False) -> Path:
    """A transformers ViTMAEForPreTraining folder -> an hf-mae MAEForPreTraining folder (+ processor json)."""
    from transformers import ViTMAEForPreTraining

    convert = functools.partial(convert_vit_mae, strict=strict)
    return read_transformers_folder(ViTMAEForPreTraining, "vit_mae", convert, src, dst, overwrite)


def convert_to_vit_mae_folder(src, dst, overwrite: bool = False) -> Path:
    """An hf-mae MAEForPreTraining folder -> a transformers ViTMAEForPreTraining folder (+ ViTImageProcessor json)."""
    return write_vit_folder(MAEForPreTraining, convert_to_vit_mae, src, dst, overwrite)


FORMAT = Format(
    name="vit-mae",
    source="transformers ViTMAEForPreTraining folder",
    read=lambda src, dst, args: convert_vit_mae_folder(src, dst, args.overwrite, args.strict),
    write=lambda src, dst, args: convert_to_vit_mae_folder(src, dst, args.overwrite),
)
