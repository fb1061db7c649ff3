"""Data sets for pre-training, fine-tuning and probing, and the glue that turns examples into model inputs.

A dataset argument is one of:
- a bundled name: ``digits`` (scikit-learn's 8x8 hand-written digits, shipped with scikit-learn, no download),
  ``shapes`` (procedural point clouds of 3-D shapes, generated on the fly: ``hf_mae.training.shapes``) or
  ``sprites`` (procedural 32x32 dSprites-like images with five known factors: ``hf_mae.training.sprites``);
- a local folder: an ``imagefolder`` tree (``<split>/<class>/<image>``), the same tree of video, .wav or point-cloud
  files (.npy/.npz/.ply/.off/.xyz: a ``points`` column of paths; a flat folder of ``<digit>_<anything>.wav`` files,
  like FSDD, takes its labels from the file-name prefix), the ORL / AT&T faces folder (``s<subject>/<n>.pgm``,
  directly or in ``orl_faces/``: an ``identity`` column beside the label, see :func:`orl_faces_dataset`), a Planetoid folder (``ind.<name>.*`` files as PyG
  downloads them, directly or in ``raw/`` or ``<Name>/raw/``; ``.../ind.citeseer`` picks one of several) as a
  one-row data set holding the whole graph, or anything else ``datasets`` can read (graph data sets with
  ``edge_index`` and ``node_feat``/``x`` columns, like the Hub's ``graphs-datasets``, work as they are);
- a Hugging Face ``datasets`` id (``org/name``), optionally streamed (``streaming=True``).
Every loader returns a ``datasets`` object with an input column and, when present, a label column.
"""

from __future__ import annotations

import os
import re

import numpy as np
import torch

BUNDLED = ("digits", "shapes", "sprites")
IMAGE_COLUMNS = ("image", "img", "pixel_values", "picture")
VIDEO_COLUMNS = ("video", "video_path", "path", "file_name")  # paths to video files (or arrays of frames)
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".m4v")
AUDIO_COLUMNS = ("audio", "audio_path", "path", "file_name")  # paths to .wav files, arrays, or {"array", "sampling_rate"}
AUDIO_EXTENSIONS = (".wav",)  # read with the standard-library ``wave`` module
POINT_COLUMNS = ("points", "point_cloud", "pos", "path", "file_name")  # (N, 3+) arrays or paths to point files
POINT_EXTENSIONS = (".npy", ".npz", ".ply", ".off", ".xyz")  # read by the point-cloud processor
GRAPH_KEYS = ("node_features", "x", "node_feat", "edge_index", "num_nodes", "edge_attr", "y", "labels", "label",
              "train_mask", "val_mask", "test_mask")  # the columns a graph example may carry
LABEL_COLUMNS = ("label", "labels", "fine_label", "class", "target")
EMBEDDING_COLUMNS = ("inputs_embeds", "embeddings")  # sequences of segment embeddings (LV-MAE)
CAPTION_COLUMNS = ("caption", "text", "captions", "sentence")  # for processors with ``takes_captions`` (TGM)


def _digits(split: str):
    """scikit-learn's digits as PIL images (grey 8x8, 0..16 scaled to 0..255); a fixed 80/20 train/test split."""
    import datasets
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = (bunch.images * (255.0 / 16.0)).round().astype(np.uint8)
    order = np.random.RandomState(0).permutation(len(images))
    cut = int(0.8 * len(order))
    if split not in ("train", "test", "validation"):
        raise ValueError(f"split {split!r} does not exist for digits; choose train or test")
    chosen = order[:cut] if split == "train" else order[cut:]
    features = datasets.Features(
        {"image": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(10)])}
    )
    return datasets.Dataset.from_dict(
        {"image": [Image.fromarray(images[i]) for i in chosen], "label": [int(bunch.target[i]) for i in chosen]},
        features=features,
    )


