"""MTO's claim, faster convergence: after how many epochs does SimMIM + MTO reach plain SimMIM's final probe figure?

    python benchmarks/mto_convergence.py --dataset ../shared/data/cifar10 --epochs 10 --threads 1 \\
        --output-dir runs/mto-convergence

1. pre-trains ``simmim-tiny`` and ``mto-tiny`` (the same ViT, the same seed, hence the same initial weights, and
   the same data order and masks) on the ``train`` split with the real pipeline
   (``hf_mae.training.pretrain.pretrain``) at the repository's SimMIM recipe: the registry row's lr rule (5e-5 per
   256 images at batch 2048, square-root-scaled to the batch: 7.1e-5 at 64), AdamW betas (0.9, 0.999), SimMIM's
   crop + flip, batch 64 (benchmarks/RESULTS.md, "SimMIM on CIFAR-10"); a checkpoint after every epoch;
2. after every epoch probes the frozen encoder of that checkpoint on the ``test`` split with
   ``hf_mae.training.probe.probe``: linear and kNN (k = 20) fitted on the whole train split (and once the random
   init of the same config, for scale); and measures the masked L1 on ``--l1-images`` test images under fixed
   masks (the reconstruction term alone, comparable between the two: MTO's logged loss adds its own terms);
3. reports, per probe, plain SimMIM's figure after the last epoch and the first epoch at which SimMIM + MTO reaches
   it (>=), and, for scale, the first epoch at which SimMIM itself does (probe figures are noisy at this size).

``--mto-overrides`` changes MTO's fields for the MTO run only (e.g. ``mto_recalibration=1.0``: no exclusion).
Finished runs and probed epochs are kept in ``--output-dir`` and reused by a rerun with the same arguments (an
interrupted pre-training resumes from its newest checkpoint; other arguments there are refused); the summary goes
to ``OUTPUT_DIR/mto_convergence.json`` and the markdown table to ``OUTPUT_DIR/results.md``. On CIFAR-10's
5,000-image train split one epoch takes about 70 s of training and 60-80 s of probing per model on one CPU thread
(measured on the shared 2-core machine), so 10 epochs of both models take about 45 minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info  # noqa: E402

from hf_mae.files import write_json, write_text  # noqa: E402
from hf_mae.training.data import load_image_dataset  # noqa: E402
from hf_mae.training.pretrain import list_checkpoints, parse_overrides, pretrain  # noqa: E402
from hf_mae.training.probe import labelled_inputs, probe  # noqa: E402

VARIANTS = {"simmim": "simmim-tiny", "mto": "mto-tiny"}  # plain SimMIM, SimMIM + MTO: the same ViT
PROBES = ("linear", "knn")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="../shared/data/cifar10",
                        help="an image folder with train/ and test/ (default: ../shared/data/cifar10), or digits")
    parser.add_argument("--epochs", type=int, default=10, help="pre-training epochs of each model (default: 10)")
    parser.add_argument("--batch-size", type=int, default=64, help="pre-training batch size (default: 64)")
    parser.add_argument("--lr", type=float, default=None,
                        help="absolute lr for both (default: the SimMIM row's rule scaled to the batch, as pretrain)")
    parser.add_argument("--seed", type=int, default=0, help="init, data order, masks and probes (default: 0)")
    parser.add_argument("--config-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config fields for both models (e.g. hidden_size=64), as hf-mae pretrain's")
    parser.add_argument("--mto-overrides", nargs="*", default=[], metavar="KEY=VALUE",
                        help="MTO fields for the MTO model only (e.g. mto_recalibration=1.0 mto_entropy_weight=0)")
    parser.add_argument("--l1-images", type=int, default=500, help="test images of the masked-L1 check (default: 500)")
    parser.add_argument("--output-dir", default="runs/mto-convergence", help="runs, probes and the summary")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 on a shared machine)")
    return parser


# what the runs and probes depend on: a rerun into the same --output-dir must give the same
RUN_KEYS = ("dataset", "epochs", "batch_size", "lr", "seed", "config_overrides", "mto_overrides")


def check_same_run(args) -> None:
    """Writes OUTPUT_DIR/run_args.json, or checks that an earlier run there had the same RUN_KEYS (ValueError)."""
    path = Path(args.output_dir) / "run_args.json"
    current = {key: getattr(args, key) for key in RUN_KEYS}
    if path.is_file():
        saved = json.loads(path.read_text())
        changed = {key: (saved.get(key), value) for key, value in current.items() if saved.get(key) != value}
        if changed:
            raise ValueError(f"{args.output_dir} holds a run with other arguments (saved, given): {changed}; "
                             "use another --output-dir")
    else:
        write_json(path, current, indent=2)


def epoch_steps(args) -> int:
    steps = len(load_image_dataset(args.dataset, "train")) // args.batch_size  # the pipeline drops the last batch
    if steps == 0:
        raise ValueError(f"--batch-size {args.batch_size} is larger than the train split of {args.dataset!r}")
    return steps


def run_pretraining(variant: str, args, steps_per_epoch: int) -> Path:
    """Pre-trains one variant into OUTPUT_DIR/<variant>/pretrain with a checkpoint after every epoch (all kept)."""
    run_dir = Path(args.output_dir) / variant / "pretrain"
    overrides = parse_overrides(args.config_overrides, VARIANTS[variant])
    if variant == "mto":
        overrides.update(parse_overrides(args.mto_overrides, VARIANTS[variant]))
    total = args.epochs * steps_per_epoch
    metrics = run_dir / "metrics.json"
    if metrics.is_file() and json.loads(metrics.read_text()).get("steps") == total:
        return run_dir
    pretrain(
        model=VARIANTS[variant], dataset=args.dataset, split="train", output_dir=str(run_dir), max_steps=total,
        lr=args.lr, batch_size=args.batch_size, seed=args.seed, config_overrides=overrides or None,
        save_steps=steps_per_epoch, save_total_limit=args.epochs, resume=True, report_to="none",
    )  # resume=True with no checkpoint in the folder starts afresh
    return run_dir


def checkpoint_model(run_dir: Path, checkpoint: Path):
    """The pre-training model of ``run_dir`` (its exported config) with the weights of ``checkpoint``."""
    from transformers import AutoModelForPreTraining

    model = AutoModelForPreTraining.from_pretrained(run_dir)
    missing, unexpected = model.load_state_dict(load_file(checkpoint / "model.safetensors"), strict=False)
    if missing or unexpected:
        raise ValueError(f"{checkpoint}: weights do not match the model (missing {missing}, unexpected {unexpected})")
    return model.eval()


@torch.no_grad()
def masked_l1(model, pixel_values: torch.Tensor, seed: int) -> float:
    """The masked L1 (SimMIM's reconstruction term; MTO's ``reconstruction_loss``) under masks fixed by ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(pixel_values.shape[0], *model.config.mask_grid_size, generator=generator).flatten(1)
    total, count = 0.0, 0
    for start in range(0, pixel_values.shape[0], 100):
        out = model(pixel_values[start:start + 100], noise=noise[start:start + 100])
        loss = out.reconstruction_loss if out.reconstruction_loss is not None else out.loss
        total, count = total + loss.item() * len(out.mask), count + len(out.mask)
    return total / count


