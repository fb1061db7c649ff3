"""The figures behind ``hf-mae pretrain``'s default lr, length and augmentation (issue 13): mae-tiny at batch 64,
pretrained then probed (linear and kNN, against a random-init encoder of the same config).

    python benchmarks/pretrain_defaults.py --out runs/defaults            # every run below (~1 h on one CPU core)
    python benchmarks/pretrain_defaults.py --out runs/defaults --only digits-default

Runs (name: pretrain arguments):
- cifar-lr-<LR>: CIFAR-10 train, 1,000 steps, --no-augment, --lr LR for the old default (3.75e-5), the new one
  (3e-4) and a 5x higher one (1.5e-3): the lr alone;
- cifar-default-aug: the same 1,000 steps with every other default (lr from the rule, MAE's crop + flip);
- digits-default / digits-default-noaug: ``--dataset digits`` with every default (506 steps), with and without
  the augmentation.
Needs ``../shared/data/cifar10`` (or ``--cifar DIR``) for the CIFAR-10 runs. Prints one line per run and writes
``<out>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def runs(cifar: Path) -> dict:
    train = ["--dataset", str(cifar / "train"), "--max-steps", "1000"]
    found = {f"cifar-lr-{lr}": [*train, "--no-augment", "--lr", lr] for lr in ("3.75e-5", "3e-4", "1.5e-3")}
    found["cifar-default-aug"] = train
    found["digits-default"] = ["--dataset", "digits"]
    found["digits-default-noaug"] = ["--dataset", "digits", "--no-augment"]
    return found


def cli(*argv) -> None:
    subprocess.run([sys.executable, "-m", "hf_mae.cli", *argv], check=True, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder for the runs and summary.json")
    parser.add_argument("--cifar", default=str(ROOT.parent / "shared" / "data" / "cifar10"), help="CIFAR-10 folder")
    parser.add_argument("--only", nargs="*", default=None, help="run only these names")
    args = parser.parse_args()
    out = Path(args.out).resolve()
    summary = {}
    for name, argv in runs(Path(args.cifar)).items():
        if args.only and name not in args.only:
            continue
        run = out / name
        start = time.perf_counter()
        cli("pretrain", "--model", "mae-tiny", *argv, "--output-dir", str(run), "--overwrite", "--save-steps", "0",
            "--report-to", "none")
        wall = time.perf_counter() - start
        probe_data = [] if "digits" in name else ["--dataset", args.cifar]
        cli("probe", str(run), *probe_data, "--method", "linear", "knn", "--baseline", "random",
            "--output", str(run / "probe.json"))
        result = json.loads((run / "probe.json").read_text())
        result["wall_s"] = wall
        result["lr"] = json.loads((run / "metrics.json").read_text())["lr"]
        summary[name] = result
        print(f"{name}: lr {result['lr']:.3g}, linear {result['linear']['pretrained']:.3f} vs random "
              f"{result['linear']['random']:.3f}, kNN {result['knn']['pretrained']:.3f} vs {result['knn']['random']:.3f}"
              f", {wall:.0f} s", flush=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
