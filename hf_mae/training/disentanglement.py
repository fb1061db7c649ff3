"""Disentanglement metrics: InfoMEC (InfoM, InfoE, InfoC) of Hsu et al. (NeurIPS 2023, arXiv:2305.18378, Section 4),
for latents against known factors of variation (``hf_mae.training.sprites``). numpy and torch only.

With factors ``s_i`` (i < K) and latents ``z_j`` (j < L):
- NMI[i, j] = I(s_i; z_j) / H(s_i), from the joint histogram of the factor and the *discretised* latent: QLAE's
  codes as they are; a continuous latent cut into ``num_bins`` equal-width bins over its range (hf-mae's choice: the
  official code estimates the continuous case with a k-NN estimator instead);
- active latents: those taking more than one code (discrete) or with a range above 1/20 of the largest (continuous),
  as the official ``compute_infomec``;
- InfoM (modularity) = (mean over active j of max_i NMI[i, j] / sum_i NMI[i, j] - 1/K) / (1 - 1/K): 1 when every
  latent informs about one factor only;
- InfoC (compactness) = (mean over i of max_j NMI[i, j] / sum_j NMI[i, j] - 1/L_active) / (1 - 1/L_active): 1 when
  each factor is held by one latent;
- InfoE (explicitness) = mean over i of (H(s_i) - CE_i) / H(s_i), CE_i the log-loss of a multinomial logistic
  regression (no penalty, L-BFGS) predicting s_i from all latents (one-hot codes if discrete, standardised values if
  continuous), H(s_i) the log-loss of the best constant prediction (the official "null" regression): 1 when the
  factors are linear functions of the latents.

All information in nats. A latent with no information about any factor counts as uninformative (ratio 1/K) in
InfoM rather than 0/0 (hf-mae's choice; the official code gives NaN there).

    scores = infomec(factors, codes, discrete=True)      # {"infom", "infoe", "infoc", "nmi" (K, L), "active" (L,)}
"""

from __future__ import annotations

import numpy as np
import torch


def _as_2d(name: str, array) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[0] < 2:
        raise ValueError(f"{name} must have shape (num_samples >= 2, columns), got {array.shape}")
    return array


def relabel(values: np.ndarray) -> np.ndarray:
    """A column of arbitrary discrete values -> ints 0 .. n_distinct - 1 (the order of the sorted distinct values)."""
    return np.unique(values, return_inverse=True)[1].reshape(-1)


def discretize(latents, num_bins: int = 10) -> np.ndarray:
    """(n, L) continuous -> (n, L) ints in [0, num_bins): equal-width bins over each column's range (a constant
    column is all 0)."""
    latents = _as_2d("latents", latents).astype(np.float64)
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 2:
        raise ValueError(f"num_bins must be an int >= 2, got {num_bins!r}")
    low, high = latents.min(axis=0), latents.max(axis=0)
    width = np.where(high > low, high - low, 1.0)
    return np.clip(((latents - low) / width * num_bins).astype(np.int64), 0, num_bins - 1)


def entropy(labels) -> float:
    """H(a) in nats of a discrete column."""
    counts = np.bincount(relabel(np.asarray(labels)))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def mutual_information(a, b) -> float:
    """I(a; b) in nats of two discrete columns of equal length (the plug-in estimate from their joint histogram)."""
    a, b = relabel(np.asarray(a)), relabel(np.asarray(b))
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same length, got {a.shape} and {b.shape}")
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= joint.sum()
    pa, pb = joint.sum(axis=1, keepdims=True), joint.sum(axis=0, keepdims=True)
    nonzero = joint > 0
    return float((joint[nonzero] * np.log(joint[nonzero] / (pa @ pb)[nonzero])).sum())


def normalized_mutual_information(factors, discrete_latents) -> np.ndarray:
    """(K, L): NMI[i, j] = I(s_i; z_j) / H(s_i) for discrete factors (n, K) and discrete latents (n, L)."""
    factors, latents = _as_2d("factors", factors), _as_2d("latents", discrete_latents)
    if len(factors) != len(latents):
        raise ValueError(f"factors and latents must have as many rows, got {len(factors)} and {len(latents)}")
    nmi = np.zeros((factors.shape[1], latents.shape[1]))
    for i in range(factors.shape[1]):
        h = entropy(factors[:, i])
        if h == 0:
            raise ValueError(f"factor {i} is constant: its entropy is 0, so NMI is undefined")
        for j in range(latents.shape[1]):
            nmi[i, j] = mutual_information(factors[:, i], latents[:, j]) / h
    return nmi


def active_latents(latents, discrete: bool) -> np.ndarray:
    """(L,) bool: discrete latents taking more than one value; continuous ones whose range exceeds 1/20 of the
    largest range (the official rule)."""
    latents = _as_2d("latents", latents).astype(np.float64)
    ranges = latents.max(axis=0) - latents.min(axis=0)
    return ranges > 0 if discrete else ranges > ranges.max() / 20


