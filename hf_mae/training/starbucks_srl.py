"""Starbucks Representation Learning (SRL): the fine-tuning loss of Starbucks (arXiv:2410.13230) as a
sentence-transformers loss.

For a batch of (anchor, positive[, negative ...]) texts, every (layer, dim) pair of a fixed list gives a
sub-embedding: the model's pooling (its ``Pooling`` module, mean or CLS) applied to ``hidden_states[layer]``, cut to
the first ``dim`` dimensions and L2-normalised. With ``s_p`` the (batch, batch * (columns - 1)) cosine scores of the
anchors against every positive and negative of the batch at pair ``p`` and ``F`` the full model (last layer, full
width):

    loss = CE(scale * s_F, diag) + sum over p != F of [ CE(scale * s_p, diag)
                                                        + kl_weight * KL(softmax(s_F / T) || softmax(s_p / T)) ]

CE is sentence-transformers' ``MultipleNegativesRankingLoss`` (in-batch negatives, ``scale`` 20, the i-th anchor's
positive is column i), the KL's target ``softmax(s_F / T)`` is detached (the full model teaches, as in the official
``retrieval/modeling.py``), ``KL`` is the batch mean of the per-anchor divergences.

Departures from / choices beyond the official code (``retrieval/modeling.py`` for retrieval, ``sts/starbucks_loss.py``
for STS):
- every pair of the list each step (the official retrieval model's ``sub_model_sampling=False`` mode, the one the
  paper's SRL uses); the terms are summed, as there;
- cosine scores on each re-normalised sub-embedding (MultipleNegativesRankingLoss's), where the retrieval code
  normalises the full embedding and takes dot products of its prefixes; hf-mae's choice, so that the loss matches the
  cosine scoring the embeddings are evaluated with and sentence-transformers' ``Matryoshka2dLoss``;
- ``kl_temperature`` defaults to ``1 / scale`` (0.05): the KL compares the very distributions the CE trains, as the
  retrieval code does with its single temperature (the STS code instead softmaxes the embedding vectors themselves,
  as ``AdaptiveLayerLoss`` does);
- the KL is over score distributions, the retrieval code's form, for every base loss we offer (only
  MultipleNegativesRankingLoss's form is implemented).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..modeling.starbucks import check_layer_dim_pairs


def contrastive_scores(columns: list[Tensor]) -> Tensor:
    """(batch, batch * (len(columns) - 1)) cosine scores of the anchors (``columns[0]``) against every positive and
    negative of the batch (``torch.cat(columns[1:])``); the i-th anchor's positive is column i."""
    anchors = F.normalize(columns[0], dim=-1)
    candidates = F.normalize(torch.cat(columns[1:]), dim=-1)
    return anchors @ candidates.T


def srl_loss(
    scores: dict[tuple[int, int], Tensor],
    full: tuple[int, int],
    scale: float = 20.0,
    kl_weight: float = 1.0,
    kl_temperature: float | None = None,
) -> tuple[Tensor, dict[tuple[int, int], Tensor]]:
    """SRL from each pair's cosine score matrix (``contrastive_scores``); ``scores[full]`` is the full model's.
    Returns (the loss, each pair's own term: CE, plus the weighted KL for the pairs other than ``full``)."""
    temperature = 1.0 / scale if kl_temperature is None else kl_temperature
    target = torch.arange(scores[full].shape[0], device=scores[full].device)
    teacher = F.softmax(scores[full].detach().float() / temperature, dim=-1)
    terms = {}
    for pair, pair_scores in scores.items():
        term = F.cross_entropy(scale * pair_scores.float(), target)
        if pair != full and kl_weight > 0:
            log_student = F.log_softmax(pair_scores.float() / temperature, dim=-1)
            term = term + kl_weight * F.kl_div(log_student, teacher, reduction="batchmean")
        terms[pair] = term
    return torch.stack(list(terms.values())).sum(), terms


