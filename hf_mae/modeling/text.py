"""What the text methods share: a transformers language model as the backbone, its tokenizer, and the export that
downstream users load without hf-mae.

**The backbone.** A text method wraps transformers' own model (any ``AutoModelForMaskedLM`` for RetroMAE, DupMAE,
Starbucks) instead of hf-mae's ViT. :class:`TextEncoderConfig` describes it the way frozen teachers are described
(``teachers.py``): ``encoder_name_or_path`` (a Hub id or folder) and/or ``encoder_config`` (a config dict with a
``model_type``, what tests and presets use so that nothing is read). The architecture always comes from
``encoder_config`` (filled from ``encoder_name_or_path``'s config.json when only the name is given); the *weights*
of ``encoder_name_or_path`` are loaded once, when a model is built fresh (``XForPreTraining(config)``): a warm start.
``from_pretrained`` of a saved hf-mae model never reads them again (its own weights are in the checkpoint).

**The tokenizer.** ``tokenizer_name_or_path`` (default: ``encoder_name_or_path``); MLM methods need a ``[MASK]``
token (:func:`check_mask_token` names the tokenizer that lacks one). :class:`TextProcessor` is the processor base:
``processor(texts)`` tokenises (truncating over-long texts with a warning, refusing empty texts), and
``processor(texts, for_pretraining=True, generator=g)`` adds the method's masks (``pretraining_inputs``, written by
each method) so its output is the pre-training forward's keyword arguments.

**The export.** :func:`save_encoder` writes the backbone alone as a plain transformers folder
(``AutoModel.from_pretrained(dir)`` gives the encoder, ``AutoModelForMaskedLM`` the encoder with its MLM head) with
the tokenizer and the sentence-transformers files (``modules.json``, ``sentence_bert_config.json``,
``1_Pooling/config.json``), so ``SentenceTransformer(dir)`` embeds with the method's pooling. ``hf-mae pretrain``
writes it to ``RUN/encoder``.

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import warnings
from collections.abc import Mapping

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer, PreTrainedConfig
from transformers import initialization as init
from transformers.image_processing_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

from .base import MaskedModelPreTrainedModel, check_choice, check_int

POOLINGS = ("cls", "mean")
# The real uncased WordPiece vocabulary (30,522 tokens, [MASK] = 103) of the tiny presets: the project's local copy of
# all-MiniLM-L6-v2 when it sits beside the checkout (``../shared/data``, as tests and benchmarks find their data),
# else its Hub id (a user's machine downloads the tokenizer, 0.5 MB).
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
_MINILM_LOCAL = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))), "shared", "data", "models", "all-MiniLM-L6-v2", "model")
MINILM = _MINILM_LOCAL if os.path.isfile(os.path.join(_MINILM_LOCAL, "tokenizer.json")) else MINILM_HUB_ID
# all-MiniLM-L6-v2's architecture (its config.json, written out so that a preset reads no file)
MINILM_L6_CONFIG = dict(
    model_type="bert", vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
    intermediate_size=1536, hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
    max_position_embeddings=512, type_vocab_size=2, initializer_range=0.02, layer_norm_eps=1e-12, pad_token_id=0,
)
# bert-base-uncased's architecture (the RetroMAE / DupMAE / Starbucks papers' backbone)
BERT_BASE_CONFIG = dict(
    model_type="bert", vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
    intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
    max_position_embeddings=512, type_vocab_size=2, initializer_range=0.02, layer_norm_eps=1e-12, pad_token_id=0,
)
# a tiny random BERT over that vocabulary (CPU-sized, for tests and quick starts)
TINY_BERT_CONFIG = dict(
    model_type="bert", vocab_size=30522, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=128, hidden_act="gelu", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    max_position_embeddings=128, type_vocab_size=2, initializer_range=0.02, layer_norm_eps=1e-12, pad_token_id=0,
)
# a warm start (loading encoder_name_or_path's weights) happens on fresh builds only, not inside from_pretrained
_LOADING = {"depth": 0}


# ---------------------------------------------------------------------------------------------------------------
# Config base


def check_backbone_fields(config, prefix: str = "encoder") -> None:
    """Validates ``<prefix>_name_or_path`` (a non-empty str or None) and ``<prefix>_config`` (None or a dict with a
    ``model_type``; deep-copied so presets never share it)."""
    name = getattr(config, f"{prefix}_name_or_path")
    if name is not None and not (isinstance(name, (str, os.PathLike)) and str(name)):
        raise ValueError(f"{prefix}_name_or_path must be a Hub id or folder (a non-empty str) or None, got {name!r}")
    if name is not None:
        setattr(config, f"{prefix}_name_or_path", os.fspath(name))
    settings = getattr(config, f"{prefix}_config")
    if settings is not None:
        if isinstance(settings, PreTrainedConfig):
            settings = settings.to_dict()
        if not (isinstance(settings, Mapping) and "model_type" in settings):
            raise ValueError(f"{prefix}_config must be a config dict with a 'model_type' key or None, got {settings!r}")
        setattr(config, f"{prefix}_config", copy.deepcopy(dict(settings)))


class BackboneSizes:
    """The wrapped transformers model's sizes, read through its ``backbone_config()`` (transformers' generic code
    and the contract suite ask configs for them). Mixed into the configs that wrap a transformers model."""

    @property
    def hidden_size(self) -> int:
        return self.backbone_config().hidden_size

    @property
    def num_hidden_layers(self) -> int:
        return self.backbone_config().num_hidden_layers

    @property
    def num_attention_heads(self) -> int:
        return self.backbone_config().num_attention_heads

    @property
    def vocab_size(self) -> int:
        return self.backbone_config().vocab_size


class TextEncoderConfig(BackboneSizes, PreTrainedConfig):
    r"""The fields every text method shares (a config base: no ``model_type``, never registered).

    encoder_name_or_path: Hub id or folder of the backbone; its weights warm-start a freshly built model, and its
        config.json gives the architecture when ``encoder_config`` is None. None: a randomly initialised backbone.
    encoder_config: the backbone's config as a dict with a ``model_type`` (e.g. ``{"model_type": "bert",
        "hidden_size": 128, ...}``); wins over ``encoder_name_or_path``'s architecture. Presets write it out so that
        building a config reads no file.
    tokenizer_name_or_path: Hub id or folder of the tokenizer (default: ``encoder_name_or_path``).
    max_length: tokens per text, special tokens included; longer texts are truncated with a warning. None: the
        encoder's ``max_position_embeddings``, at most 512.
    pooling: the sentence embedding of the base model and of the exported sentence-transformers folder: ``"cls"``
        (the first token's last hidden state) or ``"mean"`` (the mean over the non-padding tokens).
    """

    encoder_name_or_path: str | None = None
    encoder_config: dict | None = None
    tokenizer_name_or_path: str | None = None
    max_length: int | None = None
    pooling: str = "cls"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_backbone_fields(self, "encoder")
        if self.tokenizer_name_or_path is not None and not (
            isinstance(self.tokenizer_name_or_path, str) and self.tokenizer_name_or_path
        ):
            raise ValueError(f"tokenizer_name_or_path must be a Hub id or folder (a non-empty str) or None, got "
                             f"{self.tokenizer_name_or_path!r}")
        check_choice("pooling", self.pooling, POOLINGS)
        if self.encoder_config is None and self.encoder_name_or_path is not None:
            # the architecture only (config.json), never the weights: those are read by a fresh build
            self.encoder_config = AutoConfig.from_pretrained(self.encoder_name_or_path).to_dict()
        limit = (self.encoder_config or {}).get("max_position_embeddings")
        if self.max_length is None:
            self.max_length = min(512, limit) if isinstance(limit, int) else 512
        check_int("max_length", self.max_length, minimum=2)
        if self.encoder_config is not None:
            if isinstance(limit, int) and self.max_length > limit:
                raise ValueError(f"max_length {self.max_length} exceeds the encoder's max_position_embeddings {limit}")

    @property
    def tokenizer_source(self) -> str | None:
        return self.tokenizer_name_or_path or self.encoder_name_or_path

    def backbone_config(self, prefix: str = "encoder") -> PreTrainedConfig:
        """The transformers config of the backbone ``<prefix>_config`` describes."""
        settings = getattr(self, f"{prefix}_config")
        if settings is None:
            raise ValueError(
                f"{type(self).__name__} needs a backbone: set {prefix}_name_or_path (a Hub id or folder) or "
                f"{prefix}_config (a config dict with a 'model_type')"
            )
        settings = dict(settings)
        model_type = settings.pop("model_type")
        for key in ("architectures", "transformers_version", "_name_or_path", "dtype", "torch_dtype"):
            settings.pop(key, None)
        return AutoConfig.for_model(model_type, **settings)



# ---------------------------------------------------------------------------------------------------------------
# Building the backbone


def build_masked_lm(config, prefix: str = "encoder", attn_implementation: str | None = None) -> nn.Module:
    """A randomly initialised ``AutoModelForMaskedLM`` of the architecture ``config.<prefix>_config`` describes
    (a TypeError when that family has no masked-LM head, or keeps it in pieces: DistilBERT, ELECTRA)."""
    backbone = config.backbone_config(prefix)
    if type(backbone) not in AutoModelForMaskedLM._model_mapping:
        raise TypeError(
            f"{prefix}_config has model_type {backbone.model_type!r}, which has no AutoModelForMaskedLM class; MLM "
            "methods need a masked-LM family (bert, roberta, distilbert, electra, ...)"
        )
    implementation = attn_implementation or getattr(config, "_attn_implementation", None)
    kwargs = {"attn_implementation": implementation} if implementation in ("eager", "sdpa") else {}
    masked_lm = AutoModelForMaskedLM.from_config(backbone, **kwargs)
    mlm_head(masked_lm)  # a family the methods' layers cannot use fails here, named, not deep in a decoder
    return masked_lm


@contextlib.contextmanager
def no_warm_start():
    """Builds inside this block skip the warm start (``from_pretrained`` loads a checkpoint's own weights)."""
    _LOADING["depth"] += 1
    try:
        yield
    finally:
        _LOADING["depth"] -= 1


def warm_start_enabled() -> bool:
    return _LOADING["depth"] == 0


def load_pretrained_weights(masked_lm: nn.Module, name_or_path: str) -> dict:
    """Copies the weights of ``AutoModelForMaskedLM.from_pretrained(name_or_path)`` (in float32) into ``masked_lm``;
    a checkpoint without an MLM head (a sentence-embedding fine-tune such as all-MiniLM-L6-v2) keeps the head as
    built (new). Returns ``{"missing_keys": [...], "unexpected_keys": [...]}`` of the copy."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source, info = AutoModelForMaskedLM.from_pretrained(name_or_path, dtype=torch.float32, output_loading_info=True)
    result = masked_lm.load_state_dict(source.state_dict(), strict=False)
    # missing: what the checkpoint lacked (kept as built: new), e.g. the MLM head of a sentence-embedding model
    return {"missing_keys": sorted(set(info["missing_keys"]) | set(result.missing_keys)),
            "unexpected_keys": sorted(set(info["unexpected_keys"]) | set(result.unexpected_keys))}


def mlm_head(masked_lm: nn.Module) -> nn.Module:
    """The module that turns a masked LM's last hidden states into vocabulary logits: ``cls`` (BERT family) or
    ``lm_head`` (RoBERTa family); a TypeError for families that keep it in pieces."""
    for name in ("cls", "lm_head"):
        head = getattr(masked_lm, name, None)
        if isinstance(head, nn.Module):
            return head
    raise TypeError(f"{type(masked_lm).__name__} has no single MLM head module (cls or lm_head); the text methods "
                    "support the BERT and RoBERTa families")


class TextPreTrainedModel(MaskedModelPreTrainedModel):
    """The base of the text methods' ``*PreTrainedModel``: token ids in, the nested transformers backbone
    initialised by its own rules (``MaskedModelPreTrainedModel.initialize_weights``), the method's own layers by
    BERT's (normal(0, initializer_range) linears and embeddings, zero biases, unit LayerNorms)."""

    main_input_name = "input_ids"
    _no_split_modules = []
    _supports_flash_attn = False  # the decoders' (batch, L, L) masks need an explicit mask (eager / sdpa / flex)

    @property
    def initializer_range(self) -> float:
        return float((self.config.encoder_config or {}).get("initializer_range", 0.02))

    @torch.no_grad()
    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=self.initializer_range)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=self.initializer_range)
        else:
            super()._init_weights(module)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, **kwargs):
        with no_warm_start():
            return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    def warm_start(self, masked_lm: nn.Module, prefix: str = "encoder"):
        """Loads ``config.<prefix>_name_or_path``'s weights into ``masked_lm`` on a fresh build (call at the end of
        ``__init__``, after ``post_init``). Records what was new in ``self.warm_start_info``."""
        name = getattr(self.config, f"{prefix}_name_or_path")
        self.warm_start_info = None
        if name is not None and warm_start_enabled():
            self.warm_start_info = load_pretrained_weights(masked_lm, name)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """(batch, L, D) -> (batch, D): the first token (``"cls"``) or the mean over ``attention_mask``'s tokens."""
    if pooling == "cls":
        return hidden[:, 0]
    if attention_mask is None:
        return hidden.mean(1)
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)


