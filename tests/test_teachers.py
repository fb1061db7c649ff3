"""teachers.py: the EMA teacher (schedules and update against the formulas by hand, buffers outside the optimiser,
saved and loaded), the optimiser-step hook (HPM, LUT; once per real optimiser step under gradient accumulation in
`hf-mae pretrain`), the frozen teacher (by name, config dict and instance; frozen, out of the state dict unless
asked, no gradients) and the target choice."""

import math

import pytest
import torch
from torch import nn
from transformers import AutoModelForPreTraining, ViTConfig, ViTModel

import hf_mae
from hf_mae.modeling.targets import hog_target, pixel_target
from hf_mae.modeling.teachers import (
    EMATeacher,
    FrozenTeacherMixin,
    MomentumSchedule,
    build_auto_model,
    build_frozen_teacher,
    check_teacher_fields,
    reconstruction_target,
    teacher_blocks,
    teacher_forward,
)
from hf_mae.training.optim import build_adamw

VIT = dict(model_type="vit", image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
           intermediate_size=32)  # fmt: skip
HPM_SMALL = dict(hidden_size=32, num_hidden_layers=1, intermediate_size=64, decoder_hidden_size=32,
                 decoder_num_hidden_layers=1, decoder_intermediate_size=64)  # fmt: skip


# ------------------------------------------------------------------------------------------- EMA teacher


def test_momentum_schedules_match_the_formulas():
    # linear (HPM): 0.99 -> 0.999 over the first half of 100 steps, then flat
    linear = MomentumSchedule(0.99, 0.999, 100, kind="linear", ramp=0.5)
    assert [linear(s) for s in (0, 25, 50, 80, 500)] == pytest.approx([0.99, 0.9945, 0.999, 0.999, 0.999], abs=1e-12)
    assert linear.at_progress(0.1) == pytest.approx(0.99 + 0.2 * 0.009, abs=1e-12)
    # cosine (BYOL / iBOT / LUT): 1 - (1 - 0.996) * (1 + cos(pi * k / K)) / 2
    cosine = MomentumSchedule(0.996, 1.0, 100)
    expected = [1 - 0.004 * (1 + math.cos(math.pi * k / 100)) / 2 for k in (0, 25, 50, 100)]
    assert [cosine(s) for s in (0, 25, 50, 100, 300)] == pytest.approx(expected + [1.0], abs=1e-12)
    assert cosine(25) == pytest.approx(0.9965857864, abs=1e-10)
    for bad, match in ((dict(kind="step"), "kind"), (dict(start=1.5), "start"), (dict(total_steps=0), "total_steps")):
        with pytest.raises(ValueError, match=match):
            MomentumSchedule(**{"start": 0.9, "end": 1.0, "total_steps": 10, **bad})


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_ema_update_is_the_formula_by_hand(kind):
    torch.manual_seed(0)
    student = {"body": nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)), "head": nn.Linear(4, 2, bias=False)}
    schedule = MomentumSchedule(0.5, 0.9, 10, kind=kind, ramp=1.0)
    teacher = EMATeacher(schedule, body=nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)), head=nn.Linear(4, 2, bias=False))
    assert list(teacher.parameters()) == [] and len(list(teacher.buffers())) == 5  # weights are buffers
    teacher.copy_from(student)
    assert all(torch.equal(b, p) for b, p in zip(teacher.buffers(), [*student["body"].parameters(), *student["head"].parameters()]))
    before = {n: b.clone() for n, b in teacher.named_buffers()}
    with torch.no_grad():
        for module in student.values():
            for p in module.parameters():
                p.add_(torch.randn_like(p))
    momentum = teacher.update(student, 4)
    by_hand = 0.5 + 0.4 * 0.4 if kind == "linear" else 0.9 - 0.4 * (1 + math.cos(math.pi * 0.4)) / 2
    assert momentum == pytest.approx(by_hand, abs=1e-12)
    online = {f"{part}.{n}": p for part, m in student.items() for n, p in m.named_parameters()}
    for name, buffer in teacher.named_buffers():
        torch.testing.assert_close(buffer, by_hand * before[name] + (1 - by_hand) * online[name], rtol=0, atol=1e-6)  # float32 rounding
    with pytest.raises(ValueError, match="student must name"):
        teacher.update({"body": student["body"]}, 5)


