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


def masked_sample_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """MultiMAE's reduction of a per-token loss (batch, tokens) over the removed tokens (``mask`` 1): the mean over
    each sample's removed tokens, then the mean over the samples that have any (the official ``nanmean``: a sample
    whose modality is fully visible adds nothing). 0 when no sample has a removed token."""
    mask = mask.to(per_token.dtype)
    counts = mask.sum(dim=1)
    per_sample = (per_token * mask).sum(dim=1) / counts.clamp_min(1.0)
    has_any = (counts > 0).to(per_token.dtype)
    return (per_sample * has_any).sum() / has_any.sum().clamp_min(1.0)


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


def info_nce(queries: torch.Tensor, keys: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE (CLIP's loss): row i of ``queries`` and row i of ``keys`` (each (batch, dim)) are a positive
    pair, every other row of the batch a negative. Embeddings are L2-normalised, similarities divided by
    ``temperature``; the loss is the mean of the query->key and key->query cross-entropies.
    Returns (loss, accuracy): accuracy is the share of queries whose most similar key is their own (top-1
    within-batch retrieval; chance 1 / batch)."""
    queries = torch.nn.functional.normalize(queries.float(), dim=-1)
    keys = torch.nn.functional.normalize(keys.float(), dim=-1)
    logits = queries @ keys.T / temperature
    labels = torch.arange(logits.shape[0], device=logits.device)
    loss = (torch.nn.functional.cross_entropy(logits, labels) + torch.nn.functional.cross_entropy(logits.T, labels)) / 2
    accuracy = (logits.argmax(dim=1) == labels).float().mean()
    return loss, accuracy


def nt_xent(view_1: torch.Tensor, view_2: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SimCLR's NT-Xent: the 2 * batch embeddings of two views (each (batch, dim)) are compared with each other; the
    positive of a sample is its other view, the negatives the 2 * batch - 2 remaining embeddings (self-similarity
    excluded). Returns (loss, accuracy): accuracy is the share of the 2 * batch embeddings whose nearest other
    embedding is their other view (chance 1 / (2 * batch - 1))."""
    batch = view_1.shape[0]
    z = torch.nn.functional.normalize(torch.cat([view_1, view_2]).float(), dim=-1)
    logits = (z @ z.T / temperature).fill_diagonal_(float("-inf"))
    labels = torch.arange(2 * batch, device=z.device).roll(batch)  # i <-> i + batch
    loss = torch.nn.functional.cross_entropy(logits, labels)
    accuracy = (logits.argmax(dim=1) == labels).float().mean()
    return loss, accuracy


def chamfer_l2(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Chamfer-L2 between point sets, per set: ``mean_i min_j |p_i - g_j|^2 + mean_j min_i |g_j - p_i|^2`` with
    squared distances (Point-MAE's ``ChamferDistanceL2``). prediction (sets, P, 3), target (sets, Q, 3) -> (sets,)."""
    distance = torch.cdist(prediction.float(), target.float()).pow(2)
    return distance.min(dim=2).values.mean(dim=1) + distance.min(dim=1).values.mean(dim=1)


def scaled_cosine_error(x: torch.Tensor, z: torch.Tensor, alpha: float = 3.0) -> torch.Tensor:
    """GraphMAE's scaled cosine error: ``mean_i (1 - cos(x_i, z_i))^alpha`` over the rows of x, z (nodes, dim);
    alpha >= 1 down-weights rows that are already well reconstructed. Rows are L2-normalised as F.normalize does
    (eps 1e-12, so an all-zero row has cosine 0 with anything)."""
    x = torch.nn.functional.normalize(x.float(), dim=-1)
    z = torch.nn.functional.normalize(z.float(), dim=-1)
    # rounding can push a cosine just above 1; clamp so a fractional alpha never meets a negative base
    return (1 - (x * z).sum(dim=-1)).clamp_min(0).pow(alpha).mean()


# Feature-distillation losses between a student's projected tokens and a frozen teacher's (DMAE, MR-MAE).
FEATURE_LOSSES = ("l1_normalized", "mse_layernorm", "cosine")


def normalized_l1(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DMAE's distillation loss: ``mean |normalize(target) - normalize(prediction)|`` with each token L2-normalised
    over its features (``F.normalize``, eps 1e-12) and the mean taken over every element, as ``nn.L1Loss`` does.
    prediction, target: (..., dim)."""
    prediction = torch.nn.functional.normalize(prediction.float(), dim=-1)
    target = torch.nn.functional.normalize(target.float(), dim=-1)
    return (target - prediction).abs().mean()


def feature_distillation_loss(
    prediction: torch.Tensor, target: torch.Tensor, kind: str = "l1_normalized"
) -> torch.Tensor:
    """A student's projected features against a teacher's, both (..., dim), the teacher's detached:

    - ``"l1_normalized"``: :func:`normalized_l1` (DMAE);
    - ``"mse_layernorm"``: the MSE between the prediction and the target standardised per token (a LayerNorm
      without affine, eps 1e-6), the usual feature-distillation target (MaskDistill, data2vec);
    - ``"cosine"``: the mean over tokens of ``1 - cos(prediction, target)``.
    """
    target = target.detach().float()
    prediction = prediction.float()
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target {tuple(target.shape)} must have one shape")
    if kind == "l1_normalized":
        return normalized_l1(prediction, target)
    if kind == "mse_layernorm":
        target = torch.nn.functional.layer_norm(target, target.shape[-1:], eps=1e-6)
        return (prediction - target).pow(2).mean()
    if kind == "cosine":
        return (1 - torch.nn.functional.cosine_similarity(prediction, target, dim=-1)).mean()
    raise ValueError(f"kind must be one of {', '.join(map(repr, FEATURE_LOSSES))}; got {kind!r}")


def attention_kl(teacher: torch.Tensor, student: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """KL(teacher || student) between attention maps (..., queries, keys) whose rows are distributions, summed over
    the keys and averaged over every other axis (heads, queries, batch): the relation-distillation loss of MiniLM /
    Hybrid Distill. ``student`` is clamped to ``eps`` inside the log; teacher zeros contribute nothing."""
    teacher, student = teacher.float(), student.float()
    log_ratio = torch.log(teacher.clamp_min(eps)) - torch.log(student.clamp_min(eps))
    return torch.where(teacher > 0, teacher * log_ratio, 0.0).sum(dim=-1).mean()


def token_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Cross-entropy of (batch, L, V) ``logits`` against (batch, L) ``labels``, averaged over the labelled tokens of
    the whole batch (transformers' masked-LM loss), in float32; 0 (with a gradient path) when no token is labelled,
    where torch's mean would be NaN."""
    flat = logits.reshape(-1, logits.shape[-1]).float()
    targets = labels.reshape(-1)
    total = torch.nn.functional.cross_entropy(flat, targets, ignore_index=ignore_index, reduction="sum")
    return total / (targets != ignore_index).sum().clamp(min=1)


def bag_of_words_loss(logits: torch.Tensor, token_ids: torch.Tensor, positions: torch.Tensor,
                      pad_shift: float = -1000.0) -> torch.Tensor:
    """DupMAE's bag-of-words loss: ``mean_b( -sum_v w_v log softmax(o_b)_v )``.

    logits: (batch, L, V) MLM logits; token_ids: (batch, L) the input's original ids; positions: (batch, L) bool, the
    ordinary tokens (no special, no padding). ``o_b`` is the max over the ordinary positions of the logits, the
    others pushed down by ``pad_shift`` first (RetroMAE's code: -1000); ``w_v = 1 / n_b`` for every id in the
    input's n_b ordinary tokens, a repeated id counted once (its weight is not summed)."""
    shift = (~positions).to(logits.dtype).unsqueeze(-1) * pad_shift
    pooled = (logits.float() + shift.float()).max(dim=1).values  # (batch, V)
    count = positions.sum(1, keepdim=True).clamp(min=1).float()
    weights = torch.zeros_like(pooled)
    ids = token_ids.masked_fill(~positions, 0)
    values = positions.float() / count  # 1/n at ordinary positions, 0 elsewhere
    weights.scatter_reduce_(1, ids, values, reduce="amax")  # a repeated id keeps 1/n (collapsed), never 2/n
    return -(weights * torch.log_softmax(pooled, dim=-1)).sum(1).mean()
