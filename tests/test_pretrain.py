"""`hf-mae pretrain`: a short run whose loss falls, the run folder, resume after SIGKILL (same weights as an
uninterrupted run), 2-process DDP on CPU (gloo), and the bad-input cases. Tiny config, fp32, CPU, one thread."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import hf_mae
from hf_mae.training.pretrain import list_checkpoints, pretrain, resolve_num_workers

TINY = {
    "hidden_size": 32, "num_hidden_layers": 2, "intermediate_size": 64,
    "decoder_hidden_size": 32, "decoder_intermediate_size": 64, "decoder_num_hidden_layers": 1,
}
TINY_CLI = [f"{k}={v}" for k, v in TINY.items()]
# The machine is shared: one thread is faster than two fighting, and in-process and subprocess runs then match.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def cli_args(**kwargs) -> list[str]:
    """pretrain(**kwargs) as command-line arguments."""
    argv = []
    for key, value in kwargs.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, dict):
            argv += [flag, *[f"{k}={v}" for k, v in value.items()]]
        else:
            argv += [flag, str(value)]
    return argv


def folder_digest(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """40 steps of a 2-layer, 32-wide mae-tiny on digits (in-process API). Returns (folder, summary, kwargs)."""
    kwargs = dict(
        model="mae-tiny", config_overrides=TINY, dataset="digits", max_steps=40, batch_size=32, lr=2e-3,
        log_steps=5, save_steps=20, save_total_limit=1,
    )
    torch.set_num_threads(1)
    folder, summary = pretrain(output_dir=tmp_path_factory.mktemp("tiny_run") / "run", **kwargs)
    return folder, summary, kwargs


def test_loss_falls_and_run_folder(tiny_run):
    folder, summary, _ = tiny_run
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    print(f"loss {records[0]['loss']:.4f} (steps 1-5) -> {records[-1]['loss']:.4f} (steps 36-40)")
    # the mean loss of the last 5 steps is at most 60% of the first 5 (observed ~1.38 -> ~0.72)
    assert records[-1]["loss"] < 0.6 * records[0]["loss"]
    assert [r["step"] for r in records] == list(range(5, 41, 5))
    assert all(set(r) == {"step", "loss", "lr", "images_per_s", "epoch"} for r in records)
    assert all(r["images_per_s"] > 0 for r in records)
    lrs = [r["lr"] for r in records]
    assert lrs == sorted(lrs, reverse=True) and lrs[0] <= 2e-3 and lrs[-1] < 1e-4  # cosine towards 0 after warm-up
    assert records[-1]["epoch"] == pytest.approx(40 / 44, abs=1e-3)  # 1437 images // 32 = 44 steps per epoch

    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.json", "preprocessor_config.json", "reconstruction.png", "metrics.json",
            "metrics.jsonl", "run_args.json", "checkpoints", "tensorboard"} <= names
    assert not [n for n in names if n.startswith(".tmp")]
    assert [step for step, _ in list_checkpoints(folder)] == [40]  # --save-total-limit 1 pruned step_20
    assert {p.name for p in (folder / "checkpoints" / "step_40").iterdir()} >= {
        "model.safetensors", "optimizer.bin", "random_states_0.pkl", "custom_checkpoint_0.pkl", "trainer_state.json"}
    assert list((folder / "tensorboard").rglob("events.out.tfevents.*"))

    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["steps"] == 40 and saved["preset"] == "mae-tiny" and saved["dataset"] == "digits"
    assert saved["first_loss"] == records[0]["loss"] and saved["final_loss"] == records[-1]["loss"]
    assert saved["effective_batch_size"] == 32 and saved["num_processes"] == 1 and saved["mixed_precision"] == "no"
    assert saved["num_workers"] == 0  # --num-workers auto on a CPU run
    assert summary["final_loss"] == saved["final_loss"]
    assert json.loads((folder / "run_args.json").read_text())["config_overrides"] == TINY


def test_result_loads_with_auto_classes(tiny_run):
    from transformers import AutoImageProcessor, AutoModelForPreTraining

    folder, _, _ = tiny_run
    model = AutoModelForPreTraining.from_pretrained(folder)
    assert isinstance(model, hf_mae.MAEForPreTraining) and model.config.hidden_size == 32
    checkpoint = load_file(folder / "checkpoints" / "step_40" / "model.safetensors")
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in checkpoint.items())  # final model == last checkpoint
    processor = AutoImageProcessor.from_pretrained(folder)
    assert processor.size == {"height": 32, "width": 32}


def test_resume_after_sigkill_matches_uninterrupted(tmp_path):
    """A run killed with SIGKILL right after its first checkpoint and resumed ends with the same weights and the
    same per-step losses (so the same masks: the torch RNG comes back with the checkpoint) as an uninterrupted one.
    30 steps of 2 accumulated micro-batches of 64 cross two epoch boundaries (11 steps per epoch). The run is
    augmented (MAE's crop + flip, the default) and loads with 2 workers: each image's augmentation is seeded by
    (seed, epoch, index), so the resumed run sees the same pixels."""
    kwargs = dict(
        model="mae-tiny", config_overrides=TINY, dataset="digits", max_steps=30, batch_size=64, grad_accum=2,
        lr=2e-3, clip_grad=1.0, save_steps=4, save_total_limit=3, log_steps=1, report_to="none", num_workers=2,
    )
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, "-m", "hf_mae.training.pretrain", "--output-dir", str(killed), *cli_args(**kwargs)],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.time() + 180
    while not list_checkpoints(killed):
        assert process.poll() is None, f"the run ended before its first checkpoint:\n{process.stderr.read().decode()[-3000:]}"
        assert time.time() < deadline, "no checkpoint within 180 s"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    process.stderr.close()
    assert not (killed / "model.safetensors").exists()
    killed_at = list_checkpoints(killed)[-1][0]

    reference, expected = pretrain(output_dir=tmp_path / "reference", **kwargs)
    resumed, summary = pretrain(output_dir=killed, resume=True, **kwargs)
    print(f"killed after checkpoint step {killed_at}; resumed from step {summary['resumed_from_step']}")
    assert 4 <= summary["resumed_from_step"] < 30 and summary["steps"] == 30
    assert expected["augmentation"] == summary["augmentation"] == (
        "RandomResizedCrop(scale 0.2-1, ratio 0.75-1.33, bicubic) + horizontal flip p 0.5")

    a, b = load_file(reference / "model.safetensors"), load_file(resumed / "model.safetensors")
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    print(f"max |weight difference| resumed vs uninterrupted: {diff:.3g}")
    assert a.keys() == b.keys() and diff <= 1e-6
    ref_log = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    res_log = [json.loads(line) for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in res_log] == list(range(1, 31))  # lines logged after the checkpoint were dropped
    assert all(abs(r["loss"] - s["loss"]) <= 1e-6 and r["lr"] == pytest.approx(s["lr"]) for r, s in zip(ref_log, res_log))
    assert not [p for p in (killed / "checkpoints").iterdir() if p.name.startswith(".tmp")]


def test_resume_and_workers_give_the_same_weights_when_the_processor_draws_at_random(tmp_path):
    """Point-MAE's processor draws each cloud's point subset and scale / shift from torch's global RNG (video frame
    windows and audio augmentation do the same). Those draws are seeded per batch (data.SeededBatches), so an
    uninterrupted run with 0 workers, one with 2 workers, and the 2-worker run resumed from its checkpoint in the
    second epoch (step 7 of 9; 48 clouds, 6 steps per epoch) end with the same weights. Before that seeding, 0 and 2
    workers differed here by 9e-3, and a resumed run by ~4e-4 with 2 workers and ~7e-4 with 0 (accelerate loads the next batch before the step
    that precedes it, from the RNG the checkpoint then saves; 40 steps of batch 16 on `shapes`, resumed at step 25
    or 34). The resumed run reads only the checkpoint and run_args.json, so copying them is the run killed there
    (the SIGKILL itself: the test above)."""
    rng = np.random.default_rng(0)
    clouds = tmp_path / "clouds"
    clouds.mkdir()
    for index in range(48):
        np.save(clouds / f"cloud_{index:02d}.npy", rng.normal(size=(512, 3)).astype(np.float32))
    kwargs = dict(model="pointmae-tiny", dataset=str(clouds), max_steps=9, batch_size=8, lr=1e-3, save_steps=7,
                  log_steps=1, report_to="none")
    main, _ = pretrain(output_dir=tmp_path / "workers0", num_workers=0, **kwargs)
    reference, _ = pretrain(output_dir=tmp_path / "workers2", num_workers=2, **kwargs)
    killed = tmp_path / "killed"
    shutil.copytree(reference / "checkpoints" / "step_7", killed / "checkpoints" / "step_7")
    shutil.copy(reference / "run_args.json", killed)
    resumed, summary = pretrain(output_dir=killed, resume=True, num_workers=2, **kwargs)
    assert summary["resumed_from_step"] == 7 and summary["steps"] == 9

    weights = {name: load_file(folder / "model.safetensors") for name, folder in
               (("workers 0", main), ("workers 2", reference), ("workers 2 resumed", resumed))}
    base = weights["workers 2"]
    for name, other in weights.items():
        diff = max((base[k] - other[k]).abs().max().item() for k in base)
        print(f"max |weight difference| {name} vs workers 2 uninterrupted: {diff:.3g}")
        assert other.keys() == base.keys() and diff <= 1e-6


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path):
    """accelerate launch --multi_gpu --num_processes 2 on CPU (gloo): both ranks end with identical parameters,
    each saw different images, and the saved model is those parameters."""
    folder = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "-m", "hf_mae.training.pretrain", "--output-dir", str(folder),
        *cli_args(model="mae-tiny", config_overrides=TINY, dataset="digits", max_steps=6, batch_size=16, lr=1e-3,
                  log_steps=2, save_steps=3, report_to="none"),
    ]
    result = subprocess.run(command, env={**ENV, "HF_MAE_RANK_REPORT": "1"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    ranks = [json.loads((folder / f"rank_{i}.json").read_text()) for i in range(2)]
    print({r["rank"]: (r["param_sum"], r["first_batch_sha256"][:12]) for r in ranks})
    assert all(r["distributed_type"] == "DistributedType.MULTI_CPU" and r["num_processes"] == 2 for r in ranks)
    assert ranks[0]["param_sha256"] == ranks[1]["param_sha256"]
    assert ranks[0]["first_batch_sha256"] != ranks[1]["first_batch_sha256"]
    assert ranks[0]["data_sha256"] != ranks[1]["data_sha256"] and ranks[0]["batches"] == ranks[1]["batches"] == 6
    summary = json.loads((folder / "metrics.json").read_text())
    assert summary["num_processes"] == 2 and summary["effective_batch_size"] == 32 and summary["steps"] == 6
    assert {p.name for p in (folder / "checkpoints" / "step_6").iterdir()} >= {"random_states_0.pkl", "random_states_1.pkl"}

    from transformers import AutoModelForPreTraining

    from hf_mae.training.pretrain import _tensor_digest

    model = AutoModelForPreTraining.from_pretrained(folder)
    assert _tensor_digest([p for _, p in sorted(model.named_parameters())]) == ranks[0]["param_sha256"]


# ------------------------------------------------------------------------------------------------ bad input


def test_unknown_preset_and_dataset(tmp_path):
    with pytest.raises(ValueError, match=r"unknown model 'mae-nope'.*mae-tiny"):
        pretrain(model="mae-nope", dataset="digits", output_dir=tmp_path / "a")
    with pytest.raises(ValueError, match=r"dataset 'nope' is neither a bundled data set \(digits, shapes, sprites\)"):
        pretrain(model="mae-tiny", dataset="nope", output_dir=tmp_path / "b")
    with pytest.raises(ValueError, match=r"unknown config field\(s\) \['hidden_sise'\]"):
        pretrain(model="mae-tiny", dataset="digits", output_dir=tmp_path / "c", config_overrides=["hidden_sise=3"])
    with pytest.raises(ValueError, match="--batch-size must be >= 1, got 0"):
        pretrain(model="mae-tiny", dataset="digits", output_dir=tmp_path / "d", batch_size=0)
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['max_step'\]"):
        pretrain(model="mae-tiny", dataset="digits", output_dir=tmp_path / "e", max_step=3)
    assert not any((tmp_path / name).exists() for name in "abcde")  # nothing was created


def test_missing_image_column_names_the_columns(tmp_path):
    data = tmp_path / "table"
    data.mkdir()
    (data / "train.csv").write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(ValueError, match=r"no image column found .* columns \['a', 'b'\]"):
        pretrain(model="mae-tiny", dataset=str(data), output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_output_dir_with_a_run_is_refused_then_overwritten(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "metrics.jsonl").write_text('{"step": 999, "loss": 1.0}\n')
    (folder / "notes.txt").write_text("mine")
    common = dict(model="mae-tiny", config_overrides=TINY, dataset="digits", max_steps=2, batch_size=8,
                  log_steps=1, report_to="none", output_dir=folder)
    with pytest.raises(ValueError, match="is not empty .* pass --resume to continue that run or --overwrite"):
        pretrain(**common)
    with pytest.raises(ValueError, match="--resume and --overwrite contradict"):
        pretrain(resume=True, overwrite=True, **common)
    _, summary = pretrain(overwrite=True, gradient_checkpointing=True, **common)
    assert summary["steps"] == 2
    assert [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    assert (folder / "notes.txt").read_text() == "mine"  # --overwrite removes only what a run writes
    assert not (folder / "tensorboard").exists()  # --report-to none: metrics.jsonl only


def test_num_workers_auto_and_bad_values(tmp_path):
    """auto: no workers when the run trains on the CPU (they take cores from the step: benchmarks/data_loading.py);
    an int is taken as it is; anything else is refused naming --num-workers."""
    assert resolve_num_workers(3) == 3
    if not torch.cuda.is_available():
        assert resolve_num_workers("auto") == 0
    else:  # one per core of this process but one, at most 10
        assert 0 <= resolve_num_workers("auto") <= 10
    common = dict(model="mae-tiny", dataset="digits", output_dir=tmp_path / "run", max_steps=1)
    with pytest.raises(ValueError, match=r"--num-workers must be 'auto' or an int >= 0, got 'many'"):
        pretrain(num_workers="many", **common)
    with pytest.raises(ValueError, match=r"--num-workers must be >= 0, got -1"):
        pretrain(num_workers=-1, **common)
    assert not (tmp_path / "run").exists()


def test_report_to_tensorboard_without_tensorboard_is_a_clear_error(tmp_path, monkeypatch):
    # tensorboard made unimportable in this process (None in sys.modules makes `import` raise ImportError)
    for name in ("tensorboard", "torch.utils.tensorboard"):
        monkeypatch.setitem(sys.modules, name, None)
    common = dict(model="mae-tiny", config_overrides=TINY, dataset="digits", max_steps=1, batch_size=8,
                  save_steps=0, log_steps=1)
    with pytest.raises(ValueError, match=r"--report-to tensorboard: tensorboard is not installed .* --report-to none"):
        pretrain(output_dir=tmp_path / "a", report_to="tensorboard", **common)
    assert not (tmp_path / "a").exists()
    # auto falls back to metrics.jsonl alone
    folder, summary = pretrain(output_dir=tmp_path / "b", report_to="auto", **common)
    assert summary["steps"] == 1 and not (folder / "tensorboard").exists()
    assert [json.loads(line)["step"] for line in (folder / "metrics.jsonl").read_text().splitlines()] == [1]


def test_corrupt_checkpoint_at_resume_is_a_clear_error_and_changes_nothing(tiny_run, tmp_path):
    source, _, kwargs = tiny_run
    folder = tmp_path / "run"
    shutil.copytree(source, folder)
    weights = folder / "checkpoints" / "step_40" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated by a full disk, say
    before = folder_digest(folder)
    with pytest.raises(ValueError, match=r"checkpoint .*step_40 is corrupt or truncated"):
        pretrain(output_dir=folder, resume=True, **kwargs)
    assert folder_digest(folder) == before

    (folder / "checkpoints" / "step_40" / "trainer_state.json").unlink()
    with pytest.raises(ValueError, match=r"step_40 is incomplete or corrupt: cannot read trainer_state.json"):
        pretrain(output_dir=folder, resume=True, **kwargs)
    with pytest.raises(ValueError, match=r"arguments differ .*'batch_size': \(32, 16\)"):
        pretrain(output_dir=folder, resume=True, **{**kwargs, "batch_size": 16})


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    folder = tmp_path / "run"
    with pytest.raises(FloatingPointError, match=r"non-finite loss \(nan\) at step 2 .*checkpoints/step_1"):
        # lr 1e30 blows the weights up in one step: the loss of step 2 is NaN
        pretrain(model="mae-tiny", config_overrides=TINY, dataset="digits", output_dir=folder, max_steps=5,
                 batch_size=16, lr=1e30, save_steps=1, report_to="none")
    assert [step for step, _ in list_checkpoints(folder)] == [1]
    assert not (folder / "model.safetensors").exists()


# ------------------------------------------------------------------------------------------------ optim.py


def test_param_groups_lr_scale_and_schedule():
    from hf_mae.training.optim import build_adamw, param_groups, scaled_lr, warmup_cosine, warmup_cosine_schedule

    model = hf_mae.create_model("mae-tiny", **TINY)
    groups = param_groups(model, 0.05, lr=1e-3, lr_scale=lambda name: 0.5 if name.startswith("mae.") else 1.0)
    by_key = {(g["weight_decay"] > 0, g["lr_scale"]): g for g in groups}
    assert set(by_key) == {(True, 0.5), (False, 0.5), (True, 1.0), (False, 1.0)}
    assert all(g["lr"] == 1e-3 * g["lr_scale"] for g in groups)
    no_decay = {n for g in groups if g["weight_decay"] == 0 for n in g["param_names"]}
    named = dict(model.named_parameters())
    assert {"mae.embeddings.cls_token", "decoder.mask_token"} <= no_decay  # 3-D tokens are not decayed
    assert all(named[n].ndim <= 1 or "token" in n for n in no_decay)
    assert {n for n, p in named.items() if p.ndim <= 1} <= no_decay  # norms and biases
    assert sum(len(g["params"]) for g in groups) == len(named)

    assert scaled_lr(1.5e-4, 4096) == pytest.approx(2.4e-3)  # the paper's batch 4096
    optimizer = build_adamw(model, 1e-3)
    assert optimizer.defaults["betas"] == (0.9, 0.95)
    scheduler = warmup_cosine_schedule(optimizer, warmup_steps=4, total_steps=12)
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3]) and lrs[8] == pytest.approx(5e-4)
    assert warmup_cosine(12, 4, 12) == pytest.approx(0.0) and lrs == sorted(lrs[:4]) + sorted(lrs[4:], reverse=True)
    with pytest.raises(ValueError, match=r"warmup_steps must be in \[0, total_steps=12\], got 13"):
        warmup_cosine_schedule(optimizer, 13, 12)


def test_default_lr_follows_the_stated_rule_per_method_and_batch():
    from hf_mae.training.pretrain import LR_RULE, build_parser, resolve_lr

    def lr(model, batch, *argv):
        args = build_parser().parse_args(["--model", model, "--dataset", "x", "--output-dir", "y", *argv])
        return resolve_lr(args, effective_batch=batch)

    # MAE's paper lr 1.5e-4 * 4096 / 256 = 2.4e-3 at its batch 4096; square root below, linear above
    for model in ("mae-tiny", "colormae-tiny", "lut-tiny", "videomae-tiny"):
        assert lr(model, 4096) == pytest.approx(2.4e-3) and lr(model, 8192) == pytest.approx(4.8e-3)
        assert lr(model, 1024) == pytest.approx(1.2e-3) and lr(model, 256) == pytest.approx(6e-4)
        assert lr(model, 64) == pytest.approx(3e-4) and lr(model, 16) == pytest.approx(1.5e-4)
    # the others from their own paper's lr at their own batch, by the same rule (the rows' comments cite the source)
    for model, paper_lr, paper_batch in (("hpm-tiny", 1.2e-3, 2048), ("cropmae-tiny", 8e-4, 2048),
                                         ("dmjd-tiny", 1.2e-3, 512), ("simmim-tiny", 4e-4, 2048)):
        assert lr(model, paper_batch) == pytest.approx(paper_lr) and lr(model, 2 * paper_batch) == pytest.approx(2 * paper_lr)
        assert lr(model, paper_batch // 4) == pytest.approx(paper_lr / 2)
    assert lr("simmim-tiny", 64) == pytest.approx(7.07e-5, rel=1e-3) and lr("dmjd-tiny", 64) == pytest.approx(4.24e-4, rel=1e-3)
    assert lr("graphmae-tiny", 1) == lr("pointmae-tiny", 64) == 1e-3  # their recipes' absolute lr
    # --base-lr is the papers' knob: their linear rule, as their scripts use it; --lr wins over both
    assert lr("mae-tiny", 64, "--base-lr", "1.5e-4") == pytest.approx(3.75e-5)
    assert lr("graphmae-tiny", 1, "--base-lr", "0.256") == pytest.approx(1e-3)
    assert lr("mae-tiny", 64, "--base-lr", "1.5e-4", "--lr", "0.01") == 0.01
    flat_help = " ".join(build_parser().format_help().split())
    assert " ".join(LR_RULE.split()) in flat_help and "2.4e-3 at 4096, 6e-4 at 256, 3e-4 at 64" in flat_help


def test_default_length_is_whole_epochs_of_at_least_the_minimum_steps():
    import argparse

    from hf_mae.training.pretrain import DEFAULT_MIN_STEPS, build_parser, plan_steps

    defaults = build_parser().parse_args(["--model", "mae-tiny", "--dataset", "x", "--output-dir", "y"])
    assert DEFAULT_MIN_STEPS == 500
    assert plan_steps(defaults, 22) == 23 * 22  # digits at batch 64: 23 epochs, 506 steps
    assert plan_steps(defaults, 78) == 7 * 78  # 5,000 CIFAR-10 images at batch 64
    assert plan_steps(defaults, 20_000) == 20_000  # a large data set: one epoch
    assert plan_steps(argparse.Namespace(**{**vars(defaults), "epochs": 1.0}), 22) == 22
    assert plan_steps(argparse.Namespace(**{**vars(defaults), "epochs": 2.0, "max_steps": 7}), 22) == 7
    flat_help = " ".join(build_parser().format_help().split())
    assert "passes over the data (default: whole epochs of at least 500 steps)" in flat_help
