"""Losses shared across methods.

Remote-code rule: this file imports only the standard library and torch (see DESIGN.md).
"""

from __future__ import annotations

import torch


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the removed tokens only (MAE).

    prediction, target: (batch, tokens, dim); mask: (batch, tokens), 1 = removed. Per-token MSE is averaged over
    ``dim``, then over the removed tokens of the whole batch.
    """
    per_token = (prediction.float() - target.float()).pow(2).mean(dim=-1)
    mask = mask.to(per_token.dtype)
    return (per_token * mask).sum() / mask.sum().clamp_min(1.0)


def classification_loss(logits: torch.Tensor, labels: torch.Tensor, config) -> torch.Tensor:
    """transformers' rule: regression (MSE), single-label (cross-entropy) or multi-label (BCE) from the config's
    ``problem_type``, inferred from ``num_labels`` and the labels' dtype when unset."""
    labels = labels.to(logits.device)
    problem_type = config.problem_type
    if problem_type is None:
        if config.num_labels == 1:
            problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem_type = "single_label_classification"
        else:
            problem_type = "multi_label_classification"
    if problem_type == "regression":
        return torch.nn.functional.mse_loss(logits.squeeze(-1).float(), labels.squeeze(-1).float())
    if problem_type == "single_label_classification":
        return torch.nn.functional.cross_entropy(logits.view(-1, config.num_labels).float(), labels.view(-1))
    return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels.float())
