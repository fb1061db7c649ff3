"""DMAE: the pixel loss is MAE's on the same mask, the distillation term is mean |normalize(t) - normalize(proj(s))|
against the teacher's aligned block on the student's visible tokens, the teacher shares the student's mask and
runs only up to the aligned block (block calls counted with hooks), teachers by instance / config dict / folder,
and ``hf-mae pretrain`` end to end."""

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import digits_pixels, load_benchmark, run_pretrain
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

import hf_mae
from hf_mae.modeling.dmae import DMAEForPreTraining
from hf_mae.modeling.layers import ProjectionHead
from hf_mae.modeling.mae import MAEConfig, MAEForPreTraining, MAEModel
from hf_mae.modeling.masking import gather_tokens, mask_from_noise
from hf_mae.modeling.presets import TINY

TINY_MAE_TEACHER = dict(TINY, hidden_size=96, num_hidden_layers=6, num_attention_heads=3, intermediate_size=192)


def tiny_vit(**overrides):
    settings = dict(image_size=32, patch_size=4, hidden_size=48, num_hidden_layers=4, num_attention_heads=2,
                    intermediate_size=96, **overrides)
    torch.manual_seed(1)
    return AutoModel.from_config(AutoConfig.for_model("vit", **settings), attn_implementation="eager")


def hf_mae_teacher(seed=1):
    torch.manual_seed(seed)
    return MAEModel(MAEConfig(**TINY_MAE_TEACHER)).eval()


def fixed_inputs(config, batch=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch, 3, 32, 32, generator=generator)
    rows, cols = config.grid_size
    return pixels, torch.rand(batch, rows * cols, generator=generator)


def count_block_calls(teacher):
    """Forward hooks on every block of a ViT-like teacher; returns the call counts (a list, updated in place)."""
    from hf_mae.modeling.teachers import teacher_blocks, teacher_core

    counts = []
    for i, block in enumerate(teacher_blocks(teacher_core(teacher))):
        counts.append(0)
        block.register_forward_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
    return counts


def test_losses_by_hand_from_the_models_parts():
    model = hf_mae.create_model("dmae-tiny").eval()
    config = model.config
    pixels, noise = fixed_inputs(config)
    out = model(pixels, noise=noise)

    # the pixel loss is exactly MAE's on the same mask: an MAEForPreTraining holding the student's weights
    mae = MAEForPreTraining(MAEConfig(**TINY)).eval()
    missing, unexpected = mae.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(key.startswith("projection_heads.") for key in unexpected)
    reference = mae(pixels, noise=noise)
    torch.testing.assert_close(out.reconstruction_loss, reference.loss, rtol=0, atol=1e-6)
    assert torch.equal(out.mask, reference.mask)

    # the distillation term: teacher block 4 (its hidden_states[4]: index 0 is the embeddings), on the student's
    # noise, against the projected student block 3 (before the final norm), cls tokens included
    teacher = model.teacher
    assert type(teacher).__name__ == "ViTMAEModel" and out.teacher_shared_mask
    with torch.no_grad():
        t = teacher(pixels, noise=noise, output_hidden_states=True).hidden_states[config.teacher_layers[0]]
        s = model.mae(pixels, noise=noise, mask_ratio=0.75, output_hidden_states=True).hidden_states[3]
        p = model.projection_heads[0](s)
    assert t.shape == (3, 1 + 16, 192) and p.shape == t.shape
    with torch.no_grad():  # hidden_states[k] is block k's output before the final norm (index 0: the blocks' input)
        states = model.mae(pixels, noise=noise, mask_ratio=0.75, output_hidden_states=True)
        torch.testing.assert_close(model.mae.layernorm(states.hidden_states[4]), states.last_hidden_state)
        torch.testing.assert_close(model.mae.layers[3](states.hidden_states[3])[0], states.hidden_states[4])
    by_hand = (t / t.norm(dim=-1, keepdim=True) - p / p.norm(dim=-1, keepdim=True)).abs().mean()
    torch.testing.assert_close(out.distillation_loss, by_hand, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.loss, out.reconstruction_loss + out.distillation_loss)
    assert out.distillation_loss.item() > 0.01  # a random head: far from the teacher


