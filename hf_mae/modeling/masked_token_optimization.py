"""Masked token optimisation (MTO): the plug-in of "Emerging Property of Masked Token for Effective Pre-training"
(Choi, Lee, Joung, Park, Kim, Min; ECCV 2024, arXiv:2404.08330) for any method whose encoder sees mask tokens.

What the paper says, as far as hf-mae could read it (no official code exists; the method section of the paper was
not reachable from this project's sources, only the abstract, the keywords and third-party summaries of the paper):
- a masked token should have three properties: *spatial randomness* (masked positions drawn at random),
  *substitutional consistency* (every hidden patch is replaced by the same learned parameters) and *data
  singularity*: the mask token is not data, so it should be distinct from, and barely correlated with, the visible
  tokens, lest it confuse their attention. MTO enforces the last one.
- the heterogeneity between masked and visible tokens is measured with an entropy ("Entropy Heterogeneity" is a
  keyword of the paper);
- MTO = *weight recalibration* plus three losses named ``L_spa``, ``L_e`` and ``L_r``, added to the method's own
  objective, with the method itself unchanged; it plugs into any MIM method that feeds mask tokens to its encoder
  (SimMIM, MAE's decoder, BootMAE, ConMIM in the paper) and reaches the baselines' converged performance in about
  half the pre-training epochs.

The paper's exact formulas and loss weights could not be checked. Everything below the level of those names is
**hf-mae's choice**, a reading of "data singularity" that can be written down, tested and switched off:

1. *Weight recalibration* (``mto_recalibration`` = gamma in [0, 1]): in every encoder block, the attention weight of
   a visible query (a patch token or a prefix token) on a masked key is multiplied by gamma and the row renormalised:
   ``A'_ij = A_ij w_j / sum_k A_ik w_k`` with ``w_j = gamma`` for masked keys j and 1 otherwise. It is implemented
   exactly as an additive bias ``log(gamma)`` on those attention logits (:func:`recalibration_bias`), so it works
   with the eager and sdpa kernels (not flash attention, which takes no bias). Masked queries are left alone: they
   must gather the visible context to be reconstructed. gamma = 1 turns it off, gamma = 0 cuts the masked tokens
   out of the visible tokens' attention entirely.
2. ``L_spa`` (attention sparsity, :func:`attention_sparsity_loss`): the share of a visible query's attention that
   lands on masked keys, ``p_i = sum_{j masked} A'_ij``, averaged over visible queries, heads and blocks. Driving it
   to 0 makes the visible tokens' attention sparse on the masked positions.
3. ``L_e`` (entropy heterogeneity, :func:`group_entropy_loss`): the binary entropy of that split,
   ``h(p_i) = -(p_i log p_i + (1 - p_i) log(1 - p_i)) / log 2`` in [0, 1], averaged the same way: it is 1 when a
   visible token cannot tell masked from visible keys (p = 0.5) and 0 when it attends to one kind only; it
   sharpens the separation that ``L_spa`` starts (its gradient grows as p nears 0, where ``L_spa``'s stays flat).
4. ``L_r`` (singularity of the mask token, :func:`singularity_loss`): the squared cosine between the mask token and
   each visible patch embedding (before positions), averaged over the visible patches; the embeddings are detached,
   so only the mask token moves away from the data (a decorrelation target, as "minimal correlation with the visible
   tokens").
Total: ``L = L_method + mto_sparsity_weight * L_spa + mto_entropy_weight * L_e + mto_singularity_weight * L_r``
(0.1 each and gamma = 0.5 by default, hf-mae's choice). With ``use_mto=False`` none of this runs and the method is
bit for bit what it was.

Remote-code rule: this file imports only the standard library, torch, transformers and siblings (see DESIGN.md).
"""

from __future__ import annotations

import math

import torch
from transformers import PreTrainedConfig

from .base import check_rate

