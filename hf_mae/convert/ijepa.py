"""FORMAT ijepa: transformers ``IJepaModel`` <-> hf-mae I-JEPA (``IJEPAModel``, or ``IJEPAForPreTraining`` to start
pre-training from those weights).

The two encoders are the same ViT without cls token: transformers keeps separate q/k/v projections (fused here into
one ``qkv``) and learned position embeddings (a parameter there, the fixed table buffer here; copied as stored).
IJepaConfig has one int for image and patch size and no LayerScale; ``drop_path_rate`` and the masking / predictor
fields act only in pre-training and are not kept on the way out. An ``IJepaModel`` built with a pooler
(``add_pooling_layer=True``) has no hf-mae counterpart: the pooler is dropped with a warning.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

from ..modeling.ijepa import HfIJEPAConfig, IJEPAForPreTraining, IJEPAModel
from .common import (
    Format,
    build_exactly,
    check_vit_blocks,
    fuse_qkv,
    load_architecture,
    one_int_sizes,
    read_transformers_folder,
    rename_all,
    save_vit_folder,
    shared_config_fields,
    split_qkv,
    step,
    write_atomically,
)
from .layouts import _BLOCK_NAMES

# (hf-mae IJEPAModel name, transformers IJepaModel name); blocks inside as ViTMAE's (layouts._BLOCK_NAMES)
_NAMES = (
    ("embeddings.position_embeddings", "embeddings.position_embeddings"),
    ("embeddings.patch_embeddings.projection", "embeddings.patch_embeddings.projection"),
    ("layers.#", "layers.#"),
    ("layernorm", "layernorm"),
)
_BLOCKS = tuple((ours, theirs) for ours, theirs, _ in _BLOCK_NAMES)


def ijepa_fields() -> tuple[tuple[str, str], ...]:
    """(HfIJEPAConfig field, IJepaConfig field) pairs with the same meaning: every field both classes declare."""
    from transformers import IJepaConfig

    return shared_config_fields(HfIJEPAConfig, IJepaConfig)


def ijepa_config_from_transformers(ijepa_config, config_class=HfIJEPAConfig, **overrides) -> HfIJEPAConfig:
    """An hf-mae I-JEPA config with every field of an ``IJepaConfig`` (its layer_norm_eps, 1e-12 by default,
    included); ``overrides`` set the pre-training fields (predictor sizes, masking, EMA)."""
    return config_class(**{ours: getattr(ijepa_config, theirs) for ours, theirs in ijepa_fields()}, **overrides)


def transformers_config_from_ijepa(config: HfIJEPAConfig):
    """IJepaConfig of an hf-mae I-JEPA config; ValueError for what IJepa cannot express."""
    from transformers import IJepaConfig

    kwargs = one_int_sizes({theirs: getattr(config, ours) for ours, theirs in ijepa_fields()}, "ijepa")
    check_vit_blocks(_NoLayerScale(config), "ijepa", {"drop_path_rate": 0.0})
    return IJepaConfig(**kwargs)


class _NoLayerScale:
    """An I-JEPA config seen by ``check_vit_blocks`` (which reads ``layer_scale_init_value``; I-JEPA has none)."""

    def __init__(self, config):
        self.config = config
        self.layer_scale_init_value = 0.0

    def __getattr__(self, name):
        return getattr(self.config, name)


def _load_ijepa(model_or_name):
    from transformers import IJepaModel

    if isinstance(model_or_name, IJepaModel):
        return model_or_name
    if isinstance(model_or_name, (str, Path)):
        step("read SRC")
        return IJepaModel.from_pretrained(model_or_name).eval()
    raise TypeError(f"model must be a transformers IJepaModel or its Hub id / folder, got {type(model_or_name).__name__}")


def ijepa_state_dict(ijepa_model) -> dict:
    """The state dict of a transformers ``IJepaModel`` under hf-mae ``IJEPAModel`` names (q/k/v fused); ValueError
    for weights without a counterpart (a pooler is dropped with a warning)."""
    state = {k: v for k, v in ijepa_model.state_dict().items() if not k.startswith("pooler.")}
    if len(state) < len(ijepa_model.state_dict()):
        warnings.warn("the IJepaModel's pooler has no hf-mae counterpart (I-JEPA pools by the mean): dropped", stacklevel=3)
    renamed, unknown = rename_all(fuse_qkv(state), 1, 0, _NAMES, _BLOCKS)
    if unknown:
        raise ValueError(f"{len(unknown)} weight(s) of the IJepaModel have no hf-mae counterpart: {unknown}")
    return renamed


def convert_ijepa(model_or_name, pretraining: bool = False, config_class=HfIJEPAConfig, **config_overrides):
    """transformers ``IJepaModel`` (an instance, a Hub id or a folder) -> hf-mae ``IJEPAModel`` with the same weights
    and ``last_hidden_state``. ``pretraining=True``: an ``IJEPAForPreTraining`` whose context and target encoders
    both hold those weights (its predictor freshly initialised), to continue pre-training from them.
    ``config_class`` (e.g. ``DMTJEPAConfig``) and ``config_overrides`` (predictor sizes, masking, EMA fields) shape
    the hf-mae config; the model classes then follow the config's (``DMTJEPAModel`` / ``DMTJEPAForPreTraining``)."""
    from ..registry import method_for_config

    source = _load_ijepa(model_or_name)
    config = ijepa_config_from_transformers(source.config, config_class, **config_overrides)
    state = ijepa_state_dict(source)
    classes = method_for_config(config).model_classes
    encoder = build_exactly(classes["base"], config, state, "the IJepaModel")
    if not pretraining:
        return encoder
    model = classes["pretraining"](config).to(encoder.layernorm.weight.dtype)
    model.ijepa.load_state_dict(encoder.state_dict())
    # the EMA copies parameters only: the position table (a buffer, learned in IJepaModel) is copied by hand
    model.teacher.encoder.load_state_dict(encoder.state_dict())
    return model.eval()