def test_distillation_weight_scales_the_term():
    pixels, noise = fixed_inputs(hf_mae.create_config("dmae-tiny"))
    torch.manual_seed(0)
    a = hf_mae.create_model("dmae-tiny").eval()(pixels, noise=noise)
    torch.manual_seed(0)
    b = hf_mae.create_model("dmae-tiny", distillation_weight=2.5).eval()(pixels, noise=noise)
    torch.testing.assert_close(b.loss, a.reconstruction_loss + 2.5 * a.distillation_loss)


def test_teacher_sees_the_students_visible_patches_and_stops_at_the_aligned_block():
    """An hf-mae MAE teacher given as an instance: its first block's input is its own embedding of exactly the
    student's visible patches, in the student's order; blocks after the aligned one never run."""
    teacher = hf_mae_teacher()
    config = hf_mae.create_config("dmae-tiny", teacher_layers=[4])
    model = DMAEForPreTraining(config, teacher=teacher).eval()
    assert model.config.teacher_hidden_size == 96 and model.teacher is teacher
    seen = []
    teacher.layers[0].register_forward_hook(lambda module, args, output: seen.append(args[0]))
    counts = count_block_calls(teacher)
    pixels, noise = fixed_inputs(config)
    out = model(pixels, noise=noise)
    assert counts == [1, 1, 1, 1, 0, 0]  # blocks 5 and 6 of 6 never ran
    assert out.teacher_shared_mask
    ids_keep = mask_from_noise(noise, config.mask_ratio).ids_keep
    torch.testing.assert_close(ids_keep, out.ids_restore.argsort(1)[:, :16])
    with torch.no_grad():
        patches, cls = teacher.embeddings(pixels, (8, 8))
    torch.testing.assert_close(seen[0], torch.cat([cls, gather_tokens(patches, ids_keep)], dim=1))
    # the same teacher, untruncated, would have run all six blocks
    counts[:] = [0] * 6
    teacher(pixels, noise=noise, mask_ratio=0.75)
    assert counts == [1] * 6


def test_a_teacher_without_masking_sees_the_whole_image_and_is_gathered():
    """A plain ViTModel cannot take a mask (the documented deviation): it encodes every patch, and its block-k
    tokens at the student's visible patches (cls first) are the target."""
    teacher = tiny_vit()
    model = DMAEForPreTraining(hf_mae.create_config("dmae-tiny", teacher_layers=[2]), teacher=teacher).eval()
    counts = count_block_calls(teacher)
    pixels, noise = fixed_inputs(model.config)
    out = model(pixels, noise=noise)
    assert counts == [1, 1, 0, 0] and out.teacher_shared_mask is False
    with torch.no_grad():
        hidden = teacher(pixels, output_hidden_states=True).hidden_states[2]  # (3, 1 + 64, 48): every patch
        ids_keep = mask_from_noise(noise, 0.75).ids_keep
        t = torch.cat([hidden[:, :1], gather_tokens(hidden[:, 1:], ids_keep)], dim=1)
        s = model.mae(pixels, noise=noise, mask_ratio=0.75, output_hidden_states=True).hidden_states[3]
        p = model.projection_heads[0](s)
    torch.testing.assert_close(out.distillation_loss, (F.normalize(t, dim=-1) - F.normalize(p, dim=-1)).abs().mean())


def test_share_teacher_mask_off_runs_an_mae_teacher_on_the_whole_image():
    teacher = hf_mae_teacher()
    model = DMAEForPreTraining(hf_mae.create_config("dmae-tiny", share_teacher_mask=False), teacher=teacher).eval()
    seen = []
    teacher.layers[0].register_forward_hook(lambda module, args, output: seen.append(args[0].shape))
    pixels, noise = fixed_inputs(model.config)
    out = model(pixels, noise=noise)
    assert out.teacher_shared_mask is False and seen == [(3, 1 + 64, 96)]


def test_several_aligned_pairs_and_projection_modes():
    config = hf_mae.create_config("dmae-tiny", student_layers=[2, 4], teacher_layers=[3, 6], projection_mode="mlp2")
    model = DMAEForPreTraining(config).eval()
    assert len(model.projection_heads) == 2 and len(model.projection_heads[0].layers) == 4
    out = model(*fixed_inputs(config)[:1])
    assert out.distillation_losses.shape == (2,)
    torch.testing.assert_close(out.distillation_loss, out.distillation_losses.sum())
    # the heads: Linear (official fc-1layer), MLP (mlp-1layer: in -> out, GELU, out -> out), two MLPs (mlp-2layer)
    x = torch.randn(2, 5, 8)
    mlp = ProjectionHead(8, 12, "mlp")
    torch.testing.assert_close(mlp(x), mlp.layers[1](F.gelu(mlp.layers[0](x))))
    assert ProjectionHead(8, 12).layers[0].weight.shape == (12, 8)