def test_hpm_teacher_is_outside_the_optimiser_and_saved(tmp_path):
    model = hf_mae.create_model("hpm-tiny", **HPM_SMALL).train()
    teacher_tensors = {id(b) for b in model.teacher.buffers()}
    optimised = {id(p) for group in build_adamw(model, lr=1e-3).param_groups for p in group["params"]}
    assert teacher_tensors and not teacher_tensors & optimised
    assert not any(name.startswith("teacher.") for name, _ in model.named_parameters())
    assert sum(k.startswith("teacher.") for k in model.state_dict()) == len(teacher_tensors)
    # move the student, then the teacher one hook step: it is neither the student nor its initial copy
    initial = model.teacher.encoder.embeddings.cls_token.clone()
    with torch.no_grad():
        model.mae.embeddings.cls_token.add_(1.0)
    assert model.after_optimizer_step(1) and model.hpm_step.item() == 1
    m = model.teacher.schedule(1)  # hpm-tiny: linear 0.99 -> 0.999 over 12.5% of 1000 steps
    assert m == pytest.approx(0.99 + 1 / 125 * 0.009, abs=1e-12)
    torch.testing.assert_close(model.teacher.encoder.embeddings.cls_token, initial + (1 - m), rtol=0, atol=1e-6)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert loaded.hpm_step.item() == 1
    saved = dict(model.teacher.named_buffers())
    assert all(torch.equal(b, saved[n]) for n, b in loaded.teacher.named_buffers())
    assert not torch.equal(loaded.teacher.encoder.embeddings.cls_token, loaded.mae.embeddings.cls_token)


def test_the_hook_moves_once_per_step_and_then_forwards_leave_the_teacher():
    model = hf_mae.create_model("lut-tiny", **HPM_SMALL, projector_hidden_size=32).train()
    pixels = torch.randn(2, 3, 32, 32)
    # without the hook (a plain loop): every training forward moves the teacher and counts
    model(pixels)
    model(pixels)
    assert model.lut_step.item() == 2 and not model.teacher.updated_by_hook

    model = hf_mae.create_model("lut-tiny", **HPM_SMALL, projector_hidden_size=32).train()
    assert model.after_optimizer_step(0) is False  # hands the teacher to the caller, moves nothing
    state = {n: b.clone() for n, b in model.teacher.named_buffers()}
    with torch.no_grad():
        model.mae.embeddings.cls_token.add_(1.0)
    model(pixels)
    model(pixels)  # two micro-batches: the teacher stays
    assert model.lut_step.item() == 0 and all(torch.equal(b, state[n]) for n, b in model.teacher.named_buffers())
    assert model.after_optimizer_step(1) is True and model.lut_step.item() == 1
    moved = model.teacher.encoder.embeddings.cls_token.clone()
    assert not torch.equal(moved, state["encoder.embeddings.cls_token"])
    assert model.after_optimizer_step(1) is False  # the same step twice: applied once
    assert torch.equal(model.teacher.encoder.embeddings.cls_token, moved)
    assert model.after_optimizer_step() is True and model.lut_step.item() == 2  # None: the next step
    with pytest.raises(ValueError, match="step must be an int >= 0"):
        model.after_optimizer_step(-1)


def test_pretrain_moves_the_ema_once_per_optimiser_step_under_gradient_accumulation(tmp_path, monkeypatch, one_thread):
    """3 optimiser steps of 2 micro-batches each: 6 training forwards, but the teacher moves 3 times, at steps
    1, 2, 3, and the saved counter is 3 (before the hook it moved 6 times and counted 6)."""
    from conftest import run_pretrain

    moves, forwards = [], []
    original_update, original_forward = EMATeacher.update, type(hf_mae.create_model("hpm-tiny")).forward

    def update(self, student, step):
        moves.append(step)
        return original_update(self, student, step)

    def forward(self, *args, **kwargs):
        forwards.append(self.training)
        return original_forward(self, *args, **kwargs)

    monkeypatch.setattr(EMATeacher, "update", update)
    monkeypatch.setattr(type(hf_mae.create_model("hpm-tiny")), "forward", forward)
    argv = ["--model", "hpm-tiny", "--dataset", "digits", "--max-steps", "3", "--grad-accum", "2", "--batch-size", "8",
            "--log-steps", "1", "--save-steps", "0", "--report-to", "none",
            "--config-overrides", *[f"{k}={v}" for k, v in HPM_SMALL.items()]]  # fmt: skip
    run_pretrain(argv, tmp_path / "run")
    assert forwards.count(True) == 6 and moves == [1, 2, 3]
    model = AutoModelForPreTraining.from_pretrained(tmp_path / "run")
    assert model.hpm_step.item() == 3


