"""Masked token optimisation (MTO): the plug-in of "Emerging Property of Masked Token for Effective Pre-training"
(Choi, Lee, Joung, Park, Kim, Min; ECCV 2024, arXiv:2404.08330) for any method whose encoder sees mask tokens.

What the paper defines, as far as hf-mae could read it. The paper's method section and its code were *not*
reachable from this project (github.com/doihye/MTO, named in the ECCV version, could not be fetched; the arXiv
text came back as its abstract only). The sources read: the abstract (arXiv and ECCV versions), its keywords, the
project page of the third author (Seyoung Joung) and third-party summaries. They say:
- a masked token should have three properties: *spatial randomness* (masked patches drawn at random from the
  input), *substitutional consistency* (every masked patch is replaced by the same parameter at the initial
  embedding) and *data singularity* (also called "data distinctiveness"): "masked tokens in the initial embedding
  should be unique tokens that have a low likelihood of manifesting in the training data". MTO enforces the last;
- MTO "encompasses the selective exclusion of semantically inconsequential masked tokens from the weight
  aggregation process pertaining to visible tokens" (the *weight recalibration*) "and at the same time enforces
  data singularity constraints based on the depth of the layer" (project page);
- the constraints are three losses named ``L_spa``, ``L_e`` and ``L_r``, with an entropy-based measure of the
  heterogeneity of masked and visible tokens; the entropy term minimises "the entropy of each row" of the
  attention softmax, which "forces the model to focus its attention on the most salient visible tokens";
- MTO is added to the method's own objective, which it leaves unchanged, in any MIM method that feeds mask tokens
  to its encoder (SimMIM, MAE, BootMAE, ConMIM in the paper), and reaches the baselines' converged performance in
  about half the pre-training epochs.

The formulas, the loss weights and the depth schedule could not be checked: everything below that level is
**hf-mae's choice**, written so that it can be tested and switched off:

1. *Weight recalibration* (``mto_recalibration`` = gamma in [0, 1], default 0 = the paper's exclusion): in every
   encoder block, the attention weight of a visible query (a patch or a prefix token) on a masked key is multiplied
   by gamma and the row renormalised, ``A'_ij = A_ij w_j / sum_k A_ik w_k`` with ``w_j = gamma`` for masked keys j
   and 1 otherwise; gamma = 0 leaves the masked tokens out of the visible tokens' aggregation entirely, gamma = 1
   turns it off. Implemented exactly as an additive bias ``log(gamma)`` (the dtype's most negative number for 0)
   on those logits (:func:`recalibration_bias`), so it runs with the eager and sdpa kernels (flash attention takes
   no bias and is refused). Masked queries keep every key: they must gather the visible context to be restored.
   hf-mae reads "selective" as "masked keys, for visible queries", in every block.
2. Depth weights (``mto_depth_weighting``): the attention terms are averaged over the blocks with weights
   ``w_l`` proportional to ``L - l + 1`` for block l of L ("linear", the default: the first block counts L times
   the last, where the mask tokens are still the bare, inconsequential embedding) or equal ("uniform").
3. ``L_spa`` (sparsity, :func:`attention_sparsity_loss`): the share of a *masked* query's attention on masked keys,
   ``p_i = sum_{j masked} A'_ij``, averaged over the masked queries and heads, then over the blocks with ``w_l``:
   masked tokens should restore themselves from the visible data, not from other mask tokens.
4. ``L_e`` (row entropy, :func:`row_entropy_loss`): the Shannon entropy of every attention row (every query, every
   head), ``-sum_j A'_ij log A'_ij``, divided by ``log`` of the number of keys (so in [0, 1]), averaged over the
   queries and heads, then over the blocks with ``w_l``.
5. ``L_r`` (singularity of the mask token, :func:`singularity_loss`): the squared cosine between the mask token and
   each visible patch embedding (the initial embedding, before positions), averaged over the visible patches; the
   embeddings are detached, so only the mask token moves away from the data.
Total: ``L = L_method + mto_sparsity_weight * L_spa + mto_entropy_weight * L_e + mto_singularity_weight * L_r``
(0.1 each by default, hf-mae's choice). With ``use_mto=False`` none of this runs and the method is bit for bit
what it was.

Remote-code rule: this file imports only the standard library, torch, transformers and siblings (see DESIGN.md).
"""

from __future__ import annotations

import math

import torch
from transformers import PreTrainedConfig

from .base import check_choice, check_rate

MTO_LOSS_NAMES = ("sparsity", "entropy", "singularity")  # L_spa, L_e, L_r
DEPTH_WEIGHTINGS = ("linear", "uniform")


