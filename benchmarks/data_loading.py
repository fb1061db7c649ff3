"""Is data loading the bottleneck of ``hf-mae pretrain``? The loader alone against the training step, in one process.

The loader is built exactly as ``hf-mae pretrain`` builds it (``pretrain.build_parser`` + ``build_dataloader``, then
``accelerator.prepare``): decode the JPEGs of an image folder, augment each image with the method's recipe (MAE's
RandomResizedCrop + flip, straight to the model's size: 32 px, or CIFAR-10 upsampled to 224 px), run the processor,
collate. It is timed three ways, at each ``--num-workers``:

- **loader**: batches pulled as fast as the loader gives them, nothing else running (images/s after the first batch;
  the first batch's latency, worker start-up included, is reported apart: it recurs once per epoch, since workers
  are not persistent);
- **step**: the training step alone (forward + backward + AdamW, ``optim.build_adamw`` at the default lr rule) on
  batches loaded beforehand (images/s);
- **train**: the two together, the step pulling its batches from the loader, as ``hf-mae pretrain`` runs.

``loader / step`` > 1 means the loader outpaces the step when it runs alone; ``train / step`` is what is left of the
step's speed once the loader shares the machine with it (1.0: loading is free). With workers the loader runs in
other processes, which on a small machine compete with the step for the same cores, hence the third measurement.

    python benchmarks/data_loading.py --threads 1 --json benchmarks/data_loading.json    # a few minutes on CPU
    python benchmarks/data_loading.py --models mae-tiny-32 --num-workers 0 2 --steps 20
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = ROOT.parent / "shared" / "data" / "cifar10" / "train"
# name -> (preset, config overrides, default batch size, default timed steps): the model sizes of issue 13
MODELS = {
    "mae-tiny-32": ("mae-tiny", [], 64, 10),
    # ViT-S/16 (384 wide, 12 blocks, 6 heads) with MAE's 512 x 8 decoder: mae-vit-base-patch16's decoder and 224 px
    "vit-s16-224": ("mae-vit-base-patch16", ["hidden_size=384", "num_attention_heads=6", "intermediate_size=1536"], 16, 3),
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET), help="an image folder (class sub-folders)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--num-workers", type=int, nargs="+", default=[0, 1, 2], help="DataLoader worker counts")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 64 at 32 px, 16 at 224 px")
    parser.add_argument("--loader-batches", type=int, default=20, help="timed batches per loader measurement")
    parser.add_argument("--steps", type=int, nargs="+", default=None,
                        help="timed training steps per model, one value for all or one per model (default: 10 for "
                             "mae-tiny-32, 3 for vit-s16-224)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps / batches before each timing")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    if args.steps is None:
        args.steps = [MODELS[name][3] for name in args.models]
    if len(args.steps) not in (1, len(args.models)):
        parser.error(f"--steps takes 1 or {len(args.models)} values (one per model), got {len(args.steps)}")
    args.steps = args.steps * len(args.models) if len(args.steps) == 1 else args.steps
    for name, values in (("--num-workers", args.num_workers), ("--steps", args.steps),
                         ("--loader-batches", [args.loader_batches])):
        if any(v < (0 if name == "--num-workers" else 1) for v in values):
            parser.error(f"{name} must be >= {0 if name == '--num-workers' else 1}, got {values}")
    if not Path(args.dataset).is_dir():
        parser.error(f"--dataset {args.dataset!r} is not a folder (CIFAR-10 lives in ../shared/data/cifar10/train)")
    return args


def pretrain_args(preset: str, overrides: list[str], dataset: str, batch_size: int, workers: int, seed: int):
    """The parsed command line of ``hf-mae pretrain`` for this loader (its defaults: augmentation on)."""
    from hf_mae.training.pretrain import build_parser

    argv = ["--model", preset, "--dataset", dataset, "--output-dir", "unused", "--batch-size", str(batch_size),
            "--num-workers", str(workers), "--seed", str(seed)]
    if overrides:
        argv += ["--config-overrides", *overrides]
    return build_parser().parse_args(argv)


def build_loader(accelerator, args, processor):
    """``hf-mae pretrain``'s loader: ``build_dataloader`` and ``accelerator.prepare`` (its look-ahead included)."""
    from hf_mae.training.pretrain import build_dataloader

    loader, _ = build_dataloader(args, processor)
    return accelerator.prepare(loader)


