"""SparK: Designing BERT for Convolutional Networks: Sparse and Hierarchical Masked Modeling (Tian et al., ICLR 2023).

BERT-style masked image modeling for convnets, on transformers' own ``ResNetModel`` and ``ConvNextModel``:
1. the image is masked in cells of the backbone's coarsest stride (32 px for a 4-stage net): a random
   ``mask_ratio`` of the cells is removed, ``round(cells * (1 - mask_ratio))`` stay, and the input is zeroed there;
2. the backbone encodes the image as a *sparse* one: every convolution, pooling and normalisation output is
   re-masked at its own resolution, so the removed cells stay exactly zero at every layer (no "mask pattern
   vanishing"), BatchNorm takes its statistics over the active positions only (a sparse BatchNorm) and ConvNeXt's
   LayerNorm normalises the channels of the active positions. As in the official code this emulates submanifold
   sparse convolution without a sparse library. Here it is done with forward hooks on the backbone's ``Conv2d``,
   pooling and norm modules (and on each ConvNeXt block, whose pointwise Linears would fill the holes with their
   biases, as the official block's final re-mask does), so the backbone's code is transformers' own, untouched;
3. densify: at each of the backbone's stages, coarsest first, a sparse norm, a learned per-scale mask token at the
   removed positions and a projection (1x1 at the coarsest scale, 3x3 otherwise) to the decoder's width, halved per
   scale;
4. a light UNet decoder upsamples from the coarsest scale (transposed 4x4 convolution, then two 3x3 conv + BN, ReLU6
   between), adding each scale's densified features, and a 1x1 convolution predicts the pixels;
5. the loss is the MSE against per-cell normalised pixels (eps 1e-6 inside the square root), averaged per cell and
   then over the removed cells only.

Fine-tuning goes through the backbone's own classification class: ``SparKForImageClassification.to_transformers()``
returns transformers' ``ResNetForImageClassification`` / ``ConvNextForImageClassification`` with the same weights
and outputs, and ``SparKModel.save_backbone(folder)`` writes the pre-trained backbone as transformers' own model,
which ``ResNetForImageClassification.from_pretrained(folder)`` loads with only the classifier missing.

Departures from the paper / official code (keyu-tian/SparK, pretrain/):
- the backbones are transformers' ResNet (v1.5, as timm's) and ConvNeXt, not timm's / the official ones: transformers'
  ResNet has no stochastic depth, so ResNet-50's drop-path rate 0.05 is not applied; ConvNeXt keeps its own;
- the sparse BatchNorm is per process (the official pre-training uses SyncBatchNorm under DDP for the sparse BNs,
  the densify BNs and the decoder's BNs); convert with ``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` for the
  decoder if wanted (the hooked backbone BNs stay per process);
- the hooked BatchNorm first runs transformers' dense forward, whose output is discarded and whose running-statistics
  update is undone, then the sparse one (a little wasted compute, so that the backbone code stays untouched);
- the optimiser is hf-mae's AdamW (the paper: LAMB, lr 2e-4 * batch / 256, batch 4096, wd 0.04 -> 0.2, clip 5;
  betas (0.9, 0.95) for ResNets, (0.9, 0.999) for ConvNeXts);
- ``logits`` are the per-cell pixels (batch, cells, stride * stride * channels), as MAE's, in the normalised space.
"""

from __future__ import annotations

import copy
import functools
import math
import threading
from dataclasses import dataclass
from typing import Mapping, Unpack

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification, PreTrainedConfig
from transformers import initialization as init
from transformers.modeling_outputs import ImageClassifierOutputWithNoAttention
from transformers.models.convnext.modeling_convnext import ConvNextLayer, ConvNextLayerNorm
from transformers.utils import ModelOutput, TransformersKwargs
from transformers.utils.generic import can_return_tuple

from .base import MaskedModelPreTrainedModel, check_choice, check_int, check_rate
from .embeddings import check_pixel_values, to_2tuple
from .losses import classification_loss, masked_mse
from .masking import feature_mask_ratio
from .targets import patch_statistics, patchify, pixel_target, unpatchify

# backbones SparK can sparsify (transformers model_type -> the densify norm of the official recipe)
BACKBONE_TYPES = {"resnet": "bn", "convnext": "ln"}
DENSIFY_NORMS = ("bn", "ln", "none")


def _backbone_dict(value, name: str) -> dict:
    """A backbone config given as a dict with ``model_type`` or a transformers config -> a plain JSON-able dict."""
    if isinstance(value, PreTrainedConfig):
        return {"model_type": value.model_type, **value.to_diff_dict()}
    if not isinstance(value, Mapping) or "model_type" not in value:
        raise ValueError(
            f"{name} must be a config dict with a 'model_type' key or a transformers config, got {value!r}")
    return dict(value)


