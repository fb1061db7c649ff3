"""M3AE: Multi-Modal Masked Autoencoders for Medical Vision-and-Language Pre-Training (Chen et al., MICCAI 2022),
arXiv:2209.07098; official code ``zhjohnchan/M3AE`` (METER-style).

Two towers and a co-attention fusion:
1. a vision tower (any transformers ViT-family ``AutoModel``: ``ViTModel``, ``CLIPVisionModel``; or an hf-mae MAE
   encoder) encodes the image patches (with MIM, only the visible 25%: the masked patches are dropped *after* their
   position embedding is added and before the transformer, as in MAE);
2. a text tower (any BERT / RoBERTa-family ``AutoModel``) encodes the caption;
3. both are projected linearly to the fusion width, get a modality-type embedding (text 0, image 1), and go through
   ``num_hidden_layers`` co-attention fusion layers per modality: each is transformers' BERT pieces
   (``BertAttention`` self-attention, ``BertAttention(is_cross_attention=True)`` over the other modality,
   ``BertIntermediate`` + ``BertOutput``), the text layer attending to the image and the image layer to the text,
   both from the previous layer's pair;
4. poolers (dense + tanh on the first token) of each stream, concatenated: the (batch, 2 * hidden) pair feature.

Pre-training, three forward passes per batch (as the official ``compute_mlm`` / ``compute_mim`` / ``compute_itm``):
- **MLM**: 15% of the caption's words masked (whole words, BERT's 80/10/10), predicted from the *last* fusion
  layer's text stream by a BERT-style head (dense, GELU, LayerNorm, vocabulary linear); cross-entropy;
- **MIM**: 75% of the patches dropped; the image stream taken *after* ``mim_layer`` fusion layers (official: 3 of 6)
  goes to a light MAE decoder (mask tokens, fixed 2D sin-cos positions, ``decoder_num_hidden_layers`` blocks) that
  predicts every patch's pixels; MSE on the masked patches against per-patch normalised pixels (``norm_pix_loss``);
- **ITM**: half of the pairs get another image of the batch; a linear head on the pair feature says matched or not.
``loss = mlm_weight * MLM + mim_weight * MIM + itm_weight * ITM`` (official: 1, 1, 1).

The masks and the ITM pairing are drawn by the processor (:class:`M3AEProcessor`, the official collator's and data
set's job), so the model is a function of its inputs: ``processor(images, text=captions, return_tensors="pt",
for_pretraining=True, generator=g)``.

Departures from the paper and its code:
- ITM negatives are other images **of the same batch** (a random row with another ``negative_groups`` key: another
  COCO image id, another CIFAR-10 class), exactly ``batch - int(batch * (1 - itm_negative_rate))`` per batch; the
  official data set draws a random image of the whole corpus (``false_image_0``). hf-mae's choice.
- One unimodal encoding of the full image and of the full caption is shared by the MIM, MLM and ITM passes (the
  official code re-encodes them per task): 2 passes of each tower instead of 3. Same function, one dropout draw.
- Whole-word masks are prefixes of one random word ranking (``masking.whole_word_masks``), not transformers'
  ``DataCollatorForWholeWordMask`` (which skips words that overshoot the budget). Same expected ratio.
- The MIM decoder is hf-mae's MAE decoder (``mae.MAEDecoder``: pre-norm blocks, sin-cos positions with a cls row);
  the official ``MIMHead`` is the same shape (384 wide, 6 heads). The CLIP tower's final LayerNorm is applied to
  every token (as METER's ``ln_post``; transformers' ``CLIPVisionModel`` applies it to the pooled token only).
- The paper preset's images are 224 px (CLIP's native size; the pre-training script uses 288 with interpolated
  positions, which hf-mae does not reproduce).
- Downstream heads: the official VQA / classification heads (Linear 2D->2D, LayerNorm, GELU, Linear) on the pair
  feature; retrieval is the pre-training class's ``pair_scores`` / ``score_matrix`` (the ITM head's matched minus
  not-matched logit; the official ``irtr_head`` starts as the ITM head's row 1 and is fine-tuned with a hinge loss,
  which hf-mae leaves to the user: transformers has no Auto class for retrieval).

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedConfig
from transformers import initialization as init
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling
from transformers.models.bert.modeling_bert import BertAttention, BertIntermediate, BertOutput, BertSelfAttention
from transformers.processing_utils import ProcessorMixin
from transformers.utils import ModelOutput
from transformers.utils.generic import can_return_tuple
from transformers.utils.output_capturing import OutputRecorder, capture_outputs

from .base import ViTDecoderMixin, check_int, check_rate
from .embeddings import sincos_2d, to_2tuple
from .losses import masked_mse, token_cross_entropy
from .mae import MAEDecoder
from .masking import check_mask_ratio, gather_tokens, keep_all, mask_from_noise, mlm_corruption, whole_word_masks
from .targets import pixel_target
from .text import (
    MINILM, TINY_BERT_CONFIG, TextPreTrainedModel, TextProcessor, check_backbone_fields, check_mask_token,
    check_token_inputs, warm_start_enabled,
)

try:  # transformers' output collector: a tower's own layers must not record into the fusion's hidden states
    from transformers.utils.output_capturing import _active_collector
except ImportError:  # pragma: no cover - other transformers versions
    _active_collector = None

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
TEXT, IMAGE = 0, 1  # modality-type ids


class M3AEConfig(ViTDecoderMixin):
    r"""Configuration of an M3AE model.

    The towers (described as the text methods describe their backbone: a name and/or a config dict):
    vision_name_or_path / vision_config: the vision tower (a ViT-family ``AutoModel``: ``vit``, ``clip_vision_model``,
        or an hf-mae MAE encoder ``mae``); the architecture always comes from ``vision_config`` (filled from the
        name's config.json when only the name is given); the name's weights warm-start fresh builds only.
    text_name_or_path / text_config: the text tower (a BERT / RoBERTa-family ``AutoModel``), likewise.
    tokenizer_name_or_path: the caption tokenizer (default: ``text_name_or_path``); it needs a [MASK] token.
    max_length: caption tokens, special tokens included (official: 64).
    image_mean, image_std: the processor's pixel normalisation; None: OpenAI CLIP's for a CLIP tower, ImageNet's
        otherwise (hf-mae's choice for towers the paper does not use).

    The fusion (the ViT encoder fields of the base describe it): hidden_size (768), num_hidden_layers (fusion layers
    per modality, official 6), num_attention_heads (12), intermediate_size (3072), hidden_act, hidden_dropout_prob /
    attention_probs_dropout_prob (official drop_rate 0.1), layer_norm_eps, initializer_range (0.02, BERT's init of
    every new layer, as the official ``init_weights``).

    The MIM decoder (the decoder fields of the base): decoder_hidden_size 384, decoder_num_hidden_layers 5
    (``mim_decoder_num_layers + 1``), decoder_num_attention_heads 6, decoder_intermediate_size 1536 (4x, hf-mae's
    choice: the official MLP ratio of 4).

    The objectives:
    mask_ratio: MIM's share of dropped patches (0.75).
    mim_layer: the image stream after this many fusion layers feeds the MIM decoder (official: 3; 0 = the projected
        tower output, ``num_hidden_layers`` = the last layer).
    norm_pix_loss: per-patch normalised pixel targets (official: True).
    mlm_ratio: share of the caption's ordinary tokens masked, whole words (0.15).
    mask_token_share, random_token_share: BERT's corruption of the masked tokens (0.8 [MASK], 0.1 random).
    itm_negative_rate: share of the pairs whose image is replaced (0.5).
    mlm_weight, mim_weight, itm_weight: loss weights (1, 1, 1).
    """

    model_type = "m3ae"

    vision_name_or_path: str | None = None
    vision_config: dict | None = None
    text_name_or_path: str | None = None
    text_config: dict | None = None
    tokenizer_name_or_path: str | None = None
    max_length: int = 64
    image_mean: list[float] | tuple[float, ...] | None = None
    image_std: list[float] | tuple[float, ...] | None = None
    num_hidden_layers: int = 6
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    decoder_hidden_size: int = 384
    decoder_num_hidden_layers: int = 5
    decoder_num_attention_heads: int = 6
    decoder_intermediate_size: int = 1536
    mask_ratio: float = 0.75
    mim_layer: int = 3
    norm_pix_loss: bool = True
    mlm_ratio: float = 0.15
    mask_token_share: float = 0.8
    random_token_share: float = 0.1
    itm_negative_rate: float = 0.5
    mlm_weight: float = 1.0
    mim_weight: float = 1.0
    itm_weight: float = 1.0

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        for prefix in ("vision", "text"):
            check_backbone_fields(self, prefix)
            name = getattr(self, f"{prefix}_name_or_path")
            if getattr(self, f"{prefix}_config") is None and name is not None:
                # the architecture only (config.json); a dual encoder's checkpoint gives its tower's part
                settings = AutoConfig.from_pretrained(name)
                settings = getattr(settings, f"{prefix}_config", settings)
                setattr(self, f"{prefix}_config", settings.to_dict())
        if self.tokenizer_name_or_path is not None and not (
            isinstance(self.tokenizer_name_or_path, str) and self.tokenizer_name_or_path
        ):
            raise ValueError(f"tokenizer_name_or_path must be a Hub id or folder (a non-empty str) or None, got "
                             f"{self.tokenizer_name_or_path!r}")
        check_int("max_length", self.max_length, minimum=2)
        check_rate("mask_ratio", self.mask_ratio, allow_zero=False)
        check_rate("mlm_ratio", self.mlm_ratio, allow_zero=False)
        check_rate("mask_token_share", self.mask_token_share, closed=True)
        check_rate("random_token_share", self.random_token_share, closed=True)
        if self.mask_token_share + self.random_token_share > 1.0:
            raise ValueError(f"mask_token_share + random_token_share must be <= 1, got {self.mask_token_share} + "
                             f"{self.random_token_share}")
        check_rate("itm_negative_rate", self.itm_negative_rate, closed=True)
        check_int("mim_layer", self.mim_layer, minimum=0)
        if self.mim_layer > self.num_hidden_layers:
            raise ValueError(f"mim_layer must be in [0, num_hidden_layers={self.num_hidden_layers}], got "
                             f"{self.mim_layer}")
        for name in ("mlm_weight", "mim_weight", "itm_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            if value is not None:
                if not (isinstance(value, (list, tuple)) and len(value) == 3):
                    raise ValueError(f"{name} must be three numbers (one per RGB channel) or None, got {value!r}")
                setattr(self, name, [float(v) for v in value])
        if self.text_config is not None:
            limit = self.text_config.get("max_position_embeddings")
            if isinstance(limit, int) and self.max_length > limit:
                raise ValueError(f"max_length {self.max_length} exceeds the text tower's max_position_embeddings {limit}")
        if self.vision_config is not None:
            rows, cols = self.grid_size  # the image must be a multiple of the patch
            if rows < 1 or cols < 1:
                raise ValueError(f"the vision tower's image_size {self.image_size} is smaller than its patch_size "
                                 f"{self.patch_size}")

    # -- the towers --
    def tower_config(self, prefix: str) -> PreTrainedConfig:
        """The transformers config of the ``"vision"`` or ``"text"`` tower."""
        settings = getattr(self, f"{prefix}_config")
        if settings is None:
            raise ValueError(f"M3AEConfig needs a {prefix} tower: set {prefix}_name_or_path (a Hub id or folder) or "
                             f"{prefix}_config (a config dict with a 'model_type')")
        settings = dict(settings)
        model_type = settings.pop("model_type")
        for key in ("architectures", "transformers_version", "_name_or_path", "dtype", "torch_dtype"):
            settings.pop(key, None)
        return AutoConfig.for_model(model_type, **settings)

    @property
    def is_decoder(self) -> bool:  # transformers' BERT attention (the fusion layers) asks: never causal
        return False

    @property
    def tokenizer_source(self) -> str | None:
        return self.tokenizer_name_or_path or self.text_name_or_path

    @property
    def vocab_size(self) -> int:
        return int(self.text_config["vocab_size"])

    # the image geometry is the vision tower's (the processor, the MIM target and its decoder read it)
    @property
    def image_size(self):
        return (self.vision_config or {}).get("image_size", 224)

    @property
    def patch_size(self):
        return (self.vision_config or {}).get("patch_size", 16)

    @property
    def num_channels(self) -> int:
        return int((self.vision_config or {}).get("num_channels", 3))

    @property
    def grid_size(self) -> tuple[int, int]:
        image, patch = to_2tuple(self.image_size), to_2tuple(self.patch_size)
        return image[0] // patch[0], image[1] // patch[1]

    @property
    def num_patches(self) -> int:
        rows, cols = self.grid_size
        return rows * cols

    @property
    def processor_mean_std(self) -> tuple[list[float], list[float]]:
        clip = (self.vision_config or {}).get("model_type", "").startswith("clip")
        mean = self.image_mean or list(OPENAI_CLIP_MEAN if clip else IMAGENET_DEFAULT_MEAN)
        std = self.image_std or list(OPENAI_CLIP_STD if clip else IMAGENET_DEFAULT_STD)
        return list(mean), list(std)


# ---------------------------------------------------------------------------------------------------------------
# Processor: image processor + tokenizer + M3AE's collator


def itm_pairs(batch: int, negative_rate: float, groups=None, generator: torch.Generator | None = None):
    """The ITM pairing of a batch: ``(labels, image_index)``, each (batch,) long.

    ``batch - int(batch * (1 - negative_rate))`` rows (chosen at random) get label 0 and the image of another row
    whose ``groups`` key differs (uniformly among those); the others keep their own image (label 1). A row with no
    other group in the batch stays matched. ``groups``: one hashable per row (default: every row its own)."""
    groups = list(range(batch)) if groups is None else list(groups)
    if len(groups) != batch:
        raise ValueError(f"negative_groups must hold one key per image ({batch}), got {len(groups)}")
    labels = torch.ones(batch, dtype=torch.long)
    index = torch.arange(batch)
    negatives = batch - int(batch * (1 - negative_rate))
    order = torch.randperm(batch, generator=generator).tolist()
    for row in order[:negatives]:
        candidates = [j for j in range(batch) if groups[j] != groups[row]]
        if not candidates:
            continue
        pick = int(torch.randint(len(candidates), (1,), generator=generator))
        labels[row], index[row] = 0, candidates[pick]
    return labels, index


class M3AEProcessor(TextProcessor):
    """An image processor (resize, rescale, normalise: transformers' ``ViTImageProcessorPil``, as hf-mae's MAE
    processor) plus the caption tokenizer and M3AE's collator.

    ``processor(images, text=captions, return_tensors="pt")``: ``pixel_values`` (batch, 3, H, W), ``input_ids`` /
    ``attention_mask`` (batch, L) (either part alone when only one is given).
    ``processor(images, text=captions, return_tensors="pt", for_pretraining=True, generator=g,
    negative_groups=None)`` adds the pre-training draws: ``mlm_input_ids`` / ``mlm_labels`` (whole-word masked at
    ``mlm_ratio``, 80/10/10; labels -100 where not masked), ``noise`` (batch, num_patches) that fixes the MIM mask,
    ``itm_labels`` / ``itm_image_index`` (see :func:`itm_pairs`; ``negative_groups`` keeps images of the same
    group apart, e.g. several captions of one photo)."""

    takes_texts = False  # hf-mae pretrain feeds it images and captions (training/image_text_data.py), not texts

    def __init__(self, image_processor=None, tokenizer=None, max_length: int = 64, mlm_ratio: float = 0.15,
                 mask_token_share: float = 0.8, random_token_share: float = 0.1, itm_negative_rate: float = 0.5,
                 num_patches: int | None = None, **kwargs):
        check_int("max_length", max_length, minimum=2)
        check_rate("mlm_ratio", mlm_ratio, allow_zero=False)
        check_rate("itm_negative_rate", itm_negative_rate, closed=True)
        if num_patches is not None:
            check_int("num_patches", num_patches)
        self.max_length, self.mlm_ratio, self.itm_negative_rate = max_length, mlm_ratio, itm_negative_rate
        self.mask_token_share, self.random_token_share, self.num_patches = mask_token_share, random_token_share, num_patches
        ProcessorMixin.__init__(self, image_processor, tokenizer, **kwargs)
        if tokenizer is not None:
            if not getattr(tokenizer, "is_fast", False):
                raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} must be a fast tokenizer "
                                 f"(whole-word masks need its word ids), got {type(tokenizer).__name__}")
            check_mask_token(tokenizer)

    @classmethod
    def from_model_config(cls, config, **settings):
        from transformers import AutoTokenizer
        from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

        if config.tokenizer_source is None:
            raise ValueError("M3AEConfig names no tokenizer: set tokenizer_name_or_path (or text_name_or_path)")
        height, width = to_2tuple(config.image_size)
        mean, std = config.processor_mean_std
        images = ViTImageProcessorPil(size={"height": height, "width": width}, image_mean=mean, image_std=std,
                                      resample=PILImageResampling.BICUBIC, do_convert_rgb=True)
        settings = {"max_length": config.max_length, "mlm_ratio": config.mlm_ratio,
                    "mask_token_share": config.mask_token_share, "random_token_share": config.random_token_share,
                    "itm_negative_rate": config.itm_negative_rate, "num_patches": config.num_patches, **settings}
        return cls(images, AutoTokenizer.from_pretrained(config.tokenizer_source), **settings)

    @property
    def training_call_kwargs(self) -> dict:
        return {"for_pretraining": True}

    def pretraining_inputs(self, batch: dict, generator: torch.Generator | None = None, negative_groups=None) -> dict:
        """M3AE's draws for a tokenised ``batch`` (see :meth:`tokenize`): MLM corruption, MIM noise, ITM pairs."""
        input_ids, word_ids = batch["input_ids"], batch["word_ids"]
        mask = whole_word_masks(word_ids, self.mlm_ratio, generator=generator)[0]
        corrupted, labels = mlm_corruption(input_ids, mask, check_mask_token(self.tokenizer), len(self.tokenizer),
                                           generator=generator, mask_share=self.mask_token_share,
                                           random_share=self.random_token_share)
        itm_labels, itm_index = itm_pairs(input_ids.shape[0], self.itm_negative_rate, negative_groups, generator)
        out = {"mlm_input_ids": corrupted, "mlm_labels": labels, "itm_labels": itm_labels, "itm_image_index": itm_index}
        if self.num_patches is not None:
            out["noise"] = torch.rand(input_ids.shape[0], self.num_patches, generator=generator)
        return out

    def __call__(self, images=None, text=None, return_tensors=None, for_pretraining: bool = False,
                 generator: torch.Generator | None = None, negative_groups=None, **kwargs) -> BatchFeature:
        kwargs = {k: v for k, v in kwargs.items() if not (k.endswith("_kwargs") and not v)}
        if kwargs:
            raise TypeError(f"M3AEProcessor got unknown settings {sorted(kwargs)}; it takes images, text, "
                            "return_tensors, for_pretraining, generator and negative_groups")
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors must be 'pt' or None, got {return_tensors!r}")
        if images is None and text is None:
            raise ValueError("pass images, text (captions) or both")
        if for_pretraining and (images is None or text is None):
            raise ValueError("for_pretraining=True needs both images and text (one caption per image)")
        data = {}
        if images is not None:
            data["pixel_values"] = self.image_processor(images, return_tensors="pt")["pixel_values"]
        if text is not None:
            batch = self.tokenize(text)
            if images is not None and batch["input_ids"].shape[0] != data["pixel_values"].shape[0]:
                raise ValueError(f"text must hold one caption per image: got {batch['input_ids'].shape[0]} captions "
                                 f"for {data['pixel_values'].shape[0]} images")
            data.update(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
            if for_pretraining:
                data.update(self.pretraining_inputs(batch, generator, negative_groups))
        return BatchFeature(data)


# ---------------------------------------------------------------------------------------------------------------
# Model pieces


class M3AECrossLayer(nn.Module):
    """One stream's fusion layer (the official ``BertCrossLayer``), from transformers' BERT pieces sized by the M3AE
    config: self-attention, cross-attention over the other stream, feed-forward, each with its residual + LayerNorm."""

    def __init__(self, config):
        super().__init__()
        self.attention = BertAttention(config)
        self.crossattention = BertAttention(config, is_cross_attention=True)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, hidden, other, mask=None, other_mask=None):
        attended, weights = self.attention(hidden, mask)
        crossed, _ = self.crossattention(attended, encoder_hidden_states=other, encoder_attention_mask=other_mask)
        return self.output(self.intermediate(crossed), crossed), weights


class M3AEFusionLayer(nn.Module):
    """A co-attention layer: the text layer attends to the image and the image layer to the text, both from the
    previous pair. Returns ``(text, image)``."""

    def __init__(self, config):
        super().__init__()
        self.text_layer = M3AECrossLayer(config)
        self.image_layer = M3AECrossLayer(config)

    def forward(self, text, image, text_mask=None, image_mask=None):
        new_text, _ = self.text_layer(text, image, text_mask, image_mask)
        new_image, _ = self.image_layer(image, text, image_mask, text_mask)
        return new_text, new_image


class M3AEPooler(nn.Module):
    """Dense + tanh on the first token (the official ``Pooler``)."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden):
        return self.activation(self.dense(hidden[:, 0]))


class M3AEMLMHead(nn.Module):
    """BERT's MLM head on the fusion width: dense, GELU, LayerNorm, vocabulary linear (the official ``MLMHead``)."""

    def __init__(self, config):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.activation = nn.GELU()
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size)

    def forward(self, hidden):
        return self.decoder(self.layer_norm(self.activation(self.dense(hidden))))


class M3AEClassifierHead(nn.Sequential):
    """The official VQA / classification head on the (batch, 2 * hidden) pair feature."""

    def __init__(self, hidden_size: int, num_labels: int, eps: float):
        super().__init__(nn.Linear(2 * hidden_size, 2 * hidden_size), nn.LayerNorm(2 * hidden_size, eps=eps),
                         nn.GELU(), nn.Linear(2 * hidden_size, num_labels))


def additive_mask(mask: torch.Tensor | None, dtype) -> torch.Tensor | None:
    """(batch, L) 1 = attend -> (batch, 1, 1, L) additive: 0 or the dtype's minimum; None stays None."""
    if mask is None:
        return None
    return ((1.0 - mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min).to(dtype)


def build_tower(config: M3AEConfig, prefix: str, attn_implementation: str | None = None) -> nn.Module:
    """A randomly initialised ``AutoModel`` of the ``prefix`` tower, without its pooler (M3AE pools the fused
    streams; an unused pooler would get no gradient)."""
    tower_config = config.tower_config(prefix)
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation in ("eager", "sdpa") else {}
    tower = AutoModel.from_config(tower_config, **kwargs)
    if getattr(tower, "pooler", None) is not None:
        tower.pooler = None
    return tower


def check_vision_tower(tower: nn.Module) -> str:
    """The family of a vision tower M3AE can mask: ``"noise"`` (hf-mae encoders: ``forward(noise=...)``), ``"vit"``
    (transformers' ViTModel: embeddings + layers + layernorm), ``"clip"`` (CLIPVisionModel); a TypeError otherwise."""
    if "noise" in inspect.signature(tower.forward).parameters:
        return "noise"
    core = getattr(tower, "vision_model", tower)
    if hasattr(core, "pre_layrnorm") and hasattr(core, "post_layernorm"):
        return "clip"
    if hasattr(tower, "embeddings") and (hasattr(tower, "layers") or hasattr(tower, "encoder")) and hasattr(tower, "layernorm"):
        return "vit"
    raise TypeError(f"the vision tower must be a ViT-family model (transformers' ViTModel or CLIPVisionModel, or an "
                    f"hf-mae encoder whose forward takes noise), got {type(tower).__name__}")


class _OwnCollector:
    """Runs a tower's layers outside the fusion's output capture (their own hooks would record into it)."""

    def __enter__(self):
        self.token = _active_collector.set(None) if _active_collector is not None else None
        return self

    def __exit__(self, *exc):
        if _active_collector is not None:
            _active_collector.reset(self.token)


# ---------------------------------------------------------------------------------------------------------------
# Models


@dataclass
class M3AEModelOutput(ModelOutput):
    """
    last_hidden_state: (batch, L + 1 + kept, hidden) the fused text tokens followed by the fused image tokens
        (cls + kept patches; every patch, in order, when nothing is masked).
    pooler_output: (batch, 2 * hidden) the pair feature: text pooler and image pooler, concatenated.
    text_last_hidden_state: (batch, L, hidden); image_last_hidden_state: (batch, 1 + kept, hidden).
    mask, ids_restore: (batch, num_patches) the image mask (1 = dropped) and its unshuffling.
    hidden_states: the text stream's input to the fusion and its output after every fusion layer (when asked).
    attentions: the text stream's self-attention maps of every fusion layer (when asked).
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    text_last_hidden_state: torch.Tensor | None = None
    image_last_hidden_state: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    ids_restore: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class M3AEForPreTrainingOutput(ModelOutput):
    """
    loss: mlm_weight * mlm_loss + mim_weight * mim_loss + itm_weight * itm_loss (the terms whose inputs were given).
    logits: (batch, num_patches, patch_h * patch_w * 3) the MIM decoder's pixels (normalised per patch when
        ``norm_pix_loss``); mask, ids_restore: (batch, num_patches) the MIM mask.
    mlm_logits: (masked tokens of the batch, vocab) the predictions at ``mlm_labels != -100``, in row-major order
        (the head runs on the masked tokens only); itm_logits: (batch, 2) (index 1 = matched).
    mlm_loss, mim_loss, itm_loss: the terms; mlm_accuracy, itm_accuracy: share of masked tokens / pairs right.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    ids_restore: torch.Tensor | None = None
    mlm_logits: torch.Tensor | None = None
    itm_logits: torch.Tensor | None = None
    mlm_loss: torch.Tensor | None = None
    mim_loss: torch.Tensor | None = None
    itm_loss: torch.Tensor | None = None
    mlm_accuracy: torch.Tensor | None = None
    itm_accuracy: torch.Tensor | None = None


@dataclass
class M3AEClassifierOutput(ModelOutput):
    """loss (when labels are given), logits (batch, num_labels) or retrieval scores, pooler_output (batch, 2 * hidden)."""

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None


class M3AEPreTrainedModel(TextPreTrainedModel):
    config_class = M3AEConfig
    base_model_prefix = "m3ae"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    _no_split_modules = ["M3AEFusionLayer", "TransformerBlock"]
    _supports_flash_attn = False  # the padded captions need an explicit mask (eager / sdpa)
    _supports_flex_attn = False
    supports_gradient_checkpointing = False

    @property
    def initializer_range(self) -> float:
        return float(self.config.initializer_range)

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, MAEDecoder):  # the MIM decoder's mask token and sin-cos table
            init.normal_(module.mask_token, std=self.config.initializer_range)
            init.copy_(module.decoder_pos_embed, sincos_2d(module.grid_size, module.mask_token.shape[-1], cls_token=True)[None])
        else:
            super()._init_weights(module)  # BERT's rule for linears / embeddings, unit LayerNorms

    def warm_start_towers(self, base: "M3AEModel", given: dict) -> None:
        """After ``post_init``: towers given as instances keep their weights; named towers load theirs on a fresh
        build (not inside ``from_pretrained``). Records what each load lacked in ``self.warm_start_info``."""
        self.warm_start_info = {}
        for prefix in ("vision", "text"):
            tower = getattr(base, f"{prefix}_model")
            if given.get(prefix) is not None:
                tower.load_state_dict(given[prefix], strict=False)
                continue
            name = getattr(self.config, f"{prefix}_name_or_path")
            if name is not None and warm_start_enabled():
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    source = type(tower).from_pretrained(name, dtype=torch.float32)
                result = tower.load_state_dict(source.state_dict(), strict=False)
                self.warm_start_info[prefix] = {"missing_keys": sorted(result.missing_keys)}


