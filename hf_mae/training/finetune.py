"""``hf-mae finetune``: fine-tune a pretrained folder for classification with ``transformers.Trainer``: images,
and any method whose registry row has a classification task over examples (point clouds, audio clips).

The recipe is MAE's end-to-end fine-tuning (He et al., 2021, Appendix A.2): AdamW with layer-wise learning-rate
decay (0.75), weight decay 0.05 except on norms, biases and tokens, label smoothing 0.1, drop path, warmup then
cosine decay, and ``lr = base_lr * batch_size / 256``. Accuracy is measured on the eval split after each epoch
and the best model is kept.

Identity-adversarial training (FMAE-IAT): ``identity_adversarial_lambda`` > 0 (``--identity-adversarial-lambda``)
gives the classifier an identity head behind gradient reversal, trained on the train split's identity column
(``identity_column``, default ``identity``); only models whose config has the field (FMAE) take it. Multi-label
data (a label column of multi-hot lists, e.g. action units) are trained with BCE and scored by the mean per-label
F1 at threshold 0.5 (the best model is kept by it) and the mean per-label accuracy.

A model class may carry its own recipe as ``finetune_defaults`` (a dict of this module's arguments: ``lr``,
``weight_decay``, ``layer_decay``, ``label_smoothing``, ``warmup_ratio``, ...), used where the caller gave none
(R-AMT: the official Adam 8e-5 without weight decay, warmup or smoothing). A model without ``drop_path_rate`` in its
config (R-AMT) gets no drop-path override. Instead of a pretrained folder, ``model=`` (``--model``) names a preset
whose classifier is built fresh with the data set's class names (``--config-overrides`` apply): R-AMT wraps a frozen
CLIP-like model, so its preset is where fine-tuning starts (``hf-mae finetune --model ramt-tiny --dataset cifar10``).
A model with ``save_finetune_exports(dir)`` writes its exports beside the best model (R-AMT: ``masks/``).

Python API: :func:`finetune`. CLI: ``hf-mae finetune PRETRAINED_DIR --dataset digits --output-dir runs/ft``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import tempfile

import numpy as np
import torch

from .optim import param_groups, scaled_lr

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
EVAL_SPLITS = ("test", "validation")
EMBEDDING_NAMES = ("embed", "cls_token", "dist_token", "position")  # layer id 0
_BLOCK_INDEX = re.compile(r"(?:^|\.)(?:layers|layer|blocks)\.(\d+)\.")


def layer_id(name: str, num_layers: int) -> int:
    """MAE's layer id of a parameter: 0 for embeddings/cls/positions, i + 1 for block i, num_layers + 1 for the
    rest (final norm, fc_norm, classifier)."""
    block = _BLOCK_INDEX.search(name)
    if block is not None:
        return int(block.group(1)) + 1
    if any(key in name for key in EMBEDDING_NAMES):
        return 0
    return num_layers + 1


DEFAULT_LAYER_DECAY = 0.75  # MAE's fine-tuning recipe


def layer_decay_param_groups(model, lr: float, weight_decay: float, layer_decay: float | None = None) -> list[dict]:
    """AdamW parameter groups with MAE's layer-wise lr decay: a parameter of layer id ``i`` gets
    ``lr * layer_decay ** (num_layers + 1 - i)``; norms, biases and tokens get no weight decay (``optim.param_groups``).
    Trainer's scheduler multiplies each group's own lr, so the ratios hold throughout training. ``None`` (the
    default) is MAE's 0.75 for an encoder with one stack of blocks and 1 (off) for one without (I2P-MAE, SparK)."""
    num_layers = getattr(model.config, "num_hidden_layers", None)
    if layer_decay is None:
        layer_decay = 1.0 if num_layers is None else DEFAULT_LAYER_DECAY
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be > 0 and <= 1, got {layer_decay}")
    if num_layers is None:  # a hierarchical encoder (I2P-MAE) or a convnet (SparK) has no single block index
        if layer_decay != 1.0:
            raise ValueError(
                f"layer_decay={layer_decay} needs an encoder with one stack of blocks (config.num_hidden_layers); "
                f"{type(model.config).__name__} has none: pass layer_decay=1.0 (--layer-decay 1)"
            )
        return param_groups(model, weight_decay, lr)
    return param_groups(
        model, weight_decay, lr, lr_scale=lambda name: layer_decay ** (num_layers + 1 - layer_id(name, num_layers))
    )