def test_pretrain_resume_continues_the_teacher_exactly(tmp_path, one_thread):
    """hpm-tiny, 4 optimiser steps of 2 micro-batches, checkpoints at 2 and 4; resuming a copy of the run from
    step 2 ends with the uninterrupted run's weights, teacher and counter included."""
    import shutil

    from conftest import run_pretrain
    from safetensors.torch import load_file

    argv = ["--model", "hpm-tiny", "--dataset", "digits", "--max-steps", "4", "--grad-accum", "2", "--batch-size", "8",
            "--log-steps", "1", "--save-steps", "2", "--report-to", "none",
            "--config-overrides", *[f"{k}={v}" for k, v in HPM_SMALL.items()]]  # fmt: skip
    run_pretrain(argv, tmp_path / "full")
    shutil.copytree(tmp_path / "full", tmp_path / "resumed")
    shutil.rmtree(tmp_path / "resumed" / "checkpoints" / "step_4")  # as if stopped after step 2
    run_pretrain([*argv, "--resume"], tmp_path / "resumed")
    full, resumed = load_file(tmp_path / "full" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert full.keys() == resumed.keys() and sum(k.startswith("teacher.") for k in full) > 0
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    assert full["hpm_step"].item() == 4


class _Images(torch.utils.data.Dataset):
    """12 seeded random 32x32 images: 6 micro-batches of 2."""

    def __init__(self):
        self.pixels = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.pixels)

    def __getitem__(self, i):
        return {"pixel_values": self.pixels[i]}


@pytest.mark.parametrize("with_callback", [True, False])
def test_trainer_callback_moves_the_ema_once_per_optimiser_step(tmp_path, monkeypatch, one_thread, with_callback):
    """transformers' Trainer, gradient_accumulation_steps=2 over 6 micro-batches = 3 optimiser steps. With
    OptimizerStepHookCallback the teacher moves 3 times, at steps 1, 2, 3, and counts 3; without it every training
    forward moves it (the fallback): 6 moves, counter 6."""
    from transformers import Trainer, TrainingArguments

    model = hf_mae.create_model("hpm-tiny", **HPM_SMALL)
    initial = {n: b.clone() for n, b in model.teacher.named_buffers()}
    moves, hook_steps = [], []
    original_move, original_update = EMATeacher.move_towards, EMATeacher.update

    def move_towards(self, student, momentum):
        moves.append(momentum)
        return original_move(self, student, momentum)

    def update(self, student, step):
        hook_steps.append(step)
        return original_update(self, student, step)

    monkeypatch.setattr(EMATeacher, "move_towards", move_towards)
    monkeypatch.setattr(EMATeacher, "update", update)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, gradient_accumulation_steps=2,
                             num_train_epochs=1, learning_rate=1e-3, save_strategy="no", report_to="none",
                             use_cpu=True, disable_tqdm=True, logging_strategy="no", seed=0)  # fmt: skip
    callbacks = [hf_mae.OptimizerStepHookCallback()] if with_callback else []
    trainer = Trainer(model=model, args=args, train_dataset=_Images(), callbacks=callbacks)
    trainer.train()
    assert trainer.state.global_step == 3
    if with_callback:
        assert hook_steps == [1, 2, 3] and len(moves) == 3 and model.hpm_step.item() == 3
    else:
        assert hook_steps == [] and len(moves) == 6 and model.hpm_step.item() == 6
    assert not torch.equal(model.teacher.encoder.embeddings.cls_token, initial["encoder.embeddings.cls_token"])


