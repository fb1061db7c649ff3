"""ColorMAE: the coloured-noise mask generator and the ColorMAE model classes."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

import hf_mae
from hf_mae.modeling.colormae import ColorMAEConfig, ColorMAEForPreTraining
from hf_mae.modeling.masking import (
    NOISE_COLOR_BANDS,
    ColorNoiseMaskGenerator,
    build_mask_generator,
    num_kept,
    radial_frequency,
)

COLORS = sorted(NOISE_COLOR_BANDS)


def masks(color, batch, grid, mask_ratio=0.75, seed=0):
    """Masks of ``color`` as images (batch, rows, cols), 1 = removed."""
    generator = torch.Generator().manual_seed(seed)
    token_mask = build_mask_generator("color_noise", color=color)(
        batch, grid[0] * grid[1], mask_ratio, grid, generator=generator
    )
    return token_mask.mask.view(batch, *grid)


def band_powers(mask_images):
    """Mean power of the masks' spectrum (mean removed, averaged over the batch) in three radial bands of the
    Nyquist frequency: low (0, 1/3) without the constant bin, mid [1/3, 2/3), high [2/3, 1)."""
    centred = mask_images - mask_images.mean(dim=(1, 2), keepdim=True)
    power = torch.fft.rfft2(centred).abs().pow(2).mean(0)
    rho = radial_frequency(mask_images.shape[1:])
    return [power[(rho >= low) & (rho < high)].mean().item() for low, high in ((0.02, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 1.0))]


@pytest.mark.parametrize("color", COLORS)
@pytest.mark.parametrize("grid", [(8, 8), (14, 14), (6, 10)])
def test_every_sample_masks_exactly_the_mae_count(color, grid):
    num_tokens = grid[0] * grid[1]
    for ratio in (0.75, 0.5, 0.9):
        mask = masks(color, 16, grid, ratio).flatten(1)
        assert mask.sum(1).tolist() == [num_tokens - num_kept(num_tokens, ratio)] * 16


@pytest.mark.parametrize("color", COLORS)
def test_kept_positions_are_the_top_k_of_the_cropped_pattern(color):
    grid, batch, ratio = (7, 9), 12, 0.75
    generator = ColorNoiseMaskGenerator(color)
    patterns = generator.patterns(batch, grid, generator=torch.Generator().manual_seed(3)).flatten(1)
    token_mask = generator(batch, 63, ratio, grid, generator=torch.Generator().manual_seed(3))
    keep = num_kept(63, ratio)
    top = patterns.topk(keep, dim=1).indices
    assert torch.equal(token_mask.ids_keep.sort(1).values, top.sort(1).values)
    assert torch.equal(token_mask.mask, torch.ones(batch, 63).scatter_(1, top, 0.0))
    # every kept value is larger than every removed one
    kept_min = patterns.gather(1, token_mask.ids_keep).min(1).values
    removed_max = patterns.masked_fill(token_mask.mask == 0, -torch.inf).max(1).values
    assert (kept_min > removed_max).all()


def test_mask_spectra_have_the_colour_of_their_noise():
    """Radially averaged power of 0/1 masks (32x32 grid, r=0.75, 256 masks) in low / mid / high bands.

    Measured (seed 0): white 190 / 192 / 192 (flat), green 155 / 444 / 106 (mid-band peak),
    red 1363 / 174 / 52, blue 100 / 101 / 240, purple 218 / 103 / 223."""
    powers = {color: band_powers(masks(color, 256, (32, 32))) for color in COLORS}
    for color, (low, mid, high) in powers.items():
        print(f"{color:6s} low {low:7.1f} mid {mid:7.1f} high {high:7.1f} mid/low {mid / low:5.2f} mid/high {mid / high:5.2f}")
    low, mid, high = powers["white"]
    assert 0.9 < mid / low < 1.1 and 0.9 < mid / high < 1.1  # flat
    low, mid, high = powers["green"]
    assert mid / low > 2.0 and mid / high > 3.0  # measured 2.86 and 4.21
    low, mid, high = powers["red"]
    assert low / mid > 5.0 and low / high > 15.0  # measured 7.8 and 26
    low, mid, high = powers["blue"]
    assert high / low > 2.0 and high / mid > 2.0  # measured 2.4 and 2.4
    low, mid, high = powers["purple"]
    assert low / mid > 1.7 and high / mid > 1.7  # measured 2.1 and 2.2


def test_green_masks_are_band_limited_on_the_paper_grid():
    low, mid, high = band_powers(masks("green", 256, (14, 14)))  # ViT-B/16 at 224 px
    assert mid / low > 1.6 and mid / high > 2.5  # measured 2.04 and 3.58


def test_seeded_masks_repeat_and_vary_across_samples_and_calls():
    a, b = masks("green", 32, (14, 14), seed=7), masks("green", 32, (14, 14), seed=7)
    assert torch.equal(a, b)
    assert not torch.equal(a, masks("green", 32, (14, 14), seed=8))
    flat = a.flatten(1)
    assert torch.unique(flat, dim=0).shape[0] == 32  # 32 distinct masks in one batch
    # two samples share about as many removed patches as two random masks would (0.75**2 of 196 = 110)
    overlap = (flat[:, None] * flat[None]).sum(-1)[~torch.eye(32, dtype=torch.bool)].float().mean().item()
    assert 100 < overlap < 120
    # each position is removed about 75% of the time over many masks: no fixed hole in the pattern
    frequency = masks("green", 2048, (14, 14), seed=1).mean(0)
    assert frequency.min() > 0.68 and frequency.max() < 0.82
    # without a generator the global RNG is used, so torch.manual_seed makes it reproducible too
    torch.manual_seed(0)
    first = ColorNoiseMaskGenerator()(4, 64, 0.75, (8, 8)).mask
    torch.manual_seed(0)
    assert torch.equal(first, ColorNoiseMaskGenerator()(4, 64, 0.75, (8, 8)).mask)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match=r"pink.*\['blue', 'green', 'purple', 'red', 'white'\]"):
        ColorNoiseMaskGenerator("pink")
    with pytest.raises(ValueError, match=r"noise_color.*pink.*'green'"):
        hf_mae.create_model("colormae-tiny", noise_color="pink")
    with pytest.raises(ValueError, match="canvas_factor"):
        ColorNoiseMaskGenerator("green", canvas_factor=0)
    with pytest.raises(ValueError, match="grid_size"):
        ColorNoiseMaskGenerator()(2, 60, 0.75)  # 60 tokens: not square, no grid given
    with pytest.raises(ValueError, match="grid_size"):
        ColorNoiseMaskGenerator()(2, 64, 0.75, (4, 8))


def test_colormae_model_uses_its_noise_and_round_trips_through_auto_classes(tmp_path):
    model = hf_mae.create_model("colormae-tiny", noise_color="blue").eval()
    assert isinstance(model.config, ColorMAEConfig) and model.config.mask_generator == "color_noise"
    assert model.mae.mask_generator.color == "blue"
    pixel_values = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    expected = model(pixel_values)
    assert expected.mask.sum(1).tolist() == [48.0, 48.0]

    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "colormae" and saved["noise_color"] == "blue"
    assert saved["architectures"] == ["ColorMAEForPreTraining"]
    assert type(AutoConfig.from_pretrained(tmp_path)) is ColorMAEConfig
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert type(loaded) is ColorMAEForPreTraining and loaded.mae.mask_generator.color == "blue"
    torch.manual_seed(0)  # same seed, same coloured mask, same loss
    reloaded = loaded(pixel_values)
    assert torch.equal(reloaded.mask, expected.mask) and torch.equal(reloaded.loss, expected.loss)
    # the weights keep MAE's names: an MAE model loads them without a missing or unexpected key
    assert set(loaded.state_dict()) == set(hf_mae.create_model("mae-tiny").state_dict())
    assert type(AutoModel.from_pretrained(tmp_path)).__name__ == "ColorMAEModel"


def test_colormae_can_fall_back_to_random_masking():
    model = hf_mae.create_model("colormae-tiny", mask_generator="random")
    assert type(model.mae.mask_generator).__name__ == "RandomMaskGenerator"