def load_image_dataset(name_or_path: str, split: str = "train", streaming: bool = False):
    """Loads one split of an image data set (see the module docstring for what ``name_or_path`` may be)."""
    import datasets

    if name_or_path in BUNDLED:
        if name_or_path == "shapes":
            from .shapes import shapes_dataset

            dataset = shapes_dataset(split)
        elif name_or_path == "sprites":
            from .sprites import sprites_dataset

            dataset = sprites_dataset(split)
        else:
            dataset = _digits(split)
        return dataset.to_iterable_dataset() if streaming else dataset
    orl_root = orl_faces_root(name_or_path)
    if orl_root is not None:
        dataset = orl_faces_dataset(orl_root, split)
        return dataset.to_iterable_dataset() if streaming else dataset
    planetoid = _planetoid_name(name_or_path)
    if planetoid is not None:
        dataset = _planetoid_dataset(*planetoid)
        return dataset.to_iterable_dataset() if streaming else dataset
    if os.path.isdir(name_or_path) and _media_files(name_or_path, POINT_EXTENSIONS):
        return _media_folder(name_or_path, split, streaming, column="points", extensions=POINT_EXTENSIONS)
    if os.path.isdir(name_or_path) and _media_files(name_or_path, VIDEO_EXTENSIONS):
        return _media_folder(name_or_path, split, streaming)
    if os.path.isdir(name_or_path) and _media_files(name_or_path, AUDIO_EXTENSIONS):
        return _media_folder(name_or_path, split, streaming, column="audio", extensions=AUDIO_EXTENSIONS)
    if os.path.isdir(name_or_path):
        has_images = any(
            f.lower().endswith((".png", ".jpg", ".jpeg", ".bmp", ".webp"))
            for _, _, files in os.walk(name_or_path)
            for f in files[:50]
        )
        if has_images:
            splits = datasets.load_dataset("imagefolder", data_dir=name_or_path, streaming=streaming)
        else:  # parquet / json / csv / arrow files, or a saved dataset script
            splits = datasets.load_dataset(name_or_path, streaming=streaming)
    else:
        from .arguments import looks_local

        if looks_local(name_or_path) and not os.path.exists(name_or_path):  # not a question for the Hub
            raise ValueError(
                f"dataset {name_or_path!r} is not a folder (nothing exists at that path); expected a bundled data set "
                f"({', '.join(BUNDLED)}), a local folder, or a Hugging Face dataset id (org/name)"
            )
        if "/" not in name_or_path:
            raise ValueError(
                f"dataset {name_or_path!r} is neither a bundled data set ({', '.join(BUNDLED)}), a local folder, "
                "nor a Hugging Face dataset id (org/name)"
            )
        try:
            splits = datasets.load_dataset(name_or_path, streaming=streaming)
        except Exception as error:  # offline, unknown id, ...: say what was tried
            raise ValueError(f"could not load dataset {name_or_path!r} from the Hugging Face Hub: {error}") from error
    if split not in splits:
        raise ValueError(f"split {split!r} does not exist in {name_or_path!r}; available: {sorted(splits)}")
    return splits[split]


ORL_SUBJECT = re.compile(r"^s(\d+)$")
ORL_TRAIN_IMAGES = range(1, 9)  # hf-mae's split: images 1-8 of every subject train, 9-10 test


def orl_faces_root(path: str):
    """The folder of ORL subject folders (``s1``, ``s2``, ... each holding ``<n>.pgm``) at ``path`` or at
    ``path/orl_faces``; None when ``path`` is not such a folder."""
    for root in (path, os.path.join(path, "orl_faces")):
        if not os.path.isdir(root):
            continue
        subjects = [name for name in os.listdir(root) if ORL_SUBJECT.match(name) and os.path.isdir(os.path.join(root, name))]
        if subjects and all(
            any(f.lower().endswith(".pgm") for f in os.listdir(os.path.join(root, name))) for name in subjects
        ):
            return root
    return None


