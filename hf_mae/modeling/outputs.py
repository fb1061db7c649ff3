"""ModelOutput dataclasses shared across methods. Shapes are given for image models; other modalities replace
"patches" by their tokens.

Remote-code rule: this file imports only the standard library, torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class MaskedEncoderOutput(ModelOutput):
    """
    last_hidden_state: (batch, 1 + kept_tokens, hidden) encoder output of the cls token and the visible tokens
        (all tokens, in order, when mask_ratio=0).
    mask: (batch, num_tokens), 1 = removed from the encoder's input.
    ids_restore: (batch, num_tokens) permutation that puts the tokens back in order (see masking.TokenMask).
    hidden_states: per layer (batch, 1 + kept_tokens, hidden), when output_hidden_states.
    attentions: per layer (batch, heads, 1 + kept_tokens, 1 + kept_tokens), when output_attentions.
    pooler_output: (batch, hidden) one feature per sample (what ``pipeline("image-feature-extraction", pool=True)``
        returns): see :func:`pool_tokens`; last, so the tuple positions of the fields above stay as they were.
    """

    last_hidden_state: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    ids_restore: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None
    pooler_output: torch.Tensor | None = None


@dataclass
class MaskedPreTrainingOutput(ModelOutput):
    """
    loss: scalar reconstruction loss over the removed tokens.
    logits: (batch, num_tokens, target_dim) decoder predictions for every token, in the original order.
    mask, ids_restore, hidden_states, attentions: as in MaskedEncoderOutput (from the encoder).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    ids_restore: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


def pool_tokens(last_hidden_state: torch.Tensor, pooling: str = "mean", has_cls_token: bool = True) -> torch.Tensor:
    """(batch, tokens, hidden) -> (batch, hidden): the mean of the patch tokens (the cls token, if any, left out),
    or with ``pooling="cls"`` the cls token, matching how the method's classifier pools
    (``config.classifier_pooling``)."""
    if pooling == "cls" and has_cls_token:
        return last_hidden_state[:, 0]
    return last_hidden_state[:, int(has_cls_token) :].mean(dim=1)
