"""FORMAT pointmae-official: Pang-Yatian/Point-MAE ``.pth`` checkpoints <-> hf-mae Point-MAE folders.

Official checkpoints (``{"base_model": state_dict}``; ``{"model": ...}``, bare and ``module.``-prefixed ones too):
``Point_MAE`` (pre-training: ``MAE_encoder.*``, ``MAE_decoder.*``, ``mask_token``, ``decoder_pos_embed``,
``increase_dim``) -> ``PointMAEForPreTraining``; ``PointTransformer`` (fine-tuned: ``encoder.*``, ``blocks.*``,
``cls_token``, ``cls_pos``, ``pos_embed``, ``norm``, ``cls_head_finetune``) -> ``PointMAEForPointCloudClassification``.
The names map 1:1 (``_POINTMAE_NAMES``), BatchNorm statistics included. Shapes give the widths, depths, qkv bias,
``group_size`` (pre-training head) and ``num_labels``; heads default to the paper's 6, and ``num_points`` /
``num_groups`` (and a fine-tuned model's ``group_size``) come from the config defaults (1024, 64, 32) or arguments.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import torch

from ..modeling.pointmae import PointMAEConfig, PointMAEForPointCloudClassification, PointMAEForPreTraining
from .common import (
    DECODER_NUM_HEADS,
    NUM_HEADS,
    Format,
    Option,
    build_exactly,
    load_architecture,
    load_checkpoint,
    num_blocks,
    rename_all,
    save_hf_mae,
    step,
    write_atomically,
)

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

# The yaml settings that are not weights
_YAML_GROUP = "pointmae-official (the yaml settings that are not weights)"
NUM_POINTS = Option("--num-points", dict(type=int, help="points per cloud, the yaml's npoints (default 1024)"),
                    _YAML_GROUP)  # fmt: skip
NUM_GROUPS = Option("--num-groups", dict(type=int, help="groups per cloud, the yaml's num_group (default 64)"),
                    _YAML_GROUP)  # fmt: skip
GROUP_SIZE = Option(
    "--group-size",
    dict(type=int, help="points per group of a fine-tuned checkpoint (default 32; pre-training ones give it in their head)"),
    _YAML_GROUP,
)  # fmt: skip


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
        num_hidden_layers=num_blocks(state, f"{prefix}blocks.blocks"),
        intermediate_size=shape(f"{prefix}blocks.blocks.0.mlp.fc1.weight")[0],
        qkv_bias=f"{prefix}blocks.blocks.0.attn.qkv.bias" in state,
        hidden_act="gelu",  # nn.GELU: the exact (erf) GELU
        layer_norm_eps=POINTMAE_OFFICIAL_LAYER_NORM_EPS,
    )
    if column == _POINTMAE_PRETRAINING:
        outputs = shape("increase_dim.0.weight")[0]
        if outputs % 3:
            raise ValueError(f"increase_dim.0 has {outputs} outputs, not 3 coordinates x group_size points")
        inferred.update(group_size=outputs // 3, decoder_num_hidden_layers=num_blocks(state, "MAE_decoder.blocks"))
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
    expected, _ = rename_all(model_class(config).state_dict(), 0, column, _POINTMAE_NAMES, _POINTMAE_BLOCK_NAMES)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        official = "Point_MAE" if column == _POINTMAE_PRETRAINING else "PointTransformer"
        raise ValueError(
            f"the checkpoint does not fit the official {official} of its own shapes: missing {missing}, "
            f"unexpected {unexpected}"
        )
    renamed, _ = rename_all(state, column, 0, _POINTMAE_NAMES, _POINTMAE_BLOCK_NAMES)
    return build_exactly(model_class, config, renamed, "the official Point-MAE checkpoint")


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
    step("convert")
    state, unknown = rename_all(model.state_dict(), 0, column, _POINTMAE_NAMES, _POINTMAE_BLOCK_NAMES)
    if unknown:
        raise ValueError(f"{len(unknown)} weight(s) have no counterpart in the official Point-MAE: {unknown}")
    return state


def load_pointmae_official(path) -> dict:
    """The state dict of an official Point-MAE ``.pth`` (``{"base_model": state_dict, ...}``, ``{"model": ...}`` or
    bare; ``module.`` prefixes removed), read with ``torch.load(weights_only=True)``; ValueError if it is none."""
    checkpoint = load_checkpoint(path)
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
    return write_atomically(dst, save_hf_mae(model, {}), overwrite)


def convert_to_pointmae_official_file(src, dst, overwrite: bool = False) -> Path:
    """An hf-mae Point-MAE folder (pre-training or classification) -> ``{"base_model": state_dict}`` ``.pth``, the
    layout the official ``tools/builder.load_model`` and ``PointTransformer.load_model_from_ckpt`` read."""
    classes = tuple(_POINTMAE_CLASSES.values())
    model = load_architecture(classes, Path(src), PointMAEConfig.model_type, "pointmae-official")
    state = to_pointmae_official_state_dict(model)
    return write_atomically(dst, lambda path: torch.save({"base_model": state}, path), overwrite)


def _read(src: Path, dst: Path, args) -> Path:
    settings = {option.dest: getattr(args, option.dest) for option in (NUM_POINTS, NUM_GROUPS, GROUP_SIZE)
                if option.given(args)}  # fmt: skip
    return convert_pointmae_official_file(
        src, dst, args.overwrite, num_heads=args.num_heads, decoder_num_heads=args.decoder_num_heads, **settings
    )


FORMAT = Format(
    name="pointmae-official",
    source="Pang-Yatian/Point-MAE .pth, pre-trained or fine-tuned",
    read=_read,
    write=lambda src, dst, args: convert_to_pointmae_official_file(src, dst, args.overwrite),
    options=(NUM_HEADS, DECODER_NUM_HEADS, NUM_POINTS, NUM_GROUPS, GROUP_SIZE),
)
