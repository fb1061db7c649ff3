"""Checkpoints saved by older hf-mae code keep loading, with the same outputs.

tests/fixtures/legacy/<method>/ holds one small pre-training checkpoint per method, saved before the Foundation II
refactor by tests/fixtures/make_legacy_checkpoints.py, with fixed inputs and the encoder features that code gave.
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForPreTraining

import hf_mae  # noqa: F401  (registers the model types)
from hf_mae.registry import METHODS

LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy"


def test_every_method_has_a_legacy_checkpoint():
    assert sorted(p.name for p in LEGACY.iterdir() if p.is_dir()) == sorted(METHODS)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_legacy_checkpoint_loads_with_identical_features(name):
    folder = LEGACY / name
    model, info = AutoModelForPreTraining.from_pretrained(folder, output_loading_info=True)
    assert type(model) is METHODS[name].model_classes["pretraining"]
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info

    expected = load_file(folder / "expected.safetensors")
    inputs = {key.removeprefix("input."): value for key, value in expected.items() if key.startswith("input.")}
    base = AutoModel.from_pretrained(folder).eval()
    assert type(base) is METHODS[name].model_classes["base"]
    with torch.no_grad():
        # features: nothing masked, tokens in order (text base models never mask)
        kwargs = {} if name == "graphmae" or METHODS[name].modality == "text" else {"mask_ratio": 0.0}
        features = base(**inputs, **kwargs).last_hidden_state
    torch.testing.assert_close(features, expected["base.last_hidden_state"], rtol=0, atol=1e-5)
