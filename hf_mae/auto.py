"""Auto classes for tasks transformers has none for: point-cloud, node and graph classification.

They behave like transformers' own (``from_pretrained``, ``from_config``, ``register``) and hf-mae registers its
models with them, so ``AutoModelForPointCloudClassification.from_pretrained(folder)`` picks the right class from
``config.json``. A plain-transformers user loading our remote code reaches the same classes through ``AutoModel`` /
``AutoModelForPreTraining`` or the class named in the config's ``auto_map``.
"""

from collections import OrderedDict

from transformers.models.auto.auto_factory import _BaseAutoModelClass, _LazyAutoMapping


class AutoModelForPointCloudClassification(_BaseAutoModelClass):
    """Point clouds (batch, num_points, 3) -> class logits."""

    _model_mapping = _LazyAutoMapping(OrderedDict(), OrderedDict())


class AutoModelForNodeClassification(_BaseAutoModelClass):
    """A graph's nodes -> per-node class logits (transductive node classification, e.g. Cora)."""

    _model_mapping = _LazyAutoMapping(OrderedDict(), OrderedDict())


class AutoModelForGraphClassification(_BaseAutoModelClass):
    """A batch of graphs (a disjoint union with a ``batch`` vector) -> per-graph class logits."""

    _model_mapping = _LazyAutoMapping(OrderedDict(), OrderedDict())


__all__ = ["AutoModelForPointCloudClassification", "AutoModelForNodeClassification", "AutoModelForGraphClassification"]
