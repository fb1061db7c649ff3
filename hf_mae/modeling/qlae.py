"""QLAE: Disentanglement via Latent Quantization (Hsu, Dorrell, Whittington, Wu, Finn; NeurIPS 2023),
arXiv:2305.18378; official code kylehkhsu/latent_quantization (JAX / Equinox).

Not a masked method: an autoencoder whose latent is quantised, as in the paper's Section 3:
1. a convolutional encoder maps the image to ``num_latents`` continuous values ``z`` (the paper: twice the number of
   the data's factors of variation);
2. each dimension j has its own learnable scalar codebook of ``num_latent_values`` values (10), initialised evenly
   spaced; ``z`` is quantised to the nearest value per dimension, with a straight-through gradient
   (``quantization.LatentQuantizer``);
3. a decoder reconstructs the image from the quantised code; the loss is the reconstruction (binary cross-entropy
   on the decoder's logits against pixels in [0, 1]) + 0.01 quantisation + 0.01 commitment (VQ-style terms);
4. strong weight decay: AdamW with ``weight_decay`` 0.1 on the encoder's and decoder's weights (not on biases or
   the codebooks), lr 1e-3, which the registry row gives ``hf-mae pretrain`` (``pretrain_weight_decay``).

The architecture follows the official configs (``encoder_partial/image.yaml``, ``decoder_partial/style_image.yaml``,
the decoder of ``train_ae.yaml``): stages of 3x3 stride-1 convolutions and a 4x4 stride-2 one, bias-free, instance
norm, leaky ReLU 0.2; two ReLU dense layers of 256; a linear head to the latents. The decoder maps the code through
two ReLU dense layers to a style vector ``w``; a constant 0.1 input map (learned) goes through mirrored transposed
convolutions, each followed by leaky ReLU, instance norm without affine and a per-channel ``scale, bias = relu(W w)``
modulation; a final 3x3 convolution gives the logits.

``latent_quantization=False`` is the paper's continuous-latent autoencoder of the same size (``ae.yaml``): the
baseline the disentanglement benchmark compares against (``benchmarks/qlae_disentanglement.py``).

Departures from the paper / official code:
- PyTorch layers initialised as Equinox initialises them (uniform in +-1/sqrt(fan_in)), not bit-identical;
- the continuous AE is offered with the same optimiser settings as QLAE (the paper tuned its weight decay, 0 or
  1e-3); pass ``--weight-decay`` to change it;
- gradient clipping (the official ``clip: 1.``) is ``hf-mae pretrain --clip-grad 1``, off by default as for every
  method;
- no InfoGAN variant (QLInfoWGAN-GP), only the autoencoder.

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Unpack

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedConfig
from transformers import initialization as init
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple

from .base import MaskedModelPreTrainedModel, check_choice, check_int
from .losses import classification_loss
from .quantization import LatentQuantizer

NEGATIVE_SLOPE = 0.2  # the official blocks' leaky ReLU
NORM_EPS = 1e-6  # the official instance norms' eps


def check_widths(name: str, value) -> list[int]:
    """A non-empty list of ints >= 1 (JSON stores tuples as lists)."""
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{name} must be a non-empty list of ints >= 1, got {value!r}")
    for width in value:
        check_int(f"{name} entries", width)
    return list(value)


class QLAEConfig(PreTrainedConfig):
    r"""Configuration of a QLAE model. Defaults: the official code's 64x64 image autoencoder with 12 latents
    (Shapes3D's 6 factors, twice over).

    image_size: side of the square input (an int); must be divisible by 2 ** len(conv_widths).
    num_channels: channels of the input images.
    conv_widths: channels of the encoder's stages (each halves the resolution; the decoder mirrors them), the
        official (32, 64, 128, 256).
    blocks_per_stage: convolutions per stage: ``blocks_per_stage - 1`` 3x3 stride-1 ones and a 4x4 stride-2 one
        (official: 3).
    dense_widths: ReLU dense layers after the encoder's convolutions and in the decoder's style mapping (official:
        (256, 256)).
    num_latents: latent dimensions (the paper: twice the number of factors of variation).
    latent_quantization: quantise the latent (QLAE); False: the continuous autoencoder of the same size.
    num_latent_values: values in each dimension's scalar codebook (official: 10).
    latent_init_bound: the codebooks start at ``linspace(-latent_init_bound, latent_init_bound, num_latent_values)``
        (official: 0.5).
    learnable_latent_values: train the codebook values (official ``optimize_values: True``).
    reconstruction_loss: "bce" (official: sigmoid binary cross-entropy of the logits against pixels in [0, 1]) or
        "mse" (hf-mae's choice: the logits regress the pixels directly).
    quantization_loss_weight, commitment_loss_weight: weights of the VQ-style terms (official: 0.01 each).
    """

    model_type = "qlae"

    image_size: int = 64
    num_channels: int = 3
    conv_widths: list[int] | tuple[int, ...] = (32, 64, 128, 256)
    blocks_per_stage: int = 3
    dense_widths: list[int] | tuple[int, ...] = (256, 256)
    num_latents: int = 12
    latent_quantization: bool = True
    num_latent_values: int = 10
    latent_init_bound: float = 0.5
    learnable_latent_values: bool = True
    reconstruction_loss: str = "bce"
    quantization_loss_weight: float = 0.01
    commitment_loss_weight: float = 0.01

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_int("image_size", self.image_size)
        check_int("num_channels", self.num_channels)
        self.conv_widths = check_widths("conv_widths", self.conv_widths)
        self.dense_widths = check_widths("dense_widths", self.dense_widths)
        check_int("blocks_per_stage", self.blocks_per_stage)
        check_int("num_latents", self.num_latents)
        check_int("num_latent_values", self.num_latent_values, minimum=2)
        reduction = 2 ** len(self.conv_widths)
        if self.image_size % reduction:
            raise ValueError(f"image_size {self.image_size} must be divisible by 2 ** len(conv_widths) = {reduction} "
                             f"(each of the {len(self.conv_widths)} stages halves the resolution)")
        if isinstance(self.latent_init_bound, bool) or not isinstance(self.latent_init_bound, (int, float)) \
                or not self.latent_init_bound > 0:
            raise ValueError(f"latent_init_bound must be a number > 0, got {self.latent_init_bound!r}")
        check_choice("reconstruction_loss", self.reconstruction_loss, ("bce", "mse"))
        for name in ("quantization_loss_weight", "commitment_loss_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")

    @property
    def transition_size(self) -> int:
        """Side of the encoder's last feature map (and of the decoder's input map)."""
        return self.image_size // 2 ** len(self.conv_widths)


def stage_layout(widths, blocks_per_stage: int) -> list[tuple[int, int, int]]:
    """(width, kernel, stride) of every convolution: per stage ``blocks_per_stage - 1`` 3x3 stride-1 ones, then a
    4x4 stride-2 one (padding 1 throughout), as the official ``widths / kernel_sizes / strides`` lists."""
    return [(width, 3, 1) if block < blocks_per_stage - 1 else (width, 4, 2)
            for width in widths for block in range(blocks_per_stage)]


@dataclass
class QLAEModelOutput(ModelOutput):
    """
    last_hidden_state: (batch, num_latents) the latent the decoder reads: the straight-through quantised code (the
        codebook values) for QLAE, the continuous latent otherwise.
    codes: (batch, num_latents) long, the index of each dimension's value in its codebook (None without
        quantisation).
    continuous_latents: (batch, num_latents) the encoder's output before quantisation.
    pooler_output: (batch, num_latents) the same as ``last_hidden_state``: one feature per image.
    """

    last_hidden_state: torch.Tensor | None = None
    codes: torch.Tensor | None = None
    continuous_latents: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None


@dataclass
class QLAEForPreTrainingOutput(ModelOutput):
    """
    loss: scalar, reconstruction + quantization_loss_weight * quantisation + commitment_loss_weight * commitment.
    logits: (batch, channels, height, width) the decoder's output: logits of the pixels ("bce"; ``sigmoid`` gives
        the image) or the pixels ("mse").
    latents, codes, continuous_latents: as in :class:`QLAEModelOutput`.
    reconstruction_loss, quantization_loss, commitment_loss: the terms, unweighted (the last two None without
        quantisation).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    latents: torch.Tensor | None = None
    codes: torch.Tensor | None = None
    continuous_latents: torch.Tensor | None = None
    reconstruction_loss: torch.Tensor | None = None
    quantization_loss: torch.Tensor | None = None
    commitment_loss: torch.Tensor | None = None


