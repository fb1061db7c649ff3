"""The table of methods: name -> config, model class per task, processor, presets.

Importing ``hf_mae`` registers every row with transformers' Auto classes. A new method adds one ``Method`` row
(and its presets) to ``METHODS``; the shared model test-suite, the CLI and ``create_model`` pick it up from here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
)

from .modeling.colormae import (
    ColorMAEConfig,
    ColorMAEForImageClassification,
    ColorMAEForPreTraining,
    ColorMAEModel,
)
from .modeling.mae import MAEConfig, MAEForImageClassification, MAEForPreTraining, MAEModel
from .modeling.hpm import HPMConfig, HPMForImageClassification, HPMForPreTraining, HPMModel
from .modeling.simmim import SimMIMConfig, SimMIMForImageClassification, SimMIMForPreTraining, SimMIMModel
# -- new methods: one import line each, above this comment --
from .modeling.embeddings import to_2tuple
from .processors.image_processing_mae import MAEImageProcessor

# task name (as in create_model and the CLI) -> the Auto class that loads it
AUTO_CLASSES = {
    "base": AutoModel,
    "pretraining": AutoModelForPreTraining,
    "image-classification": AutoModelForImageClassification,
}


def image_processor_for(processor_class) -> Callable:
    """A processor factory that sizes an image processor to the config's ``image_size``."""

    def build(config):
        height, width = to_2tuple(config.image_size)
        return processor_class(size={"height": height, "width": width})

    return build


@dataclass
class Method:
    name: str
    paper: str
    config_class: type
    model_classes: dict  # task -> PreTrainedModel subclass
    processor_class: type
    make_processor: Callable  # config -> processor
    presets: dict = field(default_factory=dict)  # preset name -> config kwargs
    modality: str = "image"
    # "token-drop": the encoder sees only the kept tokens, ``noise`` is per token (MAE);
    # "mask-token": the encoder sees every token, hidden ones as a mask token, ``noise`` is per mask cell (SimMIM)
    masking: str = "token-drop"


# CPU-sized ViT for tests and the quick start: 32x32 images, an 8x8 grid of 4x4 patches, 128-d x 4 / 64-d x 2
_TINY = dict(
    image_size=32, patch_size=4, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
    decoder_hidden_size=64, decoder_num_hidden_layers=2, decoder_num_attention_heads=4, decoder_intermediate_size=256,
)
_VIT = {  # encoder sizes of the paper's ViTs
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "huge": dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, intermediate_size=5120),
}

METHODS = {
    "mae": Method(
        name="mae",
        paper="Masked Autoencoders Are Scalable Vision Learners (He et al., 2021), arXiv:2111.06377",
        config_class=MAEConfig,
        model_classes={
            "base": MAEModel,
            "pretraining": MAEForPreTraining,
            "image-classification": MAEForImageClassification,
        },
        processor_class=MAEImageProcessor,
        make_processor=image_processor_for(MAEImageProcessor),
        presets={
            "mae-tiny": dict(_TINY),
            "mae-vit-base-patch16": dict(patch_size=16, **_VIT["base"]),
            "mae-vit-large-patch16": dict(patch_size=16, **_VIT["large"]),
            "mae-vit-huge-patch14": dict(patch_size=14, **_VIT["huge"]),
        },
    ),
    "colormae": Method(
        name="colormae",
        paper=(
            "ColorMAE: Exploring data-independent masking strategies in Masked AutoEncoders "
            "(Hinojosa et al., ECCV 2024), arXiv:2407.13036"
        ),
        config_class=ColorMAEConfig,
        model_classes={
            "base": ColorMAEModel,
            "pretraining": ColorMAEForPreTraining,
            "image-classification": ColorMAEForImageClassification,
        },
        processor_class=MAEImageProcessor,
        make_processor=image_processor_for(MAEImageProcessor),
        presets={
            # mae-tiny's sizes; green noise is the default colour
            "colormae-tiny": dict(_TINY),
            # the paper's ViT-B/16, r=0.75, green noise
            "colormae-vit-base-patch16": dict(patch_size=16, mask_ratio=0.75, noise_color="green", **_VIT["base"]),
        },
    ),
    "hpm": Method(
        name="hpm",
        paper="Hard Patches Mining for Masked Image Modeling (Wang et al., CVPR 2023), arXiv:2304.05919",
        config_class=HPMConfig,
        model_classes={
            "base": HPMModel,
            "pretraining": HPMForPreTraining,
            "image-classification": HPMForImageClassification,
        },
        processor_class=MAEImageProcessor,
        make_processor=image_processor_for(MAEImageProcessor),
        presets={
            # mae-tiny's sizes; the curriculum spans 1000 forwards and the EMA is faster than the paper's
            # (0.99 -> 0.999), since tiny runs last a few hundred steps; set total_steps to your run's length
            "hpm-tiny": dict(_TINY, total_steps=1000, ema_decay=0.99, ema_decay_end=0.999),
            "hpm-vit-base-patch16": dict(patch_size=16, **_VIT["base"]),
        },
    ),
    "simmim": Method(
        name="simmim",
        paper="SimMIM: a Simple Framework for Masked Image Modeling (Xie et al., CVPR 2022), arXiv:2111.09886",
        config_class=SimMIMConfig,
        model_classes={
            "base": SimMIMModel,
            "pretraining": SimMIMForPreTraining,
            "image-classification": SimMIMForImageClassification,
        },
        processor_class=MAEImageProcessor,
        make_processor=image_processor_for(MAEImageProcessor),
        presets={
            # mae-tiny's encoder; 8-px mask cells (2x2 patches) on 32-px images, as 32-px cells on 16-px patches
            "simmim-tiny": dict(
                {k: v for k, v in _TINY.items() if not k.startswith("decoder_")}, mask_patch_size=8
            ),
            # the paper's ViT-B/16 pre-training: 192 px, r=0.6, 32-px mask cells
            "simmim-vit-base-patch16": dict(
                image_size=192, patch_size=16, mask_ratio=0.6, mask_patch_size=32, **_VIT["base"]
            ),
        },
        masking="mask-token",
    ),
    # -- new methods: one Method row each, above this comment --
}

