"""Half precision (issue 12, section 3): every -tiny preset loads with ``dtype=torch.bfloat16`` / ``torch.float16``
from a folder saved in float32, runs with finite outputs, a checkpoint saved in bf16 loads, and eager and sdpa
attention agree in bf16. Fixed float32 tables (sin-cos positions) and float32 geometry (point grouping) are cast
where they meet half-precision activations."""

import pytest
import torch
from transformers.utils import logging as hf_logging

from hf_mae import registry
from hf_mae.modeling.embeddings import to_2tuple

PRESETS = [preset for method in registry.METHODS.values() for preset in method.presets if preset.endswith("-tiny")]
HALF = [torch.bfloat16, torch.float16]
BATCH = 4  # MixedAE mixes groups of 4 images


def example_inputs(preset, config, task, seed=0):
    """Random float32 inputs of the preset's modality (the processors' output shapes)."""
    generator = torch.Generator().manual_seed(seed)
    modality = registry.get_method(preset).modality
    if modality == "image":
        height, width = to_2tuple(config.image_size)
        inputs = {"pixel_values": torch.randn(BATCH, config.num_channels, height, width, generator=generator)}
        classes = registry.get_method(preset).model_classes
        if task == "pretraining" and classes["pretraining"] is classes.get("image-classification"):
            inputs["labels"] = torch.arange(BATCH) % config.num_labels  # R-AMT: the training class is a classifier
        return inputs
    if modality in ("video", "video-text"):
        height, width = to_2tuple(config.image_size)
        shape = (BATCH, config.num_frames, config.num_channels, height, width)
        inputs = {"pixel_values": torch.randn(*shape, generator=generator)}
        if modality == "video-text" and task == "pretraining":  # TGM's captions
            inputs["input_ids"] = torch.randint(1, 300, (BATCH, 6), generator=generator)
            inputs["attention_mask"] = torch.ones(BATCH, 6, dtype=torch.long)
        return inputs
    if modality == "audio":
        return {"input_values": torch.randn(BATCH, config.max_length, config.num_mel_bins, generator=generator)}
    if modality == "embeddings":
        return {
            "inputs_embeds": torch.randn(BATCH, 8, config.embedding_dim, generator=generator),
            "attention_mask": torch.ones(BATCH, 8, dtype=torch.long),
        }
    if modality == "point-cloud":
        return {"point_values": torch.randn(BATCH, config.num_points, 3, generator=generator) * 0.5}
    if modality == "graph":  # two 6-node rings
        ring = torch.arange(6)
        edges = torch.cat([torch.stack([ring, (ring + 1) % 6]), torch.stack([(ring + 1) % 6, ring])], dim=1)
        return {
            "node_features": torch.randn(12, config.num_features, generator=generator),
            "edge_index": torch.cat([edges, edges + 6], dim=1),
            "batch": torch.arange(2).repeat_interleave(6),
        }
    if modality == "text":  # the processor's own output (pre-training: with its masks, seeded)
        processor = registry.create_processor(preset)
        texts = ["half precision for text models", "a second and longer text to pad the first", "third", "four"]
        return dict(processor(texts, return_tensors="pt", for_pretraining=task == "pretraining", generator=generator))
    if modality == "image-text":  # random images and captions through the processor (pre-training: its draws)
        processor = registry.create_processor(preset)
        height, width = to_2tuple(config.image_size)
        images = [torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8).numpy()
                  for _ in range(BATCH)]
        texts = ["half precision for image-text models", "a dog on a red sofa", "third", "four"][:BATCH]
        return dict(processor(images, text=texts, return_tensors="pt", for_pretraining=task == "pretraining",
                              generator=generator))
    raise AssertionError(f"no example inputs for modality {modality!r}")


def run(model, preset, task, seed=0):
    """Forward in the model's dtype under a fixed seed (the same random mask for every call)."""
    dtype = next(model.parameters()).dtype
    inputs = {
        k: v.to(dtype) if v.is_floating_point() else v for k, v in example_inputs(preset, model.config, task).items()
    }
    torch.manual_seed(seed)
    with torch.no_grad():
        return model(**inputs)


def main_output(output, task):
    return output.loss if task == "pretraining" else output[0]


@pytest.fixture(scope="module")
def quiet():
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    yield
    hf_logging.set_verbosity(verbosity)


@pytest.fixture(scope="module")
def float32_folders(tmp_path_factory):
    """preset, task -> a folder saved in float32 (built once per module)."""
    folders = {}

    def folder(preset, task):
        if (preset, task) not in folders:
            path = tmp_path_factory.mktemp(f"{preset}-{task}")
            registry.create_model(preset, task=task).save_pretrained(path)
            folders[preset, task] = path
        return folders[preset, task]

    return folder


@pytest.mark.parametrize("dtype", HALF, ids=["bf16", "fp16"])
@pytest.mark.parametrize("task", ["pretraining", "base"])
@pytest.mark.parametrize("preset", PRESETS)
def test_loads_and_runs_in_half_precision(preset, task, dtype, float32_folders, quiet):
    model_class = registry.get_method(preset).model_classes[task]
    model = model_class.from_pretrained(float32_folders(preset, task), dtype=dtype).eval()
    assert {p.dtype for p in model.parameters() if p.is_floating_point()} == {dtype}
    output = main_output(run(model, preset, task), task)
    assert output.numel() > 0 and torch.isfinite(output.float()).all()


@pytest.mark.parametrize("preset", ["mae-tiny", "audiomae-tiny", "videomae-tiny"])
def test_a_checkpoint_saved_in_bf16_loads(preset, tmp_path, quiet):
    model = registry.create_model(preset).to(torch.bfloat16)
    model.save_pretrained(tmp_path)
    loaded = type(model).from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name].to(tensor.dtype), tensor), name
    expected, got = run(model.eval(), preset, "pretraining"), run(loaded, preset, "pretraining")
    assert torch.isfinite(got.loss) and torch.equal(got.logits, expected.logits)


SDPA_PRESETS = [
    preset
    for preset in PRESETS
    if registry.get_method(preset).model_classes["base"]._supports_sdpa and registry.get_method(preset).modality != "graph"
]


@pytest.mark.parametrize("preset", SDPA_PRESETS)
def test_eager_and_sdpa_agree_in_bf16(preset, float32_folders, quiet):
    """Both attention paths in bf16 stay within bf16 rounding of each other: 3% of the output's scale (bf16 keeps
    8 bits of mantissa, ~0.4% per operation, over a few blocks)."""
    model_class = registry.get_method(preset).model_classes["base"]
    folder = float32_folders(preset, "base")
    outputs = {}
    for implementation in ("eager", "sdpa"):
        model = model_class.from_pretrained(folder, dtype=torch.bfloat16, attn_implementation=implementation).eval()
        outputs[implementation] = run(model, preset, "base")[0].float()
    scale = outputs["eager"].abs().max().item()
    assert scale > 0
    assert (outputs["eager"] - outputs["sdpa"]).abs().max().item() <= 0.03 * scale
