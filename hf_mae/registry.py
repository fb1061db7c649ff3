"""The table of methods, built from the registry rows that live beside each method.

Every ``hf_mae/modeling/<method>.py`` ends with a ``METHOD`` row: a plain dict naming the file's config and model
classes (one per task), its processor by class name, the processor settings and the presets (DESIGN.md, "adding a
method"). This module discovers the rows (each module of ``hf_mae.modeling`` that has one), builds a ``Method`` per
row, ``METHODS``, ``PRESETS`` and the public names of ``hf_mae`` (``PUBLIC_CLASSES``), and ``register_all``
registers every method with transformers' Auto classes. Adding a method edits nothing here.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import pkgutil
from dataclasses import dataclass, field
from typing import Callable

from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForAudioClassification,
    AutoModelForCausalLM,
    AutoModelForMaskedImageModeling,
    AutoModelForPreTraining,
    AutoModelForVideoClassification,
    AutoModelForVisualQuestionAnswering,
    AutoProcessor,
)

from . import modeling, processors
from .modeling.backbone import backbone_class_for
from .training.augmentation import MAE_RECIPE, check_recipe
from .auto import (
    AutoModelForGraphClassification,
    AutoModelForNodeClassification,
    AutoModelForPointCloudClassification,
    register_backbone,
    register_video_processor,
)

# task name (as in create_model, the CLI and a row's model_classes) -> the Auto class that loads it
AUTO_CLASSES = {
    "base": AutoModel,
    "pretraining": AutoModelForPreTraining,
    "masked-image-modeling": AutoModelForMaskedImageModeling,
    "image-classification": AutoModelForImageClassification,
    "video-classification": AutoModelForVideoClassification,
    "audio-classification": AutoModelForAudioClassification,
    "point-cloud-classification": AutoModelForPointCloudClassification,
    "node-classification": AutoModelForNodeClassification,
    "graph-classification": AutoModelForGraphClassification,
    "causal-lm": AutoModelForCausalLM,
    "visual-question-answering": AutoModelForVisualQuestionAnswering,  # M3AE's VQA head on the fused pair
}

# modality -> the Auto class its processor is registered with (``_register``) and loads back with
PROCESSOR_AUTO_CLASSES = {
    "image": AutoImageProcessor, "video": AutoImageProcessor, "video-text": AutoProcessor,
    "embeddings": AutoFeatureExtractor, "audio": AutoFeatureExtractor, "point-cloud": AutoFeatureExtractor,
    "graph": AutoFeatureExtractor,
    "text": AutoProcessor,  # a tokenizer plus the method's masks (modeling/text.py's TextProcessor)
    "image-text": AutoProcessor,  # an image processor + a tokenizer + the method's draws (M3AE's M3AEProcessor)
}


@dataclass
class Method:
    name: str
    paper: str
    config_class: type
    model_classes: dict  # task -> PreTrainedModel subclass
    processor_class: type
    make_processor: Callable  # config -> processor: ``processor_class.from_model_config(config, **processor_settings)``
    presets: dict = field(default_factory=dict)  # preset name -> config kwargs
    modality: str = "image"  # image | video | video-text | audio | embeddings | point-cloud | graph | text | image-text
    # the recipe's absolute pre-training lr, used by ``hf-mae pretrain`` when neither --lr nor --base-lr is given
    # (None: MAE's base_lr * batch / 256; a single graph per step makes batch scaling meaningless)
    pretrain_lr: float | None = None
    # otherwise the paper's base lr (per 256 images) and its batch, which ``optim.small_batch_lr`` scales from:
    # linearly above that batch, by the square root below it
    pretrain_base_lr: float = 1.5e-4
    pretrain_batch: int = 4096
    pretrain_betas: tuple[float, float] = (0.9, 0.95)  # AdamW's betas in the recipe (MAE's by default)
    # AdamW's weight decay in the recipe, what ``hf-mae pretrain`` uses without --weight-decay (MAE's 0.05; QLAE's
    # "unusually high" 0.1 is part of the method)
    pretrain_weight_decay: float = 0.05
    # the recipe's pre-training augmentation (``training/augmentation.py``): a RandomResizedCrop + flip dict, "views"
    # (the processor draws its own views) or None; a row that says nothing gets MAE's recipe for images, else None
    pretrain_augmentation: dict | str | None = None
    processor_settings: dict = field(default_factory=dict)  # fixed processor kwargs (e.g. CropMAE's view mode)
    exports: dict = field(default_factory=dict)  # further names of the method's module exported by ``hf_mae``
    module: str = ""  # the modeling module that holds the row


# the keys of a ``METHOD`` row: required, and optional with their default
REQUIRED_ROW_KEYS = ("name", "paper", "config_class", "model_classes", "processor", "presets")
OPTIONAL_ROW_KEYS = {
    "processor_settings": {}, "modality": "image", "pretrain_lr": None, "exports": [],
    "pretrain_base_lr": 1.5e-4, "pretrain_batch": 4096, "pretrain_betas": (0.9, 0.95), "pretrain_weight_decay": 0.05,
    "pretrain_augmentation": "default",  # MAE's recipe for image rows, None for the others (method_from_row)
}


def _classes_defined_in(module) -> dict:
    return {
        name: obj for name, obj in vars(module).items() if inspect.isclass(obj) and obj.__module__ == module.__name__
    }


def _modules_of(package) -> list:
    """Every module of ``package`` (imported), in name order."""
    names = [info.name for info in pkgutil.iter_modules(package.__path__)]
    return [importlib.import_module(f"{package.__name__}.{name}") for name in names]


@functools.cache
def processor_classes() -> dict:
    """Class name -> class, for every class defined in ``hf_mae.processors``: what a row's ``processor`` names."""
    found = {}
    for module in _modules_of(processors):
        found.update(_classes_defined_in(module))
    return found


