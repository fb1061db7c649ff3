"""Compare the registered image methods on digits: probe accuracy after equal pre-training, and training throughput.

For every image method in ``hf_mae.registry.METHODS`` that has a ``<name>-tiny`` preset (or those named with
``--methods``) the script

1. pre-trains the tiny preset on digits with the real pipeline (``hf_mae.training.pretrain.pretrain``), the same
   steps, batch size, lr and seed for every method;
2. probes the frozen encoder with ``hf_mae.training.probe.probe``: linear and kNN on the full train split, and a
   linear probe on 10 labels per class, each next to the same config randomly initialised;
3. times training steps (forward + backward + AdamW) of every method's fresh tiny model on one shared batch,
   interleaved (a rotating order per repeat) in this one process, median over repeats, so that the throughput
   column compares methods under the same load on a shared machine. The run's own ``images_per_s`` (from its
   ``metrics.json``, data loading included) is reported too.

A method that fails (an error while building, pre-training or probing) keeps its row, with the error.

    python benchmarks/compare_methods.py --steps 800 --json runs/compare_methods.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, median  # noqa: E402

from hf_mae.registry import METHODS, create_model, create_processor  # noqa: E402
from hf_mae.training.data import collate, load_image_dataset, with_model_inputs  # noqa: E402
from hf_mae.training.optim import build_adamw  # noqa: E402
from hf_mae.training.pretrain import pretrain  # noqa: E402
from hf_mae.training.probe import probe, write_json  # noqa: E402

DATASET = "digits"
LR = 1.5e-3  # the shared learning rate of this 800-step digits recipe
SHOTS = 10

# Methods that diverge at LR get their own (the paper's ImageNet recipes do not transfer to 800 steps on digits).
# SimMIM's encoder sees every token, mask tokens included; at 1.5e-3 it ended worse than its random init (linear
# 0.744 vs 0.864), at 5e-4 better (0.894 vs 0.864), see RESULTS.md.
PER_METHOD_LR = {"simmim": 5e-4}

# Config overrides a method needs so that its run is comparable at any --steps (a function of the step count).
PER_METHOD_OVERRIDES = {
    # HPM's easy-to-hard curriculum is scheduled over ``total_steps`` forwards: make it span exactly this run.
    "hpm": lambda steps: {"total_steps": steps},
    # LUT's EMA teacher decay follows a cosine to 1 over ``total_steps``: the same for this run.
    "lut": lambda steps: {"total_steps": steps},
}


def image_methods() -> list[str]:
    """Every registered image method, in registry order."""
    return [name for name, method in METHODS.items() if method.modality == "image"]


def tiny_preset(method: str) -> str | None:
    preset = f"{method}-tiny"
    return preset if preset in METHODS[method].presets else None


def overrides_for(method: str, steps: int) -> dict:
    make = PER_METHOD_OVERRIDES.get(method)
    return make(steps) if make else {}


def lr_for(method: str) -> float:
    return PER_METHOD_LR.get(method, LR)


def short_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:200]


def pretrain_and_probe(method: str, args) -> dict:
    """Pre-trains ``<method>-tiny`` and probes it; returns the row's numbers (raises on failure)."""
    preset = tiny_preset(method)
    run_dir = Path(args.output_dir) / method
    overrides = overrides_for(method, args.steps)
    load_before, start = os.getloadavg(), time.perf_counter()
    pretrain(
        model=preset, dataset=DATASET, output_dir=str(run_dir), max_steps=args.steps, lr=lr_for(method),
        batch_size=args.batch_size, save_steps=0, overwrite=True, seed=args.seed,
        config_overrides=overrides or None,
    )
    pretrain_s, load_after = time.perf_counter() - start, os.getloadavg()
    with open(run_dir / "metrics.json") as f:
        metrics = json.load(f)
    full = probe(str(run_dir), DATASET, ["linear", "knn"], baseline="random", seed=args.seed)
    few = probe(str(run_dir), DATASET, ["linear"], baseline="random", seed=args.seed, shots=SHOTS)
    return {
        "preset": preset,
        "lr": lr_for(method),
        "config_overrides": overrides,
        "steps": metrics.get("steps", args.steps),
        "first_loss": metrics.get("first_loss"),
        "final_loss": metrics.get("final_loss"),
        "images_per_s_run": metrics.get("images_per_s"),
        "pretrain_wall_s": pretrain_s,
        "load_average_before": load_before,  # 1/5/15-min: the run's img/s is only as steady as the machine
        "load_average_after": load_after,
        "linear": full["linear"]["pretrained"],
        "knn": full["knn"]["pretrained"],
        f"linear_{SHOTS}shot": few["linear"]["pretrained"],
        "random_linear": full["linear"]["random"],
        "random_knn": full["knn"]["random"],
        f"random_linear_{SHOTS}shot": few["linear"]["random"],
    }


def shared_batch(preset: str, batch_size: int) -> torch.Tensor:
    """The first ``batch_size`` digits train images as ``(B, 3, H, W)`` pixel values for ``preset``."""
    dataset = with_model_inputs(load_image_dataset(DATASET, "train"), create_processor(preset), with_labels=False)
    return collate([dataset[i] for i in range(batch_size)])["pixel_values"]


