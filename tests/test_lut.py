"""LUT (Learning with Unmasked Tokens): two disjoint views from one noise draw, the broader-context loss against a
hand computation, the EMA teacher (its exact update, that it moves, and that it stays put in eval / at decay 1),
both losses falling on digits, save/load of the teacher, and a 20-step `hf-mae pretrain` run. The shared model
suite (tests/test_models.py) covers the MAE behaviour of the lut presets."""

import math

import pytest
import torch
from conftest import digits_pixels, run_pretrain
from transformers import AutoModelForPreTraining

import hf_mae
from hf_mae.modeling.lut import LUTForPreTraining, broader_context_loss, second_view_noise
from hf_mae.modeling.mae import MAEForPreTraining
from hf_mae.training.optim import build_adamw

# lut-tiny's 8x8 grid of 4x4 patches on 32-px images, shrunk in width and depth to keep the tests fast
SMALL = dict(hidden_size=32, num_hidden_layers=2, intermediate_size=64, decoder_hidden_size=32,
             decoder_num_hidden_layers=1, decoder_intermediate_size=64, projector_hidden_size=64)  # fmt: skip


def small_model(**overrides) -> LUTForPreTraining:
    return hf_mae.create_model("lut-tiny", **{**SMALL, **overrides})


def two_views(pixel_values: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A second view: each image shifted by up to 2 px (reflect-padded crop, as the official views) and flipped
    horizontally with probability 1/2."""
    batch, _, height, width = pixel_values.shape
    padded = torch.nn.functional.pad(pixel_values, (2, 2, 2, 2), mode="reflect")
    shifts = torch.randint(0, 5, (batch, 2), generator=generator).tolist()
    views = torch.stack([padded[i, :, dy:dy + height, dx:dx + width] for i, (dy, dx) in enumerate(shifts)])
    flip = torch.rand(batch, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], views.flip(-1), views)


def test_the_two_views_keep_disjoint_patches_of_one_noise_draw():
    model = small_model().eval()
    pixel_values, noise = torch.randn(4, 3, 32, 32), torch.rand(4, 64)
    out = model(pixel_values, pixel_values.flip(-1), noise=noise)
    k = int(64 * (1 - 0.75))  # 16 visible patches per view
    ids_shuffle = noise.argsort(1)
    visible_1, visible_2 = (out.mask == 0), (out.mask_2 == 0)
    assert visible_1.sum(1).tolist() == [k] * 4 and visible_2.sum(1).tolist() == [k] * 4
    assert not (visible_1 & visible_2).any()  # disjoint
    for i in range(4):
        assert set(visible_1[i].nonzero().flatten().tolist()) == set(ids_shuffle[i, :k].tolist())
        assert set(visible_2[i].nonzero().flatten().tolist()) == set(ids_shuffle[i, k:2 * k].tolist())
    # view 2's noise keeps ids_shuffle[k:2k] in that order
    assert torch.equal(second_view_noise(noise, k).argsort(1)[:, :k], ids_shuffle[:, k:2 * k])

    # view 1 is MAE: same weights and noise give MAE's mask, logits and loss
    mae = MAEForPreTraining(model.config).eval()
    missing, _ = mae.load_state_dict(model.state_dict(), strict=False)
    assert not missing
    reference = mae(pixel_values, noise=noise)
    assert torch.equal(out.mask, reference.mask) and torch.equal(out.logits, reference.logits)
    assert torch.equal(out.reconstruction_loss, reference.loss)
    assert out.loss.item() == pytest.approx(out.reconstruction_loss.item() + 0.25 * out.bc_loss.item(), abs=1e-6)

    # without pixel_values_2 the same images serve as both views; without noise each call draws new masks
    assert torch.equal(model(pixel_values, noise=noise).mask_2, out.mask_2)
    a, b = model(pixel_values), model(pixel_values)
    assert not torch.equal(a.mask, b.mask) and not ((a.mask == 0) & (a.mask_2 == 0)).any()


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="mask_ratio 0.4.*disjoint"):
        small_model(mask_ratio=0.4)
    with pytest.raises(ValueError, match="projector_hidden_size"):
        small_model(projector_hidden_size=0)
    with pytest.raises(ValueError, match="ema_decay"):
        small_model(ema_decay=1.5)
    model = small_model().eval()
    pixel_values = torch.randn(4, 3, 32, 32)
    with pytest.raises(ValueError, match="mask_ratio.*use mask_ratio >= 0.5"):
        model(pixel_values, mask_ratio=0.3)
    with pytest.raises(ValueError, match="pixel_values_2 must have the shape"):
        model(pixel_values, pixel_values[:2])
    with pytest.raises(TypeError, match="pixel_values"):
        model(pixel_values, pixel_values.to(torch.uint8))
    with pytest.raises(ValueError, match="at least 2"):
        model(pixel_values[:1])
    model(pixel_values, mask_ratio=0.5)  # 2 x 32 visible patches of 64: exactly fits


def test_broader_context_loss_matches_a_hand_computation():
    # BYOL's 2 - 2 cos, masked view v against unmasked view u != v
    q = [torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 3.0]])]
    t = [torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 1.0]])]
    # (q_2, t_1): cos 0 -> 2; (q_1, t_2): cos 1/sqrt(2) -> 2 - sqrt(2)
    assert broader_context_loss(q, t).item() == pytest.approx((2 + 2 - math.sqrt(2)) / 2, abs=1e-6)  # 1.292893

    # the whole model: masked views through projector and predictor, unmasked views through the teacher
    torch.manual_seed(0)
    model = small_model().eval()
    with torch.no_grad():  # move the student away from the teacher, so that mixing them up would show
        for param in model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    view_1, noise = torch.randn(4, 3, 32, 32), torch.rand(4, 64)
    view_2 = torch.randn(4, 3, 32, 32)  # unrelated images, so that a wrong pairing of the views would show
    out = model(view_1, view_2, noise=noise)

    k = 16
    ids_shuffle = noise.argsort(1)
    noise_2 = torch.full_like(noise, 1e3).scatter_(1, ids_shuffle[:, k:2 * k], torch.arange(k).float().expand(4, -1))
    with torch.no_grad():
        def student(pixels, noise):
            tokens = model.mae(pixels, noise=noise).last_hidden_state[:, 1:].mean(1)
            return model.predictor(model.projector(tokens))

        def teacher(pixels):  # Linear, BatchNorm over the batch, ReLU, Linear, written out
            first, norm, _, second = model.teacher.projector
            hidden = model.teacher.encoder(pixels, mask_ratio=0.0).last_hidden_state[:, 1:].mean(1) @ first.weight.T
            mean, var = hidden.mean(0), hidden.var(0, unbiased=False)
            hidden = (hidden - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias
            return hidden.relu() @ second.weight.T

        def bc(q, t):
            return (2 - 2 * (q * t).sum(1) / (q.norm(dim=1) * t.norm(dim=1))).mean()

        q1, q2, t1, t2 = student(view_1, noise), student(view_2, noise_2), teacher(view_1), teacher(view_2)
    expected = (bc(q1, t2) + bc(q2, t1)) / 2
    same_view = (bc(q1, t1) + bc(q2, t2)) / 2
    print(f"L_bc {out.bc_loss.item():.6f}, by hand {expected.item():.6f} (same-view pairing {same_view.item():.6f})")
    assert out.bc_loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert abs(same_view.item() - expected.item()) > 1e-4  # the pairing matters (10x the tolerance above)


def test_the_teacher_is_an_ema_of_the_student_and_moves():
    # the official cosine schedule from ema_decay to 1 over total_steps, then flat; lut-tiny's is 0.99 over 1000
    schedule = small_model(ema_decay=0.996, total_steps=2000)
    assert [round(schedule.ema_decay(step), 6) for step in (0, 1000, 2000, 3000)] == [0.996, 0.998, 1.0, 1.0]
    assert (hf_mae.create_config("lut-tiny").ema_decay, hf_mae.create_config("lut-tiny").total_steps) == (0.99, 1000)

    def train(model, steps, seed=0):
        """AdamW steps on random images; returns the student's teacher-tracked parameters before each forward."""
        generator = torch.Generator().manual_seed(seed)
        optimizer = build_adamw(model, lr=1e-3)
        snapshots = []
        for _ in range(steps):
            snapshots.append({n: p.detach().clone() for n, p in model._student_parameters().items()})
            loss = model(torch.randn(8, 3, 32, 32, generator=generator)).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return snapshots

    # a constant decay of 0.9: the teacher after n forwards is the EMA of the student before each of them
    model = small_model(ema_decay=0.9, ema_decay_end=0.9).train()
    initial = {n: b.clone() for n, b in model.teacher.named_buffers()}
    assert not any(b is p for b in model.teacher.buffers() for p in model.parameters())  # not trained
    snapshots = train(model, 4)
    teacher = dict(model.teacher.named_buffers())
    for name in snapshots[0]:
        expected = initial[name].clone()
        for snapshot in snapshots:
            expected = 0.9 * expected + 0.1 * snapshot[name]
        torch.testing.assert_close(teacher[name], expected, rtol=0, atol=1e-6, msg=name)
    distance = sum((teacher[n] - initial[n]).pow(2).sum() for n in snapshots[0]).sqrt().item()
    print(f"teacher moved by {distance:.4f} (L2 over its parameters) in 4 steps")
    assert distance > 1e-3 and model.lut_step.item() == 4

    # eval forwards leave the teacher (and the step counter) alone
    before = {n: b.clone() for n, b in model.teacher.named_buffers()}
    model.eval()(torch.randn(4, 3, 32, 32))
    assert all(torch.equal(b, before[n]) for n, b in model.teacher.named_buffers()) and model.lut_step.item() == 4

    # decay 1: the teacher keeps its initial weights while the student trains
    model = small_model(ema_decay=1.0).train()
    initial = {n: b.clone() for n, b in model.teacher.named_buffers()}
    train(model, 3)
    assert all(torch.equal(b, initial[n]) for n, b in model.teacher.named_buffers())
    assert not torch.equal(model.mae.embeddings.cls_token, initial["encoder.embeddings.cls_token"])


def test_both_losses_fall_on_digits(one_thread):
    torch.manual_seed(0)
    pixels, _ = digits_pixels("train")
    model = small_model(ema_decay=0.99, total_steps=150).train()
    optimizer = build_adamw(model, lr=2e-3)
    generator = torch.Generator().manual_seed(0)
    reconstruction, bc = [], []
    for _ in range(150):
        batch = pixels[torch.randint(0, len(pixels), (32,), generator=generator)]
        out = model(batch, two_views(batch, generator))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        reconstruction.append(out.reconstruction_loss.item())
        bc.append(out.bc_loss.item())
    first, last = slice(0, 10), slice(-10, None)
    rec_0, rec_1 = sum(reconstruction[first]) / 10, sum(reconstruction[last]) / 10
    bc_0, bc_1 = sum(bc[first]) / 10, sum(bc[last]) / 10
    print(f"digits, 150 steps: L_mae {rec_0:.4f} -> {rec_1:.4f}, L_bc {bc_0:.4f} -> {bc_1:.4f}")
    assert rec_1 < 0.8 * rec_0
    assert bc_1 < 0.5 * bc_0 and bc_1 < 1.0  # well below 2, the level of unrelated embeddings


def test_save_and_load_keep_the_teacher(tmp_path):
    model = small_model(ema_decay=0.5, ema_decay_end=0.5).train()
    optimizer = build_adamw(model, lr=1e-3)
    for _ in range(3):
        loss = model(torch.randn(4, 3, 32, 32)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().save_pretrained(tmp_path)
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert type(loaded) is LUTForPreTraining and loaded.lut_step.item() == 3
    for name, buffer in model.teacher.named_buffers():
        assert torch.equal(dict(loaded.teacher.named_buffers())[name], buffer), name
    # the loaded teacher is the saved EMA, not a fresh copy of the student
    assert not torch.equal(loaded.teacher.encoder.embeddings.cls_token, loaded.mae.embeddings.cls_token)
    pixel_values, noise = torch.randn(4, 3, 32, 32), torch.rand(4, 64)
    assert torch.equal(loaded(pixel_values, noise=noise).bc_loss, model(pixel_values, noise=noise).bc_loss)


def test_pretrain_cli_runs_and_the_loss_falls(tmp_path, one_thread):
    argv = ["--model", "lut-tiny", "--dataset", "digits", "--max-steps", "20",
            "--batch-size", "32", "--lr", "2e-3", "--log-steps", "5",
            "--config-overrides", *[f"{key}={value}" for key, value in SMALL.items()]]  # fmt: skip
    records = run_pretrain(argv, tmp_path / "run")
    folder = tmp_path / "run"
    print(f"lut-tiny loss {records[0]['loss']:.4f} (steps 1-5) -> {records[-1]['loss']:.4f} (steps 16-20)")
    assert records[-1]["loss"] < 0.9 * records[0]["loss"]
    assert (folder / "reconstruction.png").stat().st_size > 0
    model = AutoModelForPreTraining.from_pretrained(folder)
    assert isinstance(model, LUTForPreTraining) and model.lut_step.item() == 20
    assert not torch.equal(model.teacher.encoder.embeddings.cls_token, model.mae.embeddings.cls_token)
