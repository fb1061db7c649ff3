"""Compare the registered image methods: probes and fine-tuning after equal pre-training, over seeds, and throughput.

For every image method in ``hf_mae.registry.METHODS`` that has a ``<name>-tiny`` preset (or those named with
``--methods``) and every ``--seeds`` seed, the script

1. pre-trains the tiny preset on the ``train`` split of ``--dataset`` (digits, or an image folder such as
   ``../shared/data/cifar10`` with ``train/`` and ``test/``) with the real pipeline
   (``hf_mae.training.pretrain.pretrain``), the same number of epochs for every method, each with its own defaults:
   the lr of ``pretrain.resolve_lr`` (the method's paper lr scaled to the batch) and its pretraining augmentation;
2. probes the frozen encoder on the ``test`` split (``hf_mae.training.probe.probe``): linear and kNN (k=20) fitted
   on the full train split, and a linear probe on 10 labels per class, each next to the same config randomly
   initialised with that seed;
3. fine-tunes it with ``transformers.Trainer`` (``hf_mae.training.finetune.finetune``, the same short budget for
   every method) and fine-tunes the same config from random init with the same budget;
4. once per invocation, times training steps (forward + backward + AdamW) of every method's fresh tiny model on one
   shared batch, interleaved (a rotating order per repeat) in this one process, median over repeats, so that the
   throughput column compares methods under the same load on a shared machine.

Each (method, seed) row is written to ``OUTPUT_DIR/rows/<method>-seed<S>.json`` (atomically) as soon as it is done;
a rerun with the same ``--output-dir`` skips the rows already there (a failed row is retried) and resumes an
interrupted pre-training from its last checkpoint; ``--report-only`` summarises what is there. A row that fails
keeps its error. The summary (mean and sample standard deviation over seeds), the machine and the command go to
``--json`` (default ``OUTPUT_DIR/compare_methods.json``) and the markdown table to ``OUTPUT_DIR/results.md``.

    python benchmarks/compare_methods.py --threads 1                                  # digits, 30 epochs, 2 seeds
    python benchmarks/compare_methods.py --dataset ../shared/data/cifar10 --methods mae mixedae \\
        --threads 1 --output-dir runs/cifar10                                          # CIFAR-10, 30 epochs

Distillation methods take their teachers with ``--teacher PREFIX=FOLDER`` (every method whose config has
``<PREFIX>_name_or_path`` loads that folder instead of its preset's tiny random teacher; the others are unaffected
and keep their rows), e.g. the CIFAR-10 MAE of ``benchmarks/cifar_teacher.py``:
``--teacher teacher=runs/teachers/mae-cifar10``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, median  # noqa: E402

from hf_mae.files import write_json, write_text  # noqa: E402
from hf_mae.registry import METHODS, create_config, create_model, create_processor  # noqa: E402
from hf_mae.training.data import collate, load_image_dataset, with_model_inputs  # noqa: E402
from hf_mae.training.finetune import finetune  # noqa: E402
from hf_mae.training.optim import build_adamw  # noqa: E402
from hf_mae.training.arguments import parse_config_overrides  # noqa: E402
from hf_mae.training.pretrain import pretrain, resolve_lr  # noqa: E402
from hf_mae.training.probe import probe  # noqa: E402

SHOTS = 10
# The per-seed numbers of a row that the summary averages: (key in the row, column title).
METRICS = (
    ("linear", "linear"), (f"linear_{SHOTS}shot", f"linear {SHOTS}/class"), ("knn", "kNN k=20"),
    ("finetune", "fine-tune"),
)

# Config overrides a method needs so that its run is comparable at any length (a function of the step count).
PER_METHOD_OVERRIDES = {
    # HPM's easy-to-hard curriculum is scheduled over ``total_steps`` forwards: make it span exactly this run.
    "hpm": lambda steps: {"total_steps": steps},
    # LUT's EMA teacher decay follows a cosine to 1 over ``total_steps``: the same for this run.
    "lut": lambda steps: {"total_steps": steps},
}


# image methods that are not masked-image pre-training for probes and fine-tuning: QLAE's feature is a 10-value
# latent code for disentanglement, compared by benchmarks/qlae_disentanglement.py instead
NOT_COMPARED = ("qlae",)


def image_methods() -> list[str]:
    """Every registered image method but ``NOT_COMPARED``, in registry order."""
    return [name for name, method in METHODS.items() if method.modality == "image" and name not in NOT_COMPARED]


def tiny_preset(method: str) -> str | None:
    preset = f"{method}-tiny"
    return preset if preset in METHODS[method].presets else None


def parse_teachers(items) -> dict:
    """``--teacher PREFIX=FOLDER ...`` -> {prefix: absolute folder}; each folder must exist (nothing is downloaded)."""
    teachers = {}
    for item in items or []:
        prefix, sep, folder = str(item).partition("=")
        if not sep or not prefix or not folder:
            raise ValueError(f"--teacher takes PREFIX=FOLDER items (e.g. teacher=runs/teachers/mae-cifar10), got {item!r}")
        if not (Path(folder) / "config.json").is_file():
            raise ValueError(f"--teacher {item!r}: {folder!r} is no model folder (no config.json); build the CIFAR-10 "
                             "teachers with benchmarks/cifar_teacher.py")
        teachers[prefix] = str(Path(folder).resolve())
    return teachers


IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # the processors' normalisation: a teacher's None


def teacher_overrides(method: str, teachers: dict) -> dict:
    """The config fields that give ``<method>-tiny`` the ``--teacher`` folders: for each PREFIX its config has
    (``<PREFIX>_name_or_path``), that folder instead of the preset's tiny random teacher, and the fields that
    described the tiny teacher now describe the folder's: ``<PREFIX>_config`` None, ``<PREFIX>_hidden_size`` /
    ``_num_hidden_layers`` from its config.json, ``<PREFIX>_image_mean`` / ``_std`` from its
    preprocessor_config.json (None when they are the ImageNet ones the student's inputs have). Only fields that
    change the preset are returned."""
    preset = create_config(tiny_preset(method)) if tiny_preset(method) else METHODS[method].config_class()
    fields = type(preset).__dataclass_fields__
    wanted = {}
    for prefix, folder in teachers.items():
        if f"{prefix}_name_or_path" not in fields:
            continue
        wanted[f"{prefix}_name_or_path"] = folder
        wanted[f"{prefix}_config"] = None
        described = json.loads((Path(folder) / "config.json").read_text())
        described = described.get("vision_config", described)
        for name in ("hidden_size", "num_hidden_layers"):
            wanted[f"{prefix}_{name}"] = described.get(name)
        processor = Path(folder) / "preprocessor_config.json"
        stats = json.loads(processor.read_text()) if processor.is_file() else {}
        if [stats.get("image_mean"), stats.get("image_std")] == list(IMAGENET) or not stats:
            stats = {}
        for name in ("image_mean", "image_std"):
            wanted[f"{prefix}_{name}"] = stats.get(name)
    return {key: value for key, value in wanted.items()
            if key in fields and _plain(getattr(preset, key)) != _plain(value)}


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def parse_method_overrides(items) -> dict:
    """``--method-overrides METHOD:KEY=VALUE ...`` -> {method: {key: typed value}} (typed by the method's config)."""
    found = {}
    for item in items or []:
        method, sep, assignment = str(item).partition(":")
        if not sep or method not in METHODS:
            raise ValueError(f"--method-overrides takes METHOD:KEY=VALUE items with a registered METHOD, got {item!r}")
        found.setdefault(method, {}).update(
            parse_config_overrides([assignment], METHODS[method].config_class, argument="--method-overrides"))
    return found


def overrides_for(method: str, steps: int, args=None) -> dict:
    """Config overrides of ``<method>-tiny`` in this run: the length-dependent ones, the ``--teacher`` folders and
    ``--method-overrides`` (in that order)."""
    make = PER_METHOD_OVERRIDES.get(method)
    overrides = dict(make(steps) if make else {})
    if args is not None:
        overrides.update(teacher_overrides(method, parse_teachers(args.teacher)))
        overrides.update(parse_method_overrides(args.method_overrides).get(method, {}))
    return overrides


def default_lr(method: str, batch_size: int) -> float:
    """The lr ``hf-mae pretrain`` gives ``<method>-tiny`` at this batch when told none (``pretrain.resolve_lr``)."""
    return resolve_lr(argparse.Namespace(lr=None, base_lr=None, model=tiny_preset(method)), batch_size)


def pretrain_steps(args) -> int:
    """--steps, else --epochs of the train split in whole batches (the pipeline drops the last partial batch)."""
    if args.steps is not None:
        return args.steps
    steps_per_epoch = len(load_image_dataset(args.dataset, "train")) // args.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"--batch-size {args.batch_size} is larger than the train split of {args.dataset!r}")
    return max(1, round(args.epochs * steps_per_epoch))


def short_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:200]


# ------------------------------------------------------------------------------------------ one (method, seed)


def same_lr(saved, method: str, args) -> bool:
    """Whether a run that trained at lr ``saved`` used today's lr (a method's recipe in its row may have changed)."""
    expected = args.lr if args.lr is not None else default_lr(method, args.batch_size)
    return saved is not None and math.isclose(saved, expected, rel_tol=1e-6)


def run_pretraining(method: str, seed: int, steps: int, run_dir: Path, args) -> dict:
    """Pre-trains ``<method>-tiny`` into ``run_dir`` (resuming an interrupted run there) and returns its metrics.
    A finished run there with another lr (the method's recipe changed) is trained again from the start."""
    metrics_file, stale = run_dir / "metrics.json", False
    if metrics_file.is_file():
        done = json.loads(metrics_file.read_text())
        stale = not same_lr(done.get("lr"), method, args)
        if not stale and done.get("steps") == steps:  # finished earlier; the probes or fine-tuning were interrupted
            return done
    overrides = overrides_for(method, steps, args)
    _, summary = pretrain(
        model=tiny_preset(method), dataset=args.dataset, split="train", output_dir=str(run_dir), max_steps=steps,
        lr=args.lr, batch_size=args.batch_size, seed=seed, config_overrides=overrides or None,
        save_steps=args.save_steps, save_total_limit=1, resume=not stale, overwrite=stale, report_to="none",
    )  # resume=True with no checkpoint in the folder starts afresh
    return summary


def run_finetuning(pretrained: Path, output_dir: Path, seed: int, from_scratch: bool, args) -> dict:
    """Fine-tunes ``pretrained`` (or its config from random init) with the shared budget; accuracy on ``test``."""
    start = time.perf_counter()
    result = finetune(
        str(pretrained), args.dataset, str(output_dir), overwrite=True, from_scratch=from_scratch,
        epochs=args.finetune_epochs, max_steps=args.finetune_steps, batch_size=args.batch_size, seed=seed,
        disable_tqdm=True,
    )
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    # one eval per epoch during training, then finetune()'s evaluate() of the best (reloaded) model
    evals = [entry["eval_accuracy"] for entry in history if "eval_accuracy" in entry]
    return {
        "best": result["eval_accuracy"],  # the best epoch on the test split (what hf-mae finetune keeps)
        "last": evals[-2] if len(evals) >= 2 else evals[-1],  # the last epoch: chosen by nobody
        "wall_s": time.perf_counter() - start,
    }


def run_row(method: str, seed: int, steps: int, args) -> dict:
    """Pre-trains, probes and fine-tunes one (method, seed); returns the row (raises on failure)."""
    folder = Path(args.output_dir) / method / f"seed{seed}"
    load_before, start = list(os.getloadavg()), time.perf_counter()
    metrics = run_pretraining(method, seed, steps, folder / "pretrain", args)
    pretrain_s = time.perf_counter() - start

    start = time.perf_counter()
    full = probe(str(folder / "pretrain"), args.dataset, ["linear", "knn"], baseline="random", seed=seed)
    few = probe(str(folder / "pretrain"), args.dataset, ["linear"], baseline="random", seed=seed, shots=SHOTS)
    probe_s = time.perf_counter() - start
    print(f"[{method} seed {seed}] probes (pretrained / random): linear {full['linear']['pretrained']:.3f} / "
          f"{full['linear']['random']:.3f}, kNN {full['knn']['pretrained']:.3f} / {full['knn']['random']:.3f}, "
          f"linear {SHOTS}/class {few['linear']['pretrained']:.3f} / {few['linear']['random']:.3f}; fine-tuning ...",
          flush=True)

    tuned = run_finetuning(folder / "pretrain", folder / "finetune", seed, False, args)
    scratch = run_finetuning(folder / "pretrain", folder / "finetune-random", seed, True, args)
    return {
        "method": method,
        "seed": seed,
        "preset": tiny_preset(method),
        "dataset": args.dataset,
        "steps": metrics.get("steps"),
        "epochs": metrics.get("steps", steps) * args.batch_size / len(load_image_dataset(args.dataset, "train")),
        "lr": metrics.get("lr"),
        "warmup_steps": metrics.get("warmup_steps"),
        "augmentation": metrics.get("augmentation"),
        "budget": budget(args, steps, method),
        "config_overrides": overrides_for(method, steps, args),
        "first_loss": metrics.get("first_loss"),
        "final_loss": metrics.get("final_loss"),
        "images_per_s_run": metrics.get("images_per_s"),
        "pretrain_wall_s": pretrain_s,  # data set, model, training, export (0 when finished by an earlier run)
        "pretrain_train_s": metrics.get("wall_time_s"),  # the training loop alone (metrics.json)
        "probe_wall_s": probe_s,
        "finetune_wall_s": tuned["wall_s"] + scratch["wall_s"],
        "load_average_before": load_before,  # 1/5/15-min: wall times are only as steady as the machine
        "load_average_after": list(os.getloadavg()),
        "linear": full["linear"]["pretrained"],
        "knn": full["knn"]["pretrained"],
        f"linear_{SHOTS}shot": few["linear"]["pretrained"],
        "finetune": tuned["last"],
        "finetune_best": tuned["best"],
        "random_linear": full["linear"]["random"],
        "random_knn": full["knn"]["random"],
        f"random_linear_{SHOTS}shot": few["linear"]["random"],
        "random_finetune": scratch["last"],
        "random_finetune_best": scratch["best"],
    }


def row_path(output_dir, method: str, seed: int) -> Path:
    return Path(output_dir) / "rows" / f"{method}-seed{seed}.json"


def budget(args, steps: int, method: str) -> dict:
    """What a row's numbers depend on besides method and seed: a finished row is reused only under the same
    (the teachers only for a method that has them, so the rows of the others stay valid)."""
    found = {"dataset": args.dataset, "steps": steps, "batch_size": args.batch_size, "lr_override": args.lr,
             "finetune_epochs": args.finetune_epochs, "finetune_steps": args.finetune_steps}
    # the teacher is identified by its folder (the size and statistics fields follow from it)
    teachers = {key: value for key, value in teacher_overrides(method, parse_teachers(args.teacher)).items()
                if key.endswith(("_name_or_path", "_config"))}
    if teachers:
        found["teachers"] = teachers
    own = parse_method_overrides(args.method_overrides).get(method)
    if own:
        found["method_overrides"] = own
    return found


def finished_row(output_dir, method: str, seed: int, expected: dict) -> dict | None:
    """The row written by an earlier run with this output dir, if it finished without an error (ValueError when it
    was run with another budget: its numbers would be mixed with different ones)."""
    path = row_path(output_dir, method, seed)
    if not path.is_file():
        return None
    row = json.loads(path.read_text())
    if "error" in row:
        return None
    if row["budget"] != expected:
        changed = {key: (row["budget"].get(key), value) for key, value in expected.items()
                   if row["budget"].get(key) != value}
        raise ValueError(f"{path} was run with another budget (saved, now): {changed}; use another --output-dir")
    return row


# ---------------------------------------------------------------------------------------------- summary


def mean_std(values) -> dict:
    """Mean and sample standard deviation (n - 1) of the per-seed numbers; std is None for one seed."""
    values = [float(v) for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def summarize(rows: list[dict], throughput: dict | None = None, methods: list[str] | None = None) -> list[dict]:
    """One entry per method (``methods``, default: those of ``rows`` in their order): mean ± std over its finished
    seeds of every metric, for the pretrained and the random-init encoder, plus the interleaved images/s and its
    ratio to MAE's."""
    throughput = throughput or {}
    methods = methods or list(dict.fromkeys(row["method"] for row in rows))
    summary = []
    for method in methods:
        done = [row for row in rows if row["method"] == method and "error" not in row]
        errors = [f"seed {row['seed']}: {row['error']}" for row in rows if row["method"] == method and "error" in row]
        entry = {"method": method, "seeds": [row["seed"] for row in done], "errors": errors}
        for key in ("steps", "epochs", "lr"):
            entry[key] = done[0][key] if done else None
        for key in ["final_loss"] + [key for key, _ in METRICS]:
            entry[key] = mean_std(row[key] for row in done)
            if key != "final_loss":
                entry[f"random_{key}"] = mean_std(row[f"random_{key}"] for row in done)
        entry["pretrain_wall_s"] = mean_std(row["pretrain_wall_s"] for row in done)
        entry["images_per_s_interleaved"] = throughput.get(method)
        summary.append(entry)
    mae = throughput.get("mae")
    for entry in summary:
        ours = entry["images_per_s_interleaved"]
        entry["relative_to_mae"] = ours / mae if ours and mae else None
    return summary


def fmt(value, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def fmt_mean_std(stat: dict, spec: str = ".3f") -> str:
    if stat["mean"] is None:
        return "–"
    return fmt(stat["mean"], spec) + ("" if stat["std"] is None else f" ± {fmt(stat['std'], spec)}")


def markdown_table(summary: list[dict]) -> str:
    """The RESULTS.md table: each probe / fine-tune cell is ``pretrained / random init``, mean ± std over seeds."""
    header = ["method", "seeds", "epochs (steps)", "lr", "final loss"]
    header += [f"{title} (pretrained / random)" for _, title in METRICS]
    header += ["img/s (interleaved)", "rel. to MAE"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for entry in summary:
        cells = [entry["method"], str(len(entry["seeds"]))]
        if entry["seeds"]:
            cells += [f"{round(entry['epochs'], 1):g} ({entry['steps']})", fmt(entry["lr"], ".2g"),
                      fmt_mean_std(entry["final_loss"], ".4f")]
            cells += [f"{fmt_mean_std(entry[key])} / {fmt_mean_std(entry[f'random_{key}'])}" for key, _ in METRICS]
        else:
            cells += ["–"] * (3 + len(METRICS))
        relative = fmt(entry["relative_to_mae"], ".2f") + ("x" if entry["relative_to_mae"] is not None else "")
        if entry["errors"]:
            relative += " (error: " + "; ".join(entry["errors"]) + ")"
        cells += [fmt(entry["images_per_s_interleaved"], ".0f"), relative]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- throughput


def shared_batch(preset: str, dataset: str, batch_size: int) -> torch.Tensor:
    """The first ``batch_size`` train images of ``dataset`` as ``(B, 3, H, W)`` pixel values for ``preset``."""
    images = with_model_inputs(load_image_dataset(dataset, "train"), create_processor(preset), with_labels=False)
    return collate([images[i] for i in range(batch_size)])["pixel_values"]


def interleaved_throughput(methods: list[str], steps: int, args) -> tuple[dict, dict]:
    """Training images/s of each method's fresh tiny model on one shared batch, timed interleaved.

    Each repeat times ``--bench-steps`` steps of every model in a rotated order; the result is the median of the
    repeats. Returns ({method: images/s}, {method: error}).
    """
    models, errors, pixels = {}, {}, None
    for method in methods:
        try:
            preset = tiny_preset(method)
            torch.manual_seed(0)
            model = create_model(preset, **overrides_for(method, steps, args)).train()
            optimizer = build_adamw(model, default_lr(method, args.batch_size))
            if pixels is None:
                pixels = shared_batch(preset, args.dataset, args.batch_size)
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


# ------------------------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=None,
                        help=f"image methods to compare (default: every registered one: {' '.join(image_methods())})")
    parser.add_argument("--dataset", default="digits",
                        help="digits, or an image folder with train/ and test/ (e.g. ../shared/data/cifar10): "
                             "pre-training, probes and fine-tuning fit on train and report on test (default: digits)")
    parser.add_argument("--epochs", type=float, default=30.0, help="pre-training epochs of the train split (default: 30)")
    parser.add_argument("--steps", type=int, default=None, help="pre-training steps (wins over --epochs)")
    parser.add_argument("--batch-size", type=int, default=64, help="pre-training and fine-tuning batch size (default: 64)")
    parser.add_argument("--lr", type=float, default=None,
                        help="one pre-training lr for every method (default: each method's own, "
                             "hf_mae.training.pretrain.resolve_lr at --batch-size)")
    parser.add_argument("--teacher", nargs="*", default=[], metavar="PREFIX=FOLDER",
                        help="teachers of the distillation methods: a method whose config has <PREFIX>_name_or_path "
                             "loads FOLDER there instead of its tiny random teacher, e.g. teacher=runs/teachers/"
                             "mae-cifar10 (benchmarks/cifar_teacher.py); the teacher's forward is in the throughput")
    parser.add_argument("--method-overrides", nargs="*", default=[], metavar="METHOD:KEY=VALUE",
                        help="config fields of one method's tiny preset, e.g. dmae:teacher_layers=[9] (typed as "
                             "hf-mae pretrain --config-overrides; recorded in that method's rows)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="one row per method and seed (default: 0 1)")
    parser.add_argument("--finetune-epochs", type=float, default=5.0,
                        help="fine-tuning budget, the same for every method and for the random-init model "
                             "(default: 5)")
    parser.add_argument("--finetune-steps", type=int, default=None, help="fine-tuning steps (wins over epochs)")
    parser.add_argument("--output-dir", default="runs/compare",
                        help="run folders, rows/<method>-seed<S>.json and results.md go here; a rerun skips the "
                             "rows already written (default: runs/compare)")
    parser.add_argument("--json", default=None, help="the whole comparison as JSON (default: OUTPUT_DIR/"
                                                     "compare_methods.json)")
    parser.add_argument("--save-steps", type=int, default=500, help="pre-training checkpoint every N steps, for resuming (default: 500)")
    parser.add_argument("--bench-repeats", type=int, default=7, help="interleaved throughput: timed repeats (default: 7)")
    parser.add_argument("--bench-steps", type=int, default=5, help="interleaved throughput: steps per repeat (default: 5)")
    parser.add_argument("--bench-warmup", type=int, default=3, help="interleaved throughput: untimed steps first (default: 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads for everything (default: torch's choice); 1 avoids oversubscription "
                             "slow-downs when other processes share the cores")
    parser.add_argument("--skip-throughput", action="store_true", help="no interleaved micro-benchmark")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: summarise the rows already in --output-dir (e.g. written by several "
                             "processes, one per method), with the throughput unless --skip-throughput")
    return parser


def check_args(args) -> list[str]:
    available = image_methods()
    methods = args.methods or available
    unknown = [m for m in methods if m not in available]
    if unknown:
        raise ValueError(f"--methods: unknown image method(s) {unknown}; registered image methods: {available}")
    for name in ("batch_size", "bench_repeats", "bench_steps", "steps", "finetune_steps", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    for name in ("epochs", "finetune_epochs", "lr"):
        value = getattr(args, name)
        if value is not None and not (value > 0 and math.isfinite(value)):
            raise ValueError(f"--{name.replace('_', '-')} must be a number > 0, got {value}")
    for name in ("bench_warmup", "save_steps"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if len(set(args.seeds)) != len(args.seeds):
        raise ValueError(f"--seeds must differ from each other, got {args.seeds}")
    parse_teachers(args.teacher)  # bad items fail before anything runs
    parse_method_overrides(args.method_overrides)
    return methods


def main(argv=None) -> dict:
    """Runs the comparison; returns what it writes to the JSON."""
    from tqdm.auto import tqdm

    from transformers.utils import logging

    args = build_parser().parse_args(argv)
    methods = check_args(args)
    logging.set_verbosity_error()  # a fine-tuned classifier's newly initialised head is expected, not news
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    info = machine_info(torch.device("cpu"))
    steps = pretrain_steps(args)
    output_dir = Path(args.output_dir)
    runnable = [m for m in methods if tiny_preset(m) is not None]
    skipped = {m: f"skipped: no {m}-tiny preset" for m in methods if m not in runnable}

    rows = []
    jobs = [(method, seed) for seed in args.seeds for method in runnable]  # every method's seed 0 first
    progress = tqdm(jobs, desc="compare", unit="run", dynamic_ncols=True)
    for method, seed in progress:
        progress.set_postfix_str(f"{method} seed {seed}")
        row = finished_row(output_dir, method, seed, budget(args, steps, method))
        if row is not None and not same_lr(row.get("lr"), method, args):
            progress.write(f"[{method} seed {seed}] trained at lr {row.get('lr')}, the recipe's lr has changed since: "
                           "running it again")
            row = None
        if row is not None:
            progress.write(f"[{method} seed {seed}] done earlier: {row_path(output_dir, method, seed)}")
        elif args.report_only:
            progress.write(f"[{method} seed {seed}] not finished yet (--report-only)")
            continue
        else:
            try:
                row = run_row(method, seed, steps, args)
                progress.write(
                    f"[{method} seed {seed}] loss {row['first_loss']:.4f} -> {row['final_loss']:.4f}; "
                    f"linear {row['linear']:.3f} (random {row['random_linear']:.3f}), kNN {row['knn']:.3f} "
                    f"({row['random_knn']:.3f}), fine-tune {row['finetune']:.3f} ({row['random_finetune']:.3f})")
            except Exception as error:  # noqa: BLE001 - keep the error in the row, go on with the next one
                row = {"method": method, "seed": seed, "error": short_error(error),
                       "traceback": traceback.format_exc()}
                progress.write(f"[{method} seed {seed}] FAILED: {row['error']}")
            write_json(row_path(output_dir, method, seed), row)
        rows.append(row)
    progress.close()

    throughput, throughput_errors = {}, {}
    if not args.skip_throughput and runnable:
        print(f"interleaved throughput of {', '.join(runnable)} ...", flush=True)
        throughput, throughput_errors = interleaved_throughput(runnable, steps, args)
    info["load_average_end"] = os.getloadavg()
    order = {method: i for i, method in enumerate(methods)}
    rows.sort(key=lambda row: (order[row["method"]], row["seed"]))
    summary = summarize(rows, throughput, runnable)
    for entry in summary:
        if entry["method"] in throughput_errors:
            entry["errors"].append(f"throughput: {throughput_errors[entry['method']]}")
    summary += [{"method": m, "seeds": [], "errors": [reason], "images_per_s_interleaved": None,
                 "relative_to_mae": None} for m, reason in skipped.items()]
    table = markdown_table(summary)
    print(table)
    command = "python benchmarks/compare_methods.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = {"machine": info, "command": command, "args": vars(args), "pretrain_steps": steps, "rows": rows,
              "summary": summary, "throughput_images_per_s": throughput, "table": table}
    json_path = Path(args.json) if args.json else output_dir / "compare_methods.json"
    write_json(json_path, result)
    write_text(output_dir / "results.md", table + "\n")
    print(f"wrote {json_path} and {output_dir / 'results.md'}")
    return result


if __name__ == "__main__":
    main()
    sys.exit(0)
