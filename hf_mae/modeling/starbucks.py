"""Starbucks: Improved Training for 2D Matryoshka Embeddings (Zhuang et al., 2024), arXiv:2410.13230.

A BERT-family masked language model (any ``AutoModelForMaskedLM`` with BERT's MLM head) is trained so that every
pair of a fixed list of (layer, dim) pairs, ((2, 32), (4, 64), ..., (12, 768)) at base size, is a usable embedding
model on its own: the first ``dim`` dimensions of the output of layer ``layer``.

1. **SMAE pre-training** (``StarbucksForPreTraining``). Nested whole-word masks: the encoder's 20% of the words are
   a subset of the decoder's 40%, each corrupted by BERT's 80/10/10 rule (the processor). For every pair (n, d):
   - MLM: ``hidden_states[n][:, :, :d]`` through the *sliced* MLM head, whose transform's dense layer uses only its
     first ``d`` input columns (``dense.weight[:, :d]``; the bias, activation, LayerNorm and the tied decoder are
     the full ones), cross-entropy at the encoder-masked positions;
   - MAE: the sub-layer sub-dim [CLS] through the sliced transform (back to ``hidden``) replaces position 0 of the
     decoder's input embeddings of the decoder-masked ids; the decoder, one BERT layer initialised from the
     encoder's first layer and sharing the encoder's embeddings and MLM head, predicts the decoder-masked tokens
     (standard padding attention mask);
   ``loss = mean over pairs of (L_mlm + L_mae) / 2``.
2. **SRL fine-tuning** (``hf_mae.training.starbucks_srl.StarbucksSRLLoss``, a sentence-transformers loss): the
   in-batch-negative contrastive loss at the full model and at every pair of the list, plus a KL term pulling each
   pair's score distribution towards the full model's.
3. **Inference** (``StarbucksModel``): ``model(**batch, layer=n, dim=d).pooler_output`` is the (n, d) embedding,
   computed with the first ``n`` layers only.

Departures from the official code (ielab/Starbucks, smae/modeling.py and smae/data.py):
- the decoder is a copy of the backbone's first layer taken when the model is built (the official code loads the
  pretrained checkpoint a second time and keeps its layer 0: the same weights when the backbone is pretrained);
- the decoder's input embeddings are computed once per batch and shared by the pairs (the official code recomputes
  them per pair, drawing a new embedding dropout each time);
- the MLM and MAE heads are evaluated at the labelled positions only (the same loss, less memory);
- any pair list is accepted, also one that leaves out the full model.

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask
from transformers.utils import ModelOutput

from .base import check_rate
from .masking import mlm_corruption, whole_word_masks
from .text import (
    BERT_BASE_CONFIG,
    MINILM,
    MINILM_L6_CONFIG,
    TINY_BERT_CONFIG,
    TextEncoderConfig,
    TextPreTrainedModel,
    TextProcessor,
    build_masked_lm,
    check_mask_token,
    check_token_inputs,
    pool,
    save_encoder,
    warm_start_enabled,
)

# the paper's list for 12-layer 768-d BERT-base
BASE_LAYER_DIM_PAIRS = ((2, 32), (4, 64), (6, 128), (8, 256), (10, 512), (12, 768))


def check_layer_dim_pairs(name: str, pairs, num_layers: int | None = None, hidden_size: int | None = None) -> list:
    """``pairs`` as a list of ``[layer, dim]`` lists; ValueError naming ``name`` unless it is a non-empty sequence
    of distinct pairs of ints with ``1 <= layer <= num_layers`` and ``1 <= dim <= hidden_size`` (when given)."""
    if isinstance(pairs, (str, bytes)) or not hasattr(pairs, "__iter__"):
        raise ValueError(f"{name} must be a list of (layer, dim) pairs, got {pairs!r}")
    result = []
    for pair in pairs:
        if isinstance(pair, (str, bytes)) or not hasattr(pair, "__len__") or len(pair) != 2:
            raise ValueError(f"{name} must be a list of (layer, dim) pairs, got the entry {pair!r} in {pairs!r}")
        layer, dim = pair
        if any(isinstance(v, bool) or not isinstance(v, int) for v in (layer, dim)) or layer < 1 or dim < 1:
            raise ValueError(f"{name}: every layer and dim must be an int >= 1, got {pair!r} in {pairs!r}")
        if num_layers is not None and layer > num_layers:
            raise ValueError(f"{name}: layer {layer} of {pair!r} exceeds the backbone's {num_layers} layers")
        if hidden_size is not None and dim > hidden_size:
            raise ValueError(f"{name}: dim {dim} of {pair!r} exceeds the backbone's hidden size {hidden_size}")
        result.append([layer, dim])
    if not result:
        raise ValueError(f"{name} must hold at least one (layer, dim) pair, got {pairs!r}")
    if len({tuple(p) for p in result}) != len(result):
        raise ValueError(f"{name} holds a pair twice: {pairs!r}")
    return result


class StarbucksConfig(TextEncoderConfig):
    r"""Configuration of a Starbucks model: the text fields of ``TextEncoderConfig`` (the backbone by
    ``encoder_name_or_path`` / ``encoder_config``, the tokenizer, ``max_length``, ``pooling``) plus

    layer_dim_pairs: the (layer, dim) pairs trained and served, ``layer`` counted from 1 (``hidden_states[layer]``),
        ``dim`` the leading dimensions kept; the paper's ((2, 32), (4, 64), (6, 128), (8, 256), (10, 512), (12, 768))
        for BERT-base. Checked against the backbone's layers and width.
    encoder_mask_ratio: share of the ordinary tokens masked (whole words) for the encoder's MLM (0.2, the official
        ``mlm_probability``).
    decoder_mask_ratio: share masked for the decoder (0.4, ``decoder_mlm_probability``); the encoder's masked words
        are a subset of the decoder's (one ranking of the words, ``masking.whole_word_masks``).
    pooling (the base's field): how ``StarbucksModel`` pools a layer into one embedding, "cls" (the paper's
        retrieval models; the default) or "mean" (its STS models, and all-MiniLM's).
    ``mask_ratio`` (read-only) is ``encoder_mask_ratio``.
    """

    model_type = "starbucks"

    layer_dim_pairs: list | tuple = BASE_LAYER_DIM_PAIRS
    encoder_mask_ratio: float = 0.2
    decoder_mask_ratio: float = 0.4

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        backbone = self.backbone_config() if self.encoder_config is not None else None
        self.layer_dim_pairs = check_layer_dim_pairs(
            "layer_dim_pairs", self.layer_dim_pairs, getattr(backbone, "num_hidden_layers", None),
            getattr(backbone, "hidden_size", None))
        check_rate("encoder_mask_ratio", self.encoder_mask_ratio, allow_zero=False)
        check_rate("decoder_mask_ratio", self.decoder_mask_ratio, allow_zero=False)
        if self.encoder_mask_ratio > self.decoder_mask_ratio:
            raise ValueError(
                f"encoder_mask_ratio ({self.encoder_mask_ratio}) must not exceed decoder_mask_ratio "
                f"({self.decoder_mask_ratio}): the encoder's masked words are a subset of the decoder's"
            )

    @property
    def mask_ratio(self) -> float:
        return self.encoder_mask_ratio


# ---------------------------------------------------------------------------------------------------------------
# The sliced MLM head


def mlm_head_transform(mlm_model: nn.Module) -> nn.Module:
    """The MLM head's transform (dense -> activation -> LayerNorm) of a BERT-layout ``AutoModelForMaskedLM``
    (``cls.predictions.transform``); TypeError naming the class when the head has another layout."""
    transform = getattr(getattr(getattr(mlm_model, "cls", None), "predictions", None), "transform", None)
    if transform is None or not all(hasattr(transform, n) for n in ("dense", "transform_act_fn", "LayerNorm")):
        raise TypeError(
            f"Starbucks slices BERT's MLM head (cls.predictions.transform.dense); {type(mlm_model).__name__} has no "
            "such head. Use a BERT-family AutoModelForMaskedLM (bert, or a model with BERT's head layout)"
        )
    return transform


def sliced_transform(transform: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """(..., d) -> (..., hidden): BERT's head transform with the dense layer restricted to its first ``d`` input
    columns, ``LayerNorm(act(hidden @ W[:, :d].T + b))``."""
    dim = hidden.shape[-1]
    weight = transform.dense.weight
    if dim > weight.shape[1]:
        raise ValueError(f"the sliced head takes at most {weight.shape[1]} dims, got hidden states of {dim}")
    return transform.LayerNorm(transform.transform_act_fn(F.linear(hidden, weight[:, :dim], transform.dense.bias)))


def sliced_mlm_logits(mlm_model: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """(..., d) -> (..., vocab): the MLM logits of ``d``-dim hidden states through the sliced head."""
    predictions = mlm_model.cls.predictions
    return predictions.decoder(sliced_transform(mlm_head_transform(mlm_model), hidden))


def masked_cross_entropy(logits_fn, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits_fn(hidden)`` against ``labels`` (-100 = ignored), evaluated at the labelled
    positions only (``CrossEntropyLoss(ignore_index=-100)`` over all positions gives the same number). A batch
    without any label gives 0 (connected to the graph)."""
    selected = labels != -100
    if not bool(selected.any()):
        return hidden.sum() * 0.0
    logits = logits_fn(hidden[selected])
    return F.cross_entropy(logits.float(), labels[selected])


# ---------------------------------------------------------------------------------------------------------------
# Models


class StarbucksDecoder(nn.Module):
    """SMAE's one-layer decoder: a copy of the backbone's first layer over the decoder's input embeddings, with the
    standard (padding) bidirectional attention mask."""

    def __init__(self, backbone_config, first_layer: nn.Module):
        super().__init__()
        self.config = backbone_config
        self.layer = copy.deepcopy(first_layer)

    def forward(self, embeddings: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(batch, length, hidden) embeddings, (batch, length) padding mask -> (batch, length, hidden)."""
        mask = create_bidirectional_mask(config=self.config, inputs_embeds=embeddings, attention_mask=attention_mask)
        return self.layer(embeddings, mask)


@dataclass
class StarbucksPreTrainingOutput(ModelOutput):
    """
    loss: scalar, the mean over pairs of (MLM + MAE) / 2.
    logits: (batch, length, vocab) the MLM logits of the list's last pair (the full model in the paper's list)
        through the sliced head, at every position.
    pair_losses: (pairs, 2) the MLM and the MAE cross-entropy of each (layer, dim) pair, in the config's order.
    hidden_states: the backbone's hidden states (embeddings, then each layer), each (batch, length, hidden).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    pair_losses: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class StarbucksModelOutput(ModelOutput):
    """
    last_hidden_state: (batch, length, dim) the first ``dim`` dimensions of the output of layer ``layer``.
    pooler_output: (batch, dim) that layer's pooled embedding (``config.pooling``: CLS or mean), cut to ``dim``.
    hidden_states: when asked, the backbone's hidden states (embeddings, then each layer), each (batch, L, hidden).
    attentions: when asked, per layer (batch, heads, L, L) (eager attention).
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


def smae_pair_losses(
    mlm_model: PreTrainedModel,
    decoder: StarbucksDecoder,
    layer_dim_pairs,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor,
    decoder_input_ids: torch.Tensor,
    decoder_labels: torch.Tensor,
    token_type_ids: torch.Tensor | None = None,
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """SMAE's losses: ((pairs, 2) MLM and MAE cross-entropy per (layer, dim) pair, the backbone's hidden states).

    input_ids, labels: (batch, length) the encoder's corrupted ids and its MLM labels (-100 off the encoder mask).
    decoder_input_ids, decoder_labels: the same for the decoder's (larger) mask.
    """
    transform = mlm_head_transform(mlm_model)
    base = mlm_model.base_model
    hidden_states = base(
        input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, output_hidden_states=True
    ).hidden_states
    # the decoder's input embeddings: the shared embedding layer over the decoder-masked ids, once per batch
    decoder_embeddings = base.embeddings(input_ids=decoder_input_ids, token_type_ids=token_type_ids)
    head = mlm_model.cls
    losses = []
    for layer, dim in layer_dim_pairs:
        sub = hidden_states[layer][..., :dim]
        mlm = masked_cross_entropy(lambda h: sliced_mlm_logits(mlm_model, h), sub, labels)
        # the sub-model's [CLS], back to the full width through the sliced transform, replaces position 0
        cls = sliced_transform(transform, sub[:, 0]).to(decoder_embeddings.dtype)
        embeddings = torch.cat([cls.unsqueeze(1), decoder_embeddings[:, 1:]], dim=1)
        decoded = decoder(embeddings, attention_mask)
        mae = masked_cross_entropy(head, decoded, decoder_labels)
        losses.append(torch.stack([mlm, mae]))
    return torch.stack(losses), hidden_states


# ---------------------------------------------------------------------------------------------------------------
# Processor and models


class StarbucksProcessor(TextProcessor):
    """The tokenizer plus SMAE's nested whole-word masks: ``processor(texts, return_tensors="pt",
    for_pretraining=True, generator=g)`` gives ``input_ids`` / ``labels`` (the encoder's ``encoder_mask_ratio`` of
    the ordinary tokens, whole words, BERT's 80/10/10 corruption), ``decoder_input_ids`` / ``decoder_labels`` (the
    decoder's ``decoder_mask_ratio``, a superset of the encoder's words, corrupted independently) and
    ``attention_mask``, the keyword arguments of ``StarbucksForPreTraining``."""

    def __init__(self, tokenizer=None, max_length: int = 512, encoder_mask_ratio: float = 0.2,
                 decoder_mask_ratio: float = 0.4, **kwargs):
        check_rate("encoder_mask_ratio", encoder_mask_ratio, allow_zero=False)
        check_rate("decoder_mask_ratio", decoder_mask_ratio, allow_zero=False)
        if encoder_mask_ratio > decoder_mask_ratio:
            raise ValueError(f"encoder_mask_ratio ({encoder_mask_ratio}) must not exceed decoder_mask_ratio "
                             f"({decoder_mask_ratio})")
        self.encoder_mask_ratio, self.decoder_mask_ratio = encoder_mask_ratio, decoder_mask_ratio
        super().__init__(tokenizer, max_length=max_length, **kwargs)
        if tokenizer is not None:
            check_mask_token(tokenizer)

    @classmethod
    def from_model_config(cls, config, **settings):
        settings = dict(encoder_mask_ratio=config.encoder_mask_ratio, decoder_mask_ratio=config.decoder_mask_ratio,
                        **settings)
        return super().from_model_config(config, **settings)

    def pretraining_inputs(self, batch: dict, generator: torch.Generator | None = None) -> dict:
        tokenizer = self.tokenizer
        mask_id = check_mask_token(tokenizer)
        encoder_mask, decoder_mask = whole_word_masks(
            batch["word_ids"], [self.encoder_mask_ratio, self.decoder_mask_ratio], generator=generator)
        ids = batch["input_ids"]
        input_ids, labels = mlm_corruption(ids, encoder_mask, mask_id, len(tokenizer), generator=generator)
        decoder_input_ids, decoder_labels = mlm_corruption(ids, decoder_mask, mask_id, len(tokenizer),
                                                           generator=generator)
        return {"input_ids": input_ids, "attention_mask": batch["attention_mask"], "labels": labels,
                "decoder_input_ids": decoder_input_ids, "decoder_labels": decoder_labels}


class StarbucksPreTrainedModel(TextPreTrainedModel):
    config_class = StarbucksConfig
    base_model_prefix = "starbucks"
    _can_record_outputs = {"hidden_states": "BertLayer", "attentions": "BertSelfAttention"}


class StarbucksModel(StarbucksPreTrainedModel):
    """The backbone (a transformers ``AutoModelForMaskedLM``, head included, so ``save_encoder`` exports both) as a
    2D Matryoshka embedding model: ``model(input_ids, attention_mask, layer=n, dim=d)`` returns the first ``d``
    dimensions of layer ``n``'s tokens and of their pooled embedding. Default: the last layer at full width.
    The whole backbone runs; for the speed-up of a small ``n``, keep its first ``n`` layers
    (``model.encoder.base_model.encoder.layer = model.encoder.base_model.encoder.layer[:n]``)."""

    def __init__(self, config: StarbucksConfig, warm_start: bool = True):
        super().__init__(config)
        self.encoder = build_masked_lm(config)
        mlm_head_transform(self.encoder)  # a TypeError now for a head that cannot be sliced
        self.post_init()
        if warm_start:
            self.warm_start(self.encoder)

    def get_input_embeddings(self):
        return self.encoder.get_input_embeddings()

    def check_layer_dim(self, layer, dim) -> tuple[int, int]:
        backbone = self.encoder.config
        layer = backbone.num_hidden_layers if layer is None else layer
        dim = backbone.hidden_size if dim is None else dim
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer <= backbone.num_hidden_layers:
            raise ValueError(f"layer must be an int in 0..{backbone.num_hidden_layers} (hidden_states[layer]; 0 = the "
                             f"embeddings), got {layer!r}")
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= backbone.hidden_size:
            raise ValueError(f"dim must be an int in 1..{backbone.hidden_size}, got {dim!r}")
        return layer, dim

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, layer: int | None = None,
                dim: int | None = None, output_hidden_states: bool | None = None,
                output_attentions: bool | None = None, **kwargs) -> StarbucksModelOutput:
        check_token_inputs(input_ids, attention_mask, self.encoder.config.vocab_size)
        layer, dim = self.check_layer_dim(layer, dim)
        out = self.encoder.base_model(input_ids=input_ids, attention_mask=attention_mask,
                                      token_type_ids=token_type_ids, output_hidden_states=True,
                                      output_attentions=output_attentions, return_dict=True)
        tokens = out.hidden_states[layer][..., :dim]
        return StarbucksModelOutput(
            last_hidden_state=tokens, pooler_output=pool(tokens, attention_mask, self.config.pooling),
            hidden_states=out.hidden_states if output_hidden_states else None,
            attentions=out.attentions if output_attentions else None,
        )

    def save_encoder(self, directory, tokenizer=None):
        """The backbone as a plain transformers + sentence-transformers folder (``text.save_encoder``)."""
        if tokenizer is not None and getattr(tokenizer, "_processor_class", None) is not None:
            # a processor's tokenizer would write processor_class "StarbucksProcessor" into tokenizer_config.json,
            # and SentenceTransformer(dir) would then load hf-mae's processor instead of the plain tokenizer
            tokenizer = copy.copy(tokenizer)
            tokenizer._processor_class = None
        return save_encoder(self.encoder, directory, tokenizer, pooling=self.config.pooling,
                            max_length=self.config.max_length)


class StarbucksForPreTraining(StarbucksPreTrainedModel):
    """SMAE: the backbone's per-pair MLM through the sliced head plus the one-layer MAE decoder per pair
    (``smae_pair_losses``); ``loss = mean over pairs of (MLM + MAE) / 2``."""

    def __init__(self, config: StarbucksConfig):
        super().__init__(config)
        self.starbucks = StarbucksModel(config, warm_start=False)
        encoder = self.starbucks.encoder
        backbone = encoder.config
        check_layer_dim_pairs("layer_dim_pairs", config.layer_dim_pairs, backbone.num_hidden_layers,
                              backbone.hidden_size)
        self.decoder = StarbucksDecoder(backbone, encoder.base_model.encoder.layer[0])
        self.post_init()
        self.warm_start(encoder)
        if warm_start_enabled():  # a fresh build (inside from_pretrained the checkpoint holds the decoder)
            # the decoder starts as the (warm-started) first layer, as the official code's second from_pretrained
            self.decoder.layer.load_state_dict(encoder.base_model.encoder.layer[0].state_dict())

    def save_encoder(self, directory, tokenizer=None):
        return self.starbucks.save_encoder(directory, tokenizer)

    def forward(self, input_ids=None, attention_mask=None, labels=None, decoder_input_ids=None,
                decoder_labels=None, token_type_ids=None, **kwargs) -> StarbucksPreTrainingOutput:
        encoder = self.starbucks.encoder
        check_token_inputs(input_ids, attention_mask, encoder.config.vocab_size)
        if labels is None or decoder_input_ids is None or decoder_labels is None:
            raise ValueError(
                "StarbucksForPreTraining needs its pre-training inputs: labels, decoder_input_ids and decoder_labels "
                "(processor(texts, return_tensors='pt', for_pretraining=True)); for embeddings use StarbucksModel"
            )
        check_token_inputs(decoder_input_ids, attention_mask, encoder.config.vocab_size, name="decoder_input_ids")
        for name, value in (("labels", labels), ("decoder_labels", decoder_labels)):
            if tuple(value.shape) != tuple(input_ids.shape):
                raise ValueError(f"{name} must have the shape of input_ids {tuple(input_ids.shape)}, got "
                                 f"{tuple(value.shape)}")
        pair_losses, hidden_states = smae_pair_losses(
            encoder, self.decoder, self.config.layer_dim_pairs, input_ids, attention_mask, labels,
            decoder_input_ids, decoder_labels, token_type_ids)
        layer, dim = self.config.layer_dim_pairs[-1]
        logits = sliced_mlm_logits(encoder, hidden_states[layer][..., :dim])
        return StarbucksPreTrainingOutput(loss=pair_losses.mean(dim=1).mean(), logits=logits,
                                          pair_losses=pair_losses, hidden_states=hidden_states)


# a tiny 4-layer 64-d BERT over the real uncased vocabulary and its scaled list (the card's CPU validation)
TINY_PAIRS = [[1, 16], [2, 32], [3, 48], [4, 64]]
# all-MiniLM-L6-v2 (6 layers, 384-d): the paper's list halved in both layers and width
MINILM_PAIRS = [[1, 16], [2, 32], [3, 64], [4, 128], [5, 256], [6, 384]]

METHOD = dict(
    name="starbucks",
    paper="Starbucks: Improved Training for 2D Matryoshka Embeddings (Zhuang et al., 2024), arXiv:2410.13230",
    config_class=StarbucksConfig,
    model_classes={"base": StarbucksModel, "pretraining": StarbucksForPreTraining},
    processor="StarbucksProcessor",
    modality="text",
    presets={
        "starbucks-tiny": dict(encoder_config=dict(TINY_BERT_CONFIG, num_hidden_layers=4),
                               tokenizer_name_or_path=MINILM, max_length=128, layer_dim_pairs=TINY_PAIRS),
        # the paper's SMAE: bert-base-uncased warm start, masks 0.2 in 0.4, CLS pooling (its retrieval models)
        "starbucks-bert-base-uncased": dict(encoder_name_or_path="bert-base-uncased",
                                            encoder_config=dict(BERT_BASE_CONFIG), max_length=512),
        # warm-started from all-MiniLM-L6-v2 (no MLM head there: the head starts new), its mean pooling
        "starbucks-all-minilm-l6-v2": dict(encoder_name_or_path=MINILM, encoder_config=dict(MINILM_L6_CONFIG),
                                           tokenizer_name_or_path=MINILM, max_length=256, pooling="mean",
                                           layer_dim_pairs=MINILM_PAIRS),
    },
    # the official pretrain_smae.sh: AdamW lr 1e-4 at batch 512 (cosine, warm-up 5%), weight decay 0.001
    pretrain_base_lr=5e-5,
    pretrain_batch=512,
    pretrain_betas=(0.9, 0.999),
    pretrain_weight_decay=0.001,
)
