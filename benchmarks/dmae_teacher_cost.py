"""DMAE's teacher cost: the frozen MAE teacher truncated at the aligned block vs the whole teacher, in one run.

DMAE's efficiency point is that the teacher need not run past the block the student is aligned to. The official
code runs the whole ViT-L teacher (and its decoder); hf-mae's ``DMAEForPreTraining`` stops it after the aligned
block (``teachers.teacher_forward(stop_after=k)``). This script times the teacher's forward exactly as DMAE calls
it (``teachers.teacher_visible_tokens``: the student's noise, so the teacher encodes the 25% visible patches) with
the truncation and without it (the same call, aligned to the teacher's last block), interleaved A B B A ... on one
torch thread, and reports the medians and their ratio. It also times the teacher on the whole image (what a teacher
that cannot mask costs, the documented deviation) for scale.

Random weights (the cost does not depend on them); nothing is downloaded.

    python benchmarks/dmae_teacher_cost.py                     # the paper's ViT-L/16 teacher, block 18 of 24, 224 px
    python benchmarks/dmae_teacher_cost.py --size tiny         # seconds: the dmae-tiny shapes
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

SIZES = {
    # the paper: MAE ViT-L/16 teacher at 224 px, aligned at block 18 of 24 (official 0-based 17)
    "large": dict(image_size=224, patch_size=16, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                  intermediate_size=4096, layer=18),
    "base": dict(image_size=224, patch_size=16, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, layer=9),
    "tiny": dict(image_size=32, patch_size=4, hidden_size=192, num_hidden_layers=6, num_attention_heads=3,
                 intermediate_size=768, layer=4),
}


def build_teacher(size: str):
    from hf_mae.modeling.mae import MAEConfig, MAEModel

    settings = {k: v for k, v in SIZES[size].items() if k != "layer"}
    torch.manual_seed(0)
    return MAEModel(MAEConfig(decoder_num_hidden_layers=1, **settings)).eval().requires_grad_(False)


def measure(size: str = "large", batch: int = 8, repeats: int = 5, mask_ratio: float = 0.75) -> dict:
    """Median seconds of the teacher's DMAE forward truncated at the aligned block and whole, their ratio, and the
    whole teacher on the full image; blocks run per call, counted with forward hooks."""
    from hf_mae.modeling.masking import mask_from_noise
    from hf_mae.modeling.teachers import teacher_blocks, teacher_visible_tokens

    teacher = build_teacher(size)
    layer, depth = SIZES[size]["layer"], SIZES[size]["num_hidden_layers"]
    rows = SIZES[size]["image_size"] // SIZES[size]["patch_size"]
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch, 3, SIZES[size]["image_size"], SIZES[size]["image_size"], generator=generator)
    noise = torch.rand(batch, rows * rows, generator=generator)
    ids_keep = mask_from_noise(noise, mask_ratio).ids_keep
    calls = [0]
    for block in teacher_blocks(teacher):
        block.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))

    def run(k, shared=True):
        calls[0] = 0
        start = time.perf_counter()
        teacher_visible_tokens(teacher, pixels, [k], ids_keep, (rows, rows), noise=noise if shared else None,
                               mask_ratio=mask_ratio)
        return time.perf_counter() - start, calls[0]

    run(layer), run(depth), run(depth, shared=False)  # warm-up
    truncated, full, image = [], [], []
    for i in range(repeats):
        order = [(truncated, layer), (full, depth)] if i % 2 == 0 else [(full, depth), (truncated, layer)]
        for times, k in order:
            times.append(run(k))
        image.append(run(depth, shared=False))
    result = dict(
        size=size, batch=batch, repeats=repeats, threads=torch.get_num_threads(), aligned_block=layer, depth=depth,
        visible_patches=ids_keep.shape[1], num_patches=rows * rows,
        truncated_s=statistics.median(t for t, _ in truncated), full_s=statistics.median(t for t, _ in full),
        full_image_s=statistics.median(t for t, _ in image),
        blocks_run_truncated=truncated[0][1], blocks_run_full=full[0][1],
    )
    result["ratio"] = result["truncated_s"] / result["full_s"]
    result["expected_ratio_blocks"] = layer / depth
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="large")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = measure(args.size, args.batch_size, args.repeats)
    print(json.dumps(result, indent=2))
    print(f"teacher forward, truncated at block {result['aligned_block']} / {result['depth']}: "
          f"{result['truncated_s']:.3f} s vs {result['full_s']:.3f} s whole = x{result['ratio']:.3f} "
          f"(blocks alone: x{result['expected_ratio_blocks']:.3f}); whole image, whole teacher: "
          f"{result['full_image_s']:.3f} s")
    return result


if __name__ == "__main__":
    main()