PRESETS = {preset: method for method in METHODS.values() for preset in method.presets}


def list_models() -> list[str]:
    """Names of every preset, e.g. ``["mae-tiny", "mae-vit-base-patch16", ...]``."""
    return sorted(PRESETS)


def get_method(preset: str) -> Method:
    if preset not in PRESETS:
        raise ValueError(f"unknown model {preset!r}; available presets: {', '.join(list_models())}")
    return PRESETS[preset]


def create_config(name: str, **config_overrides):
    """The config of preset ``name`` with ``config_overrides`` applied (unknown keys raise a ValueError)."""
    method = get_method(name)
    kwargs = {**method.presets[name], **config_overrides}
    known = set(method.config_class.__dataclass_fields__) | {"num_labels"}  # num_labels is an init-only kwarg
    unknown = sorted(set(config_overrides) - known)
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown} for {method.config_class.__name__}")
    return method.config_class(**kwargs)


def create_model(name: str, task: str = "pretraining", **config_overrides):
    """A randomly initialised model of preset ``name`` for ``task`` ("pretraining", "base", "image-classification")."""
    method = get_method(name)
    if task not in method.model_classes:
        raise ValueError(f"task {task!r} is not available for {name!r}; choose one of {sorted(method.model_classes)}")
    return method.model_classes[task](create_config(name, **config_overrides))


def create_processor(name: str, **config_overrides):
    """The processor matching preset ``name`` (e.g. an image processor sized to its ``image_size``)."""
    method = get_method(name)
    return method.make_processor(create_config(name, **config_overrides))


def processor_for_config(config):
    """The default processor of any registered config (used when a run folder has none)."""
    for method in METHODS.values():  # the exact class: ColorMAEConfig is also an MAEConfig
        if type(config) is method.config_class:
            return method.make_processor(config)
    raise ValueError(f"no hf-mae method uses {type(config).__name__}")


def _register(method: Method) -> None:
    config_class = method.config_class
    if CONFIG_MAPPING._extra_content.get(config_class.model_type) is config_class:
        return  # already registered in this process (e.g. after importlib.reload)
    # no exist_ok: registering over a transformers built-in must fail loudly, never shadow it
    AutoConfig.register(config_class.model_type, config_class)
    for task, model_class in method.model_classes.items():
        AUTO_CLASSES[task].register(config_class, model_class)
    if method.modality == "image":
        AutoImageProcessor.register(config_class, image_processor_classes={"pil": method.processor_class})


def register_all() -> None:
    for method in METHODS.values():
        _register(method)


def copy_config(config):
    """A deep copy: transformers' ``_from_config`` keeps and mutates the config object it is given."""
    return copy.deepcopy(config)