class StarbucksSRLLoss(nn.Module):
    """SRL over every (layer, dim) pair of ``layer_dim_pairs`` for a ``SentenceTransformer`` whose first module is a
    ``Transformer`` (a BERT-family encoder) followed by its pooling; inputs (anchor, positive[, negatives ...]).

    model: the ``SentenceTransformer`` being trained.
    layer_dim_pairs: the (layer, dim) pairs, ``layer`` counted from 1 (``hidden_states[layer]``); the full model
        (last layer, full width) is always trained and is the KL's teacher, whether listed or not.
    scale: the scores' scale in the cross-entropy (MultipleNegativesRankingLoss's 20, a temperature of 0.05).
    kl_weight: weight of each pair's KL term (1, the official retrieval recipe; 0 switches it off).
    kl_temperature: the softmax temperature of both KL distributions (default ``1 / scale``).
    """

    def __init__(
        self,
        model: nn.Module,
        layer_dim_pairs,
        scale: float = 20.0,
        kl_weight: float = 1.0,
        kl_temperature: float | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        transformer = model[0]
        auto_model = getattr(transformer, "auto_model", None)
        if auto_model is None:
            raise TypeError(
                f"StarbucksSRLLoss needs a SentenceTransformer whose first module is a Transformer, got "
                f"{type(transformer).__name__} first"
            )
        config = auto_model.config
        self.num_layers, self.hidden_size = config.num_hidden_layers, config.hidden_size
        self.layer_dim_pairs = [tuple(p) for p in check_layer_dim_pairs(
            "layer_dim_pairs", layer_dim_pairs, self.num_layers, self.hidden_size)]
        self.full = (self.num_layers, self.hidden_size)
        for name, value in (("scale", scale), ("kl_weight", kl_weight)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (
                    name == "scale" and value == 0):
                raise ValueError(f"{name} must be a {'positive' if name == 'scale' else 'non-negative'} number, "
                                 f"got {value!r}")
        if kl_temperature is not None and not (isinstance(kl_temperature, (int, float)) and kl_temperature > 0):
            raise ValueError(f"kl_temperature must be a positive number or None (1 / scale), got {kl_temperature!r}")
        self.scale, self.kl_weight, self.kl_temperature = float(scale), float(kl_weight), kl_temperature
        self.last_terms: dict[tuple[int, int], float] = {}

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """The full model first, then the listed pairs other than it."""
        return [self.full] + [p for p in self.layer_dim_pairs if p != self.full]

    def pair_embeddings(self, features: dict[str, Tensor]) -> dict[tuple[int, int], Tensor]:
        """One text column's tokenised features -> {(layer, dim): (batch, dim) un-normalised sub-embeddings}."""
        transformer = self.model[0]
        config = transformer.auto_model.config
        original = config.output_hidden_states
        try:
            config.output_hidden_states = True  # the Transformer module then returns all_layer_embeddings
            output = transformer(dict(features))
        finally:
            config.output_hidden_states = original
        layers = output["all_layer_embeddings"]
        pooled = {}
        for layer in sorted({layer for layer, _ in self.pairs}):
            # the model's own modules after the Transformer (Pooling, and Normalize if any) on that layer's tokens
            layer_features = {**output, "token_embeddings": layers[layer]}
            for module in list(self.model.children())[1:]:
                layer_features = module(layer_features)
            pooled[layer] = layer_features["sentence_embedding"]
        return {(layer, dim): pooled[layer][:, :dim] for layer, dim in self.pairs}

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Tensor:
        columns = [self.pair_embeddings(features) for features in sentence_features]
        if len(columns) < 2:
            raise ValueError(f"StarbucksSRLLoss needs (anchor, positive[, negatives]) columns, got {len(columns)}")
        scores = {pair: contrastive_scores([column[pair] for column in columns]) for pair in self.pairs}
        loss, terms = srl_loss(scores, self.full, self.scale, self.kl_weight, self.kl_temperature)
        self.last_terms = {pair: float(term.detach()) for pair, term in terms.items()}
        return loss

    def get_config_dict(self) -> dict:
        return {
            "layer_dim_pairs": [list(p) for p in self.layer_dim_pairs], "scale": self.scale,
            "kl_weight": self.kl_weight, "kl_temperature": self.kl_temperature,
        }
