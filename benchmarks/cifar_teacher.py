"""A real teacher for the teacher-based methods: an MAE pretrained on CIFAR-10, kept at a stable path.

    python benchmarks/cifar_teacher.py                  # -> runs/teachers/mae-cifar10 (skipped when already there)
    python benchmarks/cifar_teacher.py --force          # train it again and replace it
    python benchmarks/cifar_teacher.py --measure        # steps/s of each candidate size (20 steps each), no teacher
    python benchmarks/cifar_teacher.py --supervised     # -> runs/teachers/mae-cifar10-supervised: that MAE fine-tuned
                                                        #    on the labels (the second teacher of two-teacher methods)

The training is ``hf-mae pretrain``'s own (``pretrain()``, its defaults: MAE's crop + flip augmentation, the default
lr rule, warm-up + cosine) on ``../shared/data/cifar10/train`` (5,000 images, 32 px), for ``--epochs``. The result
is a normal hf-mae folder: ``config.json``, ``model.safetensors``, ``preprocessor_config.json`` (plus the run's
``metrics.json``, ``run_args.json``, ``reconstruction.png`` and ``teacher.json``, this command's record).
``AutoModel.from_pretrained(folder)`` loads its encoder (``MAEModel``); ``AutoModelForPreTraining`` the whole MAE.
So does ``teacher_name_or_path=<folder>`` of I2P-MAE (``teachers.build_auto_model``), with
``teacher_feature_dim`` = the teacher's width and ``image_size`` 32.

The folder is built in a temporary sibling (``hf_mae.files.replace_atomically``) and renamed into place once complete, so it is
either whole or absent; a build killed half-way leaves only that sibling, which the next build removes. A complete
folder (``teacher.json`` is written last) is kept unless ``--force``.

``--supervised`` makes the supervised teacher of the two-teacher methods (Hybrid Distillation's feature teacher):
the MAE teacher above fine-tuned on the CIFAR-10 labels with ``hf-mae finetune`` (its recipe and defaults,
``--finetune-epochs``), written the same way. ``AutoModel`` loads its encoder; its ``teacher.json`` records the
accuracy on ``cifar10/test`` (the epoch kept is ``hf-mae finetune``'s best on that split: a teacher chosen on the
test images, a mild leak the reader should know of).

Size and length (``--size``, ``--epochs``, see ``SIZES``): of the candidates that train in about 20 minutes on this
machine's 2 cores with 1 torch thread (``--measure`` projects each), the one whose features are best, measured
(benchmarks/README.md): **ViT-Ti/4 (192-d x 12 blocks, 3 heads, 4-px patches) for 18 epochs** (1,404 steps),
linear 0.488 / kNN 0.368 on ``cifar10/test`` against 0.395 / 0.272 at random init. The largest candidate,
ViT-S/4 for 7 epochs (546 steps, the same time), learns far less in that time: 0.430 / 0.290 against 0.399 / 0.286.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATASET = ROOT.parent / "shared" / "data" / "cifar10" / "train"
DEFAULT_OUTPUT = ROOT / "runs" / "teachers" / "mae-cifar10"
DEFAULT_SUPERVISED_OUTPUT = ROOT / "runs" / "teachers" / "mae-cifar10-supervised"
DEFAULT_LABELLED = ROOT.parent / "shared" / "data" / "cifar10"  # train/ and test/, for hf-mae finetune
PRESET = "mae-tiny"  # 32 px, 4-px patches (an 8 x 8 grid): CIFAR-10's own size; the sizes below override its widths
# candidate encoders (beyond mae-tiny a light decoder, 128-d x 2 blocks, as benchmarks/common.py's vit-ti4-32)
LIGHT_DECODER = dict(decoder_hidden_size=128, decoder_intermediate_size=512)
SIZES = {
    "tiny": {},  # mae-tiny: 128-d x 4 blocks, 4 heads; decoder 64-d x 2
    "vit-ti4": dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                    **LIGHT_DECODER),  # ViT-Ti/4
    "vit-s4": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                   **LIGHT_DECODER),  # ViT-S/4
}
# measured (benchmarks/README.md): 1.19 steps/s at batch 64, 1 thread, so 18 epochs (1,404 steps) in ~20 min; its
# features beat ViT-S/4's at 7 epochs (the same time) by 6 linear / 8 kNN points on cifar10/test
DEFAULT_SIZE = "vit-ti4"
DEFAULT_EPOCHS = 18
COMPLETE = ("config.json", "model.safetensors", "preprocessor_config.json", "teacher.json")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--output", type=Path, default=None,
                        help=f"the teacher folder (default: {DEFAULT_OUTPUT}; with --supervised {DEFAULT_SUPERVISED_OUTPUT})")
    parser.add_argument("--supervised", action="store_true",
                        help="fine-tune the MAE teacher (--source) on the labels instead (hf-mae finetune)")
    parser.add_argument("--source", type=Path, default=DEFAULT_OUTPUT, help="--supervised: the MAE teacher folder")
    parser.add_argument("--labelled-dataset", default=str(DEFAULT_LABELLED),
                        help="--supervised: a folder with train/ and test/ image folders (hf-mae finetune --dataset)")
    parser.add_argument("--finetune-epochs", type=float, default=5.0, help="--supervised: fine-tuning epochs")
    parser.add_argument("--dataset", default=str(DEFAULT_DATASET), help="an image folder (hf-mae pretrain --dataset)")
    parser.add_argument("--size", choices=sorted(SIZES), default=DEFAULT_SIZE, help="the encoder size (see SIZES)")
    parser.add_argument("--config-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="further config fields, as hf-mae pretrain takes them (tests shrink the model)")
    parser.add_argument("--epochs", type=float, default=DEFAULT_EPOCHS, help="passes over the data")
    parser.add_argument("--max-steps", type=int, default=None, help="optimiser steps (wins over --epochs)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--num-workers", type=int, default=None, help="default: hf-mae pretrain's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--force", action="store_true", help="train again and replace a complete teacher")
    parser.add_argument("--measure", action="store_true",
                        help="only time --measure-steps steps of every size and project the run's minutes")
    parser.add_argument("--measure-steps", type=int, default=20)
    parser.add_argument("--measure-sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    args = parser.parse_args(argv)
    if args.output is None:
        args.output = DEFAULT_SUPERVISED_OUTPUT if args.supervised else DEFAULT_OUTPUT
    for name in ("epochs", "max_steps", "batch_size", "measure_steps", "finetune_epochs"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            parser.error(f"--{name.replace('_', '-')} must be > 0, got {value}")
    if args.num_workers is not None and args.num_workers < 0:
        parser.error(f"--num-workers must be >= 0, got {args.num_workers}")
    return args


def is_complete(folder: Path) -> bool:
    return folder.is_dir() and all((folder / name).is_file() for name in COMPLETE)


def pretrain_kwargs(args, size: str) -> dict:
    """The ``hf_mae.training.pretrain.pretrain`` keywords of this teacher (everything else: its defaults)."""
    from hf_mae.training.pretrain import parse_overrides

    overrides = {**SIZES[size], **parse_overrides(args.config_overrides, PRESET)}
    kwargs = dict(model=PRESET, config_overrides=overrides, dataset=args.dataset, batch_size=args.batch_size,
                  epochs=args.epochs, max_steps=args.max_steps, seed=args.seed, save_steps=0, report_to="none")
    if args.num_workers is not None:
        kwargs["num_workers"] = args.num_workers
    return kwargs


def prepare_output(args) -> Path | None:
    """The resolved ``--output`` to build, or None when a complete teacher is there and kept (no ``--force``)."""
    from hf_mae.files import remove_stale_staging

    output = args.output.resolve()
    if is_complete(output) and not args.force:
        print(f"{output} holds a complete teacher; kept (--force trains it again)")
        return None
    if output.exists() and not args.force:
        raise ValueError(f"--output {str(output)!r} exists but is not a complete teacher (it lacks one of {COMPLETE}); "
                         "pass --force to replace it")
    if output.exists() and not (output.is_dir() and (not any(output.iterdir()) or (output / "config.json").exists())):
        raise ValueError(f"--output {str(output)!r} holds something else than a model folder; --force replaces only "
                         "a teacher (a folder with a config.json) or an empty folder: choose another --output")
    remove_stale_staging(output)  # what a killed build left
    return output


def build_teacher(args) -> Path:
    """Trains the teacher into a temporary sibling of ``args.output`` and renames it into place; returns the folder."""
    from transformers import AutoModel

    import hf_mae  # noqa: F401  (registers the Auto classes)
    from hf_mae.files import replace_atomically, write_json
    from hf_mae.training.pretrain import pretrain
    from hf_mae.training.probe import load_quietly

    output = prepare_output(args)
    if output is None:
        return args.output.resolve()
    kwargs = pretrain_kwargs(args, args.size)
    summary = {}

    def write(folder: Path) -> None:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=folder.parent) as scratch:  # the run's checkpoints stay out of it
            run, result = pretrain(output_dir=Path(scratch) / "run", **kwargs)
            summary.update(result)
            folder.mkdir()
            for name in ("config.json", "model.safetensors", "preprocessor_config.json", "metrics.json",
                         "run_args.json", "reconstruction.png"):
                if (run / name).exists():
                    os.replace(run / name, folder / name)
        load_quietly(AutoModel, folder)  # a folder that does not load is never put in place (no decoder-keys table)
        write_json(folder / "teacher.json", {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "size": args.size,
            "pretrain_kwargs": kwargs,
            "steps": summary["steps"],
            "first_loss": summary["first_loss"],
            "final_loss": summary["final_loss"],
            "wall_time_s": time.perf_counter() - start,
            "torch_threads": torch.get_num_threads(),
        }, sort_keys=True)

    replace_atomically(output, write)  # whole or absent; --force: the old teacher is replaced only at the end
    print(f"teacher saved to {output}: {summary['steps']} steps, loss {summary['first_loss']:.4f} -> "
          f"{summary['final_loss']:.4f}")
    return output


def build_supervised_teacher(args) -> Path:
    """Fine-tunes the MAE teacher at ``--source`` on the labels (``hf-mae finetune``) into ``--output``, whole or
    absent; returns the folder."""
    from transformers import AutoModel

    import hf_mae  # noqa: F401  (registers the Auto classes)
    from hf_mae.files import replace_atomically, write_json
    from hf_mae.training.finetune import finetune
    from hf_mae.training.probe import load_quietly

    source = args.source.resolve()
    if not is_complete(source):
        raise ValueError(f"--source {str(source)!r} is not a complete MAE teacher (it lacks one of {COMPLETE}); "
                         "build it first: python benchmarks/cifar_teacher.py")
    output = prepare_output(args)
    if output is None:
        return args.output.resolve()
    result = {}

    def write(folder: Path) -> None:
        start = time.perf_counter()
        result.update(finetune(str(source), args.labelled_dataset, str(folder), epochs=args.finetune_epochs,
                               batch_size=args.batch_size, seed=args.seed, report_to="none"))
        load_quietly(AutoModel, folder)  # the encoder loads (the classifier's head is left out)
        write_json(folder / "teacher.json", {
            "command": " ".join([Path(sys.executable).name, *sys.argv]),
            "source": str(source),
            "finetune_epochs": args.finetune_epochs,
            "test_accuracy": result["eval_accuracy"],
            "wall_time_s": time.perf_counter() - start,
            "torch_threads": torch.get_num_threads(),
        }, sort_keys=True)

    replace_atomically(output, write)
    print(f"supervised teacher saved to {output}: accuracy {result['eval_accuracy']:.3f} on the test split")
    return output


def measure(args) -> dict:
    """Steps/s of ``--measure-steps`` steps of every size (the same pretrain() call, into a temporary folder), and
    the minutes a run of ``--epochs`` would take at that speed."""
    from hf_mae.training.pretrain import pretrain

    found = {}
    with tempfile.TemporaryDirectory() as scratch:
        for size in args.measure_sizes:
            kwargs = {**pretrain_kwargs(args, size), "max_steps": args.measure_steps, "log_steps": args.measure_steps}
            _, summary = pretrain(output_dir=Path(scratch) / size, **kwargs)
            steps_per_s = summary["steps"] / summary["wall_time_s"]
            found[size] = {"steps_per_s": steps_per_s, "images_per_s": summary["images_per_s"]}
    return found


def main(argv=None):
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.measure:
        from hf_mae.training.data import load_image_dataset

        steps_per_epoch = len(load_image_dataset(args.dataset, "train")) // args.batch_size
        total = args.max_steps or round(args.epochs * steps_per_epoch)
        found = measure(args)
        print(f"{torch.get_num_threads()} thread(s), batch {args.batch_size}, a run of {total} steps:")
        for size, row in found.items():
            row["projected_minutes"] = total / row["steps_per_s"] / 60
            print(f"  {size:9s} {row['steps_per_s']:.2f} steps/s  {row['images_per_s']:.0f} images/s  "
                  f"-> {row['projected_minutes']:.1f} min")
        return found
    return build_supervised_teacher(args) if args.supervised else build_teacher(args)


if __name__ == "__main__":
    try:
        main()
    except ValueError as error:  # bad input: the message, no traceback
        sys.exit(f"error: {error}")
