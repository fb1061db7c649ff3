"""VideoMAE: parity with transformers' VideoMAEForPreTraining (conversion both ways, q/v biases included), tube
masking, the per-tubelet target against a hand computation, the sinusoid table, bad inputs, and pre-training from a
folder of video files written by the test."""

import json

import pytest
import torch
from conftest import run_pretrain
from transformers import VideoMAEConfig as TransformersVideoMAEConfig
from transformers import VideoMAEForPreTraining as TransformersVideoMAE

from hf_mae import cli
from hf_mae.convert import convert_to_videomae, convert_videomae
from hf_mae.modeling.embeddings import sinusoid_table
from hf_mae.modeling.masking import TubeMaskGenerator
from hf_mae.modeling.targets import tubelet_target
from hf_mae.modeling.videomae import HfVideoMAEConfig, VideoMAEForPreTraining

SHAPES = {
    "32px-p8-4f-t2": dict(image_size=32, patch_size=8, num_frames=4, tubelet_size=2, qv_bias=True),
    "24px-p4-6f-t3-no-bias": dict(image_size=24, patch_size=4, num_frames=6, tubelet_size=3, qv_bias=False),
}


def transformers_videomae(seed=0, **shape):
    """A tiny transformers VideoMAEForPreTraining with every weight moved off its init (biases non-zero)."""
    config = TransformersVideoMAEConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, decoder_hidden_size=32,
        decoder_num_hidden_layers=2, decoder_num_attention_heads=4, decoder_intermediate_size=64,
        use_mean_pooling=False, layer_norm_eps=1e-6, **shape,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = TransformersVideoMAE(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    return model


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES)
def test_equal_to_transformers_videomae_both_ways(shape):
    reference = transformers_videomae(**shape)
    ours = convert_videomae(reference)
    config = ours.config
    slices, rows, cols = config.grid_size
    clip = torch.randn(3, config.num_frames, 3, config.image_size, config.image_size)
    mask = ours(clip, noise=torch.rand(3, rows * cols)).mask.bool()
    expected, got = reference(clip, bool_masked_pos=mask), ours(clip, bool_masked_pos=mask)
    hidden = int(mask[0].sum())
    assert got.logits.shape == expected.logits.shape == (3, hidden, config.tubelet_size * config.patch_size**2 * 3)
    assert (got.logits - expected.logits).abs().max().item() <= 1e-5
    assert abs(got.loss.item() - expected.loss.item()) <= 1e-6
    # VideoMAE's query / value biases are their own parameters and arrive non-zero
    attention = ours.videomae.layers[0].attention
    if shape["qv_bias"]:
        source = reference.videomae.encoder.layer[0].attention.attention
        assert attention.q_bias.abs().min() > 0 and attention.v_bias.abs().min() > 0
        assert torch.equal(attention.q_bias, source.query.bias) and torch.equal(attention.v_bias, source.value.bias)
    else:
        assert attention.q_bias is None and attention.qkv.bias is None
    back = convert_to_videomae(ours)
    assert back.state_dict().keys() == reference.state_dict().keys()
    for key, tensor in reference.state_dict().items():
        assert torch.equal(back.state_dict()[key], tensor), key


def test_conversion_refuses_what_the_other_side_cannot_hold():
    reference = transformers_videomae(**SHAPES["32px-p8-4f-t2"])
    reference.config.use_mean_pooling = True
    with pytest.raises(ValueError, match="use_mean_pooling"):
        convert_videomae(reference)
    with pytest.raises(TypeError, match="VideoMAEForPreTraining"):
        convert_to_videomae(torch.nn.Linear(2, 2))
    non_square = VideoMAEForPreTraining(HfVideoMAEConfig(image_size=(32, 16), patch_size=8, num_frames=2, hidden_size=32,
                                                       num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                                                       decoder_hidden_size=32, decoder_num_hidden_layers=1,
                                                       decoder_num_attention_heads=4, decoder_intermediate_size=64))
    with pytest.raises(ValueError, match="image_size"):
        convert_to_videomae(non_square)


def test_tube_masks_repeat_the_same_spatial_mask_in_every_time_slice():
    generator = TubeMaskGenerator()
    grid = (4, 3, 5)  # 4 time slices of a 3x5 patch grid
    noise = torch.rand(6, 15, generator=torch.Generator().manual_seed(0))
    token_mask = generator.from_noise(noise, 0.9, grid)
    mask = token_mask.mask.reshape(6, 4, 15)
    assert torch.equal(mask, mask[:, :1].expand(-1, 4, -1))  # identical in every slice
    kept = int(15 * (1 - 0.9))  # 1 visible position per slice, the one with the smallest noise
    assert mask[:, 0].sum(1).tolist() == [15 - kept] * 6
    assert torch.equal(mask[:, 0].argmin(1), noise.argmin(1))
    # kept tokens stay in their original (time, row, column) order
    assert torch.equal(token_mask.ids_keep, token_mask.ids_keep.sort(1).values)
    drawn = generator(6, 60, 0.75, grid)
    assert drawn.mask.sum(1).tolist() == [4 * (15 - int(15 * 0.25))] * 6
    assert generator(6, 60, 0.0, grid).mask.sum() == 0


