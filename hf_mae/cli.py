"""The ``hf-mae`` command line. Each sub-command lives in its own module, which provides
``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only when their command runs."""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> (module, one-line help)
COMMANDS = {
    "list": ("hf_mae.cli", "list the model presets"),
    "demo": ("hf_mae.training.demo", "the main job: pretrain mae-tiny on digits, probe it, draw reconstructions"),
    "pretrain": ("hf_mae.training.pretrain", "pretrain a preset with Accelerate (resumable)"),
    "finetune": ("hf_mae.training.finetune", "fine-tune a pretrained folder with Trainer"),
    "probe": ("hf_mae.training.probe", "linear / kNN / attentive / prototypical probes on frozen features"),
    "visualize": ("hf_mae.training.visualize", "PNG grids of masked inputs and reconstructions"),
    "embed-segments": ("hf_mae.training.segment_embeddings", "cut videos into segments, embed and cache them (LV-MAE)"),
    "convert": ("hf_mae.convert", "convert checkpoints between hf-mae, transformers and official layouts"),
    "push": ("hf_mae.hub", "publish a run folder to the Hugging Face Hub"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", action="store_true", help="also print each preset's method and paper")


def run(args) -> int:
    from .registry import PRESETS, list_models

    for name in list_models():
        print(f"{name}\t{PRESETS[name].name}\t{PRESETS[name].paper}" if args.verbose else name)
    return 0


def build_parser(argv) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hf-mae", description="Masked-modeling models on Hugging Face.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Only the chosen command's module is imported (keeps `hf-mae list` fast).
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (module, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module).add_arguments(sub)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