def infom_infoc(nmi: np.ndarray, active: np.ndarray) -> tuple[float, float]:
    """(InfoM, InfoC) of a (K, L) NMI matrix over the ``active`` latents (see the module docstring)."""
    nmi = np.asarray(nmi, dtype=np.float64)[:, np.asarray(active, dtype=bool)]
    num_factors, num_active = nmi.shape
    if num_active == 0:
        return float("nan"), float("nan")
    column_sums = nmi.sum(axis=0)
    per_latent = np.where(column_sums > 0, nmi.max(axis=0) / np.where(column_sums > 0, column_sums, 1.0),
                          1.0 / num_factors)  # fmt: skip
    infom = (per_latent.mean() - 1.0 / num_factors) / (1.0 - 1.0 / num_factors)
    if num_active == 1:  # one latent holds everything there is: compactness is trivially perfect
        return float(infom), 1.0
    row_sums = nmi.sum(axis=1)
    per_factor = np.where(row_sums > 0, nmi.max(axis=1) / np.where(row_sums > 0, row_sums, 1.0), 1.0 / num_active)
    infoc = (per_factor.mean() - 1.0 / num_active) / (1.0 - 1.0 / num_active)
    return float(infom), float(infoc)


def logistic_log_loss(features: np.ndarray, labels: np.ndarray, max_iter: int = 100) -> float:
    """The training log-loss (nats) of an unpenalised multinomial logistic regression fit by L-BFGS (float64)."""
    x = torch.as_tensor(np.asarray(features, dtype=np.float64))
    y = torch.as_tensor(relabel(labels))
    num_classes = int(y.max()) + 1
    weight = torch.zeros(x.shape[1], num_classes, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(num_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=1e-7,
                                  tolerance_change=1e-10, history_size=20, line_search_fn="strong_wolfe")  # fmt: skip

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight + bias, y)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return float(torch.nn.functional.cross_entropy(x @ weight + bias, y))


def infoe(factors, latents, discrete: bool) -> float:
    """InfoE: the mean normalised predictive information of each factor from a logistic regression on the latents."""
    factors, latents = _as_2d("factors", factors), _as_2d("latents", latents)
    if discrete:  # one-hot of every latent's codes
        columns = [np.eye(relabel(latents[:, j]).max() + 1)[relabel(latents[:, j])] for j in range(latents.shape[1])]
        features = np.concatenate(columns, axis=1)
    else:
        values = latents.astype(np.float64)
        std = values.std(axis=0)
        features = (values - values.mean(axis=0)) / np.where(std > 0, std, 1.0)
    scores = []
    for i in range(factors.shape[1]):
        h = entropy(factors[:, i])
        scores.append((h - logistic_log_loss(features, factors[:, i])) / h)
    return float(np.mean(scores))


def infomec(factors, latents, discrete: bool, num_bins: int = 10) -> dict:
    """InfoM, InfoE and InfoC of ``latents`` (n, L) against ``factors`` (n, K) (discrete factor values).

    discrete: the latents are codes (QLAE's indices or values); otherwise they are continuous, binned into
    ``num_bins`` equal-width bins for the mutual information. Returns ``{"infom", "infoe", "infoc", "nmi" (K, L),
    "active" (L,) bool}``."""
    factors, latents = _as_2d("factors", factors), _as_2d("latents", latents)
    codes = np.stack([relabel(latents[:, j]) for j in range(latents.shape[1])], 1) if discrete else discretize(latents, num_bins)
    nmi = normalized_mutual_information(factors, codes)
    active = active_latents(latents, discrete)
    infom_value, infoc_value = infom_infoc(nmi, active)
    return {"infom": infom_value, "infoe": infoe(factors, latents, discrete), "infoc": infoc_value, "nmi": nmi,
            "active": active}


__all__ = ["discretize", "entropy", "mutual_information", "normalized_mutual_information", "active_latents",
           "infom_infoc", "logistic_log_loss", "infoe", "infomec"]


@torch.no_grad()
def model_latents(model, pixel_values: torch.Tensor, batch_size: int = 256) -> tuple[np.ndarray, bool]:
    """(latents (n, L), discrete) of a QLAE model (``QLAEModel`` or one holding it as ``.qlae``) over pixel_values
    (n, C, H, W): the codes when its latent is quantised, else the continuous latents. Runs in eval mode."""
    base = getattr(model, "qlae", model)
    was_training = base.training
    base.eval()
    try:
        parameter = next(base.parameters())
        outputs = [base(chunk.to(parameter.device, parameter.dtype), return_dict=True)
                   for chunk in pixel_values.split(batch_size)]  # fmt: skip
    finally:
        base.train(was_training)
    discrete = outputs[0].codes is not None
    key = "codes" if discrete else "continuous_latents"
    return torch.cat([getattr(out, key) for out in outputs]).float().cpu().numpy(), discrete


__all__ += ["model_latents"]
