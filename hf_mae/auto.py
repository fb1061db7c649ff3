"""Auto classes for tasks transformers has none for: point-cloud, node and graph classification; and the
registrations with transformers' own Auto classes that need more than ``Auto*.register(config, cls)``.

The Auto classes behave like transformers' own (``from_pretrained``, ``from_config``, ``register``) and hf-mae
registers its models with them, so ``AutoModelForPointCloudClassification.from_pretrained(folder)`` picks the right
class from ``config.json``. A plain-transformers user loading our remote code reaches the same classes through
``AutoModel`` / ``AutoModelForPreTraining`` or the class named in the config's ``auto_map``.
"""

from collections import OrderedDict

from transformers import AutoBackbone
from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping

# the module, not ``transformers.AutoVideoProcessor``: without torchvision the top-level name is a placeholder that
# raises, while the class itself (and the pipeline, which imports it from here) works
from transformers.models.auto.video_processing_auto import AutoVideoProcessor

from .modeling.backbone import backbone_class_for


class AutoModelForPointCloudClassification(_BaseAutoModelClass):
    """Point clouds (batch, num_points, 3) -> class logits."""

    _model_mapping = _LazyAutoMapping(OrderedDict(), OrderedDict())


class AutoModelForNodeClassification(_BaseAutoModelClass):
    """A graph's nodes -> per-node class logits (transductive node classification, e.g. Cora)."""

    _model_mapping = _LazyAutoMapping(OrderedDict(), OrderedDict())


class AutoModelForGraphClassification(_BaseAutoModelClass):
    """A batch of graphs (a disjoint union with a ``batch`` vector) -> per-graph class logits."""

    _model_mapping = _LazyAutoMapping(OrderedDict(), OrderedDict())


def register_video_processor(config_class, processor_class) -> None:
    """Lets ``AutoVideoProcessor`` (and so ``pipeline("video-classification")``) load ``processor_class`` for models
    of ``config_class``. Idempotent.

    transformers asks for the "torchvision" backend unless told otherwise; hf-mae's video processor needs neither
    torchvision nor torchcodec, so it stands for both that and the "pil" backend."""
    AutoVideoProcessor.register(config_class, video_processor_classes={"torchvision": processor_class,
                                                                       "pil": processor_class})


def register_backbone(config_class, base_model_class) -> type | None:
    """Registers with ``AutoBackbone`` the backbone over ``base_model_class`` (a method's "base" model class) for
    ``config_class``, where hf-mae has one (the MAE and SimMIM ViT image encoders and their subclasses; see
    ``hf_mae.modeling.backbone``). Returns the backbone class, or None when the family has none (nothing is
    registered). Idempotent."""
    backbone = backbone_class_for(base_model_class)
    if backbone is not None and AutoBackbone._model_mapping._extra_content.get(config_class) is not backbone:
        AutoBackbone.register(config_class, backbone)
    return backbone


__all__ = ["AutoModelForPointCloudClassification", "AutoModelForNodeClassification", "AutoModelForGraphClassification",
           "register_backbone", "register_video_processor"]