def test_trainer_callback_leaves_a_model_without_the_hook_alone(tmp_path):
    callback = hf_mae.OptimizerStepHookCallback()
    model = hf_mae.create_model("mae-tiny")
    state = {n: t.clone() for n, t in model.state_dict().items()}
    from transformers import TrainerControl, TrainerState

    callback.on_train_begin(None, TrainerState(), TrainerControl(), model=model)
    callback.on_step_end(None, TrainerState(global_step=1), TrainerControl(), model=model)
    assert all(torch.equal(t, state[n]) for n, t in model.state_dict().items())


def test_trainer_callback_refuses_fsdp1(tmp_path):
    """FSDP1 keeps parameters as flat shards the EMA cannot read: the callback says so before training (a
    one-process gloo group on CPU is enough to wrap the model)."""
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel
    from transformers import TrainerControl, TrainerState

    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        wrapped = FullyShardedDataParallel(hf_mae.create_model("hpm-tiny", **HPM_SMALL), device_id=torch.device("cpu"))
        with pytest.raises(ValueError, match="HPMForPreTraining has an EMA teacher.*FSDP1.*use FSDP2"):
            hf_mae.OptimizerStepHookCallback().on_train_begin(None, TrainerState(), TrainerControl(), model=wrapped)
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------- frozen teacher


class Student(FrozenTeacherMixin, nn.Module):
    def __init__(self, teacher=None, save=False):
        super().__init__()
        self.head = nn.Linear(16, 4)
        self.set_frozen_teacher("teacher", teacher, save=save)

    def forward(self, pixel_values):
        with torch.no_grad():
            features = self.frozen_teacher("teacher", pixel_values.device, lambda: build_auto_model(config=VIT, seed=3))(
                pixel_values
            ).last_hidden_state
        return self.head(features).pow(2).mean()


def test_frozen_teacher_by_config_name_and_instance(tmp_path):
    # a config dict with a seed: the same weights every time, the global RNG untouched
    state = torch.random.get_rng_state()
    a, b = build_auto_model(config=VIT, seed=3), build_auto_model(config=VIT, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert type(a) is ViTModel and all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.embeddings.cls_token, build_auto_model(config=VIT, seed=4).embeddings.cls_token)
    # by name (a folder here; a Hub id the same way)
    a.save_pretrained(tmp_path / "vit")
    by_name = build_auto_model(str(tmp_path / "vit"))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), by_name.state_dict().values()))
    # an instance, held by the student
    instance = ViTModel(ViTConfig(**{k: v for k, v in VIT.items() if k != "model_type"}))
    student = Student(instance)
    assert student.teacher is instance and not instance.training and not any(p.requires_grad for p in instance.parameters())
    with pytest.raises(ValueError, match="model_type"):
        build_auto_model(config={"hidden_size": 8})
    with pytest.raises(ValueError, match="name_or_path"):
        build_auto_model()
    with pytest.raises(TypeError, match="teacher must be an nn.Module"):
        Student(teacher="vit")


def test_frozen_teacher_is_out_of_the_state_dict_unless_asked_and_gets_no_gradients():
    student = Student()  # built on first use from the seeded config
    assert student.teacher is None
    loss = student(torch.randn(2, 3, 16, 16))
    loss.backward()
    teacher = student.teacher
    assert isinstance(teacher, ViTModel) and not teacher.training
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert student.head.weight.grad is not None
    assert list(student.state_dict()) == ["head.weight", "head.bias"]
    assert {id(p) for p in student.parameters()} == {id(student.head.weight), id(student.head.bias)}  # no optimiser
    student.train()
    assert not teacher.training

    saved = Student(build_auto_model(config=VIT, seed=3), save=True)  # asked: a submodule, in the state dict
    assert sum(k.startswith("teacher.") for k in saved.state_dict()) == len(teacher.state_dict())
    saved.train()
    assert not saved.teacher.training and saved.head.training  # train() keeps the teacher in eval mode
    assert not any(p.requires_grad for p in saved.teacher.parameters())
    optimised = {id(p) for group in build_adamw(saved, lr=1e-3).param_groups for p in group["params"]}
    assert optimised == {id(saved.head.weight), id(saved.head.bias)}