def accuracy_metrics(eval_prediction) -> dict:
    """Trainer ``compute_metrics``: top-1 accuracy in numpy (``evaluate.load`` would need the Hub)."""
    logits = eval_prediction.predictions
    logits = logits[0] if isinstance(logits, tuple) else logits
    return {"accuracy": float((np.asarray(logits).argmax(-1) == np.asarray(eval_prediction.label_ids)).mean())}


def multi_label_metrics(eval_prediction) -> dict:
    """Trainer ``compute_metrics`` for multi-hot labels: ``f1``, the mean over labels of each label's F1 with scores
    above 0 (probability 0.5) counted positive (FMAE-IAT's AU metric; a label with no positives and no predicted
    positives has F1 1), and ``accuracy``, the mean per-label accuracy."""
    logits = eval_prediction.predictions
    logits = np.asarray(logits[0] if isinstance(logits, tuple) else logits)
    labels = np.asarray(eval_prediction.label_ids) > 0.5
    predicted = logits > 0
    true_positive = (predicted & labels).sum(0)
    denominator = predicted.sum(0) + labels.sum(0)
    f1 = np.where(denominator > 0, 2 * true_positive / np.maximum(denominator, 1), 1.0)
    return {"f1": float(f1.mean()), "accuracy": float((predicted == labels).mean())}


def _label_layout(dataset, label_column: str) -> tuple[list[str], bool]:
    """(label names, multi_label): a column of lists (multi-hot, e.g. action units) is multi-label."""
    import datasets

    feature = (getattr(dataset, "features", None) or {}).get(label_column)
    if isinstance(feature, (datasets.Sequence, list)) or (feature is None and isinstance(dataset[0][label_column], list)):
        inner = getattr(feature, "feature", None) if not isinstance(feature, list) else (feature[0] if feature else None)
        names = getattr(inner, "names", None)
        width = getattr(feature, "length", -1) if not isinstance(feature, list) else -1
        width = width if width and width > 0 else len(dataset[0][label_column])
        return (list(names) if names and len(names) == width else [str(i) for i in range(width)]), True
    names = getattr(feature, "names", None)
    return (names or [str(i) for i in range(num_classes(dataset, label_column))]), False


def num_classes(dataset, label_column):
    from .data import num_classes as count

    return count(dataset, label_column)


def _check_pretrained(pretrained: str, from_scratch: bool) -> None:
    from .arguments import check_model_path

    check_model_path(pretrained, "pretrained_dir", what="a pretraining folder (config.json and weights)")
    if not os.path.isdir(pretrained):
        return  # a Hub id: from_pretrained resolves it
    if not os.path.isfile(os.path.join(pretrained, "config.json")):
        raise ValueError(f"pretrained_dir {pretrained!r} has no config.json; expected a folder saved by save_pretrained")
    if not from_scratch and not any(os.path.isfile(os.path.join(pretrained, f)) for f in WEIGHT_FILES):
        raise ValueError(
            f"pretrained_dir {pretrained!r} has no model weights (looked for {', '.join(WEIGHT_FILES)}); "
            "pass from_scratch=True (--from-scratch) to train its config from random init"
        )