def check_weight(name: str, value) -> float:
    """A finite number >= 0 (a loss weight)."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (number and math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


class MaskedTokenOptimizationMixin(PreTrainedConfig):
    r"""The MTO fields of a method whose encoder replaces hidden patches by a mask token (a config base, as
    :class:`ViTDecoderMixin`; never registered). See the module docstring for the definitions.

    use_mto: turn MTO on (off by default: the method is then exactly as without this base).
    mto_recalibration: gamma in [0, 1], the factor on a visible query's attention weights on masked keys (then
        renormalised); 0 = the paper's exclusion of masked tokens from the visible tokens' aggregation (default),
        1 = no recalibration.
    mto_sparsity_weight, mto_entropy_weight, mto_singularity_weight: the weights of L_spa, L_e and L_r, each >= 0.
        hf-mae's choice: 0.1 each. L_spa and L_e read the encoder's attention weights, so while either weight is
        non-zero the encoder attends with the eager kernel during pre-training.
    mto_depth_weighting: how L_spa and L_e weight the blocks: "linear" (block l of L by L - l + 1, hf-mae's reading
        of "constraints based on the depth of the layer") or "uniform".
    """

    use_mto: bool = False
    mto_recalibration: float = 0.0
    mto_sparsity_weight: float = 0.1
    mto_entropy_weight: float = 0.1
    mto_singularity_weight: float = 0.1
    mto_depth_weighting: str = "linear"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if not isinstance(self.use_mto, bool):
            raise ValueError(f"use_mto must be True or False, got {self.use_mto!r}")
        check_rate("mto_recalibration", self.mto_recalibration, closed=True)
        for name in MTO_LOSS_NAMES:
            check_weight(f"mto_{name}_weight", getattr(self, f"mto_{name}_weight"))
        check_choice("mto_depth_weighting", self.mto_depth_weighting, DEPTH_WEIGHTINGS)

    @property
    def mto_needs_attentions(self) -> bool:
        """True when MTO is on and L_spa or L_e has a weight: the encoder must return its attention weights."""
        return self.use_mto and bool(self.mto_sparsity_weight or self.mto_entropy_weight)


def _token_masked(mask: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
    """(batch, N) mask, 1 = hidden -> (batch, P + N) float, 1 where the token is the mask token (prefix tokens are
    not)."""
    return torch.nn.functional.pad(mask.float(), (num_prefix_tokens, 0))


def recalibration_bias(
    mask: torch.Tensor, factor: float, num_prefix_tokens: int = 1, dtype: torch.dtype = torch.float32
) -> torch.Tensor | None:
    """The additive attention bias of the weight recalibration, (batch, 1, P + N, P + N): ``log(factor)`` where the
    query is visible (a prefix token or a visible patch) and the key a masked patch, 0 elsewhere; None when
    ``factor`` is 1 (nothing to do). ``factor`` 0 gives the dtype's most negative number (the weight becomes 0).

    mask: (batch, N), 1 = the patch is the mask token. Adding the bias to the logits multiplies those softmax weights
    by ``factor`` and renormalises each row: ``A'_ij = A_ij w_j / sum_k A_ik w_k``.
    """
    check_rate("factor", factor, closed=True)
    if factor == 1.0:
        return None
    masked = _token_masked(mask, num_prefix_tokens)  # (batch, T)
    value = math.log(factor) if factor > 0 else torch.finfo(dtype).min
    pairs = (1.0 - masked)[:, :, None] * masked[:, None, :]  # query visible x key masked
    return (pairs * value).to(dtype).unsqueeze(1)


def depth_weights(num_blocks: int, weighting: str = "linear") -> torch.Tensor:
    """(num_blocks,) weights summing to 1: proportional to ``L - l + 1`` for block l ("linear") or equal."""
    check_choice("weighting", weighting, DEPTH_WEIGHTINGS)
    raw = torch.arange(num_blocks, 0, -1, dtype=torch.float32) if weighting == "linear" else torch.ones(num_blocks)
    return raw / raw.sum()


def _check_attentions(attentions) -> None:
    if not attentions:
        raise ValueError("attentions must hold the attention weights of at least one block (eager attention)")


def masked_key_share(attentions, mask: torch.Tensor, num_prefix_tokens: int = 1) -> torch.Tensor:
    """The share of every query's attention that lands on masked keys, ``p_i = sum_{j masked} A_ij``.

    attentions: per block (batch, heads, P + N, P + N) softmax weights; mask: (batch, N), 1 = hidden.
    Returns (blocks, batch, heads, P + N) in float32.
    """
    _check_attentions(attentions)
    key_masked = _token_masked(mask, num_prefix_tokens)  # (batch, T)
    return torch.stack([(weights.float() * key_masked[:, None, None, :]).sum(-1) for weights in attentions])


def _depth_weighted_mean(values: torch.Tensor, query_weight: torch.Tensor, weighting: str) -> torch.Tensor:
    """values (blocks, batch, heads, T), query_weight (batch, T) in {0, 1} -> per block the mean over the selected
    queries (and the heads), then the blocks weighted by :func:`depth_weights`. 0 when no query is selected."""
    weight = query_weight[None, :, None, :].expand_as(values)
    per_block = (values * weight).sum(dim=(1, 2, 3)) / weight[0].sum().clamp_min(1.0)
    return (per_block * depth_weights(values.shape[0], weighting).to(values.device)).sum()


def attention_sparsity_loss(
    share: torch.Tensor, mask: torch.Tensor, num_prefix_tokens: int = 1, weighting: str = "linear"
) -> torch.Tensor:
    """L_spa: the share of attention on masked keys (from :func:`masked_key_share`) of the *masked* queries, averaged
    over them and the heads, then over the blocks with :func:`depth_weights`; in [0, 1]."""
    return _depth_weighted_mean(share, _token_masked(mask, num_prefix_tokens), weighting)


def row_entropy(attentions) -> torch.Tensor:
    """The Shannon entropy of every attention row divided by ``log(keys)`` (so in [0, 1]): (blocks, batch, heads, T)."""
    _check_attentions(attentions)
    rows = []
    for weights in attentions:
        weights = weights.float()
        # w log w with the log clamped: excluded weights are exactly 0, where xlogy's gradient (log w + 1) is
        # -inf and turns the softmax's backward into NaN
        rows.append(-(weights * weights.clamp_min(1e-12).log()).sum(-1) / math.log(weights.shape[-1]))
    return torch.stack(rows)


def row_entropy_loss(attentions, weighting: str = "linear") -> torch.Tensor:
    """L_e: :func:`row_entropy` averaged over every query (visible, masked and prefix) and head, then over the blocks
    with :func:`depth_weights`."""
    entropy = row_entropy(attentions)
    every_query = torch.ones(entropy.shape[1], entropy.shape[-1], device=entropy.device)
    return _depth_weighted_mean(entropy, every_query, weighting)


def singularity_loss(mask_token: torch.Tensor, patch_embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L_r: the mean squared cosine similarity between the mask token (hidden,) or (1, 1, hidden) and the visible
    patch embeddings (batch, N, hidden) (mask (batch, N), 1 = hidden); the embeddings are detached, so only the mask
    token gets a gradient. 0 when no patch is visible."""
    token = torch.nn.functional.normalize(mask_token.reshape(1, 1, -1).float(), dim=-1)
    data = torch.nn.functional.normalize(patch_embeddings.detach().float(), dim=-1)
    cosine = (data * token).sum(-1)  # (batch, N)
    visible = 1.0 - mask.float()
    return (cosine.pow(2) * visible).sum() / visible.sum().clamp_min(1.0)