def test_tubelet_target_matches_a_hand_computation():
    frames = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(1, 2, 3, 4, 4) ** 1.5 / 100
    target = tubelet_target(frames, tubelet_size=2, patch_size=2, norm_pix=True)
    assert target.shape == (1, 4, 2 * 2 * 2 * 3)  # 1 time slice x 2x2 patches of (t, ph, pw, C)
    # the second patch (row 0, column 1): frames t=0..1, rows 0..1, columns 2..3, channel last
    values = frames[0, :, :, 0:2, 2:4].permute(0, 2, 3, 1).reshape(8, 3)  # (t*ph*pw, C)
    normalised = (values - values.mean(0)) / (values.std(0, unbiased=True) + 1e-6)
    torch.testing.assert_close(target[0, 1], normalised.reshape(-1), rtol=0, atol=1e-5)
    plain = tubelet_target(frames, 2, 2, norm_pix=False)
    torch.testing.assert_close(plain[0, 1], values.reshape(-1))


def test_sinusoid_table_is_videomaes():
    from transformers.models.videomae.modeling_videomae import get_sinusoid_encoding_table

    assert torch.equal(sinusoid_table(50, 24), get_sinusoid_encoding_table(50, 24)[0])


def tiny_config(**overrides):
    base = dict(image_size=16, patch_size=4, num_frames=4, tubelet_size=2, hidden_size=32, num_hidden_layers=1,
                num_attention_heads=4, intermediate_size=64, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                decoder_num_attention_heads=4, decoder_intermediate_size=64)  # fmt: skip
    return HfVideoMAEConfig(**{**base, **overrides})


def test_bad_inputs_raise_clear_errors():
    model = VideoMAEForPreTraining(tiny_config())
    clip = torch.randn(2, 4, 3, 16, 16)
    with pytest.raises(ValueError, match="num_frames=4"):
        model(torch.randn(2, 6, 3, 16, 16))
    with pytest.raises(ValueError, match="5 dimensions"):
        model(clip[:, 0])
    with pytest.raises(ValueError, match="image_size"):
        model(torch.randn(2, 4, 3, 20, 20))
    with pytest.raises(ValueError, match="same number"):
        model(clip, bool_masked_pos=torch.tensor([[True] * 32, [True] * 31 + [False]]))
    with pytest.raises(ValueError, match="noise"):
        model(clip, noise=torch.rand(2, 32))  # tube masking draws over the 16 spatial positions
    with pytest.raises(ValueError, match="either noise or bool_masked_pos"):
        model(clip, noise=torch.rand(2, 16), bool_masked_pos=torch.ones(2, 32, dtype=torch.bool))
    with pytest.raises(ValueError, match="hidden tokens"):
        model(clip, mask_ratio=0.0)
    with pytest.raises(ValueError, match="tubelet_size"):
        tiny_config(num_frames=5)


def test_cli_converts_folders_both_ways(tmp_path):
    from transformers import AutoModelForPreTraining

    reference = transformers_videomae(**SHAPES["32px-p8-4f-t2"])
    reference.save_pretrained(tmp_path / "transformers")
    assert cli.main(["convert", "videomae", str(tmp_path / "transformers"), str(tmp_path / "ours")]) == 0
    ours = AutoModelForPreTraining.from_pretrained(tmp_path / "ours").eval()
    assert type(ours) is VideoMAEForPreTraining
    clip = torch.randn(2, 4, 3, 32, 32)
    mask = ours(clip, noise=torch.rand(2, 16)).mask.bool()
    torch.testing.assert_close(ours(clip, bool_masked_pos=mask).logits, reference(clip, bool_masked_pos=mask).logits,
                               rtol=0, atol=1e-5)  # fmt: skip
    assert cli.main(["convert", "--to", "videomae", str(tmp_path / "ours"), str(tmp_path / "back")]) == 0
    back = TransformersVideoMAE.from_pretrained(tmp_path / "back").eval()
    for key, tensor in reference.state_dict().items():
        assert torch.equal(back.state_dict()[key], tensor), key
    assert json.loads((tmp_path / "back" / "preprocessor_config.json").read_text())["crop_size"]["height"] == 32
    with pytest.raises(ValueError, match="already exists"):
        cli.main(["convert", "videomae", str(tmp_path / "transformers"), str(tmp_path / "ours")])


def test_pretrain_cli_on_a_folder_of_video_files(tmp_path, one_thread):
    pytest.importorskip("av", reason="PyAV (`pip install av`) decodes the video files")
    from synthetic_video import write_motion_dataset
    from transformers import AutoImageProcessor, AutoModelForVideoClassification

    data = write_motion_dataset(tmp_path / "clips", per_class=4, frames=16, size=32)
    argv = ["--model", "videomae-tiny", "--dataset", str(data), "--max-steps", "30",
            "--batch-size", "4", "--lr", "1e-3", "--log-steps", "5",
            "--config-overrides", "hidden_size=64", "num_hidden_layers=2", "intermediate_size=128"]  # fmt: skip
    records = run_pretrain(argv, tmp_path / "run")
    run = tmp_path / "run"
    print(f"videomae-tiny loss {records[0]['loss']:.4f} (steps 1-5) -> {records[-1]['loss']:.4f} (steps 26-30)")
    assert records[-1]["loss"] < 0.9 * records[0]["loss"]
    processor = AutoImageProcessor.from_pretrained(run)
    assert processor.num_frames == 8
    clip = processor(str(data / "train" / "left" / "0.mp4"), return_tensors="pt")["pixel_values"]
    classifier = AutoModelForVideoClassification.from_pretrained(run, num_labels=4)
    assert classifier(clip).logits.shape == (1, 4)
