"""MultiMAE: Multi-modal Multi-task Masked Autoencoders (Bachmann, Mizrahi, Atanov, Zamir; ECCV 2022).

The method, as in the paper's Section 3 and the official code (EPFL-VILAB/MultiMAE):
1. every modality (RGB, depth, semantic segmentation, ...) has an *input adapter* that turns it into one token per
   patch of the same grid: a linear projection of the patch for dense maps (RGB, 1-channel depth), a learned class
   embedding per pixel then a patch projection for semantic maps; fixed 2D sin-cos positions are added;
2. a fixed budget of visible tokens (``num_encoded_tokens``, 98 of 3 x 196) is split across the modalities by a
   per-sample Dirichlet(alpha = 1) draw, and that many tokens of each modality are kept at random
   (``masking.DirichletBudgetMaskGenerator``); one shared ViT encodes the kept tokens of all modalities plus a
   learned global token;
3. per task, an *output adapter*: the encoder tokens are projected to the decoder width and get a modality embedding
   and positions; queries (the task's own visible tokens and mask tokens at its hidden positions, with positions and
   the task's embedding) cross-attend to them, pass an MLP and 2 transformer blocks, and a linear layer predicts
   every patch;
4. the losses are on the masked tokens only, per modality, summed with equal weights: MSE on RGB, an extra MSE on
   per-patch normalised RGB (``extra_norm_pix_loss``), L1 on depth, cross-entropy on semantic maps.

Modalities are declared in the config (``modalities``: a list of dicts, see :class:`MultiMAEConfig`), so a user can
bring their own. The first modality is the image and reads ``pixel_values``; the others read ``<name>_values`` or are
*pseudo-labelled* from the image, as in the paper, which labels ImageNet with off-the-shelf networks (depth: a DPT with
a ViT-B-Hybrid backbone trained on Omnidata; segmentation: a Mask2Former with a Swin-S backbone trained on COCO, 133
classes; official SETUP.md). A pseudo-labeller is a built-in function, a transformers model given by Hub name or
folder (``AutoModelForDepthEstimation`` for a dense modality, ``AutoModelForSemanticSegmentation`` for a semantic
one), a config dict (a random model, for tests), or an instance / any callable passed to the constructor.

Built-in pseudo-labels (nothing downloaded; what the presets use, and NOT what the paper used):
- ``"blurred_luminance"`` (depth): the image's luminance (Rec. 601 weights), Gaussian-blurred. A stand-in that is a
  smooth function of the RGB image, so that cross-modal prediction can be learned and measured; it is not depth.
- ``"color_palette"`` (semantic): each pixel's nearest colour of a fixed palette of ``num_classes`` colours (a colour
  clustering with fixed centroids, so a class means the same colour in every image). Not semantics.

Departures from the paper / official code:
- The global token comes first in the sequence (hf-mae's cls position; the official code appends it). The encoder is
  permutation-equivariant, so this changes nothing but the layout of ``last_hidden_state``.
- Exact per-modality budgets by largest-remainder rounding (the official code rounds each share, then trims or pads
  across modalities arbitrarily); no ``sample_tasks_uniformly`` option (off in the official configs).
- The input adapters share one sin-cos table (the official ones each build the same table).
- Linear layers are xavier-uniform as a whole (the official code initialises fused q/k/v and k/v blocks separately).
- Pseudo-labels are made inside ``MultiMAEForPreTraining`` from ``pixel_values`` when a batch lacks them, on the
  model's device, under no_grad (the paper pre-computes them offline).
- The truncated depth standardisation (mean and variance of the middle 80 % of each map, as the official training
  loop) is applied inside the model to every modality with ``standardize=True``.

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, Unpack

import torch
from torch import nn
from transformers import initialization as init
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple, merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

from .base import MaskedModelPreTrainedModel, ViTDecoderMixin, ViTImageConfig, check_choice, check_int
from .embeddings import PatchEmbedding2D, check_pixel_values, interpolate_pos_embed, sincos_2d, to_2tuple
from .layers import MLP, Attention, CrossAttention, TransformerBlock, build_blocks, build_encoder_blocks, run_blocks
from .losses import classification_loss, masked_sample_mean
from .masking import (
    DirichletBudgetMaskGenerator,
    budget_mask,
    check_tensor_condition,
    gather_tokens,
    keep_all,
    mask_keeping_lowest,
    restore_tokens,
)
from .targets import patchify, pixel_target
from .teachers import FrozenTeacherMixin, build_auto_model

# the processor's normalisation (MAEImageProcessor: ImageNet mean / std), undone before pseudo-labelling
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
KINDS = ("dense", "semantic")
DENSE_LOSSES = ("mse", "l1")
BUILTIN_LABELERS = {"blurred_luminance": "dense", "color_palette": "semantic"}
MODALITY_DEFAULTS = dict(
    name=None, kind="dense", channels=None, num_classes=None, stride=1, loss=None, input=True, output=True,
    standardize=False, class_embedding_size=64, pseudo_label=None, pseudo_label_config=None, pseudo_label_seed=0,
    blur_sigma=1.0,
)


def paper_modalities(num_classes: int = 133, semantic_stride: int = 4, class_embedding_size: int = 64,
                     blur_sigma: float = 4.0) -> list[dict]:
    """RGB + depth + semantic segmentation as the paper pre-trains (``rgb-depth-semseg``), with the built-in
    pseudo-labellers standing in for the paper's networks."""
    return [
        dict(name="rgb", kind="dense", channels=3, loss="mse"),
        dict(name="depth", kind="dense", channels=1, loss="l1", standardize=True, pseudo_label="blurred_luminance",
             blur_sigma=blur_sigma),
        dict(name="semseg", kind="semantic", num_classes=num_classes, stride=semantic_stride, loss="cross_entropy",
             class_embedding_size=class_embedding_size, pseudo_label="color_palette"),
    ]