def probe_epochs(variant: str, run_dir: Path, args, steps_per_epoch: int, l1_pixels) -> list[dict]:
    """Probes every epoch's checkpoint (cached in OUTPUT_DIR/<variant>/epochs.json)."""
    cache = Path(args.output_dir) / variant / "epochs.json"
    rows = {row["epoch"]: row for row in (json.loads(cache.read_text()) if cache.is_file() else [])}
    for step, checkpoint in list_checkpoints(run_dir):
        epoch = step // steps_per_epoch
        if step % steps_per_epoch or epoch in rows:
            continue
        start = time.perf_counter()
        model = checkpoint_model(run_dir, checkpoint)
        baseline = "random" if variant == "simmim" and epoch == 1 else None  # the same random init for both
        result = probe(model, args.dataset, list(PROBES), baseline=baseline, seed=args.seed)
        row = {"epoch": epoch, "step": step, **{name: result[name]["pretrained"] for name in PROBES},
               "test_masked_l1": masked_l1(model, l1_pixels, args.seed), "probe_wall_s": time.perf_counter() - start}
        if baseline:
            row.update({f"random_{name}": result[name]["random"] for name in PROBES})
        rows[epoch] = row
        print(f"[{variant}] epoch {epoch}: linear {row['linear']:.3f}, kNN {row['knn']:.3f}, "
              f"test masked L1 {row['test_masked_l1']:.4f}", flush=True)
        write_json(cache, [rows[key] for key in sorted(rows)], indent=2)
    return [rows[key] for key in sorted(rows)]