def check_token_inputs(input_ids, attention_mask=None, vocab_size: int | None = None, name: str = "input_ids") -> None:
    """Clear errors for token inputs: a (batch, L) integer tensor, a non-empty batch, an attention mask of its shape."""
    if not isinstance(input_ids, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
    if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids, got dtype {input_ids.dtype}")
    if input_ids.dim() != 2:
        raise ValueError(f"{name} must be (batch, sequence length), got shape {tuple(input_ids.shape)}")
    if input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise ValueError(f"{name} is an empty batch (shape {tuple(input_ids.shape)})")
    if attention_mask is not None and tuple(attention_mask.shape) != tuple(input_ids.shape):
        raise ValueError(f"attention_mask must have the shape of {name} {tuple(input_ids.shape)}, got "
                         f"{tuple(attention_mask.shape)}")
    if vocab_size is not None and not torch.compiler.is_compiling():
        if input_ids.numel() and (int(input_ids.max()) >= vocab_size or int(input_ids.min()) < 0):
            raise ValueError(f"{name} holds ids outside the vocabulary [0, {vocab_size})")


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer and processor


def load_tokenizer(config):
    """The tokenizer a text config names (``tokenizer_name_or_path``, else ``encoder_name_or_path``)."""
    name = config.tokenizer_source
    if name is None:
        raise ValueError(f"{type(config).__name__} names no tokenizer: set tokenizer_name_or_path (or "
                         "encoder_name_or_path) to a Hub id or folder")
    return AutoTokenizer.from_pretrained(name)


def check_mask_token(tokenizer, name: str | None = None) -> int:
    """The tokenizer's ``[MASK]`` id; a ValueError naming the tokenizer when it has none (MLM methods need it)."""
    mask_id = getattr(tokenizer, "mask_token_id", None)
    if mask_id is None:
        label = name or getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
        raise ValueError(
            f"tokenizer {label!r} has no mask token ([MASK]); masked-LM methods need one: use a BERT-family "
            "tokenizer, or add one with tokenizer.add_special_tokens({'mask_token': '[MASK]'}) and resize the "
            "encoder's embeddings"
        )
    return int(mask_id)


class TextProcessor(ProcessorMixin):
    """A tokenizer plus the method's pre-training masks: the processor of every MLM text method.

    ``processor(texts, return_tensors="pt")``: ``input_ids`` / ``attention_mask`` (batch, L), padded to the
    longest text, truncated to ``max_length`` tokens (with a warning naming how many texts were cut).
    ``processor(texts, return_tensors="pt", for_pretraining=True, generator=g)``: the keyword arguments of the
    method's pre-training forward, masks drawn from ``g`` (torch's global RNG when None), built by
    :meth:`pretraining_inputs` from the tokenised batch (which also holds ``word_ids``: (batch, L) word index of
    each token, -1 for special and padding tokens). Subclasses set their settings as ``__init__`` keywords (saved
    in processor_config.json) and write ``pretraining_inputs``.

    tokenizer: a fast transformers tokenizer (word ids come from it); max_length: an int >= 2.
    """

    takes_texts = True  # hf-mae pretrain feeds it lists of strings (training/text_data.py)

    def __init__(self, tokenizer=None, max_length: int = 512, **kwargs):
        check_int("max_length", max_length, minimum=2)
        self.max_length = max_length
        super().__init__(tokenizer, **kwargs)
        if tokenizer is not None and not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} must be a fast tokenizer "
                             f"(whole-word masks need its word ids), got {type(tokenizer).__name__}")

    @classmethod
    def from_model_config(cls, config, **settings):
        """The processor of a text config: its tokenizer and ``max_length`` plus the method's ``settings``."""
        return cls(load_tokenizer(config), max_length=config.max_length, **settings)

    @property
    def training_call_kwargs(self) -> dict:
        return {"for_pretraining": True}

    def tokenize(self, text) -> dict:
        """Tokenised texts as tensors: ``input_ids``, ``attention_mask`` and ``word_ids`` (batch, L)."""
        texts = [text] if isinstance(text, str) else text
        if not isinstance(texts, (list, tuple)) or not texts or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"text must be a string or a non-empty list of strings, got {type(text).__name__}")
        empty = [i for i, t in enumerate(texts) if not t.strip()]
        if empty:
            raise ValueError(f"text holds empty texts at positions {empty[:10]} (of {len(texts)}); drop them first")
        tokenizer = self.tokenizer
        encoded = tokenizer(list(texts), truncation=True, max_length=self.max_length, return_overflowing_tokens=True,
                            return_attention_mask=True)
        mapping = encoded["overflow_to_sample_mapping"]
        first_rows, truncated = {}, set()
        for row, sample in enumerate(mapping):
            if sample in first_rows:
                truncated.add(sample)
            else:
                first_rows[sample] = row
        if truncated:
            warnings.warn(
                f"{len(truncated)} of {len(texts)} texts are longer than max_length={self.max_length} tokens and were "
                "truncated", stacklevel=3,
            )
        rows = [first_rows[i] for i in range(len(texts))]
        length = max(len(encoded["input_ids"][row]) for row in rows)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
        attention_mask = torch.zeros(len(rows), length, dtype=torch.long)
        word_ids = torch.full((len(rows), length), -1, dtype=torch.long)
        for i, row in enumerate(rows):
            ids = encoded["input_ids"][row]
            input_ids[i, : len(ids)] = torch.tensor(ids)
            attention_mask[i, : len(ids)] = 1
            words = [-1 if w is None else w for w in encoded.word_ids(row)]
            word_ids[i, : len(ids)] = torch.tensor(words)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "word_ids": word_ids}

    def pretraining_inputs(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        """The method's pre-training keyword arguments from a tokenised ``batch`` (see :meth:`tokenize`)."""
        raise NotImplementedError(f"{type(self).__name__} does not define pretraining_inputs")

    def __call__(self, text=None, return_tensors=None, for_pretraining: bool = False,
                 generator: torch.Generator | None = None, **kwargs) -> BatchFeature:
        # ProcessorMixin's own per-modality keyword groups (empty unless a caller fills them)
        kwargs = {k: v for k, v in kwargs.items() if not (k.endswith("_kwargs") and not v)}
        if kwargs:
            raise TypeError(f"{type(self).__name__} got unknown settings {sorted(kwargs)}; it takes text, "
                            "return_tensors, for_pretraining and generator (set max_length on the processor)")
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors must be 'pt' or None, got {return_tensors!r}")
        if text is None:
            raise ValueError("pass text: a string or a list of strings")
        batch = self.tokenize(text)
        if for_pretraining:
            return BatchFeature(self.pretraining_inputs(batch, generator))
        return BatchFeature({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]})


