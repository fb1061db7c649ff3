"""Shared helpers for the benchmarks: benchmark configs, an hf-mae / transformers ViTMAE pair with identical weights,
analytic and counted FLOPs, a measured matmul peak, and machine facts for the results files.

Benchmarks are scripts, not tests: nothing here is imported by the library.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass

import torch


@dataclass(frozen=True)
class BenchConfig:
    """An MAE pre-training config, described once and built as both hf-mae and transformers models."""

    image_size: int
    patch_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    decoder_hidden_size: int
    decoder_num_hidden_layers: int
    decoder_num_attention_heads: int
    mask_ratio: float = 0.75
    num_channels: int = 3
    mlp_ratio: int = 4
    norm_pix_loss: bool = True

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_kept(self) -> int:
        return int(self.num_patches * (1 - self.mask_ratio))  # MAE's rounding

    def model_kwargs(self) -> dict:
        """Config kwargs understood by both ``hf_mae.MAEConfig`` and ``transformers.ViTMAEConfig``."""
        kwargs = asdict(self)
        ratio = kwargs.pop("mlp_ratio")
        kwargs["intermediate_size"] = ratio * self.hidden_size
        kwargs["decoder_intermediate_size"] = ratio * self.decoder_hidden_size
        kwargs["layer_norm_eps"] = 1e-6  # MAE's value; ViTMAEConfig defaults to 1e-12
        kwargs["qkv_bias"] = True
        return kwargs


# The decoders are MAE's 512-d x 8 blocks for the ImageNet-sized models and a light 128-d x 2 for 32 px.
CONFIGS = {
    "vit-ti16-224": BenchConfig(224, 16, 192, 12, 3, 512, 8, 16),
    "vit-s16-224": BenchConfig(224, 16, 384, 12, 6, 512, 8, 16),
    "vit-ti4-32": BenchConfig(32, 4, 192, 12, 3, 128, 2, 4),
    "vit-b16-224": BenchConfig(224, 16, 768, 12, 12, 512, 8, 16),  # MAE's ViT-B/16, for GPU runs
}


def build_pair(config: BenchConfig, seed: int = 0, attn_implementation: str = "sdpa"):
    """``(hf_mae MAEForPreTraining, transformers ViTMAEForPreTraining)`` with identical weights, both in train mode."""
    torch.manual_seed(seed)
    ours = build_model(config, "hf-mae", attn_implementation)
    theirs = build_model(config, "transformers", attn_implementation)
    copy_weights_to_vitmae(ours, theirs)
    return ours, theirs


def build_model(config: BenchConfig, library: str, attn_implementation: str = "sdpa"):
    """A randomly initialised pre-training model of ``library`` ("hf-mae" or "transformers"), in train mode."""
    if library == "hf-mae":
        from hf_mae.modeling.mae import MAEConfig, MAEForPreTraining

        return MAEForPreTraining(MAEConfig(**config.model_kwargs(), attn_implementation=attn_implementation)).train()
    if library == "transformers":
        from transformers import ViTMAEConfig, ViTMAEForPreTraining

        model_config = ViTMAEConfig(**config.model_kwargs(), attn_implementation=attn_implementation)
        return ViTMAEForPreTraining(model_config).train()
    raise ValueError(f"library must be 'hf-mae' or 'transformers', got {library!r}")


def copy_weights_to_vitmae(ours, theirs) -> None:
    """Loads hf-mae weights into a ViTMAEForPreTraining (fused qkv split into q/k/v); every key must match."""
    renames = {
        "mae.": "vit.",
        ".norm1.": ".layernorm_before.",
        ".norm2.": ".layernorm_after.",
        ".attention.proj.": ".attention.o_proj.",
    }
    state = {}
    for name, tensor in ours.state_dict().items():
        for old, new in renames.items():
            name = name.replace(old, new)
        if ".attention.qkv." in name:
            for part, chunk in zip(("q_proj", "k_proj", "v_proj"), tensor.chunk(3, dim=0)):
                state[name.replace("qkv", part)] = chunk.clone()
        else:
            state[name] = tensor.clone()
    theirs.load_state_dict(state, strict=True)


def linear_flops(tokens: int, fan_in: int, fan_out: int) -> int:
    return 2 * tokens * fan_in * fan_out


def block_flops(tokens: int, width: int, mlp_width: int) -> int:
    """Forward FLOPs of one ViT block on ``tokens`` tokens: qkv, q @ k^T, attn @ v, proj, fc1, fc2 (matmuls only)."""
    projections = linear_flops(tokens, width, 3 * width) + linear_flops(tokens, width, width)
    attention = 2 * (2 * tokens * tokens * width)
    mlp = linear_flops(tokens, width, mlp_width) + linear_flops(tokens, mlp_width, width)
    return projections + attention + mlp


def analytic_step_flops(config: BenchConfig, batch_size: int) -> dict:
    """Matmul FLOPs of one training step (per batch): encoder on 1 + kept tokens, decoder on 1 + N tokens.

    Backward costs twice the forward (input and weight gradients), so a step is 3x the forward, except that the
    patch projection needs no input gradient (pixels do not require grad): 2x for it.
    """
    n, kept = config.num_patches, config.num_kept
    patch_dim = config.patch_size**2 * config.num_channels
    mlp, dec_mlp = config.mlp_ratio * config.hidden_size, config.mlp_ratio * config.decoder_hidden_size
    patch_embed = linear_flops(n, patch_dim, config.hidden_size)
    encoder = config.num_hidden_layers * block_flops(1 + kept, config.hidden_size, mlp)
    decoder = (
        linear_flops(1 + kept, config.hidden_size, config.decoder_hidden_size)
        + config.decoder_num_hidden_layers * block_flops(1 + n, config.decoder_hidden_size, dec_mlp)
        + linear_flops(n, config.decoder_hidden_size, patch_dim)
    )
    forward = patch_embed + encoder + decoder
    step = 3 * (encoder + decoder) + 2 * patch_embed
    return {"forward": batch_size * forward, "step": batch_size * step}


def counted_step_flops(model, pixel_values, noise) -> int:
    """FLOPs of one forward + backward counted by ``torch.utils.flop_counter.FlopCounterMode``.

    The counter has no formula for CPU's fused attention kernel, so the count runs with eager attention (the same
    matmuls, spelled out) and the implementation is restored afterwards. It counts a little more than
    :func:`analytic_step_flops`: both models also predict pixels for the cls row, which they then drop.
    """
    from torch.utils.flop_counter import FlopCounterMode

    # ViTMAE's decoder keeps its own copy of the config, so switch every config the modules hold.
    configs = {id(m.config): m.config for m in model.modules() if hasattr(getattr(m, "config", None), "_attn_implementation")}
    previous = {key: config._attn_implementation for key, config in configs.items()}
    for config in configs.values():
        config._attn_implementation = "eager"
    try:
        with FlopCounterMode(display=False) as counter:
            model(pixel_values=pixel_values, noise=noise).loss.backward()
    finally:
        for key, config in configs.items():
            config._attn_implementation = previous[key]
        model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 7) -> float:
    """Measured matmul throughput (FLOP/s): the best of ``repeats`` timings of ``size``^3 products (x 4 on GPU).

    The best, not the median: the peak is what the hardware can do when the shared machine lets it.
    """
    if device.type == "cuda":
        size *= 4
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    try:
        import transformers

        info["transformers"] = transformers.__version__
    except ImportError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def median(values) -> float:
    return float(statistics.median(values))