MTO_LOSS_NAMES = ("sparsity", "entropy", "singularity")  # L_spa, L_e, L_r


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
        renormalised); 1 = no recalibration, 0 = visible tokens never attend to masked ones. hf-mae's choice: 0.5.
    mto_sparsity_weight, mto_entropy_weight, mto_singularity_weight: the weights of L_spa, L_e and L_r, each >= 0.
        hf-mae's choice: 0.1 each. L_spa and L_e read the encoder's attention weights, so while either weight is
        non-zero the encoder attends with the eager kernel during pre-training.
    """

    use_mto: bool = False
    mto_recalibration: float = 0.5
    mto_sparsity_weight: float = 0.1
    mto_entropy_weight: float = 0.1
    mto_singularity_weight: float = 0.1

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if not isinstance(self.use_mto, bool):
            raise ValueError(f"use_mto must be True or False, got {self.use_mto!r}")
        check_rate("mto_recalibration", self.mto_recalibration, closed=True)
        for name in MTO_LOSS_NAMES:
            check_weight(f"mto_{name}_weight", getattr(self, f"mto_{name}_weight"))

    @property
    def mto_needs_attentions(self) -> bool:
        """True when MTO is on and L_spa or L_e has a weight: the encoder must return its attention weights."""
        return self.use_mto and bool(self.mto_sparsity_weight or self.mto_entropy_weight)


def _query_visible(mask: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
    """(batch, N) mask, 1 = hidden -> (batch, P + N) 1 where the token is visible (prefix tokens are)."""
    return 1.0 - torch.nn.functional.pad(mask.float(), (num_prefix_tokens, 0))


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
    visible = _query_visible(mask, num_prefix_tokens)  # (batch, T)
    value = math.log(factor) if factor > 0 else torch.finfo(dtype).min
    pairs = visible[:, :, None] * (1.0 - visible)[:, None, :]  # query visible x key masked
    return (pairs * value).to(dtype).unsqueeze(1)


def masked_key_share(attentions, mask: torch.Tensor, num_prefix_tokens: int = 1) -> torch.Tensor:
    """The share of every query's attention that lands on masked keys, ``p_i = sum_{j masked} A_ij``.

    attentions: per block (batch, heads, P + N, P + N) softmax weights; mask: (batch, N), 1 = hidden.
    Returns (blocks, batch, heads, P + N) in float32.
    """
    if not attentions:
        raise ValueError("attentions must hold the attention weights of at least one block (eager attention)")
    key_masked = 1.0 - _query_visible(mask, num_prefix_tokens)  # (batch, T)
    return torch.stack([(weights.float() * key_masked[:, None, None, :]).sum(-1) for weights in attentions])


def _mean_over_visible_queries(values: torch.Tensor, mask: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
    """values (blocks, batch, heads, T) -> their mean over the visible queries, the heads and the blocks."""
    weight = _query_visible(mask, num_prefix_tokens)[None, :, None, :].expand_as(values)
    return (values * weight).sum() / weight.sum()


def attention_sparsity_loss(share: torch.Tensor, mask: torch.Tensor, num_prefix_tokens: int = 1) -> torch.Tensor:
    """L_spa: the mean share of attention on masked keys (from :func:`masked_key_share`) over the visible queries,
    heads and blocks, in [0, 1]."""
    return _mean_over_visible_queries(share, mask, num_prefix_tokens)


def group_entropy_loss(
    share: torch.Tensor, mask: torch.Tensor, num_prefix_tokens: int = 1, eps: float = 1e-6
) -> torch.Tensor:
    """L_e: the binary entropy (in bits, so in [0, 1]) of each visible query's split of attention between masked
    and visible keys, ``-(p log p + (1 - p) log(1 - p)) / log 2`` with p clamped to [eps, 1 - eps], averaged over the
    visible queries, heads and blocks."""
    p = share.clamp(eps, 1.0 - eps)
    entropy = -(p * p.log() + (1.0 - p) * (1.0 - p).log()) / math.log(2.0)
    return _mean_over_visible_queries(entropy, mask, num_prefix_tokens)


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
    terms = {}
    if config.mto_needs_attentions:
        share = masked_key_share(attentions, mask, num_prefix_tokens)
        if config.mto_sparsity_weight:
            terms["sparsity"] = attention_sparsity_loss(share, mask, num_prefix_tokens)
        if config.mto_entropy_weight:
            terms["entropy"] = group_entropy_loss(share, mask, num_prefix_tokens)
    if config.mto_singularity_weight:
        terms["singularity"] = singularity_loss(mask_token, patch_embeddings, mask)
    total = sum((getattr(config, f"mto_{name}_weight") * value for name, value in terms.items()),
                torch.zeros((), device=mask.device))  # fmt: skip
    return total, terms


__all__ = [
    "MaskedTokenOptimizationMixin",
    "recalibration_bias",
    "masked_key_share",
    "attention_sparsity_loss",
    "group_entropy_loss",
    "singularity_loss",
    "mto_objectives",
]
