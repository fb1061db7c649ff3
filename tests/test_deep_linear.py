"""JEPA vs MAE in deep linear networks (hf_mae.theory.deep_linear; Littwin et al., NeurIPS 2024).

The example (``two_feature_example``): feature A has the higher covariance λ = 1 but a low regression coefficient
ρ = 0.3 (noisy); feature B has λ = 0.7 and ρ = 1 (clean). Initial scale ε = 0.005, float64, population loss,
gradient descent with the module's stated steps (JEPA 0.5, MAE 0.01). Critical time: the time a feature's
projection ‖W q_i‖ reaches half its final value.

Measured on this configuration (network; the exact integral of the per-feature ODE agrees to < 1 %):
t(A)/t(B) = JEPA 0.713 (L=1), 1.295 (L=3); MAE 0.612 (L=1), 0.684 (L=3).
"""

from __future__ import annotations

import importlib.util
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch

from hf_mae.theory import deep_linear as dl

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs():
    """The four runs of the example: (objective, depth) -> Trajectory (about 2-3 s together)."""
    data = dl.two_feature_example()
    return {(objective, depth): dl.train(objective, data, depth) for objective in dl.OBJECTIVES for depth in (1, 3)}


def _ratio(trajectory) -> float:
    """t(low ρ = A) / t(high ρ = B)."""
    t = trajectory.critical_times()
    return float(t[0] / t[1])


# ---------------------------------------------------------------------------------------------------------------
# the mechanics: gradients, initialisation, decoupling


