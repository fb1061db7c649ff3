"""``hf-mae probe``: how good are an encoder's frozen features? Linear, kNN, attentive and prototypical probes.

Features come from ``AutoModel.from_pretrained(MODEL_DIR)`` run with ``mask_ratio=0.0`` (every patch, in order).
The train split fits the probe (or ``shots`` labelled examples per class of it) and the test split scores it.
With ``baseline="random"`` the same probes run on a randomly initialised encoder of the same config, the
yardstick that says what pretraining bought. (On a data set as easy as digits, random ViT features are already
linearly separable; the pretrained encoder's advantage shows in kNN and in low-shot probes.)

- linear: features standardised with the train statistics (MAE's BatchNorm without affine), then a linear
  classifier trained with AdamW;
- knn: weighted k-nearest neighbours on cosine similarity, votes weighted by ``exp(sim / T)`` (DINO, k=20, T=0.07);
- attentive: one learned query cross-attends over the frozen patch tokens, then a linear head;
- prototypical (Bird-MAE's ProtoPNet-style probe): J learned prototypes per class, cosine similarity to every
  patch token, max over positions, then a non-negative class-to-own-prototypes layer (:class:`PrototypicalProbe`).

Python API: :func:`probe`. CLI: ``hf-mae probe runs/mae --dataset digits --method all --baseline random``.
"""

from __future__ import annotations

import argparse
import math
import os

import numpy as np
import torch
from torch import nn

from .. import files

METHODS = ("linear", "knn", "attentive", "prototypical")
POOLINGS = ("mean", "cls", "time")
BASELINES = ("random",)


def check_methods(methods) -> list[str]:
    """``methods``: a name, a list of names, or "all" -> list of valid method names (ValueError otherwise)."""
    methods = [methods] if isinstance(methods, str) else list(methods)
    if "all" in methods:
        return list(METHODS)
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"methods {unknown or methods!r} not understood; valid methods: {', '.join(METHODS)} or 'all'")
    return list(dict.fromkeys(methods))


@torch.no_grad()
def extract_tokens(encoder, pixel_values: torch.Tensor, batch_size: int = 256, desc: str | None = None) -> torch.Tensor:
    """Frozen encoder tokens. pixel_values (n, C, H, W) (or filterbanks, or point clouds (n, points, 3)) ->
    (n, 1 + num_patches, hidden), cls first, in order. Point-cloud encoders have no cls token: the max over their
    group tokens takes its place (Point-BERT / Point-MAE's global feature), so ``pooling="cls"`` is max pooling;
    encoders with ``has_cls_token = False`` (I-JEPA, DMT-JEPA) get the mean of their patch tokens there.
    ``desc``: show a progress bar over the batches with this label."""
    from tqdm.auto import tqdm

    encoder.eval()
    device = next(encoder.parameters()).device
    chunks = []
    starts = range(0, len(pixel_values), batch_size)
    for start in tqdm(starts, desc=desc, disable=desc is None, leave=False, unit="batch"):
        batch = pixel_values[start : start + batch_size].to(device)
        tokens = encoder(batch, mask_ratio=0.0).last_hidden_state.float()
        if encoder.main_input_name == "point_values":
            tokens = torch.cat([tokens.max(dim=1, keepdim=True).values, tokens], dim=1)
        elif not getattr(encoder, "has_cls_token", True):  # I-JEPA's encoder: the mean token stands in for a cls
            tokens = torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)
        chunks.append(tokens.cpu())
    return torch.cat(chunks)


