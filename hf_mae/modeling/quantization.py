"""Latent quantisation shared across methods: a learnable scalar codebook per latent dimension (QLAE, Hsu et al.,
NeurIPS 2023, arXiv:2305.18378), used by QLAE's autoencoder and offered as a bottleneck of MAE's encoder output
(``MAEConfig.latent_quantization``).

Each of the ``num_latents`` dimensions j has its own codebook ``values[j]`` of ``num_values`` scalars, initialised
evenly spaced in ``[-init_bound, init_bound]`` (the official code: ``linspace(-0.5, 0.5, 10)``). A latent ``z`` is
quantised dimension by dimension to the nearest value, ``z_q[..., j] = values[j, argmin_k |z[..., j] - values[j, k]|]``,
and the decoder sees the straight-through estimate ``z + sg(z_q - z)`` (the value of ``z_q``, the gradient of ``z``).
The two VQ-style terms train the codebooks and keep the encoder near them:

    quantization_loss = mean((sg(z) - z_q)^2)     (moves the chosen values towards the encoder's outputs)
    commitment_loss   = mean((z - sg(z_q))^2)     (moves the encoder's outputs towards their chosen values)

Remote-code rule: only torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from transformers.utils import ModelOutput


# QLAE's weights of the two terms (official quantized_ae.yaml: quantization 0.01, commitment 0.01), which MAE's
# ``latent_quantization`` bottleneck uses too
QUANTIZATION_LOSS_WEIGHT = 0.01
COMMITMENT_LOSS_WEIGHT = 0.01


@dataclass
class LatentQuantizerOutput(ModelOutput):
    """
    quantized: (..., num_latents) the straight-through latent ``z + sg(z_q - z)``: exactly the codebook values
        forward, the gradient of ``z`` backward (what a decoder reads).
    codes: (..., num_latents) long, the index of the chosen value in each dimension's codebook.
    quantization_loss: scalar mean((sg(z) - z_q)^2), the codebooks' term.
    commitment_loss: scalar mean((z - sg(z_q))^2), the encoder's term.
    continuous: (..., num_latents) the input ``z``.
    """

    quantized: torch.Tensor | None = None
    codes: torch.Tensor | None = None
    quantization_loss: torch.Tensor | None = None
    commitment_loss: torch.Tensor | None = None
    continuous: torch.Tensor | None = None


class LatentQuantizer(nn.Module):
    """A learnable scalar codebook per latent dimension (``codebook``: (num_latents, num_values)), nearest-value
    quantisation with a straight-through gradient.

    num_latents: dimensions of the latent (its last axis).
    num_values: scalars in each dimension's codebook (QLAE: 10).
    init_bound: the codebooks start at ``linspace(-init_bound, init_bound, num_values)`` (the official code: 0.5).
    learnable: whether the codebook values are trained (the official ``optimize_values``; QLAE: True). Fixed values
        are kept as a parameter without gradient, so checkpoints have the same keys either way.

    The codebook's name holds "codebook", which ``hf_mae.training.optim`` exempts from weight decay: the official
    code leaves the latent's values out of AdamW's decay ("unregularized").
    """

    def __init__(self, num_latents: int, num_values: int = 10, init_bound: float = 0.5, learnable: bool = True):
        super().__init__()
        for name, value in (("num_latents", num_latents), ("num_values", num_values)):
            if isinstance(value, bool) or not isinstance(value, int) or value < (2 if name == "num_values" else 1):
                raise ValueError(f"{name} must be an int >= {2 if name == 'num_values' else 1}, got {value!r}")
        if isinstance(init_bound, bool) or not isinstance(init_bound, (int, float)) or not init_bound > 0:
            raise ValueError(f"init_bound must be a number > 0, got {init_bound!r}")
        self.num_latents, self.num_values, self.init_bound = num_latents, num_values, float(init_bound)
        self.codebook = nn.Parameter(self.initial_codebook(), requires_grad=learnable)

    def initial_codebook(self, device=None) -> torch.Tensor:
        """(num_latents, num_values): every row ``linspace(-init_bound, init_bound, num_values)``."""
        row = torch.linspace(-self.init_bound, self.init_bound, self.num_values, device=device)
        return row.expand(self.num_latents, -1).clone()

    def extra_repr(self) -> str:
        return f"num_latents={self.num_latents}, num_values={self.num_values}, init_bound={self.init_bound}"

    def quantize(self, latents: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(..., num_latents) -> (the nearest codebook values (..., num_latents), their indices (..., num_latents));
        no gradient reaches ``latents`` through this (it does reach the codebook)."""
        codebook = self.codebook.to(latents.dtype)
        distances = (latents.detach().unsqueeze(-1) - codebook).abs()  # (..., num_latents, num_values)
        codes = distances.argmin(dim=-1)
        # the value of dimension j: codebook[j, codes[..., j]]
        values = codebook.expand(*codes.shape, -1).gather(-1, codes.unsqueeze(-1)).squeeze(-1)
        return values, codes

    def forward(self, latents: torch.Tensor) -> LatentQuantizerOutput:
        """latents: (..., num_latents) float. Returns :class:`LatentQuantizerOutput`."""
        if not isinstance(latents, torch.Tensor) or not torch.is_floating_point(latents):
            raise TypeError(f"latents must be a floating-point torch.Tensor, got {type(latents).__name__}"
                            + (f" of dtype {latents.dtype}" if isinstance(latents, torch.Tensor) else ""))
        if latents.ndim < 1 or latents.shape[-1] != self.num_latents:
            raise ValueError(f"latents must have num_latents={self.num_latents} as the last axis, got shape "
                             f"{tuple(latents.shape)}")
        quantized, codes = self.quantize(latents)
        # the VQ terms in float32: the squared gaps are small and would lose most of their bits in half precision
        gap_codebook = latents.detach().float() - quantized.float()
        gap_encoder = latents.float() - quantized.detach().float()
        return LatentQuantizerOutput(
            # z + sg(z_q - z) written as sg(z_q) + (z - sg(z)): the same gradient, and exactly z_q forward
            quantized=quantized.detach() + (latents - latents.detach()),
            codes=codes,
            quantization_loss=gap_codebook.pow(2).mean(),
            commitment_loss=gap_encoder.pow(2).mean(),
            continuous=latents,
        )

    @torch.no_grad()
    def codes_used(self, codes: torch.Tensor) -> torch.Tensor:
        """(num_latents,) long: how many distinct values each dimension takes over ``codes`` (..., num_latents)."""
        flat = codes.reshape(-1, self.num_latents)
        counts = torch.zeros(self.num_latents, self.num_values, dtype=torch.long, device=flat.device)
        counts.scatter_add_(1, flat.T, torch.ones_like(flat.T))
        return (counts > 0).sum(dim=1)


__all__ = ["LatentQuantizer", "LatentQuantizerOutput", "QUANTIZATION_LOSS_WEIGHT", "COMMITMENT_LOSS_WEIGHT"]
