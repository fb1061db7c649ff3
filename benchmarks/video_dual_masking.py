"""Training-step speed of VideoMAE V2's dual masking against VideoMAE at the same size, measured in one process.

Both models get the same config and the same clips; VideoMAE's decoder reconstructs every token the encoder hid
(90% of the clip), V2's only the running cell's half. Each repeat times ``--steps`` training steps (forward,
backward, AdamW) of each model, in alternating order; the result is the ratio of the medians, so a noisy shared
machine affects both alike. Peak memory of one step is reported on CUDA.

    python benchmarks/video_dual_masking.py --size small --json runs/video_dual_masking.json
    python benchmarks/video_dual_masking.py --size base --device cuda --dtype bf16 --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, median, synchronize  # noqa: E402

import hf_mae  # noqa: E402
from hf_mae.training.optim import build_adamw  # noqa: E402

SIZES = {  # encoder / decoder of the comparison; clips of 16 frames
    "tiny": dict(image_size=64, patch_size=16, hidden_size=192, num_hidden_layers=4, num_attention_heads=3,
                 intermediate_size=768, decoder_hidden_size=96, decoder_num_attention_heads=3,
                 decoder_intermediate_size=384),
    "small": dict(image_size=128, patch_size=16, hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                  intermediate_size=1536, decoder_hidden_size=192, decoder_num_attention_heads=3,
                  decoder_intermediate_size=768),
    "base": dict(image_size=224, patch_size=16),  # the paper's ViT-B/16 and 384-d x 4 decoder
}  # fmt: skip


def build(name: str, size: str, device, dtype):
    model = hf_mae.create_model(f"{name}-vit-base-patch16", **SIZES[size]).to(device=device, dtype=dtype).train()
    return model, build_adamw(model, 1e-4)


def step(model, optimizer, clips, noise):
    model(clips, noise=noise).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="training steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if min(args.batch_size, args.steps, args.repeats) < 1:
        raise ValueError("--batch-size, --steps and --repeats must be >= 1")
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    torch.manual_seed(0)
    models = {name: build(name, args.size, device, dtype) for name in ("videomae", "videomaev2")}
    config = models["videomae"][0].config
    clips = torch.randn(args.batch_size, config.num_frames, 3, config.image_size, config.image_size, device=device,
                        dtype=dtype)  # fmt: skip
    noise = torch.rand(args.batch_size, config.grid_size[1] * config.grid_size[2], device=device)
    tokens = {}
    for name, (model, optimizer) in models.items():
        out = model(clips, noise=noise)
        tokens[name] = {"encoder": int((1 - out.mask[0]).sum()), "decoder": int(out.mask[0].numel() - out.mask[0].sum()) + out.logits.shape[1]}
        step(model, optimizer, clips, noise)  # warm-up
    times = {name: [] for name in models}
    peak = {}
    for repeat in range(args.repeats):
        order = list(models) if repeat % 2 == 0 else list(reversed(models))
        for name in order:
            model, optimizer = models[name]
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            synchronize(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                step(model, optimizer, clips, noise)
            synchronize(device)
            times[name].append(time.perf_counter() - start)
            if device.type == "cuda":
                peak[name] = torch.cuda.max_memory_allocated(device) / 2**20
    step_s = {name: median(t) / args.steps for name, t in times.items()}
    result = {
        "machine": machine_info(device),
        "args": vars(args),
        "config": {k: getattr(config, k) for k in ("image_size", "patch_size", "num_frames", "hidden_size",
                                                   "num_hidden_layers", "decoder_hidden_size", "mask_ratio")},
        "tokens_per_clip": tokens,
        "step_seconds": step_s,
        "speedup_v2_over_v1": step_s["videomae"] / step_s["videomaev2"],
        "peak_mib": peak or None,
    }  # fmt: skip
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