class QLAEEncoder(nn.Module):
    """Images (batch, C, H, W) -> continuous latents (batch, num_latents): conv stages (conv, instance norm, leaky
    ReLU), flatten, ReLU dense layers, a linear head."""

    def __init__(self, config: QLAEConfig):
        super().__init__()
        layers, channels = [], config.num_channels
        for width, kernel, stride in stage_layout(config.conv_widths, config.blocks_per_stage):
            layers += [nn.Conv2d(channels, width, kernel, stride, padding=1, bias=False),
                       nn.GroupNorm(width, width, eps=NORM_EPS), nn.LeakyReLU(NEGATIVE_SLOPE)]
            channels = width
        self.convs = nn.Sequential(*layers)
        features = channels * config.transition_size**2
        dense = []
        for width in config.dense_widths:
            dense += [nn.Linear(features, width), nn.ReLU()]
            features = width
        self.dense = nn.Sequential(*dense)
        self.head = nn.Linear(features, config.num_latents)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.head(self.dense(self.convs(pixel_values).flatten(1)))


class StyleBlock(nn.Module):
    """A transposed convolution (bias-free), leaky ReLU, instance norm without affine, then a per-channel
    ``x * scale + bias`` with ``scale, bias = relu(Linear(w))`` from the style vector ``w``."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, style_size: int):
        super().__init__()
        self.conv = nn.ConvTranspose2d(in_channels, out_channels, kernel, stride, padding=1, bias=False)
        self.norm = nn.GroupNorm(out_channels, out_channels, eps=NORM_EPS, affine=False)
        self.modulation = nn.Linear(style_size, 2 * out_channels)

    def forward(self, hidden: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        scale, bias = F.relu(self.modulation(style)).chunk(2, dim=-1)
        hidden = self.norm(F.leaky_relu(self.conv(hidden), NEGATIVE_SLOPE))
        return hidden * scale[:, :, None, None] + bias[:, :, None, None]


class QLAEDecoder(nn.Module):
    """Latents (batch, num_latents) -> logits (batch, C, H, W): a ReLU dense style mapping, a learned constant input
    map (conv_widths[-1], s, s) through mirrored :class:`StyleBlock` stages, a final 3x3 convolution (bias-free)."""

    def __init__(self, config: QLAEConfig):
        super().__init__()
        dense, features = [], config.num_latents
        for width in config.dense_widths:
            dense += [nn.Linear(features, width), nn.ReLU()]
            features = width
        self.mapping = nn.Sequential(*dense)
        size, channels = config.transition_size, config.conv_widths[-1]
        self.input_map = nn.Parameter(torch.full((channels, size, size), 0.1))
        blocks = []
        for width, kernel, stride in stage_layout(config.conv_widths[::-1], config.blocks_per_stage):
            blocks.append(StyleBlock(channels, width, kernel, stride, features))
            channels = width
        self.blocks = nn.ModuleList(blocks)
        self.out = nn.Conv2d(channels, config.num_channels, 3, 1, padding=1, bias=False)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        style = self.mapping(latents)
        hidden = self.input_map.to(style.dtype).expand(latents.shape[0], -1, -1, -1)
        for block in self.blocks:
            hidden = block(hidden, style)
        return self.out(hidden)


class QLAEPreTrainedModel(MaskedModelPreTrainedModel):
    config_class = QLAEConfig
    base_model_prefix = "qlae"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False
    _no_split_modules = []
    # convolutions and dense layers: no attention to choose a backend for
    _supports_sdpa = False
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = False

    @torch.no_grad()
    def _init_weights(self, module):
        """As Equinox initialises (the official code): weights and biases uniform in +-1/sqrt(fan_in), fan_in =
        in_channels * kernel area (in features for a Linear); instance norms' affine at 1, 0; the decoder's input
        map at 0.1; the codebooks at their linspace (the base class's rule)."""
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if isinstance(module, nn.Linear):
                fan_in = module.in_features
            else:
                fan_in = module.in_channels * math.prod(module.kernel_size)
            bound = 1.0 / math.sqrt(fan_in)
            init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.GroupNorm):
            if module.affine:
                init.ones_(module.weight)
                init.zeros_(module.bias)
        elif isinstance(module, QLAEDecoder):
            init.constant_(module.input_map, 0.1)
        else:
            super()._init_weights(module)

    def check_pixel_values(self, pixel_values) -> None:
        """pixel_values must be a float (batch >= 1, num_channels, image_size, image_size) tensor."""
        config = self.config
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
        if not torch.is_floating_point(pixel_values):
            raise TypeError(f"pixel_values must have a floating-point dtype (pixels in [0, 1]), got dtype "
                            f"{pixel_values.dtype}")
        if pixel_values.ndim != 4:
            raise ValueError(f"pixel_values must have 4 dimensions (batch, channels, height, width), got shape "
                             f"{tuple(pixel_values.shape)}")
        if pixel_values.shape[0] == 0:
            raise ValueError("pixel_values is an empty batch (0 images)")
        if pixel_values.shape[1] != config.num_channels:
            raise ValueError(f"pixel_values has {pixel_values.shape[1]} channels, the config's num_channels is "
                             f"{config.num_channels}")
        if tuple(pixel_values.shape[-2:]) != (config.image_size, config.image_size):
            raise ValueError(f"pixel_values is {tuple(pixel_values.shape[-2:])}, the config's image_size is "
                             f"{config.image_size}: the encoder's dense layer is sized to it (resize the images)")


