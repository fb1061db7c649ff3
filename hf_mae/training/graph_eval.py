"""GraphMAE's evaluation protocols on frozen embeddings (the official ``graphmae/evaluation.py`` and
``main_graph.py``).

- :func:`node_linear_probe`: transductive node classification. A logistic-regression layer (``nn.Linear``) on the
  frozen node embeddings is trained with Adam on the training nodes for ``epochs`` full-batch steps; after each step
  it is evaluated, and the reported test accuracy is the one at the best validation accuracy (ties: the later
  epoch), the paper's "early-stopping test acc".
- :func:`graph_svm_probe`: graph classification. Pooled graph embeddings, 10-fold stratified cross-validation of an
  RBF SVM whose C is grid-searched on each training fold; mean ± std of the fold accuracies (micro-F1).
- :func:`embed_nodes`: the frozen embeddings of a GraphMAE model (eval mode, no masking).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def embed_nodes(model, node_features, edge_index, batch=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(node embeddings (N, hidden), pooled graph embeddings (num_graphs, hidden)) of ``model`` (a GraphMAEModel or
    any GraphMAE head, whose ``base_model`` is used) in eval mode; the model's train/eval state is restored."""
    encoder = model.base_model
    was_training = encoder.training
    encoder.eval()
    try:
        out = encoder(node_features, edge_index, batch, return_dict=True)
    finally:
        encoder.train(was_training)
    return out.last_hidden_state, out.pooler_output


def _check_node_inputs(features, labels, masks) -> None:
    if not isinstance(features, torch.Tensor) or features.ndim != 2 or not features.is_floating_point():
        raise ValueError(f"features must be a float tensor (num_nodes, dim), got {_describe(features)}")
    num_nodes = features.shape[0]
    if not isinstance(labels, torch.Tensor) or labels.shape != (num_nodes,) or labels.is_floating_point():
        raise ValueError(f"labels must be an integer tensor ({num_nodes},), got {_describe(labels)}")
    for name, mask in masks.items():
        if not isinstance(mask, torch.Tensor) or mask.shape != (num_nodes,) or mask.dtype != torch.bool:
            raise ValueError(f"{name} must be a bool tensor ({num_nodes},), got {_describe(mask)}")
        if not mask.any():
            raise ValueError(f"{name} selects no node")


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"shape {tuple(value.shape)}, dtype {value.dtype}"
    return type(value).__name__


def node_linear_probe(features, labels, train_mask, val_mask, test_mask, lr: float = 0.01,
                      weight_decay: float = 1e-4, epochs: int = 300, seed: int = 0) -> dict:  # fmt: skip
    """The official linear probe for transductive node classification.

    features: (N, dim) frozen node embeddings (detached here); labels: (N,) class ids; *_mask: (N,) bool.
    Returns dict(best_val, test_at_best_val (the paper's number), best_epoch, final_test (after the last epoch),
    final_val).
    """
    _check_node_inputs(features, labels, {"train_mask": train_mask, "val_mask": val_mask, "test_mask": test_mask})
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    features, labels = features.detach().float(), labels.long()
    num_classes = int(labels.max()) + 1
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # the classifier's init; restored below so the caller's stream is untouched
    classifier = nn.Linear(features.shape[1], num_classes)
    torch.random.set_rng_state(generator_state)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    best = {"best_val": -1.0, "test_at_best_val": 0.0, "best_epoch": -1}
    for epoch in range(epochs):
        loss = nn.functional.cross_entropy(classifier(features[train_mask]), labels[train_mask])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            correct = classifier(features).argmax(dim=1) == labels
            val, test = correct[val_mask].float().mean().item(), correct[test_mask].float().mean().item()
        if val >= best["best_val"]:  # ">=" as the official code: a later epoch wins a tie
            best = {"best_val": val, "test_at_best_val": test, "best_epoch": epoch}
    return {**best, "final_val": val, "final_test": test}


def graph_svm_probe(embeddings, labels, folds: int = 10, seed: int = 0, c_grid=(1e-3, 1e-2, 1e-1, 1.0, 10.0)) -> dict:
    """The official graph-classification protocol: stratified ``folds``-fold CV (shuffled with ``seed``) of an RBF
    SVC, C chosen per training fold by scikit-learn's GridSearchCV (5-fold) over ``c_grid``.

    embeddings: (num_graphs, dim) pooled embeddings (tensor or array); labels: (num_graphs,) class ids.
    Returns dict(mean, std, folds (the per-fold accuracies = micro-F1)).
    """
    from sklearn.metrics import f1_score
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.svm import SVC

    x = embeddings.detach().cpu().numpy() if isinstance(embeddings, torch.Tensor) else np.asarray(embeddings)
    y = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"embeddings must be (num_graphs, dim) and labels (num_graphs,), got {x.shape} and {y.shape}")
    scores = []
    for train, test in StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(x, y):
        search = GridSearchCV(SVC(random_state=42), {"C": list(c_grid)}).fit(x[train], y[train])
        scores.append(f1_score(y[test], search.predict(x[test]), average="micro"))
    return {"mean": float(np.mean(scores)), "std": float(np.std(scores)), "folds": [float(s) for s in scores]}


__all__ = ["embed_nodes", "node_linear_probe", "graph_svm_probe"]