# argument -> (minimum, strict, maximum, open_max): the ranges the recipe makes sense in (API and CLI)
RANGES = {
    "epochs": (0, True, None, False),
    "batch_size": (1, False, None, False),
    "lr": (0, True, None, False),
    "base_lr": (0, True, None, False),
    "layer_decay": (0, True, 1, False),
    "weight_decay": (0, False, None, False),
    "label_smoothing": (0, False, 1, True),
    "drop_path": (0, False, 1, True),
    "warmup_ratio": (0, False, 1, True),  # Trainer reads a warmup of 1 or more as a number of steps
    "max_train_samples": (1, False, None, False),
    "max_eval_samples": (1, False, None, False),
    "identity_adversarial_lambda": (0, False, None, False),
}
# FMAE-IAT's options (FMAEConfig's fields; None: the model's own)
IAT_CHOICES = {
    "identity_loss": ("bce", "cross_entropy"),
    "identity_adversarial_schedule": ("constant", "dann"),
    "identity_head_input": ("pooled", "tokens"),
}


def check_numbers(**values) -> None:
    """ValueError naming the first argument outside its range in ``RANGES`` (None: not given); ``max_steps`` is
    -1 (train for ``epochs``) or >= 1."""
    from .arguments import check_range

    max_steps = values.pop("max_steps", -1)
    if max_steps != -1:
        check_range("max_steps (-1: use epochs)", max_steps, minimum=1)
    for name, value in values.items():
        minimum, strict, maximum, open_max = RANGES[name]
        check_range(name, value, minimum=minimum, strict=strict, maximum=maximum, open_max=open_max)


def _in_range(kind, name: str):
    """The argparse ``type=`` of argument ``name``: parses ``kind`` and checks ``RANGES[name]``."""
    from .arguments import number

    minimum, strict, maximum, open_max = RANGES[name]
    return number(kind, minimum=minimum, strict=strict, maximum=maximum, open_max=open_max)


def _load_processor(pretrained: str, config):
    from hf_mae.registry import processor_auto_class, processor_for_config

    if os.path.isdir(pretrained) and not os.path.isfile(os.path.join(pretrained, "preprocessor_config.json")):
        return processor_for_config(config)
    return processor_auto_class(config).from_pretrained(pretrained)


# MAE's fine-tuning recipe, what an argument left at None becomes unless the model class's ``finetune_defaults`` say
# otherwise (``lr`` None: ``base_lr * batch / 256``; ``layer_decay`` None: 0.75, or 1 without one stack of blocks;
# ``label_smoothing`` None: 0.1, or 0 for multi-label data and IAT)
RECIPE_DEFAULTS = dict(lr=None, base_lr=5e-4, layer_decay=None, weight_decay=0.05, label_smoothing=None, drop_path=0.1,
                       warmup_ratio=0.05)


def recipe_defaults(model_class) -> dict:
    """MAE's recipe updated by ``model_class.finetune_defaults`` (a ValueError names an unknown key)."""
    own = dict(getattr(model_class, "finetune_defaults", None) or {})
    unknown = sorted(set(own) - set(RECIPE_DEFAULTS))
    if unknown:
        raise ValueError(f"{model_class.__name__}.finetune_defaults has unknown key(s) {unknown}; allowed: "
                         f"{sorted(RECIPE_DEFAULTS)}")
    return {**RECIPE_DEFAULTS, **own}


def classification_class(config):
    """The class of ``config``'s classifier over whole examples (see :func:`classification_auto_class`)."""
    from hf_mae.registry import method_for_config

    classification_auto_class(config)  # the explanation for a method without one
    method = method_for_config(config)
    return method.model_classes[[task for task in method.model_classes if task.endswith("-classification")][0]]


def classification_auto_class(config):
    """The Auto class that loads ``config``'s classifier over whole examples: image / video / audio /
    point-cloud classification (graph models classify nodes or graphs: see ``hf_mae.training.graph_eval``)."""
    from hf_mae.registry import AUTO_CLASSES, method_for_config

    method = method_for_config(config)
    tasks = [task for task in method.model_classes if task.endswith("-classification")]
    if method.modality == "graph" or not tasks:
        raise ValueError(
            f"hf-mae finetune classifies whole images, clips or clouds; {method.name} ({method.modality}) has the "
            f"tasks {sorted(method.model_classes)}: fine-tune it from Python (see the README)"
        )
    return AUTO_CLASSES[tasks[0]]


