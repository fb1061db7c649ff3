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
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, PreTrainedConfig, PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask
from transformers.utils import ModelOutput

from .base import check_choice, check_int, check_rate

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


class StarbucksConfig(PreTrainedConfig):
    r"""Configuration of a Starbucks model: a transformers BERT-family backbone plus the 2D Matryoshka settings.

    backbone_name_or_path: the backbone to warm-start from (a Hub id or folder that ``AutoModelForMaskedLM`` loads;
        a folder without an MLM head gets a freshly initialised one).
    backbone_config: instead, a config dict (with ``model_type``) of a randomly initialised backbone (tests, tiny).
    backbone_seed: seed of that random initialisation.
    layer_dim_pairs: the (layer, dim) pairs trained and served, ``layer`` counted from 1 (``hidden_states[layer]``),
        ``dim`` the leading dimensions kept; the paper's ((2, 32), (4, 64), (6, 128), (8, 256), (10, 512), (12, 768)).
    encoder_mask_ratio: share of the words masked for the encoder's MLM (0.2, the paper's ``mlm_probability``).
    decoder_mask_ratio: share masked for the decoder (0.4, ``decoder_mlm_probability``); the encoder's masked words
        are a subset of the decoder's.
    pooling: how ``StarbucksModel`` pools a layer's tokens into one embedding: "cls" (the paper's retrieval
        models) or "mean" over the non-padding tokens (its STS models, and all-MiniLM's); hf-mae's choice of default:
        "cls".
    """

    model_type = "starbucks"

    backbone_name_or_path: str | None = None
    backbone_config: dict | None = None
    backbone_seed: int = 0
    layer_dim_pairs: list | tuple = BASE_LAYER_DIM_PAIRS
    encoder_mask_ratio: float = 0.2
    decoder_mask_ratio: float = 0.4
    pooling: str = "cls"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        self.layer_dim_pairs = check_layer_dim_pairs("layer_dim_pairs", self.layer_dim_pairs)
        check_rate("encoder_mask_ratio", self.encoder_mask_ratio)
        check_rate("decoder_mask_ratio", self.decoder_mask_ratio)
        if self.encoder_mask_ratio > self.decoder_mask_ratio:
            raise ValueError(
                f"encoder_mask_ratio ({self.encoder_mask_ratio}) must not exceed decoder_mask_ratio "
                f"({self.decoder_mask_ratio}): the encoder's masked words are a subset of the decoder's"
            )
        check_choice("pooling", self.pooling, ("cls", "mean"))
        check_int("backbone_seed", self.backbone_seed, minimum=0)


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


def build_backbone(config: StarbucksConfig, auto_class=AutoModelForMaskedLM) -> PreTrainedModel:
    """The backbone a config describes: randomly initialised from ``backbone_config`` and ``backbone_seed``, else
    ``auto_class.from_pretrained(backbone_name_or_path)``."""
    if config.backbone_config is not None:
        settings = dict(config.backbone_config)
        backbone_config = AutoConfig.for_model(settings.pop("model_type"), **settings)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.backbone_seed)
            return auto_class.from_config(backbone_config)
    if config.backbone_name_or_path is None:
        raise ValueError("StarbucksConfig needs a backbone: set backbone_name_or_path or backbone_config")
    return auto_class.from_pretrained(config.backbone_name_or_path)


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
    pair_losses: (pairs, 2) the MLM and the MAE cross-entropy of each (layer, dim) pair, in the config's order.
    hidden_states: the backbone's hidden states (embeddings, then each layer), each (batch, length, hidden).
    """

    loss: torch.Tensor | None = None
    pair_losses: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass
class StarbucksModelOutput(ModelOutput):
    """
    last_hidden_state: (batch, length, dim) the first ``dim`` dimensions of the output of layer ``layer``.
    pooler_output: (batch, dim) that layer's pooled embedding (CLS or mean, ``config.pooling``), cut to ``dim``.
    """

    last_hidden_state: torch.Tensor | None = None
    pooler_output: torch.Tensor | None = None


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """(batch, length, d) -> (batch, d): the first token, or the mean over the non-padding tokens."""
    if pooling == "cls":
        return hidden[:, 0]
    if attention_mask is None:
        return hidden.mean(dim=1)
    weights = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


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
