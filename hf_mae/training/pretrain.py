"""``hf-mae pretrain``: self-supervised pre-training of a preset with Accelerate, resumable.

    hf-mae pretrain --model mae-tiny --dataset digits --output-dir runs/mae --max-steps 500
    accelerate launch --num_processes 8 -m hf_mae.training.pretrain --model mae-vit-base-patch16 ...

One script for one CPU, one GPU or many (``accelerate launch``). What it does:
- AdamW with the recipe's betas and weight decay (MAE's 0.9, 0.95 and 0.05 unless the method's row says
  otherwise; QLAE's 0.1), none on norms, biases, position embeddings, tokens and codebooks; the lr (``resolve_lr``):
  ``--lr``; else ``--base-lr * effective_batch / 256`` (the papers' rule, as their scripts use it); else the
  method's own absolute lr (``Method.pretrain_lr``: GraphMAE, Point-MAE, I2P-MAE); else ``LR_RULE``: the paper's lr
  at the paper's batch, scaled linearly above that batch and by the square root below it; linear warm-up (5% of
  the steps), then cosine to 0 (see ``optim.py``);
- with neither --epochs nor --max-steps, whole epochs of at least ``DEFAULT_MIN_STEPS`` steps;
- image methods augment each image with their recipe (``augmentation.py``; ``--no-augment``: as it is);
- data in a seeded per-epoch order that a resumed run recomputes, skipping the batches already seen;
- checkpoints ``DIR/checkpoints/step_N`` (``accelerator.save_state``: model, optimiser, scheduler, RNG, plus
  ``trainer_state.json`` with the data position), written to a temporary folder and renamed, the last K kept;
  ``--resume`` continues from the newest one and ends with the same weights as an uninterrupted run;
- metrics as JSON lines in ``DIR/metrics.jsonl`` (and TensorBoard when installed);
- at the end ``DIR`` holds a ``from_pretrained``-able model and processor, ``reconstruction.png``,
  ``metrics.json`` (summary) and ``run_args.json``.

Set ``HF_MAE_RANK_REPORT=1`` to make every process write ``DIR/rank_K.json`` (parameter checksum and a hash of
the data it saw), which the multi-process test uses to check that DDP kept the ranks in step.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from ..files import write_json, write_text

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
TMP_PREFIX = ".tmp-"
# files a run writes into its folder (what --overwrite removes; anything else there is left alone)
RUN_FILES = (
    CHECKPOINTS, "metrics.jsonl", "metrics.json", "run_args.json", "model.safetensors", "config.json",
    "preprocessor_config.json", "reconstruction.png", "tensorboard",
    # text methods: the tokenizer beside the model, the plain encoder in encoder/
    "processor_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
    "encoder", "lm",
)
# the default lr, as --help and the README state it
LR_RULE = (
    "lr = paper_lr * sqrt(batch / paper_batch) below the paper's batch, paper_lr * batch / paper_batch at or above "
    "it, with paper_lr = base_lr * paper_batch / 256 from the method's own paper (MAE: base_lr 1.5e-4, paper_batch "
    "4096, so 2.4e-3 at 4096, 6e-4 at 256, 3e-4 at 64; SimMIM 4e-4 at 2048, so 7.1e-5 at 64; every method's values: "
    "README, 'Default learning rate and length'); batch = the effective batch (batch size x grad accum x processes); "
    "GraphMAE, Point-MAE and I2P-MAE take their recipe's absolute lr"
)
# without --epochs or --max-steps: whole epochs, at least this many optimiser steps (one epoch of digits is 22)
DEFAULT_MIN_STEPS = 500
# --num-workers auto: measured with benchmarks/data_loading.py (benchmarks/RESULTS.md, "Data loading")
AUTO_MAX_WORKERS = 10  # MAE's main_pretrain.py default per GPU
NUM_WORKERS_HELP = (
    "DataLoader worker processes, or auto: 0 when the run trains on the CPU, else one per CPU core of this process "
    "but one, at most 10 (MAE's). Why: on CPU the workers take cores from the step (2 shared cores, 1 thread: "
    "mae-tiny trains at 0.83 / 0.82 / 0.78 of its loader-free speed with 0 / 1 / 2 workers; a 224-px ViT-S/16 "
    "spends 0.5%% of its step loading), while one loading process gives ~3,000 CIFAR-10 images/s at 32 px and "
    "~360 at 224 px, far below what a GPU step takes in"
)
# arguments a resumed run must share with the run it continues
RESUME_KEYS = ("model", "config_overrides", "mask_ratio", "dataset", "split", "streaming", "batch_size", "grad_accum", "seed",
               "no_augment")


# --------------------------------------------------------------------------------------------- arguments


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .arguments import int_or_auto, non_negative_float, non_negative_int, positive_float, positive_int, rate

    model = parser.add_argument_group("model and data")
    model.add_argument("--model", required=True, help="preset name (see `hf-mae list`), e.g. mae-tiny")
    model.add_argument("--config-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                       help="config fields to change, typed by the config (true/false, 1,2 for lists), e.g. "
                            "hidden_size=32 num_hidden_layers=2")
    model.add_argument("--mask-ratio", type=rate, default=None, help="override the preset's mask ratio")
    model.add_argument("--dataset", required=True,
                       help="digits, sprites, a local image folder or a Hugging Face dataset id; text methods: a .txt "
                            "file (a text per line), a .jsonl file (BEIR corpus rows: title + text), a folder of "
                            "them or a datasets id; image-text methods: a folder with captions.jsonl (coco-mini), a .jsonl of image + "
                            "caption rows, an image-folder tree (class-name captions, e.g. CIFAR-10) or a datasets id")
    model.add_argument("--split", default="train", help="the data set split to train on")
    model.add_argument("--streaming", action="store_true", help="stream the data set (needs --max-steps)")
    model.add_argument("--num-workers", type=int_or_auto, default="auto", help=NUM_WORKERS_HELP)
    model.add_argument("--no-augment", action="store_true",
                       help="feed each image as it is. Default: image methods augment with their recipe (the registry "
                            "row's pretrain_augmentation; MAE: RandomResizedCrop scale 0.2-1, ratio 3/4-4/3, bicubic, "
                            "+ horizontal flip; SimMIM: scale 0.67-1, bilinear; DMJD: scale 0.5-1), seeded per image by "
                            "--seed, epoch and index; LUT's and CropMAE's own two views are kept either way")
    model.add_argument("--output-dir", required=True, help="the run folder (model, checkpoints, metrics)")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--batch-size", type=positive_int, default=64, help="images per device per micro-batch")
    optim.add_argument("--grad-accum", type=positive_int, default=1, help="micro-batches per optimiser step")
    optim.add_argument("--base-lr", type=positive_float, default=None,
                       help="lr = base_lr * effective batch / 256, the papers' linear rule (default: " + LR_RULE + ")")
    optim.add_argument("--lr", type=positive_float, default=None, help="absolute learning rate (overrides --base-lr)")
    optim.add_argument("--weight-decay", type=non_negative_float, default=None,
                       help="AdamW weight decay (default: the method's recipe, the registry row's pretrain_weight_decay: "
                            "0.05 for MAE and most methods, 0.1 for QLAE)")
    optim.add_argument("--warmup-steps", type=non_negative_int, default=None, help="default: 5%% of the steps")
    optim.add_argument("--warmup-epochs", type=non_negative_float, default=None, help="warm-up length in epochs")
    optim.add_argument("--max-steps", type=positive_int, default=None, help="optimiser steps (wins over --epochs)")
    optim.add_argument("--epochs", type=positive_float, default=None,
                       help=f"passes over the data (default: whole epochs of at least {DEFAULT_MIN_STEPS} steps)")
    optim.add_argument("--clip-grad", type=positive_float, default=None, help="max gradient norm (default: no clipping)")
    optim.add_argument("--seed", type=int, default=0, help="seeds the init, the data order and the masks")
    optim.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations to save memory")
    optim.add_argument("--mixed-precision", default="auto", choices=["auto", "no", "bf16", "fp16"],
                       help="auto: bf16 on CUDA, no on CPU (or what `accelerate launch` was told)")

    run = parser.add_argument_group("run folder")
    run.add_argument("--save-steps", type=non_negative_int, default=500, help="checkpoint every N steps (0: never)")
    run.add_argument("--save-total-limit", type=positive_int, default=2, help="checkpoints to keep")
    run.add_argument("--log-steps", type=positive_int, default=10, help="write metrics every N steps")
    run.add_argument("--report-to", default="auto", choices=["auto", "tensorboard", "none"],
                     help="auto: TensorBoard when it is installed; metrics.jsonl is always written")
    run.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output-dir")
    run.add_argument("--overwrite", action="store_true", help="replace a run already in --output-dir")


def build_parser() -> argparse.ArgumentParser:
    from .arguments import DefaultsHelpFormatter

    parser = argparse.ArgumentParser(prog="hf-mae pretrain", description=__doc__.split("\n\n")[0],
                                     formatter_class=DefaultsHelpFormatter)
    add_arguments(parser)
    return parser


def parse_overrides(items, model: str | None = None) -> dict:
    """``["hidden_size=32", "norm_pix_loss=false"]`` (or a dict) -> ``{"hidden_size": 32, "norm_pix_loss": False}``,
    each value typed by the field of preset ``model``'s config class (unknown fields and bad values: ValueError)."""
    from .. import registry
    from .arguments import parse_config_overrides

    config_class = registry.get_method(model).config_class if model is not None else None
    return parse_config_overrides(items, config_class)


