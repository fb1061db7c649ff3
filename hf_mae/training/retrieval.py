"""Dense-retrieval evaluation on BEIR-layout data, pseudo-query training pairs and a short contrastive fine-tune.

- :func:`load_beir` reads a BEIR folder (``corpus.jsonl``, ``queries.jsonl``, ``qrels/<split>.tsv`` with or without
  its header line) and keeps the judged queries.
- :func:`evaluate_retrieval` embeds corpus and queries (batched, with a progress bar), scores every query against
  every passage by cosine or dot product, takes the top 100 by exact search in torch and reports nDCG@10, RR@10
  (MRR@10) and R@100 computed by ``ir_measures`` (trec_eval's definitions: linear gains = the qrels grades, every
  grade >= 1 relevant). For Starbucks-style models ``layer_dims=[(layer, dim), ...]`` scores each pair: the pooled
  ``hidden_states[layer]`` cut to its first ``dim`` dimensions.
- :func:`pseudo_query_pairs` makes (query, passage) pairs from a corpus alone (inverse-cloze style), and
  :func:`contrastive_finetune` trains on them with sentence-transformers' own trainer and in-batch negatives
  (``MultipleNegativesRankingLoss``): the recipe a user of sentence-transformers would run, and its output is a
  folder both ``SentenceTransformer(dir)`` and ``AutoModel.from_pretrained(dir)`` load.

The command ``hf-mae evaluate-retrieval RUN --dataset FOLDER`` runs :func:`evaluate_retrieval`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path

import torch

SCORES = ("cos", "dot")
POOLINGS = ("mean", "cls")
# the measures reported, by ir_measures' names (RR@10 is MRR@10: the mean over queries is taken by calc_aggregate)
MEASURES = ("nDCG@10", "RR@10", "R@100")
TOP_K = 100  # passages kept per query: enough for R@100 (and nDCG@10 / RR@10)


# ---------------------------------------------------------------------------------------------- data


def _read_jsonl(path: Path, argument: str) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{argument}: line {number} of {path} is not JSON ({error.msg})") from None
            if not isinstance(row, dict) or "_id" not in row:
                raise ValueError(f"{argument}: line {number} of {path} has no \"_id\" field (BEIR rows are "
                                 "{\"_id\": ..., \"text\": ...})")
            rows.append(row)
    return rows


def load_beir(folder, split: str = "test") -> tuple[dict, dict, dict]:
    """A BEIR-layout folder -> ``(corpus, queries, qrels)``: ``{doc_id: text}`` (title and text joined by a space,
    BEIR's convention), ``{query_id: text}`` and ``{query_id: {doc_id: grade}}``. ``qrels/<split>.tsv`` has
    ``query-id \\t corpus-id \\t score`` rows, with or without a header line. Only judged queries (those with
    qrels) are kept; qrels of queries missing from ``queries.jsonl`` are dropped."""
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset {str(folder)!r} is not a folder (a BEIR folder holds corpus.jsonl, "
                                "queries.jsonl and qrels/<split>.tsv)")
    paths = {"corpus": root / "corpus.jsonl", "queries": root / "queries.jsonl",
             "qrels": root / "qrels" / f"{split}.tsv"}
    for what, path in paths.items():
        if not path.is_file():
            hint = ""
            if what == "qrels" and (root / "qrels").is_dir():
                splits = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
                hint = f"; splits there: {', '.join(splits) or 'none'}"
            raise FileNotFoundError(f"dataset {str(folder)!r} has no {path.relative_to(root)} (a BEIR folder holds "
                                    f"corpus.jsonl, queries.jsonl and qrels/<split>.tsv{hint})")
    corpus = {}
    for row in _read_jsonl(paths["corpus"], "dataset"):
        corpus[str(row["_id"])] = f"{row.get('title') or ''} {row.get('text') or ''}".strip()
    all_queries = {str(row["_id"]): str(row.get("text") or "") for row in _read_jsonl(paths["queries"], "dataset")}
    qrels: dict[str, dict[str, int]] = {}
    with open(paths["qrels"], encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            parts = line.rstrip("\n").split("\t")
            if not line.strip():
                continue
            if len(parts) < 3:
                raise ValueError(f"dataset: line {number} of {paths['qrels']} is not query-id\\tcorpus-id\\tscore")
            try:
                grade = int(parts[-1])
            except ValueError:
                if number == 1:  # the optional header line (query-id, corpus-id, score)
                    continue
                raise ValueError(f"dataset: line {number} of {paths['qrels']} has a score {parts[-1]!r} that is no "
                                 "integer") from None
            qrels.setdefault(parts[0], {})[parts[1]] = grade
    qrels = {qid: docs for qid, docs in qrels.items() if qid in all_queries}
    queries = {qid: all_queries[qid] for qid in all_queries if qid in qrels}
    return corpus, queries, qrels


def _dataset(dataset) -> tuple[dict, dict, dict]:
    if isinstance(dataset, (str, os.PathLike)):
        return load_beir(dataset)
    if not (isinstance(dataset, (tuple, list)) and len(dataset) == 3 and all(isinstance(d, dict) for d in dataset)):
        raise TypeError("dataset must be a BEIR folder or a (corpus, queries, qrels) triple of dicts as load_beir "
                        f"returns, got {type(dataset).__name__}")
    corpus, queries, qrels = dataset
    if not corpus:
        raise ValueError("dataset: the corpus is empty (no passages to search)")
    if not queries:
        raise ValueError("dataset: there are no queries")
    judged = [qid for qid in queries if qid in qrels]
    if not judged:
        raise ValueError("dataset: no query has qrels (judgements); nothing can be scored")
    for name, texts in (("corpus", corpus), ("queries", queries)):
        empty = [key for key, text in texts.items() if not isinstance(text, str) or not text.strip()]
        if empty:
            raise ValueError(f"dataset: {len(empty)} {name} text(s) are empty or not strings (e.g. id {empty[0]!r}); "
                             "every passage and query must be a non-empty string")
    return ({str(k): v for k, v in corpus.items()}, {str(q): queries[q] for q in judged},
            {str(q): {str(d): int(g) for d, g in qrels[q].items()} for q in judged})


# ---------------------------------------------------------------------------------------------- encoders


def _device(device):
    return torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _st_modules():
    """sentence-transformers' modules (Transformer, Pooling, Normalize): their 6.x home, else the 5.x one."""
    try:
        from sentence_transformers.sentence_transformer import modules
    except ImportError:
        from sentence_transformers import models as modules
    return modules


def _is_sentence_transformer(model) -> bool:
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:  # the text extra is not installed: only folders without modules.json and callables
        return False
    return isinstance(model, SentenceTransformer)


def _sentence_transformer_parts(model) -> tuple:
    """(transformers model, tokenizer, pooling, normalize, max_seq_length) of a SentenceTransformer built from a
    Transformer module followed by a Pooling module (the layout of every BERT-family embedding model)."""
    models = _st_modules()
    transformer = next((m for m in model if isinstance(m, models.Transformer)), None)
    pooling = next((m for m in model if isinstance(m, models.Pooling)), None)
    if transformer is None or pooling is None:
        raise ValueError("model: this SentenceTransformer has no Transformer + Pooling modules, so its layers cannot "
                         "be pooled here; pass a callable encode(list[str]) -> Tensor instead")
    mode = pooling.pooling_mode
    mode = mode[0] if isinstance(mode, (list, tuple)) and len(mode) == 1 else mode
    if mode not in POOLINGS:
        raise ValueError(f"model: its pooling {mode!r} is not supported for per-layer scoring (allowed: {POOLINGS})")
    normalize = any(isinstance(m, models.Normalize) for m in model)
    return transformer.auto_model, transformer.tokenizer, mode, normalize, transformer.max_seq_length


def _model_limit(auto_model, tokenizer) -> int:
    limit = getattr(tokenizer, "model_max_length", None)
    positions = getattr(auto_model.config, "max_position_embeddings", None)
    candidates = [n for n in (limit, positions) if isinstance(n, int) and 0 < n < 100_000]
    return min(candidates) if candidates else 512


class _Encoder:
    """``encode(texts) -> {layer: (n, hidden) float32 tensor}`` for the layers asked (``None``: the model's own
    output); ``layers`` other than None need the transformers model (a folder or a SentenceTransformer)."""

    def __init__(self, model, *, pooling, max_length, batch_size, progress, device, need_layers):
        self.batch_size, self.progress = batch_size, progress
        self.device = _device(device)
        self.sentence_transformer = None  # used for encode when its own pooling is kept and no layer is asked
        self.callable = None
        self.normalize = False
        auto_model = tokenizer = None
        if isinstance(model, (str, os.PathLike)):
            folder = Path(model)
            if not folder.is_dir():
                raise FileNotFoundError(f"model {str(model)!r} is not a folder (a SentenceTransformer folder or one "
                                        "that transformers' AutoModel loads)")
            if (folder / "modules.json").is_file():
                from sentence_transformers import SentenceTransformer

                model = SentenceTransformer(str(folder), device=str(self.device),
                                            model_kwargs={"dtype": torch.float32})
            else:
                if not (folder / "config.json").is_file():
                    raise FileNotFoundError(f"model {str(model)!r} has neither modules.json (SentenceTransformer) nor "
                                            "config.json (transformers)")
                from transformers import AutoModel, AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(str(folder))
                auto_model = AutoModel.from_pretrained(str(folder), dtype=torch.float32)
                self.pooling = pooling or "mean"
                self.limit = _model_limit(auto_model, tokenizer)
        if _is_sentence_transformer(model):
            if pooling is None and not need_layers:  # its own encode: any module layout
                self.sentence_transformer, self.tokenizer = model, model.tokenizer
                self.limit = model.max_seq_length or 512
            else:
                auto_model, tokenizer, own_pooling, self.normalize, st_length = _sentence_transformer_parts(model)
                self.limit = min(st_length or 10**9, _model_limit(auto_model, tokenizer))
                self.pooling = pooling or own_pooling
        elif auto_model is None:
            if not callable(model):
                raise TypeError("model must be a folder, a SentenceTransformer or a callable encode(list[str]) -> "
                                f"Tensor, got {type(model).__name__}")
            if need_layers:
                raise ValueError("layer_dims needs the model's hidden states: pass a folder or a SentenceTransformer, "
                                 "not a callable")
            if pooling is not None:
                raise ValueError("pooling is for folders and SentenceTransformers; a callable pools by itself")
            self.callable, self.limit = model, None
        if max_length is not None:
            if auto_model is not None and max_length > _model_limit(auto_model, tokenizer):
                raise ValueError(f"max_length={max_length} is beyond the model's limit of "
                                 f"{_model_limit(auto_model, tokenizer)} positions")
            self.limit = max_length
        if auto_model is not None:
            self.auto_model = auto_model.to(self.device, torch.float32).eval()
            self.tokenizer = tokenizer
            self.num_layers = int(getattr(auto_model.config, "num_hidden_layers", 0))
            self.hidden = int(getattr(auto_model.config, "hidden_size", 0))

    def count_truncated(self, texts: list[str]) -> int:
        if self.callable is not None:
            return 0
        lengths = self.tokenizer(texts, add_special_tokens=True, truncation=False, verbose=False)["input_ids"]
        return sum(len(ids) > self.limit for ids in lengths)

    def encode(self, texts: list[str], layers, desc: str) -> dict:
        from tqdm.auto import tqdm

        if self.sentence_transformer is not None:
            st = self.sentence_transformer
            kept = st.max_seq_length
            st.max_seq_length = self.limit
            try:
                out = st.encode(texts, batch_size=self.batch_size, convert_to_tensor=True,
                                show_progress_bar=self.progress, device=str(self.device))
            finally:
                st.max_seq_length = kept
            return {None: out.float().cpu()}
        if self.callable is not None:
            chunks = []
            for start in tqdm(range(0, len(texts), self.batch_size), desc=desc, disable=not self.progress):
                batch = texts[start:start + self.batch_size]
                out = torch.as_tensor(self.callable(batch))
                if out.ndim != 2 or out.shape[0] != len(batch):
                    raise ValueError(f"model: the callable must return a (batch, dim) tensor, got shape "
                                     f"{tuple(out.shape)} for {len(batch)} texts")
                chunks.append(out.detach().float().cpu())
            return {None: torch.cat(chunks)}
        # the transformers model: batches of similar lengths (less padding), results put back in order
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        wanted = sorted({layer for layer in layers if layer is not None})
        pooled = {layer: torch.empty(len(texts), self.hidden) for layer in layers}
        with torch.inference_mode():
            for start in tqdm(range(0, len(texts), self.batch_size), desc=desc, disable=not self.progress):
                rows = order[start:start + self.batch_size]
                inputs = self.tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                                        max_length=self.limit, return_tensors="pt").to(self.device)
                out = self.auto_model(**inputs, output_hidden_states=bool(wanted), return_dict=True)
                mask = inputs["attention_mask"].unsqueeze(-1).float()
                for layer in layers:
                    states = out.last_hidden_state if layer is None else out.hidden_states[layer]
                    if self.pooling == "cls":
                        vector = states[:, 0]
                    else:
                        vector = (states * mask).sum(1) / mask.sum(1).clamp(min=1)
                    pooled[layer][rows] = vector.float().cpu()
        if self.normalize:  # the SentenceTransformer's Normalize module (matters for dot-product scores)
            pooled = {layer: torch.nn.functional.normalize(v, dim=-1) for layer, v in pooled.items()}
        return pooled