def take_tower(config: M3AEConfig, prefix: str, model) -> dict | None:
    """A tower given as an instance: its config goes into ``config`` (a saved model rebuilds it), its weights are
    returned to be put back after ``post_init`` (which would re-initialise them)."""
    if model is None:
        return None
    if not isinstance(model, nn.Module) or not hasattr(model, "config"):
        raise TypeError(f"{prefix}_model must be a transformers model (with a config), got {type(model).__name__}")
    setattr(config, f"{prefix}_config", model.config.to_dict())
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class M3AEModel(M3AEPreTrainedModel):
    """The towers, projections, modality-type embeddings, co-attention fusion and poolers (``AutoModel``).

    ``forward(pixel_values, input_ids, attention_mask)``: the fused pair, nothing masked (a feature extractor);
    ``noise=`` / ``mask_ratio=`` drop patches as MIM does."""

    _can_record_outputs = {
        "hidden_states": OutputRecorder(M3AEFusionLayer, index=0),  # the text stream, per fusion layer
        "attentions": OutputRecorder(BertSelfAttention, index=1, layer_name="text_layer.attention"),
    }

    def __init__(self, config: M3AEConfig, warm_start: bool = True, vision_model=None, text_model=None):
        super().__init__(config)
        given = {"vision": take_tower(config, "vision", vision_model), "text": take_tower(config, "text", text_model)}
        implementation = getattr(config, "_attn_implementation", None)
        self.vision_model = build_tower(config, "vision", implementation)
        self.text_model = build_tower(config, "text", implementation)
        self.vision_family = check_vision_tower(self.vision_model)
        vision_width = self.vision_model.config.hidden_size
        text_width = self.text_model.config.hidden_size
        self.vision_projection = nn.Linear(vision_width, config.hidden_size)
        self.text_projection = nn.Linear(text_width, config.hidden_size)
        self.modality_type_embeddings = nn.Embedding(2, config.hidden_size)
        self.fusion_layers = nn.ModuleList(M3AEFusionLayer(config) for _ in range(config.num_hidden_layers))
        self.text_pooler = M3AEPooler(config.hidden_size)
        self.image_pooler = M3AEPooler(config.hidden_size)
        self.post_init()
        if warm_start:
            self.warm_start_towers(self, given)

    def get_input_embeddings(self):
        return self.text_model.get_input_embeddings()

    # -- the towers --
    def check_inputs(self, pixel_values, input_ids, attention_mask):
        if not isinstance(pixel_values, torch.Tensor):
            raise TypeError(f"pixel_values must be a torch.Tensor, got {type(pixel_values).__name__}")
        if not pixel_values.is_floating_point():
            raise TypeError(f"pixel_values must be a float tensor, got dtype {pixel_values.dtype}")
        if pixel_values.ndim != 4:
            raise ValueError(f"pixel_values must have 4 dimensions (batch, channels, height, width), got shape "
                             f"{tuple(pixel_values.shape)}")
        if pixel_values.shape[0] == 0:
            raise ValueError("pixel_values is an empty batch")
        channels, height, width = pixel_values.shape[1:]
        if channels != self.config.num_channels:
            raise ValueError(f"pixel_values has {channels} channels, the vision tower's num_channels is "
                             f"{self.config.num_channels}")
        if (height, width) != to_2tuple(self.config.image_size):
            raise ValueError(f"pixel_values is {height}x{width}, the vision tower's image_size is "
                             f"{to_2tuple(self.config.image_size)}")
        if input_ids is None:
            raise ValueError("input_ids is required (the captions, one per image)")
        check_token_inputs(input_ids, attention_mask, self.config.vocab_size)
        if input_ids.shape[0] != pixel_values.shape[0]:
            raise ValueError(f"input_ids must hold one caption per image: batch {input_ids.shape[0]} vs "
                             f"{pixel_values.shape[0]} images")

    def encode_image(self, pixel_values: torch.Tensor, noise: torch.Tensor | None = None, mask_ratio: float = 0.0):
        """The vision tower on the kept patches: ``(tokens (batch, 1 + kept, width), mask, ids_restore)``; with
        ``mask_ratio > 0`` the patches with the smallest ``noise`` are kept (drawn when None)."""
        tower, batch = self.vision_model, pixel_values.shape[0]
        num_patches = self.config.num_patches
        masking = mask_ratio > 0.0 or noise is not None
        if noise is not None and tuple(noise.shape) != (batch, num_patches):
            raise ValueError(f"noise must have shape (batch, num_patches) = {(batch, num_patches)}, got "
                             f"{tuple(noise.shape)}")
        if masking and noise is None:
            noise = torch.rand(batch, num_patches, device=pixel_values.device)
        if self.vision_family == "noise":
            out = tower(pixel_values, noise=noise, mask_ratio=mask_ratio, return_dict=True)
            return out.last_hidden_state, out.mask, out.ids_restore
        token_mask = mask_from_noise(noise.to(pixel_values.device), mask_ratio) if masking else keep_all(
            batch, num_patches, pixel_values.device)
        core = getattr(tower, "vision_model", tower)
        dtype = next(tower.parameters()).dtype
        with _OwnCollector():
            tokens = core.embeddings(pixel_values.to(dtype))  # cls + patches, positions added (before the drop)
            if masking:
                tokens = torch.cat([tokens[:, :1], gather_tokens(tokens[:, 1:], token_mask.ids_keep)], dim=1)
            if self.vision_family == "clip":
                hidden = core.encoder(inputs_embeds=core.pre_layrnorm(tokens)).last_hidden_state
                hidden = core.post_layernorm(hidden)  # every token, as METER's ln_post
            else:
                if hasattr(core, "layers"):
                    hidden = tokens
                    for layer in core.layers:
                        hidden = layer(hidden, None)
                        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
                else:  # older transformers: ViTModel.encoder
                    hidden = core.encoder(tokens).last_hidden_state
                hidden = core.layernorm(hidden)
        return hidden, token_mask.mask, token_mask.ids_restore

    def encode_text(self, input_ids, attention_mask=None):
        """The text tower's last hidden state (batch, L, width)."""
        return self.text_model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state

    def embed(self, text_states, image_states):
        """Projection to the fusion width plus the modality-type embeddings."""
        text = self.text_projection(text_states) + self.modality_type_embeddings.weight[TEXT]
        image = self.vision_projection(image_states) + self.modality_type_embeddings.weight[IMAGE]
        return text, image

    def fuse(self, text, image, attention_mask=None, keep_image_after: int | None = None):
        """The co-attention layers: ``(text, image, None)`` after all of them, or ``(text, image, image)`` after the
        first ``keep_image_after`` (MIM's features; the layers above are not run)."""
        text_mask = additive_mask(attention_mask, text.dtype)
        if keep_image_after == 0:
            return text, image, image
        for depth, layer in enumerate(self.fusion_layers, start=1):
            text, image = layer(text, image, text_mask, None)
            if keep_image_after == depth:  # MIM needs nothing above this layer
                return text, image, image
        return text, image, None

    def pair_feature(self, text, image):
        """(batch, 2 * hidden): the two poolers, concatenated."""
        return torch.cat([self.text_pooler(text), self.image_pooler(image)], dim=-1)

    @capture_outputs(tie_last_hidden_states=False)
    def forward(self, pixel_values=None, input_ids=None, attention_mask=None, noise=None, mask_ratio=None, **kwargs):
        """
        pixel_values: (batch, 3, H, W); input_ids, attention_mask: (batch, L) one caption per image.
        noise (batch, num_patches) / mask_ratio: drop patches as MIM does (default: nothing dropped; with ``noise``
        alone ``config.mask_ratio``). Returns :class:`M3AEModelOutput`.
        """
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        self.check_inputs(pixel_values, input_ids, attention_mask)
        ratio = check_mask_ratio(mask_ratio if mask_ratio is not None else (self.config.mask_ratio if noise is not None else 0.0))
        image_states, mask, ids_restore = self.encode_image(pixel_values, noise, ratio)
        text, image = self.embed(self.encode_text(input_ids, attention_mask), image_states)
        text, image, _ = self.fuse(text, image, attention_mask)
        return M3AEModelOutput(
            last_hidden_state=torch.cat([text, image], dim=1), pooler_output=self.pair_feature(text, image),
            text_last_hidden_state=text, image_last_hidden_state=image, mask=mask, ids_restore=ids_restore,
        )


