"""Frozen features: a base model called plainly (AutoModel, the feature-extraction pipeline) masks nothing, keeps
the tokens in order and gives the same features on every call; pre-training keeps masking at config.mask_ratio."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModel, pipeline

import hf_mae  # noqa: F401  (registers the hf-mae classes with the Auto classes)
from hf_mae.registry import create_model, create_processor

# one per base-model forward: token dropping (MAE), mask token (SimMIM), key masking with a cls pooler (MP3)
IMAGE_PRESETS = ["mae-tiny", "simmim-tiny", "mp3-tiny"]


def images(count=2, size=32):
    generator = np.random.default_rng(0)
    return [Image.fromarray(generator.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(count)]


@pytest.fixture(scope="module", params=IMAGE_PRESETS)
def saved_base_model(request, tmp_path_factory):
    """A base model loaded through AutoModel from a pre-training checkpoint, as a user loads features."""
    folder = tmp_path_factory.mktemp(request.param)
    torch.manual_seed(0)
    create_model(request.param, "pretraining").save_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    return request.param, model, create_processor(request.param)


def test_auto_model_defaults_to_every_token_in_order(saved_base_model):
    preset, model, processor = saved_base_model
    pixel_values = processor(images(), return_tensors="pt")["pixel_values"]
    num_patches = 64  # 32-px images, 4-px patches
    with torch.no_grad():
        first, second = model(pixel_values), model(pixel_values)
        explicit = model(pixel_values, mask_ratio=0.0)
    assert first.last_hidden_state.shape == (2, 1 + num_patches, model.config.hidden_size)
    assert torch.equal(first.last_hidden_state, second.last_hidden_state)
    assert torch.equal(first.last_hidden_state, explicit.last_hidden_state)
    assert torch.equal(first.mask, torch.zeros(2, num_patches))
    # the pooled feature: the mean of the patch tokens, or the cls token where the method's classifier pools it
    tokens = first.last_hidden_state
    pooled = tokens[:, 0] if model.config.classifier_pooling == "cls" else tokens[:, 1:].mean(dim=1)
    assert torch.equal(first.pooler_output, pooled)
    assert (model.config.classifier_pooling == "cls") == (preset == "mp3-tiny")


def test_explicit_mask_ratio_or_noise_still_masks(saved_base_model):
    preset, model, processor = saved_base_model
    pixel_values = processor(images(), return_tensors="pt")["pixel_values"]
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(2, 16 if preset == "simmim-tiny" else 64, generator=generator)  # SimMIM: per mask cell
    with torch.no_grad():
        at_half = model(pixel_values, mask_ratio=0.5)
        with_noise = model(pixel_values, noise=noise)  # noise fixes a mask at config.mask_ratio
    assert at_half.mask.sum(1).tolist() == [32.0, 32.0]
    units = noise.shape[1]  # patches, or SimMIM's cells of 64 // 16 patches
    hidden_units = units - int(units * (1 - model.config.mask_ratio))
    assert with_noise.mask.sum(1).tolist() == [float(hidden_units * 64 // units)] * 2 and hidden_units > 0


@pytest.mark.parametrize("preset", IMAGE_PRESETS)
def test_pre_training_keeps_masking_at_the_config_ratio(preset):
    model = create_model(preset, "pretraining").eval()
    pixel_values = create_processor(preset)(images(), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        mask = model(pixel_values).mask
    hidden = 64 - int(64 * (1 - model.config.mask_ratio))
    if preset == "simmim-tiny":  # whole 2x2 cells of the 16
        hidden = (16 - int(16 * (1 - model.config.mask_ratio))) * 4
    assert mask.sum(1).tolist() == [float(hidden)] * 2 and hidden > 0


def test_pipeline_pool_true_and_false_are_deterministic_and_equal_the_model(saved_base_model):
    _, model, processor = saved_base_model
    inputs = images()
    with torch.no_grad():
        expected = model(processor(inputs, return_tensors="pt")["pixel_values"], mask_ratio=0.0)
    pooled = pipeline("image-feature-extraction", model=model, image_processor=processor, pool=True)
    first, second = pooled(inputs, return_tensors=True), pooled(inputs, return_tensors=True)
    for a, b, expect in zip(first, second, expected.pooler_output):
        assert a.shape == (1, model.config.hidden_size)
        assert torch.equal(a, b)
        torch.testing.assert_close(a[0], expect, rtol=1e-5, atol=1e-6)
    tokens = pipeline("image-feature-extraction", model=model, image_processor=processor)
    first, second = tokens(inputs, return_tensors=True), tokens(inputs, return_tensors=True)
    for a, b, expect in zip(first, second, expected.last_hidden_state):
        assert a.shape == (1, 65, model.config.hidden_size)
        assert torch.equal(a, b)
        torch.testing.assert_close(a[0], expect, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("preset", ["videomae-tiny"])
def test_video_base_model_defaults_to_every_token_with_a_mean_pooler(preset):
    model = create_model(preset, "base").eval()
    clips = torch.randn(2, 8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        first, second, explicit = model(clips), model(clips), model(clips, mask_ratio=0.0)
    assert first.last_hidden_state.shape == (2, 64, model.config.hidden_size)
    assert torch.equal(first.last_hidden_state, second.last_hidden_state)
    assert torch.equal(first.last_hidden_state, explicit.last_hidden_state)
    assert torch.equal(first.mask, torch.zeros(2, 64))
    assert torch.equal(first.pooler_output, first.last_hidden_state.mean(dim=1))  # no cls token
    with torch.no_grad():
        assert model(clips, mask_ratio=0.75).last_hidden_state.shape[1] == 4 * int(16 * 0.25)