def mto_objectives(
    config,
    mask: torch.Tensor,
    mask_token: torch.Tensor,
    patch_embeddings: torch.Tensor,
    attentions=None,
    num_prefix_tokens: int = 1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MTO's added loss for a config with :class:`MaskedTokenOptimizationMixin`'s fields.

    mask: (batch, N), 1 = the mask token; mask_token: the learned token; patch_embeddings: (batch, N, hidden) the
    patch embeddings before the mask token and positions; attentions: per encoder block (batch, heads, P + N, P + N),
    needed when ``config.mto_needs_attentions``.
    Returns ``(weighted sum, {"sparsity": L_spa, "entropy": L_e, "singularity": L_r})`` (the terms unweighted;
    a term with weight 0 is not computed and absent from the dict).
    """
    terms, weighting = {}, config.mto_depth_weighting
    if config.mto_sparsity_weight:
        share = masked_key_share(attentions, mask, num_prefix_tokens)
        terms["sparsity"] = attention_sparsity_loss(share, mask, num_prefix_tokens, weighting)
    if config.mto_entropy_weight:
        terms["entropy"] = row_entropy_loss(attentions, weighting)
    if config.mto_singularity_weight:
        terms["singularity"] = singularity_loss(mask_token, patch_embeddings, mask)
    total = sum((getattr(config, f"mto_{name}_weight") * value for name, value in terms.items()),
                torch.zeros((), device=mask.device))  # fmt: skip
    return total, terms


__all__ = [
    "MaskedTokenOptimizationMixin",
    "recalibration_bias",
    "depth_weights",
    "masked_key_share",
    "attention_sparsity_loss",
    "row_entropy",
    "row_entropy_loss",
    "singularity_loss",
    "mto_objectives",
]