def test_i2pmae_and_tgm_teachers_stay_out_of_the_optimiser():
    model = hf_mae.create_model("i2pmae-tiny").train()
    teacher = model.get_teacher(torch.device("cpu"))
    assert model.teacher is teacher and not teacher.training
    optimised = {id(p) for group in build_adamw(model, lr=1e-3).param_groups for p in group["params"]}
    assert not {id(p) for p in teacher.parameters()} & optimised
    assert not any(k.startswith("teacher") for k in model.state_dict())
    tgm = hf_mae.create_model("tgm-tiny").train()
    clip = tgm.dual_encoder(torch.device("cpu"))
    assert not any(k.startswith("clip") for k in tgm.state_dict()) and not clip.training
    assert not {id(p) for p in clip.parameters()} & {id(p) for p in tgm.parameters()}


# ------------------------------------------------------------ frozen teachers from config fields, teacher_forward

TINY_TEACHERS = {  # three block layouts teacher_forward must find: ViT, CLIP's vision tower, DINOv2 with registers
    "vit": dict(model_type="vit", image_size=16, patch_size=4, hidden_size=16, num_hidden_layers=3,
                num_attention_heads=2, intermediate_size=32),
    "clip": dict(model_type="clip_vision_model", image_size=16, patch_size=4, hidden_size=16, num_hidden_layers=3,
                 num_attention_heads=2, intermediate_size=32),
    "dinov2_registers": dict(model_type="dinov2_with_registers", image_size=16, patch_size=4, hidden_size=16,
                             num_hidden_layers=3, num_attention_heads=2, mlp_ratio=2, num_register_tokens=2),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(TINY_TEACHERS))
def test_teacher_forward_returns_the_models_own_hidden_states_and_attentions(kind):
    teacher = build_auto_model(config=TINY_TEACHERS[kind], seed=0, attn_implementation="eager").eval()
    images = torch.randn(2, 3, 16, 16)
    features = teacher_forward(teacher, images, output_attentions=True)
    reference = teacher(pixel_values=images, output_hidden_states=True, output_attentions=True)
    # hidden_states[i] is block i+1's output (transformers' tuple starts with the embeddings)
    assert len(features.hidden_states) == 3
    for mine, theirs in zip(features.hidden_states, reference.hidden_states[1:]):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    torch.testing.assert_close(features.last_hidden_state, reference.last_hidden_state, rtol=0, atol=0)
    assert features.num_prefix_tokens == (3 if kind == "dinov2_registers" else 1) and features.grid == (4, 4)
    assert features.patch_tokens(features.hidden_states[0]).shape == (2, 16, 16)
    # the cls row of the last attention map, averaged over heads, at the patch columns
    expected = reference.attentions[-1].mean(dim=1)[:, 0, features.num_prefix_tokens:]
    torch.testing.assert_close(features.cls_attention(), expected, rtol=0, atol=1e-7)
    assert not features.hidden_states[0].requires_grad


def test_teacher_forward_truncated_runs_only_the_blocks_it_needs():
    teacher = build_auto_model(config=TINY_TEACHERS["vit"], seed=0).eval()
    calls = []
    for index, block in enumerate(teacher_blocks(teacher)):
        block.register_forward_hook(lambda module, args, out, index=index: calls.append(index))
    images = torch.randn(2, 3, 16, 16)
    full = teacher_forward(teacher, images)
    assert calls == [0, 1, 2]
    calls.clear()
    cut = teacher_forward(teacher, images, stop_after=2)
    assert calls == [0, 1] and cut.last_hidden_state is None and len(cut.hidden_states) == 2
    torch.testing.assert_close(cut.hidden_states[1], full.hidden_states[1], rtol=0, atol=0)
    # the hooks are gone afterwards: a later plain forward runs every block
    calls.clear()
    teacher(pixel_values=images)
    assert calls == [0, 1, 2]
    with pytest.raises(ValueError, match=r"stop_after must be a block number in \[1, 3\] or None, got 4"):
        teacher_forward(teacher, images, stop_after=4)
    with pytest.raises(ValueError, match="cannot be combined with stop_after"):
        teacher_forward(teacher, images, stop_after=1, output_attentions=True)


