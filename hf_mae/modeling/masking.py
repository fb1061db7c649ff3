"""Mask generators: one interface, seeded, batch-friendly.

Convention (as in MAE): ``mask`` is (batch, num_tokens) with 1 where a token is *removed* (hidden from the
encoder). A generator returns a :class:`TokenMask` that also carries the shuffle that puts the kept tokens first
(``ids_keep``) and its inverse (``ids_restore``), which is what encoders and decoders need to gather and unshuffle.

Remote-code rule: this file imports only the standard library and torch (see DESIGN.md).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch


@dataclass
class TokenMask:
    """ids_keep: (batch, kept) token indices the encoder sees, in the order it sees them.
    ids_restore: (batch, num_tokens) inverse permutation: position i of the restored sequence comes from slot
    ids_restore[i] of ``[kept tokens, removed tokens]``.
    mask: (batch, num_tokens) float, 1 = removed, in the original token order."""

    ids_keep: torch.Tensor
    ids_restore: torch.Tensor
    mask: torch.Tensor


def num_kept(num_tokens: int, mask_ratio: float) -> int:
    """How many tokens stay visible; MAE's rounding (``int(L * (1 - r))``)."""
    return int(num_tokens * (1 - mask_ratio))


def check_mask_ratio(mask_ratio) -> float:
    if isinstance(mask_ratio, bool) or not isinstance(mask_ratio, (int, float)):
        raise TypeError(f"mask_ratio must be a float in [0, 1), got {mask_ratio!r}")
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    return float(mask_ratio)


def feature_mask_ratio(mask_ratio, config, *fixed_masks) -> float:
    """The mask ratio of a base model's (``<Method>Model``) forward.

    ``mask_ratio`` when given; else ``config.mask_ratio`` when an input (``noise``, ``bool_masked_pos``) fixes a
    mask, and 0.0 otherwise: a plain call to a base model (``AutoModel``, feature-extraction pipelines, export) gives
    features of every token, in order, the same on every call. ``<Method>ForPreTraining`` passes
    ``config.mask_ratio`` down explicitly, so pre-training masks as configured.
    """
    if mask_ratio is None:
        mask_ratio = config.mask_ratio if any(fixed is not None for fixed in fixed_masks) else 0.0
    return check_mask_ratio(mask_ratio)


def mask_from_noise(noise: torch.Tensor, mask_ratio: float) -> TokenMask:
    """Keeps, per sample, the ``int(L * (1 - mask_ratio))`` tokens with the smallest noise (argsort ascending).

    This is exactly the rule of MAE and transformers' ViTMAE, so the same ``noise`` gives the same mask in both.
    """
    return mask_keeping_lowest(noise, num_kept(noise.shape[1], mask_ratio))


def mask_keeping_lowest(noise: torch.Tensor, keep: int) -> TokenMask:
    """Keeps, per sample, the ``keep`` tokens with the smallest noise (argsort ascending), in that order: MAE's rule
    with a count instead of a ratio (MultiMAE's visible budget is a number of tokens)."""
    batch, num_tokens = noise.shape
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch, num_tokens, device=noise.device)
    mask[:, :keep] = 0
    return TokenMask(ids_shuffle[:, :keep], ids_restore, torch.gather(mask, 1, ids_restore))


def check_tensor_condition(condition: torch.Tensor, message: str, details=None) -> None:
    """ValueError(message + details()) unless the 0-d bool tensor ``condition`` holds.

    Under ``torch.export`` / ``torch.compile`` the value is data the tracer cannot read, so the check becomes a
    runtime assertion of the graph (``torch._check``, with ``message`` alone: ``details`` may read tensors) instead
    of a Python ``bool`` that would break the trace."""
    if torch.compiler.is_compiling():
        torch._check(condition.item(), lambda: message)
    elif not bool(condition):
        raise ValueError(message + (details() if details is not None else ""))


def data_dependent_count(count: torch.Tensor, upper: int) -> int:
    """``int(count)`` of a 0-d integer tensor in [0, upper]; a symbolic size under ``torch.export`` /
    ``torch.compile`` (hinted to be > 1, so attention kernels need not specialise on a 1-token sequence)."""
    if not torch.compiler.is_compiling():
        return int(count)
    count = count.item()
    torch._check(count >= 0)
    torch._check(count <= upper)
    torch._check(count > 1)
    return count


def mask_from_bool(mask: torch.Tensor) -> TokenMask:
    """The TokenMask of a given mask (batch, num_tokens), True / 1 = removed, keeping the visible tokens in their
    original order (``ids_keep``), then the removed ones (``ids_restore`` undoes that). Every row must remove the
    same number of tokens (a batch is one tensor)."""
    mask = mask.float()
    ids_shuffle = torch.argsort(mask, dim=1, stable=True)  # visible tokens first, each group in order
    kept = 0
    if mask.shape[0]:
        removed = mask.sum(dim=1)
        check_tensor_condition(
            (removed == removed[0]).all(),
            "every sample must mask the same number of tokens",
            lambda: f", got {removed.long().tolist()}",
        )
        kept = data_dependent_count((mask[0] == 0).sum(), mask.shape[1])
    return TokenMask(ids_shuffle[:, :kept], torch.argsort(ids_shuffle, dim=1), mask)


def keep_all(batch: int, num_tokens: int, device=None) -> TokenMask:
    """No masking: every token kept, in its original order (for feature extraction and fine-tuning)."""
    order = torch.arange(num_tokens, device=device).expand(batch, num_tokens)
    return TokenMask(order, order, torch.zeros(batch, num_tokens, device=device))


class MaskGenerator:
    """Base class. Subclasses implement :meth:`noise`; lower noise = kept first.

    ``generator`` (a ``torch.Generator``) makes masks reproducible without touching the global RNG.
    """

    name = "base"

    def noise(self, batch: int, num_tokens: int, grid_size=None, device=None, generator=None) -> torch.Tensor:
        raise NotImplementedError

    def __call__(
        self, batch: int, num_tokens: int, mask_ratio: float, grid_size=None, device=None, generator=None
    ) -> TokenMask:
        mask_ratio = check_mask_ratio(mask_ratio)
        if mask_ratio == 0.0:
            return keep_all(batch, num_tokens, device)
        return mask_from_noise(self.noise(batch, num_tokens, grid_size, device, generator), mask_ratio)


class RandomMaskGenerator(MaskGenerator):
    """MAE's per-sample uniform random masking."""

    name = "random"

    def noise(self, batch, num_tokens, grid_size=None, device=None, generator=None):
        if generator is not None:  # a generator lives on one device; draw there and move
            return torch.rand(batch, num_tokens, generator=generator, device=generator.device).to(device)
        return torch.rand(batch, num_tokens, device=device)


