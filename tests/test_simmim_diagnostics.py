"""benchmarks/simmim_diagnostics.py: the parameter-free inpainting fills by hand, and one run on digits."""

import json

import pytest
import torch

import hf_mae
from conftest import load_benchmark


@pytest.fixture(scope="module")
def diagnostics():
    return load_benchmark("simmim_diagnostics")


def test_fills_are_exact_on_flat_colour_and_the_blur_beats_zeros_on_a_ramp(diagnostics):
    hidden = (torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0)) < 0.6).float()
    flat = torch.tensor([0.5, -1.0, 2.0])[None, :, None, None].expand(2, 3, 16, 16).contiguous()
    l1 = diagnostics.inpainting_l1(flat, hidden)
    assert l1["zeros"] == pytest.approx(3.5 / 3, rel=1e-4)  # the mean |colour| over the channels
    for name in ("visible_mean_colour", "blur_sigma_1.5", "blur_sigma_3", "blur_sigma_6"):
        assert l1[name] == pytest.approx(0.0, abs=1e-5), name
    # a horizontal ramp: a narrow blur fills a hidden pixel from its neighbours, a single colour cannot
    ramp = torch.linspace(-2, 2, 16)[None, None, None, :].expand(2, 3, 16, 16).contiguous()
    l1 = diagnostics.inpainting_l1(ramp, hidden)
    print({k: round(v, 4) for k, v in l1.items()})
    assert l1["blur_sigma_1.5"] < l1["blur_sigma_3"] < l1["blur_sigma_6"] < 0.8 * l1["visible_mean_colour"]
    assert l1["blur_sigma_1.5"] < 0.2 * l1["zeros"]  # observed 0.10 against 1.07
    filled = diagnostics.blur_inpaint(ramp, 1 - hidden, 1.5)
    assert torch.allclose(filled[..., 4:12, 4:12], ramp[..., 4:12, 4:12], atol=0.35)


def test_run_on_digits_writes_every_measurement(diagnostics, tmp_path, one_thread):
    folder = tmp_path / "simmim"
    torch.manual_seed(1)  # not the random baseline's seed 0: two different encoders
    model = hf_mae.create_model("simmim-tiny", hidden_size=32, num_hidden_layers=2, intermediate_size=64,
                                num_attention_heads=2)
    model.save_pretrained(folder)
    hf_mae.create_processor("simmim-tiny").save_pretrained(folder)
    result = diagnostics.main([str(folder), "--dataset", "digits", "--inpainting-images", "100"])
    assert json.loads((folder / "simmim_diagnostics.json").read_text())["layer_knn"] == result["layer_knn"]
    l1 = result["inpainting_l1"]
    assert l1["blur_sigma_1.5"] < l1["visible_mean_colour"] < l1["zeros"]  # digits: smooth strokes on black
    for kind in ("pretrained", "random"):
        assert len(result["layer_knn"][kind]) == 3  # the embeddings and two blocks
        assert all(0.1 < value <= 1.0 for value in result["layer_knn"][kind])  # above chance (0.1) on digits
        assert 0.1 < result["masked_input_last_layer_knn"][kind] <= 1.0
    assert result["layer_knn"]["pretrained"][1:] != result["layer_knn"]["random"][1:]
