"""FSDP with teachers, on 2 CPU processes (gloo): an EMA teacher (hpm-tiny) and a frozen teacher (i2pmae-tiny) train
under PyTorch's FSDP2 ``fully_shard`` and resume from a sharded (torch.distributed.checkpoint) checkpoint with the
same weights as an uninterrupted run.

Why not ``accelerate launch --use_fsdp`` here: Accelerate 1.16 enables FSDP only for accelerator devices. On CPU
(``Accelerator(cpu=True)``, which multi-process CPU runs need) ``--use_fsdp --fsdp_version 2 --num_processes 2``
silently runs as ``DistributedType.MULTI_CPU``, i.e. DDP (measured: both ranks report MULTI_CPU and
``DistributedDataParallel``); without ``cpu=True`` it runs two independent ``DistributedType.NO`` jobs. So this test
drives FSDP2 itself with what ``hf-mae pretrain`` does under Accelerate's FSDP2 on GPUs: shard the blocks and the
root, step, call ``model.after_optimizer_step(step)`` (the EMA reads the sharded ``DTensor`` parameters with
``full_tensor()``), save and load the sharded state.

Run by hand: ``python -m torch.distributed.run --nproc_per_node 2 tests/test_fsdp.py worker OUT_DIR``.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HPM = dict(hidden_size=32, num_hidden_layers=2, intermediate_size=64, decoder_hidden_size=32,
           decoder_num_hidden_layers=1, decoder_intermediate_size=64, total_steps=4, ema_decay=0.5,
           ema_decay_end=0.9)  # fmt: skip
STEPS, SAVE_AT = 4, 2


def batch_for(preset: str, step: int, rank: int):
    """Each rank's own inputs for ``step`` (different data per rank, as a distributed sampler gives)."""
    import torch

    generator = torch.Generator().manual_seed(1000 * rank + step)
    if preset == "hpm-tiny":
        return {"pixel_values": torch.randn(4, 3, 32, 32, generator=generator)}
    return {"point_values": torch.randn(2, 256, 3, generator=generator)}


def build(preset: str):
    """The model, sharded as Accelerate's FSDP2 transformer-block wrap does (every block with parameters, then the
    root), and its optimiser."""
    import torch
    from torch.distributed.fsdp import fully_shard

    import hf_mae

    torch.manual_seed(0)
    model = hf_mae.create_model(preset, **(HPM if preset == "hpm-tiny" else {})).train()
    blocks = tuple(model._no_split_modules or ())
    for module in list(model.modules()):
        if type(module).__name__ in blocks and any(True for _ in module.parameters()):
            fully_shard(module)
    fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    return model, optimizer


def train_steps(model, optimizer, preset: str, rank: int, first: int, last: int) -> list[float]:
    losses = []
    for step in range(first, last + 1):
        loss = model(**batch_for(preset, step, rank)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if hasattr(model, "after_optimizer_step"):
            model.after_optimizer_step(step)
        losses.append(loss.item())
    return losses


BATCH_NORM_STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def full_state(model) -> dict:
    """The state dict, gathered whole (parameters are sharded DTensors, buffers are not), less BatchNorm's running
    statistics: FSDP leaves them per rank (DDP would broadcast rank 0's) and the sharded checkpoint keeps one copy,
    so they are no measure of the teachers."""
    return {
        k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
        for k, v in model.state_dict().items()
        if not k.endswith(BATCH_NORM_STATISTICS)
    }


def worker(out_dir: str) -> None:
    import torch
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.set_num_threads(1)
    report = {}
    for preset in ("hpm-tiny", "i2pmae-tiny"):
        checkpoint = os.path.join(out_dir, f"{preset}-step{SAVE_AT}")
        # uninterrupted run, saving a sharded checkpoint (model + optimiser + this rank's RNG) half-way
        model, optimizer = build(preset)
        if hasattr(model, "after_optimizer_step"):
            model.after_optimizer_step(0)
        initial = full_state(model)
        losses = train_steps(model, optimizer, preset, rank, 1, SAVE_AT)
        model_state, optimizer_state = get_state_dict(model, optimizer)
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=checkpoint)
        torch.save(torch.random.get_rng_state(), os.path.join(checkpoint, f"rng_{rank}.pt"))
        losses += train_steps(model, optimizer, preset, rank, SAVE_AT + 1, STEPS)
        final = full_state(model)
        info = {"losses": losses, "sharded": type(next(model.parameters())).__name__}

        if preset == "hpm-tiny":
            teacher = {k: v for k, v in final.items() if k.startswith("teacher.")}
            info["teacher_keys"] = len(teacher)
            info["teacher_is_dtensor"] = any(hasattr(b, "full_tensor") for b in model.teacher.buffers())
            info["teacher_moved"] = max((final[k] - initial[k]).abs().max().item() for k in teacher)
            info["counter"] = int(final["hpm_step"])
        else:
            frozen = model.teacher
            info["teacher_keys"] = sum(k.startswith("teacher") for k in final)
            info["teacher_is_dtensor"] = any(hasattr(p, "full_tensor") for p in frozen.parameters())
            info["teacher_frozen"] = all(not p.requires_grad and p.grad is None for p in frozen.parameters())
        digest = sum(float(v.double().sum()) for v in final.values())
        digests = [None, None]
        dist.all_gather_object(digests, digest)
        info["ranks_agree"] = digests[0] == digests[1]

        # resume: a fresh model loads the sharded checkpoint and finishes the run
        model, optimizer = build(preset)
        model_state, optimizer_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optimizer": optimizer_state}
        dcp.load(state, checkpoint_id=checkpoint)
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        torch.random.set_rng_state(torch.load(os.path.join(checkpoint, f"rng_{rank}.pt")))
        if hasattr(model, "after_optimizer_step"):
            model.after_optimizer_step(SAVE_AT)  # the resumed step: hands the teacher over, moves nothing
        resumed_losses = train_steps(model, optimizer, preset, rank, SAVE_AT + 1, STEPS)
        resumed = full_state(model)
        info["resumed_losses"] = resumed_losses
        info["resume_max_difference"] = max((resumed[k].double() - final[k].double()).abs().max().item() for k in final)
        info["resume_same_keys"] = sorted(resumed) == sorted(final)
        report[preset] = info
    if rank == 0:
        Path(out_dir, "report.json").write_text(json.dumps(report, indent=1))
    dist.destroy_process_group()


@pytest.mark.slow
def test_fsdp2_on_two_cpu_processes_trains_and_resumes_teacher_methods(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               __file__, "worker", str(tmp_path)]  # fmt: skip
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((tmp_path / "report.json").read_text())
    print(json.dumps(report, indent=1))
    hpm, i2p = report["hpm-tiny"], report["i2pmae-tiny"]
    for info in (hpm, i2p):
        assert info["sharded"] == "DTensor" and info["ranks_agree"] and info["resume_same_keys"]
        assert info["resume_max_difference"] == 0.0  # the resumed run ends with the uninterrupted run's weights
        assert info["resumed_losses"] == info["losses"][SAVE_AT:]
        assert all(loss == loss for loss in info["losses"])  # finite
    # EMA teacher: buffers, replicated (not sharded), saved, moved once per step (4 steps -> counter 4)
    assert hpm["teacher_keys"] > 0 and not hpm["teacher_is_dtensor"] and hpm["counter"] == STEPS
    assert hpm["teacher_moved"] > 1e-4
    # frozen teacher: outside the sharded module tree and the checkpoint, no gradients
    assert i2p["teacher_keys"] == 0 and not i2p["teacher_is_dtensor"] and i2p["teacher_frozen"]


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    worker(sys.argv[2])