def orl_faces_dataset(root: str, split: str = "train"):
    """The ORL / AT&T "Database of Faces" (grey 92x112 PGM, 40 subjects x 10 images) as ``image`` (grey PIL;
    the processor makes it RGB), ``label`` and ``identity`` (both the subject, ``s1`` -> 0, in subject-number order).
    Split (hf-mae's choice): images 1-8 of every subject are ``train`` (320), 9-10 ``test`` (80), so every test
    subject is seen in training, as an identity probe needs."""
    import datasets
    from PIL import Image

    if split not in ("train", "test"):
        raise ValueError(f"split {split!r} does not exist for the ORL faces at {root!r}; choose train or test")
    subjects = sorted((name for name in os.listdir(root) if ORL_SUBJECT.match(name)), key=lambda n: int(n[1:]))
    images, identities = [], []
    for index, subject in enumerate(subjects):
        folder = os.path.join(root, subject)
        numbers = sorted(int(f[:-4]) for f in os.listdir(folder) if f.lower().endswith(".pgm") and f[:-4].isdigit())
        for number in numbers:
            if (number in ORL_TRAIN_IMAGES) == (split == "train"):
                with Image.open(os.path.join(folder, f"{number}.pgm")) as image:
                    images.append(image.convert("L"))
                identities.append(index)
    names = datasets.ClassLabel(names=subjects)
    features = datasets.Features({"image": datasets.Image(), "label": names, "identity": names})
    return datasets.Dataset.from_dict({"image": images, "label": identities, "identity": identities}, features=features)


def _planetoid_name(path: str):
    """(root, name) when ``path`` is a Planetoid folder (``ind.<name>.x`` in it, its ``raw/`` or ``<Name>/raw/``) or
    the prefix ``<folder>/ind.<name>`` of its files; None otherwise. Several data sets in one folder: ask for one."""
    from hf_mae.processors.graph_processing import find_planetoid

    folder, base = os.path.split(path.rstrip("/"))
    if base.startswith("ind.") and os.path.isfile(os.path.join(folder, base + ".x")):
        return folder, base[4:]
    if not os.path.isdir(path):
        return None
    found = find_planetoid(path)
    if len(found) > 1:
        name, where = next(iter(found.items()))
        raise ValueError(
            f"dataset folder {path!r} holds several Planetoid data sets {sorted(found)}; pass one as "
            f"{os.path.join(where, 'ind.' + name)!r}"
        )
    return (path, next(iter(found))) if found else None


def _planetoid_dataset(root: str, name: str):
    """The whole Planetoid graph as one row (node features, edges, labels, split masks): node-level tasks train on
    one graph, so every split is that row and the masks say which nodes belong to which split."""
    import datasets

    from hf_mae.processors.graph_processing import load_planetoid

    graph = load_planetoid(root, name)
    return datasets.Dataset.from_dict({key: [np.asarray(value).tolist()] for key, value in graph.items()})


def _media_files(folder: str, extensions: tuple[str, ...]) -> list[str]:
    return sorted(
        os.path.join(root, name)
        for root, _, files in os.walk(folder)
        for name in files
        if name.lower().endswith(extensions)
    )


