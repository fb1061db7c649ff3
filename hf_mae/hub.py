"""Publish hf-mae models: save them with their modeling code, and push run folders to the Hugging Face Hub.

``save_pretrained_with_code`` writes a folder that plain ``transformers`` loads with ``trust_remote_code=True``,
without hf-mae installed: the config's ``auto_map`` names every Auto class of the method (from the registry), and
transformers copies each class's module plus its sibling ``from .x import y`` files next to the weights.

``push_run`` (``hf-mae push RUN_DIR REPO_ID``) publishes a run folder written by ``hf-mae pretrain``: weights,
config, processor, the code, a model card, the figures and metrics. It stages an allow-list of files in a temporary
folder (never ``checkpoints/``) and uploads that folder with ``huggingface_hub.HfApi``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

from transformers import AutoConfig, PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin
from transformers.dynamic_module_utils import custom_object_save
from transformers.feature_extraction_utils import FeatureExtractionMixin
from transformers.image_processing_base import ImageProcessingMixin

from .registry import AUTO_CLASSES, METHODS

WEIGHTS_FILES = ("model.safetensors", "model.safetensors.index.json")
PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
METRICS_FILES = ("metrics.json", "metrics.jsonl")  # copied from the run folder with its top-level *.png figures
_PART = r"[A-Za-z0-9_](?:[A-Za-z0-9._-]*[A-Za-z0-9_])?"  # Hub rule: word characters, '-' and '.' inside
_REPO_ID = re.compile(rf"^{_PART}/{_PART}$")
_MISSING = object()


# ----------------------------------------------------------------------------------------------- remote code


def method_of(config):
    """The registry row (``hf_mae.registry.Method``) whose config class is exactly ``type(config)``.

    Exact, not ``isinstance``: a method that subclasses another's config (ColorMAE from MAE) is its own row."""
    for method in METHODS.values():
        if type(config) is method.config_class:
            return method
    known = ", ".join(m.config_class.__name__ for m in METHODS.values())
    raise ValueError(f"config must be the config of a registered hf-mae method ({known}), got {type(config).__name__}")


def _class_ref(cls) -> str:
    """``"module.Class"`` as it appears in ``auto_map``: code files are copied flat, so only the last module name."""
    return f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"


def _processor_auto_class(processor) -> str:
    if isinstance(processor, ProcessorMixin):
        return "AutoProcessor"
    if isinstance(processor, ImageProcessingMixin):
        return "AutoImageProcessor"
    if isinstance(processor, FeatureExtractionMixin):
        return "AutoFeatureExtractor"
    if isinstance(processor, PreTrainedTokenizerBase):
        return "AutoTokenizer"
    raise TypeError(
        "processor must be an image processor, feature extractor, tokenizer or ProcessorMixin, "
        f"got {type(processor).__name__}"
    )


def _processor_parts(processor) -> list:
    """The processor and, for a ProcessorMixin, the sub-processors it saves (each needs its own code and auto_map)."""
    parts = [processor]
    if isinstance(processor, ProcessorMixin):
        parts += [getattr(processor, name) for name in processor.get_attributes()]
    # transformers' own classes (a stock tokenizer) load by name: they need no code copied
    return [part for part in parts if not type(part).__module__.startswith("transformers.")]


@contextlib.contextmanager
def _restored(*targets):
    """Restores each ``(obj, attr)`` to its value on entry (or removes it) when the block ends.

    ``register_for_auto_class`` sets ``cls._auto_class``, and saving sets ``auto_map`` on configs and processors;
    neither may outlive the save, or a later plain ``save_pretrained`` would write an ``auto_map`` without code."""
    saved = [(obj, attr, vars(obj).get(attr, _MISSING)) for obj, attr in targets]
    try:
        yield
    finally:
        for obj, attr, old in reversed(saved):
            if old is _MISSING:
                with contextlib.suppress(AttributeError):
                    delattr(obj, attr)
            else:
                setattr(obj, attr, old)


def _move_into(staging: Path, target: Path) -> None:
    """Moves the staged files into ``target``: the whole folder at once when ``target`` is new, else file by file
    (each ``os.replace`` is atomic)."""
    if not target.exists():
        os.replace(staging, target)
        return
    for source in sorted(p for p in staging.rglob("*") if p.is_file()):
        destination = target / source.relative_to(staging)
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, destination)


