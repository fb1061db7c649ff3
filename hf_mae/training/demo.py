"""``hf-mae demo``: the main job of the quick start, end to end on a CPU in a few minutes.

1. pretrain ``mae-tiny`` on scikit-learn's bundled digits with the Accelerate script (checkpoint, model folder,
   reconstruction figure, metrics);
2. probe the frozen encoder against a random-init encoder of the same config: a linear probe on every training
   label, the same linear probe on 10 labels per class, and a weighted kNN;
3. print where everything is.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .arguments import positive_float, positive_int

    parser.add_argument("--output-dir", default="runs/demo", help="run folder (replaced if it holds an earlier demo)")
    parser.add_argument("--steps", type=positive_int, default=800, help="pre-training steps (batch 64)")
    parser.add_argument("--lr", type=positive_float, default=1.5e-3, help="pre-training learning rate")
    parser.add_argument("--seed", type=int, default=0, help="seeds the pre-training and the probes")


def run(args) -> int:
    from .pretrain import pretrain
    from .probe import probe, write_json

    output_dir = Path(args.output_dir)
    print(f"[1/2] pretraining mae-tiny on digits for {args.steps} steps -> {output_dir}")
    output_dir, summary = pretrain(
        model="mae-tiny", dataset="digits", output_dir=str(output_dir), max_steps=args.steps, lr=args.lr,
        batch_size=64, save_steps=max(args.steps // 4, 1), seed=args.seed, overwrite=True,
    )
    print("[2/2] probing the frozen encoder against a random-init encoder of the same config")
    full = probe(output_dir, "digits", ["linear", "knn"], baseline="random", seed=args.seed)  # one feature pass
    results = {
        "linear": full["linear"],
        "linear_10_per_class": probe(output_dir, "digits", "linear", baseline="random", shots=10, seed=args.seed)["linear"],
        "knn": full["knn"],
    }
    write_json(results, output_dir / "probe.json")

    print(f"\nmasked reconstruction loss: {summary['first_loss']:.3f} -> {summary['final_loss']:.3f}")
    names = {"linear": "linear probe", "linear_10_per_class": "linear probe, 10 labels/class", "knn": "kNN (k=20)"}
    for key, row in results.items():
        print(f"{names[key] + ':':32s} pretrained {row['pretrained']:.3f}   random init {row['random']:.3f}")
    print(f"\nmodel + processor: {output_dir}   (AutoModelForPreTraining.from_pretrained({str(output_dir)!r}))")
    print(f"reconstructions:   {output_dir / 'reconstruction.png'}")
    return 0