def interleaved_throughput(methods: list[str], args) -> tuple[dict, dict]:
    """Training images/s of each method's fresh tiny model on one shared batch, timed interleaved.

    Each repeat times ``--bench-steps`` steps of every model in a rotated order; the result is the median of the
    repeats. Returns ({method: images/s}, {method: error}).
    """
    models, errors, pixels = {}, {}, None
    for method in methods:
        try:
            preset = tiny_preset(method)
            torch.manual_seed(args.seed)
            model = create_model(preset, **overrides_for(method, args.steps)).train()
            optimizer = build_adamw(model, LR)
            if pixels is None:
                pixels = shared_batch(preset, args.batch_size)
            models[method] = (model, optimizer)
            for _ in range(args.bench_warmup):
                train_step(model, optimizer, pixels)
        except Exception as error:  # noqa: BLE001 - a broken method must not stop the others
            errors[method] = short_error(error)
            models.pop(method, None)
    times = {method: [] for method in models}
    order = list(models)
    for repeat in range(args.bench_repeats):
        shift = repeat % max(len(order), 1)
        for method in order[shift:] + order[:shift]:
            model, optimizer = models[method]
            start = time.perf_counter()
            for _ in range(args.bench_steps):
                train_step(model, optimizer, pixels)
            times[method].append(time.perf_counter() - start)
    images = args.batch_size * args.bench_steps
    return {method: images / median(t) for method, t in times.items()}, errors


def train_step(model, optimizer, pixels: torch.Tensor) -> None:
    loss = model(pixel_values=pixels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def fmt(value, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def markdown_table(rows: list[dict]) -> str:
    header = ("| method | steps | lr | final loss | linear | linear 10/class | kNN | random-init linear / 10/class / kNN "
              "| img/s (run) | img/s (interleaved) | rel. to MAE |")
    lines = [header, "|" + "---|" * header.count(" | ") + "---|"]
    mae = next((row.get("images_per_s_interleaved") for row in rows if row["method"] == "mae"), None)
    for row in rows:
        if "error" in row and "linear" not in row:
            lines.append(f"| {row['method']} | – | – | – | – | – | – | – | – | "
                         f"{fmt(row.get('images_per_s_interleaved'), '.0f')} | error: {row['error']} |")
            continue
        ours = row.get("images_per_s_interleaved")
        relative = f"{ours / mae:.2f}x" if ours and mae else "–"
        if "error" in row:
            relative += f" (error: {row['error']})"
        random_init = (f"{fmt(row['random_linear'])} / {fmt(row[f'random_linear_{SHOTS}shot'])} / "
                       f"{fmt(row['random_knn'])}")
        lines.append(
            f"| {row['method']} | {row['steps']} | {row['lr']:g} | {fmt(row['final_loss'], '.4f')} | {fmt(row['linear'])} | "
            f"{fmt(row[f'linear_{SHOTS}shot'])} | {fmt(row['knn'])} | {random_init} | "
            f"{fmt(row['images_per_s_run'], '.0f')} | {fmt(ours, '.0f')} | {relative} |"
        )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=None,
                        help=f"image methods to compare (default: every registered one: {' '.join(image_methods())})")
    parser.add_argument("--steps", type=int, default=800, help="pre-training steps per method")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output-dir", default="runs/compare", help="one run folder per method under here")
    parser.add_argument("--json", default=None, help="write the rows and machine facts as JSON here")
    parser.add_argument("--bench-repeats", type=int, default=7, help="interleaved throughput: timed repeats")
    parser.add_argument("--bench-steps", type=int, default=5, help="interleaved throughput: steps per repeat")
    parser.add_argument("--bench-warmup", type=int, default=3, help="interleaved throughput: untimed steps first")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for everything (default: torch's choice); 1 avoids oversubscription "
                             "slow-downs when other processes share the cores")
    parser.add_argument("--skip-throughput", action="store_true", help="no interleaved micro-benchmark")
    return parser


def check_args(args) -> list[str]:
    available = image_methods()
    methods = args.methods or available
    unknown = [m for m in methods if m not in available]
    if unknown:
        raise ValueError(f"--methods: unknown image method(s) {unknown}; registered image methods: {available}")
    for name in ("steps", "batch_size", "bench_repeats", "bench_steps"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if args.bench_warmup < 0:
        raise ValueError(f"--bench-warmup must be >= 0, got {args.bench_warmup}")
    return methods


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    methods = check_args(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    info = machine_info(torch.device("cpu"))
    rows, runnable = [], []
    for method in methods:
        row = {"method": method}
        rows.append(row)
        if tiny_preset(method) is None:
            row["error"] = f"skipped: no {method}-tiny preset"
            print(f"[{method}] {row['error']}", flush=True)
            continue
        runnable.append(method)
        print(f"[{method}] pre-training {tiny_preset(method)} for {args.steps} steps ...", flush=True)
        try:
            row.update(pretrain_and_probe(method, args))
            print(f"[{method}] loss {row['first_loss']:.4f} -> {row['final_loss']:.4f}; linear {row['linear']:.3f}, "
                  f"kNN {row['knn']:.3f}, linear {SHOTS}/class {row[f'linear_{SHOTS}shot']:.3f}", flush=True)
        except Exception as error:  # noqa: BLE001 - report it in the row, go on with the next method
            row["error"] = short_error(error)
            row["traceback"] = traceback.format_exc()
            print(f"[{method}] FAILED: {row['error']}", flush=True)
    if not args.skip_throughput and runnable:
        print(f"interleaved throughput of {', '.join(runnable)} ...", flush=True)
        throughput, errors = interleaved_throughput(runnable, args)
        for row in rows:
            if row["method"] in throughput:
                row["images_per_s_interleaved"] = throughput[row["method"]]
            if row["method"] in errors:
                row.setdefault("error", errors[row["method"]])
    info["load_average_end"] = os.getloadavg()
    table = markdown_table(rows)
    print(table)
    if args.json:
        command = "python benchmarks/compare_methods.py " + " ".join(sys.argv[1:] if argv is None else argv)
        write_json({"machine": info, "command": command, "args": vars(args), "rows": rows, "table": table}, args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