def test_teacher_is_frozen_not_saved_and_reloads(tmp_path):
    model = hf_mae.create_model("dmae-tiny").train()
    pixels, noise = fixed_inputs(model.config)
    out = model(pixels, noise=noise)
    out.loss.backward()
    teacher = model.teacher
    assert not teacher.training and all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    assert not any("teacher" in key for key in model.state_dict())
    assert not any(p is q for p in teacher.parameters() for q in model.parameters())  # out of the optimiser
    model.save_pretrained(tmp_path)
    again = AutoModelForPreTraining.from_pretrained(tmp_path).eval()  # the teacher rebuilt from the seeded config
    assert isinstance(again, DMAEForPreTraining)
    torch.testing.assert_close(again(pixels, noise=noise).loss, model.eval()(pixels, noise=noise).loss)
    shared = DMAEForPreTraining.from_pretrained(tmp_path, teacher=teacher)
    assert shared.teacher is teacher


def test_teacher_by_folder_name(tmp_path):
    """A tiny hf-mae MAE saved with save_pretrained: AutoModel loads its encoder, whose width is read from the
    folder's config, and it shares the student's mask."""
    torch.manual_seed(1)
    MAEForPreTraining(MAEConfig(**TINY_MAE_TEACHER)).save_pretrained(tmp_path / "teacher")
    model = hf_mae.create_model("dmae-tiny", teacher_config=None, teacher_hidden_size=None,
                                teacher_name_or_path=str(tmp_path / "teacher"))
    assert model.config.teacher_hidden_size == 96
    out = model(*fixed_inputs(model.config))
    assert type(model.teacher).__name__ == "MAEModel" and out.teacher_shared_mask and torch.isfinite(out.loss)


def test_bad_configs():
    with pytest.raises(ValueError, match="pair up"):
        hf_mae.create_config("dmae-tiny", student_layers=[2, 3], teacher_layers=[4])
    with pytest.raises(ValueError, match="student_layers must be block numbers in 1..4"):
        hf_mae.create_config("dmae-tiny", student_layers=[5])
    with pytest.raises(ValueError, match="teacher_layers"):
        hf_mae.create_config("dmae-tiny", teacher_layers=[0])
    with pytest.raises(ValueError, match="projection_mode"):
        hf_mae.create_config("dmae-tiny", projection_mode="conv")
    with pytest.raises(ValueError, match="distillation_loss"):
        hf_mae.create_config("dmae-tiny", distillation_loss="l3")
    with pytest.raises(ValueError, match="teacher_config"):
        hf_mae.create_config("dmae-tiny", teacher_config={"hidden_size": 8})
    model = hf_mae.create_model("dmae-tiny", teacher_layers=[7])  # the teacher has 6 blocks
    with pytest.raises(ValueError, match=r"teacher layers must be block numbers in 1..6"):
        model(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="teacher_hidden_size is 100"):
        hf_mae.create_model("dmae-tiny", teacher_hidden_size=100)(torch.randn(2, 3, 32, 32))


# a smaller student (64-d x 2 / 32-d x 1) and MAE teacher (96-d x 4) at 16 px keep the training test to seconds
SMALL = dict(image_size=16, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
             decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
             decoder_intermediate_size=64, student_layers=[2], teacher_layers=[3], teacher_hidden_size=96,
             teacher_config=dict(model_type="vit_mae", image_size=16, patch_size=4, hidden_size=96, num_hidden_layers=4,
                                 num_attention_heads=3, intermediate_size=192, mask_ratio=0.75))


def test_short_distillation_lowers_both_losses(one_thread):
    """60 steps on digits (16 px) from a random MAE teacher sharing the mask: the pixel and the distillation losses
    both fall."""
    pixels, _ = digits_pixels("train", image_size=16)
    torch.manual_seed(0)
    model = hf_mae.create_model("dmae-tiny", **SMALL).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05, betas=(0.9, 0.95))
    generator = torch.Generator().manual_seed(0)
    pixel, distill = [], []
    for _ in range(60):
        out = model(pixels[torch.randint(0, len(pixels), (32,), generator=generator)])
        assert out.teacher_shared_mask
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        pixel.append(out.reconstruction_loss.item())
        distill.append(out.distillation_loss.item())
    first_p, last_p = sum(pixel[:10]) / 10, sum(pixel[-10:]) / 10
    first_d, last_d = sum(distill[:10]) / 10, sum(distill[-10:]) / 10
    print(f"dmae pixel {first_p:.4f} -> {last_p:.4f}, distillation {first_d:.4f} -> {last_d:.4f}")
    assert last_p < 0.85 * first_p  # measured 1.084 -> 0.676 (x0.62)
    assert last_d < 0.6 * first_d  # measured 0.1006 -> 0.0265 (x0.26)