def _check_layer_dims(layer_dims) -> list[tuple[int, int]]:
    if isinstance(layer_dims, (str, bytes)) or not hasattr(layer_dims, "__iter__"):
        raise TypeError(f"layer_dims must be a list of (layer, dim) pairs, got {layer_dims!r}")
    pairs = []
    for pair in layer_dims:
        if (not isinstance(pair, (tuple, list)) or len(pair) != 2
                or not all(isinstance(n, int) and not isinstance(n, bool) for n in pair)):
            raise TypeError(f"layer_dims must be a list of (layer, dim) pairs of ints, got the item {pair!r}")
        pairs.append((int(pair[0]), int(pair[1])))
    if not pairs:
        raise ValueError("layer_dims is empty; give at least one (layer, dim) pair, or None for the model's output")
    return pairs


# ---------------------------------------------------------------------------------------------- evaluation


def rank(query_embeddings, corpus_embeddings, query_ids, doc_ids, *, score="cos", k=TOP_K, chunk=256) -> dict:
    """The run ``{query_id: {doc_id: score}}`` of the top ``k`` passages per query by exact search (all scores
    computed; cosine = dot product of L2-normalised vectors)."""
    queries, docs = query_embeddings.float(), corpus_embeddings.float()
    if score == "cos":
        queries = torch.nn.functional.normalize(queries, dim=-1)
        docs = torch.nn.functional.normalize(docs, dim=-1)
    k = min(k, docs.shape[0])
    run = {}
    for start in range(0, queries.shape[0], chunk):
        values, indices = (queries[start:start + chunk] @ docs.T).topk(k, dim=1)
        for row, (vals, idx) in enumerate(zip(values.tolist(), indices.tolist())):
            run[query_ids[start + row]] = {doc_ids[j]: float(v) for v, j in zip(vals, idx)}
    return run


