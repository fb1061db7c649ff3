"""Graph processor for GraphMAE: one graph (a dict, a Hugging Face ``graphs-datasets`` row, or a PyG ``Data``) ->
tensors the model takes, and a batch of graphs -> their disjoint union with a ``batch`` vector.

Per graph (:meth:`GraphProcessor.prepare`):
- node features (N, F) float32, normalised per ``feature_normalization``: "row" (every row divided by its sum, as
  DGL's citation loaders and PyG's ``NormalizeFeatures`` do for bag-of-words features; all-zero rows stay zero),
  "standard" (per feature: zero mean, unit variance over the graph's nodes, as scikit-learn's ``StandardScaler``;
  constant features are only centred) or None;
- edges (2, E') long: both directions of every edge (``symmetrize``), duplicates removed, and existing self loops
  replaced by exactly one per node (``add_self_loops``; the official code's ``remove_self_loop().add_self_loop()``),
  sorted by (target, source);
- labels: one value -> a graph label (0-dim), one per node -> node labels (N,); node masks (``train_mask``, ...)
  as bool (N,).

:func:`batch_graphs` makes the disjoint union of prepared graphs: node tensors concatenated, each graph's edge ids
offset by the nodes before it, ``batch`` (N,) the graph id of every node, graph labels stacked (num_graphs,), node
labels concatenated (N,). :func:`load_planetoid` reads the Planetoid citation graphs (Cora, CiteSeer, PubMed) from
their raw ``ind.<name>.*`` files, as PyG's and Kipf's loaders do.

Remote-code rule: this file imports only the standard library, numpy, torch and transformers.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import urllib.request
import warnings

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature, FeatureExtractionMixin

FEATURE_NORMALIZATIONS = ("row", "standard", None)
FEATURE_KEYS = ("node_features", "x", "node_feat")  # ours, PyG's, the Hub's graphs-datasets
LABEL_KEYS = ("labels", "y", "label")
NODE_MASK_KEYS = ("train_mask", "val_mask", "test_mask")
PLANETOID_NAMES = {"cora": "Cora", "citeseer": "CiteSeer", "pubmed": "PubMed"}
PLANETOID_SUFFIXES = ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
PLANETOID_URL = "https://github.com/kimiyoung/planetoid/raw/master/data"  # PyG's download source


def _to_numpy(value, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as error:  # ragged lists and the like
        raise TypeError(f"{name} must be an array, a tensor or a nested list, got {type(value).__name__}") from error


def row_normalize(features: np.ndarray) -> np.ndarray:
    """Rows divided by their sum (so they sum to 1); all-zero rows stay zero. (N, F) -> (N, F) float32."""
    total = features.sum(axis=1, keepdims=True)
    scale = np.divide(1.0, total, out=np.zeros_like(total, dtype=np.float64), where=total != 0)
    return (features * scale).astype(np.float32)


def standardize(features: np.ndarray) -> np.ndarray:
    """Per feature: minus the mean, divided by the (population) standard deviation; constant features are centred
    only (scikit-learn's StandardScaler). (N, F) -> (N, F) float32."""
    features = features.astype(np.float64)
    std = features.std(axis=0)
    return ((features - features.mean(axis=0)) / np.where(std > 0, std, 1.0)).astype(np.float32)


def clean_edges(edge_index: torch.Tensor, num_nodes: int, symmetrize: bool, add_self_loops: bool) -> torch.Tensor:
    """(2, E) long -> (2, E') long: reversed edges added (``symmetrize``), self loops dropped then one added per node
    (``add_self_loops``), duplicates removed, sorted by (target, source)."""
    source, target = edge_index
    if symmetrize:
        source, target = torch.cat([source, target]), torch.cat([target, source])
    if add_self_loops:
        keep = source != target
        loops = torch.arange(num_nodes)
        source, target = torch.cat([source[keep], loops]), torch.cat([target[keep], loops])
    key = torch.unique(target * num_nodes + source)  # sorted and deduplicated
    return torch.stack([key % num_nodes, key // num_nodes])


class GraphProcessor(FeatureExtractionMixin):
    r"""Graphs -> ``{"node_features" (N, F), "edge_index" (2, E), "batch" (N,)}`` (see the module docstring).

    add_self_loops: one self loop per node (GAT attends to the node itself; GIN sums it once more).
    symmetrize: add the reverse of every edge (an undirected graph).
    feature_normalization: "row", "standard" or None.
    """

    model_input_names = ["node_features", "edge_index", "batch"]

    @classmethod
    def from_model_config(cls, config, **settings):
        """The processor for ``config``: its ``feature_normalization``, plus the fixed ``settings``."""
        return cls(feature_normalization=config.feature_normalization, **settings)

    def __init__(self, add_self_loops: bool = True, symmetrize: bool = True, feature_normalization: str | None = "row",
                 **kwargs):  # fmt: skip
        super().__init__(**kwargs)
        if feature_normalization not in FEATURE_NORMALIZATIONS:
            raise ValueError(f"feature_normalization must be one of {FEATURE_NORMALIZATIONS}, got {feature_normalization!r}")
        self.add_self_loops = bool(add_self_loops)
        self.symmetrize = bool(symmetrize)
        self.feature_normalization = feature_normalization

    def prepare(self, graph) -> dict:
        """One graph -> a dict of tensors: node_features (N, F) float32, edge_index (2, E') long, and ``labels``
        and node masks when the graph has them.

        graph: a dict (or any object with attributes) holding node features under ``node_features`` | ``x`` |
            ``node_feat`` and ``edge_index`` (2, E) (lists, numpy arrays or tensors), optionally ``num_nodes``,
            labels under ``labels`` | ``y`` | ``label``, and bool node masks ``train_mask``, ``val_mask``,
            ``test_mask``. Edge attributes are dropped (GraphMAE does not use them).
        """
        fields = _fields_of(graph)
        feature_key = next((key for key in FEATURE_KEYS if fields.get(key) is not None), None)
        if feature_key is None:
            raise ValueError(f"graph has no node features: give them under one of {FEATURE_KEYS} "
                             f"(found keys {sorted(fields)})")  # fmt: skip
        features = _to_numpy(fields[feature_key], feature_key)
        if features.ndim == 1:  # one scalar feature per node
            features = features[:, None]
        if features.ndim != 2 or not np.issubdtype(features.dtype, np.number):
            raise ValueError(f"{feature_key} must be a numeric (num_nodes, num_features) array, got shape "
                             f"{features.shape} and dtype {features.dtype}")  # fmt: skip
        num_nodes = features.shape[0]
        if fields.get("num_nodes") is not None and int(np.asarray(fields["num_nodes"]).reshape(-1)[0]) != num_nodes:
            raise ValueError(f"num_nodes={fields['num_nodes']} but {feature_key} has {num_nodes} rows")
        if num_nodes == 0:
            raise ValueError(f"{feature_key} is empty: a graph needs at least one node")
        features = features.astype(np.float64)
        if self.feature_normalization == "row":
            features = row_normalize(features)
        elif self.feature_normalization == "standard":
            features = standardize(features)
        out = {"node_features": torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32)),
               "edge_index": clean_edges(self._edge_index(fields, num_nodes), num_nodes, self.symmetrize,
                                         self.add_self_loops)}  # fmt: skip
        label_key = next((key for key in LABEL_KEYS if fields.get(key) is not None), None)
        if label_key is not None:
            out["labels"] = _labels(fields[label_key], label_key, num_nodes)
        for key in NODE_MASK_KEYS:
            if fields.get(key) is not None:
                mask = torch.as_tensor(_to_numpy(fields[key], key)).reshape(-1)
                if mask.shape != (num_nodes,):
                    raise ValueError(f"{key} must hold one value per node ({num_nodes}), got shape {tuple(mask.shape)}")
                out[key] = mask.bool()
        return out

    @staticmethod
    def _edge_index(fields: dict, num_nodes: int) -> torch.Tensor:
        if fields.get("edge_index") is None:
            raise ValueError(f"graph has no edge_index (2, num_edges) (found keys {sorted(fields)})")
        edges = _to_numpy(fields["edge_index"], "edge_index")
        if edges.size == 0:
            return torch.zeros(2, 0, dtype=torch.long)
        if edges.ndim != 2 or edges.shape[0] != 2:
            raise ValueError(f"edge_index must have shape (2, num_edges), got {edges.shape}")
        if not np.issubdtype(edges.dtype, np.integer):
            raise TypeError(f"edge_index must hold integer node ids, got dtype {edges.dtype}")
        if edges.min() < 0 or edges.max() >= num_nodes:
            raise ValueError(f"edge_index holds node ids in [{edges.min()}, {edges.max()}] but the graph has "
                             f"{num_nodes} nodes")  # fmt: skip
        return torch.from_numpy(edges.astype(np.int64))

    def __call__(self, graphs, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """One graph or a list of graphs -> a BatchFeature of their disjoint union (:func:`batch_graphs` of
        :meth:`prepare` of each): node_features (N, F), edge_index (2, E), batch (N,), labels and masks if any."""
        if kwargs:
            raise TypeError(f"GraphProcessor got unexpected argument(s) {sorted(kwargs)}")
        if return_tensors not in ("pt", None):
            raise ValueError(f"return_tensors must be 'pt' or None, got {return_tensors!r}")
        if isinstance(graphs, (list, tuple)):
            if not graphs:
                raise ValueError("graphs is empty: give one graph or a non-empty list of graphs")
            examples = [self.prepare(graph) for graph in graphs]
        else:
            examples = [self.prepare(graphs)]
        return BatchFeature(batch_graphs(examples), tensor_type=return_tensors)


def _fields_of(graph) -> dict:
    if isinstance(graph, dict):
        return dict(graph)
    keys = FEATURE_KEYS + LABEL_KEYS + NODE_MASK_KEYS + ("edge_index", "num_nodes")
    if hasattr(graph, "edge_index"):  # a PyG Data or any object with attributes
        return {key: getattr(graph, key, None) for key in keys}
    raise TypeError(f"graph must be a dict or an object with .x / .edge_index attributes (a PyG Data), got "
                    f"{type(graph).__name__}")  # fmt: skip


def _labels(value, key: str, num_nodes: int) -> torch.Tensor:
    """One value -> a 0-dim graph label; one row per node -> node labels (N,) (or (N, k) multi-label rows)."""
    labels = torch.as_tensor(_to_numpy(value, key))
    if labels.numel() == 1:
        return labels.reshape(())
    if labels.shape[0] == num_nodes:
        return labels.reshape(num_nodes) if labels.numel() == num_nodes else labels
    raise ValueError(f"{key} must be one graph label or one label per node ({num_nodes}), got shape "
                     f"{tuple(labels.shape)}")  # fmt: skip


def batch_graphs(examples: list[dict]) -> dict:
    """The disjoint union of prepared graphs (dicts from :meth:`GraphProcessor.prepare`).

    Returns node_features (N, F) concatenated, edge_index (2, E) with each graph's ids offset by the nodes before
    it, batch (N,) long graph ids, ``labels`` (num_graphs,) for graph labels or (N,) for node labels, and every
    node mask concatenated.
    """
    if not examples:
        raise ValueError("examples is empty: batch_graphs needs at least one graph")
    sizes = [int(example["node_features"].shape[0]) for example in examples]
    offsets = np.cumsum([0] + sizes[:-1]).tolist()
    union = {
        "node_features": torch.cat([torch.as_tensor(example["node_features"]) for example in examples]),
        "edge_index": torch.cat([torch.as_tensor(example["edge_index"]).long() + offset
                                 for example, offset in zip(examples, offsets)], dim=1),  # fmt: skip
        "batch": torch.repeat_interleave(torch.arange(len(examples)), torch.tensor(sizes)),
    }
    widths = {int(example["node_features"].shape[1]) for example in examples}
    if len(widths) > 1:
        raise ValueError(f"graphs in one batch must have the same number of node features, got {sorted(widths)}")
    for key in ("labels",) + NODE_MASK_KEYS:
        present = [key in example for example in examples]
        if not any(present):
            continue
        if not all(present):
            raise ValueError(f"{key} is present in some graphs of the batch and missing in others")
        values = [torch.as_tensor(example[key]) for example in examples]
        graph_level = key == "labels" and values[0].ndim == 0
        if key == "labels" and any((value.ndim == 0) != graph_level for value in values):
            raise ValueError("labels mixes graph labels (one per graph) and node labels (one per node) in one batch")
        union[key] = torch.stack(values) if graph_level else torch.cat(values)
    return union


# ------------------------------------------------------------------------------------------ Planetoid


def _planetoid_candidates(root, name: str) -> tuple[str, ...]:
    """Where the ``ind.<name>.*`` files may lie: ``root``, ``root/raw``, ``root/<Name>/raw`` (PyG), ``root/<name>/raw``."""
    return (root, os.path.join(root, "raw"), os.path.join(root, PLANETOID_NAMES[name], "raw"),
            os.path.join(root, name, "raw"))  # fmt: skip


def _planetoid_folder(root, name: str) -> str | None:
    """The first candidate folder holding every ``ind.<name>.*`` file, else None."""
    for folder in _planetoid_candidates(root, name):
        if all(os.path.isfile(os.path.join(folder, f"ind.{name}.{suffix}")) for suffix in PLANETOID_SUFFIXES):
            return folder
    return None


def find_planetoid(root) -> dict[str, str]:
    """The Planetoid data sets whose files (at least ``ind.<name>.x``) lie in ``root`` or its raw sub-folders, as
    ``{name: folder}``: how ``load_planetoid`` searches, used to recognise a Planetoid folder."""
    found = {}
    for name in PLANETOID_NAMES:
        folder = next((f for f in _planetoid_candidates(os.fspath(root), name)
                       if os.path.isfile(os.path.join(f, f"ind.{name}.x"))), None)  # fmt: skip
        if folder is not None:
            found[name] = folder
    return found


def _download_planetoid(root, name: str) -> str:
    """Fetches the 8 raw files into ``root/<Name>/raw`` (PyG's layout), each to a temporary name, then renamed.
    Not exercised by the tests: the test machines have no internet."""
    folder = os.path.join(root, PLANETOID_NAMES[name], "raw")
    os.makedirs(folder, exist_ok=True)
    for suffix in PLANETOID_SUFFIXES:
        target = os.path.join(folder, f"ind.{name}.{suffix}")
        if os.path.isfile(target):
            continue
        handle, temporary = tempfile.mkstemp(prefix=f".ind.{name}.{suffix}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(handle, "wb") as file, urllib.request.urlopen(f"{PLANETOID_URL}/ind.{name}.{suffix}") as response:
                file.write(response.read())
            os.replace(temporary, target)
        except BaseException:
            os.unlink(temporary)
            raise
    return folder


def _read_pickle(path: str):
    # Python-2 pickles of numpy arrays and scipy sparse matrices (unpickling needs scipy installed); like every
    # pickle they can run code: read only files from a source you trust
    with open(path, "rb") as file, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # old scipy module paths inside the pickles
        return pickle.load(file, encoding="latin1")


def _dense(matrix) -> np.ndarray:
    return np.asarray(matrix.toarray() if hasattr(matrix, "toarray") else matrix, dtype=np.float32)


def load_planetoid(root, name: str = "cora", download: bool = False) -> dict:
    """The Planetoid citation graph ``name`` ("cora", "citeseer", "pubmed") with its public split, from the raw
    ``ind.<name>.*`` files, following PyG's ``read_planetoid_data`` (and Kipf's ``load_data``).

    root: a folder holding the files, or ``root/raw/``, or ``root/<Name>/raw/`` (PyG's layout).
    download: fetch missing files from PyG's source into ``root/<Name>/raw/``.
    Returns numpy arrays: node_features (N, F) float32 as stored (the processor normalises), edge_index (2, E)
    int64 (both directions, duplicates and self loops removed, sorted by source then target: PyG's edges),
    labels (N,) int64, train_mask / val_mask / test_mask (N,) bool (Cora: 140 / 500 / 1000 nodes).
    """
    key = str(name).lower()
    if key not in PLANETOID_NAMES:
        raise ValueError(f"name must be one of {sorted(PLANETOID_NAMES)}, got {name!r}")
    root = os.fspath(root)
    folder = _planetoid_folder(root, key)
    if folder is None and download:
        folder = _download_planetoid(root, key)
    if folder is None:
        expected = ", ".join(f"ind.{key}.{suffix}" for suffix in PLANETOID_SUFFIXES)
        raise FileNotFoundError(
            f"the Planetoid files of {key!r} are not in {root!r} (nor in its raw/ or {PLANETOID_NAMES[key]}/raw/ "
            f"sub-folders); expected {expected}. Pass download=True to fetch them."
        )
    items = {suffix: _read_pickle(os.path.join(folder, f"ind.{key}.{suffix}")) for suffix in PLANETOID_SUFFIXES[:-1]}
    with open(os.path.join(folder, f"ind.{key}.test.index")) as file:
        test_index = np.array([int(line) for line in file if line.strip()], dtype=np.int64)
    tx, ty = _dense(items["tx"]), np.asarray(items["ty"])
    sorted_test = np.sort(test_index)
    if key == "citeseer":
        # CiteSeer has isolated test nodes missing from tx/ty: give them zero features and an all-zero label row
        # (label 0 after argmax), as PyG and Kipf do
        span = sorted_test[-1] - sorted_test[0] + 1
        tx_full, ty_full = np.zeros((span, tx.shape[1]), np.float32), np.zeros((span, ty.shape[1]), ty.dtype)
        tx_full[sorted_test - sorted_test[0]], ty_full[sorted_test - sorted_test[0]] = tx, ty
        tx, ty = tx_full, ty_full
    features = np.concatenate([_dense(items["allx"]), tx])
    labels = np.concatenate([np.asarray(items["ally"]), ty]).argmax(axis=1).astype(np.int64)
    # the test rows are stored in sorted order; put each at its node id
    features[test_index], labels[test_index] = features[sorted_test], labels[sorted_test]
    num_nodes = features.shape[0]

    def index_mask(index) -> np.ndarray:
        mask = np.zeros(num_nodes, dtype=bool)
        mask[index] = True
        return mask

    num_train = np.asarray(items["y"]).shape[0]
    source = np.concatenate([np.full(len(v), k, dtype=np.int64) for k, v in items["graph"].items()])
    target = np.concatenate([np.asarray(v, dtype=np.int64) for v in items["graph"].values()])
    if source.size and max(source.max(), target.max()) >= num_nodes:
        raise ValueError(f"ind.{key}.graph links node ids up to {max(source.max(), target.max())} but there are "
                         f"{num_nodes} nodes")  # fmt: skip
    keep = source != target  # the raw lists repeat some edges (and may hold self loops)
    # as PyG: duplicates removed; pairs sorted by source then target
    pairs = np.unique(source[keep] * num_nodes + target[keep])
    return {
        "node_features": features.astype(np.float32),
        "edge_index": np.stack([pairs // num_nodes, pairs % num_nodes]).astype(np.int64),
        "labels": labels,
        "train_mask": index_mask(np.arange(num_train)),
        "val_mask": index_mask(np.arange(num_train, num_train + 500)),
        "test_mask": index_mask(test_index),
    }


__all__ = ["GraphProcessor", "batch_graphs", "load_planetoid", "row_normalize", "standardize", "clean_edges"]
