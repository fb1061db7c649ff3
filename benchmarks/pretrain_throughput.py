"""Pre-training speed and memory: hf-mae ``MAEForPreTraining`` vs transformers ``ViTMAEForPreTraining``.

For each config both models are built with identical weights (hf-mae's, with the fused qkv split into q/k/v for
ViTMAE) and fed the same images and the same ``noise`` (hence the same mask); the script first checks that the two
fp32 losses agree to 1e-5, so the comparison is at equal loss. Then it times full training steps (zero_grad,
forward, backward, AdamW step; the optimizer is built identically for both), interleaved A B, B A, A B ... so that
load from other processes hits both alike, and reports medians after warm-up.

Reported per config: images/s of each, the ratio hf-mae / transformers (median of the per-repeat paired ratios;
> 1 means hf-mae is faster), the model FLOPs per step (analytic, cross-checked with FlopCounterMode), MFU against a
matmul peak measured in the same process, and the peak memory of one step for each model, measured in a fresh
subprocess per model (see ``measure_step_memory``).

    python benchmarks/pretrain_throughput.py                                  # CPU, fp32, the three default configs
    python benchmarks/pretrain_throughput.py --device cuda --dtype bf16 --configs vit-b16-224 --batch-size 128
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (  # noqa: E402
    CONFIGS,
    analytic_step_flops,
    build_model,
    build_pair,
    counted_step_flops,
    machine_info,
    matmul_peak,
    median,
    synchronize,
)

LIBRARIES = ("hf-mae", "transformers")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DEFAULT_CONFIGS = ("vit-ti16-224", "vit-s16-224", "vit-ti4-32")
LOSS_TOLERANCE = 1e-5


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS), choices=sorted(CONFIGS))
    parser.add_argument("--batch-size", type=int, nargs="+", default=None,
                        help="one per config, or one for all (default: 16 at 224 px, 64 at 32 px; x8 on cuda)")
    parser.add_argument("--repeats", type=int, default=6, help="timed repeats per model (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed repeats per model before timing")
    parser.add_argument("--steps", type=int, default=1, help="training steps per repeat")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None,
                        help="compute dtype via autocast (default: bf16 on cuda, fp32 on cpu)")
    parser.add_argument("--optimizer", choices=("foreach", "fused", "for-loop"), default="fused",
                        help="AdamW implementation, the same for both models (fused is the fastest on CPU too)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-model peak-memory subprocesses")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("--memory-worker", default=None, help=argparse.SUPPRESS)  # internal: one model's memory
    args = parser.parse_args(argv)
    if args.memory_worker is None:
        args.device = torch.device(args.device)
        args.dtype = args.dtype or ("bf16" if args.device.type == "cuda" else "fp32")
        sizes = args.batch_size or [None]
        if len(sizes) not in (1, len(args.configs)):
            parser.error(f"--batch-size takes 1 or {len(args.configs)} values (one per config), got {len(sizes)}")
        sizes = sizes * len(args.configs) if len(sizes) == 1 else sizes
        args.batch_sizes = [size or default_batch_size(name, args.device) for name, size in zip(args.configs, sizes)]
        for name, value in (("--repeats", args.repeats), ("--steps", args.steps), *(("--batch-size", b) for b in args.batch_sizes)):
            if value < 1:
                parser.error(f"{name} must be >= 1, got {value}")
    return args


def default_batch_size(name: str, device: torch.device) -> int:
    size = 64 if CONFIGS[name].image_size <= 64 else 16
    return size * 8 if device.type == "cuda" else size


def make_optimizer(model, kind: str):
    """AdamW with MAE's hyper-parameters; ``kind`` picks the implementation (identical for both models)."""
    flags = {"foreach": dict(foreach=True), "fused": dict(fused=True), "for-loop": dict(foreach=False)}[kind]
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.AdamW(params, lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05, **flags)


def autocast(device: torch.device, dtype: str):
    if dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=DTYPES[dtype])


def train_step(model, optimizer, pixel_values, noise, device, dtype) -> None:
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, dtype):
        loss = model(pixel_values=pixel_values, noise=noise).loss
    loss.backward()
    optimizer.step()


def make_inputs(config, batch_size: int, device: torch.device, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch_size, config.num_channels, config.image_size, config.image_size, generator=generator)
    noise = torch.rand(batch_size, config.num_patches, generator=generator)
    return pixels.to(device), noise.to(device)


