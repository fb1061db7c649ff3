"""SimMIM: parity with transformers' ViTForMaskedImageModeling through `hf-mae convert vit-mim` and back, the
grouped mask generator, the masked L1 loss against a hand computation, and a 20-step `hf-mae pretrain` run.
The shared model suite (tests/test_models.py) covers the rest for the simmim presets."""

import math

import pytest
import torch
from conftest import run_pretrain
from transformers import AutoModelForPreTraining, ViTConfig, ViTForMaskedImageModeling

import hf_mae
from hf_mae import cli
from hf_mae.modeling.masking import GroupedRandomMaskGenerator
from hf_mae.modeling.simmim import SimMIMConfig, SimMIMForImageClassification, SimMIMForPreTraining, masked_l1


def random_vit_mim(**sizes):
    """A ViTForMaskedImageModeling whose every weight is random (transformers zeroes the mask token and biases)."""
    torch.manual_seed(0)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, **sizes)
    model = ViTForMaskedImageModeling(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.1 * torch.randn_like(param))
    return model


@pytest.mark.parametrize(
    "sizes",
    [
        dict(image_size=32, patch_size=4, encoder_stride=4, num_channels=3),
        dict(image_size=48, patch_size=8, encoder_stride=8, num_channels=1, layer_norm_eps=1e-6),
    ],
    ids=["32px-p4-rgb", "48px-p8-gray"],
)
def test_parity_with_transformers_through_the_cli_and_back(sizes, tmp_path):
    vit = random_vit_mim(**sizes)
    vit.save_pretrained(tmp_path / "vit")
    assert cli.main(["convert", "vit-mim", str(tmp_path / "vit"), str(tmp_path / "simmim")]) == 0
    model = AutoModelForPreTraining.from_pretrained(tmp_path / "simmim").eval()
    assert isinstance(model, SimMIMForPreTraining) and model.config.layer_norm_eps == vit.config.layer_norm_eps

    generator = torch.Generator().manual_seed(1)
    side = sizes["image_size"]
    pixel_values = torch.randn(3, sizes["num_channels"], side, side, generator=generator)
    num_patches = (side // sizes["patch_size"]) ** 2
    bool_masked_pos = torch.rand(3, num_patches, generator=generator) < 0.6
    with torch.no_grad():
        expected = vit(pixel_values, bool_masked_pos=bool_masked_pos)
        ours = model(pixel_values, bool_masked_pos=bool_masked_pos)
    loss_gap = (expected.loss - ours.loss).abs().item()
    pixel_gap = (expected.reconstruction - ours.reconstruction).abs().max().item()
    print(f"{sizes}: loss {ours.loss.item():.6f}, |loss gap| {loss_gap:.2e}, max |reconstruction gap| {pixel_gap:.2e}")
    assert loss_gap < 1e-5 and pixel_gap < 1e-5
    assert torch.equal(ours.mask, bool_masked_pos.float())

    assert cli.main(["convert", "--to", "vit-mim", str(tmp_path / "simmim"), str(tmp_path / "back")]) == 0
    back = ViTForMaskedImageModeling.from_pretrained(tmp_path / "back")
    original, returned = vit.state_dict(), back.state_dict()
    assert original.keys() == returned.keys()
    assert all(torch.equal(original[key], returned[key]) for key in original)
    with pytest.raises(ValueError, match="already exists"):  # nothing is overwritten without --overwrite
        cli.main(["convert", "vit-mim", str(tmp_path / "vit"), str(tmp_path / "simmim")])


def test_to_vit_mim_refuses_what_vit_cannot_hold(tmp_path):
    from hf_mae.convert import convert_to_vit_mim

    with pytest.raises(ValueError, match="image_size must be square"):
        convert_to_vit_mim(hf_mae.create_model("simmim-tiny", image_size=(32, 48)))
    with pytest.raises(ValueError, match="layer_scale_init_value"):
        convert_to_vit_mim(hf_mae.create_model("simmim-tiny", layer_scale_init_value=0.1))


@pytest.mark.parametrize("image_size, patch_size, cell", [(192, 16, 32), (224, 16, 32), (32, 4, 8), (64, 8, 16)])
def test_mask_generator_hides_whole_cells_in_exact_counts(image_size, patch_size, cell):
    unit = cell // patch_size
    grid = (image_size // patch_size, image_size // patch_size)
    cells = (grid[0] // unit) * (grid[1] // unit)
    generator = torch.Generator().manual_seed(0)
    masks = GroupedRandomMaskGenerator(unit)(16, grid[0] * grid[1], 0.6, grid, generator=generator).mask
    # the official MaskGenerator: ceil(cells * 0.6) cells hidden (30 of 49 at 224 px, 22 of 36 at 192 px)
    assert masks.sum(1).tolist() == [math.ceil(cells * 0.6) * unit * unit] * 16
    blocks = masks.reshape(16, grid[0] // unit, unit, grid[1] // unit, unit)
    assert torch.equal(blocks.amin(dim=(2, 4)), blocks.amax(dim=(2, 4)))  # constant within every unit x unit cell
    assert not torch.equal(masks[0], masks[1])  # per-sample masks


def test_noise_over_cells_fixes_the_mask_and_ratio_zero_masks_nothing():
    model = hf_mae.create_model("simmim-tiny").eval()  # 8x8 patches, 2x2-patch cells -> a 4x4 cell grid
    pixel_values = torch.randn(2, 3, 32, 32)
    noise = torch.rand(2, 16)
    out = model(pixel_values, noise=noise)
    cell_mask = torch.ones(2, 16).scatter_(1, noise.argsort(1)[:, :6], 0.0)  # int(16 * 0.4) = 6 cells stay
    expected = cell_mask.reshape(2, 4, 4).repeat_interleave(2, 1).repeat_interleave(2, 2).flatten(1)
    assert torch.equal(out.mask, expected)
    # the encoder sees every patch: 1 + N tokens with or without masking
    encoded = model.simmim(pixel_values, noise=noise)
    assert encoded.last_hidden_state.shape == (2, 1 + 64, model.config.hidden_size)
    # mask_ratio=0 equals an explicit all-False bool_masked_pos (the mask token is then never used)
    plain = model.simmim(pixel_values, mask_ratio=0.0).last_hidden_state
    unmasked = model.simmim(pixel_values, bool_masked_pos=torch.zeros(2, 64, dtype=torch.bool)).last_hidden_state
    torch.testing.assert_close(plain, unmasked, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="bool_masked_pos or noise"):
        model(pixel_values, noise=noise, bool_masked_pos=torch.zeros(2, 64, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool_masked_pos"):
        model(pixel_values, bool_masked_pos=torch.zeros(2, 63, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask_patch_size"):
        SimMIMConfig(image_size=32, patch_size=4, mask_patch_size=6)
    with pytest.raises(ValueError, match="encoder_stride"):
        SimMIMConfig(image_size=32, patch_size=4, mask_patch_size=8, encoder_stride=8)
    classifier = SimMIMForImageClassification(model.config)
    assert classifier.simmim.embeddings.mask_token is None  # fine-tuning never masks


def test_l1_loss_is_on_hidden_pixels_only():
    model = hf_mae.create_model("simmim-tiny").eval()
    pixel_values = torch.randn(2, 3, 32, 32)
    bool_masked_pos = torch.rand(2, 64, generator=torch.Generator().manual_seed(3)) < 0.5
    out = model(pixel_values, bool_masked_pos=bool_masked_pos)
    assert out.logits.shape == pixel_values.shape
    # by hand: the mean absolute error over every channel of every pixel of every hidden 4x4 patch
    total, count = 0.0, 0
    for b in range(2):
        for index in bool_masked_pos[b].nonzero().flatten().tolist():
            row, col = divmod(index, 8)
            window = (b, slice(None), slice(4 * row, 4 * row + 4), slice(4 * col, 4 * col + 4))
            total += (pixel_values[window] - out.logits[window]).abs().sum().item()
            count += 3 * 16
    print(f"L1 on hidden pixels: model {out.loss.item():.6f}, by hand {total / count:.6f}")
    assert out.loss.item() == pytest.approx(total / count, rel=1e-5)
    # errors on visible pixels do not count
    pixel_mask = model.pixel_mask(out.mask, (32, 32))
    off_on_visible = out.logits + 5.0 * (1 - pixel_mask)
    assert masked_l1(pixel_values, off_on_visible, pixel_mask).item() == pytest.approx(out.loss.item(), rel=1e-6)
    masked, reconstruction, pasted = model.reconstruct(pixel_values, out)
    hidden = model.pixel_mask(out.mask, (32, 32)).bool().expand_as(pixel_values)
    assert torch.equal(pasted[hidden], out.logits[hidden]) and torch.equal(pasted[~hidden], pixel_values[~hidden])
    assert torch.equal(masked[hidden], torch.zeros_like(masked[hidden])) and torch.equal(reconstruction, out.logits)


def test_pretrain_cli_runs_and_the_loss_falls(tmp_path, one_thread):
    argv = ["--model", "simmim-tiny", "--dataset", "digits", "--max-steps", "20",
            "--batch-size", "32", "--lr", "2e-3", "--log-steps", "5",
            "--config-overrides", "hidden_size=32", "num_hidden_layers=2", "intermediate_size=64"]  # fmt: skip
    records = run_pretrain(argv, tmp_path / "run")
    folder = tmp_path / "run"
    print(f"simmim-tiny L1 {records[0]['loss']:.4f} (steps 1-5) -> {records[-1]['loss']:.4f} (steps 16-20)")
    assert records[-1]["loss"] < 0.97 * records[0]["loss"]  # observed 1.495 -> 1.369
    assert (folder / "reconstruction.png").stat().st_size > 0
    assert isinstance(AutoModelForPreTraining.from_pretrained(folder), SimMIMForPreTraining)


def test_norm_pix_target_is_each_patch_standardised_and_reconstruct_undoes_it():
    model = hf_mae.create_model("simmim-tiny", norm_pix_loss=True).eval()
    pixel_values = torch.randn(2, 3, 32, 32) * 2 + 1
    bool_masked_pos = torch.rand(2, 64, generator=torch.Generator().manual_seed(4)) < 0.5
    out = model(pixel_values, bool_masked_pos=bool_masked_pos)
    target = model.target(pixel_values)
    # by hand for one patch (row 2, col 5 of image 1): its 3x4x4 values, minus their mean, over sqrt(unbiased var + 1e-6)
    window = (1, slice(None), slice(8, 12), slice(20, 24))
    values = pixel_values[window]
    assert torch.allclose(target[window], (values - values.mean()) / (values.var() + 1e-6) ** 0.5, atol=1e-5)
    assert out.loss.item() == pytest.approx(masked_l1(target, out.logits, model.pixel_mask(out.mask, (32, 32))).item())
    _, reconstruction, _ = model.reconstruct(pixel_values, out)
    mean, std = model.norm_pix_statistics(pixel_values)
    assert torch.allclose(reconstruction, out.logits * std + mean, atol=1e-5)
    # a perfect normalised prediction reconstructs the input exactly
    perfect = type(out)(loss=out.loss, logits=target, mask=out.mask)
    assert torch.allclose(model.reconstruct(pixel_values, perfect)[1], pixel_values, atol=1e-4)