class MultiMAEConfig(ViTImageConfig, ViTDecoderMixin):
    r"""Configuration of a MultiMAE model. Defaults: the paper's ViT-B/16 on RGB + depth + semantic segmentation (133
    classes at stride 4), 98 visible tokens, one global token, output adapters of 256-d with 8 heads and 2 blocks.

    The encoder's fields are :class:`ViTImageConfig`'s (``num_channels`` is the image modality's channels), the output
    adapters' (``decoder_*``) :class:`ViTDecoderMixin`'s. Besides:

    modalities: list of dicts, one per modality, in token order; the first is the image (reads ``pixel_values``:
        ``kind="dense"``, ``channels=num_channels``, ``stride=1``, an input, no pseudo-label). Keys:
        name (str, an identifier; the others read ``<name>_values``), kind ("dense": a float map (batch, channels,
        H / stride, W / stride); "semantic": class ids (batch, H / stride, W / stride)), channels (dense), num_classes
        (semantic), stride (the map's resolution is the image's / stride; must divide the patch size; default 1),
        loss ("mse" or "l1" for dense, "cross_entropy" for semantic; default mse / cross_entropy), input / output
        (an input adapter / an output adapter; default both), standardize (dense: the official truncated
        standardisation of the map, per sample; default False), class_embedding_size (semantic: the learned class
        embedding's width; 64 as the paper), pseudo_label (None: the batch must carry the map; "blurred_luminance",
        "color_palette": the built-in labellers; any other string: a transformers model's Hub id or folder),
        pseudo_label_config (a config dict with ``model_type``: a random model of that config instead, seeded by
        pseudo_label_seed), blur_sigma ("blurred_luminance": the Gaussian's sigma in map pixels; hf-mae's choice).
    num_encoded_tokens: visible tokens per sample, across all input modalities (the paper's 98).
    dirichlet_alpha: concentration of the symmetric Dirichlet that splits the budget (the paper's 1.0).
    num_global_tokens: learned global tokens, first in the sequence (the paper's 1).
    extra_norm_pix_loss: a second output adapter on the image (``norm_<image name>``) with MSE on per-patch
        normalised pixels, as the official pre-training config (True).
    classifier_pooling: "mean" (of the modality tokens, then fc_norm) or "cls" (the first global token, then
        fc_norm) for the classifier; hf-mae's choice: "mean" (the official fine-tuning mean-pools the tokens).
    """

    model_type = "multimae"

    decoder_hidden_size: int = 256
    decoder_num_hidden_layers: int = 2
    decoder_num_attention_heads: int = 8
    decoder_intermediate_size: int = 1024
    modalities: list | None = None
    num_encoded_tokens: int = 98
    dirichlet_alpha: float = 1.0
    num_global_tokens: int = 1
    extra_norm_pix_loss: bool = True
    classifier_pooling: str = "mean"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        for name in ("hidden_size", "decoder_hidden_size"):
            if getattr(self, name) % 4:
                raise ValueError(f"{name} {getattr(self, name)} must be divisible by 4 (2D sin-cos positions)")
        if self.modalities is None:
            self.modalities = paper_modalities()
        self.modalities = check_modalities(self.modalities, self.num_channels, to_2tuple(self.patch_size))
        check_int("num_global_tokens", self.num_global_tokens)
        total = self.num_patches * len(self.input_modalities)
        check_int("num_encoded_tokens", self.num_encoded_tokens)
        if self.num_encoded_tokens > total:
            raise ValueError(f"num_encoded_tokens must be at most the input tokens of all modalities, "
                             f"{len(self.input_modalities)} x {self.num_patches} = {total}; got {self.num_encoded_tokens}")
        alpha = self.dirichlet_alpha
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
            raise ValueError(f"dirichlet_alpha must be a number > 0, got {alpha!r}")
        if not isinstance(self.extra_norm_pix_loss, bool):
            raise ValueError(f"extra_norm_pix_loss must be True or False, got {self.extra_norm_pix_loss!r}")
        if self.extra_norm_pix_loss:
            image = self.modalities[0]
            if not image["output"]:
                raise ValueError("extra_norm_pix_loss=True needs an output adapter on the image modality "
                                 f"(modalities[0]['output'] is False)")
            if self.norm_pix_name in [m["name"] for m in self.modalities]:
                raise ValueError(f"a modality is named {self.norm_pix_name!r}, the name of the extra_norm_pix_loss "
                                 "output; rename it or set extra_norm_pix_loss=False")
        check_choice("classifier_pooling", self.classifier_pooling, ("mean", "cls"))

    @property
    def num_patches(self) -> int:
        rows, cols = self.grid_size
        return rows * cols

    @property
    def input_modalities(self) -> list[dict]:
        return [m for m in self.modalities if m["input"]]

    @property
    def output_modalities(self) -> list[dict]:
        return [m for m in self.modalities if m["output"]]

    @property
    def norm_pix_name(self) -> str:
        return f"norm_{self.modalities[0]['name']}"


def check_modalities(modalities, num_channels: int, patch) -> list[dict]:
    """The ``modalities`` list with every key filled in; ValueError naming ``modalities[i]['key']`` otherwise."""
    if not isinstance(modalities, (list, tuple)) or not modalities:
        raise ValueError(f"modalities must be a non-empty list of dicts, got {modalities!r}")
    full, names = [], set()
    for index, given in enumerate(modalities):
        where = f"modalities[{index}]"
        if not isinstance(given, dict):
            raise ValueError(f"{where} must be a dict, got {given!r}")
        unknown = sorted(set(given) - set(MODALITY_DEFAULTS))
        if unknown:
            raise ValueError(f"{where} has unknown key(s) {unknown}; allowed: {sorted(MODALITY_DEFAULTS)}")
        m = {**MODALITY_DEFAULTS, **copy.deepcopy(dict(given))}
        name = m["name"]
        if not (isinstance(name, str) and name.isidentifier()) or name in names or name == "pixel":
            raise ValueError(f"{where}['name'] must be a unique Python identifier (it names <name>_values), got {name!r}")
        names.add(name)
        check_choice(f"{where}['kind']", m["kind"], KINDS)
        for key in ("input", "output", "standardize"):
            if not isinstance(m[key], bool):
                raise ValueError(f"{where}['{key}'] must be True or False, got {m[key]!r}")
        check_int(f"{where}['stride']", m["stride"])
        if patch[0] % m["stride"] or patch[1] % m["stride"]:
            raise ValueError(f"{where}['stride'] {m['stride']} must divide the patch size {patch}")
        if m["kind"] == "dense":
            check_int(f"{where}['channels']", m["channels"])
            m["loss"] = "mse" if m["loss"] is None else m["loss"]
            check_choice(f"{where}['loss']", m["loss"], DENSE_LOSSES)
            m["num_classes"] = None
        else:
            check_int(f"{where}['num_classes']", m["num_classes"], minimum=2)
            check_int(f"{where}['class_embedding_size']", m["class_embedding_size"])
            m["loss"] = "cross_entropy" if m["loss"] is None else m["loss"]
            check_choice(f"{where}['loss']", m["loss"], ("cross_entropy",))
            if m["standardize"]:
                raise ValueError(f"{where}['standardize'] is for dense maps; a semantic map holds class ids")
            m["channels"] = None
        label, settings = m["pseudo_label"], m["pseudo_label_config"]
        if label is not None and not (isinstance(label, str) and label):
            raise ValueError(f"{where}['pseudo_label'] must be None, a built-in labeller {sorted(BUILTIN_LABELERS)} "
                             f"or a Hub id / folder (a non-empty str), got {label!r}")
        if label in BUILTIN_LABELERS and BUILTIN_LABELERS[label] != m["kind"]:
            raise ValueError(f"{where}['pseudo_label'] {label!r} makes {BUILTIN_LABELERS[label]} maps, but the modality "
                             f"is {m['kind']!r}")
        if label == "blurred_luminance" and m["channels"] != 1:
            raise ValueError(f"{where}['pseudo_label'] 'blurred_luminance' makes 1-channel maps; channels is "
                             f"{m['channels']}")
        if settings is not None and not (isinstance(settings, dict) and "model_type" in settings):
            raise ValueError(f"{where}['pseudo_label_config'] must be None or a config dict with a 'model_type' key, "
                             f"got {settings!r}")
        if isinstance(m["pseudo_label_seed"], bool) or not isinstance(m["pseudo_label_seed"], int):
            raise ValueError(f"{where}['pseudo_label_seed'] must be an int, got {m['pseudo_label_seed']!r}")
        sigma = m["blur_sigma"]
        if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not sigma > 0:
            raise ValueError(f"{where}['blur_sigma'] must be a number > 0, got {sigma!r}")
        if not (m["input"] or m["output"]):
            raise ValueError(f"{where} ({name!r}) is neither an input nor an output")
        full.append(m)
    image = full[0]
    if not (image["kind"] == "dense" and image["channels"] == num_channels and image["stride"] == 1 and image["input"]):
        raise ValueError(f"modalities[0] is the image (it reads pixel_values): it must be dense with channels = "
                         f"num_channels ({num_channels}), stride 1 and an input; got {image}")
    if image["pseudo_label"] is not None or image["pseudo_label_config"] is not None:
        raise ValueError("modalities[0] is the image: it is given, never pseudo-labelled")
    return full


