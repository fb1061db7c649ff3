"""Mask generators: one interface, seeded, batch-friendly.

Convention (as in MAE): ``mask`` is (batch, num_tokens) with 1 where a token is *removed* (hidden from the
encoder). A generator returns a :class:`TokenMask` that also carries the shuffle that puts the kept tokens first
(``ids_keep``) and its inverse (``ids_restore``), which is what encoders and decoders need to gather and unshuffle.

Remote-code rule: this file imports only the standard library and torch (see DESIGN.md).
"""

from __future__ import annotations

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


def mask_from_noise(noise: torch.Tensor, mask_ratio: float) -> TokenMask:
    """Keeps, per sample, the ``int(L * (1 - mask_ratio))`` tokens with the smallest noise (argsort ascending).

    This is exactly the rule of MAE and transformers' ViTMAE, so the same ``noise`` gives the same mask in both.
    """
    batch, num_tokens = noise.shape
    keep = num_kept(num_tokens, mask_ratio)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones(batch, num_tokens, device=noise.device)
    mask[:, :keep] = 0
    return TokenMask(ids_shuffle[:, :keep], ids_restore, torch.gather(mask, 1, ids_restore))


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