def _media_folder(folder: str, split: str, streaming: bool = False, column: str = "video",
                  extensions: tuple[str, ...] = VIDEO_EXTENSIONS):
    """A folder of video (or audio) files as ``{column: path, "label": class}``: ``<folder>/<split>/<class>/<file>``
    when ``folder`` has split sub-folders (train, test, ...), else ``<folder>/<class>/<file>`` as the only split
    ("train"); files directly in the split folder get no label, except audio files that all start with a number and
    "_" (FSDD's ``{digit}_{speaker}_{index}.wav``): that number is their label."""
    import datasets

    splits = sorted(name for name in os.listdir(folder) if name in ("train", "test", "validation", "val"))
    if splits:
        if split not in splits:
            raise ValueError(f"split {split!r} does not exist in {folder!r}; available: {splits}")
        folder = os.path.join(folder, split)
    elif split != "train":
        raise ValueError(f"split {split!r} does not exist in {folder!r}: it has no split folders, only 'train'")
    paths = _media_files(folder, extensions)
    classes = sorted({os.path.relpath(os.path.dirname(path), folder) for path in paths} - {"."})
    columns = {column: paths}
    features = {column: datasets.Value("string")}
    prefixes = [os.path.basename(path).split("_", 1)[0] for path in paths]
    if classes and all(os.path.dirname(path) != folder for path in paths):
        columns["label"] = [classes.index(os.path.relpath(os.path.dirname(path), folder)) for path in paths]
        features["label"] = datasets.ClassLabel(names=classes)
    elif column == "audio" and paths and not classes and all(prefix.isdigit() for prefix in prefixes):
        columns["label"] = [int(prefix) for prefix in prefixes]
        features["label"] = datasets.ClassLabel(names=[str(i) for i in range(max(columns["label"]) + 1)])
    dataset = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
    return dataset.to_iterable_dataset() if streaming else dataset


def find_column(dataset, candidates, kind: str, required: bool = True):
    """The first column of ``dataset`` named like one of ``candidates``; a clear error names the columns found."""
    features = getattr(dataset, "features", None) or {}
    columns = list(getattr(dataset, "column_names", None) or features)
    for name in candidates:
        if name in columns:
            return name
    if kind == "image":
        import datasets

        for name, feature in features.items():
            if isinstance(feature, datasets.Image):
                return name
    if required:
        raise ValueError(f"no {kind} column found (tried {list(candidates)}); the data set has columns {columns}")
    return None


def num_classes(dataset, label_column: str) -> int:
    feature = (getattr(dataset, "features", None) or {}).get(label_column)
    if hasattr(feature, "num_classes"):
        return int(feature.num_classes)
    return int(max(dataset[label_column])) + 1


