"""Audio-MAE on real speech: pretrain a small Audio-MAE on the Free Spoken Digit Dataset, then probe its frozen
features for the spoken digit, against the same encoder randomly initialised.

Two protocols, each with its own pre-training run on its own training recordings:
- ``index``: FSDD's usual split by recording index: recordings 0-4 of every digit and speaker are the test set
  (300 clips), the rest (2,700) train;
- ``speaker``: one speaker (``--held-out-speaker``) is the test set, the other five train.
Probes: linear (tokens averaged over time per frequency band, padding left out; ``--pooling mean`` averages
every token), prototypical (Bird-MAE's probe on the patch tokens) and kNN, each on the
pretrained and on the random-init encoder. The split folders are symlinks under ``--output-dir`` (nothing is
copied); the clips are resampled from 8 kHz to the preset's 16 kHz and cut or padded to its 128 frames (1.28 s).

    python benchmarks/fsdd_audiomae.py --steps 1000 --json runs/fsdd/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info  # noqa: E402

import hf_mae  # noqa: E402
from hf_mae.modeling.embeddings import to_2tuple  # noqa: E402
from hf_mae.training.pretrain import pretrain  # noqa: E402
from hf_mae.training.probe import (  # noqa: E402
    POOLINGS, extract_tokens, knn_probe, labelled_inputs, linear_probe, load_quietly, pool, prototypical_probe,
    random_encoder, real_tokens,
)

FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd" / "recordings"
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")


def split_folder(root: Path, protocol: str, held_out: str) -> Path:
    """``root/<protocol>/{train,test}/<digit>/<file>.wav`` as symlinks to the FSDD recordings."""
    folder = root / (protocol if protocol == "index" else f"speaker-{held_out}")
    for path in sorted(FSDD.glob("*.wav")):
        digit, speaker, index = path.stem.split("_")
        test = int(index) < 5 if protocol == "index" else speaker == held_out
        link = folder / ("test" if test else "train") / digit / path.name
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(path, link)
    return folder


def raw_tokens(values: torch.Tensor, patch_size) -> torch.Tensor:
    """(n, frames, bins) filterbanks -> (n, 1 + N, patch area): the flattened patches in the encoder's order."""
    time, freq = to_2tuple(patch_size)
    patches = values.unfold(1, time, time).unfold(2, freq, freq).flatten(3).flatten(1, 2)
    return torch.cat([patches.new_zeros(len(patches), 1, patches.shape[-1]), patches], 1)


def probes(encoder, train, test, processor, args, raw_config=None) -> dict:
    """Linear / prototypical / kNN accuracy of ``encoder``'s frozen tokens (``encoder=None``: linear and kNN of the
    raw patches of ``raw_config``); linear and kNN see ``args.pooling`` of the tokens that are not all padding
    (``--pool-padding``: of every token)."""
    config = raw_config or encoder.config
    if encoder is None:  # the yardstick: the same pooling of the raw 16x16 patches (a zero cls token first)
        train_tokens, test_tokens = (raw_tokens(split[0], config.patch_size) for split in (train, test))
    else:
        train_tokens, test_tokens = extract_tokens(encoder, train[0]), extract_tokens(encoder, test[0])

    def features(tokens, values):
        keep = None if args.pool_padding else real_tokens(values, config, processor)
        return pool(tokens, args.pooling, config.grid_size, keep)

    train_x, test_x = features(train_tokens, train[0]), features(test_tokens, test[0])
    results = {
        "linear": linear_probe(train_x, train[1], test_x, test[1], 10, seed=args.seed),
        "knn": knn_probe(train_x, train[1], test_x, test[1], 10),
    }
    if encoder is not None:
        results["prototypical"] = prototypical_probe(train_tokens[:, 1:], train[1], test_tokens[:, 1:], test[1], 10,
                                                     prototypes_per_class=args.prototypes, seed=args.seed)
    return results