def _eval_split(dataset: str, eval_split: str | None):
    from .data import load_image_dataset

    if eval_split is not None:
        return load_image_dataset(dataset, eval_split)
    for split in EVAL_SPLITS:
        try:
            return load_image_dataset(dataset, split)
        except ValueError as error:
            if "split" not in str(error):
                raise
    raise ValueError(f"dataset {dataset!r} has none of the eval splits {EVAL_SPLITS}; pass eval_split")


def build_trainer(
    pretrained_dir,
    dataset: str,
    output_dir,
    *,
    model: str | None = None,
    config_overrides: dict | None = None,
    from_scratch: bool = False,
    epochs: float = 10.0,
    max_steps: int = -1,
    batch_size: int = 64,
    lr: float | None = None,
    base_lr: float | None = None,
    layer_decay: float | None = None,
    weight_decay: float | None = None,
    label_smoothing: float | None = None,
    drop_path: float | None = None,
    warmup_ratio: float | None = None,
    seed: int = 0,
    train_split: str = "train",
    eval_split: str | None = None,
    max_train_samples: int | None = None,
    max_eval_samples: int | None = None,
    identity_adversarial_lambda: float | None = None,
    identity_column: str = "identity",
    identity_loss: str | None = None,
    identity_adversarial_schedule: str | None = None,
    identity_head_input: str | None = None,
    report_to: str = "none",
    disable_tqdm: bool | None = None,
):
    """A ready ``transformers.Trainer`` that fine-tunes ``pretrained_dir`` on ``dataset`` (checkpoints go to
    ``output_dir``); :func:`finetune` runs it. Arguments as in :func:`finetune`."""
    import transformers
    from transformers import AutoConfig, Trainer, TrainingArguments

    import hf_mae  # noqa: F401  (registers the Auto classes)

    from .callbacks import OptimizerStepHookCallback, TrainingProgressCallback
    from .data import LABEL_COLUMNS, collate, find_column, load_image_dataset, with_model_inputs

    max_steps = -1 if max_steps is None else max_steps
    check_numbers(epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr, base_lr=base_lr,
                  layer_decay=layer_decay, weight_decay=weight_decay, label_smoothing=label_smoothing,
                  drop_path=drop_path, warmup_ratio=warmup_ratio, max_train_samples=max_train_samples,
                  max_eval_samples=max_eval_samples, identity_adversarial_lambda=identity_adversarial_lambda)
    preset = _check_source(pretrained_dir, model, from_scratch, config_overrides)
    if preset is not None:
        from hf_mae.registry import create_config

        pretrained_config = create_config(preset, **(config_overrides or {}))
    else:
        pretrained_dir = str(pretrained_dir)
        pretrained_config = AutoConfig.from_pretrained(pretrained_dir)
    auto_class = classification_auto_class(pretrained_config)  # before loading any data
    defaults = recipe_defaults(classification_class(pretrained_config))
    if lr is None and base_lr is None:  # an explicit base_lr wins over a recipe's absolute lr
        lr = defaults["lr"]
    base_lr = defaults["base_lr"] if base_lr is None else base_lr
    layer_decay = defaults["layer_decay"] if layer_decay is None else layer_decay
    weight_decay = defaults["weight_decay"] if weight_decay is None else weight_decay
    label_smoothing = defaults["label_smoothing"] if label_smoothing is None else label_smoothing
    if label_smoothing and not getattr(classification_class(pretrained_config), "label_smoothing_allowed", True):
        raise ValueError(f"label_smoothing={label_smoothing}: Trainer's label smoother would replace the loss of "
                         f"{classification_class(pretrained_config).__name__} (its own terms need the labels); pass "
                         "label_smoothing=0")
    warmup_ratio = defaults["warmup_ratio"] if warmup_ratio is None else warmup_ratio
    takes_drop_path = hasattr(pretrained_config, "drop_path_rate")
    if drop_path is not None and not takes_drop_path:
        raise ValueError(f"drop_path={drop_path} needs a model with stochastic depth (config.drop_path_rate); "
                         f"{type(pretrained_config).__name__} has none: leave drop_path unset")
    drop_path = defaults["drop_path"] if drop_path is None else drop_path
    adversarial = bool(identity_adversarial_lambda)  # None / 0: plain fine-tuning
    if identity_adversarial_lambda is not None and not hasattr(pretrained_config, "identity_adversarial_lambda"):
        raise ValueError(
            f"identity_adversarial_lambda={identity_adversarial_lambda} needs a model with an identity-adversarial "
            f"head (FMAE, model_type 'fmae'); {pretrained_dir!r} is a {pretrained_config.model_type!r} model"
        )
    iat_options = dict(identity_loss=identity_loss, identity_adversarial_schedule=identity_adversarial_schedule,
                       identity_head_input=identity_head_input)
    iat_options = {name: value for name, value in iat_options.items() if value is not None}
    for name, value in iat_options.items():
        if not hasattr(pretrained_config, name):
            raise ValueError(f"{name}={value!r} needs an FMAE model (model_type 'fmae'); {pretrained_dir!r} is a "
                             f"{pretrained_config.model_type!r} model")
        allowed = IAT_CHOICES[name]
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if adversarial and label_smoothing:
        raise ValueError(
            f"label_smoothing={label_smoothing} cannot be combined with identity_adversarial_lambda > 0: Trainer's "
            "label smoother replaces the model's loss and would drop the identity term; pass label_smoothing=0"
        )

    train_data = load_image_dataset(dataset, train_split)
    eval_data = _eval_split(dataset, eval_split)
    if max_train_samples is not None and max_train_samples < len(train_data):
        train_data = train_data.shuffle(seed=seed).select(range(max_train_samples))
    if max_eval_samples is not None and max_eval_samples < len(eval_data):
        eval_data = eval_data.shuffle(seed=seed).select(range(max_eval_samples))
    label_column = find_column(train_data, LABEL_COLUMNS, "label")
    labels, multi_label = _label_layout(train_data, label_column)
    id2label = dict(enumerate(labels))
    label2id = {name: i for i, name in id2label.items()}
    if label_smoothing is None:  # MAE's 0.1 for single-label classes; BCE (multi-label) and IAT take none
        label_smoothing = 0.0 if (adversarial or multi_label) else 0.1
    elif label_smoothing and multi_label:
        raise ValueError(f"label_smoothing={label_smoothing} is for single-label cross-entropy; the label column "
                         f"{label_column!r} is multi-label (BCE): pass label_smoothing=0")

    transformers.set_seed(seed)  # the new head (and, from scratch, every weight) is drawn from this seed
    overrides = dict(num_labels=len(labels), id2label=id2label, label2id=label2id, **iat_options)
    if takes_drop_path:
        overrides["drop_path_rate"] = drop_path
    if multi_label:
        overrides["problem_type"] = "multi_label_classification"
    train_identity = None
    if identity_adversarial_lambda is not None:
        overrides["identity_adversarial_lambda"] = float(identity_adversarial_lambda)
        if adversarial:
            columns = list(train_data.column_names or [])
            if identity_column not in columns:
                raise ValueError(
                    f"identity_column {identity_column!r} is not a column of the {train_split!r} split (columns: "
                    f"{columns}); identity_adversarial_lambda > 0 needs each training example's subject"
                )
            overrides["num_identities"] = num_classes(train_data, identity_column)
            train_identity = identity_column
    if preset is not None:  # a fresh classifier of the preset's config, with the data set's classes
        from hf_mae.registry import create_processor

        for key, value in overrides.items():
            setattr(pretrained_config, key, value)
        model = classification_class(pretrained_config)(pretrained_config)
        processor = create_processor(preset, **(config_overrides or {}))
    else:
        if from_scratch:
            model = auto_class.from_config(AutoConfig.from_pretrained(pretrained_dir, **overrides))
        else:
            model = auto_class.from_pretrained(pretrained_dir, **overrides)
        processor = _load_processor(pretrained_dir, model.config)

    lr = scaled_lr(base_lr, batch_size * int(os.environ.get("WORLD_SIZE", "1"))) if lr is None else lr
    optimizer = torch.optim.AdamW(layer_decay_param_groups(model, lr, weight_decay, layer_decay), lr=lr)
    args = TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=epochs,
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=batch_size,
        learning_rate=lr,
        weight_decay=weight_decay,
        lr_scheduler_type="cosine",
        warmup_steps=warmup_ratio,  # 5.x: a value below 1 is a fraction of the training steps
        label_smoothing_factor=label_smoothing,
        eval_strategy="epoch",
        save_strategy="epoch",
        logging_strategy="epoch",
        save_total_limit=1,
        save_only_model=True,  # checkpoints only serve to keep the best model; finetune() removes them
        load_best_model_at_end=True,
        metric_for_best_model="f1" if multi_label else "accuracy",
        # the metrics need the class labels only: a forward that also takes ``identity_labels`` (FMAE-IAT, train
        # split only) would otherwise make Trainer skip the metrics of an eval split without them
        label_names=["labels"],
        remove_unused_columns=False,  # the lazy transform needs the raw input column
        use_cpu=not torch.cuda.is_available(),
        seed=seed,
        report_to=report_to,
        disable_tqdm=disable_tqdm,
    )
    return Trainer(
        model=model,
        args=args,
        data_collator=collate,
        train_dataset=with_model_inputs(train_data, processor, identity_column=train_identity),
        eval_dataset=with_model_inputs(eval_data, processor),
        processing_class=processor,  # saved beside the model
        compute_metrics=multi_label_metrics if multi_label else accuracy_metrics,
        optimizers=(optimizer, None),  # Trainer still builds its warmup + cosine scheduler over these groups
        # a model with an EMA teacher moves it once per optimiser step; FMAE-IAT's DANN ramp follows the progress
        callbacks=[OptimizerStepHookCallback(), TrainingProgressCallback()],
    )