def test_pretrain_cli_with_teachers_by_config_and_folder(tmp_path, one_thread):
    records = run_pretrain(["--model", "dmae-tiny", "--dataset", "digits", "--max-steps", "3", "--batch-size", "8",
                            "--log-steps", "1"], tmp_path / "preset")  # fmt: skip
    assert len(records) >= 3 and all(r["loss"] > 0 for r in records if "loss" in r)
    assert isinstance(AutoModelForPreTraining.from_pretrained(tmp_path / "preset"), DMAEForPreTraining)
    # a teacher by config dict through --config-overrides (dict fields are JSON)
    vit = dict(model_type="vit", image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=4,
               num_attention_heads=2, intermediate_size=64)
    run_pretrain(["--model", "dmae-tiny", "--dataset", "digits", "--max-steps", "3", "--batch-size", "8",
                  "--config-overrides", f"teacher_config={json.dumps(vit)}", "teacher_hidden_size=32"],
                 tmp_path / "by-config")  # fmt: skip
    saved = json.loads((tmp_path / "by-config" / "config.json").read_text())
    assert saved["teacher_config"]["model_type"] == "vit" and saved["teacher_hidden_size"] == 32
    # a teacher by folder: an hf-mae MAE saved with save_pretrained
    torch.manual_seed(1)
    MAEForPreTraining(MAEConfig(**TINY_MAE_TEACHER)).save_pretrained(tmp_path / "teacher")
    run_pretrain(["--model", "dmae-tiny", "--dataset", "digits", "--max-steps", "3", "--batch-size", "8",
                  "--config-overrides", f"teacher_name_or_path={tmp_path / 'teacher'}", "teacher_config=null",
                  "teacher_hidden_size=96"], tmp_path / "by-folder")  # fmt: skip
    saved = json.loads((tmp_path / "by-folder" / "config.json").read_text())
    assert saved["teacher_name_or_path"] == str(tmp_path / "teacher") and saved["teacher_config"] is None


def test_pretrain_python_api_takes_a_teacher_instance(tmp_path, one_thread):
    from hf_mae.training.pretrain import pretrain

    teacher = hf_mae_teacher()
    pretrain(model="dmae-tiny", dataset="digits", max_steps=2, batch_size=8, output_dir=str(tmp_path),
             teachers={"teacher": teacher})  # fmt: skip
    assert json.loads((tmp_path / "config.json").read_text())["teacher_hidden_size"] == 96


def test_teacher_cost_benchmark_runs():
    bench = load_benchmark("dmae_teacher_cost")
    result = bench.measure(size="tiny", batch=2, repeats=1)
    assert result["blocks_run_truncated"] < result["blocks_run_full"]
    assert result["ratio"] > 0


def test_feature_distillation_losses_by_hand():
    from hf_mae.modeling.losses import feature_distillation_loss

    p, t = torch.tensor([[[3.0, 4.0], [1.0, 0.0]]]), torch.tensor([[[6.0, 8.0], [0.0, 2.0]]])
    # normalised L1: the first tokens point the same way (0), the second differ by |0 - 1| + |1 - 0| over 4 elements
    assert feature_distillation_loss(p, t, "l1_normalized").item() == pytest.approx(0.5)
    assert feature_distillation_loss(p, t, "cosine").item() == pytest.approx(0.5)  # (0 + 1) / 2 tokens
    # standardised target: (6, 8) -> (-1, 1), (0, 2) -> (-1, 1), up to the eps
    expected = ((p - torch.tensor([[[-1.0, 1.0], [-1.0, 1.0]]])) ** 2).mean()
    assert feature_distillation_loss(p, t, "mse_layernorm").item() == pytest.approx(expected.item(), rel=1e-5)
    with pytest.raises(ValueError, match="kind must be one of"):
        feature_distillation_loss(p, t, "l2")
    with pytest.raises(ValueError, match="one shape"):
        feature_distillation_loss(p, t[:, :1], "cosine")