NDCG_GAINS = ("linear", "exponential")


def measure(qrels: dict, run: dict, ndcg_gains: str = "linear") -> dict:
    """nDCG@10, RR@10, R@100 of ``run`` against ``qrels``, means over the judged queries, by ir_measures.
    ``ndcg_gains``: "linear" (the grade itself: trec_eval's and BEIR's nDCG) or "exponential" (2^grade - 1, the
    Burges et al. gain many leaderboards use; the data README's 0.704 for all-MiniLM-L6-v2 on msmarco-5k is this
    one, trec_eval's linear nDCG@10 being 0.798 there)."""
    import ir_measures

    if ndcg_gains not in NDCG_GAINS:
        raise ValueError(f"ndcg_gains must be one of {NDCG_GAINS}, got {ndcg_gains!r}")
    measures = [ir_measures.parse_measure(name) for name in MEASURES]
    if ndcg_gains == "exponential":
        grades = {grade for docs in qrels.values() for grade in docs.values()}
        measures[0] = ir_measures.nDCG(gains={g: 2 ** g - 1 if g > 0 else 0 for g in grades})@10
    aggregate = ir_measures.calc_aggregate(measures, qrels, run)
    return {name: float(aggregate[m]) for name, m in zip(MEASURES, measures)}


def evaluate_retrieval(model, dataset, *, score: str = "cos", batch_size: int = 64, max_length: int | None = None,
                       layer_dims=None, pooling: str | None = None, progress: bool = True, device=None,
                       ndcg_gains: str = "linear") -> dict:
    """Dense retrieval of ``dataset``'s judged queries over its corpus with ``model``.

    ``model``: a SentenceTransformer folder (its pooling, normalisation and max_seq_length are read), a folder
    transformers' ``AutoModel`` loads (mean pooling unless ``pooling="cls"``), a ``SentenceTransformer``, or a
    callable ``encode(list[str]) -> (n, dim) Tensor``. ``dataset``: a BEIR folder (:func:`load_beir`, split
    "test") or a ``(corpus, queries, qrels)`` triple. ``score``: "cos" or "dot". Texts longer than ``max_length``
    (default: the model's limit, 256 for all-MiniLM-L6-v2) are truncated, with one warning saying how many.
    Returns ``{"nDCG@10", "RR@10", "R@100"}``, or, with ``layer_dims=[(layer, dim), ...]``, those per pair: the
    pooled ``hidden_states[layer]`` (0 = the embeddings' output) cut to its first ``dim`` dimensions.
    ``ndcg_gains``: "linear" (trec_eval / BEIR) or "exponential" (2^grade - 1); see :func:`measure`."""
    from .arguments import check_range

    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    if pooling is not None and pooling not in POOLINGS:
        raise ValueError(f"pooling must be None (the model's own) or one of {POOLINGS}, got {pooling!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise TypeError(f"batch_size must be an int, got {batch_size!r}")
    check_range("batch_size", batch_size, minimum=1)
    if max_length is not None:
        if isinstance(max_length, bool) or not isinstance(max_length, int):
            raise TypeError(f"max_length must be an int or None, got {max_length!r}")
        check_range("max_length", max_length, minimum=2)
    if ndcg_gains not in NDCG_GAINS:
        raise ValueError(f"ndcg_gains must be one of {NDCG_GAINS}, got {ndcg_gains!r}")
    pairs = None if layer_dims is None else _check_layer_dims(layer_dims)
    corpus, queries, qrels = _dataset(dataset)
    encoder = _Encoder(model, pooling=pooling, max_length=max_length, batch_size=batch_size, progress=progress,
                       device=device, need_layers=pairs is not None)
    if pairs is not None:
        for layer, dim in pairs:
            if not 0 <= layer <= encoder.num_layers:
                raise ValueError(f"layer_dims: layer {layer} is outside 0..{encoder.num_layers} (the model's "
                                 "hidden_states)")
            if not 1 <= dim <= encoder.hidden:
                raise ValueError(f"layer_dims: dim {dim} is outside 1..{encoder.hidden} (the hidden size)")
    doc_ids, query_ids = list(corpus), list(queries)
    doc_texts, query_texts = [corpus[d] for d in doc_ids], [queries[q] for q in query_ids]
    truncated = encoder.count_truncated(doc_texts) + encoder.count_truncated(query_texts)
    if truncated:
        warnings.warn(f"{truncated} of {len(doc_texts) + len(query_texts)} texts (passages and queries) are longer "
                      f"than {encoder.limit} tokens and were truncated to it", stacklevel=2)
    layers = [None] if pairs is None else sorted({layer for layer, _ in pairs})
    docs = encoder.encode(doc_texts, layers, "corpus")
    query_vectors = encoder.encode(query_texts, layers, "queries")
    if pairs is None:
        return measure(qrels, rank(query_vectors[None], docs[None], query_ids, doc_ids, score=score), ndcg_gains)
    return {(layer, dim): measure(qrels, rank(query_vectors[layer][:, :dim], docs[layer][:, :dim], query_ids,
                                              doc_ids, score=score), ndcg_gains)
            for layer, dim in pairs}


# ---------------------------------------------------------------------------------------------- fine-tuning


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def pseudo_query_pairs(texts, seed: int = 0, *, min_words: int = 4, max_words: int = 16,
                       remove_probability: float = 0.9) -> list[tuple[str, str]]:
    """Inverse-cloze (query, passage) pairs from a corpus alone (Lee et al., 2019): one per passage of at least
    ``2 * min_words`` words. A passage of several sentences gives a random sentence as the query (a random window
    of ``max_words`` words of it when longer), removed from the passage with probability ``remove_probability``
    (ICT's 0.9: the model must match on meaning, not only on the copied words); a one-sentence passage gives a
    random span of ``min_words``..``max_words`` words, the passage kept whole. hf-mae's choices: the sentence
    splitter (., ! or ? then a space) and the word bounds."""
    if isinstance(texts, str) or not hasattr(texts, "__iter__"):
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    texts = list(texts)
    if not texts:
        raise ValueError("texts is empty; give the corpus passages to make pairs from")
    if not (isinstance(min_words, int) and isinstance(max_words, int) and 1 <= min_words <= max_words):
        raise ValueError(f"min_words and max_words must be ints with 1 <= min_words <= max_words, got {min_words} "
                         f"and {max_words}")
    if not 0 <= remove_probability <= 1:
        raise ValueError(f"remove_probability must be in [0, 1], got {remove_probability}")
    generator = random.Random(seed)
    pairs = []
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"texts must hold strings, got a {type(text).__name__}")
        words = text.split()
        if len(words) < 2 * min_words:
            continue
        sentences = [s for s in _SENTENCE_END.split(text.strip()) if len(s.split()) >= min_words]
        if len(sentences) >= 2:
            index = generator.randrange(len(sentences))
            query_words = sentences[index].split()
            if len(query_words) > max_words:
                begin = generator.randrange(len(query_words) - max_words + 1)
                query_words = query_words[begin:begin + max_words]
            passage = (" ".join(sentences[:index] + sentences[index + 1:])
                       if generator.random() < remove_probability else text)
        else:
            length = generator.randint(min_words, min(max_words, len(words) - min_words))
            begin = generator.randrange(len(words) - length + 1)
            query_words, passage = words[begin:begin + length], text
        pairs.append((" ".join(query_words), passage))
    if not pairs:
        raise ValueError(f"texts: no passage has the {2 * min_words} words a pair needs")
    return pairs