def method_from_row(row, module) -> Method:
    """The ``Method`` of ``module``'s ``METHOD`` row; a ValueError naming the module and the key for a bad row."""
    where = f"the METHOD row of {module.__name__}"
    if not isinstance(row, dict):
        raise TypeError(f"{where} must be a dict, got {type(row).__name__}")
    missing = [key for key in REQUIRED_ROW_KEYS if key not in row]
    unknown = sorted(set(row) - set(REQUIRED_ROW_KEYS) - set(OPTIONAL_ROW_KEYS))
    if missing or unknown:
        problems = ([f"lacks {missing}"] if missing else []) + ([f"has unknown keys {unknown}"] if unknown else [])
        raise ValueError(
            f"{where} {' and '.join(problems)}; required: {list(REQUIRED_ROW_KEYS)}, "
            f"optional: {sorted(OPTIONAL_ROW_KEYS)}"
        )
    row = {**copy.deepcopy(OPTIONAL_ROW_KEYS), **row}
    bad_tasks = sorted(set(row["model_classes"]) - set(AUTO_CLASSES))
    if bad_tasks:
        raise ValueError(f"{where}: model_classes has unknown task(s) {bad_tasks}; allowed: {sorted(AUTO_CLASSES)}")
    if row["modality"] not in PROCESSOR_AUTO_CLASSES:
        raise ValueError(f"{where}: modality must be one of {sorted(PROCESSOR_AUTO_CLASSES)}, got {row['modality']!r}")
    # the processor lives in hf_mae.processors, or (a processor only its method uses) in the modeling file itself
    processor_class = processor_classes().get(row["processor"]) or getattr(module, row["processor"], None)
    if not inspect.isclass(processor_class) or not hasattr(processor_class, "from_model_config"):
        raise ValueError(
            f"{where}: processor {row['processor']!r} must name a class with a from_model_config classmethod in "
            f"hf_mae.processors or in {module.__name__}"
        )
    missing_exports = [name for name in row["exports"] if not hasattr(module, name)]
    if missing_exports:
        raise ValueError(f"{where}: exports names {missing_exports}, which {module.__name__} does not define")
    settings = row.pop("processor_settings")
    augmentation = row["pretrain_augmentation"]
    if augmentation == "default":
        augmentation = dict(MAE_RECIPE) if row["modality"] == "image" else None
    augmentation = check_recipe(augmentation, f"{where}: pretrain_augmentation")
    for key, kind in (("pretrain_base_lr", (int, float)), ("pretrain_batch", int)):
        if not (isinstance(row[key], kind) and not isinstance(row[key], bool) and row[key] > 0):
            raise ValueError(f"{where}: {key} must be a positive number, got {row[key]!r}")
    betas = row["pretrain_betas"]
    if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(0 <= b < 1 for b in betas)):
        raise ValueError(f"{where}: pretrain_betas must be two numbers in [0, 1), got {betas!r}")
    decay = row["pretrain_weight_decay"]
    if isinstance(decay, bool) or not isinstance(decay, (int, float)) or decay < 0:
        raise ValueError(f"{where}: pretrain_weight_decay must be a number >= 0, got {decay!r}")
    return Method(
        name=row["name"], paper=row["paper"], config_class=row["config_class"], model_classes=row["model_classes"],
        processor_class=processor_class,
        make_processor=functools.partial(processor_class.from_model_config, **settings),
        presets=row["presets"], modality=row["modality"], pretrain_lr=row["pretrain_lr"],
        pretrain_augmentation=augmentation, pretrain_base_lr=float(row["pretrain_base_lr"]),
        pretrain_batch=row["pretrain_batch"], pretrain_betas=tuple(float(b) for b in betas),
        pretrain_weight_decay=float(decay),
        processor_settings=settings, exports={name: getattr(module, name) for name in row["exports"]},
        module=module.__name__,
    )