class M3AEForPreTraining(M3AEPreTrainedModel):
    """M3AE's encoder + the MLM head, the MIM decoder and the ITM head (see the module docstring).

    forward(pixel_values, input_ids, attention_mask, mlm_input_ids, mlm_labels, noise, itm_labels, itm_image_index):
    the processor's pre-training inputs. MIM always runs (``noise`` drawn when None); MLM runs with ``mlm_labels``,
    ITM with ``itm_labels``. Towers may be given as instances (``M3AEForPreTraining(config, vision_model=...,
    text_model=...)``): their configs go into ``config``, their weights are kept."""

    def __init__(self, config: M3AEConfig, vision_model=None, text_model=None):
        super().__init__(config)
        given = {"vision": take_tower(config, "vision", vision_model), "text": take_tower(config, "text", text_model)}
        self.m3ae = M3AEModel(config, warm_start=False)
        self.mlm_head = M3AEMLMHead(config)
        self.mim_decoder = MAEDecoder(config)
        self.itm_head = nn.Linear(2 * config.hidden_size, 2)
        self.post_init()
        self.warm_start_towers(self.m3ae, given)

    def get_input_embeddings(self):
        return self.m3ae.get_input_embeddings()

    def pair_scores(self, pixel_values, input_ids, attention_mask=None) -> torch.Tensor:
        """(batch,) image-text retrieval scores of each image with its own caption: the ITM head's "matched" minus
        "not matched" logit on the fused pair (the official ``irtr_head`` starts as the ITM head's row 1)."""
        pooled = self.m3ae(pixel_values, input_ids, attention_mask, return_dict=True).pooler_output
        logits = self.itm_head(pooled)
        return logits[:, 1] - logits[:, 0]

    @torch.no_grad()
    def score_matrix(self, pixel_values, input_ids, attention_mask=None, chunk: int = 256) -> torch.Tensor:
        """(images, texts) retrieval scores of every image against every caption: each image and each caption goes
        through its tower once, then every pair through the fusion and the ITM head (``chunk`` pairs at a time)."""
        base = self.m3ae
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        image_states, _, _ = base.encode_image(pixel_values)
        text, image = base.embed(base.encode_text(input_ids, mask), image_states)
        rows = []
        for i in range(image.shape[0]):
            row = []
            for start in range(0, text.shape[0], chunk):
                part = text[start:start + chunk]
                fused_text, fused_image, _ = base.fuse(part, image[i:i + 1].expand(part.shape[0], -1, -1),
                                                       mask[start:start + chunk])
                logits = self.itm_head(base.pair_feature(fused_text, fused_image))
                row.append(logits[:, 1] - logits[:, 0])
            rows.append(torch.cat(row))
        return torch.stack(rows)

    @can_return_tuple
    def forward(self, pixel_values=None, input_ids=None, attention_mask=None, mlm_input_ids=None, mlm_labels=None,
                noise=None, itm_labels=None, itm_image_index=None, mask_ratio=None, **kwargs):
        if pixel_values is None:
            raise ValueError("pixel_values is required")
        base, config = self.m3ae, self.config
        base.check_inputs(pixel_values, input_ids, attention_mask)
        if mlm_labels is None and itm_labels is None:
            raise ValueError("M3AEForPreTraining needs the processor's pre-training inputs (mlm_input_ids / "
                             "mlm_labels, itm_labels / itm_image_index): build them with processor(images, "
                             "text=captions, return_tensors='pt', for_pretraining=True)")
        ratio = check_mask_ratio(config.mask_ratio if mask_ratio is None else mask_ratio)
        if ratio == 0.0:
            raise ValueError("mask_ratio must be > 0 for pre-training (MIM reconstructs the dropped patches)")
        batch = pixel_values.shape[0]
        for name, value, shape in (("mlm_input_ids", mlm_input_ids, tuple(input_ids.shape)),
                                   ("mlm_labels", mlm_labels, tuple(input_ids.shape)),
                                   ("itm_labels", itm_labels, (batch,)), ("itm_image_index", itm_image_index, (batch,))):
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(f"{name} must have shape {shape}, got {tuple(value.shape)}")
        if (mlm_labels is None) != (mlm_input_ids is None):
            raise ValueError("mlm_input_ids and mlm_labels come together (the processor's MLM draw)")
        if mlm_input_ids is not None:
            check_token_inputs(mlm_input_ids, attention_mask, config.vocab_size, name="mlm_input_ids")
        terms = {}

        # MIM: full caption, patches dropped; the image stream after mim_layer fusion layers is decoded
        text_states = base.encode_text(input_ids, attention_mask)
        masked_image, mask, ids_restore = base.encode_image(pixel_values, noise, ratio)
        text, image = base.embed(text_states, masked_image)
        _, _, image_for_mim = base.fuse(text, image, attention_mask, keep_image_after=config.mim_layer)
        logits = self.mim_decoder(image_for_mim, ids_restore, config.grid_size)
        target = pixel_target(pixel_values.float(), to_2tuple(config.patch_size), config.norm_pix_loss)
        terms["mim"] = masked_mse(logits, target, mask)

        full_image = None
        mlm_logits = mlm_accuracy = itm_logits = itm_accuracy = None
        if mlm_labels is not None or itm_labels is not None:
            full_image, _, _ = base.encode_image(pixel_values)
        if mlm_labels is not None:  # MLM: masked caption, full image, the last fusion layer's text stream
            text, image = base.embed(base.encode_text(mlm_input_ids, attention_mask), full_image)
            fused_text, _, _ = base.fuse(text, image, attention_mask)
            # the vocabulary head on the masked tokens only (the loss is the same; the head is most of the step)
            labelled = mlm_labels != -100
            mlm_logits = self.mlm_head(fused_text[labelled])
            targets = mlm_labels[labelled]
            terms["mlm"] = token_cross_entropy(mlm_logits.unsqueeze(0), targets.unsqueeze(0))
            mlm_accuracy = (mlm_logits.argmax(-1) == targets).float().mean() if targets.numel() else \
                mlm_logits.new_zeros(())
        if itm_labels is not None:  # ITM: full caption, its own image or another of the batch
            index = torch.arange(batch, device=pixel_values.device) if itm_image_index is None else itm_image_index
            if not torch.compiler.is_compiling() and (int(index.min()) < 0 or int(index.max()) >= batch):
                raise ValueError(f"itm_image_index must index the batch's images [0, {batch}), got "
                                 f"{index.tolist()}")
            text, image = base.embed(text_states, full_image[index])
            fused_text, fused_image, _ = base.fuse(text, image, attention_mask)
            itm_logits = self.itm_head(base.pair_feature(fused_text, fused_image))
            terms["itm"] = nn.functional.cross_entropy(itm_logits.float(), itm_labels)
            itm_accuracy = (itm_logits.argmax(-1) == itm_labels).float().mean()
        weights = {"mlm": config.mlm_weight, "mim": config.mim_weight, "itm": config.itm_weight}
        loss = sum(weights[name] * value for name, value in terms.items())
        return M3AEForPreTrainingOutput(
            loss=loss, logits=logits, mask=mask, ids_restore=ids_restore, mlm_logits=mlm_logits,
            itm_logits=itm_logits, mlm_loss=terms.get("mlm"), mim_loss=terms["mim"], itm_loss=terms.get("itm"),
            mlm_accuracy=mlm_accuracy, itm_accuracy=itm_accuracy,
        )


