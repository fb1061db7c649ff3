"""Shared test fixtures. Tests run on CPU in fp32 with tiny configs; data comes from scikit-learn's bundled
digits or ../shared/data (skipped with a reason where absent). Nothing here reaches the network."""

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Under pytest-xdist (`python3 dev.py test` runs one worker per core): one torch thread per worker, for the tests'
# own subprocesses too, so the workers share the cores instead of oversubscribing them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def load_benchmark(name: str):
    """The module of ``benchmarks/<name>.py`` (a script, not a package; its sibling imports resolve)."""
    import importlib.util
    import sys

    folder = ROOT / "benchmarks"
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shared_data(name: str) -> Path:
    """Path of a data set in ../shared/data, or skip the test saying why."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent (the real data sets live in ../shared/data beside the checkout)")
    return path


def digits_pixels(split: str = "train", image_size: int = 32):
    """(pixel_values (n, 3, s, s) float32, labels (n,) long) of scikit-learn's digits through the mae-tiny processor."""
    import hf_mae
    from hf_mae.training.data import collate, load_image_dataset, with_model_inputs

    processor = hf_mae.create_processor("mae-tiny", image_size=image_size)
    dataset = with_model_inputs(load_image_dataset("digits", split), processor)
    batch = collate([dataset[i] for i in range(len(dataset))])
    return batch["pixel_values"], batch["labels"]


def pretrain_tiny(steps: int = 800, batch_size: int = 64, lr: float = 1.5e-3, seed: int = 0, image_size: int = 32,
                  **overrides):
    """Pretrains mae-tiny on digits: AdamW (0.9, 0.95), weight decay 0.05 off norms/biases/tokens, 5% warm-up then
    cosine, as the MAE recipe (hf_mae.training.optim). Returns (model, list of per-step losses)."""
    import hf_mae
    from hf_mae.training.optim import build_adamw, warmup_cosine_schedule

    torch.manual_seed(seed)
    pixels, _ = digits_pixels("train", image_size)
    model = hf_mae.create_model("mae-tiny", image_size=image_size, **overrides).train()
    optimizer = build_adamw(model, lr=lr, weight_decay=0.05)
    schedule = warmup_cosine_schedule(optimizer, warmup_steps=steps // 20, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for step in range(steps):
        idx = torch.randint(0, len(pixels), (batch_size,), generator=generator)
        loss = model(pixels[idx]).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
    return model.eval(), losses


# 8x8 digits shown at 16 px in 4-px patches: 16 tokens, 2-3x cheaper per step than 32 px and nothing of the digit lost
FIXTURE_IMAGE_SIZE = 16


@pytest.fixture(scope="session")
def pretrained_mae(tmp_path_factory):
    """A mae-tiny at 16 px pretrained for 800 steps on digits, saved as a Hugging Face folder (model + processor).
    Returns (folder, losses)."""
    import hf_mae

    import json

    from filelock import FileLock

    # under xdist the workers share one run folder (the parent of their own): the first to get here trains, the
    # others wait for it and load; a serial run keeps it in its own folder
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    folder, losses_file = root / "pretrained_mae", root / "pretrained_mae_losses.json"
    with FileLock(str(root / "pretrained_mae.lock")):
        if not losses_file.exists():
            model, losses = pretrain_tiny(image_size=FIXTURE_IMAGE_SIZE, seed=0)
            model.save_pretrained(folder)
            hf_mae.create_processor("mae-tiny", image_size=FIXTURE_IMAGE_SIZE).save_pretrained(folder)
            losses_file.write_text(json.dumps(losses))  # last: its presence means the folder is complete
    return folder, json.loads(losses_file.read_text())


@pytest.fixture
def one_thread():
    """Runs the test on one torch thread (training loops: no OpenMP oversubscription when the suite shares cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_pretrain(argv, output_dir):
    """``hf-mae pretrain *argv --output-dir output_dir``; returns the run's metrics.jsonl records (asserts exit 0)."""
    import json

    from hf_mae import cli

    assert cli.main(["pretrain", *argv, "--output-dir", str(output_dir)]) == 0
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


def _flex_attention_unavailable_reason() -> str | None:
    """Why flex attention cannot run here, or None. transformers always runs it through torch.compile, which on CPU
    builds C++ kernels (inductor), so a C++ compiler must be on PATH."""
    import shutil

    from transformers.utils import is_torch_flex_attn_available

    if not is_torch_flex_attn_available():
        return "this torch has no torch.nn.attention.flex_attention"
    if not torch.cuda.is_available() and not any(shutil.which(c) for c in (os.environ.get("CXX", "g++"), "c++", "clang++")):
        return "flex attention on CPU compiles C++ kernels (torch.compile / inductor) and no C++ compiler is on PATH"
    return None


@pytest.fixture
def fresh_flex_compile():
    """Forget earlier compilations first. transformers compiles flex attention once per process; called again with
    other shapes (another model's test in the same worker) torch recompiles it with dynamic shapes, and torch 2.13's
    CPU flex template then emits C++ that does not compile ('cur_qSplitSize8' was not declared)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


requires_flex_attention = pytest.mark.skipif(
    _flex_attention_unavailable_reason() is not None, reason=str(_flex_attention_unavailable_reason())
)
