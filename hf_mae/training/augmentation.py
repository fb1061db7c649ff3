"""Pre-training augmentations of image methods: RandomResizedCrop + horizontal flip, one recipe per method, every
draw seeded per sample.

A recipe is a registry row's ``pretrain_augmentation`` (``Method.pretrain_augmentation``):
- a dict ``crop_scale`` (area share, min-max), ``crop_ratio`` (aspect ratio w/h, min-max), ``resample``
  ("bicubic" or "bilinear") and ``flip_probability``; keys a row leaves out take MAE's values (``MAE_RECIPE``);
- ``"views"``: the processor draws the method's own random views (LUT's two crops, CropMAE's global-to-local
  pair, ``image_processing_views.py``); only their random numbers are seeded per sample here;
- ``None``: nothing (non-image modalities, which augment in their own processors).

Seeding: sample ``index`` in epoch ``epoch`` of a run seeded ``seed`` draws from ``torch.Generator`` seeded with
:func:`sample_seed` ``(seed, epoch, index)``. Its augmentation therefore depends neither on the worker that loads it,
nor on the batches before it, nor on the global RNG (which the masks use): a resumed run, or one with more
``--num-workers``, sees the same pixels.

Resampling: Pillow's ``Image.resize(size, BICUBIC, box=crop)``, the crop taken in continuous coordinates and
resampled once, straight to the model's size. That is what the official code runs (torchvision's
``RandomResizedCrop`` on the PIL images of an ``ImageFolder`` calls Pillow's resize, whose filter widens with the
downscale factor, i.e. antialiased), and the data sets hand us PIL images; torch's ``interpolate(bicubic,
antialias=True)`` would need a tensor round trip and differs from Pillow at the borders.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

# MAE's main_pretrain.py: RandomResizedCrop(input_size, scale=(0.2, 1.0), interpolation=3 (bicubic)) with
# torchvision's default ratio (3/4, 4/3), then RandomHorizontalFlip() (p 0.5)
MAE_RECIPE = {"crop_scale": (0.2, 1.0), "crop_ratio": (3 / 4, 4 / 3), "resample": "bicubic", "flip_probability": 0.5}
VIEWS = "views"  # the processor makes its own random views
RESAMPLE = ("bicubic", "bilinear")


def check_recipe(recipe, where: str = "pretrain_augmentation"):
    """A row's ``pretrain_augmentation`` -> None, ``"views"`` or the full recipe dict (MAE's values for missing keys);
    a ValueError naming ``where``, the bad key, what was given and what is allowed."""
    if recipe is None or recipe == VIEWS:
        return recipe
    if not isinstance(recipe, dict):
        raise ValueError(f"{where} must be None, {VIEWS!r} or a dict with keys {sorted(MAE_RECIPE)}, got {recipe!r}")
    unknown = sorted(set(recipe) - set(MAE_RECIPE))
    if unknown:
        raise ValueError(f"{where} has unknown key(s) {unknown}; allowed: {sorted(MAE_RECIPE)}")
    full = {**MAE_RECIPE, **recipe}
    for key, low, high in (("crop_scale", 0.0, 1.0), ("crop_ratio", 0.0, math.inf)):
        value = full[key]
        if not (isinstance(value, (tuple, list)) and len(value) == 2 and low < value[0] <= value[1] <= high):
            raise ValueError(f"{where}[{key!r}] must be a pair (min, max) with {low} < min <= max <= {high}, got {value!r}")
        full[key] = (float(value[0]), float(value[1]))
    if full["resample"] not in RESAMPLE:
        raise ValueError(f"{where}['resample'] must be one of {RESAMPLE}, got {full['resample']!r}")
    if not 0.0 <= full["flip_probability"] <= 1.0:
        raise ValueError(f"{where}['flip_probability'] must be in [0, 1], got {full['flip_probability']!r}")
    return full


def describe(recipe) -> str:
    """One line for --help, logs and metrics.json."""
    if recipe is None:
        return "none"
    if recipe == VIEWS:
        return "the processor's own random views"
    scale, ratio = recipe["crop_scale"], recipe["crop_ratio"]
    return (f"RandomResizedCrop(scale {scale[0]:g}-{scale[1]:g}, ratio {ratio[0]:.3g}-{ratio[1]:.3g}, "
            f"{recipe['resample']}) + horizontal flip p {recipe['flip_probability']:g}")


def sample_seed(*parts) -> int:
    """A 63-bit seed mixed from ``parts`` (run seed, epoch, sample index, ...): neighbouring indices get unrelated
    streams, which ``seed + index`` would not give across epochs."""
    digest = hashlib.blake2b(":".join(str(int(part)) for part in parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * torch.rand((), generator=generator, dtype=torch.float64).item()


def random_resized_box(width: float, height: float, scale, ratio, generator: torch.Generator, attempts: int = 10):
    """torchvision's RandomResizedCrop.get_params in continuous coordinates: up to ``attempts`` draws of an area share
    (uniform in ``scale``) and an aspect ratio (log-uniform in ``ratio``) until the box fits; then the whole image
    cut to the nearest allowed ratio, centred. Returns (left, top, right, bottom)."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target = area * _uniform(*scale, generator)
        aspect = math.exp(_uniform(*log_ratio, generator))
        w, h = math.sqrt(target * aspect), math.sqrt(target / aspect)
        if w <= width and h <= height:
            left, top = _uniform(0.0, width - w, generator), _uniform(0.0, height - h, generator)
            return left, top, left + w, top + h
    aspect = min(max(width / height, ratio[0]), ratio[1])
    w, h = (width, width / aspect) if width / height <= aspect else (height * aspect, height)
    return (width - w) / 2, (height - h) / 2, (width + w) / 2, (height + h) / 2


@dataclass(frozen=True)
class CropAndFlip:
    """RandomResizedCrop to ``size`` (width, height) + horizontal flip, drawing from the generator it is handed."""

    size: tuple
    crop_scale: tuple
    crop_ratio: tuple
    resample: str
    flip_probability: float

    def __call__(self, image, generator: torch.Generator):
        from PIL import Image

        image = _as_pil(image)
        box = random_resized_box(*image.size, self.crop_scale, self.crop_ratio, generator)
        flip = torch.rand((), generator=generator).item() < self.flip_probability
        filter_ = Image.Resampling.BICUBIC if self.resample == "bicubic" else Image.Resampling.BILINEAR
        view = image.resize(self.size, resample=filter_, box=box)
        return view.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else view


def _as_pil(image):
    from PIL import Image

    if isinstance(image, Image.Image):
        return image
    from transformers.image_transforms import to_pil_image

    return to_pil_image(image.numpy() if isinstance(image, torch.Tensor) else image)


def build_augmentation(recipe, processor):
    """The callable ``(image, generator) -> image`` of a crop recipe at the processor's size; None for ``None`` and
    ``"views"`` (nothing to do before the processor)."""
    recipe = check_recipe(recipe)
    if recipe is None or recipe == VIEWS:
        return None
    size = getattr(processor, "size", None) or {}
    if "height" not in size or "width" not in size:
        raise ValueError(
            f"a crop augmentation needs a processor with size {{'height', 'width'}}; {type(processor).__name__} has "
            f"size {size!r}: pass --no-augment"
        )
    return CropAndFlip(size=(int(size["width"]), int(size["height"])), **recipe)


__all__ = ["MAE_RECIPE", "VIEWS", "CropAndFlip", "build_augmentation", "check_recipe", "describe",
           "random_resized_box", "sample_seed"]