def first_epoch_reaching(rows: list[dict], key: str, target: float) -> int | None:
    return next((row["epoch"] for row in rows if row[key] >= target), None)


def summarize(curves: dict, epochs: int) -> dict:
    """Plain SimMIM's final figure per probe and the first epoch each variant reaches it."""
    final = curves["simmim"][-1]
    summary = {}
    for name in PROBES:
        summary[name] = {
            "simmim_final": final[name],
            "mto_final": curves["mto"][-1][name],
            "mto_first_epoch_reaching_simmim_final": first_epoch_reaching(curves["mto"], name, final[name]),
            "simmim_first_epoch_reaching_its_final": first_epoch_reaching(curves["simmim"], name, final[name]),
            "epochs": epochs,
        }
    return summary


def markdown(curves: dict, summary: dict, args) -> str:
    random = curves["simmim"][0]
    lines = [
        f"SimMIM vs SimMIM + MTO on {args.dataset}, {args.epochs} epochs at batch {args.batch_size}, seed {args.seed}"
        f" (random init: linear {random.get('random_linear', float('nan')):.3f}, "
        f"kNN {random.get('random_knn', float('nan')):.3f})",
        "",
        "| epoch | SimMIM linear | SimMIM kNN | SimMIM test L1 | MTO linear | MTO kNN | MTO test L1 |",
        "|---|---|---|---|---|---|---|",
    ]
    by_epoch = {variant: {row["epoch"]: row for row in rows} for variant, rows in curves.items()}
    for epoch in sorted(set(by_epoch["simmim"]) | set(by_epoch["mto"])):
        cells = [str(epoch)]
        for variant in ("simmim", "mto"):
            row = by_epoch[variant].get(epoch)
            cells += ["–"] * 3 if row is None else [f"{row['linear']:.3f}", f"{row['knn']:.3f}",
                                                    f"{row['test_masked_l1']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for name, entry in summary.items():
        reached = entry["mto_first_epoch_reaching_simmim_final"]
        reached = f"> {entry['epochs']} (not reached)" if reached is None else str(reached)
        lines.append(
            f"- {name}: plain SimMIM's final {entry['simmim_final']:.3f}; SimMIM + MTO reaches it at epoch "
            f"{reached} of {entry['epochs']} (its final {entry['mto_final']:.3f}); SimMIM itself first at epoch "
            f"{entry['simmim_first_epoch_reaching_its_final']}"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.epochs < 1:
        raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
    check_same_run(args)
    steps_per_epoch = epoch_steps(args)
    l1_pixels = None
    curves = {}
    for variant in VARIANTS:
        run_dir = run_pretraining(variant, args, steps_per_epoch)
        if l1_pixels is None:
            from transformers import AutoImageProcessor

            pixels, _ = labelled_inputs(args.dataset, "test", AutoImageProcessor.from_pretrained(run_dir))
            l1_pixels = pixels[: args.l1_images]
        curves[variant] = probe_epochs(variant, run_dir, args, steps_per_epoch, l1_pixels)
    summary = summarize(curves, args.epochs)
    result = {"args": vars(args), "steps_per_epoch": steps_per_epoch, "curves": curves, "summary": summary,
              "machine": machine_info(torch.device("cpu"))}
    output = Path(args.output_dir)
    write_json(output / "mto_convergence.json", result, indent=2)
    table = markdown(curves, summary, args)
    write_text(output / "results.md", table)
    print(table)
    return result


if __name__ == "__main__":
    main()