@pytest.mark.parametrize("objective", dl.OBJECTIVES)
def test_closed_form_gradients_equal_autograd_of_the_literal_objective(objective):
    """``loss_and_gradients`` on the empirical covariances of a sample equals torch autograd of
    ``½ mean‖V W x − sg(W̄) y‖²`` (JEPA, W̄ = W detached, and an EMA-like separate target) / ``½ mean‖V W x − y‖²``."""
    rng = np.random.default_rng(0)
    d, n, depth = 3, 64, 3
    x, y = rng.standard_normal((n, d)), rng.standard_normal((n, d))
    layers = [rng.standard_normal((d, d)) * 0.7 for _ in range(depth)]
    head = rng.standard_normal((d, d)) * 0.7
    targets = [rng.standard_normal((d, d)) * 0.7 for _ in range(depth)]
    for target_layers in ([None, targets] if objective == "jepa" else [None]):
        loss, grads, grad_head = dl.loss_and_gradients(objective, layers, head, dl.empirical_covariances(x, y),
                                                       target_layers)
        tl = [torch.tensor(w, requires_grad=True) for w in layers]
        tv = torch.tensor(head, requires_grad=True)
        tx, ty = torch.tensor(x), torch.tensor(y)
        encoder = tl[0]
        for w in tl[1:]:
            encoder = w @ encoder
        if objective == "mae":
            goal = ty
        else:
            target = encoder.detach()
            if target_layers is not None:
                target = torch.tensor(targets[0])
                for w in targets[1:]:
                    target = torch.tensor(w) @ target
            goal = ty @ target.T
        ref = 0.5 * ((tx @ encoder.T @ tv.T - goal) ** 2).sum(dim=1).mean()
        ref.backward()
        assert loss == pytest.approx(ref.item(), rel=1e-12)
        np.testing.assert_allclose(grad_head, tv.grad.numpy(), rtol=1e-10, atol=1e-12)
        for g, w in zip(grads, tl):
            np.testing.assert_allclose(g, w.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("objective", dl.OBJECTIVES)
def test_balanced_init(objective):
    """Every factor is ε^{1/L} x orthogonal, balanced (W_{l+1}ᵀW_{l+1} = W_l W_lᵀ, VᵀV = W_L W_Lᵀ), and the encoder
    maps every feature direction to norm ε."""
    basis = dl.random_orthogonal(3, np.random.default_rng(5))
    data = dl.FeatureData([1.0, 0.5, 0.2], [0.5, 1.0, 0.8], basis)
    eps, depth = 0.01, 3
    layers, head = dl.balanced_init(objective, data, depth, eps, seed=2)
    a0 = eps ** (1 / 3)
    for w in layers + [head]:
        np.testing.assert_allclose(w @ w.T, a0 ** 2 * np.eye(3), atol=1e-14)
    for lower, upper in zip(layers[:-1], layers[1:]):
        np.testing.assert_allclose(upper.T @ upper, lower @ lower.T, atol=1e-14)
    np.testing.assert_allclose(head.T @ head, layers[-1] @ layers[-1].T, atol=1e-14)
    encoder = layers[2] @ layers[1] @ layers[0]
    np.testing.assert_allclose(np.linalg.norm(encoder @ basis, axis=0), [eps] * 3, rtol=1e-12)


def test_population_covariances_and_samples_have_the_stated_lambda_and_rho():
    data = dl.two_feature_example()
    sxx, syx, syy = data.covariances()
    np.testing.assert_allclose(np.diag(syx), [1.0, 0.7])
    np.testing.assert_allclose(np.diag(syx) / np.diag(sxx), [0.3, 1.0])
    x, y = data.sample(200_000, seed=0)
    ex, eyx, _ = dl.empirical_covariances(x, y)
    np.testing.assert_allclose(np.diag(eyx), [1.0, 0.7], rtol=0.02)
    np.testing.assert_allclose(np.diag(eyx) / np.diag(ex), [0.3, 1.0], rtol=0.02)
    assert abs(eyx[0, 1]) < 0.01 and abs(ex[0, 1]) < 0.02


@pytest.mark.parametrize("key", [("jepa", 3), ("mae", 1), ("mae", 3)])
def test_network_follows_the_per_feature_ode_to_its_fixed_point(runs, key):
    """The full matrix network (gradient descent) tracks the decoupled scalar ODE (RK4): it crosses 25 %, 50 % and
    75 % of each final projection within 1 % of the ODE's crossing times, and ends at the analytic fixed points
    (JEPA ρ^L, MAE ρ^{L/(L+1)}) and losses (½ Σ w_i² λ_i (1/ρ_i − ρ_i) for JEPA, with the predictor at ρ_i;
    ½ Σ λ_i (1/ρ_i − ρ_i) for MAE). (Times, not values, are compared: the rises are steep.) The JEPA loss *rises*
    from its start near 0: the stop-gradient dynamics are not a gradient flow of that loss; the MAE loss falls."""
    objective, depth = key
    tr = runs[key]
    data = dl.two_feature_example()
    ode = dl.solve_reduced_ode(objective, data.lambdas, data.rhos, depth, tr.init_scale, tr.times)
    ode_run = dl.Trajectory(objective, depth, tr.init_scale, tr.step_size, tr.times, ode, np.zeros(len(tr.times)),
                            data.lambdas, data.rhos)
    for fraction in (0.25, 0.5, 0.75):
        np.testing.assert_allclose(tr.critical_times(fraction, final=tr.fixed_points),
                                   ode_run.critical_times(fraction, final=tr.fixed_points), rtol=0.01)
    np.testing.assert_allclose(tr.projections[-1], tr.fixed_points, rtol=5e-3)
    expected = np.array([0.3, 1.0]) ** depth if objective == "jepa" else np.array([0.3, 1.0]) ** (depth / (depth + 1))
    np.testing.assert_allclose(tr.fixed_points, expected)
    lam, rho = data.lambdas, data.rhos
    if objective == "jepa":
        assert tr.losses[-1] == pytest.approx(0.5 * np.sum(expected ** 2 * lam * (1 / rho - rho)), rel=1e-3)
        assert tr.losses[-1] > tr.losses[0]
    else:
        assert tr.losses[-1] == pytest.approx(0.5 * np.sum(lam * (1 / rho - rho)), rel=1e-6)
        assert tr.losses[-1] < tr.losses[0]


# ---------------------------------------------------------------------------------------------------------------
# the paper's claims


def test_mae_learns_the_higher_lambda_feature_first_at_every_depth(runs):
    """MAE: A (λ = 1, noisy) before B (λ = 0.7, clean), at L = 1 and 3 (measured t(A)/t(B) 0.612, 0.684)."""
    for depth in (1, 3):
        assert _ratio(runs["mae", depth]) < 0.75


def test_deep_jepa_learns_the_higher_rho_feature_first_despite_its_lower_lambda(runs):
    """JEPA at L = 3: B (ρ = 1, λ = 0.7) before A (ρ = 0.3, λ = 1): t(A)/t(B) = 1.295 (floor 1.2); at L = 1 the
    order is still λ's (0.713, ceiling 0.8)."""
    assert _ratio(runs["jepa", 3]) > 1.2
    assert _ratio(runs["jepa", 1]) < 0.8


def test_depth_amplifies_jepas_rho_bias_far_more_than_maes(runs):
    """t(low ρ)/t(high ρ) grows from L = 1 to L = 3 by 1.82x under JEPA (floor 1.6x), by 1.12x under MAE
    (ceiling 1.2x)."""
    jepa = _ratio(runs["jepa", 3]) / _ratio(runs["jepa", 1])
    mae = _ratio(runs["mae", 3]) / _ratio(runs["mae", 1])
    assert jepa > 1.6
    assert mae < 1.2


@pytest.mark.parametrize("key", [("jepa", 1), ("jepa", 3), ("mae", 1), ("mae", 3)])
def test_measured_critical_times_match_the_exact_integral(runs, key):
    """The network's critical times (final value = last record) are within 1 % of ∫ da / f(a) of the ODE."""
    objective, depth = key
    data = dl.two_feature_example()
    predicted = dl.predicted_critical_time(objective, data.lambdas, data.rhos, depth)
    np.testing.assert_allclose(runs[key].critical_times(), predicted, rtol=0.01)


def test_equal_lambda_only_jepa_is_greedy_in_rho_and_only_when_deep():
    """Paper Fig. 2 (b, e): same λ = 1, ρ = 0.3 vs 1. Exact integral: JEPA t(0.3)/t(1) = 1.018 (L=1), 1.851 (L=3);
    MAE 0.873, 0.977 (MAE is never slower on the noisy feature). Network at L = 3 for JEPA agrees to 1 %."""
    ratios = {}
    for objective in dl.OBJECTIVES:
        for depth in (1, 3):
            t = dl.predicted_critical_time(objective, [1.0, 1.0], [0.3, 1.0], depth)
            ratios[objective, depth] = t[0] / t[1]
    assert ratios["jepa", 1] == pytest.approx(1.018, abs=0.005)
    assert ratios["jepa", 3] == pytest.approx(1.851, abs=0.005)
    assert ratios["mae", 1] < 1 and ratios["mae", 3] < 1
    tr = dl.train("jepa", dl.FeatureData([1.0, 1.0], [0.3, 1.0]), 3)
    assert _ratio(tr) == pytest.approx(ratios["jepa", 3], rel=0.01)


@pytest.mark.parametrize("objective,depth", [("jepa", 1), ("jepa", 3), ("mae", 3)])
def test_small_init_expansion_converges_to_the_exact_integral(objective, depth):
    """The diverging terms (module docstring) approach the exact critical time as ε → 0: relative error at ε = 1e-6
    below 1e-3 (measured: JEPA 7e-6 (L=1), 5e-7 (L=3); MAE 1.5e-4 (L=3)), and smaller than at ε = 1e-3."""
    lam, rho = [1.0, 0.7], [0.3, 1.0]
    errors = []
    for eps in (1e-3, 1e-6):
        exact = dl.predicted_critical_time(objective, lam, rho, depth, eps, num_points=200001)
        errors.append(np.max(np.abs(dl.critical_time_expansion(objective, lam, rho, depth, eps) / exact - 1)))
    assert errors[1] < 1e-3
    assert errors[1] < errors[0]


# ---------------------------------------------------------------------------------------------------------------
# options


def test_rotated_features_and_random_orthogonal_factors_change_nothing():
    """A random feature basis and random orthogonal layer factors give the same projections ‖W q_i‖ (to 1e-9)."""
    aligned = dl.train("jepa", dl.two_feature_example(), 1, max_time=400)
    basis = dl.random_orthogonal(2, np.random.default_rng(3))
    rotated = dl.train("jepa", dl.FeatureData([1.0, 0.7], [0.3, 1.0], basis), 1, max_time=400, seed=7)
    np.testing.assert_allclose(rotated.projections, aligned.projections, rtol=1e-9, atol=1e-12)
    mae = dl.train("mae", dl.FeatureData([1.0, 0.7], [0.3, 1.0], basis), 3, seed=7)
    np.testing.assert_allclose(mae.critical_times(), dl.predicted_critical_time("mae", [1, 0.7], [0.3, 1], 3),
                               rtol=0.01)


def test_finite_sample_training_keeps_the_orderings():
    """Full-batch training on 20,000 samples of the static model keeps the orders (JEPA L=1 and MAE L=3: A first).
    The first-learnt feature's critical time stays within 5 % of the population one. The second feature's may move
    more: sampled covariances are not exactly diagonal, and once A is learnt its small coupling to B outgrows B's
    own start, which grows like a_B^{2L} (measured for JEPA L=1: B at 246 against 290; MAE L=3: within 1 %)."""
    data = dl.two_feature_example()
    samples = data.sample(20_000, seed=1)
    for objective, depth in (("jepa", 1), ("mae", 3)):
        population = dl.predicted_critical_time(objective, data.lambdas, data.rhos, depth)
        tr = dl.train(objective, data, depth, samples=samples)
        t = tr.critical_times()
        assert t[0] < t[1]
        assert t[0] == pytest.approx(population[0], rel=0.05)
        assert t[1] == pytest.approx(population[1], rel=0.25)
    np.testing.assert_allclose(tr.projections[-1], tr.fixed_points, rtol=0.03)


def test_ema_target_delays_learning_by_a_few_target_lags():
    """JEPA with an EMA target: the target lags by about τ = step / (1 − m) time units, and every critical time moves
    later by about 2-3 τ (measured: m = 0.5 (τ = 1): +1.9, +2.3; m = 0.9 (τ = 5): +15, +18; m = 0.98 (τ = 25): +62,
    +76, against 208 and 293); the order and the fixed point stay."""
    data = dl.two_feature_example()
    stop = dl.train("jepa", data, 1).critical_times()
    previous = stop
    for momentum, lag in ((0.5, 1.0), (0.9, 5.0), (0.98, 25.0)):
        ema = dl.train("jepa", data, 1, ema_momentum=momentum, max_time=1200)
        t = ema.critical_times()
        delay = t - stop
        assert np.all(delay > 1.5 * lag) and np.all(delay < 4.0 * lag)
        assert np.all(t > previous) and t[0] < t[1]
        np.testing.assert_allclose(ema.projections[-1], ema.fixed_points, rtol=1e-3)
        previous = t


# ---------------------------------------------------------------------------------------------------------------
# input checks, the SVG, the benchmark


@pytest.mark.parametrize("call,match", [
    (lambda: dl.FeatureData([1.0], [1.5]), "rhos="),
    (lambda: dl.FeatureData([1.0, -1.0], [0.5, 0.5]), "lambdas="),
    (lambda: dl.FeatureData([1.0, 1.0], [0.5]), "rhos="),
    (lambda: dl.FeatureData([1.0, 1.0], [0.5, 0.5], np.ones((2, 2))), "orthogonal"),
    (lambda: dl.train("byol", dl.two_feature_example(), 1), "objective='byol'"),
    (lambda: dl.train("jepa", dl.two_feature_example(), 0), "depth=0"),
    (lambda: dl.train("jepa", dl.two_feature_example(), 1, step_size=-1.0), "step_size=-1.0"),
    (lambda: dl.train("mae", dl.two_feature_example(), 1, ema_momentum=0.5), "ema_momentum=0.5"),
    (lambda: dl.train("jepa", dl.two_feature_example(), 3, init_scale=0.5), "init_scale=0.5"),
    (lambda: dl.predicted_critical_time("jepa", [1.0], [0.5], 1, fraction=1.5), "fraction=1.5"),
])
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_svg_figure_is_well_formed_with_one_polyline_per_series():
    panels = [dl.Panel("a", [dl.Series("one", [0, 1, 2], [0, 0.5, 1]), dl.Series("two", [0, 2], [1, 0], "#d62728",
                                                                                 dash="4,2", marker_x=1.0)]),
              dl.Panel("b & <c>", [dl.Series("one", [0, 10], [3, 4])], ylim=(0, 5))]
    svg = dl.svg_figure(panels, columns=2, title="t")
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    polylines = root.findall(f"{ns}polyline")
    assert len(polylines) == 3
    width, height = float(root.get("width")), float(root.get("height"))
    for line in polylines:
        for point in line.get("points").split():
            px, py = map(float, point.split(","))
            assert 0 <= px <= width and 0 <= py <= height
    texts = [t.text for t in root.iter(f"{ns}text")]
    assert "b & <c>" in texts and texts.count("one") == 1 and "two" in texts  # legend: one entry per label


def test_benchmark_writes_trajectories_and_svg(tmp_path):
    """The benchmark script's ``main`` at depth 1 only (about a second)."""
    spec = importlib.util.spec_from_file_location("jepa_vs_mae_deep_linear",
                                                  ROOT / "benchmarks" / "jepa_vs_mae_deep_linear.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    bench.main(["--depths", "1", "--num-records", "200", "--output-dir", str(tmp_path)])
    result = json.loads((tmp_path / "jepa_vs_mae_deep_linear.json").read_text())
    assert [(r["objective"], r["depth"]) for r in result["runs"]] == [("jepa", 1), ("mae", 1)]
    for r in result["runs"]:
        assert r["first_learned"] == "A"
        np.testing.assert_allclose(r["critical_times"], r["predicted_critical_times"], rtol=0.01)
        assert len(r["times"]) == len(r["projections"]) >= 50
    root = ET.fromstring((tmp_path / "jepa_vs_mae_deep_linear.svg").read_text())
    assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) == 2 * 2 * 2  # panels x features x (net, ODE)