def with_model_inputs(dataset, processor, with_labels: bool = True, training: bool = False,
                      augmentation=None, seed: int = 0, identity_column: str | None = None):
    """Lazily turns examples into model inputs with ``processor``: ``{"pixel_values": (C, H, W), "labels": int}``
    from an image column; clips (T, C, H, W) from a video column (paths or frames) for a video processor;
    ``inputs_embeds`` from an embeddings column (LV-MAE); caption tokens too for a processor that ``takes_captions``;
    ``input_values`` (frames, mel bins) from an audio column (.wav paths, or ``{"array", "sampling_rate"}`` dicts as
    ``datasets.Audio`` decodes them) for an audio feature extractor (``input_values`` in its ``model_input_names``).

    ``training=True`` calls the processor with its ``training_call_kwargs`` on every access: fresh random views
    (``pixel_values`` and ``pixel_values_2``) from a two-view processor (LUT, CropMAE), random frame windows from
    a video processor.

    Those draws come from torch's global RNG; on a map-style data set they are made under ``fork_rng`` seeded by
    the batch's keys (:class:`SeededBatches`), so they depend neither on the DataLoader worker, nor on what it
    loaded before (a resumed run skips batches), and leave the global RNG (the masks) alone. A streamed data set of
    such a processor (no index to seed by) still draws from the loading process's RNG: not replayed exactly.

    ``augmentation`` (a recipe, ``training/augmentation.py``; images only, with ``training=True``): every image is
    augmented with a generator seeded by ``(seed, epoch, index)`` before the processor sees it. The result is then a
    torch data set keyed by ``(epoch, index)`` pairs (``EpochSampler(..., keyed=True)`` yields them), or, for a
    streamed data set, an iterable one whose ``set_epoch`` picks the epoch (:class:`SeededImages`,
    :class:`SeededImageStream`). ``None``: the examples as they are (evaluation: probes, fine-tuning eval).

    ``identity_column`` (images): that column's subject indices become ``identity_labels`` (FMAE-IAT's identity
    adversary)."""
    if "edge_index" in getattr(processor, "model_input_names", ()):
        return _with_graph_inputs(dataset, processor, with_labels)
    video = getattr(processor, "num_frames", None) is not None  # a video processor reads paths or frame arrays
    embeddings = "inputs_embeds" in getattr(processor, "model_input_names", ())  # embedding sequences, as stored
    audio = "input_values" in getattr(processor, "model_input_names", ())  # waveforms -> spectrograms
    points = "point_values" in getattr(processor, "model_input_names", ())  # point clouds (arrays or file paths)
    if embeddings:
        input_column = find_column(dataset, EMBEDDING_COLUMNS, "embeddings")
    elif audio:
        input_column = find_column(dataset, AUDIO_COLUMNS, "audio")
    elif points:
        input_column = find_column(dataset, POINT_COLUMNS, "points")
    else:
        input_column = find_column(dataset, VIDEO_COLUMNS, "video") if video else find_column(dataset, IMAGE_COLUMNS, "image")
    label_column = find_column(dataset, LABEL_COLUMNS, "label", required=with_labels) if with_labels else None
    call_kwargs = dict(getattr(processor, "training_call_kwargs", {})) if training else {}
    captions = find_column(dataset, CAPTION_COLUMNS, "caption") if getattr(processor, "takes_captions", False) else None

    def transform(batch):
        inputs = batch[input_column]
        if audio:
            clips = [_waveform(clip) for clip in inputs]
            rates = {rate for _, rate in clips}
            if len(rates) == 1:  # one call for the batch: training augmentations may mix its clips (Bird-MAE)
                waves = [wave for wave, _ in clips]
                values = processor(waves, sampling_rate=rates.pop(), return_tensors="pt", **call_kwargs)["input_values"]
            else:  # clips at different rates: featurise one by one (the extractor resamples each), then stack
                values = torch.stack([processor(*clip, return_tensors="pt", **call_kwargs)["input_values"][0] for clip in clips])
            out = {"input_values": values}
            if label_column is not None:
                out["labels"] = torch.as_tensor(batch[label_column])
            return out
        if points:  # one call for the batch; the processor reads paths and (in training) augments
            out = {"point_values": processor(list(inputs), return_tensors="pt", **call_kwargs)["point_values"]}
            if label_column is not None:
                out["labels"] = torch.as_tensor(batch[label_column])
            return out
        if not (video or embeddings):
            inputs = [image.convert("RGB") if hasattr(image, "convert") else image for image in inputs]
        text = {"text": batch[captions]} if captions is not None else {}
        out = dict(processor(inputs, return_tensors="pt", **text, **call_kwargs))
        if label_column is not None:
            out["labels"] = torch.as_tensor(batch[label_column])
        if identity_column is not None:
            out["identity_labels"] = torch.as_tensor(batch[identity_column], dtype=torch.long)
        return out

    if augmentation is not None:
        from .augmentation import build_augmentation, check_recipe

        if video or embeddings or audio or points:
            raise ValueError(f"augmentation={augmentation!r} is for image data sets; this one has a {input_column!r} column")
        if not training:
            raise ValueError("augmentation is a pre-training transform: pass training=True with it (evaluation stays as is)")
        recipe = check_recipe(augmentation, "augmentation")
        seeded = dict(transform=transform, input_column=input_column, augment=build_augmentation(recipe, processor),
                      seed=seed)
        if hasattr(dataset, "with_transform"):
            return SeededImages(dataset, **seeded)
        return SeededImageStream(dataset, **seeded)
    if hasattr(dataset, "with_transform"):  # map-style: processed on access
        if call_kwargs:  # the processor draws at random (frame windows, audio / point augmentation, views)
            return SeededBatches(dataset.with_transform(transform), seed)
        return dataset.with_transform(transform)
    return dataset.map(transform, batched=True, remove_columns=list(dataset.column_names or []))