class QLAEModel(QLAEPreTrainedModel):
    """The encoder and the latent quantiser: images -> the latent code (a feature extractor; deterministic)."""

    def __init__(self, config: QLAEConfig):
        super().__init__(config)
        self.encoder = QLAEEncoder(config)
        self.quantizer = (
            LatentQuantizer(config.num_latents, config.num_latent_values, config.latent_init_bound,
                            learnable=config.learnable_latent_values)
            if config.latent_quantization else None
        )  # fmt: skip
        self.post_init()

    def encode(self, pixel_values: torch.Tensor):
        """(continuous latents (batch, num_latents), the quantiser's output or None without quantisation)."""
        self.check_pixel_values(pixel_values)
        continuous = self.encoder(pixel_values)
        return continuous, (self.quantizer(continuous) if self.quantizer is not None else None)

    @can_return_tuple
    def forward(self, pixel_values: torch.Tensor | None = None, mask_ratio: float | None = None,
                **kwargs: Unpack[TransformersKwargs]):
        """pixel_values: (batch, channels, image_size, image_size) in [0, 1]. mask_ratio: None or 0 only (the masked
        methods' feature call ``model(x, mask_ratio=0.0)`` works; QLAE masks nothing). Returns
        :class:`QLAEModelOutput`."""
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        check_no_masking(mask_ratio)
        continuous, quantized = self.encode(pixel_values)
        latents = quantized.quantized if quantized is not None else continuous
        return QLAEModelOutput(
            last_hidden_state=latents,
            codes=quantized.codes if quantized is not None else None,
            continuous_latents=continuous,
            pooler_output=latents,
        )