def pool(tokens: torch.Tensor, pooling: str, grid=None, keep: torch.Tensor | None = None) -> torch.Tensor:
    """(n, 1 + N, hidden) -> features: "mean" of the patch tokens or the "cls" token, (n, hidden); or "time":
    the mean over the rows of the row-major (rows, cols) token ``grid`` with the columns kept side by side,
    (n, cols * hidden). For a filterbank (time down the rows) that averages over time only: a mean over every
    token also averages the frequency bands together, which loses the spectral envelope (benchmarks/RESULTS.md,
    FSDD: 0.90 linear on the raw time-averaged filterbank, 0.38 on its mean-pooled 16x16 patches).
    keep: optional (n, N) bool, the tokens to average ("mean" and "time"), e.g. those not made of padding only."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if pooling == "cls":
        return tokens[:, 0]
    patches = tokens[:, 1:]
    weight = patches.new_ones(patches.shape[:2]) if keep is None else keep.to(patches)
    if weight.shape != patches.shape[:2]:
        shape = tuple(patches.shape[:2])
        raise ValueError(f"keep must have shape {shape} (clips, patch tokens), got {tuple(weight.shape)}")
    if pooling == "mean":
        if keep is None:
            return patches.mean(dim=1)
        return (patches * weight[..., None]).sum(1) / weight.sum(1, keepdim=True).clamp_min(1)
    if grid is None or len(tuple(grid)) != 2 or grid[0] * grid[1] != patches.shape[1]:
        raise ValueError(
            f"pooling='time' needs the (rows, cols) grid of the {patches.shape[1]} patch tokens, got grid={grid!r}"
        )
    rows, cols = grid
    patches, weight = patches.unflatten(1, (rows, cols)), weight.unflatten(1, (rows, cols))[..., None]
    return ((patches * weight).sum(1) / weight.sum(1).clamp_min(1)).flatten(1)


def padding_tokens(input_values: torch.Tensor, patch_size, padding_value: float) -> torch.Tensor:
    """(n, frames, mel bins) filterbanks -> (n, N) bool: the patch tokens whose frames are all padding (every bin
    equal to the normalised ``padding_value``), in the encoder's row-major (time, frequency) order."""
    from ..modeling.embeddings import to_2tuple

    patch_time, patch_freq = to_2tuple(patch_size)
    padded = (input_values == padding_value).all(-1)  # (n, frames): no real filterbank frame is constant
    rows = padded.unflatten(1, (-1, patch_time)).all(-1)  # (n, rows)
    return rows[:, :, None].expand(-1, -1, input_values.shape[-1] // patch_freq).flatten(1)


def real_tokens(inputs: torch.Tensor, config, processor) -> torch.Tensor | None:
    """(n, N) bool, the patch tokens that are not padding only, for filterbanks (n, frames, bins) from a processor
    that pads with a ``padding_value`` (Audio-MAE, Bird-MAE; patches of ``config.patch_size``); None for every other
    input (images, video, point clouds: their configs may have no ``patch_size``)."""
    pad = getattr(processor, "padding_value", None)
    if pad is None or inputs.dim() != 3 or not hasattr(processor, "normalize"):
        return None
    pad = float(processor.normalize(np.float32(pad)))
    return ~padding_tokens(inputs, config.patch_size, pad)


def _train_head(head: nn.Module, inputs, labels, epochs: int, lr: float, weight_decay: float, batch_size: int, seed: int,
                param_groups=None):
    """Fits ``head`` on (inputs, labels) with AdamW + cosine schedule and cross-entropy; returns it in eval mode.
    ``param_groups`` (AdamW groups, each may set its own lr / weight decay) replaces ``head.parameters()``; a head
    with a ``constrain_()`` method gets it called after every step (projected gradient descent)."""
    generator = torch.Generator().manual_seed(seed)
    steps_per_epoch = math.ceil(len(labels) / batch_size)
    optimizer = torch.optim.AdamW(param_groups or head.parameters(), lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    constrain = getattr(head, "constrain_", None)
    head.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(labels), batch_size):
            idx = order[start : start + batch_size]
            loss = nn.functional.cross_entropy(head(inputs[idx]), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            if constrain is not None:
                constrain()
    return head.eval()


def _accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(-1) == labels).float().mean())


def linear_probe(train_x, train_y, test_x, test_y, num_classes: int, epochs: int = 100, lr: float = 1e-2,
                 batch_size: int = 256, seed: int = 0) -> float:
    """Accuracy of a linear classifier on standardised features. train_x (n, hidden), train_y (n,)."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6  # BatchNorm without affine, frozen at the train statistics
    torch.manual_seed(seed)
    head = nn.Linear(train_x.shape[1], num_classes)
    head = _train_head(head, (train_x - mean) / std, train_y, epochs, lr, 1e-4, batch_size, seed)
    with torch.no_grad():
        return _accuracy(head((test_x - mean) / std), test_y)


def knn_probe(train_x, train_y, test_x, test_y, num_classes: int, k: int = 20, temperature: float = 0.07,
              batch_size: int = 1024) -> float:
    """Accuracy of DINO's weighted kNN: cosine similarity, the k nearest train samples vote with exp(sim / T)."""
    train_x = nn.functional.normalize(train_x, dim=1)
    test_x = nn.functional.normalize(test_x, dim=1)
    k = min(k, len(train_y))
    correct = 0
    for start in range(0, len(test_y), batch_size):
        similarity, index = (test_x[start : start + batch_size] @ train_x.T).topk(k, dim=1)  # (b, k)
        votes = torch.zeros(len(index), num_classes).scatter_add_(1, train_y[index], (similarity / temperature).exp())
        correct += int((votes.argmax(1) == test_y[start : start + batch_size]).sum())
    return correct / len(test_y)