def _check_source(pretrained_dir, model, from_scratch: bool, config_overrides) -> str | None:
    """Exactly one of ``pretrained_dir`` and ``model`` (a preset); returns the preset (None for a folder)."""
    if (pretrained_dir is None) == (model is None):
        raise ValueError("give either pretrained_dir (a pretraining folder) or model (a preset name, --model), "
                         f"not {'both' if model is not None else 'neither'}")
    if model is None:
        if config_overrides:
            raise ValueError("config_overrides (--config-overrides) go with model (--model); a pretrained folder "
                             "has its own config")
        _check_pretrained(str(pretrained_dir), from_scratch)
        return None
    from hf_mae.registry import get_method

    get_method(model)  # an unknown name lists the presets
    if from_scratch:
        raise ValueError(f"from_scratch is for a pretrained folder; model={model!r} is always built fresh")
    return model


def finetune(pretrained_dir, dataset: str, output_dir, *, overwrite: bool = False, **kwargs) -> dict:
    """Fine-tunes ``pretrained_dir`` (a folder with config.json + weights [+ preprocessor_config.json]) on
    ``dataset`` and saves the best model (by eval accuracy) with its processor to ``output_dir``.

    ``pretrained_dir`` may be None with ``model=`` a preset (built fresh with the data set's classes;
    ``config_overrides`` a dict of its config fields): R-AMT's ``ramt-tiny``.

    kwargs (see :func:`build_trainer`): from_scratch (train the same config from random init, a baseline), epochs,
    max_steps, batch_size, lr (default ``base_lr * batch_size * world_size / 256``), base_lr, layer_decay
    (default 0.75, or 1 for an encoder without one stack of blocks),
    weight_decay, label_smoothing, drop_path, warmup_ratio (each None: the model class's ``finetune_defaults``,
    else MAE's), seed, train_split, eval_split (default test, else
    validation), max_train_samples / max_eval_samples (a seeded random subset, for quick runs),
    identity_adversarial_lambda (FMAE-IAT's λ; None: the model's own), identity_column, identity_loss,
    identity_adversarial_schedule and identity_head_input (FMAE-IAT's options, see ``FMAEConfig``; None: the model's
    own), report_to.
    label_smoothing defaults to MAE's 0.1, or 0 for multi-label data and identity-adversarial training.

    Returns the best model's eval metrics (``eval_accuracy``, ``eval_loss``, ...) plus ``train_loss`` and
    ``output_dir``; the metrics are also written to ``output_dir/eval_results.json``.
    """
    output_dir = str(output_dir)
    if os.path.exists(output_dir) and not overwrite:
        raise ValueError(f"output_dir {output_dir!r} already exists; pass overwrite=True (--overwrite) to replace it")
    # fail before making any folder
    check_numbers(**{name: value for name, value in kwargs.items() if name in RANGES or name == "max_steps"})
    _check_source(pretrained_dir, kwargs.get("model"), kwargs.get("from_scratch", False), kwargs.get("config_overrides"))
    # Train into a temporary sibling folder and rename at the end: a failed run leaves nothing half-written.
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=os.path.basename(os.path.abspath(output_dir)) + ".partial-", dir=parent)
    try:
        trainer = build_trainer(pretrained_dir, dataset, staging, **kwargs)
        train_result = trainer.train()
        metrics = trainer.evaluate()  # the best model, reloaded by load_best_model_at_end
        trainer.save_model(staging)
        exports = getattr(trainer.model, "save_finetune_exports", None)
        if exports is not None:
            exports(staging)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_metrics("eval", metrics)  # -> eval_results.json
        trainer.save_state()
        for checkpoint in glob.glob(os.path.join(staging, "checkpoint-*")):
            shutil.rmtree(checkpoint)
        if os.path.exists(output_dir):
            shutil.rmtree(output_dir)
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {**metrics, "train_loss": train_result.metrics.get("train_loss"), "output_dir": output_dir}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .arguments import positive_int

    parser.add_argument("pretrained_dir", nargs="?", default=None,
                        help="pretraining folder (config.json, model.safetensors, preprocessor); or give --model")
    parser.add_argument("--model", default=None,
                        help="instead of a folder: a preset built fresh with the data set's classes (ramt-tiny)")
    parser.add_argument("--config-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config fields of --model's preset, typed by its config class")
    parser.add_argument("--dataset", required=True, help="digits, shapes, a local folder, or a Hugging Face dataset id")
    parser.add_argument("--output-dir", required=True, help="where the best model, processor and eval_results.json go")
    parser.add_argument("--from-scratch", action="store_true", help="random init of the same config (a baseline)")
    parser.add_argument("--epochs", type=_in_range(float, "epochs"), default=10.0, help="passes over the train split")
    parser.add_argument("--max-steps", type=positive_int, default=None, help="optimiser steps (wins over --epochs)")
    parser.add_argument("--batch-size", type=_in_range(int, "batch_size"), default=64, help="per device")
    parser.add_argument("--lr", type=_in_range(float, "lr"), default=None,
                        help="absolute peak lr (default: base-lr * batch / 256)")
    parser.add_argument("--base-lr", type=_in_range(float, "base_lr"), default=None,
                        help="lr = base_lr * batch / 256 (default 5e-4; a model's own recipe may fix lr instead)")
    parser.add_argument("--layer-decay", type=_in_range(float, "layer_decay"), default=None,
                        help="layer-wise lr decay, 1 = off; encoders without one stack of blocks (I2P-MAE, SparK) "
                             "use 1 unless told otherwise (default: 0.75)")
    parser.add_argument("--weight-decay", type=_in_range(float, "weight_decay"), default=None,
                        help="AdamW weight decay (default 0.05, or the model's recipe)")
    parser.add_argument("--label-smoothing", type=_in_range(float, "label_smoothing"), default=None,
                        help="cross-entropy label smoothing (default 0.1; 0 for multi-label data and IAT)")
    parser.add_argument("--drop-path", type=_in_range(float, "drop_path"), default=None,
                        help="stochastic depth rate of the encoder (default 0.1)")
    parser.add_argument("--warmup-ratio", type=_in_range(float, "warmup_ratio"), default=None,
                        help="fraction of steps with linear warmup (default 0.05, or the model's recipe)")
    parser.add_argument("--train-split", default="train", help="the split to train on")
    parser.add_argument("--eval-split", default=None, help="default: test, else validation")
    parser.add_argument("--max-train-samples", type=_in_range(int, "max_train_samples"), default=None,
                        help="a seeded random subset, for quick runs")
    parser.add_argument("--max-eval-samples", type=_in_range(int, "max_eval_samples"), default=None,
                        help="a seeded random eval subset")
    parser.add_argument("--identity-adversarial-lambda", type=_in_range(float, "identity_adversarial_lambda"),
                        default=None, help="FMAE-IAT: strength of the gradient reversal in front of an identity head "
                                           "trained on --identity-column (0: plain fine-tuning; FMAE models only)")
    parser.add_argument("--identity-column", default="identity",
                        help="the train split's subject column for --identity-adversarial-lambda")
    parser.add_argument("--identity-loss", choices=IAT_CHOICES["identity_loss"], default=None,
                        help="FMAE-IAT identity loss (default: the model's, bce as the official code)")
    parser.add_argument("--identity-adversarial-schedule", choices=IAT_CHOICES["identity_adversarial_schedule"],
                        default=None, help="FMAE-IAT: constant lambda (the code's) or the DANN ramp")
    parser.add_argument("--identity-head-input", choices=IAT_CHOICES["identity_head_input"], default=None,
                        help="FMAE-IAT: the identity head reads the pooled feature (the code's) or every patch token")
    parser.add_argument("--seed", type=int, default=0, help="seeds the new head, the data order and subsets")
    parser.add_argument("--report-to", default="none", help="Trainer loggers, e.g. tensorboard")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --output-dir")