class M3AEForVisualQuestionAnswering(M3AEPreTrainedModel):
    """The official VQA head on the pair feature (image + question), over ``num_labels`` answers. Loss: the
    official binary cross-entropy against soft answer scores (``labels`` (batch, num_labels) float), or
    cross-entropy for class ids (``labels`` (batch,) long)."""

    def __init__(self, config: M3AEConfig):
        super().__init__(config)
        self.m3ae = M3AEModel(config, warm_start=False)
        self.classifier = M3AEClassifierHead(config.hidden_size, config.num_labels, config.layer_norm_eps)
        self.post_init()
        self.warm_start_towers(self.m3ae, {})

    @can_return_tuple
    def forward(self, pixel_values=None, input_ids=None, attention_mask=None, labels=None, **kwargs):
        pooled = self.m3ae(pixel_values, input_ids, attention_mask, return_dict=True).pooler_output
        logits = self.classifier(pooled)
        loss = None
        if labels is not None:
            if labels.is_floating_point():
                loss = nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float()) * labels.shape[1]
            else:
                loss = nn.functional.cross_entropy(logits.float(), labels)
        return M3AEClassifierOutput(loss=loss, logits=logits, pooler_output=pooled)


class M3AEForImageClassification(M3AEForVisualQuestionAnswering):
    """The official classification head (MELINDA) on the pair feature of an image and its text (a caption or a
    prompt); ``labels`` (batch,) class ids, cross-entropy."""


