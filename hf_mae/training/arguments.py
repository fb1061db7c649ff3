"""Argument checks shared by the hf-mae commands, all cheap (no model, no data): numeric ranges as argparse types,
model paths that must be a local folder or a Hub id, and ``--config-overrides KEY=VALUE`` typed by the config
class's field annotations. Every message names the argument, what was given and what is allowed."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import types
import typing

# A Hub repo id as huggingface_hub accepts it: "name" or "namespace/name", word characters and '-' / '.' inside.
_HUB_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?"
_HUB_ID = re.compile(rf"^(?:{_HUB_PART}/)?{_HUB_PART}$")
_TRUE, _FALSE, _NONE = ("true", "yes", "1"), ("false", "no", "0"), ("none", "null")


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Help that ends each option with its default, unless the help already says it or there is none to show
    (None, False of a flag)."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "default" in text or default is None or default is False or default is argparse.SUPPRESS or default == []:
            return text
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text  # a required positional has no default
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {str(shown).replace('%', '%%')})"


# ---------------------------------------------------------------------------------------------- numbers


def _bounds(minimum, strict, maximum, open_max) -> str:
    low = "" if minimum is None else f"{'>' if strict else '>='} {minimum}"
    high = "" if maximum is None else f"{'<' if open_max else '<='} {maximum}"
    return " and ".join(part for part in (low, high) if part)


def check_range(name: str, value, *, minimum=None, strict: bool = False, maximum=None, open_max: bool = False):
    """``value`` when it lies in the range (``None`` passes: "not given"); else a ValueError naming ``name``."""
    if value is None:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    too_low = minimum is not None and (value <= minimum if strict else value < minimum)
    too_high = maximum is not None and (value >= maximum if open_max else value > maximum)
    if too_low or too_high or value != value:  # value != value: NaN
        raise ValueError(f"{name} must be {_bounds(minimum, strict, maximum, open_max)}, got {value}")
    return value


def number(kind=int, *, minimum=None, strict: bool = False, maximum=None, open_max: bool = False):
    """An argparse ``type=``: parses ``kind`` (int or float) and checks its range as :func:`check_range`; argparse
    prefixes the message with the option's name: ``argument --epochs: must be > 0, got -3``."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an int' if kind is int else 'a number'}, got {text!r}") from None
        try:
            return check_range("value", value, minimum=minimum, strict=strict, maximum=maximum, open_max=open_max)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"must be {_bounds(minimum, strict, maximum, open_max)}, got {text}"
            ) from None

    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


positive_int = number(int, minimum=1)
non_negative_int = number(int, minimum=0)
positive_float = number(float, minimum=0, strict=True)
non_negative_float = number(float, minimum=0)
fraction = number(float, minimum=0, maximum=1)  # [0, 1]
rate = number(float, minimum=0, maximum=1, open_max=True)  # [0, 1): mask ratios, dropout, label smoothing


def int_or_auto(text: str):
    """An argparse ``type=`` for counts with an automatic choice: ``"auto"``, or an int >= 0."""
    if text == "auto":
        return text
    try:
        return non_negative_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an int >= 0, got {text!r}") from None


# ------------------------------------------------------------------------------------------- model paths


def looks_local(path: str) -> bool:
    """True when ``path`` is meant as a folder on this machine: it exists, starts with ``.``, ``/`` or ``~``, has
    more than one ``/``, uses a backslash, or its parent folder exists."""
    if os.path.exists(path) or path.startswith((".", "/", "~", os.sep)) or path.count("/") > 1 or "\\" in path:
        return True
    parent = os.path.dirname(path)
    return bool(parent) and os.path.isdir(parent)