def run(args) -> int:
    from .pretrain import parse_overrides

    if args.config_overrides and args.model is None:
        raise ValueError("--config-overrides go with --model (a preset); a pretrained folder has its own config")
    metrics = finetune(
        args.pretrained_dir,
        args.dataset,
        args.output_dir,
        model=args.model,
        config_overrides=parse_overrides(args.config_overrides, args.model) if args.model else None,
        from_scratch=args.from_scratch,
        epochs=args.epochs,
        max_steps=-1 if args.max_steps is None else args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        base_lr=args.base_lr,
        layer_decay=args.layer_decay,
        weight_decay=args.weight_decay,
        label_smoothing=args.label_smoothing,
        drop_path=args.drop_path,
        warmup_ratio=args.warmup_ratio,
        seed=args.seed,
        train_split=args.train_split,
        eval_split=args.eval_split,
        max_train_samples=args.max_train_samples,
        max_eval_samples=args.max_eval_samples,
        identity_adversarial_lambda=args.identity_adversarial_lambda,
        identity_column=args.identity_column,
        identity_loss=args.identity_loss,
        identity_adversarial_schedule=args.identity_adversarial_schedule,
        identity_head_input=args.identity_head_input,
        overwrite=args.overwrite,
        report_to=args.report_to,
    )
    print(json.dumps({k: v for k, v in metrics.items() if k != "output_dir"}, indent=2))
    print(f"best model and processor saved to {metrics['output_dir']}")
    return 0
