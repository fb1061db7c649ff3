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
hf-mae convert ijepa        SRC_DIR  DST_DIR   # transformers IJepaModel folder -> hf-mae IJEPAForPreTraining
hf-mae convert --to ijepa   SRC_DIR  DST_DIR   # hf-mae I-JEPA folder (its context encoder) -> IJepaModel folder
```

One module per format (``vit_mae``, ``mae_official``, ``vit_mim``, ``videomae``, ``pointmae_official``, ``ijepa``) holds its
weight-name table, its config mapping, both directions and its command-line options (a ``FORMAT``); ``common``
holds what they share and ``command`` is the command line, a lookup in the table of formats. Adding a format is
one module and one entry in ``command.TABLE``.

The three MAE layouts hold the same numbers under different names (one table, ``layouts._NAMES``); the only
reshaping is ViTMAE's separate q/k/v projections, which hf-mae and the official code fuse into one ``qkv`` Linear
(q, k, v stacked along the output dimension). The sin-cos position tables are copied as stored, never recomputed,
so a converted model gives the same outputs as its source for the same ``noise``. Config fields that two config
classes share are derived from their dataclass fields (:func:`shared_config_fields`), not listed by hand.
"""

from .command import FORMATS, TABLE, add_arguments, run
from .common import Format, Option, check_destination, fuse_qkv, shared_config_fields, split_qkv, write_atomically
from .ijepa import (
    convert_ijepa,
    convert_ijepa_folder,
    convert_to_ijepa,
    convert_to_ijepa_folder,
    ijepa_config_from_transformers,
    ijepa_fields,
    transformers_config_from_ijepa,
)
from .layouts import check_position_tables, pos_embed_layout, rename_keys
from .mae_official import (
    OFFICIAL_LAYER_NORM_EPS,
    PAPER_DECODER_NUM_HEADS,
    PAPER_NUM_HEADS,
    convert_mae_official,
    convert_mae_official_file,
    convert_to_mae_official_file,
    load_mae_official,
    mae_official_config,
    to_mae_official_state_dict,
)
from .pointmae_official import (
    POINTMAE_OFFICIAL_LAYER_NORM_EPS,
    POINTMAE_PAPER_NUM_HEADS,
    convert_pointmae_official,
    convert_pointmae_official_file,
    convert_to_pointmae_official_file,
    load_pointmae_official,
    pointmae_official_config,
    to_pointmae_official_state_dict,
    unwrap_pointmae_official,
)
from .videomae import (
    TRANSFORMERS_VIDEOMAE_DECODER_NORM_EPS,
    convert_to_videomae,
    convert_to_videomae_folder,
    convert_videomae,
    convert_videomae_folder,
    videomae_fields,
)
from .vit_mae import (
    convert_to_vit_mae,
    convert_to_vit_mae_folder,
    convert_vit_mae,
    convert_vit_mae_folder,
    mae_config_from_vit_mae,
    vit_mae_config_from_mae,
    vit_mae_fields,
)
from .vit_mim import (
    convert_to_vit_mim,
    convert_to_vit_mim_folder,
    convert_vit_mim,
    convert_vit_mim_folder,
    simmim_config_from_vit,
    vit_config_from_simmim,
    vit_mim_fields,
)

__all__ = [
    "FORMATS",
    "Format",
    "Option",
    "TABLE",
    "check_position_tables",
    "convert_ijepa",
    "convert_ijepa_folder",
    "convert_to_ijepa",
    "convert_to_ijepa_folder",
    "ijepa_config_from_transformers",
    "ijepa_fields",
    "transformers_config_from_ijepa",
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
    "shared_config_fields",
    "simmim_config_from_vit",
    "split_qkv",
    "to_mae_official_state_dict",
    "to_pointmae_official_state_dict",
    "unwrap_pointmae_official",
    "videomae_fields",
    "vit_config_from_simmim",
    "vit_mae_config_from_mae",
    "vit_mae_fields",
    "vit_mim_fields",
    "write_atomically",
]
