"""JEPA vs MAE in deep linear networks: which features each objective learns first.

A numerical reproduction of Littwin et al., "How JEPA Avoids Noisy Features: The Implicit Bias of Deep Linear Self
Distillation Networks" (NeurIPS 2024, arXiv 2407.03475). Plain numpy, float64, deterministic; no transformers classes.

Setting (the paper's):

- two views ``x, y`` of ``d`` features whose covariances are diagonal in one orthonormal basis ``Q`` (the feature
  directions ``q_i``): ``E[x yᵀ] = Q diag(λ) Qᵀ`` (λ_i: the *covariance* of feature i between the views) and
  ``E[x xᵀ] = Q diag(λ/ρ) Qᵀ``, so that ``ρ_i = λ_i / E[(q_iᵀx)²]`` is the *regression coefficient* of
  ``q_iᵀy`` on ``q_iᵀx`` (the feature's "influence"; a noisy feature has a low ρ);
- a deep linear encoder ``W = W_L ⋯ W_1`` (``L`` = ``depth`` square layers) and one linear head ``V``;
- JEPA (self-distillation): ``½ E‖V W x − sg(W̄) y‖²`` with ``W̄ = W`` behind a stop-gradient (the paper), or an
  EMA of the layers (``ema_momentum > 0``); ``V`` is the predictor;
- MAE: ``½ E‖V W x − y‖²``; ``V`` is the decoder (reconstruct the other view in data space);
- gradient flow on the population loss, integrated here by plain gradient descent (explicit Euler) with a stated
  step size, from the paper's small *balanced* initialisation: every layer and the head are ``ε^{1/L}`` times an
  orthogonal matrix (``W_l = ε^{1/L} U_l U_{l-1}ᵀ`` with ``U_0 = Q``), so that ``W(0) = ε U_L Qᵀ``.

Under this initialisation the dynamics decouple per feature: the *projection* ``w_i(t) = ‖W(t) q_i‖`` (the encoder's
singular value on feature i) and all per-layer factors stay equal, ``a_i = w_i^{1/L}``, and obey the ODEs below
(derived here from the two objectives; the paper simulates its own "equivalent ODEs", its eqs. 7-8 by Figure 2's
caption, whose printed form could not be compared here)::

    JEPA   dw/dt = L (λ w^{3-1/L} − (λ/ρ) w³)        da/dt = a^{2L} (λ − (λ/ρ) a)          w → ρ^L
    MAE    dw/dt = L (λ w^{2-1/L} − (λ/ρ) w³)        da/dt = a^{L}  (λ − (λ/ρ) a^{L+1})    w → ρ^{L/(L+1)}

(the factor ``L`` is plain gradient flow with one learning rate for every layer; it rescales time only.)
The *critical time* of a feature is the time its projection reaches half its final value; integrating the ODEs,
``t* = ∫ da / f(a)`` from ``a(0) = ε^{1/L}`` to ``(½ w_final)^{1/L}`` (:func:`predicted_critical_time`), whose
small-``ε`` expansion (:func:`critical_time_expansion`) shows the mechanism:

    JEPA   t* = (1/λ) Σ_{n=1}^{2L-1} ρ^{n-2L+1} ε^{-n/L} / n  +  (ρ^{1-2L}/λ) log(ρ ε^{-1/L})  +  O(ρ^{1-2L}/λ)
    MAE    t* = (1/λ) ε^{-(L-1)/L} / (L-1)  (L > 1),   (1/λ) log(1/ε)  (L = 1),   +  O(1/λ)

MAE's diverging terms carry no ρ: MAE learns in the order of λ (the covarying, possibly noisy features first).
JEPA's carry growing negative powers of ρ as the encoder deepens: at ``L = 1`` ρ enters only through the logarithm,
at ``L = 3`` through ``ρ^{-4} ε^{-1/3}``, ``ρ^{-3} ε^{-2/3}``, ...; so a deep JEPA learns the high-ρ (influential)
feature first even when its λ is lower. The effect is strong where ρ is within an order of magnitude of the
per-layer initial scale ``ε^{1/L}`` (for ``ε → 0`` at fixed depth the ``ε^{-(2L-1)/L}`` term, which has no ρ,
dominates again), which is why the example here uses a moderate ``ε = 0.005``.

Departures from / additions to the paper (hf-mae's choices):

- the paper analyses continuous gradient flow; here it is gradient descent with ``step_size`` (default 0.5 for JEPA
  and 0.01 for MAE, whose critical times are about 100x shorter; both reproduce the exact integral of the ODE to
  within 1 % in the tests);
- the closed-form critical times are evaluated by quadrature of the exact ODE, the expansions above are derived here
  (the full text of the paper was not readable where this was written: its abstract and Figure 2's caption were,
  so the formulas are checked against the simulated network, not against the paper's printed theorem);
- an EMA target (``ema_momentum``) and training on a finite sample (:meth:`FeatureData.sample`, the paper's "static
  linear model" ``x = z + n, y = z + n'``) are offered as options; the paper's analysis is the population loss with a
  stop-gradient target;
- the per-feature projection is measured basis-free as ``‖W q_i‖``; a random orthogonal feature basis and random
  orthogonal layer factors (``seed``) are allowed and leave it unchanged.

The plot is written as a hand-made SVG (:func:`svg_figure`): no plotting library is needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

OBJECTIVES = ("jepa", "mae")
DEFAULT_STEP_SIZES = {"jepa": 0.5, "mae": 0.01}  # JEPA's plateaus are ~100x longer than MAE's
DEFAULT_INIT_SCALE = 0.005


def _check_objective(objective: str) -> str:
    if objective not in OBJECTIVES:
        raise ValueError(f"objective={objective!r} is not one of {OBJECTIVES}")
    return objective


def _check_depth(depth) -> int:
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
        raise ValueError(f"depth={depth!r} must be an integer >= 1")
    return int(depth)


def _check_positive(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) or not value > 0 \
            or not math.isfinite(value):
        raise ValueError(f"{name}={value!r} must be a finite number > 0")
    return float(value)


@dataclass(frozen=True)
class FeatureData:
    """Two views whose features have cross-view covariance ``lambdas[i]`` and regression coefficient ``rhos[i]``.

    ``basis`` (orthogonal, ``d x d``; columns are the feature directions; ``None`` = the identity) rotates the
    features away from the coordinate axes. The views follow the static linear model ``x = z + n``, ``y = z + n'``
    with ``Var(z_i) = λ_i`` and independent noises of variance ``λ_i (1/ρ_i − 1)``, hence ``0 < ρ_i <= 1``.
    """

    lambdas: np.ndarray
    rhos: np.ndarray
    basis: np.ndarray | None = None

    def __post_init__(self):
        lambdas = np.asarray(self.lambdas, dtype=np.float64)
        rhos = np.asarray(self.rhos, dtype=np.float64)
        if lambdas.ndim != 1 or lambdas.size == 0:
            raise ValueError(f"lambdas={self.lambdas!r} must be a non-empty 1-D sequence")
        if rhos.shape != lambdas.shape:
            raise ValueError(f"rhos={self.rhos!r} must have one entry per feature ({lambdas.size})")
        if not np.all(np.isfinite(lambdas)) or np.any(lambdas <= 0):
            raise ValueError(f"lambdas={self.lambdas!r} must all be finite and > 0")
        if not np.all(np.isfinite(rhos)) or np.any(rhos <= 0) or np.any(rhos > 1):
            raise ValueError(f"rhos={self.rhos!r} must all lie in (0, 1] (the static model's noise variance "
                             "λ (1/ρ − 1) is then >= 0)")
        basis = np.eye(lambdas.size) if self.basis is None else np.asarray(self.basis, dtype=np.float64)
        if basis.shape != (lambdas.size, lambdas.size) or not np.allclose(basis.T @ basis, np.eye(lambdas.size),
                                                                          atol=1e-10):
            raise ValueError(f"basis must be an orthogonal {lambdas.size}x{lambdas.size} matrix, got shape "
                             f"{basis.shape}" + ("" if basis.shape != (lambdas.size,) * 2 else " (not orthogonal)"))
        object.__setattr__(self, "lambdas", lambdas)
        object.__setattr__(self, "rhos", rhos)
        object.__setattr__(self, "basis", basis)

    @property
    def dim(self) -> int:
        return self.lambdas.size

    @property
    def input_variances(self) -> np.ndarray:
        """``E[(q_iᵀx)²] = λ_i / ρ_i``."""
        return self.lambdas / self.rhos

    def covariances(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Population ``(Σxx, Σyx, Σyy)`` with ``Σyx = E[y xᵀ]``."""
        q = self.basis
        sxx = q @ np.diag(self.input_variances) @ q.T
        syx = q @ np.diag(self.lambdas) @ q.T
        return sxx, syx, sxx.copy()

    def sample(self, num_samples: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``num_samples`` pairs ``(x, y)`` (each ``[num_samples, d]``) of the static linear model, seeded."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 2:
            raise ValueError(f"num_samples={num_samples!r} must be an integer >= 2")
        rng = np.random.default_rng(seed)
        z = rng.standard_normal((num_samples, self.dim)) * np.sqrt(self.lambdas)
        noise_std = np.sqrt(self.lambdas * (1.0 / self.rhos - 1.0))
        x = z + rng.standard_normal((num_samples, self.dim)) * noise_std
        y = z + rng.standard_normal((num_samples, self.dim)) * noise_std
        return x @ self.basis.T, y @ self.basis.T


def empirical_covariances(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(Σxx, Σyx, Σyy)`` of samples ``x, y`` (``[n, d]`` each; uncentred second moments, as the losses use)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or x.shape != y.shape:
        raise ValueError(f"x and y must be 2-D arrays of one shape, got {x.shape} and {y.shape}")
    n = x.shape[0]
    return x.T @ x / n, y.T @ x / n, y.T @ y / n


def two_feature_example() -> FeatureData:
    """The example of the tests and the benchmark: feature A covaries more (λ = 1) but is noisy (ρ = 0.3, noise
    variance 2.33 per view); feature B covaries less (λ = 0.7) and is clean (ρ = 1)."""
    return FeatureData(lambdas=[1.0, 0.7], rhos=[0.3, 1.0])


# ----------------------------------------------------------------------------------------------------------------
# the network and its gradient descent


def random_orthogonal(dim: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random orthogonal matrix (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((dim, dim)))
    return q * np.sign(np.diag(r))


def balanced_init(objective: str, data: FeatureData, depth: int, init_scale: float = DEFAULT_INIT_SCALE,
                  seed: int | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """The paper's small balanced initialisation: ``(layers [W_1, ..., W_L], head V)``.

    Every layer and the head are ``init_scale^{1/L}`` times an orthogonal matrix; ``W_1 ⋯`` chain the orthogonal
    factors ``U_0 = Q (the feature basis), U_1, ..., U_L`` (random from ``seed``; ``None`` = all ``Q``) so the
    encoder is ``init_scale · U_L Qᵀ``. JEPA's predictor is ``a0 I`` (latent to latent), MAE's decoder ``a0 Q U_Lᵀ``
    (latent to data). Balanced: ``W_{l+1}ᵀ W_{l+1} = W_l W_lᵀ`` and ``Vᵀ V = W_L W_Lᵀ``.
    """
    _check_objective(objective)
    depth = _check_depth(depth)
    init_scale = _check_positive("init_scale", init_scale)
    a0 = init_scale ** (1.0 / depth)
    q = data.basis
    rng = None if seed is None else np.random.default_rng(seed)
    factors = [q] + [q if rng is None else random_orthogonal(data.dim, rng) for _ in range(depth)]
    layers = [a0 * factors[l] @ factors[l - 1].T for l in range(1, depth + 1)]
    head = a0 * np.eye(data.dim) if objective == "jepa" else a0 * q @ factors[-1].T
    return layers, head


def _product(matrices: Sequence[np.ndarray], dim: int) -> np.ndarray:
    out = np.eye(dim)
    for m in matrices:
        out = m @ out
    return out


def loss_and_gradients(objective: str, layers: Sequence[np.ndarray], head: np.ndarray,
                       covariances: tuple[np.ndarray, np.ndarray, np.ndarray],
                       target_layers: Sequence[np.ndarray] | None = None):
    """The population loss and its gradients ``(loss, [dL/dW_1, ..., dL/dW_L], dL/dV)``, in closed form.

    JEPA: ``½ E‖V W x − sg(W̄) y‖²`` with ``W̄`` the product of ``target_layers`` (``None``: the layers themselves,
    i.e. a stop-gradient copy); MAE: ``½ E‖V W x − y‖²``. With ``R = V W Σxx − T Σyx`` (``T = W̄`` for JEPA, the
    identity for MAE): ``dL/dV = R Wᵀ`` and ``dL/dW_l = (W_L⋯W_{l+1})ᵀ Vᵀ R (W_{l-1}⋯W_1)ᵀ``.
    """
    _check_objective(objective)
    sxx, syx, syy = covariances
    dim = sxx.shape[0]
    prefixes = [np.eye(dim)]  # prefixes[l] = W_l ⋯ W_1
    for w in layers:
        prefixes.append(w @ prefixes[-1])
    encoder = prefixes[-1]
    target = np.eye(dim) if objective == "mae" else _product(target_layers if target_layers is not None else layers,
                                                             dim)
    model = head @ encoder
    residual = model @ sxx - target @ syx
    loss = 0.5 * (np.trace(model @ sxx @ model.T) - 2.0 * np.trace(model @ syx.T @ target.T)
                  + np.trace(target @ syy @ target.T))
    grad_head = residual @ encoder.T
    grad_encoder = head.T @ residual
    grads = [None] * len(layers)
    suffix = np.eye(dim)  # W_L ⋯ W_{l+1}
    for l in range(len(layers) - 1, -1, -1):
        grads[l] = suffix.T @ grad_encoder @ prefixes[l].T
        suffix = suffix @ layers[l]
    return float(loss), grads, grad_head


@dataclass
class Trajectory:
    """A recorded training run: ``projections[k, i] = ‖W(times[k]) q_i‖``."""

    objective: str
    depth: int
    init_scale: float
    step_size: float
    times: np.ndarray
    projections: np.ndarray
    losses: np.ndarray
    lambdas: np.ndarray
    rhos: np.ndarray
    layers: list = field(repr=False, default_factory=list)
    head: np.ndarray | None = field(repr=False, default=None)

    @property
    def fixed_points(self) -> np.ndarray:
        """The projections' analytic end values (population loss): JEPA ``ρ^L``, MAE ``ρ^{L/(L+1)}``."""
        return fixed_point(self.objective, self.rhos, self.depth)

    def critical_times(self, fraction: float = 0.5, final: np.ndarray | None = None) -> np.ndarray:
        """Per feature, the first time its projection reaches ``fraction`` of its final value (``final``: default
        the last recorded projection), linearly interpolated between records."""
        if not 0 < fraction < 1:
            raise ValueError(f"fraction={fraction!r} must lie in (0, 1)")
        final = self.projections[-1] if final is None else np.asarray(final, dtype=np.float64)
        out = np.empty(self.projections.shape[1])
        for i in range(out.size):
            level = fraction * final[i]
            p = self.projections[:, i]
            if p[0] >= level:
                raise ValueError(f"feature {i} starts at projection {p[0]:.4g} >= {fraction} x its final value "
                                 f"{final[i]:.4g}: lower init_scale")
            k = int(np.argmax(p >= level))
            if p[k] < level:
                out[i] = math.inf
                continue
            t0, t1, p0, p1 = self.times[k - 1], self.times[k], p[k - 1], p[k]
            out[i] = t0 + (level - p0) / (p1 - p0) * (t1 - t0)
        return out


def train(objective: str, data: FeatureData, depth: int, *, init_scale: float = DEFAULT_INIT_SCALE,
          step_size: float | None = None, max_time: float | None = None, num_records: int = 400,
          ema_momentum: float = 0.0, samples: tuple[np.ndarray, np.ndarray] | None = None,
          seed: int | None = None) -> Trajectory:
    """Gradient descent (step ``step_size``, default :data:`DEFAULT_STEP_SIZES`; i.e. Euler on gradient flow;
    time = steps x step_size) from
    :func:`balanced_init` on the population loss of ``data`` (or on the empirical covariances of ``samples``),
    recording the projections ``‖W q_i‖`` and the loss at about ``num_records`` evenly spaced times.

    ``max_time`` defaults to 2.5x the latest analytic critical time (:func:`predicted_critical_time`).
    ``ema_momentum`` (JEPA only): the target's layers follow ``W̄ ← m W̄ + (1 − m) W`` after every step; 0 is the
    paper's stop-gradient target (the current layers).
    """
    _check_objective(objective)
    depth = _check_depth(depth)
    init_scale = _check_positive("init_scale", init_scale)
    step_size = _check_positive("step_size", DEFAULT_STEP_SIZES[objective] if step_size is None else step_size)
    if isinstance(ema_momentum, bool) or not isinstance(ema_momentum, (int, float)) or not 0 <= ema_momentum < 1:
        raise ValueError(f"ema_momentum={ema_momentum!r} must be a number in [0, 1)")
    if ema_momentum and objective != "jepa":
        raise ValueError(f"ema_momentum={ema_momentum!r} applies to the JEPA target only, not objective='mae'")
    if isinstance(num_records, bool) or not isinstance(num_records, int) or num_records < 2:
        raise ValueError(f"num_records={num_records!r} must be an integer >= 2")
    if max_time is None:
        max_time = 2.5 * float(np.max(predicted_critical_time(objective, data.lambdas, data.rhos, depth, init_scale)))
    max_time = _check_positive("max_time", max_time)
    covariances = data.covariances() if samples is None else empirical_covariances(*samples)
    if covariances[0].shape[0] != data.dim:
        raise ValueError(f"samples have {covariances[0].shape[0]} features, data has {data.dim}")
    num_steps = max(1, int(round(max_time / step_size)))
    record_every = max(1, num_steps // num_records)

    layers, head = balanced_init(objective, data, depth, init_scale, seed)
    target_layers = [w.copy() for w in layers] if ema_momentum else None
    directions = data.basis
    times, projections, losses = [], [], []

    def record(step, loss):
        times.append(step * step_size)
        projections.append(np.linalg.norm(_product(layers, data.dim) @ directions, axis=0))
        losses.append(loss)

    for step in range(num_steps + 1):
        loss, grads, grad_head = loss_and_gradients(objective, layers, head, covariances, target_layers)
        if step % record_every == 0 or step == num_steps:
            record(step, loss)
        if step == num_steps:
            break
        layers = [w - step_size * g for w, g in zip(layers, grads)]
        head = head - step_size * grad_head
        if target_layers is not None:
            target_layers = [ema_momentum * t + (1.0 - ema_momentum) * w for t, w in zip(target_layers, layers)]
    return Trajectory(objective, depth, init_scale, step_size, np.asarray(times), np.asarray(projections),
                      np.asarray(losses), data.lambdas, data.rhos, layers, head)


# ----------------------------------------------------------------------------------------------------------------
# the per-feature ODEs, their critical times and the small-init expansions


def fixed_point(objective: str, rhos, depth: int) -> np.ndarray:
    """The projection's end value: JEPA ``ρ^L`` (every layer and the predictor → ρ), MAE ``ρ^{L/(L+1)}`` (every
    layer and the decoder → ``ρ^{1/(L+1)}``, so decoder x encoder = ρ)."""
    _check_objective(objective)
    depth = _check_depth(depth)
    rhos = np.asarray(rhos, dtype=np.float64)
    return rhos ** depth if objective == "jepa" else rhos ** (depth / (depth + 1.0))


def layer_velocity(objective: str, a, lam, rho, depth: int):
    """``da/dt`` of one feature's per-layer factor ``a = w^{1/L}``: JEPA ``a^{2L}(λ − (λ/ρ) a)``, MAE
    ``a^L (λ − (λ/ρ) a^{L+1})``."""
    sigma2 = lam / rho
    if objective == "jepa":
        return a ** (2 * depth) * (lam - sigma2 * a)
    return a ** depth * (lam - sigma2 * a ** (depth + 1))


def solve_reduced_ode(objective: str, lambdas, rhos, depth: int, init_scale: float, times) -> np.ndarray:
    """The projections ``w_i(t) = a_i(t)^L`` of the per-feature ODE at ``times`` (increasing, from 0), by RK4 with
    sub-steps ``h`` such that ``h x (|f(a)|/a + |f'(a)|) <= 0.25`` for every feature. Returns ``[len(times), d]``."""
    _check_objective(objective)
    depth = _check_depth(depth)
    lambdas = np.asarray(lambdas, dtype=np.float64)
    rhos = np.asarray(rhos, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)

    def f(a):
        return layer_velocity(objective, a, lambdas, rhos, depth)

    a = np.full(lambdas.shape, _check_positive("init_scale", init_scale) ** (1.0 / depth))
    out = np.empty((times.size, lambdas.size))
    t = 0.0
    for k, t_next in enumerate(times):
        while t < t_next:
            fa = f(a)
            rate = np.max(np.abs(fa) / a + np.abs(f(a * 1.001) - fa) / (0.001 * a))
            h = min(t_next - t, 0.25 / rate)
            k1 = fa
            k2 = f(a + 0.5 * h * k1)
            k3 = f(a + 0.5 * h * k2)
            k4 = f(a + h * k3)
            a = a + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
            t += h
        out[k] = a ** depth
    return out


def predicted_critical_time(objective: str, lambdas, rhos, depth: int, init_scale: float = DEFAULT_INIT_SCALE,
                            fraction: float = 0.5, num_points: int = 20001) -> np.ndarray:
    """The exact critical time of each feature under gradient flow: ``∫ da / f(a)`` (``f`` =
    :func:`layer_velocity`) from ``init_scale^{1/L}`` to ``(fraction x fixed point)^{1/L}``, by Simpson's rule in
    ``log a``."""
    _check_objective(objective)
    depth = _check_depth(depth)
    init_scale = _check_positive("init_scale", init_scale)
    if not 0 < fraction < 1:
        raise ValueError(f"fraction={fraction!r} must lie in (0, 1)")
    lambdas = np.atleast_1d(np.asarray(lambdas, dtype=np.float64))
    rhos = np.atleast_1d(np.asarray(rhos, dtype=np.float64))
    a0 = init_scale ** (1.0 / depth)
    a_end = (fraction * fixed_point(objective, rhos, depth)) ** (1.0 / depth)
    if np.any(a_end <= a0):
        raise ValueError(f"init_scale={init_scale!r} starts a feature at or past {fraction} of its final projection "
                         f"(per-layer start {a0:.4g}, threshold {np.min(a_end):.4g}): lower init_scale")
    n = num_points + (num_points + 1) % 2  # odd
    s = np.linspace(np.log(a0), np.log(a_end), n, axis=-1)  # [d, n]
    a = np.exp(s)
    integrand = a / layer_velocity(objective, a, lambdas[:, None], rhos[:, None], depth)
    h = (np.log(a_end) - np.log(a0)) / (n - 1)
    weights = np.ones(n)
    weights[1:-1:2], weights[2:-1:2] = 4.0, 2.0
    return h / 3.0 * (integrand * weights).sum(axis=-1)


def critical_time_expansion(objective: str, lambdas, rhos, depth: int, init_scale: float) -> np.ndarray:
    """The diverging terms of the critical time as ``init_scale → 0`` (see the module docstring); they differ from
    :func:`predicted_critical_time` by ``O(ρ^{1-2L}/λ)`` (JEPA) or ``O(1/λ)`` (MAE)."""
    _check_objective(objective)
    depth = _check_depth(depth)
    eps = _check_positive("init_scale", init_scale)
    lam = np.asarray(lambdas, dtype=np.float64)
    rho = np.asarray(rhos, dtype=np.float64)
    if objective == "jepa":
        total = sum(rho ** (n - 2 * depth + 1) * eps ** (-n / depth) / n for n in range(1, 2 * depth))
        return (total + rho ** (1 - 2 * depth) * np.log(rho * eps ** (-1.0 / depth))) / lam
    if depth == 1:
        return np.log(1.0 / eps) / lam
    return eps ** (-(depth - 1.0) / depth) / (depth - 1.0) / lam


# ----------------------------------------------------------------------------------------------------------------
# a hand-made SVG line plot (no plotting library)


@dataclass
class Series:
    """One polyline; ``marker_x``: draw a dotted vertical line there (e.g. a critical time)."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    color: str = "#1f77b4"
    dash: str | None = None
    marker_x: float | None = None


@dataclass
class Panel:
    title: str
    series: list
    xlabel: str = "time"
    ylabel: str = ""
    ylim: tuple | None = None


def _nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / target
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, t = [], first
    while t <= hi + 1e-9 * step:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-2:
        return f"{v:.0e}".replace("e+0", "e").replace("e-0", "e-")
    return f"{v:g}"


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def svg_figure(panels: Sequence[Panel], *, columns: int = 2, panel_width: int = 360, panel_height: int = 240,
               title: str = "", legend_columns: int = 2) -> str:
    """An SVG document: ``panels`` in a grid (own axes, ticks and grid lines each), one shared legend below
    (one entry per distinct series label, ``legend_columns`` per row)."""
    if not panels:
        raise ValueError("panels must not be empty")
    if columns < 1 or legend_columns < 1:
        raise ValueError(f"columns={columns!r} and legend_columns={legend_columns!r} must be >= 1")
    rows = math.ceil(len(panels) / columns)
    margin_l, margin_r, margin_t, margin_b = 56, 16, 28, 44
    top = 36 if title else 8
    legend = []
    for p in panels:
        for s in p.series:
            if s.label not in [e.label for e in legend]:
                legend.append(s)
    legend_h = 24 * math.ceil(len(legend) / legend_columns) + 8
    width = columns * panel_width
    height = top + rows * panel_height + legend_h
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>']
    if title:
        out.append(f'<text x="{width / 2:.1f}" y="22" text-anchor="middle" font-size="14">{_esc(title)}</text>')
    for index, panel in enumerate(panels):
        ox = (index % columns) * panel_width
        oy = top + (index // columns) * panel_height
        x0, x1 = ox + margin_l, ox + panel_width - margin_r
        y0, y1 = oy + panel_height - margin_b, oy + margin_t  # y0: bottom in pixels
        xs = np.concatenate([np.asarray(s.x, dtype=float) for s in panel.series])
        ys = np.concatenate([np.asarray(s.y, dtype=float) for s in panel.series])
        xlo, xhi = float(xs.min()), float(xs.max())
        ylo, yhi = panel.ylim if panel.ylim else (float(ys.min()), float(ys.max()))
        if xhi <= xlo:
            xhi = xlo + 1.0
        if yhi <= ylo:
            yhi = ylo + 1.0

        def px(v, xlo=xlo, xhi=xhi, x0=x0, x1=x1):
            return x0 + (v - xlo) / (xhi - xlo) * (x1 - x0)

        def py(v, ylo=ylo, yhi=yhi, y0=y0, y1=y1):
            return y0 - (v - ylo) / (yhi - ylo) * (y0 - y1)

        out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{oy + 18}" text-anchor="middle" font-size="12">'
                   f'{_esc(panel.title)}</text>')
        for t in _nice_ticks(xlo, xhi):
            out.append(f'<line x1="{px(t):.1f}" y1="{y0}" x2="{px(t):.1f}" y2="{y1}" stroke="#e6e6e6"/>')
            out.append(f'<text x="{px(t):.1f}" y="{y0 + 14}" text-anchor="middle">{_fmt(t)}</text>')
        for t in _nice_ticks(ylo, yhi):
            out.append(f'<line x1="{x0}" y1="{py(t):.1f}" x2="{x1}" y2="{py(t):.1f}" stroke="#e6e6e6"/>')
            out.append(f'<text x="{x0 - 5}" y="{py(t) + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
        out.append(f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="none" stroke="black"/>')
        out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{y0 + 30}" text-anchor="middle">{_esc(panel.xlabel)}</text>')
        if panel.ylabel:
            cy = (y0 + y1) / 2
            out.append(f'<text x="{ox + 14}" y="{cy:.1f}" text-anchor="middle" '
                       f'transform="rotate(-90 {ox + 14} {cy:.1f})">{_esc(panel.ylabel)}</text>')
        for s in panel.series:
            pts = " ".join(f"{px(a):.1f},{py(min(max(b, ylo), yhi)):.1f}" for a, b in zip(s.x, s.y))
            dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
            out.append(f'<polyline points="{pts}" fill="none" stroke="{s.color}" stroke-width="1.8"{dash}/>')
            if s.marker_x is not None and xlo <= s.marker_x <= xhi:
                out.append(f'<line x1="{px(s.marker_x):.1f}" y1="{y0}" x2="{px(s.marker_x):.1f}" y2="{y1}" '
                           f'stroke="{s.color}" stroke-width="1" stroke-dasharray="2,3"/>')
    ly = top + rows * panel_height + 4
    for k, s in enumerate(legend):
        lx = 20 + (k % legend_columns) * (width - 40) / legend_columns
        yy = ly + 24 * (k // legend_columns) + 10
        dash = f' stroke-dasharray="{s.dash}"' if s.dash else ""
        out.append(f'<line x1="{lx:.1f}" y1="{yy}" x2="{lx + 28:.1f}" y2="{yy}" stroke="{s.color}" '
                   f'stroke-width="1.8"{dash}/>')
        out.append(f'<text x="{lx + 34:.1f}" y="{yy + 4}">{_esc(s.label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"