def check_model_path(path, argument: str, *, what: str = "a folder saved by save_pretrained") -> str:
    """``path`` as a string when it is an existing folder or a Hub id; a ValueError naming ``argument`` when it is
    a local path that does not exist (rather than the Hub connection error transformers would give)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return path
    if looks_local(path):
        state = "it is a file" if os.path.exists(path) else "nothing exists at that path"
        raise ValueError(
            f"{argument} {path!r} is not a folder ({state}); it is a local path, so neither a folder nor a Hub id "
            f"(org/name). Expected {what}"
        )
    if not _HUB_ID.match(path):
        raise ValueError(f"{argument} {path!r} is neither a local folder nor a Hub id (org/name)")
    return path


# -------------------------------------------------------------------------------------- config overrides


def config_fields(config_class) -> dict:
    """{field: annotation} of a config dataclass (ClassVars excluded); an annotation that does not resolve (e.g. it
    names ``torch`` only for type checkers) is ``typing.Any``."""
    fields = {field.name: typing.Any for field in dataclasses.fields(config_class)}
    for cls in reversed(config_class.__mro__):
        namespace = vars(sys.modules[cls.__module__]) if cls.__module__ in sys.modules else {}
        for name, annotation in vars(cls).get("__annotations__", {}).items():
            if name not in fields:
                continue
            if isinstance(annotation, str):
                try:
                    annotation = eval(annotation, dict(namespace))  # the annotation text of a field, resolved
                except Exception:
                    annotation = typing.Any
            fields[name] = annotation
    return fields


def _type_name(annotation) -> str:
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _parse_as(text: str, annotation):
    """``text`` as a value of ``annotation``; ValueError when it is not one."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is typing.Any:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    if origin in (typing.Union, types.UnionType):
        # None first ("none" is not a str value here), then each member in declared order
        members = sorted(args, key=lambda a: a is not type(None))
        for member in members:
            try:
                return _parse_as(text, member)
            except ValueError:
                continue
        raise ValueError
    if annotation is type(None):
        if text.lower() in _NONE:
            return None
        raise ValueError
    if annotation is bool:
        if text.lower() in _TRUE:
            return True
        if text.lower() in _FALSE:
            return False
        raise ValueError
    if annotation is int:
        return int(text)
    if annotation is float:
        return float(text)
    if annotation is str:
        return text
    if origin is typing.Literal:
        if text in args:
            return text
        raise ValueError
    if origin in (list, tuple) or annotation in (list, tuple):
        try:
            items = json.loads(text)
        except json.JSONDecodeError:
            items = [item.strip() for item in text.strip("[]()").split(",") if item.strip()]
        if not isinstance(items, list):
            raise ValueError
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(items) != len(args):
                raise ValueError
            return [_parse_as(str(item), arg) for item, arg in zip(items, args)]
        element = args[0] if args else typing.Any
        return [_parse_as(json.dumps(item) if not isinstance(item, str) else item, element) for item in items]
    if origin is dict or annotation is dict:
        value = json.loads(text)  # JSONDecodeError is a ValueError
        if not isinstance(value, dict):
            raise ValueError
        return value
    raise ValueError


def parse_config_overrides(items, config_class=None, *, argument: str = "--config-overrides") -> dict:
    """``["hidden_size=32", "norm_pix_loss=false"]`` -> ``{"hidden_size": 32, "norm_pix_loss": False}``, each value
    typed by ``config_class``'s field annotation (bool: true/false/yes/no/1/0; lists: ``1,2`` or ``[1, 2]``; None:
    none/null where the field allows it). Unknown fields and values of the wrong type raise a ValueError. A dict is
    returned as it is (Python callers pass typed values). Without ``config_class`` values are read as JSON."""
    if isinstance(items, dict):
        return dict(items)
    fields = config_fields(config_class) if config_class is not None else {}
    if config_class is not None:
        fields["num_labels"] = int  # an init-only keyword of every config
    overrides = {}
    for item in items or []:
        key, sep, text = str(item).partition("=")
        if not sep or not key:
            raise ValueError(f"{argument} takes KEY=VALUE items, got {item!r}")
        if config_class is None:
            overrides[key] = _parse_as(text, typing.Any)
            continue
        if key not in fields:
            own = sorted(set(fields) - _common_fields())
            raise ValueError(
                f"{argument}: unknown config field(s) [{key!r}] for {config_class.__name__}; allowed: {', '.join(own)} "
                "(and transformers' common config fields, e.g. num_labels)"
            )
        try:
            overrides[key] = _parse_as(text, fields[key])
        except ValueError:
            raise ValueError(
                f"{argument}: {key}={text!r} is not a valid {_type_name(fields[key])} "
                f"(the type of {config_class.__name__}.{key})"
            ) from None
    return overrides


def _common_fields() -> set:
    from transformers import PreTrainedConfig

    return {field.name for field in dataclasses.fields(PreTrainedConfig)} | {"num_labels"}