class _Seeded:
    """What the seeded data sets share: augment the images of some rows, each with its own generator, and process
    them. ``augment`` None (a two-view processor, ``"views"``): the processor's own draws from the global RNG are made
    under ``fork_rng`` with the sample's seed, one image per call, so they too depend on the sample alone."""

    def __init__(self, dataset, transform, input_column, augment, seed):
        self.dataset, self.transform, self.input_column = dataset, transform, input_column
        self.augment, self.seed = augment, seed

    def _process(self, rows: dict, seeds: list[int]) -> list[dict]:
        if self.augment is None:
            examples = []
            for i, seed in enumerate(seeds):
                with torch.random.fork_rng(devices=[]):  # the global RNG (masks) is left as it was
                    torch.manual_seed(seed)
                    examples += _split(self.transform({key: values[i : i + 1] for key, values in rows.items()}))
            return examples
        rows = dict(rows)
        rows[self.input_column] = [
            self.augment(image, torch.Generator().manual_seed(seed)) for image, seed in zip(rows[self.input_column], seeds)
        ]
        return _split(self.transform(rows))


def _split(batch: dict) -> list[dict]:
    """A processed batch (columns of n) -> n examples."""
    size = len(next(iter(batch.values())))
    return [{key: values[i] for key, values in batch.items()} for i in range(size)]


class SeededImages(_Seeded, torch.utils.data.Dataset):
    """A map-style image data set whose key ``(epoch, index)`` (or a bare ``index``: epoch 0) gives example ``index``,
    augmented with the generator of :func:`~hf_mae.training.augmentation.sample_seed` ``(seed, epoch, index)``."""

    epoch_keys = True  # hf-mae pretrain's EpochSampler hands it (epoch, index) pairs

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key) -> dict:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys) -> list[dict]:  # the DataLoader fetches a whole batch in one call
        from .augmentation import sample_seed

        pairs = [key if isinstance(key, (tuple, list)) else (0, key) for key in keys]
        rows = self.dataset[[int(index) for _, index in pairs]]
        return self._process(rows, [sample_seed(self.seed, epoch, index) for epoch, index in pairs])


class SeededBatches(torch.utils.data.Dataset):
    """A processed map-style data set whose processor draws from torch's global RNG in training (video frame windows,
    audio and point-cloud augmentation, two views without a recipe). A batch fetched with keys ``(epoch, index)`` (or
    bare indices: epoch 0) is processed in one call, as before (Bird-MAE mixes the clips of a batch), under
    ``fork_rng`` seeded with ``sample_seed(seed, *keys)``: its draws depend on the batch alone, so a resumed run, a
    run with another ``--num-workers`` and the DataLoader's look-ahead (accelerate fetches the next batch before the
    step that precedes it) all see the same inputs, and the global RNG (the masks) is left as it was."""

    epoch_keys = True  # hf-mae pretrain's EpochSampler hands it (epoch, index) pairs

    def __init__(self, dataset, seed: int):
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key) -> dict:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys) -> list[dict]:
        from .augmentation import sample_seed

        pairs = [tuple(key) if isinstance(key, (tuple, list)) else (0, key) for key in keys]
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed(self.seed, *(part for pair in pairs for part in pair)))
            return _split(self.dataset[[int(index) for _, index in pairs]])