class AttentivePooler(nn.Module):
    """One learned query cross-attends over frozen tokens, then a linear head. tokens (n, N, hidden) -> (n, classes)."""

    def __init__(self, hidden_size: int, num_classes: int, num_heads: int = 4):
        super().__init__()
        num_heads = num_heads if hidden_size % num_heads == 0 else 1
        self.norm = nn.LayerNorm(hidden_size)
        self.query = nn.Parameter(torch.randn(1, 1, hidden_size) * 0.02)
        self.attention = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.head = nn.Sequential(nn.LayerNorm(hidden_size), nn.Linear(hidden_size, num_classes))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens = self.norm(tokens)
        pooled, _ = self.attention(self.query.expand(len(tokens), -1, -1), tokens, tokens, need_weights=False)
        return self.head(pooled[:, 0])


def attentive_probe(train_tokens, train_y, test_tokens, test_y, num_classes: int, epochs: int = 10,
                    lr: float = 3e-3, batch_size: int = 128, seed: int = 0) -> float:
    """Accuracy of an attentive probe trained on the frozen patch tokens (n, N, hidden)."""
    torch.manual_seed(seed)
    head = AttentivePooler(train_tokens.shape[-1], num_classes)
    head = _train_head(head, train_tokens, train_y, epochs, lr, 0.05, batch_size, seed)
    with torch.no_grad():
        return _accuracy(torch.cat([head(c) for c in test_tokens.split(512)]), test_y)