def run_protocol(protocol: str, args) -> dict:
    folder = split_folder(Path(args.output_dir) / "splits", protocol, args.held_out_speaker)
    run_dir = Path(args.output_dir) / "-".join(
        ["run", folder.name] + ([f"{args.max_length}frames"] if args.max_length else [])
        + ([f"patch{args.patch_frames}"] if args.patch_frames else []))
    print(f"[{folder.name}] pre-training {args.preset} for {args.steps} steps on {folder / 'train'} ...", flush=True)
    start = time.perf_counter()
    overrides = {"max_length": args.max_length} if args.max_length else {}
    if args.patch_frames:  # (time, frequency) patches: finer in time than the preset's square ones
        overrides["patch_size"] = (args.patch_frames, to_2tuple(hf_mae.create_config(args.preset).patch_size)[1])
    overrides = overrides or None
    _, summary = pretrain(model=args.preset, dataset=str(folder), output_dir=str(run_dir), max_steps=args.steps,
                          batch_size=args.batch_size, lr=args.lr, save_steps=0, overwrite=True, seed=args.seed,
                          config_overrides=overrides)  # fmt: skip
    pretrain_s = time.perf_counter() - start
    processor = hf_mae.create_processor(args.preset, **(overrides or {}))
    train, test = (labelled_inputs(str(folder), split, processor) for split in ("train", "test"))
    pretrained = load_quietly(AutoModel, run_dir)  # the decoder's weights are left out, as expected
    random_init = random_encoder(pretrained, args.seed)
    row = {
        "protocol": folder.name,
        "max_length": processor.max_length,
        "train_clips": len(train[1]),
        "test_clips": len(test[1]),
        "first_loss": summary.get("first_loss"),
        "final_loss": summary.get("final_loss"),
        "pretrain_seconds": pretrain_s,
        "pretrained": probes(pretrained, train, test, processor, args),
        "random_init": probes(random_init, train, test, processor, args),
        "raw_patches": probes(None, train, test, processor, args, raw_config=pretrained.config),
    }
    shown = ("final_loss", "pretrained", "random_init", "raw_patches")
    print(f"[{folder.name}] " + json.dumps({k: row[k] for k in shown}), flush=True)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="audiomae-tiny")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1.5e-3)
    parser.add_argument("--max-length", type=int, default=None,
                        help="frames per clip (default: the preset's; FSDD clips are mostly under 0.8 s = 80 frames)")
    parser.add_argument("--patch-frames", type=int, default=None,
                        help="frames per patch (default: the preset's 16); 4 gives 4x16 patches, 40 ms x 16 mel bins")
    parser.add_argument("--pooling", default="time", choices=POOLINGS,
                        help="linear / kNN features: time = mean over time per frequency band, bands side by side "
                             "(default); mean = over every token (the figures before 2026-12-02)")
    parser.add_argument("--pool-padding", action="store_true",
                        help="pool the tokens made of padding too (default: only those holding a real frame)")
    parser.add_argument("--prototypes", type=int, default=5, help="prototypes per class (the paper: 20)")
    parser.add_argument("--held-out-speaker", default="theo", choices=SPEAKERS)
    parser.add_argument("--protocols", nargs="+", default=["index", "speaker"], choices=["index", "speaker"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output-dir", default="runs/fsdd")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if not FSDD.is_dir():
        raise SystemExit(f"{FSDD} is absent: the Free Spoken Digit Dataset lives in ../shared/data/fsdd")
    frames = args.max_length or hf_mae.create_config(args.preset).max_length
    if args.patch_frames is not None and (args.patch_frames < 1 or frames % args.patch_frames):
        parser.error(f"--patch-frames must be a positive divisor of the {frames} frames per clip, got {args.patch_frames}")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = [run_protocol(protocol, args) for protocol in args.protocols]
    lines = ["| protocol | clips (train / test) | final loss | linear | prototypical | kNN | random-init linear / prototypical / kNN | raw patches linear / kNN |",
             "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        p, r, x = row["pretrained"], row["random_init"], row["raw_patches"]
        lines.append(f"| {row['protocol']} | {row['train_clips']} / {row['test_clips']} | {row['final_loss']:.4f} | "
                     f"{p['linear']:.3f} | {p['prototypical']:.3f} | {p['knn']:.3f} | "
                     f"{r['linear']:.3f} / {r['prototypical']:.3f} / {r['knn']:.3f} | {x['linear']:.3f} / {x['knn']:.3f} |")  # fmt: skip
    table = "\n".join(lines)
    print(table)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": machine_info(torch.device("cpu")), "args": vars(args),
                                               "rows": rows, "table": table}, indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