class SparKConfig(PreTrainedConfig):
    r"""Configuration of a SparK model: a transformers convnet (ResNet or ConvNeXt) made sparse, the densify layers
    and the light UNet decoder.

    backbone_config: the convnet, a dict with ``model_type`` ("resnet" or "convnext") and that config's fields, or a
        transformers ``ResNetConfig`` / ``ConvNextConfig`` (stored as a dict). Default: ResNet-50.
    backbone_name_or_path: a Hub id or folder whose config.json gives the backbone's architecture, read once when
        ``backbone_config`` is None (the saved config then holds ``backbone_config``, so a checkpoint never needs the
        network). Only the architecture is read: SparK pre-trains from scratch (hf-mae's choice to read no weights).
    image_size: an int or (height, width), a multiple of the backbone's stride; the processor's size. The model
        itself runs on any multiple of the stride (a convnet has no position table).
    mask_ratio: share of the coarsest-stride cells removed, in [0, 1); ``round(cells * (1 - mask_ratio))`` cells
        stay (the official rounding, not MAE's ``int``), at least one.
    decoder_hidden_size: width of the decoder at the coarsest scale, halved by each of its log2(stride) upsampling
        blocks (official: 768); must stay >= 1 after the last halving.
    densify_norm: the norm of the sparse features before densifying: "bn" (sparse BatchNorm), "ln" (LayerNorm over
        channels at the active positions) or "none"; None picks the official rule, "bn" for ResNets and "ln" for
        ConvNeXts.
    norm_pix_loss: normalise each cell's target pixels (official: always).
    drop_path_rate: stochastic depth of a ConvNeXt backbone, replacing its config's ``drop_path_rate`` when not None
        (what ``hf-mae finetune --drop-path`` sets); transformers' ResNet has no stochastic depth, so there it has no
        effect.
    initializer_range: std of the truncated-normal init of the decoder's convolutions and of the mask tokens (official
        0.02; the mask tokens are also truncated to +-0.02).
    """

    model_type = "spark"

    backbone_config: dict | None = None
    backbone_name_or_path: str | None = None
    image_size: int | list[int] | tuple[int, int] = 224
    mask_ratio: float = 0.6
    decoder_hidden_size: int = 768
    densify_norm: str | None = None
    norm_pix_loss: bool = True
    drop_path_rate: float | None = None
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.backbone_config is None:
            if self.backbone_name_or_path is not None:
                if not isinstance(self.backbone_name_or_path, str):
                    raise TypeError(f"backbone_name_or_path must be a str, got {self.backbone_name_or_path!r}")
                self.backbone_config = _backbone_dict(
                    AutoConfig.from_pretrained(self.backbone_name_or_path), "backbone_name_or_path")
            else:
                self.backbone_config = {"model_type": "resnet"}  # ResNet-50, transformers' defaults
        self.backbone_config = _backbone_dict(self.backbone_config, "backbone_config")
        model_type = self.backbone_config["model_type"]
        if model_type not in BACKBONE_TYPES:
            raise ValueError(f"backbone_config model_type must be one of {sorted(BACKBONE_TYPES)}, got {model_type!r}")
        backbone = self.backbone()
        stages = len(backbone.hidden_sizes)
        if len(backbone.depths) != stages:
            raise ValueError(f"backbone_config hidden_sizes {list(backbone.hidden_sizes)} and depths "
                             f"{list(backbone.depths)} must have one entry per stage")
        if self.densify_norm is None:
            self.densify_norm = BACKBONE_TYPES[model_type]
        check_choice("densify_norm", self.densify_norm, DENSIFY_NORMS)
        check_rate("mask_ratio", self.mask_ratio)
        if self.drop_path_rate is not None:
            check_rate("drop_path_rate", self.drop_path_rate)
        check_int("decoder_hidden_size", self.decoder_hidden_size)
        stride = self.downsample_ratio
        if stride & (stride - 1):
            raise ValueError(f"the backbone's stride must be a power of 2 for the UNet decoder, got {stride}")
        upsamplings = int(math.log2(stride))
        if self.decoder_hidden_size >> upsamplings < 1:
            raise ValueError(f"decoder_hidden_size {self.decoder_hidden_size} halved by the decoder's {upsamplings} "
                             f"upsampling blocks leaves no channel: it must be >= {2**upsamplings}")
        height, width = to_2tuple(self.image_size)
        if height % stride or width % stride:
            raise ValueError(f"image_size {self.image_size} must be divisible by the backbone's stride {stride}")

    def backbone(self) -> PreTrainedConfig:
        """The backbone's transformers config (a fresh object each call)."""
        settings = copy.deepcopy(self.backbone_config)
        if self.drop_path_rate is not None and settings["model_type"] == "convnext":
            settings["drop_path_rate"] = self.drop_path_rate
        return AutoConfig.for_model(settings.pop("model_type"), **settings)

    @property
    def backbone_type(self) -> str:
        return self.backbone_config["model_type"]

    @property
    def downsample_ratio(self) -> int:
        """The backbone's coarsest stride: the mask cell's side in pixels."""
        backbone = self.backbone()
        stages = len(backbone.hidden_sizes)
        if self.backbone_type == "resnet":  # stem: stride-2 conv + stride-2 max pool; then one halving per stage
            return 4 * 2 ** (stages - 1) * (2 if backbone.downsample_in_first_stage else 1)
        return to_2tuple(backbone.patch_size)[0] * 2 ** (stages - 1)

    @property
    def patch_size(self) -> int:
        """The mask cell (= loss patch) side: the backbone's stride."""
        return self.downsample_ratio

    @property
    def grid_size(self) -> tuple[int, int]:
        height, width = to_2tuple(self.image_size)
        return height // self.downsample_ratio, width // self.downsample_ratio

    @property
    def num_channels(self) -> int:
        return self.backbone().num_channels

    @property
    def stage_widths(self) -> list[int]:
        return list(self.backbone().hidden_sizes)


