"""FORMAT mae-official: facebookresearch/mae ``.pth`` checkpoints <-> hf-mae MAE folders.

* ``{"model": state_dict}`` of ``models_mae.MaskedAutoencoderViT`` (encoder + decoder) -> ``MAEForPreTraining``;
  an encoder-only one (the released ``mae_pretrain_vit_*.pth``) -> ``MAEModel``; a ``models_vit`` fine-tuned one
  -> ``MAEForImageClassification``, with cls pooling (``norm`` + ``head``) or global pooling (``fc_norm`` +
  ``head``, no ``norm``: tokens are averaged before normalising, as hf-mae's ``classifier_pooling="mean"``).
* Shapes give every size except the head counts (``num_heads``: the paper's 12 for width 768, 16 for 1024 and
  1280; ``decoder_num_heads``: 16). LayerNorm eps is 1e-6 and ``norm_pix_loss`` defaults to True (the released
  models). The official sin-cos table is width-first (its meshgrid swaps h and w); a table in another layout is
  reported (warning, or ValueError with ``strict``) and still copied as stored.
"""

from __future__ import annotations

import argparse
import math
import warnings
from pathlib import Path

import torch

from ..modeling.embeddings import to_2tuple
from ..modeling.mae import MAEConfig, MAEForImageClassification, MAEForPreTraining, MAEModel
from .common import (
    DECODER_NUM_HEADS,
    NUM_HEADS,
    OFFICIAL_GROUP,
    Format,
    Option,
    build_exactly,
    load_architecture,
    load_checkpoint,
    num_blocks,
    save_hf_mae,
    step,
    write_atomically,
)
from .layouts import check_position_tables, rename_keys

# The paper's head count per encoder width (ViT-B/L/H); its decoders use 16 heads.
PAPER_NUM_HEADS = {768: 12, 1024: 16, 1280: 16}
PAPER_DECODER_NUM_HEADS = 16
OFFICIAL_LAYER_NORM_EPS = 1e-6

NORM_PIX_LOSS = Option(
    "--norm-pix-loss",
    dict(action=argparse.BooleanOptionalAction, default=True,
         help="whether the checkpoint was trained on normalised pixels (default: yes, as the released models)"),
    OFFICIAL_GROUP,
    shown="--no-norm-pix-loss",
)  # fmt: skip


def load_mae_official(path) -> dict:
    """The state dict of a facebookresearch/mae ``.pth`` (``{"model": state_dict, ...}`` or a bare state dict).

    Loaded with ``torch.load(weights_only=True)`` (see :func:`load_checkpoint`).
    """
    checkpoint = load_checkpoint(path)
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or "patch_embed.proj.weight" not in state:
        found = sorted(state)[:8] if isinstance(state, dict) else type(checkpoint).__name__
        raise ValueError(
            f"SRC {str(path)!r} is not a facebookresearch/mae checkpoint: expected {{'model': state_dict}} with "
            f"'patch_embed.proj.weight', 'pos_embed', 'blocks.N...'; found {found}"
        )
    return state


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
        num_hidden_layers=num_blocks(state_dict, "blocks"),
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
            decoder_num_hidden_layers=num_blocks(state_dict, "decoder_blocks"),
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
        return build_exactly(MAEForImageClassification, config, state, "the official checkpoint")
    check_position_tables(state, config, "the official checkpoint", strict)
    if "decoder_embed.weight" in state_dict:
        return build_exactly(MAEForPreTraining, config, state, "the official checkpoint")
    encoder = {key.removeprefix("mae."): tensor for key, tensor in state.items()}
    return build_exactly(MAEModel, config, encoder, "the official checkpoint")


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
    if getattr(config, "latent_quantization", False) and not isinstance(model, MAEModel):
        problems.append("latent_quantization=True (the official MAE has no latent quantiser)")
    if problems:
        raise ValueError(f"the model cannot be converted to mae-official: {'; '.join(problems)}")
    if config.layer_norm_eps != OFFICIAL_LAYER_NORM_EPS:
        warnings.warn(f"layer_norm_eps={config.layer_norm_eps}; the official code uses 1e-6", stacklevel=2)
    step("convert")
    state = model.state_dict()
    if isinstance(model, MAEModel):
        state = {f"mae.{key}": tensor for key, tensor in state.items()}
    return rename_keys(state, "mae", "mae-official")


def convert_mae_official_file(src, dst, overwrite: bool = False, **options) -> Path:
    """A facebookresearch/mae ``.pth`` -> an hf-mae folder; ``options`` go to :func:`convert_mae_official`."""
    model = convert_mae_official(load_mae_official(src), **options)
    return write_atomically(dst, save_hf_mae(model, {}), overwrite)


def convert_to_mae_official_file(src, dst, overwrite: bool = False) -> Path:
    """An hf-mae folder (pre-training, encoder or cls-pooled classifier) -> ``{"model": state_dict}`` ``.pth``."""
    classes = (MAEForPreTraining, MAEModel, MAEForImageClassification)
    model = load_architecture(classes, Path(src), MAEConfig.model_type, "mae-official")
    state = to_mae_official_state_dict(model)
    return write_atomically(dst, lambda path: torch.save({"model": state}, path), overwrite)


def _read(src: Path, dst: Path, args) -> Path:
    return convert_mae_official_file(
        src, dst, args.overwrite, num_heads=args.num_heads, decoder_num_heads=args.decoder_num_heads,
        norm_pix_loss=args.norm_pix_loss, strict=args.strict,
    )  # fmt: skip


FORMAT = Format(
    name="mae-official",
    source="facebookresearch/mae .pth",
    read=_read,
    write=lambda src, dst, args: convert_to_mae_official_file(src, dst, args.overwrite),
    options=(NUM_HEADS, DECODER_NUM_HEADS, NORM_PIX_LOSS),
)