class SeededImageStream(_Seeded, torch.utils.data.IterableDataset):
    """A streamed image data set: the ``position``-th example a DataLoader worker reads in epoch ``epoch`` is augmented
    with the generator of ``sample_seed(seed, epoch, worker, position)``. A stream has no index, but its order is
    fixed by the seeded shuffle, so a resumed run (which re-reads the stream and skips the batches it saw) and an
    uninterrupted one augment every example alike, given the same ``--num-workers``."""

    epoch = 0

    def set_epoch(self, epoch: int) -> None:  # accelerate's loader.set_epoch calls it; the stream reshuffles too
        self.epoch = epoch
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    def __iter__(self):
        from .augmentation import sample_seed

        info = torch.utils.data.get_worker_info()
        worker = info.id if info is not None else 0
        for position, row in enumerate(self.dataset):  # datasets shards the stream between workers itself
            seed = sample_seed(self.seed, self.epoch, worker, position)
            yield from self._process({key: [value] for key, value in row.items()}, [seed])


def _with_graph_inputs(dataset, processor, with_labels: bool):
    """Graph examples -> the processor's prepared tensors (self loops, symmetric edges, normalised features), one
    graph per example; ``collate`` makes the disjoint union of a batch."""
    columns = [key for key in GRAPH_KEYS if key in (getattr(dataset, "column_names", None) or [])]
    if "edge_index" not in columns:
        raise ValueError(f"a graph data set needs an 'edge_index' column; the data set has columns {dataset.column_names}")

    def prepare(row):
        graph = processor.prepare({key: row[key] for key in columns})
        return {key: value for key, value in graph.items() if with_labels or key != "labels"}

    return PreparedGraphs(dataset, prepare)


class PreparedGraphs(torch.utils.data.Dataset):
    """Each graph prepared on its first access and then kept. Preparation is deterministic (the masking is the
    model's), and reading a large graph back from Arrow costs more than a training step on it: Cora's 2708 x 1433
    features took ~0.5 s per step to read, against ~0.2 s for graphmae-tiny's step."""

    def __init__(self, dataset, prepare):
        self.dataset, self.prepare, self.prepared = dataset, prepare, {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index) -> dict:
        index = int(index)
        if index not in self.prepared:
            self.prepared[index] = self.prepare(self.dataset[index])
        return self.prepared[index]


def _waveform(clip):
    """An audio cell -> (waveform, sampling rate or None): a .wav path (read with ``wave``), a ``{"array",
    "sampling_rate"}`` dict (``datasets.Audio``), or a bare array (assumed at the extractor's rate)."""
    from hf_mae.processors.feature_extraction_audiomae import read_wav

    if isinstance(clip, (str, os.PathLike)):
        return read_wav(clip)
    if isinstance(clip, dict):
        if clip.get("array") is not None:
            return np.asarray(clip["array"], dtype=np.float32), clip.get("sampling_rate")
        if clip.get("path"):
            return read_wav(clip["path"])
        raise ValueError(f"audio cell {sorted(clip)} has neither an 'array' nor a 'path'")
    if hasattr(clip, "get_all_samples"):  # a torchcodec AudioDecoder, as datasets.Audio yields when torchcodec is installed
        samples = clip.get_all_samples()
        data = samples.data.numpy()  # (channels, samples): the extractor's channel_reduction decides for several
        return (data[0] if data.shape[0] == 1 else data), int(samples.sample_rate)
    return np.asarray(clip, dtype=np.float32), None


def collate(examples):
    """Stacks every tensor field (``pixel_values``, a second view ``pixel_values_2``, ...); labels become a long tensor.
    Graphs (examples with an ``edge_index``) become one disjoint union with a ``batch`` vector instead."""
    if "edge_index" in examples[0]:
        from hf_mae.processors.graph_processing import batch_graphs

        return batch_graphs(examples)
    batch = {key: torch.stack([torch.as_tensor(e[key]) for e in examples]) for key in examples[0] if key != "labels"}
    if "labels" in examples[0]:
        if torch.as_tensor(examples[0]["labels"]).dim() > 0:  # multi-hot rows (multi-label, e.g. action units)
            batch["labels"] = torch.stack([torch.as_tensor(e["labels"]) for e in examples]).float()
        else:
            batch["labels"] = torch.as_tensor([int(e["labels"]) for e in examples])
    return batch
