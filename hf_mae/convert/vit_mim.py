"""FORMAT vit-mim: transformers ``ViTForMaskedImageModeling`` <-> hf-mae ``SimMIMForPreTraining``.

ViTConfig has no masking settings: SimMIM's are chosen on the way in and not kept on the way out.
"""

from __future__ import annotations

from pathlib import Path

from ..modeling.embeddings import to_2tuple
from ..modeling.simmim import SimMIMConfig, SimMIMForPreTraining
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
from .layouts import rename_keys


def vit_mim_fields() -> tuple[tuple[str, str], ...]:
    """(SimMIMConfig field, ViTConfig field) pairs with the same meaning: every field both classes declare."""
    from transformers import ViTConfig

    return shared_config_fields(SimMIMConfig, ViTConfig)


def simmim_config_from_vit(vit_config) -> SimMIMConfig:
    """SimMIMConfig with every field of a ``ViTConfig`` (its layer_norm_eps, 1e-12 by default, included).

    ViTConfig has no masking settings: SimMIM's 32-px cells and r=0.6 are used where 32 px tiles the image and is a
    multiple of the patch size, else one-patch cells.
    """
    kwargs = {ours: getattr(vit_config, theirs) for ours, theirs in vit_mim_fields()}
    cell = SimMIMConfig.mask_patch_size
    height, width = to_2tuple(kwargs["image_size"])
    fits = cell % kwargs["patch_size"] == 0 and height % cell == 0 and width % cell == 0
    return SimMIMConfig(mask_patch_size=cell if fits else kwargs["patch_size"], **kwargs)


def vit_config_from_simmim(config: SimMIMConfig):
    """ViTConfig of an hf-mae SimMIMConfig; ValueError for what ViTForMaskedImageModeling cannot express.

    The masking settings (mask_ratio, mask_patch_size) have no ViTConfig field and are not kept.
    """
    from transformers import ViTConfig

    # ViTForMaskedImageModeling reshapes its tokens to a square grid; SimMIM's patch_size is one int already
    kwargs = {theirs: getattr(config, ours) for ours, theirs in vit_mim_fields()}
    kwargs = one_int_sizes(kwargs, "vit-mim", names=("image_size",))
    check_vit_blocks(config, "vit-mim", {"drop_path_rate": 0.0})
    return ViTConfig(**kwargs)


def convert_vit_mim(vit_model) -> SimMIMForPreTraining:
    """transformers ``ViTForMaskedImageModeling`` -> hf-mae ``SimMIMForPreTraining``, same weights and outputs."""
    state = rename_keys(fuse_qkv(vit_model.state_dict()), "vit-mim", "mae")
    return build_exactly(SimMIMForPreTraining, simmim_config_from_vit(vit_model.config), state, "the ViT checkpoint")


def convert_to_vit_mim(model: SimMIMForPreTraining):
    """hf-mae ``SimMIMForPreTraining`` -> transformers ``ViTForMaskedImageModeling``, same weights and outputs."""
    from transformers import ViTForMaskedImageModeling

    if not isinstance(model, SimMIMForPreTraining):
        raise TypeError(f"model must be a SimMIMForPreTraining, got {type(model).__name__}")
    config = vit_config_from_simmim(model.config)  # refuses what ViT cannot hold before renaming the weights
    state = split_qkv(rename_keys(model.state_dict(), "mae", "vit-mim"))
    return build_exactly(ViTForMaskedImageModeling, config, state, "the hf-mae model")


def convert_vit_mim_folder(src, dst, overwrite: bool = False) -> Path:
    """A transformers ViTForMaskedImageModeling folder -> an hf-mae SimMIMForPreTraining folder (+ processor json)."""
    from transformers import ViTForMaskedImageModeling

    return read_transformers_folder(ViTForMaskedImageModeling, "vit", convert_vit_mim, src, dst, overwrite)


def convert_to_vit_mim_folder(src, dst, overwrite: bool = False) -> Path:
    """An hf-mae SimMIMForPreTraining folder -> a ViTForMaskedImageModeling folder (+ ViTImageProcessor json)."""
    return write_vit_folder(SimMIMForPreTraining, convert_to_vit_mim, src, dst, overwrite)


FORMAT = Format(
    name="vit-mim",
    source="transformers ViTForMaskedImageModeling folder, to SimMIM",
    read=lambda src, dst, args: convert_vit_mim_folder(src, dst, args.overwrite),
    write=lambda src, dst, args: convert_to_vit_mim_folder(src, dst, args.overwrite),
)
