"""MultiMAE's cross-modal prediction over a longer run than tests/test_multimae.py affords: depth from RGB alone.

    python benchmarks/multimae_depth_from_rgb.py --steps 1000 --threads 1

The model is the test's: ``multimae-tiny`` with rgb + depth only (depth = the built-in ``blurred_luminance``
pseudo-label, standardised), a 64-d x 2 encoder and 32-d output adapters, pre-trained on scikit-learn's digits
(batch 64, AdamW lr 2e-3, betas (0.9, 0.95), weight decay 0.05, 50 linear warm-up steps, Dirichlet(1) budget of 32
of 2 x 64 tokens). Every ``--eval-every`` steps, on the 360 test digits with every RGB token visible and no depth
token (``modality_budget=[[64, 0]]``), it prints the depth adapter's L1 against the standardised targets from the
right image's RGB and from another image's RGB (the batch rolled by one), next to two baselines: the best constant
(the targets' median) and the train set's per-position median depth. Prediction from the image shows as "right"
below both baselines and below "shuffled"; a positional prior alone scores right == shuffled.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import hf_mae  # noqa: E402
from conftest import digits_pixels  # noqa: E402
from hf_mae.modeling.multimae import MultiMAEForPreTraining  # noqa: E402
from test_multimae import SMALL  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    pixels, _ = digits_pixels("train")
    test_pixels, _ = digits_pixels("test")
    torch.manual_seed(args.seed)
    model = MultiMAEForPreTraining(hf_mae.create_config("multimae-tiny", **SMALL))
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.05)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 50))
    generator = torch.Generator().manual_seed(args.seed)
    with torch.no_grad():
        target = model.target("depth", model.modality_maps(test_pixels, {})["depth"])
        prior = model.target("depth", model.modality_maps(pixels, {})["depth"]).median(0).values
    budget = torch.tensor([[64, 0]]).expand(test_pixels.shape[0], -1)
    baselines = dict(constant=(target - target.median()).abs().mean().item(),
                     per_position_median=(target - prior).abs().mean().item())
    print(json.dumps(baselines), flush=True)
    start = time.time()
    for step in range(1, args.steps + 1):
        batch = pixels[torch.randint(0, pixels.shape[0], (64,), generator=generator)]
        model(batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        schedule.step()
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            with torch.no_grad():
                right = model(test_pixels, modality_budget=budget).modality_logits["depth"]
                shuffled = model(test_pixels.roll(1, 0), modality_budget=budget).modality_logits["depth"]
            model.train()
            print(json.dumps(dict(step=step, right=round((right - target).abs().mean().item(), 4),
                                  shuffled=round((shuffled - target).abs().mean().item(), 4),
                                  seconds=round(time.time() - start))), flush=True)


if __name__ == "__main__":
    main()
