"""Two-view image processor for methods that learn from two augmented views of one image (LUT, CropMAE).

Called like any image processor it is ``MAEImageProcessor``: one deterministic view in ``pixel_values`` (what
fine-tuning, probing and feature extraction want). With ``return_views=True`` (what ``hf-mae pretrain`` asks for) it
returns two random views of every image, ``pixel_values`` and ``pixel_values_2``:

- ``view_mode="independent"`` (LUT): each view is its own random resized crop of the image (area share drawn from
  ``crop_scale``, aspect ratio from ``crop_ratio``), flipped left-right with probability ``flip_probability``;
- ``view_mode="global_to_local"`` (CropMAE): ``pixel_values_2`` is a random resized crop of the image (the global
  view, ``crop_scale``) and ``pixel_values`` a random resized crop *of that crop* (the local view,
  ``local_crop_scale``), so the masked local view always lies inside the global one; each view is flipped on its
  own, as the official ``GlobalToLocal``.

Crops are taken in continuous image coordinates and resampled once, straight to ``size`` (Pillow's ``resize(box=)``),
so small images (scikit-learn's 8x8 digits) give smooth crops and large ones lose nothing to a second resize. The
random draws use torch's global generator: ``torch.manual_seed`` fixes them, and DataLoader workers get their own
streams.

Remote-code rule: this file imports only transformers, torch and Pillow (a transformers dependency for this backend).
"""

from __future__ import annotations

import math

import torch
from PIL import Image
from transformers.image_processing_utils import BatchFeature
from transformers.image_transforms import to_pil_image
from transformers.image_utils import make_flat_list_of_images
from transformers.processing_utils import ImagesKwargs

from .image_processing_mae import MAEImageProcessor

VIEW_MODES = ("independent", "global_to_local")


class TwoViewImagesKwargs(ImagesKwargs, total=False):
    view_mode: str
    crop_scale: list
    local_crop_scale: list
    crop_ratio: list
    flip_probability: float


def _uniform(low: float, high: float) -> float:
    return low + (high - low) * torch.rand(()).item()


def _coin(probability: float) -> bool:
    return torch.rand(()).item() < probability


def random_resized_box(width: float, height: float, scale, ratio, attempts: int = 10) -> tuple:
    """A random (left, top, right, bottom) box of area share in ``scale`` and aspect ratio in ``ratio`` inside a
    ``width`` x ``height`` region; after ``attempts`` misses, the largest centred box of a clamped ratio."""
    area = width * height
    log_low, log_high = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(attempts):
        target = area * _uniform(*scale)
        aspect = math.exp(_uniform(log_low, log_high))
        w, h = math.sqrt(target * aspect), math.sqrt(target / aspect)
        if w <= width and h <= height:
            left, top = _uniform(0, width - w), _uniform(0, height - h)
            return left, top, left + w, top + h
    aspect = min(max(width / height, ratio[0]), ratio[1])
    w, h = (width, width / aspect) if width / height <= aspect else (height * aspect, height)
    left, top = (width - w) / 2, (height - h) / 2
    return left, top, left + w, top + h


def _check_range(name: str, value, low: float, high: float):
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and low <= value[0] <= value[1] <= high):
        raise ValueError(f"{name} must be a pair (min, max) with {low} <= min <= max <= {high}, got {value!r}")


class TwoViewImageProcessor(MAEImageProcessor):
    valid_kwargs = TwoViewImagesKwargs
    view_mode = "independent"
    crop_scale = [0.2, 1.0]  # MAE's pre-training crop
    local_crop_scale = [0.3, 0.6]  # CropMAE's local crop, as a share of the global crop
    crop_ratio = [3 / 4, 4 / 3]
    flip_probability = 0.5
    training_call_kwargs = {"return_views": True}  # what ``hf-mae pretrain`` passes (see training/data.py)

    def __call__(self, images, return_views: bool = False, **kwargs) -> BatchFeature:
        """``return_views=False``: MAEImageProcessor's output. ``True``: ``pixel_values`` and ``pixel_values_2``,
        each (N, C, H, W) with ``return_tensors="pt"``, as described in the module docstring."""
        if not return_views:
            return super().__call__(images, **kwargs)
        mode = kwargs.pop("view_mode", self.view_mode)
        scale = kwargs.pop("crop_scale", self.crop_scale)
        local_scale = kwargs.pop("local_crop_scale", self.local_crop_scale)
        ratio = kwargs.pop("crop_ratio", self.crop_ratio)
        flip = kwargs.pop("flip_probability", self.flip_probability)
        if mode not in VIEW_MODES:
            raise ValueError(f"view_mode must be one of {VIEW_MODES}, got {mode!r}")
        _check_range("crop_scale", scale, 0.0, 1.0)
        _check_range("local_crop_scale", local_scale, 0.0, 1.0)
        _check_range("crop_ratio", ratio, 1e-6, float("inf"))
        if not 0.0 <= flip <= 1.0:
            raise ValueError(f"flip_probability must be in [0, 1], got {flip!r}")
        size = kwargs.get("size", self.size)
        size = (size["width"], size["height"])
        resample = kwargs.get("resample", self.resample)

        first, second = [], []
        for image in make_flat_list_of_images(images):
            image = image if isinstance(image, Image.Image) else to_pil_image(image)
            image = image.convert("RGB") if kwargs.get("do_convert_rgb", self.do_convert_rgb) else image
            if mode == "independent":
                views = [
                    self._crop(image, random_resized_box(*image.size, scale, ratio), size, resample, _coin(flip))
                    for _ in range(2)
                ]
            else:
                outer = random_resized_box(*image.size, scale, ratio)
                inner = random_resized_box(outer[2] - outer[0], outer[3] - outer[1], local_scale, ratio)
                inner = (outer[0] + inner[0], outer[1] + inner[1], outer[0] + inner[2], outer[1] + inner[3])
                views = [self._crop(image, box, size, resample, _coin(flip)) for box in (inner, outer)]
            first.append(views[0])
            second.append(views[1])
        kwargs["do_resize"] = False  # the crops are already at ``size``
        return BatchFeature(
            {
                "pixel_values": super().__call__(first, **kwargs)["pixel_values"],
                "pixel_values_2": super().__call__(second, **kwargs)["pixel_values"],
            }
        )

    @staticmethod
    def _crop(image, box, size, resample, flip: bool):
        view = image.resize(size, resample=int(resample), box=box)
        return view.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if flip else view


__all__ = ["TwoViewImageProcessor"]