def check_args(args) -> None:
    """Cheap checks that need neither a model nor data (every message names the argument and the allowed range).
    The CLI's argparse types check the same ranges; this covers the Python API (``pretrain(...)``)."""
    from .. import registry

    registry.get_method(args.model)  # ValueError listing the presets
    positive = ("batch_size", "grad_accum", "log_steps", "save_total_limit")
    for name in positive:
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("max_steps", "epochs", "lr", "base_lr", "clip_grad"):
        value = getattr(args, name)
        if value is not None and not value > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be > 0, got {value}")
    if args.num_workers != "auto" and (isinstance(args.num_workers, bool) or not isinstance(args.num_workers, int)):
        raise ValueError(f"--num-workers must be 'auto' or an int >= 0, got {args.num_workers!r}")
    for name in ("save_steps", "num_workers", "warmup_steps", "warmup_epochs", "weight_decay"):
        value = getattr(args, name)
        if value not in (None, "auto") and value < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    if args.streaming and args.max_steps is None:
        raise ValueError("--streaming needs --max-steps (a streamed data set has no length to count epochs by)")
    if args.resume and args.overwrite:
        raise ValueError("--resume and --overwrite contradict each other; give one of them")
    if args.report_to == "tensorboard" and not tensorboard_importable():
        raise ValueError(
            "--report-to tensorboard: tensorboard is not installed (pip install tensorboard, or hf-mae[tensorboard]); "
            "pass --report-to none (or auto) to log to metrics.jsonl only"
        )
    parse_overrides(args.config_overrides, args.model)  # unknown fields / badly typed values


