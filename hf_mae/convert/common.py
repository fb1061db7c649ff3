"""What every conversion shares: renaming weights by a table of layouts, fusing and splitting q/k/v, building a
model that holds exactly a state dict, config fields derived from the config classes, reading checkpoints and
folders, atomic writes, progress, and the two declarations a format module makes (:class:`Option`, :class:`Format`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import json
import pickle
import re
import warnings
from pathlib import Path
from typing import Callable

import torch

from ..files import replace_atomically
from ..registry import processor_for_config

# ----------------------------------------------------------------------------------------------------------------
# what a format module declares


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: options are compared (and hashed) by identity
class Option:
    """A command-line option that only the formats listing it read (when SRC is in that format)."""

    flag: str  # "--num-heads"
    settings: dict  # argparse keywords (type, action, default, help)
    group: str  # the --help section it is listed in
    shown: str | None = None  # how an error names it when given, if not ``flag`` ("--no-norm-pix-loss")

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")

    def given(self, args: argparse.Namespace) -> bool:
        return getattr(args, self.dest) != self.settings.get("default")


@dataclasses.dataclass(frozen=True)
class Format:
    """One checkpoint format besides hf-mae's own: its name on the command line and both directions."""

    name: str  # FORMAT on the command line
    source: str  # what a SRC in this format is, for --help
    read: Callable[[Path, Path, argparse.Namespace], Path]  # FORMAT SRC -> hf-mae DST
    write: Callable[[Path, Path, argparse.Namespace], Path]  # hf-mae SRC -> FORMAT DST
    options: tuple[Option, ...] = ()  # the options ``read`` takes


# The head counts are not stored in official checkpoints (MAE's nor Point-MAE's): both formats read these.
OFFICIAL_GROUP = "mae-official and pointmae-official (head counts are not stored in the checkpoint)"
NUM_HEADS = Option(
    "--num-heads",
    dict(type=int, help="encoder heads (mae-official default: 12 for 768, 16 for 1024/1280; pointmae-official: 6)"),
    OFFICIAL_GROUP,
)
DECODER_NUM_HEADS = Option(
    "--decoder-num-heads",
    dict(type=int, help="decoder heads (mae-official default 16; pointmae-official 6)"),
    OFFICIAL_GROUP,
)

# ----------------------------------------------------------------------------------------------------------------
# config fields


@functools.cache
def shared_config_fields(ours, theirs, renamed: tuple[tuple[str, str], ...] = ()) -> tuple[tuple[str, str], ...]:
    """(our field, their field) for every field that config classes ``ours`` and ``theirs`` both declare (beyond
    ``PreTrainedConfig``'s own), in ``ours``' order, plus the ``renamed`` pairs (same meaning, other name).

    Derived from the dataclass fields, so a field added to both classes is converted without another edit here.
    """
    from transformers import PreTrainedConfig

    def own(config_class) -> list[str]:
        inherited = {field.name for field in dataclasses.fields(PreTrainedConfig)}
        return [field.name for field in dataclasses.fields(config_class) if field.name not in inherited]

    theirs_fields = set(own(theirs))
    renamed_ours = {ours_name for ours_name, _ in renamed}
    shared = [(name, name) for name in own(ours) if name in theirs_fields and name not in renamed_ours]
    return (*shared, *renamed)


def one_int_sizes(kwargs: dict, target: str, names=("image_size", "patch_size")) -> dict:
    """``kwargs`` (transformers config fields) with each of ``names`` as the one int a transformers ViT config holds;
    ValueError naming the first size that is not square."""
    for name in names:
        height, width = (kwargs[name], kwargs[name]) if isinstance(kwargs[name], int) else tuple(kwargs[name])
        if height != width:
            raise ValueError(
                f"{name} must be square to convert to {target} (transformers' config holds one int), "
                f"got {kwargs[name]!r}"
            )
        kwargs[name] = height
    return kwargs


def check_vit_blocks(config, target: str, training_only: dict) -> None:
    """Refuses what transformers' ViT blocks cannot hold (LayerScale) and warns about the hf-mae settings that act
    only in training and are dropped (``training_only``: field -> the value that means off)."""
    if config.layer_scale_init_value:
        raise ValueError(
            f"layer_scale_init_value={config.layer_scale_init_value}: transformers' ViT blocks have no LayerScale, "
            f"so this model cannot be converted to {target} (allowed: 0)"
        )
    dropped = {name: getattr(config, name) for name, off in training_only.items() if getattr(config, name) != off}
    if dropped:
        message = f"{target} has no {dropped}: dropped (they act only in training; the weights are unaffected)"
        warnings.warn(message, stacklevel=3)


# ----------------------------------------------------------------------------------------------------------------
# renaming weights by a table: one row per weight group, one column per layout, "#" a block index, None: that
# layout has no such weight. Rows whose name ends in "#" rename inside the block with a second table.


def _prefix_pattern(prefix: str) -> str:
    return r"(\d+)".join(re.escape(part) for part in prefix.split("#"))


