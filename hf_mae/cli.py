"""The ``hf-mae`` command line. Each sub-command lives in its own module, which provides
``add_arguments(parser)`` and ``run(args) -> int``; modules are imported only when their command runs."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

# command -> (module, one-line help)
COMMANDS = {
    "list": ("hf_mae.cli", "list the model presets"),
    "demo": ("hf_mae.training.demo", "the main job: pretrain mae-tiny on digits, probe it, draw reconstructions"),
    "pretrain": ("hf_mae.training.pretrain", "pretrain a preset with Accelerate (resumable)"),
    "finetune": ("hf_mae.training.finetune", "fine-tune a pretrained folder with Trainer"),
    "probe": ("hf_mae.training.probe", "linear / kNN / attentive / prototypical probes on frozen features"),
    "evaluate-retrieval": ("hf_mae.training.retrieval", "dense retrieval on a BEIR folder: nDCG@10, MRR@10, R@100"),
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
    from .training.arguments import DefaultsHelpFormatter

    parser = argparse.ArgumentParser(prog="hf-mae", description="Masked-modeling models on Hugging Face.")
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Only the chosen command's module is imported (keeps `hf-mae list` fast).
    chosen = argv[0] if argv and argv[0] in COMMANDS else None
    for name, (module, help_text) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text, description=help_text, formatter_class=DefaultsHelpFormatter)
        # SUPPRESS: `hf-mae --debug pretrain ...` is not reset by the sub-command's own default
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                         help="show the Python traceback of an error")
        if name == chosen:
            importlib.import_module(module).add_arguments(sub)
    return parser


# Raised by hf-mae's own checks of what the user gave: reported as a usage error (exit 2) without a traceback.
USAGE_ERRORS = (ValueError, TypeError, FileNotFoundError)


def _raised_by_hf_mae(error: BaseException) -> bool:
    """Whether the innermost frame of ``error`` is hf-mae code (its own checks), not a library it calls."""
    frames = traceback.extract_tb(error.__traceback__)
    package = os.path.dirname(os.path.abspath(__file__))
    return bool(frames) and os.path.abspath(frames[-1].filename).startswith(package + os.sep)


def main(argv=None, *, report_errors: bool | None = None) -> int:
    """Runs one command and returns its exit code.

    On the command line (``argv`` None, or ``report_errors=True``) an error is one line, ``hf-mae COMMAND: error:
    ...``: exit 2 for bad input (argparse's, and the ValueError / TypeError / FileNotFoundError of hf-mae's own
    checks), 1 for an OSError (unreadable file, unreachable Hub) and for anything unexpected, the latter with a hint
    to rerun with ``--debug``, which shows the traceback instead.
    Called from Python with an argument list, exceptions propagate as they are."""
    report_errors = argv is None if report_errors is None else report_errors
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    # the command is found without `--debug`, so `hf-mae --debug pretrain ...` also imports pretrain's arguments
    args = build_parser([a for a in argv if a != "--debug"]).parse_args(argv)
    prog = f"hf-mae {args.command}"
    try:
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
    except KeyboardInterrupt:
        if args.debug or not report_errors:
            raise
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if args.debug or not report_errors:
            raise
        if isinstance(error, USAGE_ERRORS) and _raised_by_hf_mae(error):
            print(f"{prog}: error: {error}", file=sys.stderr)
            return 2
        if isinstance(error, OSError):  # a file that cannot be read, a Hub that cannot be reached: said as it is
            print(f"{prog}: error: {error}", file=sys.stderr)
            return 1
        print(f"{prog}: error: {type(error).__name__}: {error}\n"
              "(an unexpected error; run again with --debug to see the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