def tensorboard_importable() -> bool:
    """Whether accelerate's TensorBoard tracker can import its writer (an installed but broken package counts as no)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_lr(args, effective_batch: int) -> float:
    """--lr if given; else --base-lr with the papers' ``base_lr * effective_batch / 256``; else the method's own
    absolute lr (``Method.pretrain_lr``: GraphMAE, Point-MAE, I2P-MAE); else ``LR_RULE`` with the method's
    ``pretrain_base_lr`` and ``pretrain_batch`` (``optim.small_batch_lr``)."""
    from .. import registry
    from .optim import scaled_lr, small_batch_lr

    if args.lr is not None:
        return args.lr
    if args.base_lr is not None:
        return scaled_lr(args.base_lr, effective_batch)
    method = registry.get_method(args.model)
    if method.pretrain_lr is not None:
        return method.pretrain_lr
    return small_batch_lr(method.pretrain_base_lr, effective_batch, method.pretrain_batch)


def plan_steps(args, steps_per_epoch: int) -> int:
    """Optimiser steps of a run over a data set of ``steps_per_epoch``: --max-steps, else --epochs, else whole epochs
    of at least ``DEFAULT_MIN_STEPS`` steps (one epoch of a small data set teaches nothing: digits is 22 steps)."""
    if args.max_steps:
        return args.max_steps
    if args.epochs:
        return max(1, round(args.epochs * steps_per_epoch))
    return math.ceil(DEFAULT_MIN_STEPS / steps_per_epoch) * steps_per_epoch


# ----------------------------------------------------------------------------------------- data ordering


class EpochSampler(torch.utils.data.Sampler):
    """A seeded random permutation per epoch (``seed + epoch``), so a resumed run can recompute the order.
    ``keyed=True`` yields ``(epoch, index)`` pairs, the keys of ``data.SeededImages``: the epoch travels with each
    key into whatever worker loads it."""

    def __init__(self, num_samples: int, seed: int, keyed: bool = False):
        self.num_samples, self.seed, self.epoch, self.keyed = num_samples, seed, 0, keyed

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.num_samples, generator=generator).tolist()
        return iter([(self.epoch, index) for index in order] if self.keyed else order)

    def __len__(self) -> int:
        return self.num_samples


def augmentation_of(args):
    """The run's augmentation recipe: the method's (``Method.pretrain_augmentation``), or None with --no-augment."""
    from .. import registry

    return None if getattr(args, "no_augment", False) else registry.get_method(args.model).pretrain_augmentation


def resolve_num_workers(value) -> int:
    """``--num-workers``: an int as it is; ``"auto"``: 0 when the run trains on the CPU (the workers would compete
    with the step for its cores), else the CPU cores this process may use, divided among the processes of this
    machine (``LOCAL_WORLD_SIZE``), minus one for the process itself, at most ``AUTO_MAX_WORKERS``."""
    if value != "auto":
        return int(value)
    if not torch.cuda.is_available():  # train() trains on the CPU exactly then
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(AUTO_MAX_WORKERS, cores // local_processes - 1))


SAMPLE_UNITS = {"text": "texts", "video": "videos", "video-text": "videos", "embeddings": "videos", "audio": "clips"}


def sample_unit(preset: str) -> str:
    """What one training sample is called in the progress bar and the summary ("images", "texts"); the metrics keep
    the key ``images_per_s`` for every modality so old runs' files read the same."""
    from .. import registry

    return SAMPLE_UNITS.get(registry.get_method(preset).modality, "images")


