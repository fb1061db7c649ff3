"""What a pre-trained SimMIM encoder has learnt: three measurements behind benchmarks/RESULTS.md's SimMIM suspects.

    python benchmarks/simmim_diagnostics.py runs/cifar10-e10/simmim/seed0/pretrain --dataset ../shared/data/cifar10

1. **Inpainting.** The model's masked L1 on test images against parameter-free fills of the same hidden pixels:
   zeros (the normalised mean), the visible pixels' mean colour, and a Gaussian blur of the visible pixels divided
   by the blurred visibility (normalised convolution) at several widths. A model no better than the blur has
   learnt to interpolate colour, which needs no knowledge of what is in the picture.
2. **Layers.** kNN (k = 20, hf-mae's probe) of the mean-pooled patch tokens after the embeddings and after every
   block, for the pretrained encoder and for a random init of the same config: where, if anywhere, the features
   gain class information.
3. **Masked input.** kNN of the visible tokens' mean when the encoder sees mask tokens, as in pre-training: whether
   the features are only out of distribution when probed without masks.

Writes ``--json`` (default: the folder's ``simmim_diagnostics.json``) and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info  # noqa: E402

from hf_mae.files import write_json  # noqa: E402

BLUR_SIGMAS = (1.5, 3.0, 6.0)


def blur_inpaint(pixel_values: torch.Tensor, visible: torch.Tensor, sigma: float) -> torch.Tensor:
    """Every pixel as the Gaussian-weighted mean of the visible pixels around it: blur(x * v) / blur(v).
    pixel_values (n, C, H, W), visible (n, 1, H, W) in {0, 1}."""
    radius = int(3 * sigma)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    weights = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = (weights[:, None] * weights[None, :] / weights.sum() ** 2)[None, None]
    n, channels, height, width = pixel_values.shape
    blurred = F.conv2d((pixel_values * visible).reshape(n * channels, 1, height, width), kernel, padding=radius)
    coverage = F.conv2d(visible, kernel, padding=radius)
    return blurred.reshape(n, channels, height, width) / coverage.clamp_min(1e-6)


def inpainting_l1(pixel_values: torch.Tensor, pixel_mask: torch.Tensor, sigmas=BLUR_SIGMAS) -> dict:
    """SimMIM's masked L1 of each parameter-free fill; pixel_mask (n, 1, H, W), 1 = hidden."""
    from hf_mae.modeling.simmim import masked_l1

    visible = 1 - pixel_mask
    colour = (pixel_values * visible).sum((2, 3), keepdim=True) / visible.sum((2, 3), keepdim=True).clamp_min(1)
    fills = {"zeros": torch.zeros_like(pixel_values), "visible_mean_colour": colour.expand_as(pixel_values)}
    fills.update({f"blur_sigma_{sigma:g}": blur_inpaint(pixel_values, visible, sigma) for sigma in sigmas})
    return {name: masked_l1(pixel_values, fill, pixel_mask).item() for name, fill in fills.items()}


@torch.no_grad()
def layer_features(encoder, pixel_values: torch.Tensor, batch_size: int = 250, noise: torch.Tensor | None = None):
    """(layers + 1, n, hidden): the mean of the patch tokens after the embeddings and after every block; with
    ``noise`` (n, mask cells) the encoder masks as in pre-training and only the visible tokens are averaged."""
    encoder.eval()
    chunks = []
    for start in range(0, len(pixel_values), batch_size):
        batch = pixel_values[start : start + batch_size]
        kwargs = {} if noise is None else {"noise": noise[start : start + batch_size]}
        output = encoder(batch, output_hidden_states=True, **kwargs)
        visible = (1 - output.mask)[None, :, :, None]  # (1, n, N, 1); all ones without masking
        tokens = torch.stack(output.hidden_states)[:, :, 1:]  # (layers + 1, n, N, hidden), cls left out
        chunks.append((tokens * visible).sum(2) / visible.sum(2))
    return torch.cat(chunks, dim=1)


def main(argv=None) -> dict:
    from transformers import AutoImageProcessor

    import hf_mae  # noqa: F401  (registers the Auto classes)
    from hf_mae.modeling.simmim import SimMIMForPreTraining
    from hf_mae.training.probe import knn_probe, labelled_inputs, load_quietly, random_encoder

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", help="a folder saved by hf-mae pretrain --model simmim-*")
    parser.add_argument("--dataset", default="digits", help="digits or an image folder with train/ and test/")
    parser.add_argument("--inpainting-images", type=int, default=500, help="test images for the inpainting L1")
    parser.add_argument("--seed", type=int, default=0, help="the masks and the random init")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    model = load_quietly(SimMIMForPreTraining, args.model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(args.model_dir)
    (train_x, train_y), (test_x, test_y) = (labelled_inputs(args.dataset, split, processor) for split in ("train", "test"))
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    generator = torch.Generator().manual_seed(args.seed)

    def draw_noise(n):
        return torch.rand(n, *model.config.mask_grid_size, generator=generator).flatten(1)

    images = test_x[: args.inpainting_images]
    with torch.no_grad():
        output = model(images, noise=draw_noise(len(images)))
    inpainting = {"model": output.loss.item(), **inpainting_l1(images, model.pixel_mask(output.mask, images.shape[-2:]))}

    encoders = {"pretrained": model.simmim, "random": random_encoder(model.simmim, args.seed)}
    noise = {"train": draw_noise(len(train_x)), "test": draw_noise(len(test_x))}
    layers, masked = {}, {}
    for kind, encoder in encoders.items():
        train_f, test_f = layer_features(encoder, train_x), layer_features(encoder, test_x)
        layers[kind] = [knn_probe(a, train_y, b, test_y, num_classes) for a, b in zip(train_f, test_f)]
        train_m, test_m = layer_features(encoder, train_x, noise=noise["train"]), layer_features(encoder, test_x, noise=noise["test"])
        masked[kind] = knn_probe(train_m[-1], train_y, test_m[-1], test_y, num_classes)
    result = {"model_dir": str(args.model_dir), "dataset": args.dataset, "inpainting_l1": inpainting,
              "layer_knn": layers, "masked_input_last_layer_knn": masked, "machine": machine_info(torch.device("cpu")),
              "command": "python benchmarks/simmim_diagnostics.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    write_json(Path(args.json) if args.json else Path(args.model_dir) / "simmim_diagnostics.json", result)
    print("masked L1:", json.dumps({k: round(v, 4) for k, v in inpainting.items()}))
    for kind in encoders:
        print(f"kNN per layer ({kind}; embeddings, then blocks):", [round(v, 3) for v in layers[kind]],
              f"| masked input, last block: {masked[kind]:.3f}")
    return result


if __name__ == "__main__":
    main()
