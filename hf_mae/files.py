"""Writing files so that nothing half-written is ever left behind: write beside the target, then rename."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable


def _staging_affixes(dst: Path) -> tuple[str, str]:
    """(prefix, suffix) of :func:`replace_atomically`'s staging folders beside ``dst``."""
    return f".{dst.name}.", ".tmp"


def remove_stale_staging(dst) -> None:
    """Removes the staging folders that :func:`replace_atomically` left beside ``dst`` when a process writing it was
    killed (call it only where no other process writes ``dst`` at the same time)."""
    dst = Path(dst)
    prefix, suffix = _staging_affixes(dst)
    for stale in dst.parent.glob(f"{prefix}*{suffix}"):
        shutil.rmtree(stale, ignore_errors=True)


def replace_atomically(dst, write: Callable[[Path], None]) -> Path:
    """Calls ``write(path)`` on a temporary path beside ``dst`` (a file or a folder), then renames it to ``dst``,
    replacing what was there. On any failure ``dst`` is left as it was."""
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = _staging_affixes(dst)
    staging = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=dst.parent))
    try:
        target = staging / dst.name
        write(target)
        previous = staging / f"{dst.name}.previous"
        if dst.is_dir():  # os.replace cannot put a folder over a non-empty folder: move the old one aside first
            os.replace(dst, previous)
        try:
            os.replace(target, dst)
        except OSError:
            if previous.exists():
                os.replace(previous, dst)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dst


def write_text(path, text: str) -> Path:
    return replace_atomically(path, lambda target: target.write_text(text))


def write_json(path, data, **dump_kwargs) -> Path:
    """``data`` as JSON (``indent=2`` unless told otherwise)."""
    dump_kwargs.setdefault("indent", 2)
    return write_text(path, json.dumps(data, **dump_kwargs))
