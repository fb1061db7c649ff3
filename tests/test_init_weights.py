"""Every parameter and buffer is initialised by ``_init_weights`` on the module that owns it (issue 12, section 3).

The check is transformers' own (``test_can_init_all_missing_weights`` / ``test_init_weights_can_init_buffers``):
a model built from its config and one loaded with *every* weight missing (``state_dict={}``) must be identical when
each module's init starts from the same seed. A tensor that ``_init_weights`` skips keeps its constructor value in
the first and uninitialised memory in the second.
"""

import math
from unittest.mock import patch

import pytest
import torch
from transformers import PreTrainedModel, set_seed
from transformers.utils import logging as hf_logging

import hf_mae
from hf_mae import registry
from hf_mae.modeling.embeddings import PatchProjection, TubeletProjection

CASES = [
    (preset, task)
    for method in registry.METHODS.values()
    for preset in method.presets
    if preset.endswith("-tiny")
    for task in method.model_classes
]
# LayerScale is off in every tiny preset: cover its gamma too
LAYER_SCALE_CASES = [("mae-tiny", "pretraining"), ("simmim-tiny", "pretraining"), ("mp3-tiny", "pretraining")]

_initialize_weights = PreTrainedModel._initialize_weights


def _seeded_initialize_weights(self, module, is_custom_code=False):
    set_seed(0)
    _initialize_weights(self, module, is_custom_code)


def built_and_loaded(preset, task, **overrides):
    """(model built from the config, the same model loaded with every weight missing), each module seeded alike."""
    config = registry.create_config(preset, **overrides)
    model_class = registry.get_method(preset).model_classes[task]
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the load report lists every key as missing, as intended
    try:
        with patch.object(PreTrainedModel, "_initialize_weights", _seeded_initialize_weights):
            built = model_class(config)
            loaded = model_class.from_pretrained(None, config=config, state_dict={})
    finally:
        hf_logging.set_verbosity(verbosity)
    return built, loaded


def tensors(model) -> dict:
    """Parameters and every buffer (non-persistent ones too)."""
    return {**dict(model.named_buffers()), **model.state_dict()}


def test_cases_cover_every_preset():
    assert len(CASES) >= 58
    assert {preset for preset, _ in CASES} >= {"mae-tiny", "videomae-tiny", "tgm-tiny", "lvmae-tiny", "graphmae-tiny"}


@pytest.mark.parametrize(
    ("preset", "task", "overrides"),
    [(p, t, {}) for p, t in CASES] + [(p, t, {"layer_scale_init_value": 0.1}) for p, t in LAYER_SCALE_CASES],
)
def test_missing_weights_get_the_declared_init(preset, task, overrides):
    built, loaded = built_and_loaded(preset, task, **overrides)
    built_tensors, loaded_tensors = tensors(built), tensors(loaded)
    assert built_tensors.keys() == loaded_tensors.keys()
    meta = [name for name, tensor in loaded_tensors.items() if tensor.device.type == "meta"]
    assert meta == []
    different = [name for name, tensor in built_tensors.items() if not torch.equal(tensor, loaded_tensors[name])]
    assert different == []
    if overrides:
        gammas = [t for name, t in loaded_tensors.items() if name.endswith(".gamma")]
        assert gammas and all(torch.equal(g, torch.full_like(g, 0.1)) for g in gammas)


def xavier_bound(weight: torch.Tensor) -> float:
    return math.sqrt(6.0 / (weight.shape[0] + weight[0].numel()))


@pytest.mark.parametrize(("preset", "task"), [("mae-tiny", "base"), ("videomae-tiny", "base"), ("audiomae-tiny", "base")])
def test_patch_projection_is_xavier_uniform_with_zero_bias(preset, task):
    model = hf_mae.create_model(preset, task=task)
    projections = [m for m in model.modules() if isinstance(m, (PatchProjection, TubeletProjection))]
    assert len(projections) == 1
    weight, bias = projections[0].weight, projections[0].bias
    bound = xavier_bound(weight)
    assert weight.abs().max() <= bound
    # uniform on [-b, b]: standard deviation b / sqrt(3); PyTorch's default conv init would give b' = 1/sqrt(fan_in)
    assert abs(weight.std().item() - bound / math.sqrt(3)) < 0.1 * bound
    assert torch.equal(bias, torch.zeros_like(bias))


def test_classifier_with_another_channel_count_from_a_checkpoint(tmp_path):
    """The reported bug: a 3-channel checkpoint loaded as a 1-channel classifier left the projection as
    uninitialised memory (|w| ~ 1e24) and NaN logits."""
    hf_mae.create_model("mae-tiny").save_pretrained(tmp_path)
    hf_logging.set_verbosity_error()
    try:
        model = hf_mae.MAEForImageClassification.from_pretrained(
            tmp_path, num_channels=1, num_labels=4, ignore_mismatched_sizes=True
        ).eval()
    finally:
        hf_logging.set_verbosity_warning()
    weight = model.mae.embeddings.patch_embeddings.projection.weight
    assert weight.shape[1] == 1
    assert weight.abs().max() <= xavier_bound(weight)
    assert torch.equal(model.mae.embeddings.patch_embeddings.projection.bias, torch.zeros(weight.shape[0]))
    logits = model(torch.randn(2, 1, 32, 32)).logits
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()
