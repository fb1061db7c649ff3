"""``hf-mae visualize``: PNG grids of MAE reconstructions, drawn with Pillow only.

One row per sample, four columns: original | masked input | reconstruction | reconstruction with the visible
patches pasted back. Images are shown in [0, 1] pixel space (the processor's mean/std undone); small images are
upscaled with nearest-neighbour so that 32x32 digits stay legible.

    hf-mae visualize runs/mae --dataset digits --num-samples 8 --output recon.png --mask-ratio 0.75 --seed 0
"""

from __future__ import annotations

import itertools
import json
import os

import numpy as np
import torch

from ..files import replace_atomically

COLUMNS = ("original", "masked", "reconstruction", "visible + reconstruction")
PAD = 2  # pixels between tiles and around the grid
HEADER = 16  # pixels above the first row for the column titles
MIN_TILE = 128  # small images are upscaled (nearest) by an integer factor towards this many pixels


def tile_scale(height: int, width: int) -> int:
    """Integer nearest-neighbour upscale factor of an image of this size (1 for images of MIN_TILE or more)."""
    return max(1, MIN_TILE // max(height, width))


def tile_origin(row: int, col: int, tile_height: int, tile_width: int) -> tuple[int, int]:
    """(x, y) of the top-left pixel of tile (row, col) in the grid."""
    return PAD + col * (tile_width + PAD), HEADER + PAD + row * (tile_height + PAD)


def grid_size(num_rows: int, tile_height: int, tile_width: int) -> tuple[int, int]:
    """(width, height) in pixels of a grid of ``num_rows`` rows of ``len(COLUMNS)`` tiles."""
    return PAD + len(COLUMNS) * (tile_width + PAD), HEADER + PAD + num_rows * (tile_height + PAD)


def denormalize(pixel_values: torch.Tensor, processor) -> torch.Tensor:
    """(batch, channels, H, W) in the processor's normalised space -> the same in [0, 1] (clamped)."""
    images = pixel_values.detach().float().cpu()
    if getattr(processor, "do_normalize", False):
        channels = images.shape[1]
        mean = torch.as_tensor(processor.image_mean, dtype=images.dtype).reshape(-1)
        std = torch.as_tensor(processor.image_std, dtype=images.dtype).reshape(-1)
        if mean.numel() == 1:  # a scalar mean/std applies to every channel
            mean, std = mean.expand(channels), std.expand(channels)
        images = images * std[:channels].view(1, -1, 1, 1) + mean[:channels].view(1, -1, 1, 1)
    return images.clamp(0.0, 1.0)


def _to_uint8(image: torch.Tensor) -> np.ndarray:
    """(channels, H, W) in [0, 1] -> (H, W) or (H, W, 3) uint8."""
    channels = image.shape[0]
    if channels not in (1, 3):
        raise ValueError(f"can only draw images with 1 or 3 channels, got {channels}")
    array = (image.numpy() * 255.0).round().astype(np.uint8)
    return array[0] if channels == 1 else array.transpose(1, 2, 0)


def _pixel_values(images_or_pixel_values, processor) -> torch.Tensor:
    if isinstance(images_or_pixel_values, torch.Tensor):
        if images_or_pixel_values.ndim != 4:
            raise ValueError(
                "images_or_pixel_values as a tensor must be (batch, channels, H, W), "
                f"got shape {tuple(images_or_pixel_values.shape)}"
            )
        return images_or_pixel_values
    images = list(images_or_pixel_values)
    if not images:
        raise ValueError("images_or_pixel_values is empty; give at least one image")
    images = [image.convert("RGB") if hasattr(image, "convert") else image for image in images]
    return processor(images, return_tensors="pt")["pixel_values"]


@torch.no_grad()
def save_reconstruction_grid(model, processor, images_or_pixel_values, path, seed: int = 0, mask_ratio=None) -> dict:
    """Draws the reconstruction grid of ``model`` (an ``...ForPreTraining`` with ``reconstruct``) to ``path`` (PNG).

    images_or_pixel_values: PIL images / arrays (run through ``processor``) or pixel_values (batch, C, H, W) already
        in the processor's normalised space.
    seed: seeds the mask (the global RNG is left as it was); mask_ratio: overrides the config's.
    Returns ``{"path", "mask" (batch, num_patches) 1 = hidden, "loss", "scale"}``. The file is written atomically.
    """
    if not hasattr(model, "reconstruct"):
        raise TypeError(f"model must be a pre-training model with a reconstruct() method, got {type(model).__name__}")
    from PIL import Image, ImageDraw

    parameter = next(model.parameters())
    pixel_values = _pixel_values(images_or_pixel_values, processor).to(parameter.device, parameter.dtype)
    was_training = model.training
    model.eval()
    devices = [pixel_values.device.index or 0] if pixel_values.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):  # a fixed mask without disturbing the caller's RNG
            torch.manual_seed(seed)
            output = model(pixel_values, mask_ratio=mask_ratio)
            masked, reconstruction, pasted = model.reconstruct(pixel_values, output)
    finally:
        model.train(was_training)

    columns = [denormalize(x, processor) for x in (pixel_values, masked, reconstruction, pasted)]
    batch, _, height, width = pixel_values.shape
    scale = tile_scale(height, width)
    tile_h, tile_w = height * scale, width * scale
    mode = "L" if pixel_values.shape[1] == 1 else "RGB"
    grid = Image.new(mode, grid_size(batch, tile_h, tile_w), color=255 if mode == "L" else (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    for col, title in enumerate(COLUMNS):
        draw.text((tile_origin(0, col, tile_h, tile_w)[0], 2), title, fill=0 if mode == "L" else (0, 0, 0))
    for row in range(batch):
        for col, images in enumerate(columns):
            tile = Image.fromarray(_to_uint8(images[row])).resize((tile_w, tile_h), Image.Resampling.NEAREST)
            grid.paste(tile, tile_origin(row, col, tile_h, tile_w))

    path = os.fspath(replace_atomically(path, lambda target: grid.save(target, format="PNG")))
    loss = getattr(output, "loss", None)
    return {
        "path": path,
        "mask": output.mask.detach().cpu(),
        "loss": None if loss is None else float(loss),
        "scale": scale,
    }


# ----------------------------------------------------------------------------------------------- command line


def add_arguments(parser) -> None:
    from .arguments import positive_int, rate

    parser.add_argument("model", metavar="RUN_DIR_OR_MODEL", help="a pretrain run folder, a saved model or a preset")
    parser.add_argument("--dataset", help="data set (default: the one in RUN_DIR/run_args.json)")
    parser.add_argument("--split", help="split (default: the run's, else train)")
    parser.add_argument("--num-samples", type=positive_int, default=8, help="rows of the grid")
    parser.add_argument("--output", default="reconstruction.png", help="PNG file to write")
    parser.add_argument("--mask-ratio", type=rate, default=None, help="override the model's mask ratio")
    parser.add_argument("--seed", type=int, default=0, help="seed of the masks")


def load_pretraining_model(name_or_path: str):
    """(model, processor) from a run folder / saved model / Hub id, or a randomly initialised preset."""
    from transformers import AutoImageProcessor, AutoModelForPreTraining

    from .. import registry

    if name_or_path in registry.PRESETS:
        return registry.create_model(name_or_path), registry.create_processor(name_or_path)
    model = AutoModelForPreTraining.from_pretrained(name_or_path)
    try:
        processor = AutoImageProcessor.from_pretrained(name_or_path)
    except (OSError, ValueError):  # a folder saved without its processor: use the method's default
        processor = registry.processor_for_config(model.config)
    return model, processor


def first_images(dataset_name: str, split: str, count: int) -> list:
    """The first ``count`` images of a data set (PIL images)."""
    from .data import IMAGE_COLUMNS, find_column, load_image_dataset

    dataset = load_image_dataset(dataset_name, split)
    column = find_column(dataset, IMAGE_COLUMNS, "image")
    return [example[column] for example in itertools.islice(iter(dataset), count)]


def run(args) -> int:
    from .. import registry
    from .arguments import check_model_path

    if args.num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1, got {args.num_samples}")
    if args.model not in registry.PRESETS:  # a missing local folder is an error here, not a Hub lookup
        check_model_path(args.model, "model", what="a pretrain run folder, a saved model, a Hub id or a preset (hf-mae list)")
    saved_args = {}
    run_args_path = os.path.join(args.model, "run_args.json")
    if os.path.isfile(run_args_path):
        with open(run_args_path) as handle:
            saved_args = json.load(handle)
    dataset = args.dataset or saved_args.get("dataset")
    if dataset is None:
        raise ValueError(f"--dataset is required: {args.model!r} has no run_args.json naming its data set")
    split = args.split or saved_args.get("split") or "train"
    model, processor = load_pretraining_model(args.model)
    result = save_reconstruction_grid(
        model, processor, first_images(dataset, split, args.num_samples), args.output, args.seed, args.mask_ratio
    )
    print(f"wrote {result['path']} ({args.num_samples} samples, masked loss {result['loss']:.4f})")
    return 0


if __name__ == "__main__":
    import argparse
    import sys

    _parser = argparse.ArgumentParser(prog="hf-mae visualize")
    add_arguments(_parser)
    sys.exit(run(_parser.parse_args()))