__all__ = [
    "M3AEConfig", "M3AEModel", "M3AEForPreTraining", "M3AEForVisualQuestionAnswering", "M3AEForImageClassification",
    "M3AEProcessor", "itm_pairs",
]


# ----------------------------------------------------------------------------------------------- registry row

# a tiny random ViT (32 px, 8-px patches: a 4x4 grid, 32 wide, 2 layers) and the tiny random BERT over the real
# uncased WordPiece vocabulary (all-MiniLM-L6-v2's tokenizer); 2 fusion layers of 64, MIM from the first
TINY_VIT_CONFIG = dict(model_type="vit", image_size=32, patch_size=8, num_channels=3, hidden_size=32,
                       num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, hidden_dropout_prob=0.0,
                       attention_probs_dropout_prob=0.0, qkv_bias=True)
# CLIP ViT-B/16's vision tower (openai/clip-vit-base-patch16), written out so that a preset reads no file
CLIP_B16_VISION_CONFIG = dict(model_type="clip_vision_model", image_size=224, patch_size=16, num_channels=3,
                              hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                              hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=512)
ROBERTA_BASE_CONFIG = dict(model_type="roberta", vocab_size=50265, hidden_size=768, num_hidden_layers=12,
                           num_attention_heads=12, intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1,
                           attention_probs_dropout_prob=0.1, max_position_embeddings=514, type_vocab_size=1,
                           initializer_range=0.02, layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
                           eos_token_id=2)