def rename_key(key: str, source: int, target: int, rows, block_rows) -> str:
    """The name of weight ``key`` of layout column ``source`` in column ``target``; KeyError if unknown."""
    for row in rows:
        old, new = row[source], row[target]
        if old is None or new is None:
            continue
        match = re.fullmatch(_prefix_pattern(old) + r"(?:\.(.+))?", key)
        if match is None:
            continue
        *index, rest = match.groups()
        if index:  # a transformer block: rename inside it too
            new = new.replace("#", index[0])
            rest = rename_key(rest, source, target, block_rows, block_rows) if rest else rest
        return new if rest is None else f"{new}.{rest}"
    raise KeyError(key)


def rename_all(state_dict: dict, source: int, target: int, rows, block_rows) -> tuple[dict, list]:
    """(the state dict renamed from column ``source`` to ``target`` of ``rows``, the keys that have no counterpart)."""
    renamed, unknown = {}, []
    for key, tensor in state_dict.items():
        try:
            renamed[rename_key(key, source, target, rows, block_rows)] = tensor
        except KeyError:
            unknown.append(key)
    return renamed, unknown


def num_blocks(state_dict: dict, prefix: str) -> int:
    """How many blocks ``{prefix}.N.*`` a state dict holds."""
    indices = {int(m.group(1)) for key in state_dict if (m := re.match(rf"{prefix}\.(\d+)\.", key))}
    return max(indices) + 1 if indices else 0


# ----------------------------------------------------------------------------------------------------------------
# fused and separate q/k/v projections


def fuse_qkv(state_dict: dict) -> dict:
    """ViTMAE ``...attention.{q,k,v}_proj.{weight,bias}`` -> ``...attention.qkv.*`` (q, k, v stacked on dim 0)."""
    fused = {}
    for key, tensor in state_dict.items():
        match = re.fullmatch(r"(.+\.attention\.)([qkv])_proj\.(weight|bias)", key)
        if match is None:
            fused[key] = tensor
        elif match.group(2) == "q":
            start, kind = match.group(1), match.group(3)
            fused[f"{start}qkv.{kind}"] = torch.cat([state_dict[f"{start}{x}_proj.{kind}"] for x in "qkv"], dim=0)
    return fused


def split_qkv(state_dict: dict) -> dict:
    """Inverse of :func:`fuse_qkv`."""
    split = {}
    for key, tensor in state_dict.items():
        match = re.fullmatch(r"(.+\.attention\.)qkv\.(weight|bias)", key)
        if match is None:
            split[key] = tensor
            continue
        for name, part in zip("qkv", tensor.chunk(3, dim=0)):
            split[f"{match.group(1)}{name}_proj.{match.group(2)}"] = part.clone()
    return split


def build_exactly(model_class, config, state_dict: dict, source: str):
    """A ``model_class`` holding exactly ``state_dict`` (every weight, no extra), in the checkpoint's dtype."""
    step("convert")
    dtype = next((t.dtype for t in state_dict.values() if t.is_floating_point()), torch.float32)
    model = model_class(config)
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as error:  # shape mismatches
        raise ValueError(f"{source} does not fit {model_class.__name__} built from its own config: {error}") from None
    if missing or unexpected:
        raise ValueError(
            f"{source} does not fit {model_class.__name__}: missing weights {missing}, unexpected weights {unexpected}"
        )
    return model.to(dtype).eval()


# ----------------------------------------------------------------------------------------------------------------
# reading


def load_checkpoint(path):
    """``torch.load(path, weights_only=True)`` on CPU; training checkpoints also pickle their
    ``argparse.Namespace`` arguments, which is allowed as a safe global. ValueError if the file cannot be read."""
    step("read SRC")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ValueError(
            f"SRC {str(path)!r} cannot be read by torch.load(weights_only=True): {error}. If you trust the file, "
            "re-save it as torch.save({'model': state_dict}, path) and convert that"
        ) from None


def read_config(src: Path, model_type: str) -> dict:
    """The config.json of folder ``src``, refusing a folder without one or of another model type."""
    config_path = src / "config.json"
    if not config_path.is_file():
        raise ValueError(f"SRC {str(src)!r} is not a model folder: it has no config.json")
    config = json.loads(config_path.read_text())
    if config.get("model_type") != model_type:
        raise ValueError(
            f"SRC {str(src)!r} holds a {config.get('model_type')!r} model; this conversion reads {model_type!r} folders"
        )
    return config


def load_folder(model_class, src: Path, model_type: str):
    """``model_class.from_pretrained(src)``, refusing a folder of another model type or with missing weights."""
    read_config(src, model_type)
    step("read SRC")
    model, info = model_class.from_pretrained(src, output_loading_info=True)
    if info["missing_keys"] or info["mismatched_keys"]:
        raise ValueError(
            f"SRC {str(src)!r} is not a complete {model_class.__name__}: missing {sorted(info['missing_keys'])}, "
            f"mismatched {info['mismatched_keys']}"
        )
    return model.eval()