def convert_to_ijepa(model, encoder: str = "context"):
    """hf-mae ``IJEPAModel`` (or a pre-training model: its ``"context"`` encoder, or its ``"target"`` encoder, the
    one the paper evaluates) -> transformers ``IJepaModel`` with the same weights and outputs."""
    from transformers import IJepaModel

    if isinstance(model, IJEPAForPreTraining):
        if encoder not in ("context", "target"):
            raise ValueError(f"encoder must be 'context' or 'target', got {encoder!r}")
        model = model.ijepa if encoder == "context" else model.target_encoder_model()
    if not isinstance(model, IJEPAModel):
        raise TypeError(f"model must be an IJEPAModel or IJEPAForPreTraining (or DMT-JEPA's), got {type(model).__name__}")
    config = transformers_config_from_ijepa(model.config)
    renamed, unknown = rename_all(model.state_dict(), 0, 1, _NAMES, _BLOCKS)
    if unknown:
        raise ValueError(f"{len(unknown)} weight(s) of the hf-mae model have no IJepaModel counterpart: {unknown}")
    return build_exactly(IJepaModel, config, split_qkv(renamed), "the hf-mae model")


def convert_ijepa_folder(src, dst, overwrite: bool = False) -> Path:
    """A transformers IJepaModel folder -> an hf-mae IJEPAForPreTraining folder (+ processor json): both encoders
    hold the weights, the predictor is new. ``AutoModel`` on it gives the encoder back."""
    from transformers import IJepaModel

    convert = functools.partial(convert_ijepa, pretraining=True)
    return read_transformers_folder(IJepaModel, "ijepa", convert, src, dst, overwrite)


def convert_to_ijepa_folder(src, dst, overwrite: bool = False) -> Path:
    """An hf-mae I-JEPA folder (IJEPAModel or IJEPAForPreTraining: its context encoder) -> a transformers IJepaModel
    folder (+ ViTImageProcessor json)."""
    src = Path(src)
    model = load_architecture((IJEPAForPreTraining, IJEPAModel), src, HfIJEPAConfig.model_type, "ijepa")
    return write_atomically(dst, save_vit_folder(convert_to_ijepa(model), model.config, src), overwrite)


FORMAT = Format(
    name="ijepa",
    source="transformers IJepaModel folder, to I-JEPA",
    read=lambda src, dst, args: convert_ijepa_folder(src, dst, args.overwrite),
    write=lambda src, dst, args: convert_to_ijepa_folder(src, dst, args.overwrite),
)
