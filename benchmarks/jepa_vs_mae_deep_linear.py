"""JEPA vs MAE in deep linear networks (Littwin et al., NeurIPS 2024): which feature each objective learns first.

    python benchmarks/jepa_vs_mae_deep_linear.py                       # ~10-20 s on one CPU thread
    python benchmarks/jepa_vs_mae_deep_linear.py --depths 1 2 3 --output-dir runs/deep-linear

Trains the deep linear encoder of ``hf_mae.theory.deep_linear`` (float64, gradient descent from the paper's small
balanced initialisation, population loss) with the JEPA objective (predictor + stop-gradient target) and the MAE
objective (decoder reconstructing the other view) on two features (default: A with λ = 1, ρ = 0.3, noisy; B with
λ = 0.7, ρ = 1, clean), at each depth, and writes to ``--output-dir`` (default ``benchmarks/figures``):

- ``jepa_vs_mae_deep_linear.json``: per run the projection trajectories ``‖W(t) q_i‖`` (about ``--num-records``
  points), the measured critical times (half the final projection), the exact ones of the per-feature ODE, their
  small-init expansion, and the ratio t(A)/t(B) (low ρ over high ρ);
- ``jepa_vs_mae_deep_linear.svg``: the projections normalised by their final values (solid: the network; dashed:
  the per-feature ODE; dotted verticals: measured critical times), one panel per objective and depth;

and prints the critical-time table. The finding to look for: MAE learns A (the higher λ) first at every depth;
JEPA learns A first at depth 1 but B (the higher ρ) first at depth 3, and its ratio t(A)/t(B) grows with depth.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from hf_mae.files import write_json, write_text
from hf_mae.theory import deep_linear as dl

COLORS = ("#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def _rounded(values: np.ndarray) -> list:
    """Six significant digits (the JSON stays small; nothing downstream needs more)."""
    return np.vectorize(lambda v: float(f"{v:.6g}"))(values).tolist()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    example = dl.two_feature_example()
    parser.add_argument("--lambdas", type=float, nargs="+", default=list(example.lambdas),
                        help="cross-view covariance per feature (default: 1.0 0.7)")
    parser.add_argument("--rhos", type=float, nargs="+", default=list(example.rhos),
                        help="regression coefficient per feature, in (0, 1] (default: 0.3 1.0)")
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 3], help="encoder depths L (default: 1 3)")
    parser.add_argument("--init-scale", type=float, default=dl.DEFAULT_INIT_SCALE,
                        help=f"ε, the encoder's initial scale (each layer ε^(1/L)) (default: {dl.DEFAULT_INIT_SCALE})")
    parser.add_argument("--jepa-step-size", type=float, default=dl.DEFAULT_STEP_SIZES["jepa"])
    parser.add_argument("--mae-step-size", type=float, default=dl.DEFAULT_STEP_SIZES["mae"])
    parser.add_argument("--num-records", type=int, default=300, help="trajectory points kept per run (default: 300)")
    parser.add_argument("--output-dir", default=str(Path(__file__).resolve().parent / "figures"))
    return parser


def run(args) -> dict:
    data = dl.FeatureData(lambdas=args.lambdas, rhos=args.rhos)
    names = [chr(ord("A") + i) for i in range(data.dim)]
    step_sizes = {"jepa": args.jepa_step_size, "mae": args.mae_step_size}
    runs, panels = [], []
    for objective in dl.OBJECTIVES:
        for depth in args.depths:
            trajectory = dl.train(objective, data, depth, init_scale=args.init_scale,
                                  step_size=step_sizes[objective], num_records=args.num_records)
            measured = trajectory.critical_times()
            predicted = dl.predicted_critical_time(objective, data.lambdas, data.rhos, depth, args.init_scale)
            expansion = dl.critical_time_expansion(objective, data.lambdas, data.rhos, depth, args.init_scale)
            ode = dl.solve_reduced_ode(objective, data.lambdas, data.rhos, depth, args.init_scale, trajectory.times)
            final = trajectory.projections[-1]
            runs.append({
                "objective": objective, "depth": depth, "step_size": trajectory.step_size,
                "fixed_points": trajectory.fixed_points.tolist(), "final_projections": final.tolist(),
                "critical_times": measured.tolist(), "predicted_critical_times": predicted.tolist(),
                "expansion_critical_times": expansion.tolist(),
                "first_learned": names[int(np.argmin(measured))],
                "ratio_first_over_second": float(measured[0] / measured[1]) if data.dim >= 2 else None,
                "times": _rounded(trajectory.times), "projections": _rounded(trajectory.projections),
                "losses": _rounded(trajectory.losses),
            })
            series = []
            for i, name in enumerate(names):
                label = f"{name}: λ={data.lambdas[i]:g}, ρ={data.rhos[i]:g}"
                color = COLORS[i % len(COLORS)]
                series.append(dl.Series(label, trajectory.times, trajectory.projections[:, i] / final[i], color,
                                        marker_x=float(measured[i])))
                series.append(dl.Series(f"{name}: per-feature ODE", trajectory.times, ode[:, i] / final[i], color,
                                        dash="5,4"))
            panels.append(dl.Panel(f"{objective.upper()}, depth L={depth}", series, xlabel="time (gradient flow)",
                                   ylabel="projection / final", ylim=(0.0, 1.05)))
    svg = dl.svg_figure(panels, columns=len(args.depths),
                        title="Deep linear encoders: feature projections ‖W(t) q_i‖ (JEPA vs MAE)")
    return {"lambdas": data.lambdas.tolist(), "rhos": data.rhos.tolist(), "init_scale": args.init_scale,
            "runs": runs, "svg": svg}


def table(result: dict) -> str:
    dim = len(result["lambdas"])
    names = [chr(ord("A") + i) for i in range(dim)]
    head = " | ".join(f"t*({n}) measured / ODE" for n in names)
    lines = [f"| objective | L | {head} | first | t*(A)/t*(B) |", "|---" * (4 + dim) + "|"]
    for r in result["runs"]:
        cells = " | ".join(f"{m:.4g} / {p:.4g}" for m, p in zip(r["critical_times"], r["predicted_critical_times"]))
        ratio = "" if r["ratio_first_over_second"] is None else f"{r['ratio_first_over_second']:.3f}"
        lines.append(f"| {r['objective'].upper()} | {r['depth']} | {cells} | {r['first_learned']} | {ratio} |")
    return "\n".join(lines)


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    result = run(args)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    svg = result.pop("svg")
    write_text(out / "jepa_vs_mae_deep_linear.svg", svg)
    write_json(out / "jepa_vs_mae_deep_linear.json", result, indent=None)
    text = table(result)
    print(text)
    print(f"wrote {out / 'jepa_vs_mae_deep_linear.svg'} and {out / 'jepa_vs_mae_deep_linear.json'}")
    return result


if __name__ == "__main__":
    main()