def check_no_masking(mask_ratio) -> None:
    if mask_ratio is not None and (isinstance(mask_ratio, bool) or mask_ratio != 0):
        raise ValueError(f"mask_ratio must be None or 0 for QLAE, an autoencoder that masks nothing; got {mask_ratio!r}")


class QLAEForPreTraining(QLAEPreTrainedModel):
    """Encoder, latent quantiser and decoder with QLAE's loss."""

    def __init__(self, config: QLAEConfig):
        super().__init__(config)
        self.qlae = QLAEModel(config)
        self.decoder = QLAEDecoder(config)
        self.post_init()

    @can_return_tuple
    def forward(self, pixel_values: torch.Tensor | None = None, mask_ratio: float | None = None,
                **kwargs: Unpack[TransformersKwargs]):
        """pixel_values: (batch, channels, image_size, image_size), the targets too: pixels in [0, 1] for "bce"
        (the processor rescales without normalising). mask_ratio: None or 0 only. Returns
        :class:`QLAEForPreTrainingOutput`."""
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        check_no_masking(mask_ratio)
        continuous, quantized = self.qlae.encode(pixel_values)
        latents = quantized.quantized if quantized is not None else continuous
        logits = self.decoder(latents)
        config, target = self.config, pixel_values.float()  # the loss in float32 even under autocast
        if config.reconstruction_loss == "bce":  # the official mean of sigmoid BCE over pixels and channels
            reconstruction = F.binary_cross_entropy_with_logits(logits.float(), target)
        else:
            reconstruction = F.mse_loss(logits.float(), target)
        loss = reconstruction
        if quantized is not None:
            loss = (loss + config.quantization_loss_weight * quantized.quantization_loss
                    + config.commitment_loss_weight * quantized.commitment_loss)  # fmt: skip
        return QLAEForPreTrainingOutput(
            loss=loss,
            logits=logits,
            latents=latents,
            codes=quantized.codes if quantized is not None else None,
            continuous_latents=continuous,
            reconstruction_loss=reconstruction,
            quantization_loss=quantized.quantization_loss if quantized is not None else None,
            commitment_loss=quantized.commitment_loss if quantized is not None else None,
        )

    @torch.no_grad()
    def reconstruct_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(batch, C, H, W) -> the reconstructions in pixel space (sigmoid of the logits for "bce")."""
        logits = self(pixel_values).logits
        return torch.sigmoid(logits) if self.config.reconstruction_loss == "bce" else logits


class QLAEForImageClassification(QLAEPreTrainedModel):
    """The encoder (and quantiser) with a linear classifier on the latent (hf-mae's choice: the latent is QLAE's
    representation). The codebooks are frozen: the straight-through latent passes the classifier's gradient to the
    encoder only (pre-training's quantisation term is what trains them), so they stay as pre-trained."""

    def __init__(self, config: QLAEConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.qlae = QLAEModel(config)
        if self.qlae.quantizer is not None:
            self.qlae.quantizer.codebook.requires_grad_(False)
        self.classifier = nn.Linear(config.num_latents, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    @can_return_tuple
    def forward(self, pixel_values: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                **kwargs: Unpack[TransformersKwargs]):
        """pixel_values (batch, C, H, W); labels (batch,). Returns ImageClassifierOutput (logits (batch, num_labels))."""
        latents = self.qlae(pixel_values, return_dict=True).last_hidden_state
        logits = self.classifier(latents)
        loss = classification_loss(logits, labels, self.config) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits)


__all__ = [
    "QLAEConfig", "QLAEPreTrainedModel", "QLAEModel", "QLAEForPreTraining", "QLAEForImageClassification",
    "QLAEModelOutput", "QLAEForPreTrainingOutput",
]


# ----------------------------------------------------------------------------------------------- registry row
METHOD = dict(
    name="qlae",
    paper="Disentanglement via Latent Quantization (Hsu et al., NeurIPS 2023), arXiv:2305.18378",
    config_class=QLAEConfig,
    model_classes={"base": QLAEModel, "pretraining": QLAEForPreTraining,
                   "image-classification": QLAEForImageClassification},
    processor="MAEImageProcessor",
    # pixels in [0, 1]: the BCE target (the official data pipeline divides by 255 and normalises nothing)
    processor_settings=dict(do_normalize=False),
    # the official optimiser: lr 1e-3, optax's AdamW betas (0.9, 0.999), weight decay 0.1 ("l2: 0.1  # adamw");
    # no augmentation (a crop or flip would change the factors of variation)
    pretrain_lr=1e-3, pretrain_betas=(0.9, 0.999), pretrain_weight_decay=0.1, pretrain_augmentation=None,
    presets={
        # CPU-sized: 32x32 sprites (hf_mae.training.sprites, 5 factors), 10 latents
        "qlae-tiny": dict(image_size=32, conv_widths=[16, 32], blocks_per_stage=2, dense_widths=[64], num_latents=10),
        # the official 64x64 autoencoder with Shapes3D's 12 latents (6 factors, twice over)
        "qlae-shapes3d": dict(image_size=64, num_channels=3, num_latents=12),
    },
    exports=["QLAEPreTrainedModel", "QLAEModelOutput", "QLAEForPreTrainingOutput"],
)