def test_teacher_forward_renormalises_resizes_and_masks_an_mae_teacher():
    teacher = build_auto_model(config=TINY_TEACHERS["vit"], seed=0).eval()
    raw = torch.rand(2, 3, 16, 16)
    imagenet = (raw - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    clip_mean, clip_std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    clip_input = (raw - torch.tensor(clip_mean).view(1, 3, 1, 1)) / torch.tensor(clip_std).view(1, 3, 1, 1)
    features = teacher_forward(teacher, imagenet, image_mean=clip_mean, image_std=clip_std)
    torch.testing.assert_close(features.last_hidden_state, teacher(pixel_values=clip_input).last_hidden_state,
                               rtol=0, atol=1e-5)
    # 32-px images for a 16-px teacher are resized (bicubic), and the tokens can be put on the student's 8x8 grid
    big = teacher_forward(teacher, torch.randn(2, 3, 32, 32))
    assert big.grid == (4, 4) and big.patch_tokens(big.last_hidden_state, grid=(8, 8)).shape == (2, 64, 16)
    # an hf-mae MAE teacher given the student's noise sees the student's visible patches only
    mae = hf_mae.MAEModel(hf_mae.create_config("mae-tiny", num_hidden_layers=2)).eval()
    noise = torch.rand(2, 64)
    masked = teacher_forward(mae, torch.randn(2, 3, 32, 32), noise=noise, mask_ratio=0.75)
    assert masked.hidden_states[-1].shape == (2, 1 + 16, 128) and masked.num_prefix_tokens == 1


def test_frozen_teacher_from_config_fields():
    from dataclasses import dataclass

    @dataclass
    class Fields:
        teacher_name_or_path: object = None
        teacher_config: object = None
        teacher_seed: object = 0

    settings = Fields(teacher_config=TINY_TEACHERS["vit"])
    check_teacher_fields(settings)
    assert settings.teacher_config is not TINY_TEACHERS["vit"]  # copied: a preset table is never shared
    first, second = build_frozen_teacher(settings), build_frozen_teacher(settings)
    assert not first.training and not any(p.requires_grad for p in first.parameters())
    assert first.config._attn_implementation == "eager"
    for a, b in zip(first.parameters(), second.parameters()):  # the seed fixes the random teacher
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="teacher_config must be a config dict with a 'model_type' key"):
        check_teacher_fields(Fields(teacher_config={"hidden_size": 8}))
    with pytest.raises(ValueError, match="teacher_seed must be an int, got '0'"):
        check_teacher_fields(Fields(teacher_seed="0"))
    with pytest.raises(ValueError, match="mim_teacher_name_or_path must be a Hub id or folder"):
        check_teacher_fields(type("F", (), dict(mim_teacher_name_or_path="", mim_teacher_config=None,
                                                mim_teacher_seed=0))(), prefix="mim_teacher")
    with pytest.raises(ValueError, match="needs a teacher: set teacher_name_or_path or teacher_config"):
        build_frozen_teacher(Fields())


def test_pretrain_refuses_teachers_the_model_does_not_take(tmp_path):
    from hf_mae.training.pretrain import pretrain

    teacher = build_auto_model(config=TINY_TEACHERS["vit"], seed=0)
    with pytest.raises(ValueError, match=r"MAEForPreTraining takes no \['teacher'\]; its teacher keywords are none"):
        pretrain(model="mae-tiny", dataset="digits", output_dir=str(tmp_path / "run"), teachers={"teacher": teacher})
    with pytest.raises(TypeError, match="teachers must be a dict"):
        pretrain(model="mae-tiny", dataset="digits", output_dir=str(tmp_path / "run"), teachers=[teacher])
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------------------------------------ targets


def test_reconstruction_target_choice():
    pixels = torch.randn(2, 3, 16, 16)
    assert torch.equal(reconstruction_target("pixels", pixels, 8, norm_pix=True), pixel_target(pixels, 8, True))
    assert torch.equal(reconstruction_target("hog", pixels, 8, hog_cell_size=4), hog_target(pixels, 8, cell_size=4))
    features = torch.randn(2, 4, 5, requires_grad=True)
    target = reconstruction_target("teacher", pixels, 8, teacher_features=lambda x: features * 2)
    assert torch.equal(target, features.detach() * 2) and not target.requires_grad
    with pytest.raises(ValueError, match="teacher_features"):
        reconstruction_target("teacher", pixels, 8)
    with pytest.raises(ValueError, match=r"kind must be one of \('pixels', 'hog', 'teacher'\)"):
        reconstruction_target("depth", pixels, 8)
