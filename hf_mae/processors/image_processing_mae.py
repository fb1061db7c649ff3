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


__all__ = ["MAEImageProcessor"]