def build_dataloader(args, processor):
    """(DataLoader, the raw data set) for the run; the loader's own generator keeps the global RNG untouched."""
    from .. import registry
    from .data import collate, load_image_dataset, with_model_inputs

    if registry.get_method(args.model).modality == "text":
        return build_text_dataloader(args, processor)
    if registry.get_method(args.model).modality == "image-text":
        return build_image_text_dataloader(args, processor)
    raw = load_image_dataset(args.dataset, args.split, streaming=args.streaming)
    if args.streaming:
        raw = raw.shuffle(seed=args.seed, buffer_size=1000)
    # training=True: fresh random views (LUT, CropMAE) or frame windows (video) on every access; with a recipe,
    # every image is augmented from a generator seeded by (seed, epoch, index), and a processor's own random draws
    # are seeded by the batch's (epoch, index) keys, whatever worker loads it (data.SeededBatches)
    augmentation = augmentation_of(args)
    dataset = with_model_inputs(raw, processor, with_labels=False, training=True, augmentation=augmentation,
                                seed=args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    # Workers are started afresh each epoch (not persistent): a stream's epoch is set on the main process's copy
    # of the data set, which persistent workers would never see (a map-style set gets it in its keys either way).
    common = dict(batch_size=args.batch_size, drop_last=True, collate_fn=collate,
                  num_workers=resolve_num_workers(args.num_workers), generator=generator)
    if args.streaming:
        return torch.utils.data.DataLoader(dataset, **common), raw
    sampler = EpochSampler(len(dataset), args.seed, keyed=getattr(dataset, "epoch_keys", False))
    return torch.utils.data.DataLoader(dataset, sampler=sampler, **common), raw


def text_of(row) -> tuple:
    return (row["text"],)


class KeyedRows(torch.utils.data.Dataset):
    """A map-style data set read by ``(epoch, index)`` keys (``EpochSampler(..., keyed=True)``): each row travels
    with its key, which seeds the batch's draws (:class:`TextCollator`, ``image_text_data.ImageTextCollator``).
    ``read`` turns a row into what follows the key: a tuple (default ``text_of``: the row's text)."""

    epoch_keys = True

    def __init__(self, dataset, read=text_of):
        self.dataset, self.read = dataset, read

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        epoch, index = key if isinstance(key, (tuple, list)) else (0, key)
        return ((int(epoch), int(index)), *self.read(self.dataset[int(index)]))


class TextCollator:
    """Texts -> the method's pre-training inputs: ``processor(texts, for_pretraining=True, generator=g)``, with ``g``
    seeded by the batch alone, so a resumed run and another --num-workers draw the same masks: keyed rows
    (map-style) by ``sample_seed(seed, *keys)``; a stream's rows (no keys) by a digest of their texts (a resumed run
    replays the stream's order, so it meets the same batches)."""

    def __init__(self, processor, seed: int):
        self.processor, self.seed = processor, seed

    def __call__(self, rows):
        from .augmentation import sample_seed

        if rows and isinstance(rows[0], tuple):
            keys, texts = zip(*rows)
            batch_seed = sample_seed(self.seed, *(p for key in keys for p in key))
        else:
            texts = [row["text"] for row in rows]
            digest = hashlib.blake2b("\0".join(texts).encode(), digest_size=8).digest()
            batch_seed = sample_seed(self.seed, -1, int.from_bytes(digest, "little") >> 1)
        generator = torch.Generator().manual_seed(batch_seed)
        return dict(self.processor(list(texts), return_tensors="pt", for_pretraining=True, generator=generator))


def build_text_dataloader(args, processor):
    """(DataLoader, raw data set) for a text method: rows of ``load_text_dataset`` batched into the processor's
    pre-training inputs (tokenised, truncated, masked) by :class:`TextCollator`."""
    from .text_data import load_text_dataset

    raw = load_text_dataset(args.dataset, args.split, streaming=args.streaming)
    generator = torch.Generator().manual_seed(args.seed)
    common = dict(batch_size=args.batch_size, drop_last=True, collate_fn=TextCollator(processor, args.seed),
                  num_workers=resolve_num_workers(args.num_workers), generator=generator)
    if args.streaming:
        return torch.utils.data.DataLoader(raw.shuffle(seed=args.seed, buffer_size=1000), **common), raw
    dataset = KeyedRows(raw)
    sampler = EpochSampler(len(dataset), args.seed, keyed=True)
    return torch.utils.data.DataLoader(dataset, sampler=sampler, **common), raw


def build_image_text_dataloader(args, processor):
    """(DataLoader, raw data set) for an image-text method (M3AE): the (image, caption, group) rows of
    ``image_text_data.load_image_text_dataset`` batched into the processor's pre-training inputs (images processed,
    captions tokenised and masked, MIM noise, ITM pairs from other groups), seeded by each batch's (epoch, index)
    keys."""
    from .image_text_data import ImageTextCollator, image_text_row, load_image_text_dataset

    if args.streaming:
        raise ValueError("--streaming is not supported for image-text data (the rows are read by index)")
    raw = load_image_text_dataset(args.dataset, args.split)
    dataset = KeyedRows(raw, read=image_text_row)
    common = dict(batch_size=args.batch_size, drop_last=True, collate_fn=ImageTextCollator(processor, args.seed),
                  num_workers=resolve_num_workers(args.num_workers), generator=torch.Generator().manual_seed(args.seed))
    sampler = EpochSampler(len(dataset), args.seed, keyed=True)
    return torch.utils.data.DataLoader(dataset, sampler=sampler, **common), raw


# ------------------------------------------------------------------------------------------- run folder


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints ``(step, folder)``, oldest first (temporary folders are never listed)."""
    folder = output_dir / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        if child.is_dir() and child.name.startswith("step_") and child.name[5:].isdigit():
            found.append((int(child.name[5:]), child))
    return sorted(found)


def _holds_run(output_dir: Path) -> bool:
    return output_dir.is_dir() and any(output_dir.iterdir())


def _remove_run_files(output_dir: Path) -> None:
    for name in RUN_FILES:
        path = output_dir / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for path in output_dir.glob("rank_*.json"):
        path.unlink()


def plan_output_dir(args, output_dir: Path):
    """Decides what to do with the folder (read only): returns the checkpoint to resume from, or None."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"--output-dir {str(output_dir)!r} is a file, not a folder")
    checkpoints = list_checkpoints(output_dir)
    if args.resume:
        saved = output_dir / "run_args.json"
        if saved.is_file():
            previous = json.loads(saved.read_text())
            previous.setdefault("no_augment", True)  # runs saved before augmentation existed fed images as they are
            current = run_args_dict(args)
            changed = {k: (previous.get(k), current[k]) for k in RESUME_KEYS if previous.get(k) != current[k]}
            if changed:
                raise ValueError(
                    f"--resume: these arguments differ from the run in {output_dir} (saved, given): {changed}"
                )
        return checkpoints[-1][1] if checkpoints else None
    if _holds_run(output_dir) and not args.overwrite:
        raise ValueError(
            f"--output-dir {str(output_dir)!r} is not empty (it holds {sorted(p.name for p in output_dir.iterdir())[:8]}); "
            "pass --resume to continue that run or --overwrite to replace it"
        )
    return None


def run_args_dict(args) -> dict:
    data = {k: v for k, v in vars(args).items() if not k.startswith("_") and k != "command"}
    data["config_overrides"] = parse_overrides(args.config_overrides, args.model)
    if data.get("teachers"):  # instances passed from Python: recorded by class, never serialised
        data["teachers"] = {name: type(model).__name__ for name, model in data["teachers"].items()}
    return json.loads(json.dumps(data, default=str))  # plain JSON types, as read back from run_args.json


def read_checkpoint_state(folder: Path) -> dict:
    path = folder / STATE_FILE
    try:
        state = json.loads(path.read_text())
        return {key: int(state[key]) for key in ("step", "epoch", "batch_in_epoch", "num_processes")}
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"checkpoint {folder} is incomplete or corrupt: cannot read {STATE_FILE} ({error})") from error