def save_pretrained_with_code(model, save_directory, processor=None) -> Path:
    """Saves ``model`` (and its processor) with the modeling code, for ``trust_remote_code=True`` loading.

    The folder loads with ``AutoConfig``, ``AutoModel``, ``AutoModelForPreTraining``,
    ``AutoModelForImageClassification`` (every Auto class of the method in ``hf_mae.registry``) and the processor's
    Auto class, in a Python without hf-mae. Weights are safetensors under the in-memory ``state_dict()`` names.

    model: a model of a registered method (any of its task classes).
    save_directory: the folder to write; created if needed (staged in a temporary folder beside it, then moved).
    processor: the processor to save with it; default: the method's processor sized to ``model.config``.
    Returns the folder as a Path.
    """
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"model must be a transformers PreTrainedModel, got {type(model).__name__}")
    config = model.config
    method = method_of(config)
    tasks = [task for task, cls in method.model_classes.items() if cls is type(model)]
    if not tasks:
        allowed = ", ".join(cls.__name__ for cls in method.model_classes.values())
        raise TypeError(f"model must be one of the {method.name} classes ({allowed}), got {type(model).__name__}")
    processor = method.make_processor(config) if processor is None else processor

    auto_map = {"AutoConfig": _class_ref(method.config_class)}
    auto_map.update({AUTO_CLASSES[task].__name__: _class_ref(cls) for task, cls in method.model_classes.items()})
    parts = _processor_parts(processor)
    registrations = [(method.config_class, "AutoConfig"), (type(model), AUTO_CLASSES[tasks[0]].__name__)]
    registrations += [(type(part), _processor_auto_class(part)) for part in parts]

    target = Path(save_directory)
    if target.exists() and not target.is_dir():
        raise ValueError(f"save_directory must be a folder, got the file {str(target)!r}")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        os.chmod(staging, 0o755)
        changed = [(cls, "_auto_class") for cls, _ in registrations] + [(obj, "auto_map") for obj in (config, *parts)]
        with _restored(*changed):
            for cls, auto_class in registrations:
                cls.register_for_auto_class(auto_class)
            config.auto_map = auto_map  # save_pretrained adds only the saved class; list every Auto class
            # save_original_format=False: the in-memory names, which a process without hf_mae expects
            model.save_pretrained(staging, save_original_format=False)
            processor.save_pretrained(staging)
        for cls in method.model_classes.values():  # the other tasks' classes may live in other files
            custom_object_save(cls, staging)
        _move_into(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


# ----------------------------------------------------------------------------------------------- push


def check_repo_id(repo_id) -> str:
    """``repo_id`` if it is a full Hub model id ``namespace/name``, else a ValueError saying why. The namespace is
    required so that the model card can name the repo before anything is created on the Hub."""
    rule = "letters, digits, '_', and '-' or '.' inside; at most 96 characters; no '--' or '..'; no '.git' suffix"
    if not isinstance(repo_id, str):
        raise TypeError(f"repo_id must be a string like 'namespace/name', got {type(repo_id).__name__}")
    if (
        not _REPO_ID.match(repo_id)
        or len(repo_id) > 96
        or "--" in repo_id
        or ".." in repo_id
        or repo_id.endswith(".git")
    ):
        raise ValueError(f"repo_id must look like 'namespace/name' ({rule}), got {repo_id!r}")
    return repo_id


def _check_run_dir(run_dir: Path) -> None:
    if not run_dir.is_dir():
        raise ValueError(
            f"run_dir must be a run folder written by `hf-mae pretrain`, got {str(run_dir)!r} (not a folder)"
        )
    missing = [] if (run_dir / "config.json").is_file() else ["config.json"]
    if not any((run_dir / name).is_file() for name in WEIGHTS_FILES):
        missing.append(" or ".join(WEIGHTS_FILES))
    if missing:
        raise ValueError(
            f"run_dir {str(run_dir)!r} has no model to push: missing {', '.join(missing)} "
            "(expected a folder written by `hf-mae pretrain`; checkpoints/ holds training states, not the model)"
        )


def load_run(run_dir):
    """(model, processor, method) of a run folder; the model class is the one named in ``config.architectures``."""
    run_dir = Path(run_dir)
    _check_run_dir(run_dir)
    config = AutoConfig.from_pretrained(run_dir)
    method = method_of(config)
    by_name = {cls.__name__: cls for cls in method.model_classes.values()}
    names = [name for name in (config.architectures or []) if name in by_name]
    model_class = by_name[names[0]] if names else method.model_classes["pretraining"]
    model = model_class.from_pretrained(run_dir, config=config).eval()
    if any((run_dir / name).is_file() for name in PROCESSOR_FILES):
        processor = method.processor_class.from_pretrained(run_dir)
    else:
        processor = method.make_processor(config)
    return model, processor, method


def _parse_json(text: str):
    with contextlib.suppress(ValueError):
        return json.loads(text)
    return None


def _read_json(path: Path):
    with contextlib.suppress(OSError):
        return _parse_json(path.read_text())
    return None


def _run_metrics(run_dir: Path) -> dict:
    """The run's final metrics: metrics.json, else the last record of metrics.jsonl ({} when neither reads)."""
    metrics = _read_json(run_dir / "metrics.json")
    if not isinstance(metrics, dict) and (run_dir / "metrics.jsonl").is_file():
        lines = (run_dir / "metrics.jsonl").read_text().splitlines()
        metrics = next((_parse_json(line) for line in reversed(lines) if line.strip()), None)
    return metrics if isinstance(metrics, dict) else {}


def _run_dataset(run_dir: Path, metrics: dict) -> str | None:
    """The data set name recorded by the run: ``"dataset"`` in metrics or in any other top-level json file."""
    if isinstance(metrics.get("dataset"), str):
        return metrics["dataset"]
    for path in sorted(run_dir.glob("*.json")):
        data = _read_json(path)
        if isinstance(data, dict) and isinstance(data.get("dataset"), str):
            return data["dataset"]
    return None


# a classifier's task -> the transformers pipeline that runs it, and what that pipeline is called on
PIPELINES = {
    "image-classification": ('"image.png"', "a path, URL or PIL image"),
    "video-classification": ('"clip.mp4"', "a video file path or URL (decoded with PyAV)"),
    "audio-classification": ('{"raw": waveform, "sampling_rate": SAMPLING_RATE}', "a 1-D float waveform"),
}
DEFAULT_LICENSE = "apache-2.0"  # hf-mae's own; weights trained on other data may need another (``license=``)


def model_task(model, method) -> str:
    """The registry task of ``model``'s class: "pretraining", "base", "image-classification", ..."""
    return next((task for task, cls in method.model_classes.items() if cls is type(model)), "pretraining")


def pipeline_tag(task: str, modality: str) -> str | None:
    """The Hub's ``pipeline_tag`` of a card: the classifier's own pipeline; image-feature-extraction for an image
    encoder or pre-training model (their AutoModel is the encoder); None where transformers has no pipeline."""
    if task in PIPELINES:
        return task
    if task in ("base", "pretraining") and modality == "image":
        return "image-feature-extraction"
    return None


def _usage(repo_id: str, model, processor, method, task: str, with_code: bool) -> list[str]:
    """The lines of the card's Python usage snippet for ``task``."""
    remote = ", trust_remote_code=True" if with_code else ""
    setup = [] if with_code else ["import hf_mae  # registers the hf-mae classes with transformers"]
    processor_auto = _processor_auto_class(processor)
    inputs = {"image": "images", "video": "videos", "audio": "waveforms", "point-cloud": "clouds",
              "graph": "graphs"}.get(method.modality, "inputs")  # fmt: skip
    if method.modality == "graph":  # a GNN encoder masks nothing: every node gets an embedding
        features = "features = encoder(**inputs).last_hidden_state  # (nodes, hidden_size); pooler_output per graph"
    else:
        features = "features = encoder(**inputs, mask_ratio=0.0).last_hidden_state  # (batch, tokens, hidden_size)"
    load_processor = f'processor = {processor_auto}.from_pretrained("{repo_id}"{remote})'
    if task == "pretraining":
        return [
            *setup, f"from transformers import AutoModel, AutoModelForPreTraining, {processor_auto}", "",
            load_processor,
            f'model = AutoModelForPreTraining.from_pretrained("{repo_id}"{remote})',
            f'inputs = processor({inputs}, return_tensors="pt")',
            "outputs = model(**inputs)  # outputs.loss, outputs.logits, outputs.mask (True = hidden from the encoder)",
            "",
            "# features: the encoder alone, nothing masked, tokens in their original order",
            f'encoder = AutoModel.from_pretrained("{repo_id}"{remote})',
            features,
        ]
    if task == "base":
        lines = [*setup]
        if method.modality == "image":
            lines += ["from transformers import pipeline", "",
                      f'extractor = pipeline("image-feature-extraction", model="{repo_id}"{remote})',
                      'features = extractor("image.png")  # the encoder\'s tokens of one image', ""]  # fmt: skip
        return lines + [
            f"from transformers import AutoModel, {processor_auto}", "",
            load_processor,
            f'encoder = AutoModel.from_pretrained("{repo_id}"{remote})',
            f'inputs = processor({inputs}, return_tensors="pt")',
            features,
        ]
    auto = AUTO_CLASSES[task].__name__
    lines = [*setup]
    if task in PIPELINES:
        argument, what = PIPELINES[task]
        rate = getattr(processor, "sampling_rate", None)
        lines += ["from transformers import pipeline", "",
                  f'classifier = pipeline("{task}", model="{repo_id}"{remote})',
                  f"predictions = classifier({argument.replace('SAMPLING_RATE', str(rate))})  # {what}",
                  '# [{"label": ..., "score": ...}, ...], best first', ""]  # fmt: skip
    return lines + [
        "import torch",
        f"from transformers import {auto}, {processor_auto}", "",
        load_processor,
        f'model = {auto}.from_pretrained("{repo_id}"{remote})',
        f'inputs = processor({inputs}, return_tensors="pt")',
        "with torch.no_grad():",
        "    logits = model(**inputs).logits",
        "labels = [model.config.id2label[i] for i in logits.argmax(-1).tolist()]",
    ]


def model_card(
    repo_id: str, model, processor, method, *, dataset=None, metrics=None, figures=(), with_code=True,
    license: str = DEFAULT_LICENSE,
) -> str:
    """The README.md of a pushed model: metadata (license, library, tags, the task's ``pipeline_tag``, data set),
    method and paper, data set, metrics, figures and a usage snippet for the model's task (a classifier: its
    pipeline; an encoder: feature extraction; a pre-training model: loss, reconstruction and features)."""
    from huggingface_hub import ModelCardData

    if not isinstance(license, str) or not license:
        raise ValueError(f"license must be a Hub license id such as 'apache-2.0' or 'cc-by-nc-4.0', got {license!r}")
    numbers = {k: v for k, v in (metrics or {}).items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    task = model_task(model, method)
    num_params = sum(p.numel() for p in model.parameters())
    tags = ["hf-mae", method.name, "masked-modeling"] + (["custom_code"] if with_code else [])
    data = ModelCardData(
        license=license,
        library_name="transformers",
        tags=tags,
        pipeline_tag=pipeline_tag(task, method.modality),
        datasets=[dataset] if dataset and "/" in dataset else None,  # only Hub ids belong in the metadata
    )
    kind = {"pretraining": "pre-training model", "base": "encoder"}.get(task, f"{task} model")
    lines = ["---", data.to_yaml(), "---"] + [
        "",
        f"# {repo_id}",
        "",
        f"A **{method.name}** {kind} ({type(model).__name__}, {num_params / 1e6:.2f}M parameters) made with "
        "hf-mae, a transformers-native library of masked-modeling methods.",
        "",
        f"- Method: {method.paper}",
        f"- Pre-training data: {dataset or 'not recorded'}",
        f"- License: {license}",
    ]
    for field in ("image_size", "patch_size", "hidden_size", "num_hidden_layers", "mask_ratio"):
        if hasattr(model.config, field):
            lines.append(f"- `{field}`: {getattr(model.config, field)}")
    if task.endswith("-classification"):
        labels = list((model.config.id2label or {}).values())
        lines.append(f"- Classes ({len(labels)}): {', '.join(map(str, labels[:20]))}{', ...' if len(labels) > 20 else ''}")
    if numbers:
        lines += ["", "## Metrics", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in numbers.items()]
    if figures:
        lines += ["", "## Figures", ""] + [f"![{Path(f).stem}]({f})" for f in figures]
    lines += ["", "## Usage", "", "```python", *_usage(repo_id, model, processor, method, task, with_code), "```", ""]
    if with_code:
        lines += ["The modeling code is in this repository: `transformers` alone loads it, hf-mae is not needed.", ""]
    return "\n".join(lines)


def _check_no_token(folder: Path, token: str) -> None:
    """Refuses to upload a folder in which any file contains the token."""
    needle = token.encode()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        if needle in path.read_bytes():
            raise RuntimeError(f"refusing to upload: {path.name} contains the access token")


def push_run(
    run_dir,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    with_code: bool = True,
    token: str | None = None,
    dataset: str | None = None,
    license: str = DEFAULT_LICENSE,
):
    """Publishes a run folder of ``hf-mae pretrain`` as a Hub model repo.

    Uploaded: model.safetensors and config.json (with ``auto_map`` and the modeling code when ``with_code``), the
    processor, README.md (model card), metrics.json / metrics.jsonl and the top-level *.png figures. Never
    ``checkpoints/`` or any other file of the run folder.
    private: create the repo private (an existing repo keeps its visibility).
    revision: branch to commit to (created from main when missing); default main.
    token: a Hub token; default: HF_TOKEN or the stored login, as huggingface_hub decides. Never printed or saved.
    dataset: the data set named in the card; default: ``"dataset"`` recorded in the run's json files.
    license: the card's ``license`` (a Hub license id); default apache-2.0, hf-mae's own.
    Returns the ``huggingface_hub.CommitInfo`` (a str: the commit URL; ``.oid`` is the commit id).
    """
    from huggingface_hub import HfApi

    repo_id = check_repo_id(repo_id)
    run_dir = Path(run_dir)
    model, processor, method = load_run(run_dir)
    metrics = _run_metrics(run_dir)
    dataset = dataset or _run_dataset(run_dir, metrics)
    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="hf-mae-push-") as tmp:
        staging = Path(tmp) / "repo"
        if with_code:
            save_pretrained_with_code(model, staging, processor)
        else:
            model.save_pretrained(staging, save_original_format=False)
            processor.save_pretrained(staging)
        figures = sorted(p.name for p in run_dir.glob("*.png") if p.is_file())
        for name in [*figures, *METRICS_FILES]:
            if (run_dir / name).is_file():
                shutil.copyfile(run_dir / name, staging / name)
        card = model_card(
            repo_id, model, processor, method, dataset=dataset, metrics=metrics, figures=figures, with_code=with_code,
            license=license,
        )
        (staging / "README.md").write_text(card)
        if isinstance(token, str) and token:
            _check_no_token(staging, token)
        # the repo is created only once everything is staged: a bad run folder leaves no empty repo behind
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision not in (None, "main"):
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=staging,
            revision=revision,
            commit_message=commit_message or f"Upload {method.name} model with hf-mae",
        )