MASK_GENERATORS = {RandomMaskGenerator.name: RandomMaskGenerator}


def build_mask_generator(name: str, **kwargs) -> MaskGenerator:
    if name not in MASK_GENERATORS:
        raise ValueError(f"mask_generator {name!r} is unknown; choose one of {sorted(MASK_GENERATORS)}")
    return MASK_GENERATORS[name](**kwargs)


def gather_tokens(tokens: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """tokens (batch, n, dim), ids (batch, k) -> (batch, k, dim)."""
    return torch.gather(tokens, 1, ids.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def restore_tokens(visible: torch.Tensor, mask_token: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
    """Appends mask tokens to the visible ones (batch, kept, dim) and unshuffles to (batch, num_tokens, dim)."""
    batch, kept, dim = visible.shape
    fill = mask_token.to(visible.dtype).expand(batch, ids_restore.shape[1] - kept, dim)
    return gather_tokens(torch.cat([visible, fill], dim=1), ids_restore)


# Radial pass-bands of the colour-noise filters, in units of the Nyquist frequency (0.5 cycles per patch), so
# rho runs from 0 (constant) to sqrt(2) (the checkerboard diagonal). Each colour keeps the frequencies in its bands,
# each band half-open: [low, high).
NOISE_COLOR_BANDS = {
    "white": ((0.0, math.inf),),  # no filtering: i.i.d. values, i.e. MAE's random masking
    "red": ((0.0, 1 / 3),),  # low-pass: large blobs of kept patches
    "green": ((1 / 3, 2 / 3),),  # band-pass: blobs of a few patches, evenly spread (the paper's default)
    "blue": ((2 / 3, math.inf),),  # high-pass: kept patches isolated and spread out
    "purple": ((0.0, 1 / 3), (2 / 3, math.inf)),  # band-stop: green's complement
}


def radial_frequency(shape, device=None) -> torch.Tensor:
    """|f| / Nyquist of every bin of ``torch.fft.rfft2`` on a (rows, cols) signal: (rows, cols // 2 + 1)."""
    rows, cols = shape
    fy = torch.fft.fftfreq(rows, device=device)[:, None]
    fx = torch.fft.rfftfreq(cols, device=device)[None, :]
    return torch.sqrt(fy**2 + fx**2) / 0.5


class ColorNoiseMaskGenerator(MaskGenerator):
    """ColorMAE's data-independent masks (Hinojosa et al., ECCV 2024): keep the patches where a coloured-noise
    pattern is largest, so the kept patches inherit the pattern's spatial-frequency character.

    For each sample: white Gaussian noise on a canvas ``canvas_factor`` times the patch grid is filtered in the
    Fourier domain with the colour's radial pass-band (``NOISE_COLOR_BANDS``) and standardised; a random
    grid-sized window is cropped from it and flipped horizontally / vertically with probability 1/2; the
    ``int(L * (1 - mask_ratio))`` largest values are kept. Cropping from a larger canvas removes the wrap-around
    that FFT filtering imposes on the canvas edges.

    Differences from the official code, which loads precomputed pattern banks (``noise_colors/<colour>/*.npz``,
    not released with a generator): patterns are drawn fresh for every sample (no finite bank, no cycling through
    it in order), the crop and flips are drawn per sample (torchvision's transforms there draw one crop and one
    flip for the whole bank), and the filters are the ideal radial bands above, whose cut-offs are our choice
    (the paper's filter design is not in its code). The per-pattern normalisation does not change which values are
    largest, so it has no effect on the mask.
    """

    name = "color_noise"

    def __init__(self, color: str = "green", canvas_factor: int = 4):
        if color not in NOISE_COLOR_BANDS:
            raise ValueError(f"noise color {color!r} is unknown; choose one of {sorted(NOISE_COLOR_BANDS)}")
        if isinstance(canvas_factor, bool) or not isinstance(canvas_factor, int) or canvas_factor < 1:
            raise ValueError(f"canvas_factor must be an int >= 1, got {canvas_factor!r}")
        self.color = color
        self.canvas_factor = canvas_factor

    def patterns(self, batch: int, grid_size, device=None, generator=None) -> torch.Tensor:
        """Cropped, flipped noise patterns (batch, rows, cols); the mask keeps the largest values of each."""
        rows, cols = grid_size
        draw_on = generator.device if generator is not None else device
        # at least 16 per side, so that each band holds some frequency bins even for tiny grids
        canvas = (max(rows * self.canvas_factor, 16), max(cols * self.canvas_factor, 16))
        noise = torch.randn(batch, *canvas, generator=generator, device=draw_on)
        if self.color != "white":
            rho = radial_frequency(canvas, draw_on)
            passband = torch.zeros_like(rho, dtype=torch.bool)
            for low, high in NOISE_COLOR_BANDS[self.color]:
                passband |= (rho >= low) & (rho < high)
            noise = torch.fft.irfft2(torch.fft.rfft2(noise) * passband, s=canvas)
        mean, std = noise.mean(dim=(1, 2), keepdim=True), noise.std(dim=(1, 2), keepdim=True)
        noise = (noise - mean) / (std + 1e-12)

        # per-sample crop offsets and flips, applied as one gather
        top = torch.randint(0, canvas[0] - rows + 1, (batch, 1), generator=generator, device=draw_on)
        left = torch.randint(0, canvas[1] - cols + 1, (batch, 1), generator=generator, device=draw_on)
        flip = torch.rand(batch, 2, generator=generator, device=draw_on) < 0.5
        row_steps, col_steps = torch.arange(rows, device=draw_on), torch.arange(cols, device=draw_on)
        row_ids = top + torch.where(flip[:, :1], rows - 1 - row_steps, row_steps)  # (batch, rows)
        col_ids = left + torch.where(flip[:, 1:], cols - 1 - col_steps, col_steps)  # (batch, cols)
        samples = torch.arange(batch, device=draw_on)[:, None, None]
        return noise[samples, row_ids[:, :, None], col_ids[:, None, :]].to(device)

    def noise(self, batch, num_tokens, grid_size=None, device=None, generator=None):
        if grid_size is None:
            side = math.isqrt(num_tokens)
            if side * side != num_tokens:
                raise ValueError(f"grid_size is required for a non-square number of tokens ({num_tokens})")
            grid_size = (side, side)
        rows, cols = grid_size
        if rows * cols != num_tokens:
            raise ValueError(f"grid_size {tuple(grid_size)} does not hold num_tokens={num_tokens} tokens")
        # the largest pattern values are kept first, and lower noise is kept first
        return -self.patterns(batch, (rows, cols), device, generator).reshape(batch, num_tokens)


MASK_GENERATORS[ColorNoiseMaskGenerator.name] = ColorNoiseMaskGenerator


def upsample_grid_mask(unit_mask: torch.Tensor, unit_grid, scale: int) -> torch.Tensor:
    """(batch, unit_rows*unit_cols) -> (batch, unit_rows*scale * unit_cols*scale): each unit covers scale x scale
    tokens (row-major in both)."""
    rows, cols = unit_grid
    grid = unit_mask.reshape(-1, rows, cols).repeat_interleave(scale, 1).repeat_interleave(scale, 2)
    return grid.reshape(unit_mask.shape[0], -1)


class GroupedRandomMaskGenerator(MaskGenerator):
    """SimMIM's masking: uniform random over ``unit x unit`` groups of tokens (32-px cells of 16-px patches: unit 2).

    ``ceil(units * mask_ratio)`` whole units are hidden per sample (the same count as ``mask_from_noise`` keeps);
    the noise is drawn per unit, shape (batch, units). The returned :class:`TokenMask` keeps the visible tokens in
    their original order, so a token-dropping encoder (MAE) can use it too.
    """

    name = "grouped_random"

    def __init__(self, unit: int = 1):
        if isinstance(unit, bool) or not isinstance(unit, int) or unit < 1:
            raise ValueError(f"unit must be an int >= 1 (tokens per mask-unit side), got {unit!r}")
        self.unit = unit

    def unit_grid(self, grid_size) -> tuple[int, int]:
        """The (rows, cols) grid of mask units over a token grid; ValueError if the units do not tile it."""
        rows, cols = grid_size
        if rows % self.unit or cols % self.unit:
            raise ValueError(
                f"the patch grid {rows}x{cols} is not divisible by the mask unit of {self.unit}x{self.unit} patches; "
                "choose an image size that is a multiple of mask_patch_size"
            )
        return rows // self.unit, cols // self.unit

    def noise(self, batch, num_tokens, grid_size=None, device=None, generator=None):
        rows, cols = self.unit_grid(grid_size)
        return RandomMaskGenerator().noise(batch, rows * cols, None, device, generator)

    def from_noise(self, noise: torch.Tensor, mask_ratio: float, grid_size) -> TokenMask:
        """noise: (batch, units); the units with the smallest noise stay visible (as :func:`mask_from_noise`)."""
        unit_grid = self.unit_grid(grid_size)
        if noise.ndim != 2 or noise.shape[1] != unit_grid[0] * unit_grid[1]:
            raise ValueError(
                f"noise must have shape (batch, num_mask_units) = (batch, {unit_grid[0] * unit_grid[1]}), "
                f"got {tuple(noise.shape)}"
            )
        return mask_from_bool(upsample_grid_mask(mask_from_noise(noise, mask_ratio).mask, unit_grid, self.unit))

    def __call__(self, batch, num_tokens, mask_ratio, grid_size=None, device=None, generator=None) -> TokenMask:
        mask_ratio = check_mask_ratio(mask_ratio)
        if mask_ratio == 0.0:
            return keep_all(batch, num_tokens, device)
        return self.from_noise(self.noise(batch, num_tokens, grid_size, device, generator), mask_ratio, grid_size)


MASK_GENERATORS[GroupedRandomMaskGenerator.name] = GroupedRandomMaskGenerator


class TubeMaskGenerator(MaskGenerator):
    """VideoMAE's tube masking: one random spatial mask per clip, repeated in every time slice of a
    (slices, rows, cols) token grid, so that no hidden patch can be copied from the same place in another frame.
    Kept tokens stay in their original (time, row, column) order."""

    name = "tube"

    def noise(self, batch, num_tokens, grid_size=None, device=None, generator=None):
        _, rows, cols = grid_size
        return RandomMaskGenerator().noise(batch, rows * cols, None, device, generator)

    def from_noise(self, noise: torch.Tensor, mask_ratio: float, grid_size) -> TokenMask:
        """noise: (batch, rows * cols); the ``int(rows * cols * (1 - mask_ratio))`` smallest stay visible."""
        slices, rows, cols = grid_size
        if noise.ndim != 2 or noise.shape[1] != rows * cols:
            raise ValueError(f"noise must have shape (batch, rows * cols) = (batch, {rows * cols}), got {tuple(noise.shape)}")
        if num_kept(rows * cols, mask_ratio) == 0:  # no cls token: the encoder would get no token at all
            raise ValueError(
                f"mask_ratio {mask_ratio} keeps none of the {rows}x{cols} spatial positions; lower it or use more patches"
            )
        return mask_from_bool(mask_from_noise(noise, mask_ratio).mask.repeat(1, slices))

    def __call__(self, batch, num_tokens, mask_ratio, grid_size=None, device=None, generator=None) -> TokenMask:
        mask_ratio = check_mask_ratio(mask_ratio)
        if mask_ratio == 0.0:
            return keep_all(batch, num_tokens, device)
        return self.from_noise(self.noise(batch, num_tokens, grid_size, device, generator), mask_ratio, grid_size)


MASK_GENERATORS[TubeMaskGenerator.name] = TubeMaskGenerator


def running_cell_mask(grid_size, mask_ratio: float, start: int) -> torch.Tensor:
    """VideoMAE V2's running-cell decoder mask over a (slices, rows, cols) grid -> (slices * rows * cols,) float,
    1 = not decoded.

    A 2x2 cell hides ``int(4 * mask_ratio)`` of its 4 positions: the cell's pattern is the queue
    ``[1] * hidden + [0] * (4 - hidden)`` read from an offset that moves one step per time slice ("running"), starting
    at ``start + 1`` in slice 0; the cell is tiled over the grid. Every slice hides the same share, and over 4
    slices every position is decoded the same number of times.
    """
    slices, rows, cols = grid_size
    hidden = int(4 * mask_ratio)
    if not 0 < hidden < 4:
        raise ValueError(f"running-cell masking hides int(4 * mask_ratio) of 4 cell positions; mask_ratio {mask_ratio} "
                         "hides none or all (allowed: 0.25 <= mask_ratio < 1)")
    if rows % 2 or cols % 2:
        raise ValueError(f"running-cell masking tiles 2x2 cells: the token grid {rows}x{cols} must have even sides")
    queue = torch.tensor([1.0] * hidden + [0.0] * (4 - hidden))
    offsets = torch.arange(slices)[:, None] + start + 1  # the official Cell runs (ptr += 1) before each slice
    cells = queue[(torch.arange(4)[None, :] + offsets) % 4].reshape(slices, 2, 2)
    return cells.repeat(1, rows // 2, cols // 2).flatten()


class RunningCellMaskGenerator(MaskGenerator):
    """VideoMAE V2's decoder masking: a running-cell pattern (:func:`running_cell_mask`) with a random start per clip
    (the only randomness: one of 4 starts)."""

    name = "running_cell"

    def from_starts(self, starts: torch.Tensor, mask_ratio: float, grid_size) -> TokenMask:
        """starts: (batch,) ints in 0..3, the running cell's start per clip."""
        patterns = torch.stack([running_cell_mask(grid_size, mask_ratio, start) for start in range(4)])
        return mask_from_bool(patterns.to(starts.device)[starts.long()])

    def __call__(self, batch, num_tokens, mask_ratio, grid_size=None, device=None, generator=None) -> TokenMask:
        mask_ratio = check_mask_ratio(mask_ratio)
        if mask_ratio == 0.0:
            return keep_all(batch, num_tokens, device)
        if generator is not None:
            starts = torch.randint(0, 4, (batch,), generator=generator, device=generator.device).to(device)
        else:
            starts = torch.randint(0, 4, (batch,), device=device)
        return self.from_starts(starts, mask_ratio, grid_size)


MASK_GENERATORS[RunningCellMaskGenerator.name] = RunningCellMaskGenerator


def step_seeded_positions(length: int, mask_ratio: float, seed: int, device=None) -> torch.Tensor:
    """MEAP's pre-training mask: the same positions for every sequence of a batch, drawn from the batch's seed.

    Returns the sorted (num_masked,) long positions, ``num_masked = max(1, int(length * mask_ratio))`` distinct
    positions drawn uniformly from ``[0, length - 1)`` (the last input position is never drawn) by a CPU
    ``torch.Generator`` seeded with ``seed``, so a seed (MEAP: one derived from the optimiser step) fixes them on every
    process. ``mask_ratio`` 0 or a sequence of fewer than 2 tokens gives no positions.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ValueError(f"length must be an int >= 0 (tokens per sequence), got {length!r}")
    mask_ratio = check_mask_ratio(mask_ratio)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if mask_ratio == 0.0 or length < 2:
        return torch.zeros(0, dtype=torch.long, device=device)
    count = max(1, int(length * mask_ratio))  # < length, so at most length - 1: the range always holds them
    generator = torch.Generator().manual_seed(seed)
    drawn = torch.randperm(length - 1, generator=generator)[:count]
    return drawn.sort().values.to(device)


def order_to_noise(order: torch.Tensor) -> torch.Tensor:
    """The noise (batch, num_tokens) whose ascending argsort is ``order`` (batch, num_tokens), a permutation per row:
    token ``order[b, k]`` gets noise ``k``. Passed as ``noise=`` to an encoder (MAE's), it makes the encoder keep the
    first ``int(L * (1 - r))`` tokens of ``order``, in that order (:func:`mask_from_noise`)."""
    ranks = torch.arange(order.shape[1], device=order.device, dtype=torch.float32).expand(order.shape)
    return torch.empty(order.shape, device=order.device).scatter_(1, order, ranks)


def score_guided_order(scores: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A draw of every token without replacement, each draw with probability proportional to ``scores`` (batch,
    num_tokens) among the tokens not drawn yet (``torch.multinomial(scores, L, replacement=False)``): high-score
    tokens tend to come first. Returns the order (batch, num_tokens).

    Scores must be >= 0 (attention weights); zeros (underflow in half precision) are lifted to 1e-12 of the row's
    sum, so that every token can be drawn and the draw never fails for lack of non-zero categories."""
    scores = scores.detach().float()
    if scores.ndim != 2:
        raise ValueError(f"scores must be (batch, num_tokens), got shape {tuple(scores.shape)}")
    if not torch.compiler.is_compiling() and bool((scores < 0).any() | ~torch.isfinite(scores).all()):
        raise ValueError("scores must be finite and >= 0 (e.g. attention weights)")
    floor = scores.sum(dim=1, keepdim=True).clamp_min(1e-30) * 1e-12
    scores = torch.maximum(scores, floor)
    if generator is not None:
        return torch.multinomial(scores.to(generator.device), scores.shape[1], replacement=False,
                                 generator=generator).to(scores.device)  # fmt: skip
    return torch.multinomial(scores, scores.shape[1], replacement=False)


def score_guided_mask(scores: torch.Tensor, mask_ratio: float, generator: torch.Generator | None = None) -> TokenMask:
    """MaskAlign's (and AttMask-style) attention-guided masking: the first ``int(L * (1 - mask_ratio))`` tokens of a
    :func:`score_guided_order` draw stay visible, in the order drawn; the rest are removed."""
    mask_ratio = check_mask_ratio(mask_ratio)
    return mask_from_noise(order_to_noise(score_guided_order(scores, generator)), mask_ratio)


def keep_top_scores(ids: torch.Tensor, scores: torch.Tensor, keep: int) -> torch.Tensor:
    """Of the tokens ``ids`` (batch, k) an encoder currently holds, the ``keep`` with the highest ``scores`` (batch,
    num_tokens, indexed by token id), in their current order: progressive token dropping (EViT-style, Hybrid
    Distill's redundant-token masking). Returns the positions into ``ids`` (batch, keep), ascending."""
    if not 1 <= keep <= ids.shape[1]:
        raise ValueError(f"keep must be in [1, {ids.shape[1]}] (the tokens held), got {keep}")
    held = torch.gather(scores, 1, ids)
    return held.topk(keep, dim=1).indices.sort(dim=1).values


def _place_block(grid: list[list[bool]], remaining: int, min_patches: int, log_aspect, rng: random.Random) -> int:
    """One round of BEiT's block masking on ``grid`` (rows of bools, True = masked), in place: up to 10 attempts to
    place a rectangle of random area in [min_patches, remaining] and log-uniform aspect ratio that adds between 1
    and ``remaining`` new patches. Returns the number of patches it newly masked (0 if every attempt failed)."""
    rows, cols = len(grid), len(grid[0])
    for _ in range(10):
        area = rng.uniform(min_patches, remaining)  # remaining < min_patches: an area between the two, as BEiT
        aspect = math.exp(rng.uniform(*log_aspect))
        height, width = int(round(math.sqrt(area * aspect))), int(round(math.sqrt(area / aspect)))
        if width >= cols or height >= rows:  # BEiT's strict bound: a block never spans the grid
            continue
        top, left = rng.randint(0, rows - height), rng.randint(0, cols - width)
        new = [(i, j) for i in range(top, top + height) for j in range(left, left + width) if not grid[i][j]]
        if 0 < len(new) <= remaining:
            for i, j in new:
                grid[i][j] = True
            return len(new)
    return 0


def block_mask(grid_size, num_masked: int, rng: random.Random, min_patches: int = 16, max_patches: int | None = None,
               min_aspect: float = 0.3, max_aspect: float | None = None, max_failed_rounds: int = 10) -> torch.Tensor:
    """BEiT's block-wise mask of one sample over a (rows, cols) grid -> (rows * cols,) bool, True = masked, exactly
    ``num_masked`` True.

    Rectangles of random area in [min_patches, min(remaining, max_patches)] and aspect ratio log-uniform in
    [min_aspect, max_aspect (default 1 / min_aspect)] are placed at random; only newly masked patches count, and a
    rectangle is accepted only if it adds at most the remaining count, so the mask never overshoots. BEiT stops at
    the first round of 10 failed attempts (and may fall short); CAE's copy retries until the count is exact (and
    may loop for long). hf-mae's choice, so that every sample of a batch hides the same number of tokens in bounded
    time: retry until ``max_failed_rounds`` consecutive rounds fail, then top up one patch at a time with a random
    unmasked 4-neighbour of the mask (any unmasked patch if the mask has no free neighbour), which grows the blocks
    instead of scattering single patches.
    """
    rows, cols = grid_size
    if not 0 <= num_masked <= rows * cols:
        raise ValueError(f"num_masked must be in [0, {rows * cols}] for a {rows}x{cols} grid, got {num_masked}")
    max_patches = num_masked if max_patches is None else max_patches
    max_aspect = 1.0 / min_aspect if max_aspect is None else max_aspect
    log_aspect = (math.log(min_aspect), math.log(max_aspect))
    grid = [[False] * cols for _ in range(rows)]
    count, failed = 0, 0
    while count < num_masked and failed < max_failed_rounds:
        added = _place_block(grid, min(num_masked - count, max_patches), min_patches, log_aspect, rng)
        count += added
        failed = 0 if added else failed + 1
    while count < num_masked:  # top-up (rare at the paper's settings)
        free = [(i, j) for i in range(rows) for j in range(cols) if not grid[i][j]]
        frontier = [(i, j) for i, j in free if any(0 <= a < rows and 0 <= b < cols and grid[a][b]
                                                   for a, b in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)))]
        i, j = rng.choice(frontier or free)
        grid[i][j] = True
        count += 1
    return torch.tensor(grid, dtype=torch.bool).flatten()


class BlockMaskGenerator(MaskGenerator):
    """BEiT's block-wise masking (Bao et al., 2021; CAE, Chen et al., 2023): each sample hides
    ``L - int(L * (1 - mask_ratio))`` tokens (the count MAE's rounding hides) as random rectangles of at least
    ``min_patches`` patches, via :func:`block_mask` (which documents how the exact count is reached).

    Randomness: one seed per sample is drawn from torch's RNG (``generator`` when given) and drives a Python
    ``random.Random`` through BEiT's rejection loop, so masks are reproducible with a seeded generator. The mask is
    built on the CPU. The returned :class:`TokenMask` keeps the visible tokens in their original order.
    """

    name = "block"

    def __init__(self, min_patches: int = 16, max_patches: int | None = None, min_aspect: float = 0.3,
                 max_aspect: float | None = None):
        if isinstance(min_patches, bool) or not isinstance(min_patches, int) or min_patches < 1:
            raise ValueError(f"min_patches (per mask block) must be an int >= 1, got {min_patches!r}")
        if max_patches is not None and (isinstance(max_patches, bool) or not isinstance(max_patches, int)
                                        or max_patches < 1):
            raise ValueError(f"max_patches (per mask block) must be None or an int >= 1, got {max_patches!r}")
        if isinstance(min_aspect, bool) or not isinstance(min_aspect, (int, float)) or min_aspect <= 0:
            raise ValueError(f"min_aspect (of a mask block) must be a number > 0, got {min_aspect!r}")
        if max_aspect is not None and (isinstance(max_aspect, bool) or not isinstance(max_aspect, (int, float))
                                       or max_aspect < min_aspect):
            raise ValueError(f"max_aspect (of a mask block) must be None or a number >= min_aspect {min_aspect}, "
                             f"got {max_aspect!r}")
        self.min_patches, self.max_patches = min_patches, max_patches
        self.min_aspect, self.max_aspect = float(min_aspect), max_aspect

    def masks(self, batch: int, grid_size, num_masked: int, generator=None) -> torch.Tensor:
        """(batch, rows * cols) bool block masks, True = masked, each with exactly ``num_masked`` True (CPU)."""
        draw_on = generator.device if generator is not None else None
        seeds = torch.randint(0, 2**62, (batch,), generator=generator, device=draw_on).tolist()
        kwargs = dict(min_patches=self.min_patches, max_patches=self.max_patches, min_aspect=self.min_aspect,
                      max_aspect=self.max_aspect)
        return torch.stack([block_mask(grid_size, num_masked, random.Random(seed), **kwargs) for seed in seeds])

    def __call__(self, batch, num_tokens, mask_ratio, grid_size=None, device=None, generator=None) -> TokenMask:
        mask_ratio = check_mask_ratio(mask_ratio)
        if mask_ratio == 0.0:
            return keep_all(batch, num_tokens, device)
        if grid_size is None:
            side = math.isqrt(num_tokens)
            if side * side != num_tokens:
                raise ValueError(f"grid_size is required for a non-square number of tokens ({num_tokens})")
            grid_size = (side, side)
        rows, cols = grid_size
        if rows * cols != num_tokens:
            raise ValueError(f"grid_size {tuple(grid_size)} does not hold num_tokens={num_tokens} tokens")
        num_masked = num_tokens - num_kept(num_tokens, mask_ratio)
        return mask_from_bool(self.masks(batch, (rows, cols), num_masked, generator).to(device))


MASK_GENERATORS[BlockMaskGenerator.name] = BlockMaskGenerator


# ---------------------------------------------------------------------------------------------------------------
# MultiMAE's visible budget across modalities (Bachmann et al., ECCV 2022; EPFL-VILAB/MultiMAE multimae.py)


def allocate_budget(proportions: torch.Tensor, total: int, capacities) -> torch.Tensor:
    """Splits ``total`` visible tokens across modalities in ``proportions`` with exact totals.

    proportions: (batch, M) non-negative, rows summing to 1 (a Dirichlet draw). capacities: M ints, the tokens each
    modality has; ``total`` must not exceed their sum. Largest-remainder (Hamilton) rounding: each modality first
    gets ``min(floor(p * total), capacity)``, then the tokens still to give go one at a time to the modality with the
    largest unmet share ``p * total - count`` that has room (ties: the first). Every row sums to ``total`` exactly and
    no modality exceeds its capacity. Returns (batch, M) long.

    The official ``generate_random_masks`` rounds each share and then keeps the first ``total`` tokens of an argsort
    of the rounded masks, which pads or trims the modalities arbitrarily when the rounded shares miss the total.
    """
    capacity = torch.as_tensor(list(capacities), dtype=torch.long, device=proportions.device)
    if proportions.dim() != 2 or proportions.shape[1] != capacity.numel():
        raise ValueError(f"proportions must be (batch, {capacity.numel()}), got {tuple(proportions.shape)}")
    if isinstance(total, bool) or not isinstance(total, int) or not 0 <= total <= int(capacity.sum()):
        raise ValueError(f"total must be an int in [0, {int(capacity.sum())}] (the tokens there are), got {total!r}")
    target = proportions.double() * total
    counts = torch.minimum(target.floor().long(), capacity)
    remaining = total - counts.sum(dim=1)
    rows = torch.arange(counts.shape[0], device=counts.device)
    while bool((remaining > 0).any()):
        unmet = (target - counts).masked_fill(counts >= capacity, -math.inf)
        give = (remaining > 0).long()
        counts[rows, unmet.argmax(dim=1)] += give
        remaining = remaining - give
    return counts


def dirichlet_proportions(batch: int, num_modalities: int, alpha: float = 1.0,
                          generator: torch.Generator | None = None) -> torch.Tensor:
    """(batch, num_modalities) float32 draws of Dirichlet(alpha, ..., alpha) (symmetric), on the CPU.

    With ``generator`` the draw is reproducible from it and torch's global RNG is left alone (the gamma sampler
    behind ``torch.distributions.Dirichlet`` takes no generator: a seed drawn from ``generator`` seeds a forked RNG)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ValueError(f"alpha (the Dirichlet concentration) must be a number > 0, got {alpha!r}")
    concentration = torch.full((num_modalities,), float(alpha))
    if generator is None:
        return torch.distributions.Dirichlet(concentration).sample((batch,))
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.distributions.Dirichlet(concentration).sample((batch,))


def budget_mask(noise: torch.Tensor, tokens_per_modality, budget: torch.Tensor) -> TokenMask:
    """The mask of a concatenation of modalities (``noise`` (batch, sum of tokens), modality after modality) that keeps
    exactly ``budget[b, m]`` tokens of modality ``m`` in sample ``b``: those with the smallest noise within the
    modality. The encoder sees the kept tokens in ascending noise (as :func:`mask_keeping_lowest`)."""
    sizes = [int(size) for size in tokens_per_modality]
    batch, num_tokens = noise.shape
    if num_tokens != sum(sizes):
        raise ValueError(f"noise must have shape (batch, {sum(sizes)}) (the tokens of every modality), got "
                         f"{tuple(noise.shape)}")
    if tuple(budget.shape) != (batch, len(sizes)):
        raise ValueError(f"budget must have shape (batch, modalities) = {(batch, len(sizes))}, got {tuple(budget.shape)}")
    keep = []
    for chunk, size, count in zip(noise.split(sizes, dim=1), sizes, budget.unbind(dim=1)):
        rank = chunk.argsort(dim=1).argsort(dim=1)  # each token's rank within its modality
        keep.append(rank < count.to(rank.device).unsqueeze(1))
    mask = 1.0 - torch.cat(keep, dim=1).float()
    kept = budget.sum(dim=1)
    check_tensor_condition((kept == kept[0]).all(), "budget rows must keep the same number of tokens in every sample",
                           lambda: f", got {kept.tolist()}")
    ids = noise.argsort(dim=1)  # ascending noise, then the kept tokens first (stable: noise order within each group)
    ids_shuffle = ids.gather(1, mask.gather(1, ids).argsort(dim=1, stable=True))
    count = data_dependent_count(kept[0], num_tokens) if batch else 0
    return TokenMask(ids_shuffle[:, :count], torch.argsort(ids_shuffle, dim=1), mask)


class DirichletBudgetMaskGenerator:
    """MultiMAE's masking over several modalities: per sample, the shares of a fixed visible budget are drawn from a
    symmetric Dirichlet(``alpha``) (α = 1: uniform over the simplex), split into exact token counts
    (:func:`allocate_budget`), and within each modality that many tokens are kept uniformly at random.

    ``__call__(batch, tokens_per_modality, num_visible, device, generator)`` returns ``(TokenMask, budget)``: the
    mask over the concatenated modalities (modality after modality) and the (batch, M) long counts. The draws come
    from ``generator`` when given (reproducible, the global RNG untouched), else from torch's global RNG.
    Departure (hf-mae's choice): exact largest-remainder totals instead of the official round-then-trim, and no
    ``sample_tasks_uniformly`` option (off in the official pre-training configs)."""

    name = "dirichlet_budget"

    def __init__(self, alpha: float = 1.0):
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
            raise ValueError(f"alpha (the Dirichlet concentration) must be a number > 0, got {alpha!r}")
        self.alpha = float(alpha)

    def __call__(self, batch: int, tokens_per_modality, num_visible: int, device=None,
                 generator: torch.Generator | None = None, budget: torch.Tensor | None = None):
        sizes = [int(size) for size in tokens_per_modality]
        if budget is None:
            proportions = dirichlet_proportions(batch, len(sizes), self.alpha, generator)
            budget = allocate_budget(proportions, num_visible, sizes)
        draw_on = generator.device if generator is not None else device
        noise = torch.rand(batch, sum(sizes), generator=generator, device=draw_on).to(device)
        budget = budget.to(device)
        return budget_mask(noise, sizes, budget), budget


# ---------------------------------------------------------------------------------------------------------------
# I-JEPA's multi-block masks (Assran et al., CVPR 2023; facebookresearch/ijepa src/masks/multiblock.py)


@dataclass
class MultiBlockMask:
    """The context and target blocks of a batch (I-JEPA, DMT-JEPA).

    context_ids: (batch, K) long, the patches the context encoder sees, ascending (raster order).
    target_ids: (batch, num_targets, M) long, the patches of each target block, ascending; every block of the batch
        has the same size M.
    num_tokens: N, the patches of the grid.
    """

    context_ids: torch.Tensor
    target_ids: torch.Tensor
    num_tokens: int

    @property
    def mask(self) -> torch.Tensor:
        """(batch, N) float, 1 = hidden from the context encoder (hf-mae's mask convention)."""
        return context_mask(self.context_ids, self.num_tokens)

    @property
    def target_mask(self) -> torch.Tensor:
        """(batch, N) float, 1 = inside at least one target block."""
        return target_mask(self.target_ids, self.num_tokens)


def context_mask(context_ids: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """(batch, K) context indices -> (batch, N) float mask, 1 = not in the context."""
    seen = torch.zeros(context_ids.shape[0], num_tokens, device=context_ids.device)
    return 1.0 - seen.scatter(1, context_ids, 1.0)


def target_mask(target_ids: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """(batch, T, M) target indices -> (batch, N) float mask, 1 = in at least one target block."""
    flat = target_ids.reshape(target_ids.shape[0], -1)
    return torch.zeros(flat.shape[0], num_tokens, device=flat.device).scatter(1, flat, 1.0)


def _check_range(name: str, value, upper: float | None) -> tuple[float, float]:
    """(low, high) with 0 < low <= high (<= upper when given); ValueError naming ``name`` otherwise."""
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if ok:
        low, high = float(value[0]), float(value[1])
        ok = 0.0 < low <= high and (upper is None or high <= upper)
    if not ok:
        bound = f" <= {upper}" if upper is not None else ""
        raise ValueError(f"{name} must be two numbers (low, high) with 0 < low <= high{bound}, got {value!r}")
    return low, high


def sample_block_size(grid_size, scale, aspect_ratio, generator=None) -> tuple[int, int]:
    """The (height, width) in patches of a block, as the official ``_sample_block_size``: ONE uniform draw ``u``
    sets both the area share ``scale[0] + u * (scale[1] - scale[0])`` (``int(rows * cols * share)`` patches) and the
    aspect ratio ``aspect[0] + u * (aspect[1] - aspect[0])`` (height / width); ``height = round(sqrt(area * ratio))``,
    ``width = round(sqrt(area / ratio))``, then shrunk until each is smaller than the grid's side (and at least 1)."""
    rows, cols = grid_size
    draw_on = generator.device if generator is not None else None
    u = torch.rand(1, generator=generator, device=draw_on).item()
    area = int(rows * cols * (scale[0] + u * (scale[1] - scale[0])))
    ratio = aspect_ratio[0] + u * (aspect_ratio[1] - aspect_ratio[0])
    height, width = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
    height, width = min(height, rows - 1), min(width, cols - 1)  # the official `while h >= height: h -= 1`
    return max(height, 1), max(width, 1)


def _place(grid_size, size, generator) -> torch.Tensor:
    """A (rows, cols) bool map with one block of ``size`` at a uniformly drawn top-left corner (anywhere it fits)."""
    (rows, cols), (height, width) = grid_size, size
    draw_on = generator.device if generator is not None else None
    top = int(torch.randint(0, rows - height + 1, (1,), generator=generator, device=draw_on))
    left = int(torch.randint(0, cols - width + 1, (1,), generator=generator, device=draw_on))
    block = torch.zeros(rows, cols, dtype=torch.bool)
    block[top:top + height, left:left + width] = True
    return block


class MultiBlockMaskGenerator:
    """I-JEPA's multi-block masking (DMT-JEPA uses it unchanged).

    Per batch (as the official collator): one target block size and one context block size
    (:func:`sample_block_size`; the context's aspect ratio is ``context_aspect_ratio``, (1, 1) officially). Per sample:
    ``num_targets`` target blocks placed independently (they may overlap each other), then one context block from
    which every target block is removed (``allow_overlap=False``), redrawn until it keeps more than ``min_keep``
    patches; after every 20 failed draws the constraint of the last remaining target block is dropped (the official
    ``tries``), so the loop ends. The context of every sample is then cut to the smallest context of the batch,
    keeping its first patches in raster order (the official ``cm[:min_keep_enc]``), so that the batch is one tensor.

    Departures, hf-mae's choice: a block's top-left corner is drawn from every position where the block fits
    (``randint(0, rows - h + 1)``; the official ``randint(0, rows - h)`` never puts a block on the last row or column);
    ``min_keep`` applies to the context only (the official loop also applies it to the unconstrained target blocks,
    where it can only pass at once or never end).

    Randomness: every draw comes from ``generator`` (a ``torch.Generator``) when given, else from torch's global RNG;
    the masks are built on the CPU and moved to ``device``.
    """

    name = "multiblock"

    def __init__(self, num_targets: int = 4, target_scale=(0.15, 0.2), target_aspect_ratio=(0.75, 1.5),
                 context_scale=(0.85, 1.0), context_aspect_ratio=(1.0, 1.0), min_keep: int = 10,
                 allow_overlap: bool = False):
        if isinstance(num_targets, bool) or not isinstance(num_targets, int) or num_targets < 1:
            raise ValueError(f"num_targets (target blocks) must be an int >= 1, got {num_targets!r}")
        if isinstance(min_keep, bool) or not isinstance(min_keep, int) or min_keep < 0:
            raise ValueError(f"min_keep (context patches) must be an int >= 0, got {min_keep!r}")
        self.num_targets, self.min_keep, self.allow_overlap = num_targets, min_keep, bool(allow_overlap)
        self.target_scale = _check_range("target_scale", target_scale, 1.0)
        self.target_aspect_ratio = _check_range("target_aspect_ratio", target_aspect_ratio, None)
        self.context_scale = _check_range("context_scale", context_scale, 1.0)
        self.context_aspect_ratio = _check_range("context_aspect_ratio", context_aspect_ratio, None)

    def __call__(self, batch: int, grid_size, device=None, generator=None) -> MultiBlockMask:
        rows, cols = grid_size
        if rows < 2 or cols < 2:
            raise ValueError(f"multi-block masking needs a patch grid of at least 2x2, got {rows}x{cols}")
        target_size = sample_block_size(grid_size, self.target_scale, self.target_aspect_ratio, generator)
        context_size = sample_block_size(grid_size, self.context_scale, self.context_aspect_ratio, generator)
        if context_size[0] * context_size[1] <= self.min_keep:
            raise ValueError(
                f"min_keep {self.min_keep}: the context block ({context_size[0]}x{context_size[1]} patches of a "
                f"{rows}x{cols} grid) can never keep more than min_keep patches; lower min_keep or use more patches"
            )
        contexts, targets = [], []
        for _ in range(batch):
            blocks = [_place(grid_size, target_size, generator) for _ in range(self.num_targets)]
            dropped, failures = 0, 0  # dropped: target constraints given up (the official `tries`)
            while True:
                context = _place(grid_size, context_size, generator)
                if not self.allow_overlap:
                    for block in blocks[: max(self.num_targets - dropped, 0)]:
                        context &= ~block
                if int(context.sum()) > self.min_keep:
                    break
                failures += 1
                if failures == 20:
                    dropped, failures = dropped + 1, 0
            contexts.append(context.flatten().nonzero().squeeze(1))
            targets.append(torch.stack([block.flatten().nonzero().squeeze(1) for block in blocks]))
        kept = min(len(ids) for ids in contexts) if contexts else 0
        context_ids = torch.stack([ids[:kept] for ids in contexts]) if contexts else torch.zeros(0, 0, dtype=torch.long)
        target_ids = (torch.stack(targets) if targets
                      else torch.zeros(0, self.num_targets, target_size[0] * target_size[1], dtype=torch.long))
        return MultiBlockMask(context_ids.to(device), target_ids.to(device), rows * cols)


# ---------------------------------------------------------------------------------------------------------------
# Text: whole-word masks (RetroMAE, DupMAE, Starbucks) and BERT's 80/10/10 corruption


def whole_word_masks(word_ids: torch.Tensor, ratios, generator: torch.Generator | None = None,
                     noise: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Nested whole-word masks, one per ratio, from ONE random ranking of the words of each sequence.

    word_ids: (batch, L) long, the word each token belongs to (0, 1, ... in any order; the sub-word pieces of a word
        share its id) and -1 for special and padding tokens, which are never masked.
    ratios: a float or a sequence of floats in [0, 1]; ratio r masks the first words of the ranking until r of the
        sequence's ordinary tokens are covered: of the prefixes of the ranking, the one whose token count is closest
        to r * (ordinary tokens) (ties: the shorter; at least one word when r > 0). A larger ratio takes a longer
        prefix of the same ranking, so the masks are nested: ratio 0.2 is a subset of ratio 0.4 (Starbucks).
        hf-mae's choice: transformers' ``DataCollatorForWholeWordMask`` (RetroMAE's collator) instead skips a word
        that would overshoot and tries the next one, which is not nested across ratios.
    generator / noise: the ranking is ``argsort`` of one uniform draw per word, from ``generator``, or read from
        ``noise`` (batch, L): a word's draw is the noise at its first token (a fixed noise fixes the masks).
    Returns a list of bool (batch, L) masks, True = masked, in the order of ``ratios``.
    """
    single = isinstance(ratios, (int, float)) and not isinstance(ratios, bool)
    ratios = [ratios] if single else list(ratios)
    for ratio in ratios:
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
            raise ValueError(f"ratios must be numbers in [0, 1], got {ratio!r}")
    if not isinstance(word_ids, torch.Tensor) or word_ids.dim() != 2 or word_ids.dtype.is_floating_point:
        raise ValueError(f"word_ids must be a (batch, L) integer tensor, got {getattr(word_ids, 'shape', word_ids)!r}")
    batch, length = word_ids.shape
    ordinary = word_ids >= 0
    num_words = int(word_ids.max().item()) + 1 if word_ids.numel() else 0
    num_words = max(num_words, 1)
    ids = word_ids.clamp(min=0)
    # tokens per word (batch, W); words that do not occur count 0
    counts = torch.zeros(batch, num_words, dtype=torch.long, device=word_ids.device)
    counts.scatter_add_(1, ids, ordinary.long())
    if noise is not None:
        if noise.shape != word_ids.shape:
            raise ValueError(f"noise must have the shape of word_ids {tuple(word_ids.shape)}, got {tuple(noise.shape)}")
        # each word's draw: the noise at its first token
        positions = torch.arange(length, device=word_ids.device).expand(batch, length)
        first = torch.full((batch, num_words), length - 1, dtype=torch.long, device=word_ids.device)
        first.scatter_reduce_(1, ids, positions.masked_fill(~ordinary, length - 1), reduce="amin")
        draws = noise.gather(1, first)
    else:
        draws = torch.rand(batch, num_words, generator=generator, device=generator.device if generator is not None
                           else word_ids.device).to(word_ids.device)
    draws = draws.masked_fill(counts == 0, 3.0)  # absent words rank last
    order = draws.argsort(dim=1, stable=True)
    rank = order.argsort(dim=1)  # the rank of each word
    cumulative = counts.gather(1, order).cumsum(1).float()  # tokens covered by the first k+1 ranked words
    present = counts.gather(1, order) > 0
    total = ordinary.sum(1).float()
    masks = []
    for ratio in ratios:
        target = (ratio * total).unsqueeze(1)
        distance = (cumulative - target).abs().masked_fill(~present, float("inf"))
        take = distance.argmin(dim=1) + 1  # words in the prefix (argmin: the first, i.e. shorter, on ties)
        if ratio == 0.0:
            take = torch.zeros_like(take)
        take = torch.where(total > 0, take, torch.zeros_like(take))
        masked_word = rank < take.unsqueeze(1)
        masks.append(masked_word.gather(1, ids) & ordinary)
    return masks


def mlm_corruption(input_ids: torch.Tensor, mask: torch.Tensor, mask_token_id: int, vocab_size: int,
                   generator: torch.Generator | None = None, mask_share: float = 0.8, random_share: float = 0.1):
    """BERT's corruption of the ``mask`` (bool, True = predicted) positions of ``input_ids``: ``mask_share`` of them
    become ``mask_token_id``, ``random_share`` a uniformly drawn token of the vocabulary, the rest stay as they are.
    Returns ``(corrupted_ids, labels)``: labels hold the original ids at the masked positions and -100 elsewhere."""
    if not 0.0 <= mask_share <= 1.0 or not 0.0 <= random_share <= 1.0 - mask_share:
        raise ValueError(f"mask_share and random_share must be >= 0 with a sum <= 1, got {mask_share}, {random_share}")
    device = input_ids.device
    draw = torch.rand(input_ids.shape, generator=generator, device=generator.device if generator is not None else device)
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator,
                               device=generator.device if generator is not None else device)
    draw, random_ids = draw.to(device), random_ids.to(device)
    corrupted = input_ids.clone()
    corrupted[mask & (draw < mask_share)] = mask_token_id
    swap = mask & (draw >= mask_share) & (draw < mask_share + random_share)
    corrupted[swap] = random_ids[swap]
    labels = input_ids.masked_fill(~mask, -100)
    return corrupted, labels