def time_loader(loader, batches: int, warmup: int) -> dict:
    """Images/s of ``batches`` batches after the first ``1 + warmup`` (the first one's latency is reported apart)."""
    start = time.perf_counter()
    iterator = iter(loader)
    first = next(iterator)
    first_latency = time.perf_counter() - start
    for _ in range(warmup):
        next(iterator)
    images, start = 0, time.perf_counter()
    for _ in range(batches):
        images += next(iterator)["pixel_values"].shape[0]
    elapsed = time.perf_counter() - start
    iterator.close()  # shuts the workers down (accelerate's loader is a generator)
    return {"images_per_s": images / elapsed, "first_batch_s": first_latency, "batch_size": first["pixel_values"].shape[0]}


def training_step(model, optimizer, batch) -> float:
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()


def time_steps(model, optimizer, batches, steps: int, warmup: int) -> dict:
    """Images/s of ``steps`` training steps on ``batches`` (an iterator: loaded beforehand, or the loader itself)."""
    for _ in range(warmup):
        training_step(model, optimizer, next(batches))
    images, start = 0, time.perf_counter()
    for _ in range(steps):
        batch = next(batches)
        training_step(model, optimizer, batch)
        images += batch["pixel_values"].shape[0]
    return {"images_per_s": images / (time.perf_counter() - start)}


def measure_model(name: str, args, steps: int, progress) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from hf_mae import registry
    from hf_mae.training.optim import build_adamw
    from hf_mae.training.pretrain import parse_overrides, resolve_lr

    preset, overrides, default_batch, _ = MODELS[name]
    batch_size = args.batch_size or default_batch
    accelerator = Accelerator(cpu=True)
    config = registry.create_config(preset, **parse_overrides(overrides, preset))
    processor = registry.processor_for_config(config)
    run_args = {w: pretrain_args(preset, overrides, args.dataset, batch_size, w, args.seed) for w in args.num_workers}

    result = {"preset": preset, "config_overrides": overrides, "image_size": config.image_size,
              "batch_size": batch_size, "loader": {}, "train": {}}
    loaders = {}  # built once per worker count (loading the folder's index takes seconds); each iter() starts afresh
    for workers in args.num_workers:
        progress.set_description(f"{name}: loader, {workers} worker(s)")
        loaders[workers] = build_loader(accelerator, run_args[workers], processor)
        result["loader"][workers] = time_loader(loaders[workers], args.loader_batches, args.warmup)
        progress.update(1)

    progress.set_description(f"{name}: step alone")
    set_seed(args.seed)
    model = registry.get_method(preset).model_classes["pretraining"](config).train()
    lr = resolve_lr(run_args[args.num_workers[0]], batch_size)
    optimizer = build_adamw(model, lr, 0.05)
    loaded = list(itertools.islice(iter(loaders[args.num_workers[0]]), 2))  # cycled: real augmented images
    result["step"] = time_steps(model, optimizer, itertools.cycle(loaded), steps, args.warmup)
    result["step"]["lr"] = lr
    progress.update(1)

    for workers in args.num_workers:
        progress.set_description(f"{name}: train, {workers} worker(s)")
        iterator = iter(loaders[workers])
        next(iterator)  # the worker start-up (once per epoch) is in the loader's first_batch_s, not here
        result["train"][workers] = time_steps(model, optimizer, iterator, steps, args.warmup)
        iterator.close()
        progress.update(1)

    step_rate = result["step"]["images_per_s"]
    result["ratios"] = {
        workers: {"loader_over_step": result["loader"][workers]["images_per_s"] / step_rate,
                  "train_over_step": result["train"][workers]["images_per_s"] / step_rate}
        for workers in args.num_workers
    }
    return result


def markdown(results: dict) -> str:
    lines = ["| model | batch | workers | loader img/s | first batch s | step img/s | train img/s | loader / step | "
             "train / step |", "|---|---|---|---|---|---|---|---|---|"]
    for name, result in results.items():
        for workers, loader in result["loader"].items():
            ratio = result["ratios"][workers]
            lines.append(
                f"| {name} | {result['batch_size']} | {workers} | {loader['images_per_s']:.0f} | "
                f"{loader['first_batch_s']:.2f} | {result['step']['images_per_s']:.1f} | "
                f"{result['train'][workers]['images_per_s']:.1f} | {ratio['loader_over_step']:.1f} | "
                f"{ratio['train_over_step']:.2f} |"
            )
    return "\n".join(lines)


def main(argv=None):
    from tqdm.auto import tqdm

    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    results = {}
    total = len(args.models) * (2 * len(args.num_workers) + 1)
    with tqdm(total=total, desc="data loading", dynamic_ncols=True) as progress:
        for name, steps in zip(args.models, args.steps):
            results[name] = measure_model(name, args, steps, progress)
    report = {
        "machine": machine_info(torch.device("cpu")),
        "command": " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv]),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "results": results,
    }
    print(json.dumps(report["machine"]))
    print(markdown(results))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    return report


if __name__ == "__main__":
    main()