def save_checkpoint(accelerator, output_dir: Path, state: dict, keep: int) -> Path:
    """``accelerator.save_state`` + ``trainer_state.json`` (``state``: step and data position) into
    ``checkpoints/step_N``, written to a temporary folder and renamed; keeps the newest ``keep`` checkpoints."""
    checkpoint_dir = output_dir / CHECKPOINTS
    final = checkpoint_dir / f"step_{state['step']}"
    tmp = checkpoint_dir / f"{TMP_PREFIX}{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))  # every process writes its own RNG state
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(tmp / STATE_FILE, state, sort_keys=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)  # the checkpoint appears complete or not at all
        for _, old in list_checkpoints(output_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def truncate_metrics(path: Path, step: int) -> None:
    """Drops the lines of ``metrics.jsonl`` logged after ``step`` (a resumed run logs them again)."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
    write_text(path, "".join(line + "\n" for line in kept))


# ------------------------------------------------------------------------------------------ checksums


def _tensor_digest(tensors) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def write_rank_report(accelerator, model, output_dir: Path, first_batch_hash: str, data_hash: str, batches: int):
    params = [p for _, p in sorted(accelerator.unwrap_model(model).named_parameters())]
    report = {
        "rank": accelerator.process_index,
        "num_processes": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "param_sha256": _tensor_digest(params),
        "param_sum": float(sum(p.detach().double().sum() for p in params)),
        "first_batch_sha256": first_batch_hash,
        "data_sha256": data_hash,
        "batches": batches,
    }
    write_json(output_dir / f"rank_{accelerator.process_index}.json", report, sort_keys=True)


# ------------------------------------------------------------------------------------------ training


def _mixed_precision(choice: str) -> str | None:
    if choice != "auto":
        return choice
    if "ACCELERATE_MIXED_PRECISION" in os.environ:  # `accelerate launch --mixed_precision ...` decides
        return None
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"


def _tracker_config(data: dict) -> dict:
    """TensorBoard hparams accept only scalars and strings."""
    config = {}
    for key, value in data.items():
        if value is None:
            continue
        config[key] = value if isinstance(value, (bool, int, float, str)) else json.dumps(value)
    return config


def train(args) -> tuple[Path, dict]:
    """Runs the pre-training described by ``args`` (the parsed CLI); returns (output dir, summary)."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType, ProjectConfiguration, set_seed
    from tqdm.auto import tqdm

    from .. import registry
    from .augmentation import describe
    from .optim import build_adamw, warmup_cosine_schedule
    from .visualize import save_reconstruction_grid

    check_args(args)
    output_dir = Path(args.output_dir).resolve()
    overrides = parse_overrides(args.config_overrides, args.model)
    if args.mask_ratio is not None:
        overrides["mask_ratio"] = args.mask_ratio
    config = registry.create_config(args.model, **overrides)  # unknown fields / bad values fail here
    resume_from = plan_output_dir(args, output_dir)  # read-only: every process decides the same

    use_tensorboard = args.report_to == "tensorboard" or (args.report_to == "auto" and tensorboard_importable())
    accelerator = Accelerator(
        cpu=not torch.cuda.is_available(),  # without it a CPU `accelerate launch` runs independent jobs, not DDP
        mixed_precision=_mixed_precision(args.mixed_precision),
        gradient_accumulation_steps=args.grad_accum,
        log_with="tensorboard" if use_tensorboard else None,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir)),
    )
    processor = registry.processor_for_config(config)
    loader, raw_dataset = build_dataloader(args, processor)
    if "num_features" in config.__dataclass_fields__ and "num_features" not in overrides and not args.streaming:
        # graph models size their input layer to the data set's node features unless told otherwise
        config.num_features = int(loader.dataset[0]["node_features"].shape[-1])
    set_seed(args.seed)
    method = registry.get_method(args.model)
    model = method.model_classes["pretraining"](config, **teacher_instances(args, method))
    if args.gradient_checkpointing:
        enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
        enable()
    model.train()

    # The folder is touched only now, once the model and data are known to be fine.
    is_main = accelerator.is_main_process
    checkpoint_dir = output_dir / CHECKPOINTS
    accelerator.wait_for_everyone()  # everyone has inspected the folder before the main process changes it
    if is_main:
        if args.overwrite or (args.resume and resume_from is None):
            _remove_run_files(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()

    effective_batch = args.batch_size * args.grad_accum * accelerator.num_processes
    lr = resolve_lr(args, effective_batch)
    weight_decay = method.pretrain_weight_decay if args.weight_decay is None else args.weight_decay
    optimizer = build_adamw(model, lr, weight_decay, betas=method.pretrain_betas)
    raw_optimizer = optimizer
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    # Same init everywhere (DDP broadcasts rank 0's anyway), but each process draws its own masks.
    set_seed(args.seed, device_specific=True)

    if args.streaming:
        steps_per_epoch = None
        total_steps = args.max_steps
    else:
        if len(loader) == 0:
            raise ValueError(
                f"--dataset {args.dataset!r} split {args.split!r} has {len(raw_dataset)} images, fewer than one "
                f"batch of --batch-size {args.batch_size} x {accelerator.num_processes} process(es)"
            )
        steps_per_epoch = math.ceil(len(loader) / args.grad_accum)
        total_steps = plan_steps(args, steps_per_epoch)
    if args.warmup_steps is not None:
        warmup_steps = args.warmup_steps
    elif args.warmup_epochs is not None and steps_per_epoch is not None:
        warmup_steps = round(args.warmup_epochs * steps_per_epoch)
    else:
        warmup_steps = round(0.05 * total_steps)  # MAE: 40 warm-up epochs of 800
    warmup_steps = min(warmup_steps, total_steps)
    # Stepped by hand once per optimiser step (accelerate's prepared scheduler would step num_processes times).
    scheduler = warmup_cosine_schedule(raw_optimizer, warmup_steps, total_steps)
    accelerator.register_for_checkpointing(scheduler)

    step, epoch, skip_batches = 0, 0, 0
    if resume_from is not None:
        state = read_checkpoint_state(resume_from)
        if state["num_processes"] != accelerator.num_processes:
            raise ValueError(
                f"checkpoint {resume_from} was written by {state['num_processes']} process(es); resume it with "
                f"the same number (now {accelerator.num_processes})"
            )
        try:
            accelerator.load_state(str(resume_from))
        except Exception as error:  # truncated safetensors / pickles: say which checkpoint and what to do
            raise ValueError(
                f"checkpoint {resume_from} is corrupt or truncated ({type(error).__name__}: {error}); delete that "
                "folder to resume from the previous checkpoint, or start again with --overwrite"
            ) from error
        step, epoch, skip_batches = state["step"], state["epoch"], state["batch_in_epoch"]
        accelerator.print(f"resuming from {resume_from} (step {step}, epoch {epoch}, batch {skip_batches})")

    metrics_path = output_dir / "metrics.jsonl"
    if is_main:
        for leftover in checkpoint_dir.glob(TMP_PREFIX + "*") if checkpoint_dir.is_dir() else []:
            shutil.rmtree(leftover)  # a save that was killed half-way
        if resume_from is None:
            write_json(output_dir / "run_args.json", run_args_dict(args), sort_keys=True)
        truncate_metrics(metrics_path, step)
    accelerator.wait_for_everyone()
    if use_tensorboard:
        accelerator.init_trackers("tensorboard", config=_tracker_config(run_args_dict(args)))

    # A model with an EMA teacher moves it once per real optimiser step, in this hook (teachers.EMATeacherMixin);
    # called first with the step the run starts (or resumes) at, which moves nothing and hands the updates to
    # this loop, so that micro-batch forwards no longer move the teacher.
    after_optimizer_step = getattr(accelerator.unwrap_model(model), "after_optimizer_step", None)
    if after_optimizer_step is not None and accelerator.distributed_type == DistributedType.FSDP and not accelerator.is_fsdp2:
        raise ValueError(
            f"--model {args.model} has an EMA teacher, which reads the whole student after every step, but FSDP1 "
            "keeps the parameters as flat shards; launch with `accelerate launch --use_fsdp --fsdp_version 2`"
        )
    if after_optimizer_step is not None:
        after_optimizer_step(step)

    rank_report = os.environ.get("HF_MAE_RANK_REPORT") == "1"
    data_digest, first_batch_hash, batches_seen = hashlib.sha256(), None, 0
    start_step, images_seen = step, 0
    window_losses, window_images, window_start = [], 0, time.perf_counter()
    train_start = time.perf_counter()
    progress = tqdm(total=total_steps, initial=step, disable=not accelerator.is_local_main_process,
                    desc="pretrain", dynamic_ncols=True,
                    mininterval=1.0 if sys.stderr.isatty() else 30.0)  # keep CI / file logs short
    batches = None
    main_input = accelerator.unwrap_model(model).main_input_name
    unit = sample_unit(args.model)
    try:
        while step < total_steps:
            loader.set_epoch(epoch)  # the sampler's permutation (or the stream's shuffle) for this epoch
            batches = accelerator.skip_first_batches(loader, skip_batches) if skip_batches else loader
            batch_in_epoch, skip_batches = skip_batches, 0
            for batch in batches:
                batch_in_epoch += 1
                pixel_values = batch[main_input]  # the images / clips (inputs_embeds for LV-MAE)
                if rank_report:
                    batch_hash = _tensor_digest([pixel_values])
                    first_batch_hash = first_batch_hash or batch_hash
                    data_digest.update(batch_hash.encode())
                    batches_seen += 1
                with accelerator.accumulate(model):
                    loss = model(**batch).loss  # pixel_values (and pixel_values_2 for two-view methods)
                    mean_loss = accelerator.reduce(loss.detach().float(), reduction="mean")  # every rank stops together
                    if not torch.isfinite(mean_loss):
                        good = list_checkpoints(output_dir)
                        raise FloatingPointError(
                            f"non-finite loss ({mean_loss.item()}) at step {step + 1} (epoch {epoch}); stopped "
                            f"without saving. Last good checkpoint: {good[-1][1] if good else 'none'}. "
                            "Try a lower --lr / --base-lr or --clip-grad."
                        )
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and args.clip_grad:
                        accelerator.clip_grad_norm_(model.parameters(), args.clip_grad)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                window_losses.append(mean_loss.item())
                window_images += pixel_values.shape[0] * accelerator.num_processes
                if not accelerator.sync_gradients:
                    continue

                current_lr = raw_optimizer.param_groups[0]["lr"]  # the lr this step used
                scheduler.step()
                step += 1
                if after_optimizer_step is not None:
                    after_optimizer_step(step)
                progress.update(1)
                if step % args.log_steps == 0 or step == total_steps:
                    elapsed = time.perf_counter() - window_start
                    record = {
                        "step": step,
                        "loss": sum(window_losses) / len(window_losses),
                        "lr": current_lr,
                        "images_per_s": window_images / max(elapsed, 1e-9),
                        "epoch": round(step / steps_per_epoch, 4) if steps_per_epoch else epoch,
                    }
                    progress.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{current_lr:.2e}",
                                         **{f"{unit}_s": f"{record['images_per_s']:.0f}"})
                    if is_main:
                        with open(metrics_path, "a") as stream:
                            stream.write(json.dumps(record) + "\n")
                    accelerator.log({k: v for k, v in record.items() if k != "step"}, step=step)
                    images_seen += window_images
                    window_losses, window_images, window_start = [], 0, time.perf_counter()
                if args.save_steps and step % args.save_steps == 0:
                    end_of_epoch = steps_per_epoch is not None and batch_in_epoch >= len(loader)
                    position = (epoch + 1, 0) if end_of_epoch else (epoch, batch_in_epoch)
                    state = {"step": step, "epoch": position[0], "batch_in_epoch": position[1],
                             "num_processes": accelerator.num_processes, "total_steps": total_steps}
                    save_checkpoint(accelerator, output_dir, state, args.save_total_limit)
                if step >= total_steps:
                    break
            else:
                epoch += 1
                continue
            break
    finally:
        progress.close()
        if hasattr(batches, "end"):
            batches.end()  # an exception mid-epoch leaves the loader registered in accelerate's gradient state
    wall_time = time.perf_counter() - train_start

    accelerator.wait_for_everyone()
    if rank_report:
        write_rank_report(accelerator, model, output_dir, first_batch_hash, data_digest.hexdigest(), batches_seen)
    state_dict = accelerator.get_state_dict(model)  # collective under FSDP / DeepSpeed
    summary = {}
    if is_main:
        summary = _export(accelerator, model, state_dict, processor, raw_dataset, output_dir, save_reconstruction_grid)
        records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
        summary.update(
            preset=args.model,
            dataset=args.dataset,
            split=args.split,
            steps=step,
            total_steps=total_steps,
            first_loss=records[0]["loss"] if records else None,
            final_loss=records[-1]["loss"] if records else None,
            images_per_s=images_seen / max(wall_time, 1e-9),
            wall_time_s=wall_time,
            lr=lr,
            weight_decay=weight_decay,
            warmup_steps=warmup_steps,
            augmentation=describe(augmentation_of(args)),
            effective_batch_size=effective_batch,
            num_workers=resolve_num_workers(args.num_workers),
            num_processes=accelerator.num_processes,
            mixed_precision=str(accelerator.mixed_precision),
            resumed_from_step=start_step if resume_from is not None else None,
        )
        write_json(output_dir / "metrics.json", summary, sort_keys=True)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return output_dir, summary