def load_sentence_transformer(model_dir, *, pooling: str | None = None, max_length: int | None = None, device=None):
    """``model_dir`` as a float32 SentenceTransformer: a SentenceTransformer folder as it is (``pooling`` must then
    be None or its own), a plain transformers folder as Transformer + Pooling(``pooling`` or mean)."""
    from sentence_transformers import SentenceTransformer

    models = _st_modules()
    folder = Path(model_dir)
    if not (folder / "config.json").is_file() and not (folder / "modules.json").is_file():
        raise FileNotFoundError(f"model_dir {str(model_dir)!r} is no model folder (no modules.json or config.json)")
    device = str(_device(device))
    if (folder / "modules.json").is_file():
        model = SentenceTransformer(str(folder), device=device, model_kwargs={"dtype": torch.float32})
        own = _sentence_transformer_parts(model)[2]
        if pooling not in (None, own):
            raise ValueError(f"pooling={pooling!r}: {model_dir} is a SentenceTransformer folder pooling by {own!r}")
    else:
        transformer = models.Transformer(str(folder), model_kwargs={"dtype": torch.float32})
        pool = models.Pooling(transformer.get_embedding_dimension(), pooling_mode=pooling or "mean")
        model = SentenceTransformer(modules=[transformer, pool], device=device)
    if max_length is not None:
        model.max_seq_length = max_length
    return model.float()


