"""Reconstruction targets: (normalised) pixels of each patch; HOG histograms per patch; discrete tokenizer codes per
patch (a random VQ tokenizer and the tokenizer-target check, at the end of the file).

Patch vectors are laid out (ph, pw, channels), the order of MAE's ``patchify`` (``nchpwq->nhwpqc``), so
hf-mae's decoder outputs are interchangeable with MAE's and transformers' ViTMAE's.

Remote-code rule: this file imports only the standard library and torch (see DESIGN.md).
"""

from __future__ import annotations

import torch


def patchify(pixel_values: torch.Tensor, patch_size) -> torch.Tensor:
    """(batch, channels, H, W) -> (batch, (H/ph)*(W/pw), ph*pw*channels)."""
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    batch, channels, height, width = pixel_values.shape
    rows, cols = height // ph, width // pw
    patches = pixel_values.reshape(batch, channels, rows, ph, cols, pw).permute(0, 2, 4, 3, 5, 1)
    return patches.reshape(batch, rows * cols, ph * pw * channels)


def unpatchify(patches: torch.Tensor, patch_size, grid_size, num_channels: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: (batch, rows*cols, ph*pw*channels) -> (batch, channels, rows*ph, cols*pw)."""
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    rows, cols = grid_size
    batch, num_patches, _ = patches.shape
    if num_patches != rows * cols:
        raise ValueError(f"patches hold {num_patches} patches but grid_size {rows}x{cols} needs {rows * cols}")
    images = patches.reshape(batch, rows, cols, ph, pw, num_channels).permute(0, 5, 1, 3, 2, 4)
    return images.reshape(batch, num_channels, rows * ph, cols * pw)


def patch_statistics(patches: torch.Tensor, eps: float = 1e-6):
    """Per-patch mean and std (unbiased variance + eps, as MAE), each (batch, num_patches, 1)."""
    mean = patches.mean(dim=-1, keepdim=True)
    std = (patches.var(dim=-1, keepdim=True) + eps) ** 0.5
    return mean, std


def pixel_target(pixel_values: torch.Tensor, patch_size, norm_pix: bool) -> torch.Tensor:
    """The MAE target: patchified pixels, each patch normalised to zero mean / unit variance if ``norm_pix``."""
    target = patchify(pixel_values, patch_size)
    if norm_pix:
        mean, std = patch_statistics(target)
        target = (target - mean) / std
    return target


# ---------------------------------------------------------------------------------------------------------------
# HOG targets (MaskFeat, DMJD). Written after DMJD's official ``util/hog_tensor.py`` + ``util/instance_whitening.py``:
# [-1, 0, 1] gradients, hard-binned unsigned orientations, one histogram per cell and channel (no block
# normalisation), then each histogram standardised over its bins ("instance whitening", a LayerNorm without affine).


def image_gradients(pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences ([-1, 0, 1] filters) per channel: (batch, channels, H, W) -> (g_row, g_col), each
    (batch, channels, H, W). ``g_row[i, j] = x[i + 1, j] - x[i - 1, j]``; it is 0 on the first and last row (and
    ``g_col`` on the first and last column), as skimage's and the official HOG."""
    g_row = torch.zeros_like(pixel_values)
    g_col = torch.zeros_like(pixel_values)
    g_row[..., 1:-1, :] = pixel_values[..., 2:, :] - pixel_values[..., :-2, :]
    g_col[..., :, 1:-1] = pixel_values[..., :, 2:] - pixel_values[..., :, :-2]
    return g_row, g_col


def hog_features(pixel_values: torch.Tensor, cell_size: int = 8, num_bins: int = 9) -> torch.Tensor:
    """Histograms of oriented gradients per cell and channel: (batch, C, H, W) -> (batch, C, H/cell, W/cell, bins).

    Each pixel votes its gradient magnitude ``hypot(g_row, g_col)`` into one of ``num_bins`` equal bins of its
    unsigned orientation ``atan2(g_row, g_col) mod 180°`` (hard binning); a cell's histogram is the sum of its votes
    divided by the number of pixels in the cell. ``cell_size`` must divide H and W.
    """
    if isinstance(cell_size, bool) or not isinstance(cell_size, int) or cell_size < 1:
        raise ValueError(f"cell_size must be a positive int (pixels per cell side), got {cell_size!r}")
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive int, got {num_bins!r}")
    batch, channels, height, width = pixel_values.shape
    if height % cell_size or width % cell_size:
        raise ValueError(f"pixel_values size {height}x{width} is not divisible by cell_size {cell_size}")
    g_row, g_col = image_gradients(pixel_values.float())
    magnitude = torch.hypot(g_row, g_col)
    orientation = torch.rad2deg(torch.atan2(g_row, g_col)) % 180.0
    # a tiny negative angle rounds to exactly 180.0 in float32: it belongs in the last bin
    bins = (orientation / (180.0 / num_bins)).floor().long().clamp_(max=num_bins - 1)
    votes = torch.zeros(batch, channels, height, width, num_bins, dtype=magnitude.dtype, device=magnitude.device)
    votes.scatter_(-1, bins.unsqueeze(-1), magnitude.unsqueeze(-1))
    rows, cols = height // cell_size, width // cell_size
    cells = votes.reshape(batch, channels, rows, cell_size, cols, cell_size, num_bins)
    return cells.sum(dim=(3, 5)) / (cell_size * cell_size)


def hog_target(
    pixel_values: torch.Tensor, patch_size, cell_size: int = 8, num_bins: int = 9, eps: float = 1e-5
) -> torch.Tensor:
    """The per-patch HOG target of DMJD: (batch, C, H, W) -> (batch, N, (ph/cell) * (pw/cell) * bins * C).

    Each cell's histogram (:func:`hog_features`) is standardised over its bins (instance whitening: a LayerNorm
    without affine, ``eps`` 1e-5), then the cells of a patch are flattened in the order (cell row, cell column,
    bin, channel), the official ``rearrange('b c (ph dh) (pw dw) d -> b (ph pw) (dh dw d c)')``.
    """
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    if ph % cell_size or pw % cell_size:
        raise ValueError(f"patch_size {(ph, pw)} must be divisible by the HOG cell_size {cell_size}")
    hist = hog_features(pixel_values, cell_size, num_bins)
    hist = torch.nn.functional.layer_norm(hist, (num_bins,), eps=eps)
    batch, channels, rows, cols, _ = hist.shape
    dh, dw = ph // cell_size, pw // cell_size
    hist = hist.reshape(batch, channels, rows // dh, dh, cols // dw, dw, num_bins).permute(0, 2, 4, 3, 5, 6, 1)
    return hist.reshape(batch, (rows // dh) * (cols // dw), dh * dw * num_bins * channels)


def tubelet_target(frames: torch.Tensor, tubelet_size: int, patch_size, norm_pix: bool, eps: float = 1e-6) -> torch.Tensor:
    """VideoMAE's target: frames (batch, T, C, H, W) -> (batch, (T/t)*(H/ph)*(W/pw), t*ph*pw*C), each tubelet laid
    out (t, ph, pw, C); with ``norm_pix`` every channel of a tubelet is normalised over its t*ph*pw values (unbiased
    std, ``eps`` added to the std, as the official code)."""
    ph, pw = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
    batch, time, channels, height, width = frames.shape
    t = tubelet_size
    tubes = frames.reshape(batch, time // t, t, channels, height // ph, ph, width // pw, pw)
    tubes = tubes.permute(0, 1, 4, 6, 2, 5, 7, 3).reshape(batch, -1, t * ph * pw, channels)
    if norm_pix:
        tubes = (tubes - tubes.mean(dim=-2, keepdim=True)) / (tubes.var(dim=-2, keepdim=True).sqrt() + eps)
    return tubes.reshape(batch, tubes.shape[1], -1)


def whitened(features: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Parameter-free layer norm over the last axis, in float32: each token's features minus their mean over the
    channels, divided by their std (``F.layer_norm(x, (d,))``): the "whitened" teacher targets of MaskAlign
    (``target_norm=whiten``), Feature Distillation and MaskDistill."""
    features = features.float()
    return torch.nn.functional.layer_norm(features, features.shape[-1:], eps=eps)


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer targets (BEiT, CAE): discrete codes per patch from a frozen tokenizer, predicted with cross-entropy.
# A tokenizer is any module mapping images (batch, C, H, W) to integer codes (batch, N) (or (batch, rows, cols)) on
# the model's patch grid, called as ``tokenizer.get_codebook_indices(images)`` when it has that method (BEiT's /
# DALL-E's API), else ``tokenizer(images)``.


class VQTokenizer(torch.nn.Module):
    """A tiny random vector-quantising tokenizer, the stand-in for DALL-E's (whose weights cannot be fetched here).

    Each patch's pixels, normalised per patch (zero mean, unit variance, as MAE's ``norm_pix``), are projected by a
    fixed random Gaussian matrix (patch_dim -> embedding_dim, scaled by 1 / sqrt(patch_dim)) and given the code of
    the nearest of ``codebook_size`` random unit vectors by cosine (nearest on the unit sphere). A flat patch (pixel
    std below ``flat_std``, e.g. a blank background) gets code 0: normalising it would only amplify rounding noise
    into an arbitrary direction. Everything is drawn from ``seed``: the same arguments build the same tokenizer, so
    a model rebuilds it from its config and never saves it. Nothing is learned (a random-projection quantiser).
    """

    flat_std = 1e-3

    def __init__(self, patch_size, num_channels: int = 3, codebook_size: int = 8192, embedding_dim: int = 32,
                 seed: int = 0):
        super().__init__()
        self.patch_size = (patch_size, patch_size) if isinstance(patch_size, int) else tuple(patch_size)
        for name, value, minimum in (("num_channels", num_channels, 1), ("codebook_size", codebook_size, 2),
                                     ("embedding_dim", embedding_dim, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
        self.codebook_size = codebook_size
        patch_dim = self.patch_size[0] * self.patch_size[1] * num_channels
        generator = torch.Generator().manual_seed(seed)
        projection = torch.randn(patch_dim, embedding_dim, generator=generator) / patch_dim**0.5
        codebook = torch.nn.functional.normalize(torch.randn(codebook_size, embedding_dim, generator=generator), dim=-1)
        self.register_buffer("projection", projection)
        self.register_buffer("codebook", codebook)

    def features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(batch, C, H, W) -> unit-norm patch features (batch, N, embedding_dim), zero for a flat patch."""
        patches = patchify(pixel_values.to(self.projection.dtype), self.patch_size)
        mean, std = patch_statistics(patches)
        features = torch.nn.functional.normalize(((patches - mean) / std) @ self.projection, dim=-1)
        return torch.where(patches.std(dim=-1, keepdim=True) < self.flat_std, 0.0, features)

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(batch, C, H, W) -> codes (batch, N) long, N = (H / ph) * (W / pw) in row-major patch order; a flat
        patch's zero features score 0 against every code, and argmax picks the first: code 0."""
        return (self.features(pixel_values) @ self.codebook.T).argmax(dim=-1)

    def get_codebook_indices(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """BEiT's / DALL-E's name for :meth:`forward`."""
        return self(pixel_values)


def tokenizer_target(tokenizer, pixel_values: torch.Tensor, num_tokens: int, codebook_size: int) -> torch.Tensor:
    """The codes (batch, num_tokens) long of a frozen tokenizer (see above), computed without gradients; TypeError /
    ValueError when it does not return integer codes in [0, codebook_size) on the patch grid."""
    encode = getattr(tokenizer, "get_codebook_indices", tokenizer)
    with torch.no_grad():
        codes = encode(pixel_values)
    if not isinstance(codes, torch.Tensor) or codes.is_floating_point() or codes.is_complex():
        kind = codes.dtype if isinstance(codes, torch.Tensor) else type(codes).__name__
        raise TypeError(f"the tokenizer must return integer codes (a LongTensor (batch, num_tokens)), got {kind}")
    batch = pixel_values.shape[0]
    if codes.numel() != batch * num_tokens:
        raise ValueError(f"the tokenizer must return one code per patch, (batch, num_tokens) = ({batch}, {num_tokens}),"
                         f" got shape {tuple(codes.shape)}")
    codes = codes.reshape(batch, num_tokens).long()
    if not torch.compiler.is_compiling() and codes.numel() and (codes.min() < 0 or codes.max() >= codebook_size):
        raise ValueError(f"the tokenizer's codes must lie in [0, codebook_size={codebook_size}), got "
                         f"[{int(codes.min())}, {int(codes.max())}]; set codebook_size to the tokenizer's vocabulary")
    return codes.to(pixel_values.device)