def _export(accelerator, model, state_dict, processor, raw_dataset, output_dir: Path, draw) -> dict:
    """Main process: model + config + processor + reconstruction.png into ``output_dir``, each file renamed
    into place from a temporary folder so a crash never leaves a half-written model."""
    from .data import IMAGE_COLUMNS, find_column

    unwrapped = accelerator.unwrap_model(model)
    staging = Path(tempfile.mkdtemp(dir=output_dir, prefix=TMP_PREFIX))
    try:
        unwrapped.save_pretrained(staging, state_dict=state_dict, is_main_process=True, save_function=accelerator.save)
        processor.save_pretrained(staging)
        if hasattr(unwrapped, "save_encoder"):  # text methods: the backbone alone, for AutoModel / SentenceTransformer
            unwrapped.save_encoder(staging / "encoder", tokenizer=getattr(processor, "tokenizer", None))
        if hasattr(unwrapped, "save_lm"):  # MEAP: the causal LM alone, for AutoModelForCausalLM / AutoTokenizer
            unwrapped.save_lm(staging / "lm", tokenizer=getattr(processor, "tokenizer", None))
        summary = {}
        # an image grid of reconstructions: image models with pixel targets only (not MP3, DMJD's HOG, audio, video)
        if hasattr(unwrapped, "reconstruct") and unwrapped.main_input_name == "pixel_values":
            column = find_column(raw_dataset, IMAGE_COLUMNS, "image")
            images = [example[column] for _, example in zip(range(8), iter(raw_dataset))]
            result = draw(unwrapped, processor, images, staging / "reconstruction.png", seed=0)
            summary["reconstruction_loss"] = result["loss"]
        for path in staging.iterdir():
            os.replace(path, output_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return summary


# ------------------------------------------------------------------------------------------ entry points


def run(args) -> int:
    output_dir, summary = train(args)
    if summary:
        print(
            f"pretrained {summary['preset']} for {summary['steps']} steps: loss {summary['first_loss']:.4f} -> "
            f"{summary['final_loss']:.4f}, {summary['images_per_s']:.0f} {sample_unit(summary['preset'])}/s; saved to "
            f"{output_dir}"
        )
    return 0


def teacher_instances(args, method) -> dict:
    """The Python API's ``teachers={"teacher": model, ...}``, checked against the pre-training class's keywords."""
    teachers = getattr(args, "teachers", None) or {}
    if not isinstance(teachers, dict):
        raise TypeError(f"teachers must be a dict of constructor keyword -> model, got {type(teachers).__name__}")
    model_class = method.model_classes["pretraining"]
    accepted = [name for name in inspect.signature(model_class.__init__).parameters if name not in ("self", "config")]
    unknown = sorted(set(teachers) - set(accepted))
    if unknown:
        raise ValueError(f"teachers: {model_class.__name__} takes no {unknown}; its teacher keywords are {accepted or 'none'}")
    for name, teacher in teachers.items():
        if not isinstance(teacher, torch.nn.Module):
            raise TypeError(f"teachers[{name!r}] must be a model (torch.nn.Module), got {type(teacher).__name__}")
    return teachers


def main(argv=None) -> tuple[Path, dict]:
    """``main(["--model", "mae-tiny", ...])``: the CLI in-process. Returns (output dir, summary)."""
    return train(build_parser().parse_args(argv))


def pretrain(**kwargs) -> tuple[Path, dict]:
    """Python API: ``pretrain(model="mae-tiny", dataset="digits", output_dir="runs/mae", max_steps=100, ...)``.

    Keywords are the CLI's long options with ``_`` for ``-``; ``config_overrides`` may be a dict. ``teachers``
    (Python only) passes model instances to the pre-training class's constructor, e.g.
    ``teachers={"teacher": vit}`` for a distillation method (they are not saved; pass them again to resume).
    Returns (output dir, summary dict as in ``metrics.json``; empty on non-main processes).
    """
    defaults = {a.dest: a.default for a in build_parser()._actions if a.dest != "help"}
    defaults["teachers"] = None
    unknown = sorted(set(kwargs) - set(defaults))
    if unknown:
        raise TypeError(f"pretrain() got unknown argument(s) {unknown}; allowed: {sorted(defaults)}")
    missing = [name for name in ("model", "dataset", "output_dir") if name not in kwargs]
    if missing:
        raise TypeError(f"pretrain() needs {missing}")
    return train(argparse.Namespace(**{**defaults, **kwargs}))


if __name__ == "__main__":  # python -m hf_mae.training.pretrain / accelerate launch -m hf_mae.training.pretrain
    from hf_mae.cli import main as cli_main

    sys.exit(cli_main(["pretrain", *sys.argv[1:]], report_errors=True))  # the errors of `hf-mae pretrain`