def contrastive_finetune(model_dir, pairs, output_dir, *, steps: int = 100, batch_size: int = 32, lr: float = 2e-5,
                         seed: int = 0, pooling: str | None = None, max_length: int | None = 128,
                         warmup_ratio: float = 0.1, scale: float = 20.0, progress: bool = True, device=None) -> str:
    """A short in-batch-negative fine-tune of ``model_dir`` on ``(query, passage)`` pairs, saved to ``output_dir``
    as a SentenceTransformer folder (its transformer at the root, so AutoModel loads it too); returns the folder.

    sentence-transformers' own ``SentenceTransformerTrainer`` with ``MultipleNegativesRankingLoss`` (cosine
    similarities times ``scale`` = 20, cross-entropy over the batch's passages), a no-duplicates batch sampler,
    AdamW at ``lr`` with linear warm-up over ``warmup_ratio`` then linear decay, exactly ``steps`` optimiser
    steps, float32, seeded by ``seed`` (weights of any new layer, data order, dropout). Chosen over a plain loop
    because it is what users of embedding models run, and its loss / sampler are the library's tested ones."""
    from datasets import Dataset
    from sentence_transformers import (SentenceTransformerTrainer, SentenceTransformerTrainingArguments)
    try:  # their 6.x home, else the 5.x one
        from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
        from sentence_transformers.sentence_transformer.training_args import BatchSamplers
    except ImportError:
        from sentence_transformers.losses import MultipleNegativesRankingLoss
        from sentence_transformers.training_args import BatchSamplers
    from .arguments import check_range

    for name, value in (("steps", steps), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {value!r}")
        check_range(name, value, minimum=1)
    check_range("lr", lr, minimum=0, strict=True)
    check_range("warmup_ratio", warmup_ratio, minimum=0, maximum=1)
    pairs = list(pairs)
    if len(pairs) < 2:
        raise ValueError(f"pairs: in-batch negatives need at least 2 (query, passage) pairs, got {len(pairs)}")
    if batch_size > len(pairs):
        raise ValueError(f"batch_size={batch_size} is larger than the {len(pairs)} pairs")
    for pair in pairs[:1]:
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            raise TypeError(f"pairs must hold (query, passage) string pairs, got {pair!r}")
    torch.manual_seed(seed)
    model = load_sentence_transformer(model_dir, pooling=pooling, max_length=max_length, device=device)
    data = Dataset.from_dict({"anchor": [q for q, _ in pairs], "positive": [p for _, p in pairs]})
    args = SentenceTransformerTrainingArguments(
        output_dir=str(Path(output_dir) / "trainer"), max_steps=steps, per_device_train_batch_size=batch_size,
        learning_rate=lr, warmup_steps=round(warmup_ratio * steps), lr_scheduler_type="linear", seed=seed,
        data_seed=seed,
        batch_sampler=BatchSamplers.NO_DUPLICATES, save_strategy="no", report_to="none",
        logging_steps=max(1, steps // 10), disable_tqdm=not progress, dataloader_drop_last=True,
        use_cpu=str(_device(device)) == "cpu",
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data,
                                         loss=MultipleNegativesRankingLoss(model, scale=scale))
    trainer.train()
    shutil.rmtree(Path(output_dir) / "trainer", ignore_errors=True)  # nothing saved there (save_strategy "no")
    model.save(str(output_dir))
    return str(output_dir)


# ---------------------------------------------------------------------------------------------- command line


def layer_dim(text: str) -> tuple[int, int]:
    """An argparse ``type=`` for ``LAYER:DIM`` (e.g. ``2:32``)."""
    layer, sep, dim = str(text).partition(":")
    try:
        pair = (int(layer), int(dim))
    except ValueError:
        pair = None
    if not sep or pair is None or pair[0] < 0 or pair[1] < 1:
        raise argparse.ArgumentTypeError(f"expected LAYER:DIM with LAYER >= 0 and DIM >= 1 (e.g. 2:32), got {text!r}")
    return pair


def format_table(results: dict) -> str:
    """The results as a small text table: one row, or one row per (layer, dim)."""
    rows = {"model": results} if all(m in results for m in MEASURES) else {
        f"{layer}:{dim}": metrics for (layer, dim), metrics in results.items()}
    lines = [f"{'layer:dim' if 'model' not in rows else '':<10}" + "".join(f"{m:>10}" for m in MEASURES)]
    lines += [f"{name:<10}" + "".join(f"{metrics[m]:>10.4f}" for m in MEASURES) for name, metrics in rows.items()]
    return "\n".join(lines)


def to_json(results: dict) -> dict:
    """JSON keys for per-(layer, dim) results: ``"layer:dim"``."""
    if all(m in results for m in MEASURES):
        return dict(results)
    return {f"{layer}:{dim}": metrics for (layer, dim), metrics in results.items()}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .arguments import positive_int

    parser.add_argument("run", metavar="RUN", help="a SentenceTransformer folder, or a folder transformers' AutoModel "
                                                   "loads (e.g. an hf-mae text run's exported encoder)")
    parser.add_argument("--dataset", required=True, 
                        help="a BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv")
    parser.add_argument("--split", default="test", help="the qrels file qrels/<split>.tsv")
    parser.add_argument("--score", choices=SCORES, default="cos", help="cosine or dot-product scores")
    parser.add_argument("--batch-size", type=positive_int, default=64, help="embedding batch size")
    parser.add_argument("--max-length", type=positive_int, default=None,
                        help="truncate texts to this many tokens (default: the model's limit)")
    parser.add_argument("--layer-dims", type=layer_dim, nargs="+", default=None, metavar="LAYER:DIM",
                        help="score each pair: the pooled hidden_states[LAYER] cut to its first DIM dims (Starbucks)")
    parser.add_argument("--pooling", choices=POOLINGS, default=None,
                        help="pool the token states so (default: the SentenceTransformer's own, else mean)")
    parser.add_argument("--ndcg-gains", choices=NDCG_GAINS, default="linear",
                        help="nDCG gains: the grade (trec_eval, BEIR) or 2^grade - 1")
    parser.add_argument("--output", default=None, help="write the results as JSON here")


def run(args) -> int:
    from ..files import write_json

    dataset = load_beir(args.dataset, args.split)
    if not Path(args.run).is_dir():
        raise FileNotFoundError(f"RUN {args.run!r} is not a folder (a SentenceTransformer folder or one that "
                                "transformers' AutoModel loads)")
    results = evaluate_retrieval(args.run, dataset, score=args.score, batch_size=args.batch_size,
                                 max_length=args.max_length, layer_dims=args.layer_dims, pooling=args.pooling,
                                 ndcg_gains=args.ndcg_gains)
    corpus, queries, _ = dataset
    print(f"{len(queries)} judged queries over {len(corpus)} passages, {args.score} scores")
    print(format_table(results))
    if args.output:
        write_json(args.output, {"run": str(args.run), "dataset": str(args.dataset), "split": args.split,
                                 "score": args.score, "pooling": args.pooling, "max_length": args.max_length,
                                 "ndcg_gains": args.ndcg_gains,
                                 "results": to_json(results)})
        print(f"results written to {args.output}")
    return 0