def load_architecture(model_classes, src: Path, model_type: str, target: str):
    """The model of hf-mae folder ``src`` as the class its config names (the first of ``model_classes`` if it
    names none); ValueError if that class is not one of ``model_classes`` (what ``--to target`` reads)."""
    classes = {model_class.__name__: model_class for model_class in model_classes}
    architecture = (read_config(src, model_type).get("architectures") or [model_classes[0].__name__])[0]
    if architecture not in classes:
        raise ValueError(f"SRC {str(src)!r} holds a {architecture}; --to {target} reads {sorted(classes)}")
    return load_folder(classes[architecture], src, model_type)


def processor_settings(folder: Path) -> dict:
    """Normalisation and resampling of a folder's ``preprocessor_config.json`` (empty if it has none)."""
    path = folder / "preprocessor_config.json"
    if not path.is_file():
        return {}
    saved = json.loads(path.read_text())
    return {key: saved[key] for key in ("image_mean", "image_std", "resample") if key in saved}


def image_processor_settings(config, src: Path) -> dict:
    """hf-mae's normalisation and resampling for ``config``, unless folder ``src``'s processor says else."""
    default = processor_for_config(config)
    settings = {key: getattr(default, key) for key in ("image_mean", "image_std", "resample")}
    settings.update(processor_settings(src))
    return settings


# ----------------------------------------------------------------------------------------------------------------
# writing


def check_destination(dst, overwrite: bool) -> None:
    if Path(dst).exists() and not overwrite:
        raise ValueError(f"DST {str(dst)!r} already exists; pass --overwrite (overwrite=True) to replace it")


def write_atomically(dst, write: Callable[[Path], None], overwrite: bool = False) -> Path:
    """Calls ``write(path)`` on a temporary path beside ``dst`` (file or folder), then renames it to ``dst``.

    Nothing half-written is ever left at ``dst``; an existing ``dst`` is replaced only with ``overwrite``.
    """
    check_destination(dst, overwrite)
    step("write DST")
    return replace_atomically(dst, write)


def save_hf_mae(model, settings: dict) -> Callable[[Path], None]:
    """Writes an hf-mae model and its default processor, with the normalisation ``settings`` of the source."""

    def write(path: Path) -> None:
        model.save_pretrained(path)
        processor = processor_for_config(model.config)
        for key, value in settings.items():  # keep the source's normalisation
            setattr(processor, key, value)
        processor.save_pretrained(path)

    return write


def save_vit_folder(vit_model, config, src: Path) -> Callable[[Path], None]:
    """Writes a transformers model and a ViTImageProcessor with hf-mae's normalisation (or the folder's own)."""
    from transformers import ViTImageProcessorPil

    size = vit_model.config.image_size
    settings = image_processor_settings(config, src)

    def write(path: Path) -> None:
        vit_model.save_pretrained(path)
        ViTImageProcessorPil(size={"height": size, "width": size}, **settings).save_pretrained(path)

    return write


def read_transformers_folder(model_class, model_type: str, convert, src, dst, overwrite: bool = False) -> Path:
    """A transformers ``model_class`` folder (of ``model_type``) -> ``convert(model)`` written as an hf-mae folder,
    with the source folder's processor normalisation."""
    src = Path(src)
    model = convert(load_folder(model_class, src, model_type))
    return write_atomically(dst, save_hf_mae(model, processor_settings(src)), overwrite)


def write_vit_folder(model_class, convert, src, dst, overwrite: bool = False) -> Path:
    """An hf-mae ``model_class`` folder -> ``convert(model)`` written as a transformers folder with a
    ViTImageProcessor (hf-mae's normalisation, or the source folder's own)."""
    src = Path(src)
    model = load_folder(model_class, src, model_class.config_class.model_type)
    return write_atomically(dst, save_vit_folder(convert(model), model.config, src), overwrite)


# ----------------------------------------------------------------------------------------------------------------
# progress: the command line shows the stages of a conversion (reading, converting and writing a large checkpoint
# take minutes); a conversion called from Python shows nothing.

_progress = None  # the bar of the conversion the command line runs, if any


@contextlib.contextmanager
def progress(description: str, stages: int = 3):
    """A tqdm bar over the ``stages`` (read SRC, convert, write DST) of one conversion, advanced by :func:`step`."""
    from tqdm.auto import tqdm

    global _progress
    bar = tqdm(total=stages, desc=description, unit="stage", bar_format="{desc}: {n}/{total}{postfix}")
    previous, _progress = _progress, bar
    try:
        yield bar
        bar.update(max(bar.total - bar.n, 0))  # the last stage is done
        bar.set_postfix_str("done")
    finally:
        _progress = previous
        bar.close()


def step(stage: str) -> None:
    """Marks the start of ``stage`` on the running conversion's bar (nothing outside the command line)."""
    if _progress is None or _progress.postfix == f", {stage}":  # tqdm shows the postfix after ", "
        return
    if _progress.postfix:  # the stage before this one is done
        _progress.update(1)
    _progress.set_postfix_str(stage)
