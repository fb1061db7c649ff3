"""Text data sets for the text methods (RetroMAE, DupMAE, Starbucks, MEAP): one loader, one ``"text"`` column.

``load_text_dataset(name_or_path, split="train", streaming=False, text_column=None)`` accepts
- a ``.txt`` file: one example per non-empty line (blank lines are skipped);
- a ``.jsonl`` / ``.json`` file: one JSON object per line, the text taken from ``text_column`` or the first of
  ``TEXT_COLUMNS`` present; a BEIR corpus row (``{"_id", "title", "text"}``) becomes ``title + " " + text`` (the
  title left out when empty), as BEIR's own dense retrievers join them;
- a folder: every ``.txt`` / ``.jsonl`` / ``.json`` file in it (sorted, recursively), or a BEIR folder
  (``corpus.jsonl`` beside ``queries.jsonl``: the corpus only);
- a Hugging Face ``datasets`` id (``org/name``), read with ``datasets.load_dataset`` (``streaming=True``: datasets'
  own streaming, nothing downloaded up front).
It returns a ``datasets.Dataset`` (or ``IterableDataset`` when streaming) whose only column is ``"text"``.
Empty texts are dropped from files (a blank line is no example); a data set whose texts are all empty is an error.
"""

from __future__ import annotations

import json
import os

TEXT_COLUMNS = ("text", "sentence", "content", "passage", "document", "contents", "body")
TEXT_EXTENSIONS = (".txt", ".jsonl", ".json")


def _row_text(row: dict, column: str | None, where: str) -> str:
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object per line, got {type(row).__name__}")
    if column is None:
        column = next((name for name in TEXT_COLUMNS if name in row), None)
        if column is None:
            raise ValueError(f"{where}: no text column found (tried {list(TEXT_COLUMNS)}); the row has keys "
                             f"{sorted(row)}; pass text_column=")
    if column not in row:
        raise ValueError(f"{where}: text_column {column!r} is not in the row (keys {sorted(row)})")
    text = row[column]
    if not isinstance(text, str):
        raise ValueError(f"{where}: column {column!r} must hold strings, got {type(text).__name__}")
    title = row.get("title")
    if column == "text" and isinstance(title, str) and title.strip():  # a BEIR corpus row
        text = f"{title.strip()} {text}"
    return text


def _file_texts(path: str, column: str | None):
    """Yields the texts of one .txt / .jsonl / .json file (blank ones skipped)."""
    if path.endswith(".txt"):
        if column is not None:
            raise ValueError(f"text_column={column!r} applies to JSON rows; {path!r} is a plain-text file")
        with open(path, encoding="utf-8") as stream:
            for line in stream:
                if line.strip():
                    yield line.rstrip("\n")
        return
    with open(path, encoding="utf-8") as stream:
        first = stream.read(1)
        stream.seek(0)
        if first == "[":  # a .json file holding one list of rows
            rows = json.load(stream)
            numbered = enumerate(rows, 1)
        else:
            numbered = ((number, line) for number, line in enumerate(stream, 1) if line.strip())
        for number, row in numbered:
            where = f"{path} line {number}"
            if isinstance(row, str):
                try:
                    row = json.loads(row)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{where} is not valid JSON ({error})") from error
            text = _row_text(row, column, where)
            if text.strip():
                yield text


def text_files(path: str) -> list[str]:
    """The text files a path stands for: the file itself, a BEIR folder's corpus.jsonl, or every text file under a
    folder (sorted)."""
    if os.path.isfile(path):
        if not path.endswith(TEXT_EXTENSIONS):
            raise ValueError(f"dataset file {path!r} must end with one of {TEXT_EXTENSIONS}")
        return [path]
    corpus = os.path.join(path, "corpus.jsonl")
    if os.path.isfile(corpus) and os.path.isfile(os.path.join(path, "queries.jsonl")):
        return [corpus]  # a BEIR folder: pretrain on the passages, never on the test queries
    found = sorted(
        os.path.join(root, name) for root, _, names in os.walk(path) for name in names if name.endswith(TEXT_EXTENSIONS)
    )
    if not found:
        raise ValueError(f"dataset folder {path!r} holds no {', '.join(TEXT_EXTENSIONS)} files")
    return found


def load_text_dataset(name_or_path: str, split: str = "train", streaming: bool = False, text_column: str | None = None):
    """One split of a text data set as a ``datasets`` object with a single ``"text"`` column (see the module
    docstring for what ``name_or_path`` may be). Local files have only a ``"train"`` split."""
    import datasets

    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"dataset must be a path or a datasets id (str), got {type(name_or_path).__name__}")
    name_or_path = os.fspath(name_or_path)
    if text_column is not None and not (isinstance(text_column, str) and text_column):
        raise ValueError(f"text_column must be a column name (a non-empty str) or None, got {text_column!r}")
    if os.path.exists(name_or_path):
        files = text_files(name_or_path)
        if split != "train":
            raise ValueError(f"split {split!r} does not exist for the local text data {name_or_path!r}: it has only 'train'")

        def generate(paths):
            for path in paths:
                for text in _file_texts(path, text_column):
                    yield {"text": text}

        features = datasets.Features({"text": datasets.Value("string")})
        if streaming:
            return datasets.IterableDataset.from_generator(generate, gen_kwargs={"paths": files}, features=features)
        texts = [row["text"] for row in generate(files)]
        if not texts:
            raise ValueError(f"dataset {name_or_path!r} holds no non-empty text")
        return datasets.Dataset.from_dict({"text": texts}, features=features)
    from .arguments import looks_local

    if looks_local(name_or_path) or "/" not in name_or_path:
        raise ValueError(
            f"dataset {name_or_path!r} is neither a text file ({', '.join(TEXT_EXTENSIONS)}) or folder on this "
            "machine (nothing exists at that path) nor a Hugging Face dataset id (org/name)"
        )
    try:
        splits = datasets.load_dataset(name_or_path, streaming=streaming)
    except Exception as error:  # offline, unknown id, ...: say what was tried
        raise ValueError(f"could not load dataset {name_or_path!r} with datasets.load_dataset: {error}") from error
    if split not in splits:
        raise ValueError(f"split {split!r} does not exist in {name_or_path!r}; available: {sorted(splits)}")
    dataset = splits[split]
    columns = list(dataset.column_names or (dataset.features or {}))
    column = text_column or next((name for name in TEXT_COLUMNS if name in columns), None)
    if column is None or column not in columns:
        raise ValueError(f"dataset {name_or_path!r} has no text column {column or list(TEXT_COLUMNS)}; its columns "
                         f"are {columns}; pass text_column=")
    if column != "text":
        dataset = dataset.rename_column(column, "text")
    return dataset.select_columns(["text"])