# ----------------------------------------------------------------------------------------------- CLI


def add_arguments(parser) -> None:
    parser.add_argument("run_dir", help="run folder written by `hf-mae pretrain` (model.safetensors, config.json, ...)")
    parser.add_argument("repo_id", help="Hub model repo, e.g. my-org/mae-tiny-digits")
    parser.add_argument("--private", action="store_true", help="create the repo private")
    parser.add_argument("--revision", default=None, help="branch to push to (default: main)")
    parser.add_argument("--commit-message", default=None)
    code = parser.add_mutually_exclusive_group()
    code.add_argument(
        "--with-code", dest="with_code", action="store_true", default=True,
        help="upload the modeling code so plain transformers loads it with trust_remote_code=True (default)",
    )
    code.add_argument("--no-code", dest="with_code", action="store_false", help="weights only: users need hf-mae")
    parser.add_argument("--dataset", default=None, help="data set named in the model card (default: from the run)")
    parser.add_argument("--license", default=DEFAULT_LICENSE,
                        help="license id in the model card, e.g. apache-2.0 or cc-by-nc-4.0 (match your data's terms)")
    parser.add_argument(
        "--token", default=None, help="Hub token (default: HF_TOKEN or `hf auth login`); prefer HF_TOKEN over this flag"
    )


def run(args) -> int:
    from huggingface_hub.errors import HfHubHTTPError

    try:
        commit = push_run(
            args.run_dir,
            args.repo_id,
            private=args.private,
            revision=args.revision,
            commit_message=args.commit_message,
            with_code=args.with_code,
            token=args.token,
            dataset=args.dataset,
            license=args.license,
        )
    except (ValueError, TypeError) as error:
        print(f"hf-mae push: error: {error}", file=sys.stderr)
        return 2
    except (HfHubHTTPError, RuntimeError) as error:  # the Hub refused, or the token was found in a file
        print(f"hf-mae push: failed: {error}", file=sys.stderr)
        return 1
    print(f"pushed {args.run_dir} to {commit.repo_url.repo_id}: {commit.commit_url}")
    return 0