def discover_methods(package=modeling) -> dict:
    """Method name -> ``Method``, one per module of ``package`` that defines a ``METHOD`` row (in module-name order).

    Two rows with the same method or preset name raise a ValueError naming both modules."""
    methods, preset_owner = {}, {}
    for module in _modules_of(package):
        if not hasattr(module, "METHOD"):
            continue  # building blocks: layers, masking, heads, ...
        method = method_from_row(module.METHOD, module)
        if method.name in methods:
            first = methods[method.name].module
            raise ValueError(f"method name {method.name!r} is in both {first} and {module.__name__}")
        for preset in method.presets:
            if preset in preset_owner:
                raise ValueError(f"preset {preset!r} is in both {preset_owner[preset]} and {module.__name__}")
            preset_owner[preset] = module.__name__
        methods[method.name] = method
    return methods


def public_classes(methods: dict) -> dict:
    """Name -> class for every class the rows name (config, models, processor, exports): ``hf_mae``'s names."""
    names = {}
    for method in methods.values():
        backbone = backbone_class_for(method.model_classes["base"])  # <Method>Backbone, where the family has one
        classes = (method.config_class, *method.model_classes.values(), method.processor_class)
        classes += (backbone,) if backbone is not None else ()
        for name, cls in [*((cls.__name__, cls) for cls in classes), *method.exports.items()]:
            if names.setdefault(name, cls) is not cls:
                raise ValueError(f"two classes are named {name}: {names[name]} and {cls}")
    return names


METHODS = discover_methods()
PRESETS = {preset: method for method in METHODS.values() for preset in method.presets}
METHOD_BY_CONFIG = {method.config_class: method for method in METHODS.values()}
PUBLIC_CLASSES = public_classes(METHODS)


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


def method_for_config(config) -> Method:
    """The registry row of a config (by exact class: ColorMAEConfig is also an MAEConfig)."""
    if type(config) not in METHOD_BY_CONFIG:
        raise ValueError(f"no hf-mae method uses {type(config).__name__}")
    return METHOD_BY_CONFIG[type(config)]


def processor_auto_class(config):
    """The Auto class that loads the processor saved beside a model of ``config`` (AutoImageProcessor for a config
    hf-mae does not know: a transformers image model)."""
    method = METHOD_BY_CONFIG.get(type(config))
    return AutoImageProcessor if method is None else PROCESSOR_AUTO_CLASSES[method.modality]


def processor_for_config(config):
    """The default processor of any registered config (used when a run folder has none)."""
    return method_for_config(config).make_processor(config)


def _register(method: Method) -> None:
    config_class = method.config_class
    if CONFIG_MAPPING._extra_content.get(config_class.model_type) is config_class:
        return  # already registered in this process (e.g. after importlib.reload)
    # no exist_ok: registering over a transformers built-in must fail loudly, never shadow it
    AutoConfig.register(config_class.model_type, config_class)
    for task, model_class in method.model_classes.items():
        AUTO_CLASSES[task].register(config_class, model_class)
    auto_class = PROCESSOR_AUTO_CLASSES[method.modality]
    if auto_class is AutoImageProcessor:  # the video processor is a Pillow-backed image processor too
        AutoImageProcessor.register(config_class, image_processor_classes={"pil": method.processor_class})
    else:  # TGM's ProcessorMixin (video processor + caption tokenizer); feature extractors for embedding sequences
        # (LV-MAE), waveforms -> filterbanks, clouds -> normalised points, graphs -> tensors
        auto_class.register(config_class, method.processor_class)
    if method.modality == "video":  # pipeline("video-classification") asks AutoVideoProcessor
        register_video_processor(config_class, method.processor_class)
    register_backbone(config_class, method.model_classes["base"])  # ViT image encoders only; others: a no-op


def register_all() -> None:
    for method in METHODS.values():
        _register(method)


def copy_config(config):
    """A deep copy: transformers' ``_from_config`` keeps and mutates the config object it is given."""
    return copy.deepcopy(config)
