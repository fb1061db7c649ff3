"""torch.export and torch.compile(fullgraph=True) of the models.

A traced graph cannot read data: the mask checks on ``bool_masked_pos`` / ``noise`` must become runtime assertions
there (masking.check_tensor_condition), and the exported program must give eager's outputs.
"""

import pytest
import torch

import hf_mae
from hf_mae.registry import PRESETS, create_model

BATCH = 2
UNMASKED = {"qlae-tiny", "ramt-tiny"}  # no per-sample mask output: QLAE (an autoencoder with a quantised latent),
# R-AMT (its masks are on the weights)
TINY_IMAGE_AND_VIDEO = [
    name
    for name in hf_mae.list_models()
    if name.endswith("-tiny") and PRESETS[name].modality in ("image", "video", "video-text")
]


def pixel_values_for(config, generator):
    if PRESETS_BY_CONFIG[type(config)] == "image":
        return torch.randn(BATCH, config.num_channels, config.image_size, config.image_size, generator=generator)
    return torch.randn(
        BATCH, config.num_frames, config.num_channels, config.image_size, config.image_size, generator=generator
    )


PRESETS_BY_CONFIG = {PRESETS[name].config_class: PRESETS[name].modality for name in TINY_IMAGE_AND_VIDEO}


def assert_outputs_equal(exported, eager, fields):
    for field in fields:
        torch.testing.assert_close(exported[field], eager[field], rtol=1e-5, atol=1e-5, msg=field)


def export_and_compare(model, args, kwargs, fields):
    program = torch.export.export(model, args, kwargs)
    with torch.no_grad():
        assert_outputs_equal(program.module()(*args, **kwargs), model(*args, **kwargs), fields)
    return program


@pytest.mark.parametrize("preset", TINY_IMAGE_AND_VIDEO)
def test_base_models_export_with_their_feature_default(preset):
    """The base model's default (nothing masked) exports; the program's features equal eager's within 1e-5."""
    model = create_model(preset, "base").eval()
    pixel_values = pixel_values_for(model.config, torch.Generator().manual_seed(0))
    fields = ["last_hidden_state", "pooler_output"] + ([] if preset in UNMASKED else ["mask"])
    export_and_compare(model, (pixel_values,), {}, fields)


def test_mae_pretraining_exports_with_noise():
    model = create_model("mae-tiny", "pretraining").eval()
    generator = torch.Generator().manual_seed(0)
    pixel_values = pixel_values_for(model.config, generator)
    noise = torch.rand(BATCH, 64, generator=generator)
    export_and_compare(model, (pixel_values,), {"noise": noise}, ["loss", "logits", "mask", "ids_restore"])


def test_simmim_pretraining_exports_with_bool_masked_pos_and_with_noise():
    model = create_model("simmim-tiny", "pretraining").eval()
    generator = torch.Generator().manual_seed(0)
    pixel_values = pixel_values_for(model.config, generator)
    bool_masked_pos = torch.rand(BATCH, 64, generator=generator) < 0.5  # any pattern: SimMIM keeps every token
    export_and_compare(model, (pixel_values,), {"bool_masked_pos": bool_masked_pos}, ["loss", "logits", "mask"])
    noise = torch.rand(BATCH, 16, generator=generator)  # per 2x2-patch mask cell: mask_from_bool runs in the graph
    export_and_compare(model, (pixel_values,), {"noise": noise}, ["loss", "logits", "mask"])


def test_videomae_pretraining_exports_with_bool_masked_pos_and_runs_other_masks_of_the_same_count():
    model = create_model("videomae-tiny", "pretraining").eval()
    generator = torch.Generator().manual_seed(0)
    clips = pixel_values_for(model.config, generator)
    bool_masked_pos = torch.zeros(BATCH, 64, dtype=torch.bool)
    bool_masked_pos[:, 16:] = True  # 48 of 64 hidden
    program = export_and_compare(model, (clips,), {"bool_masked_pos": bool_masked_pos}, ["loss", "logits", "mask"])
    # the kept count is symbolic in the program: another mask, even of another count, runs and matches eager
    other = torch.rand(BATCH, 64, generator=generator).argsort(1) < 40  # 40 hidden, at random places
    with torch.no_grad():
        assert_outputs_equal(
            program.module()(clips, bool_masked_pos=other), model(clips, bool_masked_pos=other), ["loss", "logits"]
        )
    # the eager check (every clip hides the same count) is a runtime assertion of the program
    uneven = bool_masked_pos.clone()
    uneven[0, 0] = True
    with pytest.raises(ValueError, match="same number of tokens"):
        model(clips, bool_masked_pos=uneven)
    with pytest.raises(RuntimeError, match="Runtime assertion failed"):
        program.module()(clips, bool_masked_pos=uneven)


def test_videomae_pretraining_exports_with_noise():
    model = create_model("videomae-tiny", "pretraining").eval()
    generator = torch.Generator().manual_seed(0)
    clips = pixel_values_for(model.config, generator)
    noise = torch.rand(BATCH, 16, generator=generator)  # tube masking: one value per spatial position
    export_and_compare(model, (clips,), {"noise": noise}, ["loss", "logits", "mask", "ids_restore"])


def test_compile_fullgraph_with_a_data_dependent_mask():
    """SimMIM's noise goes through mask_from_bool (counts read from data): dynamo traces it without a graph break.
    The eager backend keeps this CPU test short; it checks the tracing, which is what fullgraph=True is about."""
    model = create_model("simmim-tiny", "pretraining").eval()
    generator = torch.Generator().manual_seed(0)
    pixel_values = pixel_values_for(model.config, generator)
    noise = torch.rand(BATCH, 16, generator=generator)
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        assert_outputs_equal(
            compiled(pixel_values, noise=noise), model(pixel_values, noise=noise), ["loss", "logits", "mask"]
        )


def test_point_cloud_and_graph_value_checks_are_runtime_assertions_of_the_program():
    """check_point_values' NaN check and check_graph_inputs' id range read tensor values: eager raises ValueError,
    the exported base model (which matches eager within 1e-5) fails its runtime assertion on the same input."""
    generator = torch.Generator().manual_seed(0)
    points = torch.randn(BATCH, 256, 3, generator=generator) * 0.5
    model = create_model("pointmae-tiny", "base").eval()
    program = export_and_compare(model, (points,), {}, ["last_hidden_state", "pooler_output"])
    broken = points.clone()
    broken[1, 7, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        model(broken)
    with pytest.raises(RuntimeError, match="Runtime assertion failed"):
        program.module()(broken)

    model = create_model("graphmae-tiny", "base").eval()
    nodes = torch.rand(6, model.config.num_features, generator=generator)
    edges = torch.tensor([[0, 1, 2, 3, 4, 5, 0], [1, 2, 0, 4, 5, 3, 0]])
    batch = torch.tensor([0, 0, 0, 1, 1, 1])
    program = export_and_compare(model, (nodes, edges, batch), {}, ["last_hidden_state", "pooler_output"])
    outside = edges.clone()
    outside[1, 0] = 6  # node 6 of 6
    with pytest.raises(ValueError, match="edge_index holds node ids outside"):
        model(nodes, outside, batch)
    with pytest.raises(RuntimeError, match="Runtime assertion failed"):
        program.module()(nodes, outside, batch)
