"""Image processor for MAE-style image models: resize, rescale to [0, 1], normalise, channels first.

A ``PilBackend`` processor (numpy + Pillow): no torchvision needed. Accepts PIL images, numpy arrays and torch
tensors, grey-scale or colour (converted to RGB when ``do_convert_rgb``).

Remote-code rule: this file imports only transformers (see DESIGN.md).
"""

from transformers.image_processing_backends import PilBackend
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling


class MAEImageProcessor(PilBackend):
    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BICUBIC  # MAE's fine-tuning and pre-training transforms use bicubic
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"height": 224, "width": 224}
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True

    @classmethod
    def from_model_config(cls, config, **settings):
        """The processor for ``config``: images resized to its ``image_size``, plus the fixed ``settings``."""
        height, width = image_size_pair(config.image_size)
        return cls(size={"height": height, "width": width}, **settings)


def image_size_pair(image_size) -> tuple[int, int]:
    """A config's ``image_size`` (an int, or a (height, width) pair that JSON stores as a list) as (height, width)."""
    return (int(image_size[0]), int(image_size[1])) if isinstance(image_size, (tuple, list)) else (image_size,) * 2


__all__ = ["MAEImageProcessor", "image_size_pair"]