# ---------------------------------------------------------------------------------------------------------------
# Export: a plain transformers + sentence-transformers folder


def save_encoder(masked_lm: nn.Module, directory, tokenizer=None, pooling: str = "cls",
                 max_length: int | None = None) -> str:
    """Writes the backbone ``masked_lm`` (an ``AutoModelForMaskedLM``) as a plain transformers folder with its
    tokenizer and the sentence-transformers files: ``AutoModel.from_pretrained(directory)`` loads the encoder
    (the MLM head's weights are left unread; ``AutoModelForMaskedLM`` reads them), ``SentenceTransformer(directory)``
    embeds with ``pooling`` ("cls" or "mean"; no normalisation). Returns the folder."""
    check_choice("pooling", pooling, POOLINGS)
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    masked_lm.save_pretrained(directory)
    if tokenizer is not None:
        tokenizer.save_pretrained(directory)
        # a tokenizer taken from an hf-mae processor names that processor; the plain folder must load the tokenizer
        # alone (sentence-transformers asks AutoProcessor)
        path = os.path.join(directory, "tokenizer_config.json")
        if os.path.isfile(path):
            with open(path) as stream:
                settings = json.load(stream)
            if settings.pop("processor_class", None) is not None:
                with open(path, "w") as stream:
                    json.dump(settings, stream, indent=2)
    width = masked_lm.config.hidden_size
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
    ]
    pooling_config = {
        "word_embedding_dimension": width, "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean", "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    limit = max_length or getattr(masked_lm.config, "max_position_embeddings", 512)
    files = {
        "modules.json": modules,
        "sentence_bert_config.json": {"max_seq_length": int(limit), "do_lower_case": False},
        os.path.join("1_Pooling", "config.json"): pooling_config,
    }
    for name, content in files.items():
        path = os.path.join(directory, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as stream:
            json.dump(content, stream, indent=2)
    return directory


__all__ = [
    "TextEncoderConfig", "TextPreTrainedModel", "TextProcessor", "build_masked_lm", "check_mask_token",
    "load_tokenizer", "pool", "save_encoder", "check_token_inputs", "mlm_head",
]
