"""Image-caption data for the image-text methods (M3AE): one row per (image, caption) pair.

``load_image_text_dataset(name_or_path, split="train")`` returns a ``datasets.Dataset`` with the columns
``"image"`` (a file path or a PIL image), ``"text"`` (one caption) and ``"group"`` (a string naming the image the
caption belongs to, or its class: the image-text matching negatives are drawn from other groups). Sources:

- a folder holding ``captions.jsonl`` (coco-mini's layout: ``{"image": "train2017/x.jpg", "captions": [...],
  "split": "train"}``; image paths relative to the folder): every caption of every image of ``split`` (rows
  without a ``"split"`` key belong to every split); ``split="all"`` takes every row;
- a ``.jsonl`` file of such rows (or rows with one ``"caption"`` / ``"text"`` string), paths relative to the file;
- an image-folder tree without captions (``<split>/<class>/<image>``, e.g. CIFAR-10): class-name captions
  ``CAPTION_TEMPLATE.format(label=<class>)`` ("a photo of a cat.", underscores as spaces), the class as the group;
- anything else with a ``/``: a Hugging Face ``datasets`` id with an image column and a caption column (a string
  or a list of strings).

Errors are ValueErrors naming the file and line, the column or the split.
"""

from __future__ import annotations

import json
import os

import torch

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CAPTION_KEYS = ("captions", "caption", "text", "sentences", "sentence")
IMAGE_KEYS = ("image", "file_name", "filename", "image_path", "path", "img")
# hf-mae's class-name captions (CLIP's prompt style)
CAPTION_TEMPLATE = "a photo of a {label}."


def _rows_from_jsonl(path: str, split: str) -> list[dict]:
    """Pairs of one jsonl file: each caption of each line whose split matches."""
    root = os.path.dirname(os.path.abspath(path))
    rows = []
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} line {number} is not JSON: {error}") from error
            if split != "all" and record.get("split", split) != split:
                continue
            image_key = next((k for k in IMAGE_KEYS if k in record), None)
            caption_key = next((k for k in CAPTION_KEYS if k in record), None)
            if image_key is None or caption_key is None:
                raise ValueError(f"{path} line {number} needs an image key (one of {IMAGE_KEYS}) and a caption key "
                                 f"(one of {CAPTION_KEYS}); it has {sorted(record)}")
            captions = record[caption_key]
            captions = [captions] if isinstance(captions, str) else list(captions)
            image = os.path.join(root, record[image_key])
            group = str(record.get("image_id", record[image_key]))
            rows.extend({"image": image, "text": caption, "group": group} for caption in captions
                        if isinstance(caption, str) and caption.strip())
    return rows


def _rows_from_image_folder(folder: str, split: str) -> list[dict]:
    """Class-name captions of an image-folder tree (``<split>/<class>/<image>``, or ``<class>/<image>``)."""
    base = os.path.join(folder, split) if os.path.isdir(os.path.join(folder, split)) else folder
    classes = sorted(entry for entry in os.listdir(base) if os.path.isdir(os.path.join(base, entry)))
    if not classes:
        raise ValueError(f"{base} holds no class folders (<class>/<image>) and no captions.jsonl")
    rows = []
    for label in classes:
        names = sorted(f for f in os.listdir(os.path.join(base, label)) if f.lower().endswith(IMAGE_EXTENSIONS))
        caption = CAPTION_TEMPLATE.format(label=label.replace("_", " "))
        rows.extend({"image": os.path.join(base, label, name), "text": caption, "group": label} for name in names)
    return rows


def _rows_from_hub(name: str, split: str):
    import datasets

    try:
        dataset = datasets.load_dataset(name, split=split)
    except Exception as error:  # offline, unknown id, unknown split: say what was tried
        raise ValueError(f"could not load dataset {name!r} split {split!r}: {error}") from error
    image_key = next((k for k in IMAGE_KEYS if k in dataset.column_names), None)
    caption_key = next((k for k in CAPTION_KEYS if k in dataset.column_names), None)
    if image_key is None or caption_key is None:
        raise ValueError(f"dataset {name!r} needs an image column (one of {IMAGE_KEYS}) and a caption column (one of "
                         f"{CAPTION_KEYS}); it has {dataset.column_names}")
    rows = []
    for index, record in enumerate(dataset):
        captions = record[caption_key]
        captions = [captions] if isinstance(captions, str) else list(captions)
        rows.extend({"image": record[image_key], "text": c, "group": str(index)} for c in captions if c and c.strip())
    return rows


def load_image_text_dataset(name_or_path: str, split: str = "train"):
    """A ``datasets.Dataset`` of (image, caption, group) rows (see the module docstring)."""
    import datasets

    path = os.fspath(name_or_path)
    if os.path.isdir(path):
        captions = os.path.join(path, "captions.jsonl")
        rows = _rows_from_jsonl(captions, split) if os.path.isfile(captions) else _rows_from_image_folder(path, split)
    elif os.path.isfile(path):
        if not path.endswith(".jsonl"):
            raise ValueError(f"dataset file {path!r} must be a .jsonl of image-caption rows")
        rows = _rows_from_jsonl(path, split)
    elif "/" in path and not path.startswith((".", "/", "~")):
        rows = _rows_from_hub(path, split)
    else:
        raise ValueError(f"dataset {path!r} is neither a folder (captions.jsonl or <split>/<class>/<image>), a .jsonl "
                         "file, nor a Hugging Face dataset id (org/name)")
    if not rows:
        raise ValueError(f"dataset {path!r} has no image-caption pairs in split {split!r}")
    if isinstance(rows[0]["image"], str):
        return datasets.Dataset.from_list(rows)
    return datasets.Dataset.from_dict({key: [row[key] for row in rows] for key in ("image", "text", "group")},
                                      features=datasets.Features({"image": datasets.Image(),
                                                                  "text": datasets.Value("string"),
                                                                  "group": datasets.Value("string")}))


def open_image(image):
    """A row's image as an RGB PIL image (a path is opened)."""
    from PIL import Image

    if isinstance(image, (str, os.PathLike)):
        with Image.open(image) as opened:
            return opened.convert("RGB")
    return image.convert("RGB") if hasattr(image, "convert") else image


def image_text_row(row) -> tuple:
    """A row of ``load_image_text_dataset`` as the collator takes it (after its key): (image, caption, group)."""
    return open_image(row["image"]), row["text"], row["group"]


class ImageTextCollator:
    """Rows -> the processor's pre-training inputs: ``processor(images, text=captions, for_pretraining=True,
    generator=g, negative_groups=groups)``, ``g`` seeded by ``sample_seed(seed, *keys)`` (the batch's draws depend
    on the batch alone: a resumed run draws the same)."""

    def __init__(self, processor, seed: int):
        self.processor, self.seed = processor, seed

    def __call__(self, rows):
        from .augmentation import sample_seed

        keys, images, texts, groups = zip(*rows)
        generator = torch.Generator().manual_seed(sample_seed(self.seed, *(p for key in keys for p in key)))
        return dict(self.processor(list(images), text=list(texts), return_tensors="pt", for_pretraining=True,
                                   generator=generator, negative_groups=list(groups)))


__all__ = ["load_image_text_dataset", "open_image", "image_text_row", "ImageTextCollator", "CAPTION_TEMPLATE"]
