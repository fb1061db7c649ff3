"""``hf-mae convert``: a table lookup over the format modules. Each format declares its name, what a SRC in it is,
its options and both directions (:class:`~hf_mae.convert.common.Format`); this module only parses and routes."""

from __future__ import annotations

import argparse
from pathlib import Path

from . import ijepa, mae_official, pointmae_official, videomae, vit_mae, vit_mim
from .common import check_destination, progress

HF_MAE = "mae"  # hf-mae's own folder layout: one side of every conversion
TABLE = {module.FORMAT.name: module.FORMAT for module in (vit_mae, mae_official, vit_mim, videomae, pointmae_official, ijepa)}
FORMATS = (HF_MAE, *TABLE)


def _options() -> dict:
    """Every format option (once, in declaration order) -> the names of the formats that read it."""
    readers = {}
    for name, format_ in TABLE.items():
        for option in format_.options:
            readers.setdefault(option, []).append(name)
    return readers


def _join(words) -> str:
    """"a", "a and b", "a, b and c"."""
    *rest, last = words
    return f"{', '.join(rest)} and {last}" if rest else last


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.usage = "hf-mae convert [options] FORMAT SRC DST   |   hf-mae convert --to FORMAT [options] SRC DST"
    sources = ", ".join(f"{name} ({format_.source})" for name, format_ in TABLE.items())
    parser.add_argument(
        "paths", nargs="+", metavar="[FORMAT] SRC DST",
        help=f"FORMAT of SRC: {sources} or {HF_MAE} (an hf-mae folder, the default with --to)",
    )  # fmt: skip
    parser.add_argument("--to", metavar="FORMAT", help=f"target format: {HF_MAE} (default), {', '.join(TABLE)}")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    parser.add_argument("--strict", action="store_true", help="fail (not warn) when a sin-cos table is not MAE's")
    groups = {}
    for option in _options():
        if option.group not in groups:
            groups[option.group] = parser.add_argument_group(option.group)
        groups[option.group].add_argument(option.flag, **option.settings)


def _parse_route(args) -> tuple[str, str, Path, Path]:
    """(source format, target format, SRC, DST) from the positional arguments and --to."""
    target = args.to or HF_MAE
    if target not in FORMATS:
        raise ValueError(f"--to {target!r} is not a known format; allowed: {', '.join(FORMATS)}")
    if len(args.paths) == 3:
        source, src, dst = args.paths
    elif len(args.paths) == 2 and target != HF_MAE:
        source, (src, dst) = HF_MAE, args.paths
    else:
        raise ValueError(f"expected FORMAT SRC DST (or --to FORMAT SRC DST), got {args.paths}")
    if source not in FORMATS:
        raise ValueError(f"FORMAT {source!r} is not a known format; allowed: {', '.join(FORMATS)}")
    if (source == HF_MAE) == (target == HF_MAE):
        raise ValueError(f"cannot convert FORMAT {source!r} --to {target!r}: one side must be hf-mae ('mae')")
    return source, target, Path(src), Path(dst)


def _check_options(args, source: str) -> None:
    """Refuses an option that FORMAT ``source`` does not read: one message per set of options the same formats read."""
    by_readers = {}
    for option, readers in _options().items():
        by_readers.setdefault(tuple(readers), []).append(option)
    for readers, options in by_readers.items():
        if source not in readers and any(option.given(args) for option in options):
            shown = [option.shown or option.flag for option in options]
            verb = "applies" if len(shown) == 1 else "apply"
            raise ValueError(f"{_join(shown)} {verb} only to FORMAT {_join(readers)}")


def run(args) -> int:
    source, target, src, dst = _parse_route(args)
    if not src.exists():
        raise ValueError(f"SRC {str(src)!r} does not exist")
    check_destination(dst, args.overwrite)  # before the (possibly long) conversion
    _check_options(args, source)
    with progress(f"convert {source} -> {target}"):
        if source != HF_MAE:
            TABLE[source].read(src, dst, args)
        else:
            TABLE[target].write(src, dst, args)
    print(f"converted {source} {src} -> {target} {dst}")
    return 0
