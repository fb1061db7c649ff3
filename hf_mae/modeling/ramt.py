"""R-AMT: Regularized Mask Tuning (Zheng et al., ICCV 2023), "Regularized Mask Tuning: Uncovering Hidden Knowledge
in Pre-trained Vision-Language Models", arXiv:2307.15049; official code ``wuw2019/R-AMT``.

R-AMT is no pre-training: it adapts a frozen CLIP-like dual encoder to a few-shot classification task by learning
**binary masks on chosen weights** of the image encoder and nothing else.
1. Every masked weight ``W`` gets a real-valued score tensor ``S`` of its shape, all ``score_init`` (1e-2) at the
   start; the forward uses ``W * 1[S > threshold]`` (threshold 5e-3, so every mask starts at one and the wrapped model
   **is** the original), and the gradient reaches ``S`` straight through the binarisation (straight-through estimator:
   dL/dS = dL/dM). The defaults mask the patch embedding and every attention projection of the image encoder (the
   paper's ViT-B/16 setting: ``MASK_MLP: False``); ``mask_mlp=True`` adds the MLPs; ``target_modules`` picks any.
2. The classifier is CLIP's zero-shot one: the class names of ``config.id2label`` in ``prompt_template`` ("a photo of
   a {}."), encoded once by the frozen text tower, L2-normalised (``class_embeddings``, a saved buffer); logits are
   ``exp(logit_scale) * cos(image, class)`` (+ ``logit_bias`` for SigLIP).
3. Loss: ``CE(logits, labels) + score_l2_weight * sum_S ||S||_2`` (1e-4; one L2 norm per score tensor, as the
   official ``RegLoss``).
4. Gradient dropout regulariser (``grad_drop``): the KL divergence from the frozen zero-shot model (the same weights,
   unmasked) to the masked one at temperature ``kl_temperature`` gives ``g_b = dKL/dS``; the loss gives ``g_a``; each
   element of ``g_a`` is kept with probability ``P = (sign(g_a) (g_a + g_b) / (|g_a| + |g_b| + 1e-8) + 1) / 2``, i.e.
   always where the two agree in sign and rarely where the KL pulls the other way, and otherwise multiplied by
   ``1 - grad_drop_lambda`` (0 at the paper's lambda = 1). The KL itself is never added to the loss.

The wrapped model is any transformers dual encoder with ``vision_model`` and ``get_text_features`` (``CLIPModel``,
``VisionTextDualEncoderModel``, ``SiglipModel``): built from ``clip_config`` (a config dict, randomly initialised from
``clip_seed``), loaded from ``clip_name_or_path`` (its weights warm-start a fresh build), or passed as an instance
(``RAMTForImageClassification(config, clip=model, tokenizer=tokenizer)``). Its weights are frozen and keep their own
names under ``ramt.clip.``; the scores are the only trainable parameters (``ramt.mask_scores``).

PEFT-like use: :meth:`RAMTForImageClassification.save_masks` writes the binary masks alone (``ramt_masks.safetensors``,
one bool per masked weight, plus ``ramt_config.json``) and :meth:`RAMTForImageClassification.from_masks` puts them on
a dual encoder again; :meth:`RAMTForImageClassification.merge_and_unload` returns the dual encoder with the masks
multiplied into its weights, and :meth:`RAMTForImageClassification.save_merged` writes it as a plain folder that the
original class (``CLIPModel.from_pretrained``) loads without hf-mae.

Departures from the paper / the official code:
- the wrapped model is a transformers dual encoder, its attention q/k/v projections separate Linears (OpenAI CLIP's
  ``in_proj_weight`` fused): the masks are the same elements, held per projection; an ``nn.MultiheadAttention``
  (SigLIP's pooling head) has its q/k/v in one parameter, not a Linear: only its ``out_proj`` is masked;
- the KL term is the true KL(teacher || student) (the official ``KLLoss`` is the soft cross-entropy, KL plus the
  teacher's entropy: the same gradient) and only its gradient is used; the official FUSE_ALPHA (1) is not exposed;
- with gradient accumulation (Trainer) the drop is drawn per micro-batch from that micro-batch's (scaled) gradients;
  the official code has one batch per step;
- the masks are restored from ``save_masks`` as scores ``score_init`` (kept) or 0 (dropped): the binary masks are
  exact, the real-valued scores (training state) are not kept in that file (``save_pretrained`` keeps them);
- the frozen backbone runs in eval mode during mask tuning (no dropout; the official puts the whole model in eval
  mode too); gradient checkpointing is not supported (the masked weights are swapped in with ``functional_call``, which
  a recomputation in the backward pass would not see);
- the processor is hf-mae's image processor with CLIP's mean and std, resizing to the image size (bicubic) without
  CLIP's shortest-side resize + centre crop (non-square images are squashed, not cropped);
- the official trains with Adam (lr 8e-5, 30 epochs; ImageNet 3e-5, 10 epochs), cosine, batch 32, no weight decay;
  ``hf-mae finetune`` uses AdamW with weight decay 0 (the same update), lr 8e-5, cosine, no warmup, no label
  smoothing (``finetune_defaults``).

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AutoConfig, AutoModel, AutoTokenizer, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from .base import MaskedModelPreTrainedModel, check_rate
from .teachers import build_auto_model, check_teacher_fields, teacher_blocks
from .text import MINILM, no_warm_start, warm_start_enabled

OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
MASKS_FILE = "ramt_masks.safetensors"
MASKS_CONFIG_FILE = "ramt_config.json"
_ATTENTION = re.compile(r"(^|\.)[^.]*(attn|attention)[^.]*(\.|$)")  # a module path through an attention module
# config keys of a saved backbone config that describe the checkpoint, not the architecture
_NOT_ARCHITECTURE = ("_name_or_path", "architectures", "transformers_version", "dtype", "torch_dtype")


class RAMTConfig(PreTrainedConfig):
    r"""Configuration of an R-AMT model: a frozen CLIP-like dual encoder and the masks tuned on it. Defaults are the
    paper's (the official ``configs/trainers/MASK/vit_b16.yaml``).

    clip_name_or_path: the dual encoder (a Hub id or folder): its config.json gives the architecture when
        ``clip_config`` is None, its weights warm-start a freshly built model (never ``from_pretrained`` of a saved
        R-AMT model, which holds its own).
    clip_config: the dual encoder's architecture as a config dict with ``model_type`` (``"clip"``,
        ``"vision-text-dual-encoder"``, ``"siglip"``); without a name it is randomly initialised from ``clip_seed``.
    clip_seed: seed of that random initialisation (hf-mae's choice: the global RNG is left alone).
    tokenizer_name_or_path: the tokenizer of the class-name prompts (None: ``clip_name_or_path``).
    prompt_template: the prompt each class name fills (``"a photo of a {}."``, the official template of most data
        sets; names are lower-cased and ``_`` becomes a space, as the official ``TextEncoder``).
    target_modules: regular expressions (``re.fullmatch``) over the module names of the image encoder
        (``clip.vision_model``) whose ``weight`` is masked; None: the paper's choice, the patch embedding (every
        Conv2d) and every Linear inside an attention module, plus the MLP Linears of the blocks with ``mask_mlp``.
    mask_mlp: with ``target_modules`` None, also mask the blocks' MLP Linears (the official ``MASK_MLP``, False for
        ViT-B/16).
    score_init: the scores' initial value ('1s' init, ``MASK.SCALE`` = 1e-2).
    threshold: a weight is kept where its score is above it (5e-3).
    score_l2_weight: weight of the sum of the score tensors' L2 norms in the loss (1e-4).
    grad_drop: the gradient-dropout regulariser (``MASK.GDR``, on).
    grad_drop_lambda: share of a dropped gradient element removed (1: set to zero, the paper's).
    kl_temperature: temperature of the KL to the zero-shot model (``GDR_T`` = 1).
    """

    model_type = "ramt"

    clip_name_or_path: str | None = None
    clip_config: dict | None = None
    clip_seed: int = 0
    tokenizer_name_or_path: str | None = None
    prompt_template: str = "a photo of a {}."
    target_modules: list[str] | None = None
    mask_mlp: bool = False
    score_init: float = 1e-2
    threshold: float = 5e-3
    score_l2_weight: float = 1e-4
    grad_drop: bool = True
    grad_drop_lambda: float = 1.0
    kl_temperature: float = 1.0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_teacher_fields(self, prefix="clip")
        name = self.tokenizer_name_or_path
        if name is not None and not (isinstance(name, str) and name):
            raise ValueError(f"tokenizer_name_or_path must be a Hub id or folder (a non-empty str) or None, got {name!r}")
        if not (isinstance(self.prompt_template, str) and self.prompt_template.count("{}") == 1):
            raise ValueError(f"prompt_template must be a str with exactly one '{{}}' for the class name, got "
                             f"{self.prompt_template!r}")
        if self.target_modules is not None:
            if isinstance(self.target_modules, str):
                self.target_modules = [self.target_modules]
            if not (isinstance(self.target_modules, (list, tuple)) and self.target_modules
                    and all(isinstance(p, str) and p for p in self.target_modules)):
                raise ValueError(f"target_modules must be None or a non-empty list of regular expressions (str), got "
                                 f"{self.target_modules!r}")
            for pattern in self.target_modules:
                try:
                    re.compile(pattern)
                except re.error as error:
                    raise ValueError(f"target_modules holds {pattern!r}, not a regular expression: {error}") from None
            self.target_modules = list(self.target_modules)
        for name in ("mask_mlp", "grad_drop"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("score_init", "threshold", "score_l2_weight", "kl_temperature"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if self.kl_temperature <= 0:
            raise ValueError(f"kl_temperature must be > 0, got {self.kl_temperature!r}")
        if self.score_init <= self.threshold:
            raise ValueError(f"score_init ({self.score_init}) must be above threshold ({self.threshold}): every mask "
                             "starts at one (the wrapped model is the original)")
        check_rate("grad_drop_lambda", self.grad_drop_lambda, closed=True)
        if self.clip_config is None and self.clip_name_or_path is not None:
            # the architecture only (config.json), never the weights: a fresh build reads those (warm start)
            self.clip_config = architecture_dict(AutoConfig.from_pretrained(self.clip_name_or_path))

    def backbone_config(self) -> PreTrainedConfig:
        """The transformers config of the wrapped dual encoder."""
        if self.clip_config is None:
            raise ValueError("RAMTConfig needs a dual encoder: set clip_name_or_path (a Hub id or folder) or "
                             "clip_config (a config dict with 'model_type'), or pass the model as "
                             "RAMTForImageClassification(config, clip=...)")
        settings = dict(self.clip_config)
        return AutoConfig.for_model(settings.pop("model_type"), **settings)

    def vision_config(self) -> PreTrainedConfig:
        return self.backbone_config().vision_config

    # the image encoder's sizes read through (the processor and the contract suite read them)
    @property
    def image_size(self):
        return self.vision_config().image_size

    @property
    def num_channels(self) -> int:
        return self.vision_config().num_channels

    @property
    def hidden_size(self) -> int:
        return self.vision_config().hidden_size

    @property
    def num_hidden_layers(self) -> int:
        return self.vision_config().num_hidden_layers

    @property
    def num_attention_heads(self) -> int:
        return self.vision_config().num_attention_heads

    @property
    def class_names(self) -> list[str]:
        """The class names of ``id2label``, in id order."""
        return [str(self.id2label[i]) for i in range(self.num_labels)]


def architecture_dict(model_or_config) -> dict:
    """The architecture of a model or config as a config dict (with ``model_type``) that the config rebuilds."""
    config = model_or_config.config if isinstance(model_or_config, PreTrainedModel) else model_or_config
    settings = config.to_dict()
    for key in _NOT_ARCHITECTURE:
        settings.pop(key, None)
    for sub in ("vision_config", "text_config"):
        if isinstance(settings.get(sub), dict):
            for key in _NOT_ARCHITECTURE:
                settings[sub].pop(key, None)
    settings["model_type"] = config.model_type
    return settings


# ---------------------------------------------------------------------------------------------------------------
# The masks: which weights, the straight-through binarisation, the gradient dropout


def mask_targets(vision_model: nn.Module, target_modules: list[str] | None = None, mask_mlp: bool = False) -> list[str]:
    """The names (relative to ``vision_model``) of the modules whose ``weight`` R-AMT masks, in module order.

    ``target_modules`` None: every Conv2d (the patch embedding) and every Linear on a path through an attention module
    (``self_attn.q_proj``, ``attention.attention.query``, ``attn.qkv``, ...), plus with ``mask_mlp`` every other Linear
    inside the transformer blocks. Otherwise the Linear / Conv2d modules whose name fully matches one of the patterns;
    a ValueError when nothing matches."""
    layers = [(name, module) for name, module in vision_model.named_modules() if isinstance(module, (nn.Linear, nn.Conv2d))]
    if target_modules is not None:
        patterns = [re.compile(pattern) for pattern in target_modules]
        chosen = [name for name, _ in layers if any(p.fullmatch(name) for p in patterns)]
        if not chosen:
            raise ValueError(f"target_modules {target_modules} match no Linear or Conv2d of the image encoder; its "
                             f"layers are named like {[name for name, _ in layers[:6]]}")
        return chosen
    chosen = [name for name, module in layers if isinstance(module, nn.Conv2d) or _ATTENTION.search(name)]
    if mask_mlp:
        blocks = teacher_blocks(vision_model)
        inside = {id(module) for block in blocks for module in block.modules()}
        chosen = [name for name, module in layers if name in chosen or id(module) in inside]
    if not chosen:
        raise ValueError(f"{type(vision_model).__name__} has no Conv2d and no attention Linear to mask; pass "
                         "target_modules (regular expressions over its module names)")
    return chosen


def score_key(module_name: str) -> str:
    """The key of a module's score tensor in ``mask_scores`` (a ParameterDict: no dots in keys)."""
    return module_name.replace(".", "__")


class BinarizeStraightThrough(torch.autograd.Function):
    """``1[scores > threshold]`` forward, the identity backward (the official ``Binarizer``)."""

    @staticmethod
    def forward(ctx, scores, threshold):
        return (scores > threshold).to(scores.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output, None


def binarize(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """The {0, 1} mask of ``scores``, with the straight-through gradient when gradients are on."""
    if torch.is_grad_enabled() and scores.requires_grad:
        return BinarizeStraightThrough.apply(scores, threshold)
    return (scores > threshold).to(scores.dtype)


def grad_drop(grad_a: torch.Tensor, grad_b: torch.Tensor, lambda_: float = 1.0, epsilon: float = 1e-8,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """R-AMT's gradient dropout of ``grad_a`` (the task loss's) against ``grad_b`` (the KL's), element-wise: kept with
    probability ``P = (sign(a) (a + b) / (|a| + |b| + eps) + 1) / 2``, else scaled by ``1 - lambda_``."""
    keep = (torch.sign(grad_a) * (grad_a + grad_b) / (grad_a.abs() + grad_b.abs() + epsilon) + 1) / 2
    draw = torch.rand(grad_a.shape, device=grad_a.device, dtype=grad_a.dtype, generator=generator)
    return ((1.0 - lambda_) + lambda_ * (keep > draw).to(grad_a.dtype)) * grad_a


class GradDropGate(torch.autograd.Function):
    """The identity forward; backward applies :func:`grad_drop` with the KL gradient that ``holder["grads"][key]``
    holds by then (the forward fills it once the KL is known), or passes the gradient on when there is none."""

    @staticmethod
    def forward(ctx, scores, holder, key, lambda_):
        ctx.holder, ctx.key, ctx.lambda_ = holder, key, lambda_
        return scores.view_as(scores)

    @staticmethod
    def backward(ctx, grad_output):
        grad_b = ctx.holder.get("grads", {}).get(ctx.key)
        if grad_b is None:
            return grad_output, None, None, None
        return grad_drop(grad_output, grad_b.to(grad_output.dtype), ctx.lambda_), None, None, None


def kl_to_teacher(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Batch mean of KL(softmax(teacher / T) || softmax(student / T)) * T^2 (float32)."""
    student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return (teacher.exp() * (teacher - student)).sum(-1).mean() * temperature**2


# ---------------------------------------------------------------------------------------------------------------
# Models


@dataclass
class RAMTImageClassifierOutput(ModelOutput):
    """
    loss: ``classification_loss + score_l2_weight * score_penalty`` (when ``labels`` are given).
    logits: (batch, num_labels) ``exp(logit_scale) * cos(image, class)`` of the masked model.
    classification_loss: the cross-entropy; score_penalty: the sum of the score tensors' L2 norms.
    kl_loss: in training with ``grad_drop``, KL(zero-shot || masked) of the batch, whose gradient drives the dropout
        (never part of ``loss``); with ``return_kl=True`` in any mode.
    image_embeds: (batch, projection_dim) the masked image features, L2-normalised.
    hidden_states, attentions: the image encoder's, when asked.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    classification_loss: torch.Tensor | None = None
    score_penalty: torch.Tensor | None = None
    kl_loss: torch.Tensor | None = None
    image_embeds: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


def l2_normalize(features: torch.Tensor) -> torch.Tensor:
    """``features / ||features||_2`` over the last dim, computed as transformers' CLIP does (so R-AMT's logits at the
    start are CLIPModel's ``logits_per_image`` bit for bit)."""
    return features / features.pow(2).sum(dim=-1, keepdim=True).pow(0.5)


def _pooled(output) -> torch.Tensor:
    """A transformers ``get_*_features`` result (a tensor, or a ModelOutput in transformers 5) as a tensor."""
    if isinstance(output, torch.Tensor):
        return output
    return output.pooler_output if getattr(output, "pooler_output", None) is not None else output[1]


class RAMTPreTrainedModel(MaskedModelPreTrainedModel):
    config_class = RAMTConfig
    base_model_prefix = "ramt"
    _no_split_modules = []
    supports_gradient_checkpointing = False  # functional_call swaps the masked weights in for the forward only
    _supports_flash_attn = False
    _supports_flex_attn = False

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, nn.ParameterDict) and getattr(module, "is_ramt_scores", False):
            for scores in module.values():
                init.constant_(scores, self.config.score_init)
        elif isinstance(module, RAMTForImageClassification):
            if not getattr(module.class_embeddings, "_is_hf_initialized", False):
                init.copy_(module.class_embeddings, module.zero_shot_classifier().to(module.class_embeddings))
        else:
            super()._init_weights(module)

    @torch.no_grad()
    def initialize_weights(self):
        # transformers' CLIP sets logit_scale in its __init__ only (its _init_weights skips it), so a load that misses
        # it would leave it uninitialised; the nested model's modules are initialised by its own rules, hence here
        for module in self.modules():
            scale = getattr(module, "logit_scale", None)
            if isinstance(module, PreTrainedModel) and isinstance(scale, nn.Parameter) and hasattr(
                    module.config, "logit_scale_init_value"):
                init.constant_(scale, module.config.logit_scale_init_value)
        super().initialize_weights()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        with no_warm_start():
            model = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        output = model if isinstance(model, PreTrainedModel) else model[0]  # output_loading_info=True: a tuple
        for module in output.modules():
            if isinstance(module, RAMTModel):
                module.clip.requires_grad_(False)  # loading makes fresh Parameters: the backbone stays frozen
        return model


class RAMTModel(RAMTPreTrainedModel):
    """The dual encoder with its image encoder's weights masked (``AutoModel``): a feature extractor.

    ``forward(pixel_values)``: the image encoder's ``last_hidden_state`` (batch, tokens, hidden) under the current
    masks and ``pooler_output`` (batch, projection_dim), the projected image features (not normalised). Holds the
    frozen dual encoder as ``clip`` and one score tensor per masked weight in ``mask_scores``."""

    # hidden states and attentions come from the wrapped image encoder's own output plumbing (any family); the
    # declaration names the record points of the CLIP family, the default backbone, as transformers' CLIP declares them
    _can_record_outputs = {"hidden_states": "CLIPEncoderLayer", "attentions": "CLIPAttention"}

    def __init__(self, config: RAMTConfig, clip: PreTrainedModel | None = None, warm_start: bool = True):
        super().__init__(config)
        if clip is not None and not isinstance(clip, PreTrainedModel):
            raise TypeError(f"clip must be a transformers PreTrainedModel (a CLIP-like dual encoder), got "
                            f"{type(clip).__name__}")
        fresh = clip is None
        if clip is None:
            implementation = getattr(config, "_attn_implementation", None)
            kwargs = {"attn_implementation": implementation} if implementation in ("eager", "sdpa") else {}
            config.backbone_config()  # a ValueError that explains when there is no dual encoder
            clip = build_auto_model(None, config.clip_config, seed=config.clip_seed, **kwargs)
        for name in ("vision_model", "get_text_features"):
            if not hasattr(clip, name):
                raise TypeError(f"clip must be a CLIP-like dual encoder with a vision_model and get_text_features "
                                f"(CLIPModel, VisionTextDualEncoderModel, SiglipModel), got {type(clip).__name__}")
        if not fresh:  # a given dual encoder keeps every weight it has: post_init's initialisation passes it by
            for tensor in (*clip.parameters(), *clip.buffers()):
                tensor._is_hf_initialized = True
        config.clip_config = architecture_dict(clip)  # a saved model rebuilds this dual encoder from its config
        self.clip = clip.requires_grad_(False).eval()
        self.masked_modules = mask_targets(clip.vision_model, config.target_modules, config.mask_mlp)
        modules = dict(clip.vision_model.named_modules())
        self.mask_scores = nn.ParameterDict({
            score_key(name): nn.Parameter(torch.full_like(modules[name].weight, config.score_init))
            for name in self.masked_modules})
        self.mask_scores.is_ramt_scores = True
        self.post_init()
        self.warm_start_info = None
        if fresh and warm_start and config.clip_name_or_path is not None and warm_start_enabled():
            self.warm_start_info = self.load_clip_weights(config.clip_name_or_path)

    def load_clip_weights(self, name_or_path: str) -> dict:
        """Copies ``AutoModel.from_pretrained(name_or_path)``'s weights (float32) into ``clip``."""
        source = AutoModel.from_pretrained(name_or_path, dtype=torch.float32)
        result = self.clip.load_state_dict(source.state_dict(), strict=False)
        return {"missing_keys": list(result.missing_keys), "unexpected_keys": list(result.unexpected_keys)}

    def train(self, mode: bool = True):
        super().train(mode)
        self.clip.eval()  # the frozen backbone never drops out: the zero-shot teacher is the same network
        return self

    def masks(self) -> dict[str, torch.Tensor]:
        """Module name -> its {0, 1} weight mask (straight-through in training with gradients on)."""
        return {name: binarize(self.mask_scores[score_key(name)], self.config.threshold) for name in self.masked_modules}

    def masked_parameters(self, gate: dict | None = None) -> dict[str, torch.Tensor]:
        """``weight`` name (relative to the image encoder) -> ``W * mask``: what ``functional_call`` swaps in.
        ``gate`` (training with grad-drop): the holder the scores' :class:`GradDropGate` reads the KL gradients
        from; its ``"scores"`` receive the gated score tensors."""
        modules = dict(self.clip.vision_model.named_modules())
        weights = {}
        for name in self.masked_modules:
            scores = self.mask_scores[score_key(name)]
            if gate is not None:
                scores = GradDropGate.apply(scores, gate, name, self.config.grad_drop_lambda)
                gate.setdefault("scores", {})[name] = scores
            weight = modules[name].weight
            weights[f"{name}.weight"] = weight * binarize(scores, self.config.threshold).to(weight.dtype)
        return weights

    def vision_forward(self, pixel_values, masked: bool = True, gate: dict | None = None, **kwargs):
        """The image encoder's output with the masks applied (``masked=False``: the original, zero-shot weights)."""
        vision = self.clip.vision_model
        if not masked:
            return vision(pixel_values=pixel_values, return_dict=True, **kwargs)
        return torch.func.functional_call(vision, self.masked_parameters(gate), args=(),
                                          kwargs=dict(pixel_values=pixel_values, return_dict=True, **kwargs),
                                          strict=False, tie_weights=False)

    def project(self, vision_output) -> torch.Tensor:
        """Projected image features (batch, projection_dim) of an image-encoder output (SigLIP: its pooled head)."""
        pooled = _pooled(vision_output)
        projection = getattr(self.clip, "visual_projection", None)
        return projection(pooled) if projection is not None else pooled

    def check_pixels(self, pixel_values) -> None:
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"pixel_values must be a torch.Tensor (batch, channels, height, width), got "
                            f"{type(pixel_values).__name__}")
        if not torch.is_floating_point(pixel_values):
            raise TypeError(f"pixel_values must have a floating dtype, got dtype {pixel_values.dtype}")
        if pixel_values.dim() != 4:
            raise ValueError(f"pixel_values must have 4 dims (batch, channels, height, width), got shape "
                             f"{tuple(pixel_values.shape)}")
        if pixel_values.shape[0] == 0:
            raise ValueError("pixel_values is an empty batch")
        channels = self.config.vision_config().num_channels
        if pixel_values.shape[1] != channels:
            raise ValueError(f"pixel_values has {pixel_values.shape[1]} channels, the image encoder takes "
                             f"num_channels={channels}")

    def forward(self, pixel_values: torch.Tensor | None = None, output_hidden_states: bool | None = None,
                output_attentions: bool | None = None, interpolate_pos_encoding: bool = False,
                return_dict: bool | None = None, mask_ratio: float | None = None) -> BaseModelOutputWithPooling:
        r"""pixel_values: (batch, channels, height, width).
        mask_ratio: None or 0 only (the image API's "mask no token"): R-AMT masks weights, never tokens."""
        if mask_ratio not in (None, 0, 0.0):
            raise ValueError(f"mask_ratio={mask_ratio!r}: R-AMT masks weights, not tokens; only None or 0 is allowed")
        self.check_pixels(pixel_values)
        extra = dict(output_hidden_states=output_hidden_states, output_attentions=output_attentions)
        if interpolate_pos_encoding:
            extra["interpolate_pos_encoding"] = True
        out = self.vision_forward(pixel_values, **extra)
        output = BaseModelOutputWithPooling(last_hidden_state=out.last_hidden_state, pooler_output=self.project(out),
                                            hidden_states=out.hidden_states, attentions=out.attentions)
        return output.to_tuple() if return_dict is False else output

    @torch.no_grad()
    def mask_statistics(self) -> dict:
        """How much the masks remove: ``masked_weights`` (elements under a mask), ``zeroed`` (mask 0), ``fraction``
        (zeroed / masked_weights), ``fraction_of_model`` (zeroed / every parameter of the dual encoder),
        ``masked_share`` (masked_weights / every parameter) and ``per_module`` zeroed fractions."""
        per_module, zeroed, total = {}, 0, 0
        for name in self.masked_modules:
            scores = self.mask_scores[score_key(name)]
            dropped = int((scores <= self.config.threshold).sum())
            per_module[name] = dropped / scores.numel()
            zeroed, total = zeroed + dropped, total + scores.numel()
        everything = sum(p.numel() for p in self.clip.parameters())
        return dict(masked_weights=total, zeroed=zeroed, fraction=zeroed / total, fraction_of_model=zeroed / everything,
                    masked_share=total / everything, per_module=per_module)


class RAMTForImageClassification(RAMTPreTrainedModel):
    """Mask tuning of a dual encoder for classification (``AutoModelForImageClassification``; also the
    pre-training class: its loss is the method's). The classifier is the zero-shot one of the class names
    (``config.id2label``) in ``config.prompt_template``, computed by the frozen text tower (``class_embeddings``,
    (num_labels, projection_dim), a saved buffer: :meth:`set_class_names` recomputes it)."""

    # what ``hf-mae finetune`` uses where the user gave nothing: the official recipe (Adam = AdamW without decay)
    finetune_defaults = dict(lr=8e-5, weight_decay=0.0, layer_decay=1.0, label_smoothing=0.0, warmup_ratio=0.0)
    # Trainer's label smoother computes the loss itself and hides the labels from the model: the L2 term and the
    # gradient dropout would silently be lost
    label_smoothing_allowed = False

    def __init__(self, config: RAMTConfig, clip: PreTrainedModel | None = None, tokenizer=None):
        super().__init__(config)
        self._tokenizer = tokenizer
        self.ramt = RAMTModel(config, clip=clip, warm_start=False)
        projection = getattr(config.backbone_config(), "projection_dim", None) or config.vision_config().hidden_size
        self.register_buffer("class_embeddings", torch.zeros(config.num_labels, projection), persistent=True)
        self.post_init()
        self.warm_start_info = None
        if clip is None and config.clip_name_or_path is not None and warm_start_enabled():
            self.warm_start_info = self.ramt.load_clip_weights(config.clip_name_or_path)
            self.set_class_names()  # the prompts through the real text tower

    # -- the zero-shot classifier --
    def tokenizer(self):
        """The prompts' tokenizer: the one given to the constructor, else ``tokenizer_name_or_path`` (or
        ``clip_name_or_path``) loaded once."""
        if self._tokenizer is None:
            name = self.config.tokenizer_name_or_path or self.config.clip_name_or_path
            if name is None:
                raise ValueError("R-AMT needs a tokenizer for the class-name prompts: set tokenizer_name_or_path (or "
                                 "clip_name_or_path), or pass tokenizer= to the constructor")
            self._tokenizer = AutoTokenizer.from_pretrained(name)
        return self._tokenizer

    def prompts(self, class_names=None) -> list[str]:
        names = self.config.class_names if class_names is None else list(class_names)
        return [self.config.prompt_template.format(str(name).replace("_", " ").lower()) for name in names]

    @torch.no_grad()
    def zero_shot_classifier(self, class_names=None) -> torch.Tensor:
        """(num_classes, projection_dim) the L2-normalised text features of the class prompts (float32)."""
        clip = self.ramt.clip
        tokens = self.tokenizer()(self.prompts(class_names), padding=True, return_tensors="pt")
        device = next(clip.parameters()).device
        tokens = {k: v.to(device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        return l2_normalize(_pooled(clip.get_text_features(**tokens)).float())

    def set_class_names(self, class_names=None) -> None:
        """Sets the classes (``id2label``; None: keep them) and recomputes ``class_embeddings`` from the prompts."""
        if class_names is not None:
            names = [str(name) for name in class_names]
            if not names or len(set(names)) != len(names):
                raise ValueError(f"class_names must be distinct names, got {class_names!r}")
            self.config.id2label = dict(enumerate(names))
            self.config.label2id = {name: i for i, name in enumerate(names)}
        embeddings = self.zero_shot_classifier()
        self.class_embeddings = embeddings.to(self.class_embeddings.device)

    # -- logits --
    def logits_from(self, image_features: torch.Tensor) -> torch.Tensor:
        clip = self.ramt.clip
        image = l2_normalize(image_features)
        # CLIP's order of operations: (classes x images) then transposed
        logits = (self.class_embeddings.to(image.dtype) @ image.t() * clip.logit_scale.exp().to(image.dtype)).t()
        logits = logits.contiguous()
        bias = getattr(clip, "logit_bias", None)
        return logits + bias.to(image.dtype) if bias is not None else logits

    @torch.no_grad()
    def zero_shot_logits(self, pixel_values: torch.Tensor, **kwargs) -> torch.Tensor:
        """The frozen dual encoder's logits (every mask one): the regulariser's teacher."""
        return self.logits_from(self.ramt.project(self.ramt.vision_forward(pixel_values, masked=False, **kwargs)))

    def forward(self, pixel_values: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, output_attentions: bool | None = None,
                interpolate_pos_encoding: bool = False, return_kl: bool = False, return_dict: bool | None = None,
                **kwargs) -> RAMTImageClassifierOutput:
        r"""
        pixel_values: (batch, channels, height, width); labels: (batch,) class ids.
        return_kl: also compute ``kl_loss`` outside training (the KL drift from the zero-shot model).
        """
        model, config = self.ramt, self.config
        model.check_pixels(pixel_values)
        if labels is not None:
            if not isinstance(labels, torch.Tensor) or labels.dtype not in (torch.int64, torch.int32):
                raise TypeError(f"labels must be an integer torch.Tensor of class ids, got "
                                f"{getattr(labels, 'dtype', type(labels).__name__)}")
            if labels.shape != pixel_values.shape[:1]:
                raise ValueError(f"labels must have shape ({pixel_values.shape[0]},), got {tuple(labels.shape)}")
            if labels.numel() and (labels.min() < 0 or labels.max() >= config.num_labels):
                raise ValueError(f"labels must be class ids in [0, {config.num_labels}), got values in "
                                 f"[{int(labels.min())}, {int(labels.max())}]")
        extra = dict(output_hidden_states=output_hidden_states, output_attentions=output_attentions)
        if interpolate_pos_encoding:
            extra["interpolate_pos_encoding"] = True
        dropping = (self.training and config.grad_drop and labels is not None and torch.is_grad_enabled()
                    and any(s.requires_grad for s in model.mask_scores.values()))
        gate = {} if dropping else None
        out = model.vision_forward(pixel_values, gate=gate, **extra)
        image = model.project(out)
        logits = self.logits_from(image)
        loss = classification = penalty = kl = None
        if labels is not None:
            classification = F.cross_entropy(logits.float(), labels.long())
            scores = gate["scores"].values() if dropping else model.mask_scores.values()
            penalty = sum(s.float().norm(2) for s in scores)
            loss = classification + config.score_l2_weight * penalty
        if dropping or return_kl:
            teacher = self.zero_shot_logits(pixel_values, interpolate_pos_encoding=interpolate_pos_encoding)
            kl = kl_to_teacher(logits, teacher, config.kl_temperature)
        if dropping:
            # g_b = dKL/dS at the gated scores: the gates' backward drops the elements of the loss's gradient against it
            names = list(gate["scores"])
            grads = torch.autograd.grad(kl, [gate["scores"][n] for n in names], retain_graph=True, allow_unused=True)
            gate["grads"] = {n: g for n, g in zip(names, grads) if g is not None}
            kl = kl.detach()
        output = RAMTImageClassifierOutput(loss=loss, logits=logits, classification_loss=classification,
                                           score_penalty=penalty, kl_loss=kl, image_embeds=l2_normalize(image),
                                           hidden_states=out.hidden_states, attentions=out.attentions)
        return output.to_tuple() if return_dict is False else output

    # -- masks alone, merged --
    def mask_statistics(self) -> dict:
        return self.ramt.mask_statistics()

    @torch.no_grad()
    def binary_masks(self) -> dict[str, torch.Tensor]:
        """Weight name in the dual encoder (``vision_model.<module>.weight``) -> its bool mask."""
        return {f"vision_model.{name}.weight": self.ramt.mask_scores[score_key(name)] > self.config.threshold
                for name in self.ramt.masked_modules}

    def save_masks(self, save_directory) -> None:
        """Writes the binary masks alone (``ramt_masks.safetensors``: one bool per masked weight) and the config
        (``ramt_config.json``), like an adapter: :meth:`from_masks` applies them to the dual encoder again."""
        from safetensors.torch import save_file

        os.makedirs(save_directory, exist_ok=True)
        masks = {name: mask.contiguous().cpu() for name, mask in self.binary_masks().items()}
        save_file(masks, os.path.join(save_directory, MASKS_FILE), metadata={"format": "pt", "method": "ramt"})
        settings = self.config.to_dict()
        settings["class_embeddings_from"] = "prompts"  # recomputed from the text tower on load
        with open(os.path.join(save_directory, MASKS_CONFIG_FILE), "w") as handle:
            json.dump(settings, handle, indent=2, sort_keys=True)

    @classmethod
    def from_masks(cls, mask_directory, clip: PreTrainedModel | None = None, tokenizer=None, **config_overrides):
        """The model of :meth:`save_masks`' folder: its config (``config_overrides`` applied) on ``clip`` (None: the
        config's dual encoder: ``clip_name_or_path``'s weights, or ``clip_config`` from ``clip_seed``), with the
        saved masks as scores ``score_init`` (kept) or 0 (removed)."""
        from safetensors.torch import load_file

        path = os.path.join(mask_directory, MASKS_CONFIG_FILE)
        if not os.path.isfile(path):
            raise ValueError(f"mask_directory {mask_directory!r} has no {MASKS_CONFIG_FILE}; expected a folder written "
                             "by RAMTForImageClassification.save_masks")
        with open(path) as handle:
            settings = json.load(handle)
        settings.pop("class_embeddings_from", None)
        settings.pop("model_type", None)
        settings.update(config_overrides)
        config = RAMTConfig(**settings)
        model = cls(config, clip=clip, tokenizer=tokenizer)  # post_init encodes the prompts with its text tower
        masks = load_file(os.path.join(mask_directory, MASKS_FILE))
        expected = set(model.binary_masks())
        if set(masks) != expected:
            raise ValueError(f"the masks of {mask_directory!r} ({len(masks)} tensors) do not fit this model's masked "
                             f"weights ({len(expected)}): missing {sorted(expected - set(masks))[:3]}, unexpected "
                             f"{sorted(set(masks) - expected)[:3]}")
        with torch.no_grad():
            for name in model.ramt.masked_modules:
                mask = masks[f"vision_model.{name}.weight"]
                scores = model.ramt.mask_scores[score_key(name)]
                if mask.shape != scores.shape:
                    raise ValueError(f"mask of {name} has shape {tuple(mask.shape)}, the weight {tuple(scores.shape)}")
                scores.copy_(torch.where(mask.to(scores.device), config.score_init, 0.0))
        return model

    @torch.no_grad()
    def merge_and_unload(self) -> PreTrainedModel:
        """A copy of the dual encoder with every mask multiplied into its weight: the original class, no masks."""
        import copy

        merged = copy.deepcopy(self.ramt.clip)
        weights = self.ramt.masked_parameters()
        for name, value in weights.items():
            merged.vision_model.get_parameter(name).copy_(value)
        return merged.requires_grad_(True)

    def save_finetune_exports(self, run_directory) -> None:
        """What ``hf-mae finetune`` writes beside the best model: the masks alone in ``RUN/masks``."""
        self.save_masks(os.path.join(run_directory, "masks"))

    def save_merged(self, save_directory, tokenizer=None, **kwargs) -> None:
        """Writes :meth:`merge_and_unload` as a plain transformers folder (``CLIPModel.from_pretrained`` loads it)
        and, when given, the tokenizer."""
        self.merge_and_unload().save_pretrained(save_directory, **kwargs)
        if tokenizer is not None:
            tokenizer.save_pretrained(save_directory)


# ---------------------------------------------------------------------------------------------------------------
# The registry row


# tiny random CLIP for tests and quick starts: a 32-px, patch-8 image tower (2 blocks of 32) and a 2-block text tower
# over the real uncased WordPiece vocabulary (all-MiniLM-L6-v2's tokenizer: [CLS] 101 ... [SEP] 102, pad 0, so the
# text tower pools at [SEP])
TINY_CLIP = dict(
    model_type="clip", projection_dim=32, logit_scale_init_value=2.6592,
    vision_config=dict(image_size=32, patch_size=8, num_channels=3, hidden_size=32, intermediate_size=64,
                       num_hidden_layers=2, num_attention_heads=2, projection_dim=32),
    text_config=dict(vocab_size=30522, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=2, max_position_embeddings=64, projection_dim=32, bos_token_id=101,
                     eos_token_id=102, pad_token_id=0),
)
# the paper's backbone, OpenAI CLIP ViT-B/16 (openai/clip-vit-base-patch16's config.json, written out so a preset
# reads no file; its weights are read only when a model is built fresh from the preset)
CLIP_VIT_B16 = dict(
    model_type="clip", projection_dim=512, logit_scale_init_value=2.6592,
    vision_config=dict(image_size=224, patch_size=16, num_channels=3, hidden_size=768, intermediate_size=3072,
                       num_hidden_layers=12, num_attention_heads=12, projection_dim=512, hidden_act="quick_gelu",
                       layer_norm_eps=1e-5),
    text_config=dict(vocab_size=49408, hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                     num_attention_heads=8, max_position_embeddings=77, projection_dim=512, hidden_act="quick_gelu",
                     layer_norm_eps=1e-5, bos_token_id=49406, eos_token_id=49407, pad_token_id=1),
)

METHOD = dict(
    name="ramt",
    paper="Regularized Mask Tuning: Uncovering Hidden Knowledge in Pre-trained Vision-Language Models (Zheng et al., "
          "ICCV 2023), arXiv:2307.15049",
    config_class=RAMTConfig,
    model_classes={"base": RAMTModel, "pretraining": RAMTForImageClassification,
                   "image-classification": RAMTForImageClassification},
    processor="MAEImageProcessor",
    processor_settings=dict(image_mean=OPENAI_CLIP_MEAN, image_std=OPENAI_CLIP_STD),
    presets={
        "ramt-tiny": dict(clip_config=TINY_CLIP, tokenizer_name_or_path=MINILM),
        # the paper's setting: masks on CLIP ViT-B/16's patch embedding and attention, Adam 8e-5 (finetune_defaults)
        "ramt-clip-vit-base-patch16": dict(clip_config=CLIP_VIT_B16, clip_name_or_path="openai/clip-vit-base-patch16",
                                          tokenizer_name_or_path="openai/clip-vit-base-patch16"),
    },
    exports=["BinarizeStraightThrough", "GradDropGate", "grad_drop", "kl_to_teacher", "mask_targets"],
    pretrain_augmentation=None,  # no pre-training: the official few-shot crop is hf-mae finetune's business
)