class PrototypicalProbe(nn.Module):
    """Bird-MAE's prototypical probe (a ProtoPNet head on frozen patch tokens). tokens (n, N, hidden) -> (n, classes).

    The N patch tokens are the encoder's (C, H', W') feature map flattened; prototypes are 1x1 (a C-vector each), so
    a prototype's similarity map over the grid is the cosine between it and every token (:meth:`similarity_maps`).
    Each class owns ``prototypes_per_class`` prototypes; a class logit is ``bias + sum_j w[c, j] * max_pos sim``,
    with ``w >= 0`` and no connection at all to other classes' prototypes (``LinearLayerWithoutNegativeConnections``
    in the official code: weight (classes, J), bias initialised to -2.0).
    """

    def __init__(self, hidden_size: int, num_classes: int, prototypes_per_class: int = 20):
        super().__init__()
        if prototypes_per_class < 1:
            raise ValueError(f"prototypes_per_class must be >= 1, got {prototypes_per_class}")
        self.num_classes, self.prototypes_per_class = num_classes, prototypes_per_class
        # prototype k belongs to class k // J (class-major order, as the official prototype_class_identity)
        self.prototypes = nn.Parameter(torch.randn(num_classes * prototypes_per_class, hidden_size))
        self.weight = nn.Parameter(torch.ones(num_classes, prototypes_per_class))
        self.bias = nn.Parameter(torch.full((num_classes,), -2.0))

    def similarities(self, tokens: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of every token to every prototype: (n, N, hidden) -> (n, classes * J, N)."""
        tokens = nn.functional.normalize(tokens, dim=-1)
        prototypes = nn.functional.normalize(self.prototypes, dim=-1)
        return torch.einsum("pc,nlc->npl", prototypes, tokens)

    def similarity_maps(self, tokens: torch.Tensor, grid_size) -> torch.Tensor:
        """(n, N, hidden) -> (n, classes * J, H', W'): where on the patch grid each prototype fires."""
        return self.similarities(tokens).unflatten(-1, tuple(grid_size))

    def class_connections(self) -> torch.Tensor:
        """The last layer as a dense (classes, classes * J) matrix: block diagonal, non-negative."""
        return torch.block_diag(*self.weight.clamp(min=0))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        activations = self.similarities(tokens).amax(dim=-1)  # (n, classes * J): max-pool over positions
        activations = activations.view(len(tokens), self.num_classes, self.prototypes_per_class)
        return (activations * self.weight.clamp(min=0)).sum(-1) + self.bias

    @torch.no_grad()
    def constrain_(self) -> None:
        """Projects the last-layer weights back onto w >= 0 (called after each optimiser step)."""
        self.weight.clamp_(min=0)


def prototypical_probe(train_tokens, train_y, test_tokens, test_y, num_classes: int, prototypes_per_class: int = 20,
                       epochs: int = 10, prototype_lr: float = 0.04, last_layer_lr: float = 4e-3,
                       batch_size: int = 128, seed: int = 0) -> float:
    """Accuracy of a :class:`PrototypicalProbe` trained on frozen patch tokens (n, N, hidden) with cross-entropy.

    The official lrs are 0.04 (prototypes) and 4e-4 (last layer) over many epochs of BirdSet; a probe of a few
    epochs on a small data set would barely move the last layer at 4e-4, so its lr is scaled up 10x here.
    Tokens are standardised with the train statistics first (as the linear probe), so the cosine is not
    dominated by the component every token shares.
    """
    mean, std = train_tokens.mean((0, 1)), train_tokens.std((0, 1)) + 1e-6
    torch.manual_seed(seed)
    head = PrototypicalProbe(train_tokens.shape[-1], num_classes, prototypes_per_class)
    groups = [{"params": [head.prototypes], "lr": prototype_lr, "weight_decay": 0.0},
              {"params": [head.weight, head.bias], "lr": last_layer_lr, "weight_decay": 1e-4}]
    head = _train_head(head, (train_tokens - mean) / std, train_y, epochs, prototype_lr, 0.0, batch_size, seed, groups)
    with torch.no_grad():
        return _accuracy(torch.cat([head((c - mean) / std) for c in test_tokens.split(512)]), test_y)


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear centred kernel alignment (Kornblith et al., 2019) of two representations of the same n examples,
    x (n, d1) and y (n, d2): ``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)`` after centring each feature; 1 when
    one is an orthogonal transform (and isotropic scaling) of the other, near 0 for unrelated features. Invariant to
    the widths differing (a student and its teacher)."""
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must be (n, d1) and (n, d2) of the same n, got {tuple(x.shape)} and {tuple(y.shape)}")
    x = x.double() - x.double().mean(dim=0)
    y = y.double() - y.double().mean(dim=0)
    cross = (y.T @ x).pow(2).sum()
    return float(cross / ((x.T @ x).pow(2).sum().sqrt() * (y.T @ y).pow(2).sum().sqrt()).clamp_min(1e-30))


def mean_attention_distance(attentions, grid, num_prefix_tokens: int = 1) -> torch.Tensor:
    """Mean attention distance (Dosovitskiy et al., 2021; the "local vs global attention" measure of the MIM / CL
    comparisons): for each block and head, the distance in patches between a patch query and the patches it attends
    to, weighted by the attention and averaged over the queries and the batch.

    attentions: one (batch, heads, P + N, P + N) tensor per block (or one such tensor) of a ViT over a full ``grid``
        (rows, cols) of N = rows * cols patches after ``num_prefix_tokens`` P (cls, registers); the weights of a
        patch query over the patch keys are renormalised to sum to 1 (the share it gives the prefix tokens is left
        out). Returns (blocks, heads), in patch units (multiply by the patch size for pixels)."""
    if isinstance(attentions, torch.Tensor):
        attentions = (attentions,)
    rows, cols = grid
    ys, xs = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    positions = torch.stack([ys.flatten(), xs.flatten()], dim=1).double()
    distance = torch.cdist(positions, positions)  # (N, N)
    result = []
    for attention in attentions:
        if attention.ndim != 4 or attention.shape[-1] != num_prefix_tokens + rows * cols:
            raise ValueError(f"each attention map must be (batch, heads, {num_prefix_tokens} + {rows}*{cols}, ...) "
                             f"for grid {tuple(grid)}, got {tuple(attention.shape)}")
        patches = attention[:, :, num_prefix_tokens:, num_prefix_tokens:].double()
        patches = patches / patches.sum(dim=-1, keepdim=True).clamp_min(1e-30)
        per_query = (patches * distance.to(patches.device)).sum(dim=-1)  # (batch, heads, N)
        result.append(per_query.mean(dim=(0, 2)))
    return torch.stack(result).float()


def labelled_inputs(dataset: str, split: str, processor):
    """(model inputs, labels) of a whole split, through ``processor``: pixels, filterbanks or point clouds."""
    from .data import collate, load_image_dataset, with_model_inputs

    data = with_model_inputs(load_image_dataset(dataset, split), processor)
    batch = collate([data[i] for i in range(len(data))])
    key = next(k for k in ("input_values", "point_values", "pixel_values") if k in batch)  # audio, clouds or images
    return batch[key], batch["labels"]


def few_shot_indices(labels: torch.Tensor, shots: int, seed: int = 0) -> torch.Tensor:
    """Indices of ``shots`` examples of every class (all of a class that has fewer), drawn with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    chosen = []
    for label in labels.unique():
        members = torch.nonzero(labels == label).flatten()
        chosen.append(members[torch.randperm(len(members), generator=generator)[:shots]])
    return torch.cat(chosen).sort().values


def load_quietly(auto_class, path):
    """``auto_class.from_pretrained(path)`` without transformers' loading table: an encoder read from a pre-training
    folder always leaves the decoder's weights unused. Weights the encoder lacks are still reported."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        model, info = auto_class.from_pretrained(path, output_loading_info=True)
    finally:
        logging.set_verbosity(level)
    if info["missing_keys"]:
        logging.get_logger(__name__).warning(f"{path}: weights not in the checkpoint (random): {sorted(info['missing_keys'])}")
    return model


def _load_encoder(model_dir_or_model, processor):
    """(encoder, processor) from a folder / Hub id or a model instance (its base model is used)."""
    from transformers import AutoModel

    import hf_mae  # noqa: F401  (registers the Auto classes)
    from hf_mae.registry import processor_auto_class, processor_for_config

    if isinstance(model_dir_or_model, (str, os.PathLike)):
        from .arguments import check_model_path

        path = check_model_path(model_dir_or_model, "model_dir_or_model", what="a folder saved by save_pretrained")
        encoder = load_quietly(AutoModel, path)
        if processor is None:
            has_json = not os.path.isdir(path) or os.path.isfile(os.path.join(path, "preprocessor_config.json"))
            auto = processor_auto_class(encoder.config)  # an image processor, or a feature extractor (audio, clouds)
            processor = auto.from_pretrained(path) if has_json else processor_for_config(encoder.config)
    elif isinstance(model_dir_or_model, nn.Module) and hasattr(model_dir_or_model, "config"):
        encoder = model_dir_or_model.base_model  # the encoder inside a pre-training or classification model
        processor = processor if processor is not None else processor_for_config(encoder.config)
    else:
        raise TypeError(f"model_dir_or_model must be a folder, a Hub id or a PreTrainedModel, got {type(model_dir_or_model).__name__}")
    return encoder, processor


def random_encoder(encoder, seed: int):
    """The random-init baseline: a fresh model of ``encoder``'s config, initialised under ``seed``."""
    from transformers import AutoModel

    from hf_mae.registry import copy_config

    torch.manual_seed(seed)
    return AutoModel.from_config(copy_config(encoder.config)).to(next(encoder.parameters()).device)


def _run_probes(encoder, methods, data, num_classes, pooling, batch_size, seed, prototypes_per_class,
                kind: str = "pretrained", progress: bool = False, processor=None) -> dict:
    from tqdm.auto import tqdm

    (train_pixels, train_y), (test_pixels, test_y) = data
    train_tokens = extract_tokens(encoder, train_pixels, batch_size, desc=f"{kind} features, train" if progress else None)
    test_tokens = extract_tokens(encoder, test_pixels, batch_size, desc=f"{kind} features, test" if progress else None)
    grid = getattr(encoder.config, "grid_size", None)
    # linear and kNN pool the tokens of real input only: a short clip's padding would otherwise weigh in its mean
    train_x, test_x = (pool(tokens, pooling, grid, real_tokens(inputs, encoder.config, processor))
                       for tokens, inputs in ((train_tokens, train_pixels), (test_tokens, test_pixels)))
    results = {}
    bar = tqdm(methods, desc=f"{kind} probes", disable=not progress, leave=False, unit="probe")
    for method in bar:
        bar.set_postfix_str(method)
        if method == "linear":
            results[method] = linear_probe(train_x, train_y, test_x, test_y, num_classes, seed=seed)
        elif method == "knn":
            results[method] = knn_probe(train_x, train_y, test_x, test_y, num_classes)
        elif method == "attentive":
            results[method] = attentive_probe(train_tokens[:, 1:], train_y, test_tokens[:, 1:], test_y, num_classes, seed=seed)
        else:
            results[method] = prototypical_probe(train_tokens[:, 1:], train_y, test_tokens[:, 1:], test_y, num_classes,
                                                 prototypes_per_class, seed=seed)
    return results


def probe(model_dir_or_model, dataset: str = "digits", methods=("linear",), baseline: str | None = None, *,
          pooling: str = "mean", batch_size: int = 256, seed: int = 0, shots: int | None = None, processor=None,
          train_split: str = "train", test_split: str = "test", prototypes_per_class: int = 20, output=None,
          progress: bool = False) -> dict:
    """Probes the frozen encoder of ``model_dir_or_model`` (a folder, Hub id or model) on ``dataset``.

    methods: names from ``METHODS`` or "all". baseline: None or "random" (the same config, randomly initialised
    with ``seed``). shots: fit the probes on that many labelled examples per class (a seeded low-shot probe; the
    test split is still scored whole). prototypes_per_class: J of the prototypical probe. Returns ``{method: {"pretrained": accuracy, "random": accuracy}}`` ("random" only with the
    baseline) and writes it as JSON to ``output`` when given. progress: show progress bars (the CLI does).
    """
    methods = check_methods(methods)
    if baseline not in (None, *BASELINES):
        raise ValueError(f"baseline must be None or one of {BASELINES}, got {baseline!r}")
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if shots is not None and shots < 1:
        raise ValueError(f"shots must be >= 1 or None, got {shots}")
    if prototypes_per_class < 1:
        raise ValueError(f"prototypes_per_class must be >= 1, got {prototypes_per_class}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    encoder, processor = _load_encoder(model_dir_or_model, processor)
    (train_pixels, train_y), test = labelled_inputs(dataset, train_split, processor), labelled_inputs(dataset, test_split, processor)
    if shots is not None:
        keep = few_shot_indices(train_y, shots, seed)
        train_pixels, train_y = train_pixels[keep], train_y[keep]
    data = ((train_pixels, train_y), test)
    num_classes = int(max(data[0][1].max(), data[1][1].max())) + 1

    encoders = {"pretrained": encoder}
    if baseline == "random":
        encoders["random"] = random_encoder(encoder, seed)
    results = {method: {} for method in methods}
    for kind, model in encoders.items():
        was_training = model.training
        for method, accuracy in _run_probes(model, methods, data, num_classes, pooling, batch_size, seed,
                                            prototypes_per_class, kind, progress, processor).items():
            results[method][kind] = accuracy
        model.train(was_training)
    if output is not None:
        write_json(results, output)
    return results


def write_json(results: dict, path) -> None:
    """Writes ``results`` to ``path`` through a temporary file, so a failure never leaves half a file."""
    files.write_json(path, results)


def format_table(results: dict) -> str:
    """A small text table: one row per method, one column per encoder."""
    kinds = list(dict.fromkeys(kind for row in results.values() for kind in row))
    lines = [f"{'method':<13}" + "".join(f"{kind:>12}" for kind in kinds)]
    for method, row in results.items():
        lines.append(f"{method:<13}" + "".join(f"{row[kind]:>12.4f}" for kind in kinds))
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .arguments import positive_int

    parser.add_argument("model_dir", help="a folder saved by hf-mae pretrain (or save_pretrained), or a Hub id")
    parser.add_argument("--dataset", default="digits", help="digits, a local image folder, or a Hugging Face dataset id")
    parser.add_argument("--method", nargs="+", default=["linear"], choices=[*METHODS, "all"], help="one or more, or all")
    parser.add_argument("--baseline", choices=BASELINES, default=None, help="also probe a random-init encoder")
    parser.add_argument("--pooling", choices=POOLINGS, default="mean",
                        help="features for linear and kNN (time: mean over the token rows, columns kept: per band)")
    parser.add_argument("--batch-size", type=positive_int, default=256, help="feature-extraction batch size")
    parser.add_argument("--train-split", default="train", help="the split the probes are fitted on")
    parser.add_argument("--test-split", default="test", help="the split the probes are scored on")
    parser.add_argument("--shots", type=positive_int, default=None, help="fit on N labelled examples per class (low-shot)")
    parser.add_argument("--prototypes-per-class", type=positive_int, default=20,
                        help="J of the prototypical probe (Bird-MAE: 20)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the probes and the random baseline")
    parser.add_argument("--output", default=None, help="write the results as JSON here")


def run(args) -> int:
    from .arguments import check_model_path

    check_model_path(args.model_dir, "model_dir")  # named as on the command line
    results = probe(
        args.model_dir, args.dataset, args.method, args.baseline, pooling=args.pooling, batch_size=args.batch_size,
        seed=args.seed, shots=args.shots, train_split=args.train_split, test_split=args.test_split,
        prototypes_per_class=args.prototypes_per_class, output=args.output, progress=True,
    )
    print(format_table(results))
    if args.output:
        print(f"results written to {args.output}")
    return 0
