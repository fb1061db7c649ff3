"""FORMAT videomae: transformers ``VideoMAEForPreTraining`` <-> hf-mae ``VideoMAEForPreTraining``.

transformers keeps separate query/key/value weights (fused into one ``qkv`` here) and the query/value biases as
their own parameters (as hf-mae's); the sinusoid position tables are buffers both sides rebuild from the config.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import torch

from .common import (
    Format,
    build_exactly,
    image_processor_settings,
    load_folder,
    one_int_sizes,
    read_transformers_folder,
    rename_all,
    shared_config_fields,
    write_atomically,
)

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
# Fields with the same meaning under another name (hf-mae name, transformers name)
_RENAMED_FIELDS = (("qkv_bias", "qv_bias"),)
TRANSFORMERS_VIDEOMAE_DECODER_NORM_EPS = 1e-5  # transformers' VideoMAEDecoder.norm is nn.LayerNorm(width)


def videomae_fields() -> tuple[tuple[str, str], ...]:
    """(hf-mae VideoMAE config field, transformers VideoMAEConfig field) pairs with the same meaning: every field
    both classes declare, and qkv_bias as qv_bias."""
    from transformers import VideoMAEConfig as TransformersVideoMAEConfig

    from ..modeling.videomae import HfVideoMAEConfig

    return shared_config_fields(HfVideoMAEConfig, TransformersVideoMAEConfig, _RENAMED_FIELDS)


def _videomae_rename(state_dict: dict, source: int, target: int) -> dict:
    renamed, unknown = rename_all(state_dict, source, target, _VIDEOMAE_NAMES, _VIDEOMAE_BLOCK_NAMES)
    if unknown:
        raise ValueError(f"{len(unknown)} weight(s) have no counterpart in the other VideoMAE layout: {unknown}")
    return renamed


def convert_videomae(hf_model):
    """transformers ``VideoMAEForPreTraining`` -> hf-mae ``VideoMAEForPreTraining``, same weights and outputs."""
    from ..modeling.videomae import HfVideoMAEConfig, VideoMAEForPreTraining

    source = hf_model.config
    if source.use_mean_pooling:
        raise ValueError(
            "the VideoMAE checkpoint has use_mean_pooling=True, so its pre-training encoder has no final LayerNorm; "
            "hf-mae's VideoMAE pre-training encoder (like the official one) always ends in one"
        )
    config = HfVideoMAEConfig(
        **{ours: getattr(source, theirs) for ours, theirs in videomae_fields()},
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
    return build_exactly(VideoMAEForPreTraining, config, state, "the VideoMAE checkpoint")


def convert_to_videomae(model):
    """hf-mae ``VideoMAEForPreTraining`` -> transformers ``VideoMAEForPreTraining``, same weights and outputs."""
    from transformers import VideoMAEConfig as TransformersVideoMAEConfig
    from transformers import VideoMAEForPreTraining as TransformersVideoMAE

    from ..modeling.videomae import VideoMAEForPreTraining

    if not isinstance(model, VideoMAEForPreTraining):
        raise TypeError(f"model must be an hf-mae VideoMAEForPreTraining, got {type(model).__name__}")
    config = model.config
    kwargs = one_int_sizes({theirs: getattr(config, ours) for ours, theirs in videomae_fields()}, "videomae")
    norm_eps = config.layer_norm_eps if config.decoder_norm_eps is None else config.decoder_norm_eps
    if norm_eps != TRANSFORMERS_VIDEOMAE_DECODER_NORM_EPS:
        warnings.warn(
            f"the decoder's last LayerNorm uses eps {norm_eps}; transformers' VideoMAE fixes it at 1e-5, so "
            "decoder outputs will differ slightly",
            stacklevel=2,
        )
    target = TransformersVideoMAEConfig(**kwargs, use_mean_pooling=False)
    state = {key: tensor for key, tensor in model.state_dict().items() if not key.endswith("position_embeddings")}
    state = _videomae_rename(state, 0, 1)
    for key in [key for key in state if key.endswith("attention.attention.qkv.weight")]:
        start = key.removesuffix("qkv.weight")
        for name, part in zip(("query", "key", "value"), state.pop(key).chunk(3, dim=0)):
            state[f"{start}{name}.weight"] = part.clone()
    return build_exactly(TransformersVideoMAE, target, state, "the hf-mae VideoMAE model")


def convert_videomae_folder(src, dst, overwrite: bool = False) -> Path:
    """A transformers VideoMAEForPreTraining folder -> an hf-mae VideoMAEForPreTraining folder (+ processor json)."""
    from transformers import VideoMAEForPreTraining as TransformersVideoMAE

    return read_transformers_folder(TransformersVideoMAE, "videomae", convert_videomae, src, dst, overwrite)


def convert_to_videomae_folder(src, dst, overwrite: bool = False) -> Path:
    """An hf-mae VideoMAEForPreTraining folder -> a transformers VideoMAEForPreTraining folder (+ its image processor
    json, with hf-mae's normalisation or the folder's own)."""
    from transformers import VideoMAEImageProcessorPil

    from ..modeling.videomae import HfVideoMAEConfig, VideoMAEForPreTraining

    src = Path(src)
    model = load_folder(VideoMAEForPreTraining, src, HfVideoMAEConfig.model_type)
    converted = convert_to_videomae(model)
    settings = image_processor_settings(model.config, src)
    size = converted.config.image_size

    def write(path: Path) -> None:
        converted.save_pretrained(path)
        processor = VideoMAEImageProcessorPil(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size}, **settings
        )
        processor.save_pretrained(path)

    return write_atomically(dst, write, overwrite)


FORMAT = Format(
    name="videomae",
    source="transformers VideoMAEForPreTraining folder",
    read=lambda src, dst, args: convert_videomae_folder(src, dst, args.overwrite),
    write=lambda src, dst, args: convert_to_videomae_folder(src, dst, args.overwrite),
)
