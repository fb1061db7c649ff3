"""`hf-mae visualize`: the reconstruction grid's size and tiles (original = de-normalised input, pasted = original on
visible patches, masked = mean colour on hidden patches), seeding, and the command line."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import hf_mae
from hf_mae.cli import main as cli_main
from hf_mae.training.visualize import (
    denormalize,
    first_images,
    grid_size,
    save_reconstruction_grid,
    tile_origin,
)

TINY = dict(hidden_size=32, num_hidden_layers=2, intermediate_size=64, decoder_hidden_size=32,
            decoder_intermediate_size=64, decoder_num_hidden_layers=1)


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = hf_mae.create_model("mae-tiny", **TINY).eval()
    processor = hf_mae.create_processor("mae-tiny")
    images = first_images("digits", "test", 3)
    return model, processor, images


def tile(grid: np.ndarray, row: int, col: int, size: int, scale: int) -> np.ndarray:
    """The (size, size, 3) image in tile (row, col), downsampled back from the nearest upscale."""
    x, y = tile_origin(row, col, size * scale, size * scale)
    return grid[y : y + size * scale : scale, x : x + size * scale : scale].astype(np.int16)


def test_grid_size_and_tiles(setup, tmp_path):
    model, processor, images = setup
    result = save_reconstruction_grid(model, processor, images, tmp_path / "grid.png", seed=0)
    grid = np.asarray(Image.open(tmp_path / "grid.png").convert("RGB"))
    # 3 rows x 4 columns of 32x32 images upscaled 4x to 128, 2-pixel gaps, a 16-pixel title row
    assert result["scale"] == 4 and grid_size(3, 128, 128) == (522, 408)
    assert grid.shape == (408, 522, 3)

    pixel_values = processor(images, return_tensors="pt")["pixel_values"]
    expected = (denormalize(pixel_values, processor) * 255).permute(0, 2, 3, 1).numpy()
    mask = result["mask"].reshape(3, 8, 8)  # 8x8 grid of 4x4 patches, 1 = hidden
    assert mask.sum().item() == 3 * 48  # mask_ratio 0.75 of 64 patches
    mean_colour = np.round(np.array(processor.image_mean) * 255)
    for row in range(3):
        original = tile(grid, row, 0, 32, 4)
        masked = tile(grid, row, 1, 32, 4)
        pasted = tile(grid, row, 3, 32, 4)
        assert np.abs(original - expected[row]).max() <= 1.0  # within 1/255 of the de-normalised input
        visible = ~mask[row].bool().numpy().repeat(4, 0).repeat(4, 1)  # (32, 32) pixel mask
        assert np.abs(pasted[visible] - original[visible]).max() == 0
        assert np.abs(masked[visible] - original[visible]).max() == 0
        assert np.abs(masked[~visible] - mean_colour).max() <= 1  # hidden = 0 in normalised space = mean colour
        assert np.abs(pasted[~visible] - original[~visible]).mean() > 5  # untrained: visibly not the input


def test_seeded_and_leaves_the_global_rng_alone(setup, tmp_path):
    model, processor, images = setup
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = save_reconstruction_grid(model, processor, images, tmp_path / "a.png", seed=7)
    assert torch.equal(torch.rand(3), expected_next)
    second = save_reconstruction_grid(model, processor, images, tmp_path / "b.png", seed=7)
    other = save_reconstruction_grid(model, processor, images, tmp_path / "c.png", seed=8, mask_ratio=0.5)
    assert torch.equal(first["mask"], second["mask"])
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert other["mask"].sum().item() == 3 * 32  # --mask-ratio 0.5 of 64 patches
    # pixel_values in, same picture as images in
    pixel_values = processor(images, return_tensors="pt")["pixel_values"]
    save_reconstruction_grid(model, processor, pixel_values, tmp_path / "d.png", seed=7)
    assert (tmp_path / "d.png").read_bytes() == (tmp_path / "a.png").read_bytes()


def test_bad_input(setup, tmp_path):
    model, processor, images = setup
    with pytest.raises(TypeError, match="reconstruct"):
        save_reconstruction_grid(hf_mae.create_model("mae-tiny", "base", **TINY), processor, images, tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"must be \(batch, channels, H, W\), got shape \(3, 32, 32\)"):
        save_reconstruction_grid(model, processor, torch.zeros(3, 32, 32), tmp_path / "x.png")
    assert not list(tmp_path.iterdir())


def test_cli(setup, tmp_path):
    model, processor, _ = setup
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    with pytest.raises(ValueError, match="--dataset is required"):
        cli_main(["visualize", str(folder), "--output", str(tmp_path / "x.png")])
    out = tmp_path / "cli.png"
    assert cli_main(["visualize", str(folder), "--dataset", "digits", "--num-samples", "2", "--output", str(out)]) == 0
    assert Image.open(out).size == grid_size(2, 128, 128) == (522, 278)
    # a run folder's run_args.json supplies the data set
    (folder / "run_args.json").write_text(json.dumps({"dataset": "digits", "split": "test"}))
    assert cli_main(["visualize", str(folder), "--num-samples", "1", "--output", str(tmp_path / "run.png")]) == 0
    assert Image.open(tmp_path / "run.png").size == (522, 148)