def check_equal_loss(ours, theirs, pixels, noise) -> float:
    """fp32 losses of both models on the same images and noise; raises if they differ by more than 1e-5."""
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            ours_loss = ours(pixel_values=pixels, noise=noise).loss.item()
            theirs_loss = theirs(pixel_values=pixels, noise=noise).loss.item()
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
    difference = abs(ours_loss - theirs_loss)
    if difference > LOSS_TOLERANCE:
        raise SystemExit(f"losses differ: hf-mae {ours_loss:.8f} vs transformers {theirs_loss:.8f} (|diff| {difference:.2e})")
    return difference


def time_steps(model, optimizer, pixels, noise, steps, device, dtype) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of ``steps`` training steps."""
    synchronize(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        train_step(model, optimizer, pixels, noise, device, dtype)
    synchronize(device)
    return time.perf_counter() - start, time.process_time() - cpu_start


def benchmark_config(name: str, batch_size: int, args) -> dict:
    config = CONFIGS[name]
    ours, theirs = build_pair(config)
    ours.to(args.device)
    theirs.to(args.device)
    pixels, noise = make_inputs(config, batch_size, args.device)
    loss_difference = check_equal_loss(ours, theirs, pixels, noise)

    flops = analytic_step_flops(config, batch_size)["step"]
    # The counter runs a slow eager step: count 2 images and scale (FLOPs are linear in the batch).
    counted = counted_step_flops(ours, pixels[:2], noise[:2]) * batch_size // min(2, batch_size)

    models = {"hf-mae": ours, "transformers": theirs}
    optimizers = {lib: make_optimizer(model, args.optimizer) for lib, model in models.items()}
    times, cpu_times = {lib: [] for lib in LIBRARIES}, {lib: [] for lib in LIBRARIES}
    for repeat in range(args.warmup + args.repeats):
        order = LIBRARIES if repeat % 2 == 0 else LIBRARIES[::-1]  # A B, B A, ...: drift hits both alike
        line = []
        for lib in order:
            seconds, cpu_seconds = time_steps(models[lib], optimizers[lib], pixels, noise, args.steps, args.device, args.dtype)
            line.append(f"{lib} {seconds:.3f}s")
            if repeat >= args.warmup:
                times[lib].append(seconds)
                cpu_times[lib].append(cpu_seconds)
        print(f"  {name} repeat {repeat}{' (warm-up)' if repeat < args.warmup else ''}: {', '.join(line)}", flush=True)

    images = batch_size * args.steps
    result = {
        "config": name,
        "batch_size": batch_size,
        "loss_abs_diff": loss_difference,
        "flops_per_step": flops,
        "flops_per_step_counted": counted,
        "ratio": median([t / o for o, t in zip(times["hf-mae"], times["transformers"])]),
        # The same ratio in process CPU time: less sensitive to time slices lost to other processes.
        "ratio_cpu_time": median([t / o for o, t in zip(cpu_times["hf-mae"], cpu_times["transformers"])]),
    }
    for lib in LIBRARIES:
        seconds = median(times[lib])
        result[lib] = {
            "images_per_s": images / seconds,
            "step_s": seconds / args.steps,
            "step_s_all": [t / args.steps for t in times[lib]],
            "step_cpu_s": median(cpu_times[lib]) / args.steps,
        }
    del ours, theirs, models, optimizers
    gc.collect()
    return result


# ---------------------------------------------------------------------------------------------- peak memory


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def measure_step_memory(spec: dict) -> dict:
    """Runs in a fresh process: one model's extra memory during a training step, above its resting footprint.

    Resting = weights + AdamW state, after two warm-up steps and with gradients freed (zero_grad(set_to_none)).
    CUDA: ``max_memory_allocated`` during the step minus ``memory_allocated`` before it (tensor bytes).
    CPU: the peak resident set size (VmHWM, reset through /proc/self/clear_refs) minus the RSS before the step.
    The parent sets glibc's mmap threshold to 64 KiB so tensors are mmapped and given back on free; the RSS then
    follows live tensor memory instead of malloc's cached heap.
    """
    device, dtype = torch.device(spec["device"]), spec["dtype"]
    torch.set_num_threads(spec["threads"])
    config = CONFIGS[spec["config"]]
    torch.manual_seed(0)
    model = build_model(config, spec["library"]).to(device)
    optimizer = make_optimizer(model, spec["optimizer"])
    pixels, noise = make_inputs(config, spec["batch_size"], device)
    for _ in range(2):
        train_step(model, optimizer, pixels, noise, device, dtype)
    optimizer.zero_grad(set_to_none=True)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        train_step(model, optimizer, pixels, noise, device, dtype)
        torch.cuda.synchronize(device)
        return {"step_peak_mib": (torch.cuda.max_memory_allocated(device) - before) / 2**20,
                "resting_mib": before / 2**20, "method": "cuda max_memory_allocated"}
    before = rss_kib("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    train_step(model, optimizer, pixels, noise, device, dtype)
    return {"step_peak_mib": (rss_kib("VmHWM") - before) / 1024, "resting_mib": before / 1024, "method": "rss high-water mark"}


def step_memory(name: str, library: str, batch_size: int, args) -> dict:
    spec = dict(config=name, library=library, batch_size=batch_size, device=str(args.device), dtype=args.dtype,
                optimizer=args.optimizer, threads=torch.get_num_threads())
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", MALLOC_TRIM_THRESHOLD_="0")
    completed = subprocess.run([sys.executable, __file__, "--memory-worker", json.dumps(spec)], env=env,
                               capture_output=True, text=True)
    if completed.returncode:
        raise SystemExit(f"memory worker for {name}/{library} failed:\n{completed.stderr[-2000:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- report


def format_table(results: list[dict], memory: bool) -> str:
    header = ["config", "batch", "hf-mae img/s", "transformers img/s", "ratio", "CPU-time ratio", "GFLOP/step",
              "MFU hf-mae", "MFU transformers"]
    if memory:
        header += ["step peak MiB hf-mae", "step peak MiB transformers"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        ours, theirs = r["hf-mae"], r["transformers"]
        cells = [r["config"], str(r["batch_size"]), f"{ours['images_per_s']:.2f}", f"{theirs['images_per_s']:.2f}",
                 f"{r['ratio']:.3f}", f"{r['ratio_cpu_time']:.3f}", f"{r['flops_per_step'] / 1e9:.1f}", f"{ours['mfu']:.1%}", f"{theirs['mfu']:.1%}"]
        if memory:
            cells += [f"{ours['memory']['step_peak_mib']:.0f}", f"{theirs['memory']['step_peak_mib']:.0f}"]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as f:
        json.dump(payload, f, indent=2)
    os.replace(f.name, path)  # never leave a half-written file


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.memory_worker is not None:
        print(json.dumps(measure_step_memory(json.loads(args.memory_worker))))
        return 0
    if args.device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda was given but torch.cuda.is_available() is False")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    info = machine_info(args.device)
    peak_dtype = DTYPES[args.dtype]
    peak = matmul_peak(args.device, peak_dtype)
    print(f"machine: {info}")
    print(f"measured {args.dtype} matmul peak: {peak / 1e9:.1f} GFLOP/s; optimizer AdamW({args.optimizer})", flush=True)

    results = []
    for name, batch_size in zip(args.configs, args.batch_sizes):
        result = benchmark_config(name, batch_size, args)
        if not args.no_memory:
            for lib in LIBRARIES:
                result[lib]["memory"] = step_memory(name, lib, batch_size, args)
        agree = result["flops_per_step_counted"] / result["flops_per_step"] - 1
        print(f"{name}: |loss diff| {result['loss_abs_diff']:.1e}; FLOPs/step analytic {result['flops_per_step']:.4g}, "
              f"FlopCounterMode {result['flops_per_step_counted']:.4g} ({agree:+.2%}); ratio {result['ratio']:.3f} "
              f"(CPU-time ratio {result['ratio_cpu_time']:.3f})",
              flush=True)
        results.append(result)

    peak_after = matmul_peak(args.device, peak_dtype)
    print(f"matmul peak again after the runs: {peak_after / 1e9:.1f} GFLOP/s (a difference means other load on the machine)")
    # MFU against the better of the two measurements: that is what the hardware can do when it is not shared.
    peak = max(peak, peak_after)
    for result in results:
        for lib in LIBRARIES:
            result[lib]["mfu"] = result["flops_per_step"] / result[lib]["step_s"] / peak
    print()
    print(format_table(results, not args.no_memory))
    if args.json is not None:
        write_json(args.json, {"machine": info, "argv": sys.argv, "dtype": args.dtype, "optimizer": args.optimizer,
                               "steps": args.steps, "repeats": args.repeats, "matmul_peak_flops_used": peak,
                               "matmul_peak_flops_after": peak_after, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