METHOD = dict(
    name="m3ae",
    paper=("Multi-Modal Masked Autoencoders for Medical Vision-and-Language Pre-Training (Chen et al., MICCAI 2022), "
           "arXiv:2209.07098"),
    config_class=M3AEConfig,
    model_classes={"base": M3AEModel, "pretraining": M3AEForPreTraining,
                   "visual-question-answering": M3AEForVisualQuestionAnswering,
                   "image-classification": M3AEForImageClassification},
    processor="M3AEProcessor",
    modality="image-text",
    presets={
        "m3ae-tiny": dict(
            vision_config=dict(TINY_VIT_CONFIG), text_config=dict(TINY_BERT_CONFIG), tokenizer_name_or_path=MINILM,
            max_length=32, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, decoder_hidden_size=32,
            decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=64, mim_layer=1,
        ),
        # the paper: CLIP ViT-B/16 + RoBERTa-base warm starts, 6 fusion layers of 768, MIM from fusion layer 3, a
        # 384-wide 5-block decoder, 64 caption tokens, 224 px (the script's 288 needs interpolated positions)
        "m3ae-clip-vit-base-patch16-roberta-base": dict(
            vision_name_or_path="openai/clip-vit-base-patch16", vision_config=dict(CLIP_B16_VISION_CONFIG),
            text_name_or_path="roberta-base", text_config=dict(ROBERTA_BASE_CONFIG), max_length=64,
        ),
    },
    # the paper's recipe: AdamW lr 1e-5 at batch 256 (x5 for the new layers, which hf-mae's single lr does not
    # reproduce), weight decay 0.01, transformers' betas
    pretrain_base_lr=1e-5,
    pretrain_batch=256,
    pretrain_betas=(0.9, 0.999),
    pretrain_weight_decay=0.01,
    exports=["M3AEForPreTrainingOutput", "M3AEModelOutput", "itm_pairs"],
)
