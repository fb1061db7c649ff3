"""What a frozen teacher costs a distillation method's training step, and whether caching its features would pay.

    python benchmarks/teacher_cost.py --threads 1 --teacher teacher=runs/teachers/mae-cifar10
    python benchmarks/teacher_cost.py --methods maskalign dmae --dataset ../shared/data/cifar10 --threads 1

For every named method (default: each registered image method whose pre-training model holds a frozen teacher), the
``<method>-tiny`` model (with the ``--teacher`` folders of ``compare_methods.py``, else its tiny random teacher) takes
training steps (forward + backward + AdamW) on one shared batch of ``--dataset`` train images, the methods
interleaved in a rotating order per repeat in this one process, as ``compare_methods.py`` times them. Forward hooks
on each frozen teacher (the models ``teachers.FrozenTeacherMixin`` holds) time its forwards inside the step. The
report gives, per method, the median step time, the teacher's share of it, and the speed-up a feature cache could
give at most (``1 / (1 - share)``: a cache removes the teacher's forward and nothing else).

A cache only ever hits for an image the teacher has seen *as it is*: ``hf-mae pretrain`` augments every image afresh
(the methods' random crops and flips, on by default), so there a cache never hits; it can only serve a run with
``--no-augment`` (or fixed, pre-computed views), which gives up the augmentation the papers train with.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info, median  # noqa: E402
from compare_methods import parse_teachers, shared_batch, teacher_overrides, tiny_preset, train_step  # noqa: E402

from hf_mae.files import write_json  # noqa: E402
from hf_mae.registry import METHODS, create_model  # noqa: E402
from hf_mae.training.optim import build_adamw  # noqa: E402


def frozen_teachers(model: torch.nn.Module) -> dict:
    """The frozen teachers a model holds (``FrozenTeacherMixin`` keeps them outside the module tree, or as saved
    submodules): attribute name -> model."""
    found = {name: value for name, value in vars(model).items() if isinstance(value, torch.nn.Module)}
    for name in vars(model).get("_saved_teachers", ()):
        found[name] = model._modules[name]
    return found


def teacher_methods() -> list[str]:
    """Image methods whose tiny pre-training model holds a frozen teacher once it has taken a step."""
    return [name for name, method in METHODS.items() if method.modality == "image" and tiny_preset(name)
            and "FrozenTeacherMixin" in {cls.__name__ for cls in method.model_classes["pretraining"].__mro__}]


class TeacherClock:
    """Sums the wall time of every forward of the given modules (pre- and post-forward hooks)."""

    def __init__(self, modules):
        self.seconds, self._start, self._handles = 0.0, [], []
        for module in modules:
            self._handles.append(module.register_forward_pre_hook(self._enter))
            self._handles.append(module.register_forward_hook(self._leave))

    def _enter(self, module, args):
        self._start.append(time.perf_counter())

    def _leave(self, module, args, output):
        self.seconds += time.perf_counter() - self._start.pop()

    def close(self):
        for handle in self._handles:
            handle.remove()


def measure(methods: list[str], args) -> dict:
    teachers = parse_teachers(args.teacher)
    models, pixels = {}, None
    for method in methods:
        preset = tiny_preset(method)
        torch.manual_seed(0)
        model = create_model(preset, **teacher_overrides(method, teachers)).train()
        optimizer = build_adamw(model, 1e-4)
        if pixels is None:
            pixels = shared_batch(preset, args.dataset, args.batch_size)
        for _ in range(args.warmup):  # also builds (loads) the teacher on its first forward
            train_step(model, optimizer, pixels)
        found = frozen_teachers(model)
        if not found:  # CAE's tokenizer slot is empty with its pixel target
            if args.methods:
                raise ValueError(f"--methods: {method}-tiny holds no frozen teacher after a step")
            print(f"{method}: {preset} holds no frozen teacher (nothing to time); skipped")
            continue
        # the encoder a teacher runs (CLIP's vision tower: teacher_forward calls it, not the wrapper)
        clock = TeacherClock(getattr(teacher, "vision_model", teacher) for teacher in found.values())
        models[method] = (model, optimizer, clock, sorted(found))
    steps, teacher_time = {m: [] for m in models}, {m: [] for m in models}
    order = list(models)
    for repeat in range(args.repeats):
        shift = repeat % len(order)
        for method in order[shift:] + order[:shift]:
            model, optimizer, clock, _ = models[method]
            clock.seconds = 0.0
            start = time.perf_counter()
            for _ in range(args.steps):
                train_step(model, optimizer, pixels)
            steps[method].append((time.perf_counter() - start) / args.steps)
            teacher_time[method].append(clock.seconds / args.steps)
    results = {}
    for method, (model, _, clock, names) in models.items():
        clock.close()
        share = median([t / s for t, s in zip(teacher_time[method], steps[method])])
        results[method] = {
            "teachers": names,
            "teacher_overrides": teacher_overrides(method, teachers),
            "step_ms": 1000 * median(steps[method]),
            "teacher_ms": 1000 * median(teacher_time[method]),
            "teacher_share": share,
            "cache_speedup_at_most": 1 / (1 - share) if share < 1 else float("inf"),
        }
    return results


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="+", default=None, help="default: every image method with a frozen teacher")
    parser.add_argument("--dataset", default="digits", help="digits or an image folder with train/ (default: digits)")
    parser.add_argument("--teacher", nargs="*", default=[], metavar="PREFIX=FOLDER",
                        help="as compare_methods.py: a folder for every method whose config has <PREFIX>_name_or_path")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", default=None, help="write the results here")
    return parser


def main(argv=None) -> dict:
    args = build_parser().parse_args(argv)
    available = teacher_methods()
    methods = args.methods or available
    unknown = [m for m in methods if m not in available]
    if unknown:
        raise ValueError(f"--methods: {unknown} are no image methods with a frozen teacher; those are {available}")
    for name in ("batch_size", "steps", "repeats"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    results = measure(methods, args)
    print(f"{torch.get_num_threads()} thread(s), batch {args.batch_size}, median of {args.repeats} repeats")
    print("| method | teacher(s) | step (ms) | teacher forward (ms) | share | a feature cache: speed-up at most |")
    print("|---|---|---|---|---|---|")
    for method, row in results.items():
        print(f"| {method} | {', '.join(row['teachers'])} | {row['step_ms']:.0f} | {row['teacher_ms']:.0f} | "
              f"{row['teacher_share']:.2f} | {row['cache_speedup_at_most']:.2f}x |")
    output = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine_info(torch.device("cpu")),
              "batch_size": args.batch_size, "results": results}
    if args.json:
        write_json(args.json, output)
    return output


if __name__ == "__main__":
    try:
        main()
    except ValueError as error:
        sys.exit(f"error: {error}")