def values_name(config, modality: dict) -> str:
    """The keyword a modality's map arrives by: ``pixel_values`` for the image, ``<name>_values`` for the others."""
    return "pixel_values" if modality is config.modalities[0] else f"{modality['name']}_values"


def modality_patch(config, modality: dict) -> tuple[int, int]:
    """The patch of a modality's map that makes one token: the image patch divided by the modality's stride."""
    patch = to_2tuple(config.patch_size)
    return patch[0] // modality["stride"], patch[1] // modality["stride"]


# ---------------------------------------------------------------------------------------------------------------
# Pseudo-labels and the depth standardisation


def unnormalize(pixel_values: torch.Tensor) -> torch.Tensor:
    """The processor's ImageNet-normalised images -> RGB in [0, 1] (float32)."""
    mean = torch.tensor(IMAGE_MEAN, device=pixel_values.device).view(1, -1, 1, 1)
    std = torch.tensor(IMAGE_STD, device=pixel_values.device).view(1, -1, 1, 1)
    return (pixel_values.float() * std + mean).clamp(0.0, 1.0)


def gaussian_blur(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of (batch, channels, H, W), radius ceil(3 sigma), reflected borders."""
    radius = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32, device=maps.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = maps.shape[1]
    pad_h, pad_w = min(radius, maps.shape[-2] - 1), min(radius, maps.shape[-1] - 1)
    out = nn.functional.pad(maps, (pad_w, pad_w, pad_h, pad_h), mode="reflect")
    out = nn.functional.conv2d(out, kernel[radius - pad_w: radius + pad_w + 1].view(1, 1, 1, -1).expand(channels, 1, 1, -1),
                               groups=channels)
    return nn.functional.conv2d(out, kernel[radius - pad_h: radius + pad_h + 1].view(1, 1, -1, 1).expand(channels, 1, -1, 1),
                                groups=channels)


def blurred_luminance(rgb: torch.Tensor, size, sigma: float) -> torch.Tensor:
    """The built-in stand-in for depth: luminance 0.299 R + 0.587 G + 0.114 B of ``rgb`` (batch, 3, H, W) in [0, 1],
    area-resized to ``size`` (h, w), Gaussian-blurred with ``sigma`` map pixels -> (batch, 1, h, w)."""
    weights = torch.tensor([0.299, 0.587, 0.114], device=rgb.device).view(1, 3, 1, 1)
    luminance = (rgb.float() * weights).sum(dim=1, keepdim=True)
    if tuple(luminance.shape[-2:]) != tuple(size):
        luminance = nn.functional.interpolate(luminance, size=tuple(size), mode="area")
    return gaussian_blur(luminance, sigma)


def color_palette(num_classes: int, device=None) -> torch.Tensor:
    """(num_classes, 3) fixed centroids in [0, 1]: the first ``num_classes`` points, in raster order, of the smallest
    L x L x L grid of cell centres ((i + 0.5) / L per channel) with L^3 >= num_classes. hf-mae's choice."""
    levels = 1
    while levels**3 < num_classes:
        levels += 1
    steps = (torch.arange(levels, dtype=torch.float32, device=device) + 0.5) / levels
    grid = torch.stack(torch.meshgrid(steps, steps, steps, indexing="ij"), dim=-1).reshape(-1, 3)
    return grid[:num_classes]


def color_palette_labels(rgb: torch.Tensor, size, num_classes: int) -> torch.Tensor:
    """The built-in stand-in for segmentation: ``rgb`` (batch, 3, H, W) in [0, 1] area-resized to ``size`` (h, w),
    each pixel labelled with its nearest :func:`color_palette` colour -> (batch, h, w) long."""
    small = rgb.float()
    if tuple(small.shape[-2:]) != tuple(size):
        small = nn.functional.interpolate(small, size=tuple(size), mode="area")
    palette = color_palette(num_classes, rgb.device)
    distances = ((small.permute(0, 2, 3, 1).unsqueeze(-2) - palette) ** 2).sum(dim=-1)  # (batch, h, w, classes)
    return distances.argmin(dim=-1)


def truncated_standardize(maps: torch.Tensor) -> torch.Tensor:
    """The official depth standardisation: per sample, subtract the mean and divide by sqrt(var + 1e-6) of the middle
    80 % of the values (the lowest and highest 10 % left out). (batch, C, H, W) float32."""
    flat = maps.float().flatten(1).sort(dim=1).values
    count = flat.shape[1]
    middle = flat[:, int(0.1 * count): int(0.9 * count)]
    mean, var = middle.mean(dim=1), middle.var(dim=1)
    return (maps.float() - mean.view(-1, 1, 1, 1)) / torch.sqrt(var.view(-1, 1, 1, 1) + 1e-6)


def model_pseudo_labels(model: nn.Module, rgb: torch.Tensor, modality: dict, size, mean, std) -> torch.Tensor:
    """Pseudo-labels from a transformers depth or segmentation model: ``rgb`` (batch, 3, H, W) in [0, 1] resized to
    the model's ``config.image_size`` (when it has one) and normalised with ``mean`` / ``std``; its
    ``predicted_depth`` (batch, h', w') resized bilinearly to ``size`` -> (batch, 1, h, w), or its ``logits``
    (batch, classes, h', w') resized bilinearly to ``size`` and arg-maxed -> (batch, h, w) long."""
    image = rgb
    model_size = getattr(getattr(model, "config", None), "image_size", None)
    if model_size is not None:
        model_size = to_2tuple(model_size)
        if tuple(image.shape[-2:]) != model_size:
            image = nn.functional.interpolate(image, size=model_size, mode="bilinear", align_corners=False)
    mean = torch.tensor(mean, device=rgb.device).view(1, -1, 1, 1)
    std = torch.tensor(std, device=rgb.device).view(1, -1, 1, 1)
    first = next(model.parameters(), None)
    image = ((image - mean) / std).to(first.dtype if first is not None else torch.float32)
    out = model(pixel_values=image)
    if modality["kind"] == "dense":
        depth = getattr(out, "predicted_depth", None)
        if depth is None:
            raise TypeError(f"the pseudo-labeller of {modality['name']!r} must be a depth model returning "
                            f"predicted_depth (AutoModelForDepthEstimation); {type(model).__name__} does not")
        depth = depth.float().unsqueeze(1) if depth.dim() == 3 else depth.float()
        return nn.functional.interpolate(depth, size=tuple(size), mode="bilinear", align_corners=False)
    logits = getattr(out, "logits", None)
    if logits is None or logits.dim() != 4:
        raise TypeError(f"the pseudo-labeller of {modality['name']!r} must be a segmentation model returning logits "
                        f"(batch, classes, h, w) (AutoModelForSemanticSegmentation); {type(model).__name__} does not")
    if logits.shape[1] != modality["num_classes"]:
        raise ValueError(f"the pseudo-labeller of {modality['name']!r} predicts {logits.shape[1]} classes, but the "
                         f"modality has num_classes={modality['num_classes']}")
    logits = nn.functional.interpolate(logits.float(), size=tuple(size), mode="bilinear", align_corners=False)
    return logits.argmax(dim=1)


# ---------------------------------------------------------------------------------------------------------------
# Outputs


@dataclass
class MultiMAEModelOutput(ModelOutput):
    """
    last_hidden_state: (batch, num_global_tokens + kept, hidden): the global token(s), then the visible tokens of all
        input modalities (every token of every given modality, in order, when nothing is masked).
    mask: (batch, total tokens) over the given input modalities concatenated in config order, 1 = hidden.
    ids_restore: (batch, total tokens), undoes the shuffle that put the kept tokens first.
    hidden_states, attentions: per block, when asked.
    pooler_output: (batch, hidden) the mean of the modality tokens ("mean") or the first global token ("cls").
    modality_budget: (batch, given input modalities) long, the visible tokens of each (None when nothing is masked).
    """

    last_hidden_state: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    ids_restore: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    pooler_output: torch.Tensor | None = None
    modality_budget: torch.Tensor | None = None


@dataclass
class MultiMAEForPreTrainingOutput(ModelOutput):
    """
    loss: the sum of the per-output losses (equal weights).
    logits: the first output's predictions (batch, N, patch_h * patch_w * C): the image's raw pixels by default.
    mask, ids_restore, hidden_states, attentions, modality_budget: as in MultiMAEModelOutput.
    modality_logits: output name -> (batch, N, (patch / stride)^2 * C) for a dense output, (batch, N,
        (patch / stride)^2 * num_classes) for a semantic one (pixel-major: class scores of each pixel in turn).
    modality_losses: output name -> scalar loss on its masked tokens.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    ids_restore: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    modality_budget: torch.Tensor | None = None
    modality_logits: dict | None = None
    modality_losses: dict | None = None


# ---------------------------------------------------------------------------------------------------------------
# Input adapters and the encoder


class MultiMAEInputAdapter(nn.Module):
    """One modality's tokens: a dense map's patches projected linearly, or a semantic map's pixels embedded per class
    (``class_embedding``) and then projected per patch (the official ``SemSegInputAdapter``); (batch, N, hidden)."""

    def __init__(self, config: MultiMAEConfig, modality: dict):
        super().__init__()
        self.modality = modality
        self.values_name = values_name(config, modality)
        image = to_2tuple(config.image_size)
        stride = modality["stride"]
        self.map_size = (image[0] // stride, image[1] // stride)
        self.patch = modality_patch(config, modality)
        if modality["kind"] == "semantic":
            self.class_embedding = nn.Embedding(modality["num_classes"], modality["class_embedding_size"])
            channels = modality["class_embedding_size"]
        else:
            self.class_embedding = None
            channels = modality["channels"]
        self.patch_embeddings = PatchEmbedding2D(self.map_size, self.patch, channels, config.hidden_size)

    def grid_for(self, values: torch.Tensor, allow_other_size: bool) -> tuple[int, int]:
        """Checks a modality's map and returns its token grid; errors name ``<name>_values``."""
        name = self.values_name
        if self.class_embedding is None:
            if name == "pixel_values":
                return self.patch_embeddings.grid_for(values, allow_other_size)
            try:
                check_pixel_values(values, self.modality["channels"])
            except (TypeError, ValueError) as error:
                raise type(error)(str(error).replace("pixel_values", name).replace("num_channels", "channels")) from None
            height, width = values.shape[-2:]
        else:
            if not isinstance(values, torch.Tensor) or values.is_floating_point() or values.dim() != 3:
                raise TypeError(f"{name} must be an integer tensor of class ids (batch, height, width), got "
                                f"{getattr(values, 'dtype', type(values).__name__)} of shape "
                                f"{tuple(getattr(values, 'shape', ()))}")
            if values.shape[0] == 0:
                raise ValueError(f"{name} is an empty batch (batch size 0)")
            classes = self.modality["num_classes"]
            in_range = ((values >= 0) & (values < classes)).all()
            check_tensor_condition(in_range, f"{name} must hold class ids in [0, {classes})",
                                   lambda: f", got values in [{int(values.min())}, {int(values.max())}]")
            height, width = values.shape[-2:]
        if height % self.patch[0] or width % self.patch[1]:
            raise ValueError(f"{name} height and width must be divisible by its patch {self.patch}, got {height}x{width}")
        if not allow_other_size and (height, width) != self.map_size:
            raise ValueError(f"{name} size {height}x{width} does not match the model's image_size / stride "
                             f"{self.map_size[0]}x{self.map_size[1]}; pass interpolate_pos_encoding=True for other sizes")
        return height // self.patch[0], width // self.patch[1]

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        if self.class_embedding is not None:
            values = self.class_embedding(values.long()).permute(0, 3, 1, 2)
        return self.patch_embeddings(values)


class MultiMAEEmbeddings(nn.Module):
    """The input adapters, the global token(s) and the shared fixed sin-cos position table (1, N, hidden) (a buffer)."""

    def __init__(self, config: MultiMAEConfig):
        super().__init__()
        self.config = config
        self.grid_size = config.grid_size
        self.adapters = nn.ModuleDict({m["name"]: MultiMAEInputAdapter(config, m) for m in config.input_modalities})
        self.global_tokens = nn.Parameter(torch.zeros(1, config.num_global_tokens, config.hidden_size))
        self.register_buffer("position_embeddings", sincos_2d(self.grid_size, config.hidden_size).unsqueeze(0))

    def positions(self, grid) -> torch.Tensor:
        table = self.position_embeddings.to(self.global_tokens.dtype)
        return interpolate_pos_embed(table, self.grid_size, grid)


class MultiMAEPreTrainedModel(MaskedModelPreTrainedModel):
    config_class = MultiMAEConfig
    base_model_prefix = "multimae"
    input_modalities = ("image",)
    _no_split_modules = ["TransformerBlock", "MultiMAEEmbeddings", "MultiMAEOutputAdapter"]

    @torch.no_grad()
    def _init_weights(self, module):
        """The official rules: xavier-uniform linears (and patch projections), truncated N(0, 0.02) tokens and class
        embeddings, fixed sin-cos tables."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.trunc_normal_(module.weight, std=std)
        elif isinstance(module, MultiMAEEmbeddings):
            init.trunc_normal_(module.global_tokens, std=std)
            table = sincos_2d(module.grid_size, module.global_tokens.shape[-1])
            init.copy_(module.position_embeddings, table[None])
        elif isinstance(module, MultiMAEOutputAdapter):
            init.trunc_normal_(module.mask_token, std=std)
            init.trunc_normal_(module.modality_embeddings, std=std)
            init.copy_(module.position_embeddings, sincos_2d(module.grid_size, module.mask_token.shape[-1])[None])
        else:
            super()._init_weights(module)


class MultiMAEModel(MultiMAEPreTrainedModel):
    """The shared MultiMAE encoder over the tokens of every given input modality plus the global token(s).

    A plain call encodes every token of every modality it is given (``pixel_values`` alone: the image's tokens, as
    RGB-only fine-tuning uses it), in order, the same on every call. ``num_encoded_tokens``, ``noise`` or
    ``modality_budget`` make it mask (see :meth:`forward`).
    """

    _can_record_outputs = {"hidden_states": TransformerBlock, "attentions": Attention}

    def __init__(self, config: MultiMAEConfig):
        super().__init__(config)
        self.embeddings = MultiMAEEmbeddings(config)
        self.layers = build_encoder_blocks(config)
        self.mask_generator = DirichletBudgetMaskGenerator(config.dirichlet_alpha)
        self.post_init()

    def get_input_embeddings(self):
        return self.embeddings.adapters[self.config.modalities[0]["name"]].patch_embeddings

    def given_modalities(self, pixel_values, kwargs) -> dict:
        """Input modality name -> its map, in config order, for the modalities given (popped from ``kwargs``)."""
        given = {}
        for modality in self.config.input_modalities:
            name = values_name(self.config, modality)
            values = pixel_values if name == "pixel_values" else kwargs.pop(name, None)
            if values is not None:
                given[modality["name"]] = values
        for modality in self.config.modalities:
            if not modality["input"]:
                kwargs.pop(values_name(self.config, modality), None)  # an output-only map is a target, not an input
        unknown = sorted(key for key in kwargs if key.endswith("_values"))
        if unknown:
            names = [values_name(self.config, m) for m in self.config.modalities]
            raise ValueError(f"unknown modality input(s) {unknown}; this model's modalities read {names}")
        if not given:
            names = [values_name(self.config, m) for m in self.config.input_modalities]
            raise ValueError(f"pass at least one input modality: {', '.join(names)}")
        return given

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        modality_budget: torch.Tensor | None = None,
        num_encoded_tokens: int | None = None,
        interpolate_pos_encoding: bool = False,
        mask_ratio: float | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """
        pixel_values: (batch, channels, H, W) float, the image; ``<name>_values``: the other input modalities' maps
            (dense (batch, C, H / stride, W / stride) float, semantic (batch, H / stride, W / stride) class ids).
            Any non-empty subset of the input modalities may be given; the tokens are the given modalities' in config
            order.
        num_encoded_tokens: visible tokens per sample across the given modalities; default: all of them with neither
            ``noise`` nor ``modality_budget`` (nothing masked), else ``config.num_encoded_tokens``. Without ``noise``
            or ``modality_budget`` the budget is split by a Dirichlet(``config.dirichlet_alpha``) draw per sample with
            exact totals and random tokens within each modality (``masking.DirichletBudgetMaskGenerator``).
        noise: (batch, total tokens), optional, fixes the mask: with ``modality_budget`` the tokens with the smallest
            noise *within each modality*, else the ``num_encoded_tokens`` smallest of all (MAE's rule over the
            concatenation). The encoder sees the kept tokens in ascending noise.
        modality_budget: (batch, given modalities) ints, optional: how many tokens of each modality stay visible
            (rows must sum to the same number, which then is ``num_encoded_tokens``); e.g. ``[[98, 0, 0]]`` keeps RGB
            only.
        interpolate_pos_encoding: allow other sizes than ``config.image_size`` (positions interpolated).
        mask_ratio: MAE's spelling, accepted as None or 0.0 only (what a plain call does); the budget is a count here,
            ``num_encoded_tokens``.
        Returns MultiMAEModelOutput.
        """
        if mask_ratio not in (None, 0, 0.0) or isinstance(mask_ratio, bool):
            raise ValueError(f"mask_ratio must be None or 0.0 for MultiMAE, got {mask_ratio!r}: the visible budget is a "
                             "token count across modalities, pass num_encoded_tokens= instead")
        given = self.given_modalities(pixel_values, kwargs)
        adapters = self.embeddings.adapters
        grids = {name: adapters[name].grid_for(values, interpolate_pos_encoding) for name, values in given.items()}
        grid = next(iter(grids.values()))
        if any(other != grid for other in grids.values()):
            raise ValueError(f"every modality must give the same token grid, got {grids}")
        batches = {name: values.shape[0] for name, values in given.items()}
        if len(set(batches.values())) != 1:
            raise ValueError(f"every modality must have the same batch size, got {batches}")
        positions = self.embeddings.positions(grid)
        tokens = [adapters[name](values) + positions for name, values in given.items()]
        batch, num_patches, _ = tokens[0].shape
        sizes = [num_patches] * len(tokens)
        total = sum(sizes)
        device = tokens[0].device

        masking = num_encoded_tokens is not None or noise is not None or modality_budget is not None
        budget = None
        if not masking:
            token_mask = keep_all(batch, total, device)
        else:
            if modality_budget is not None:
                budget = self.check_budget(modality_budget, batch, len(sizes), num_patches, num_encoded_tokens)
                keep = int(budget[0].sum()) if batch else 0
            else:
                keep = self.config.num_encoded_tokens if num_encoded_tokens is None else num_encoded_tokens
                if isinstance(keep, bool) or not isinstance(keep, int) or not 1 <= keep <= total:
                    raise ValueError(f"num_encoded_tokens must be an int in [1, {total}] (the given modalities' tokens), "
                                     f"got {keep!r}")
            if noise is not None:
                if tuple(noise.shape) != (batch, total):
                    raise ValueError(f"noise must have shape (batch, total tokens) = {(batch, total)}, got "
                                     f"{tuple(noise.shape)}")
                noise = noise.to(device)
                if budget is not None:
                    token_mask = budget_mask(noise, sizes, budget.to(device))
                else:
                    token_mask = mask_keeping_lowest(noise, keep)
                    budget = torch.stack([(1 - part).sum(dim=1) for part in token_mask.mask.split(sizes, dim=1)], 1).long()
            else:
                token_mask, budget = self.mask_generator(batch, sizes, keep, device, budget=budget)
        sequence = torch.cat(tokens, dim=1)
        if masking:
            sequence = gather_tokens(sequence, token_mask.ids_keep)
        global_tokens = self.embeddings.global_tokens.expand(batch, -1, -1)
        hidden, _, _ = run_blocks(self.layers, torch.cat([global_tokens, sequence], dim=1))
        num_global = self.config.num_global_tokens
        pooled = hidden[:, 0] if self.config.classifier_pooling == "cls" else hidden[:, num_global:].mean(dim=1)
        return MultiMAEModelOutput(
            last_hidden_state=hidden,
            mask=token_mask.mask,
            ids_restore=token_mask.ids_restore,
            pooler_output=pooled,
            modality_budget=budget,
        )

    @staticmethod
    def check_budget(budget, batch: int, modalities: int, num_patches: int, num_encoded_tokens) -> torch.Tensor:
        if not isinstance(budget, torch.Tensor) or budget.is_floating_point():
            raise TypeError(f"modality_budget must be an integer tensor (batch, modalities), got {budget!r}")
        if tuple(budget.shape) != (batch, modalities):
            raise ValueError(f"modality_budget must have shape (batch, given modalities) = {(batch, modalities)}, got "
                             f"{tuple(budget.shape)}")
        budget = budget.long()
        sums = budget.sum(dim=1)
        check_tensor_condition(((budget >= 0) & (budget <= num_patches)).all(),
                               f"modality_budget entries must be in [0, {num_patches}] (a modality's tokens)")
        check_tensor_condition((sums == sums[0]).all() & (sums[0] > 0),
                               "modality_budget rows must sum to the same number > 0 (the visible tokens)",
                               lambda: f", got sums {sums.tolist()}")
        if num_encoded_tokens is not None:
            check_tensor_condition(sums[0] == num_encoded_tokens,
                                   f"modality_budget rows must sum to num_encoded_tokens={num_encoded_tokens}")
        return budget


# ---------------------------------------------------------------------------------------------------------------
# Output adapters and pre-training


class MultiMAEOutputAdapter(nn.Module):
    """The official ``SpatialOutputAdapter``: the encoder tokens, projected to the decoder width with each input
    modality's embedding and the positions added, are the context; the queries are the target modality's tokens
    (its visible tokens' projections, the mask token at its hidden positions) with positions and its embedding, or
    mask tokens with positions when it is no input. One cross-attention (no residual, as the official code), an MLP
    with a residual, ``decoder_num_hidden_layers`` blocks, a linear layer to the patch: (batch, N, patch dim)."""

    def __init__(self, config: MultiMAEConfig, target: dict, out_channels: int):
        super().__init__()
        self.config = config
        self.target = target
        self.grid_size = config.grid_size
        width = config.decoder_hidden_size
        self.input_names = [m["name"] for m in config.input_modalities]
        self.context_projection = nn.Linear(config.hidden_size, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.modality_embeddings = nn.Parameter(torch.zeros(len(self.input_names), width))
        self.register_buffer("position_embeddings", sincos_2d(self.grid_size, width).unsqueeze(0))
        self.query_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.context_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.out_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.cross_attention = CrossAttention(config, width, config.decoder_num_attention_heads, qkv_bias=config.qkv_bias)
        self.mlp = MLP(width, config.decoder_intermediate_size, config.hidden_act)
        self.blocks = build_blocks(config, config.decoder_num_hidden_layers, **config.decoder_block_kwargs())
        patch = modality_patch(config, target)
        self.prediction = nn.Linear(width, patch[0] * patch[1] * out_channels)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor, given: list[str], grid) -> torch.Tensor:
        """latent: (batch, G + kept, hidden) encoder output; ids_restore: (batch, total); given: the input modalities
        in the sequence, in order; grid: the token grid. Returns (batch, N, patch dim)."""
        num_global = self.config.num_global_tokens
        context = self.context_projection(latent)
        num_patches = grid[0] * grid[1]
        positions = interpolate_pos_embed(self.position_embeddings.to(context.dtype), self.grid_size, grid)
        embeddings = self.modality_embeddings.to(context.dtype)
        full = restore_tokens(context[:, num_global:], self.mask_token, ids_restore)
        full = full + torch.cat([positions + embeddings[self.input_names.index(name)] for name in given], dim=1)
        name = self.target["name"]
        if name in given:
            start = given.index(name) * num_patches
            queries = full[:, start: start + num_patches]
        else:
            queries = (self.mask_token.to(context.dtype) + positions).expand(latent.shape[0], -1, -1)
            if name in self.input_names:
                queries = queries + embeddings[self.input_names.index(name)]
        kept = latent.shape[1] - num_global
        visible = gather_tokens(full, ids_restore.argsort(dim=1)[:, :kept])
        context = torch.cat([context[:, :num_global], visible], dim=1)
        hidden, _ = self.cross_attention(self.query_norm(queries), self.context_norm(context))
        hidden = hidden + self.mlp(self.out_norm(hidden))
        hidden, _, _ = run_blocks(self.blocks, hidden, output_attentions=False)
        return self.prediction(hidden)


LabelSource = nn.Module | Callable[[torch.Tensor], torch.Tensor]


class MultiMAEForPreTraining(FrozenTeacherMixin, MultiMAEPreTrainedModel):
    """The encoder, one output adapter per output modality (plus ``norm_<image>`` with ``extra_norm_pix_loss``) and the
    per-modality losses on masked tokens.

    pseudo_labelers: optional dict modality name -> a transformers depth / segmentation model instance (frozen here,
        held outside the state dict and the optimiser) or any callable ``f(rgb) -> map`` taking (batch, 3, H, W) RGB
        in [0, 1] and returning the modality's map (dense (batch, C, h, w) float, semantic (batch, h, w) ids). It
        replaces the config's ``pseudo_label`` of that modality. ``hf_mae.training.pretrain.pretrain(teachers=
        {"pseudo_labelers": nn.ModuleDict(...)})`` passes model instances.

    A transformers labeller sees the image resized to its ``config.image_size`` (when it has one) and normalised with
    its processor's ``image_mean`` / ``image_std`` when it is named by Hub id or folder (read once), with 0.5 / 0.5
    when it is built from a config dict or given as an instance (hf-mae's choice; wrap an instance in a function to
    feed it exactly what it expects). Its depth or class scores are resized bilinearly to the modality's map.
    """

    def __init__(self, config: MultiMAEConfig, pseudo_labelers: dict | None = None):
        super().__init__(config)
        self.multimae = MultiMAEModel(config)
        adapters = {}
        for modality in config.output_modalities:
            channels = modality["num_classes"] if modality["kind"] == "semantic" else modality["channels"]
            adapters[modality["name"]] = MultiMAEOutputAdapter(config, modality, channels)
        if config.extra_norm_pix_loss:
            adapters[config.norm_pix_name] = MultiMAEOutputAdapter(config, config.modalities[0], config.num_channels)
        self.output_adapters = nn.ModuleDict(adapters)
        self.__dict__["pseudo_label_functions"] = {}
        names = [m["name"] for m in config.modalities[1:]]
        for name, source in dict(pseudo_labelers or {}).items():
            if name not in names:
                raise ValueError(f"pseudo_labelers: no modality {name!r} to label; the labelled modalities are {names}")
            if isinstance(source, nn.Module):
                self.set_frozen_teacher(f"pseudo_labeler_{name}", source)
            elif callable(source):
                self.pseudo_label_functions[name] = source
            else:
                raise TypeError(f"pseudo_labelers[{name!r}] must be a model or a callable, got {type(source).__name__}")
        for name in names:
            self.__dict__.setdefault(f"pseudo_labeler_{name}", None)
        self.post_init()

    def pseudo_labeler(self, modality: dict, device) -> tuple[LabelSource, tuple, tuple] | None:
        """The model or function that labels ``modality`` with its normalisation (mean, std), or None (built-in or
        none). A model named in the config is built (and frozen) on first use."""
        name = modality["name"]
        if name in self.pseudo_label_functions:
            return self.pseudo_label_functions[name], None, None
        label, settings = modality["pseudo_label"], modality["pseudo_label_config"]
        instance = getattr(self, f"pseudo_labeler_{name}")
        if instance is None and (settings is None and (label is None or label in BUILTIN_LABELERS)):
            return None
        stats = self.__dict__.setdefault("pseudo_label_stats", {})
        if name not in stats:  # read once: the named model's own normalisation, else 0.5 / 0.5
            stats[name] = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
            if instance is None and settings is None:
                try:
                    from transformers import AutoImageProcessor

                    processor = AutoImageProcessor.from_pretrained(label)
                    stats[name] = tuple(processor.image_mean), tuple(processor.image_std)
                except (OSError, ValueError, AttributeError, TypeError):
                    pass
        mean, std = stats[name]

        def build():
            from transformers import AutoModelForDepthEstimation, AutoModelForSemanticSegmentation

            auto_class = AutoModelForDepthEstimation if modality["kind"] == "dense" else AutoModelForSemanticSegmentation
            return build_auto_model(label, settings, seed=modality["pseudo_label_seed"], auto_class=auto_class)

        return self.frozen_teacher(f"pseudo_labeler_{name}", device, build), mean, std

    @torch.no_grad()
    def pseudo_labels(self, pixel_values: torch.Tensor, modality: dict) -> torch.Tensor:
        """The map of ``modality`` derived from the image (see the module docstring), at the image's size / stride."""
        stride = modality["stride"]
        size = (pixel_values.shape[-2] // stride, pixel_values.shape[-1] // stride)
        rgb = unnormalize(pixel_values)
        source = self.pseudo_labeler(modality, pixel_values.device)
        if source is not None:
            labeler, mean, std = source
            if mean is None:
                values = labeler(rgb)
            else:
                values = model_pseudo_labels(labeler, rgb, modality, size, mean, std)
        elif modality["pseudo_label"] == "blurred_luminance":
            values = blurred_luminance(rgb, size, modality["blur_sigma"])
        elif modality["pseudo_label"] == "color_palette":
            values = color_palette_labels(rgb, size, modality["num_classes"])
        else:
            key = values_name(self.config, modality)
            raise ValueError(f"MultiMAEForPreTraining needs {key} (the {modality['name']!r} map) or a pseudo-labeller "
                             f"for it: set the modality's pseudo_label or pass "
                             f"pseudo_labelers={{{modality['name']!r}: ...}}")
        return values

    def modality_maps(self, pixel_values: torch.Tensor, kwargs: dict, interpolate_pos_encoding: bool = False) -> dict:
        """Every modality's map: given (``<name>_values`` popped from ``kwargs``) or pseudo-labelled; dense maps with
        ``standardize`` standardised."""
        if pixel_values is None:
            raise ValueError("pixel_values (the image) is required for pre-training")
        image = self.config.modalities[0]["name"]
        self.multimae.embeddings.adapters[image].grid_for(pixel_values, interpolate_pos_encoding)  # checked first
        maps = {self.config.modalities[0]["name"]: pixel_values}
        for modality in self.config.modalities[1:]:
            values = kwargs.pop(values_name(self.config, modality), None)
            if values is None:
                values = self.pseudo_labels(pixel_values, modality)
            if modality["kind"] == "dense" and modality["standardize"] and torch.is_floating_point(values):
                values = truncated_standardize(values)
            maps[modality["name"]] = values
        return maps

    def target(self, name: str, values: torch.Tensor) -> torch.Tensor:
        """Per-token targets of output ``name``: dense (batch, N, patch dim) (per-patch normalised for
        ``norm_<image>``), semantic (batch, N, patch pixels) class ids."""
        config = self.config
        modality = config.modalities[0] if name == config.norm_pix_name else next(
            m for m in config.modalities if m["name"] == name)
        patch = modality_patch(config, modality)
        if modality["kind"] == "semantic":
            return patchify(values.unsqueeze(1).float(), patch).round().long()
        return pixel_target(values.float(), patch, name == config.norm_pix_name)

    def token_loss(self, name: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """(batch, N) per-token loss of output ``name``: MSE / L1 averaged over the patch, or the pixels' mean CE."""
        config = self.config
        modality = config.modalities[0] if name == config.norm_pix_name else next(
            m for m in config.modalities if m["name"] == name)
        if modality["kind"] == "semantic":
            batch, tokens, pixels = target.shape
            scores = logits.float().reshape(batch, tokens, pixels, modality["num_classes"])
            return nn.functional.cross_entropy(scores.permute(0, 3, 1, 2), target, reduction="none").mean(dim=-1)
        difference = logits.float() - target
        return (difference.abs() if modality["loss"] == "l1" else difference.pow(2)).mean(dim=-1)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        modality_budget: torch.Tensor | None = None,
        num_encoded_tokens: int | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """Same inputs as :meth:`MultiMAEModel.forward` (masking ``config.num_encoded_tokens`` by default); every
        modality's map is taken from ``<name>_values`` or pseudo-labelled from ``pixel_values``. Returns
        MultiMAEForPreTrainingOutput."""
        config = self.config
        maps = self.modality_maps(pixel_values, kwargs, interpolate_pos_encoding)
        inputs = {values_name(config, m): maps[m["name"]] for m in config.input_modalities}
        if num_encoded_tokens is None and modality_budget is None:
            num_encoded_tokens = config.num_encoded_tokens
        encoded = self.multimae(noise=noise, modality_budget=modality_budget, num_encoded_tokens=num_encoded_tokens,
                                interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True, **inputs, **kwargs)
        given = [m["name"] for m in config.input_modalities]
        grid = self.multimae.embeddings.adapters[given[0]].grid_for(inputs[values_name(config, config.input_modalities[0])],
                                                                     True)
        num_patches = grid[0] * grid[1]
        masks = dict(zip(given, encoded.mask.split([num_patches] * len(given), dim=1)))
        logits, losses = {}, {}
        for name, adapter in self.output_adapters.items():
            source = config.modalities[0]["name"] if name == config.norm_pix_name else name
            logits[name] = adapter(encoded.last_hidden_state, encoded.ids_restore, given, grid)
            target = self.target(name, maps[source])
            mask = masks.get(source)
            if mask is None:  # an output that is no input: every token is predicted
                mask = torch.ones(target.shape[:2], device=target.device)
            losses[name] = masked_sample_mean(self.token_loss(name, logits[name], target), mask)
        return MultiMAEForPreTrainingOutput(
            loss=sum(losses.values()),
            logits=next(iter(logits.values())),
            mask=encoded.mask,
            ids_restore=encoded.ids_restore,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
            modality_budget=encoded.modality_budget,
            modality_logits=logits,
            modality_losses=losses,
        )


class MultiMAEForImageClassification(MultiMAEPreTrainedModel):
    """The encoder, unmasked, on the modalities it is given (``pixel_values`` alone: RGB-only fine-tuning), pooled
    (``classifier_pooling``), then ``fc_norm`` and a linear classifier."""

    def __init__(self, config: MultiMAEConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.multimae = MultiMAEModel(config)
        self.fc_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """pixel_values (batch, channels, H, W) and optionally other modalities' ``<name>_values``; labels (batch,).
        Returns ImageClassifierOutput (logits (batch, num_labels))."""
        encoded = self.multimae(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True,
                                **kwargs)
        logits = self.classifier(self.fc_norm(encoded.pooler_output))
        loss = classification_loss(logits, labels, self.config) if labels is not None else None
        return ImageClassifierOutput(loss=loss, logits=logits, hidden_states=encoded.hidden_states,
                                     attentions=encoded.attentions)


__all__ = [
    "MultiMAEConfig",
    "MultiMAEPreTrainedModel",
    "MultiMAEModel",
    "MultiMAEForPreTraining",
    "MultiMAEForImageClassification",
    "MultiMAEModelOutput",
    "MultiMAEForPreTrainingOutput",
]


# ----------------------------------------------------------------------------------------------- registry row
from .presets import TINY, VIT  # noqa: E402

METHOD = dict(
    name="multimae",
    paper="MultiMAE: Multi-modal Multi-task Masked Autoencoders (Bachmann et al., ECCV 2022), arXiv:2204.01678",
    config_class=MultiMAEConfig,
    model_classes={
        "base": MultiMAEModel, "pretraining": MultiMAEForPreTraining,
        "image-classification": MultiMAEForImageClassification,
    },
    processor="MAEImageProcessor",
    # utils/datasets.py DataAugmentationForMultiMAE: RandomResizedCrop.get_params(scale=(0.2, 1.0), ratio=(0.75,
    # 1.3333)) then PIL resize (bicubic), one crop and one flip (p 0.5) for every modality; the pseudo-labels here are
    # derived from the crop, which equals cropping them alongside
    pretrain_augmentation=dict(crop_scale=(0.2, 1.0), crop_ratio=(0.75, 1.3333), resample="bicubic", flip_probability=0.5),
    # cfgs/pretrain/multimae-b_98_rgb+-depth-semseg_1600e.yaml: blr 1e-4 per 256 images, batch 256 per GPU on 8 GPUs,
    # AdamW betas (0.9, 0.95), weight decay 0.05
    pretrain_base_lr=1e-4, pretrain_batch=2048,
    presets={
        # 32x32 images, 8x8 grids: 3 x 64 tokens, 32 visible (the paper's half of one modality); semantic maps of
        # 8 palette colours at stride 2 (2x2 label pixels per token)
        "multimae-tiny": dict(
            TINY, num_encoded_tokens=32,
            modalities=paper_modalities(num_classes=8, semantic_stride=2, class_embedding_size=16, blur_sigma=1.0),
        ),
        "multimae-vit-base-patch16": dict(patch_size=16, num_encoded_tokens=98, modalities=paper_modalities(),
                                          **VIT["base"]),
    },
    exports=["MultiMAEPreTrainedModel", "MultiMAEModelOutput", "MultiMAEForPreTrainingOutput"],
)