# ---------------------------------------------------------------------------------------------------------------
# Sparse emulation: the active map of the current forward, applied by hooks at every resolution.


class SparseState:
    """The active map of the forward in progress (batch, 1, rows, cols) in cells, or None (a dense forward: every hook
    is a no-op), with its expansions per resolution, the running statistics a hooked BatchNorm must restore and the
    recorded stage outputs. Kept per thread: ``nn.DataParallel`` (Trainer on several GPUs without a launcher) runs
    replicas that share these hooks in parallel threads. A copy (``copy.deepcopy``, pickling) starts empty."""

    _FIELDS = {"active": None, "expanded": dict, "saved_statistics": dict, "stage_outputs": list}

    def __init__(self):
        self._local = threading.local()

    def __getstate__(self):
        return {}

    def __setstate__(self, state):
        self._local = threading.local()

    def __getattr__(self, name):
        if name not in SparseState._FIELDS:
            raise AttributeError(name)
        local = self.__dict__["_local"]
        if not hasattr(local, name):
            default = SparseState._FIELDS[name]
            setattr(local, name, default() if callable(default) else default)
        return getattr(local, name)

    def __setattr__(self, name, value):
        if name in SparseState._FIELDS:
            setattr(self._local, name, value)
        else:
            super().__setattr__(name, value)

    def start(self, active):
        self.active, self.expanded, self.saved_statistics, self.stage_outputs = active, {}, {}, []

    def stop(self):
        self.active, self.expanded, self.saved_statistics = None, {}, {}

    def at(self, height: int, width: int, dtype) -> torch.Tensor:
        """The active map at a (height, width) feature resolution, (batch, 1, height, width) in ``dtype``."""
        key = (height, width, dtype)
        if key not in self.expanded:
            rows, cols = self.active.shape[-2:]
            if height % rows or width % cols:
                raise ValueError(f"a feature map of {height}x{width} is no multiple of the {rows}x{cols} mask grid: "
                                 "the image must be divisible by the backbone's stride")
            active = self.active.to(dtype).repeat_interleave(height // rows, 2)
            self.expanded[key] = active.repeat_interleave(width // cols, 3)
        return self.expanded[key]


def expand_active(active: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(batch, 1, rows, cols) -> (batch, 1, height, width), each cell repeated over its pixels."""
    rows, cols = active.shape[-2:]
    return active.repeat_interleave(height // rows, 2).repeat_interleave(width // cols, 3)


def sparse_batch_norm(norm: nn.modules.batchnorm._BatchNorm, x: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """BatchNorm over the active positions only (the official BN1d on the active features): in training the
    statistics are those of the active positions (biased variance to normalise, unbiased for the running variance,
    as torch's BN), in eval the running ones; the output is zero at the inactive positions.

    x: (batch, C, H, W); active: (batch, 1, H, W) of 0/1. Statistics in float32, the output in x's dtype."""
    values, weights = x.float(), active.float()
    use_batch_statistics = norm.training or norm.running_mean is None
    if use_batch_statistics:
        count = weights.sum()
        mean = (values * weights).sum((0, 2, 3)) / count
        var = ((values - mean[None, :, None, None]).pow(2) * weights).sum((0, 2, 3)) / count
        if norm.training and norm.track_running_stats and norm.running_mean is not None:
            with torch.no_grad():
                norm.num_batches_tracked.add_(1)
                factor = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked)
                unbiased = var * count / (count - 1).clamp_min(1.0)
                norm.running_mean.mul_(1 - factor).add_(mean.to(norm.running_mean.dtype), alpha=factor)
                norm.running_var.mul_(1 - factor).add_(unbiased.to(norm.running_var.dtype), alpha=factor)
    else:
        mean, var = norm.running_mean.float(), norm.running_var.float()
    normalised = (values - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + norm.eps)
    if norm.weight is not None:
        normalised = normalised * norm.weight.float()[None, :, None, None] + norm.bias.float()[None, :, None, None]
    return (normalised * weights).to(x.dtype)


def _mask_output(state: SparseState, module, args, output):
    """Conv2d / pooling / ConvNeXt block: (batch, C, H, W) output re-masked at its resolution."""
    if state.active is None:
        return None
    return output * state.at(output.shape[-2], output.shape[-1], output.dtype)


def _mask_layer_norm(state: SparseState, module, args, output):
    """ConvNeXt's LayerNorm normalises each position over its channels, so the LayerNorm of the active positions is
    the dense one with the inactive positions zeroed (in the norm's channels-last or channels-first layout)."""
    if state.active is None:
        return None
    if module.data_format == "channels_last":  # (batch, H, W, C)
        return output * state.at(output.shape[1], output.shape[2], output.dtype).permute(0, 2, 3, 1)
    return output * state.at(output.shape[-2], output.shape[-1], output.dtype)


def _save_batch_norm_statistics(state: SparseState, module, args):
    if state.active is not None and module.training and module.running_mean is not None:
        state.saved_statistics[id(module)] = tuple(
            buffer.clone() for buffer in (module.running_mean, module.running_var, module.num_batches_tracked))


def _sparse_batch_norm_hook(state: SparseState, module, args, output):
    """Replaces transformers' dense BatchNorm output by the sparse one; the dense forward's running-statistics update
    is undone first (the sparse one updates them from the active positions)."""
    if state.active is None:
        return None
    saved = state.saved_statistics.pop(id(module), None)
    if saved is not None:
        with torch.no_grad():
            for buffer, value in zip((module.running_mean, module.running_var, module.num_batches_tracked), saved):
                buffer.copy_(value)
    x = args[0]
    return sparse_batch_norm(module, x, state.at(x.shape[-2], x.shape[-1], x.dtype))


def _record_stage(state: SparseState, module, args, output):
    state.stage_outputs.append(output)


def sparsify(backbone: nn.Module, state: SparseState) -> dict[str, nn.Module]:
    """Registers the sparse hooks on ``backbone``'s modules; returns the hooked modules by name. Each hook reads
    ``state`` and does nothing while ``state.active`` is None (a dense forward)."""
    hooked = {}
    for name, module in backbone.named_modules():
        if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, ConvNextLayer)):
            module.register_forward_hook(functools.partial(_mask_output, state))
        elif isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.register_forward_pre_hook(functools.partial(_save_batch_norm_statistics, state))
            module.register_forward_hook(functools.partial(_sparse_batch_norm_hook, state))
        elif isinstance(module, ConvNextLayerNorm):
            module.register_forward_hook(functools.partial(_mask_layer_norm, state))
        else:
            continue
        hooked[name] = module
    for stage in backbone.encoder.stages:  # the hierarchical features of the densify step
        stage.register_forward_hook(functools.partial(_record_stage, state))
    return hooked


# ---------------------------------------------------------------------------------------------------------------
# Densify and decoder modules.


class SparseBatchNorm2d(nn.BatchNorm2d):
    """The densify BatchNorm: statistics over the active positions (:func:`sparse_batch_norm`)."""

    def forward(self, x: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        return sparse_batch_norm(self, x, active)


class SparseLayerNorm2d(nn.LayerNorm):
    """The densify LayerNorm (ConvNeXt): over the channels of each active position of a (batch, C, H, W) map, zero at
    the inactive ones (eps 1e-6 as the official one)."""

    def __init__(self, channels: int):
        super().__init__(channels, eps=1e-6)

    def forward(self, x: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        normalised = super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return normalised * active.to(normalised.dtype)


class NoDensifyNorm(nn.Module):
    def forward(self, x: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
        return x


class MaskTokens(nn.ParameterList):
    """The per-scale mask tokens, each (1, C_i, 1, 1), coarsest scale first."""


class DensifyProjection(nn.Conv2d):
    """Projection of a densified scale to the decoder's width (torch's default Conv2d init, as the official one)."""


class DecoderConv2d(nn.Conv2d):
    """A convolution of the decoder (truncated-normal init, as the official LightDecoder)."""


class DecoderConvTranspose2d(nn.ConvTranspose2d):
    """The decoder's 2x upsampling (Kaiming-normal fan-out init, as the official LightDecoder)."""


class UNetBlock(nn.Module):
    """2x upsampling, then two 3x3 convolutions with BatchNorm (ReLU6 between): cin -> cout channels."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up_sample = DecoderConvTranspose2d(cin, cin, kernel_size=4, stride=2, padding=1, bias=True)
        self.conv = nn.Sequential(
            DecoderConv2d(cin, cin, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(cin), nn.ReLU6(),
            DecoderConv2d(cin, cout, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up_sample(x))


class SparKDecoder(nn.Module):
    """The light UNet decoder: log2(stride) upsampling blocks from the coarsest scale, widths
    decoder_hidden_size / 2**i; block i first adds the i-th densified scale (coarsest first) where there is one."""

    def __init__(self, config: SparKConfig):
        super().__init__()
        upsamplings = int(math.log2(config.downsample_ratio))
        widths = [config.decoder_hidden_size >> i for i in range(upsamplings + 1)]
        self.blocks = nn.ModuleList([UNetBlock(cin, cout) for cin, cout in zip(widths[:-1], widths[1:])])
        self.proj = DecoderConv2d(widths[-1], config.num_channels, kernel_size=1, bias=True)

    def forward(self, scales: list[torch.Tensor]) -> torch.Tensor:
        """scales: densified features, coarsest first, each (batch, width_i, H_i, W_i) -> (batch, C, H, W) pixels."""
        x = 0
        for index, block in enumerate(self.blocks):
            if index < len(scales):
                x = x + scales[index]
            x = block(x)
        return self.proj(x)


# ---------------------------------------------------------------------------------------------------------------
# Outputs and models.


@dataclass
class SparKModelOutput(ModelOutput):
    """
    last_hidden_state: (batch, 1 + cells, C) the backbone's pooled feature first (its ``pooler_output``, the global
        average, then ConvNeXt's final LayerNorm), then the coarsest feature map's cells in row-major order: the
        token layout hf-mae's probes pool ("mean": the average of the cells, "cls": the pooled feature).
    mask: (batch, cells) float, 1 = removed; all zero for a plain (unmasked) call.
    ids_restore: None (the tokens are never reordered).
    feature_maps: per backbone stage, finest first, (batch, C_i, H_i, W_i), zero at the removed cells.
    hidden_states: the backbone's own ``hidden_states`` (stem output, then each stage), when output_hidden_states.
    attentions: None (a convnet).
    pooler_output: (batch, C) the backbone's pooled feature.
    """

    last_hidden_state: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    ids_restore: torch.Tensor | None = None
    feature_maps: tuple[torch.Tensor, ...] | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    pooler_output: torch.Tensor | None = None


@dataclass
class SparKForPreTrainingOutput(ModelOutput):
    """
    loss: masked MSE over the removed cells.
    logits: (batch, cells, stride * stride * C) predicted pixels of every cell (normalised per cell when
        ``norm_pix_loss``).
    mask: (batch, cells), 1 = removed.
    ids_restore: None.
    hidden_states: the backbone's hidden states, when output_hidden_states.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    ids_restore: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


def cell_mask_from_noise(noise: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """The official SparK rule: per sample the ``round(L * (1 - mask_ratio))`` cells (at least one) with the smallest
    noise stay. noise: (batch, L) -> mask (batch, L) float, 1 = removed."""
    cells = noise.shape[1]
    kept = min(cells, max(1, round(cells * (1 - mask_ratio))))
    keep = noise.argsort(dim=1)[:, :kept]
    return torch.ones_like(noise, dtype=torch.float).scatter_(1, keep, 0.0)


class SparKPreTrainedModel(MaskedModelPreTrainedModel):
    config_class = SparKConfig
    base_model_prefix = "spark"
    input_modalities = ("image",)
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = False  # transformers' ResNet / ConvNeXt have no checkpointed layers
    _no_split_modules = []
    _supports_sdpa = False  # no attention
    _supports_flash_attn = False
    _supports_flex_attn = False
    _supports_attention_backend = False

    @torch.no_grad()
    def _init_weights(self, module):
        """The official init of SparK's own modules (the backbone keeps transformers' init, which transformers
        dispatches to it as a nested model): decoder convolutions truncated-normal(0.02), bias 0; upsampling
        Kaiming-normal (fan-out, ReLU), bias 0; densify projections torch's default; mask tokens truncated-normal(0.02)
        within +-0.02; norms ones / zeros."""
        std = self.config.initializer_range
        if isinstance(module, DecoderConv2d):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, DecoderConvTranspose2d):
            init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            init.zeros_(module.bias)
        elif isinstance(module, DensifyProjection):  # torch's Conv2d default
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            fan_in = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]
            init.uniform_(module.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        elif isinstance(module, MaskTokens):
            for token in module:
                init.trunc_normal_(token, std=std, a=-std, b=std)
        elif isinstance(module, nn.Linear):  # the classifier (the backbone's Linears keep transformers' init)
            init.normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        else:
            super()._init_weights(module)  # norms


class SparKModel(SparKPreTrainedModel):
    """The backbone (transformers' ``ResNetModel`` / ``ConvNextModel``) with SparK's sparse hooks. A plain call is the
    dense backbone (nothing masked, the hooks idle); ``mask_ratio`` > 0 or ``noise`` masks cells and encodes the
    image sparsely."""

    def __init__(self, config: SparKConfig):
        super().__init__(config)
        self.backbone = AutoModel.from_config(config.backbone())
        self.sparse_state = SparseState()
        self.sparse_modules = sparsify(self.backbone, self.sparse_state)
        self.post_init()

    def get_input_embeddings(self):
        """The backbone's stem (ResNet's ``embedder``, ConvNeXt's ``embeddings``)."""
        return self.backbone.embedder if hasattr(self.backbone, "embedder") else self.backbone.embeddings

    def cell_grid(self, pixel_values: torch.Tensor) -> tuple[int, int]:
        stride = self.config.downsample_ratio
        height, width = pixel_values.shape[-2:]
        if height % stride or width % stride:
            raise ValueError(f"pixel_values of {height}x{width} must be divisible by the backbone's stride {stride}")
        return height // stride, width // stride

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """
        pixel_values: (batch, channels, height, width) float, height and width multiples of the backbone's stride.
        noise: (batch, cells), optional: fixes the mask, the ``round(cells * (1 - mask_ratio))`` smallest stay.
        mask_ratio: default 0.0 (``config.mask_ratio`` with ``noise``): a plain call is the dense backbone.
        interpolate_pos_encoding: accepted for the ViT methods' interface; a convnet runs on any multiple of its
            stride without it.
        Returns SparKModelOutput (see there).
        """
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        check_pixel_values(pixel_values, self.config.num_channels)
        rows, cols = self.cell_grid(pixel_values)
        mask_ratio = feature_mask_ratio(mask_ratio, self.config, noise)
        batch = pixel_values.shape[0]
        sparse = mask_ratio > 0.0 or noise is not None
        if noise is not None and tuple(noise.shape) != (batch, rows * cols):
            raise ValueError(f"noise must have shape (batch, cells) = {(batch, rows * cols)}, got {tuple(noise.shape)}")
        if sparse:
            if noise is None:
                noise = torch.rand(batch, rows * cols, device=pixel_values.device)
            mask = cell_mask_from_noise(noise.to(pixel_values.device), mask_ratio)
            active = (1.0 - mask).view(batch, 1, rows, cols)
            pixel_values = pixel_values * expand_active(active, *pixel_values.shape[-2:]).to(pixel_values.dtype)
        else:
            mask, active = torch.zeros(batch, rows * cols, device=pixel_values.device), None
        self.sparse_state.start(active)
        try:
            out = self.backbone(pixel_values, output_hidden_states=output_hidden_states, return_dict=True)
            feature_maps = tuple(self.sparse_state.stage_outputs)
        finally:
            self.sparse_state.stop()
            self.sparse_state.stage_outputs = []
        pooled = out.pooler_output.flatten(1)
        tokens = torch.cat([pooled[:, None], out.last_hidden_state.flatten(2).transpose(1, 2)], dim=1)
        return SparKModelOutput(
            last_hidden_state=tokens, mask=mask, ids_restore=None, feature_maps=feature_maps,
            hidden_states=out.hidden_states, pooler_output=pooled,
        )

    def export_backbone(self):
        """The pre-trained backbone as transformers' own model (``ResNetModel`` / ``ConvNextModel``), without hooks."""
        backbone = AutoModel.from_config(self.config.backbone())
        backbone.load_state_dict(self.backbone.state_dict())
        return backbone.to(next(self.backbone.parameters()).dtype).eval()

    def save_backbone(self, save_directory, **kwargs):
        """Saves :meth:`export_backbone` with ``save_pretrained``: ``ResNetForImageClassification.from_pretrained``
        (or ``AutoModelForImageClassification``) loads it with only the classifier missing."""
        self.export_backbone().save_pretrained(save_directory, **kwargs)
        return save_directory


class SparKForPreTraining(SparKPreTrainedModel):
    """Sparse backbone + densify layers + light UNet decoder, with the masked norm-pix MSE."""

    def __init__(self, config: SparKConfig):
        super().__init__(config)
        self.spark = SparKModel(config)
        widths = config.stage_widths[::-1]  # coarsest first
        decoder_width = config.decoder_hidden_size
        norms, projections, tokens = [], [], []
        for index, width in enumerate(widths):
            tokens.append(nn.Parameter(torch.zeros(1, width, 1, 1)))
            norm_class = {"bn": SparseBatchNorm2d, "ln": SparseLayerNorm2d}.get(config.densify_norm)
            norms.append(norm_class(width) if norm_class is not None else NoDensifyNorm())
            if index == 0 and width == decoder_width:
                projections.append(nn.Identity())  # as the official code (ConvNeXt-S: 768 = the decoder's width)
            else:
                kernel = 1 if index == 0 else 3
                projections.append(DensifyProjection(width, decoder_width, kernel_size=kernel, padding=kernel // 2))
            decoder_width //= 2
        self.mask_tokens = MaskTokens(tokens)
        self.densify_norms = nn.ModuleList(norms)
        self.densify_projections = nn.ModuleList(projections)
        self.decoder = SparKDecoder(config)
        # ConvNeXt's final LayerNorm acts on the pooled feature, which the loss never reaches: frozen here (no
        # gradient, so DDP needs no unused-parameter search); fine-tuning trains it
        final_norm = getattr(self.spark.backbone, "layernorm", None)
        if isinstance(final_norm, nn.Module):
            final_norm.requires_grad_(False)
        self.post_init()

    def densify(self, feature_maps, active: torch.Tensor) -> list[torch.Tensor]:
        """Sparse feature maps (finest first) -> the decoder's inputs, coarsest first: sparse norm, mask tokens at the
        removed positions, projection to the decoder's width of that scale."""
        scales = []
        for index, features in enumerate(reversed(feature_maps)):
            here = expand_active(active, *features.shape[-2:]).to(features.dtype)
            features = self.densify_norms[index](features, here)
            features = torch.where(here.bool(), features, self.mask_tokens[index].to(features.dtype))
            scales.append(self.densify_projections[index](features))
        return scales

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """Same inputs as :meth:`SparKModel.forward`, masking ``config.mask_ratio`` by default. Returns
        SparKForPreTrainingOutput with the masked MSE ``loss`` and ``logits`` (batch, cells, stride**2 * C)."""
        encoded = self.spark(
            pixel_values, noise=noise, mask_ratio=self.config.mask_ratio if mask_ratio is None else mask_ratio,
            output_hidden_states=output_hidden_states, return_dict=True,
        )
        rows, cols = self.spark.cell_grid(pixel_values)
        active = (1.0 - encoded.mask).view(-1, 1, rows, cols)
        reconstruction = self.decoder(self.densify(encoded.feature_maps, active))
        stride = self.config.downsample_ratio
        logits = patchify(reconstruction, (stride, stride))
        # the target in float32 even under autocast: per-cell normalisation in bf16 would blur it
        target = pixel_target(pixel_values.float(), (stride, stride), self.config.norm_pix_loss)
        return SparKForPreTrainingOutput(
            loss=masked_mse(logits, target, encoded.mask), logits=logits, mask=encoded.mask, ids_restore=None,
            hidden_states=encoded.hidden_states,
        )

    @torch.no_grad()
    def reconstruct(self, pixel_values: torch.Tensor, output) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(masked input, reconstruction, reconstruction with the visible cells pasted back), each (batch, C, H, W),
        norm-pix undone with each cell's own statistics (as the official visualisation)."""
        stride = self.config.downsample_ratio
        patches = patchify(pixel_values.to(output.logits.dtype), (stride, stride))
        prediction = output.logits
        if self.config.norm_pix_loss:
            mean, std = patch_statistics(patches)
            prediction = prediction * std + mean
        hidden = output.mask.unsqueeze(-1).to(patches.dtype)
        grid = (pixel_values.shape[-2] // stride, pixel_values.shape[-1] // stride)
        channels = pixel_values.shape[1]

        def image(cells):
            return unpatchify(cells, (stride, stride), grid, channels)

        return image(patches * (1 - hidden)), image(prediction), image(patches * (1 - hidden) + prediction * hidden)


class SparKForImageClassification(SparKPreTrainedModel):
    """The dense backbone with the head of its own transformers classification class (ResNet: flatten + Linear on the
    pooled feature; ConvNeXt: Linear after its final LayerNorm). :meth:`to_transformers` returns that class with
    these weights."""

    def __init__(self, config: SparKConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.spark = SparKModel(config)
        width = config.stage_widths[-1]
        linear = nn.Linear(width, config.num_labels) if config.num_labels > 0 else nn.Identity()
        self.classifier = nn.Sequential(nn.Flatten(), linear) if config.backbone_type == "resnet" else linear
        self.post_init()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """pixel_values (batch, C, H, W); labels (batch,). Returns ImageClassifierOutputWithNoAttention (logits
        (batch, num_labels)), as transformers' own ResNet / ConvNeXt classifiers."""
        encoded = self.spark(pixel_values, mask_ratio=0.0, output_hidden_states=output_hidden_states, return_dict=True)
        logits = self.classifier(encoded.pooler_output)
        loss = classification_loss(logits, labels, self.config) if labels is not None else None
        return ImageClassifierOutputWithNoAttention(loss=loss, logits=logits, hidden_states=encoded.hidden_states)

    def to_transformers(self):
        """transformers' own classification model of the backbone (``ResNetForImageClassification`` /
        ``ConvNextForImageClassification``) with these weights and labels: the same logits."""
        backbone = self.config.backbone()
        backbone.num_labels = self.config.num_labels
        backbone.id2label, backbone.label2id = dict(self.config.id2label), dict(self.config.label2id)
        model = AutoModelForImageClassification.from_config(backbone)
        prefix = model.base_model_prefix
        state = {}
        for name, value in self.state_dict().items():
            if name.startswith("spark.backbone."):
                state[f"{prefix}.{name[len('spark.backbone.'):]}"] = value
            elif name.startswith("classifier."):
                state[name] = value
        model.load_state_dict(state)
        return model.to(next(self.parameters()).dtype).eval()


__all__ = [
    "SparKConfig",
    "SparKPreTrainedModel",
    "SparKModel",
    "SparKForPreTraining",
    "SparKForImageClassification",
    "SparKModelOutput",
    "SparKForPreTrainingOutput",
]


# ----------------------------------------------------------------------------------------------- registry row
# Tiny configs: 3-stage nets of stride 16 on 64x64 images, a 4x4 grid of 16 cells (6 stay at mask ratio 0.6).
TINY_RESNET = dict(model_type="resnet", embedding_size=16, hidden_sizes=[16, 32, 64], depths=[1, 1, 1],
                   layer_type="basic")
TINY_CONVNEXT = dict(model_type="convnext", patch_size=4, num_stages=3, hidden_sizes=[16, 32, 64], depths=[1, 1, 1])

METHOD = dict(
    name="spark",
    paper="Designing BERT for Convolutional Networks: Sparse and Hierarchical Masked Modeling (Tian et al., ICLR "
          "2023), arXiv:2301.03580",
    config_class=SparKConfig,
    model_classes={
        "base": SparKModel, "pretraining": SparKForPreTraining, "image-classification": SparKForImageClassification,
    },
    processor="MAEImageProcessor",
    # keyu-tian/SparK pretrain/utils/imagenet.py: RandomResizedCrop(scale=(0.67, 1.0), bicubic), horizontal flip
    pretrain_augmentation=dict(crop_scale=(0.67, 1.0), crop_ratio=(3 / 4, 4 / 3), resample="bicubic",
                               flip_probability=0.5),
    # pretrain/utils/arg_util.py: base lr 2e-4 per 256 images at batch 4096; (0.9, 0.95) the ResNets' betas
    pretrain_base_lr=2e-4, pretrain_batch=4096, pretrain_betas=(0.9, 0.95),
    presets={
        "spark-tiny": dict(backbone_config=TINY_RESNET, image_size=64, decoder_hidden_size=64),
        "spark-convnext-tiny": dict(backbone_config=TINY_CONVNEXT, image_size=64, decoder_hidden_size=64),
        "spark-resnet50": dict(backbone_config=dict(
            model_type="resnet", embedding_size=64, hidden_sizes=[256, 512, 1024, 2048], depths=[3, 4, 6, 3],
            layer_type="bottleneck")),
        "spark-convnext-small": dict(backbone_config=dict(
            model_type="convnext", patch_size=4, hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 27, 3],
            drop_path_rate=0.2)),
    },
    exports=["SparKPreTrainedModel", "SparKModelOutput", "SparKForPreTrainingOutput"],
)
