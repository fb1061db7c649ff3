"""MR-MAE: the pixel loss is MAE's masked MSE on the same mask, each teacher's mimic loss is the MSE between the
projected visible encoder tokens and the teacher's standardised tokens at the same patches (the teacher seeing the
whole image, CLIP's images re-normalised), one or two teachers by instance / config dict / folder, training lowers
both losses and the mimic term does not slow the pixel loss down against plain MAE, and ``hf-mae pretrain`` end
to end."""

import json

import pytest
import torch
from conftest import digits_pixels, run_pretrain
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

import hf_mae
from hf_mae.modeling.mae import MAEConfig, MAEForPreTraining
from hf_mae.modeling.masking import gather_tokens, mask_from_noise
from hf_mae.modeling.mrmae import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, MRMAEForPreTraining
from hf_mae.modeling.presets import TINY
from hf_mae.modeling.teachers import teacher_blocks

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def fixed_inputs(batch=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 32, 32, generator=generator), torch.rand(batch, 64, generator=generator)


def tiny_vit(hidden_size=40, layers=3, seed=2):
    settings = dict(image_size=32, patch_size=4, hidden_size=hidden_size, num_hidden_layers=layers,
                    num_attention_heads=2, intermediate_size=2 * hidden_size)
    torch.manual_seed(seed)
    return AutoModel.from_config(AutoConfig.for_model("vit", **settings), attn_implementation="eager")


def standardised(t):
    return (t - t.mean(-1, keepdim=True)) / (t.var(-1, unbiased=False, keepdim=True) + 1e-6).sqrt()


def test_losses_by_hand_from_the_models_parts():
    model = hf_mae.create_model("mrmae-tiny").eval()
    pixels, noise = fixed_inputs()
    out = model(pixels, noise=noise)
    assert model.teacher_names == ["teacher", "second_teacher"] and out.mimic_losses.shape == (2,)

    # the pixel loss is exactly MAE's on the same mask: an MAEForPreTraining holding the student's weights
    mae = MAEForPreTraining(MAEConfig(**TINY)).eval()
    missing, unexpected = mae.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(key.startswith("mimic_heads.") for key in unexpected)
    reference = mae(pixels, noise=noise)
    torch.testing.assert_close(out.reconstruction_loss, reference.loss, rtol=0, atol=1e-6)
    assert torch.equal(out.mask, reference.mask)

    # the mimic losses: the final-normed visible patch tokens of the encoder, through each teacher's head, against
    # the teacher's last block (whole image) at the same patches, standardised per token
    ids_keep = mask_from_noise(noise, 0.75).ids_keep
    column = lambda v: torch.tensor(v).view(1, 3, 1, 1)  # noqa: E731
    raw = pixels * column(IMAGENET_STD) + column(IMAGENET_MEAN)
    clip_pixels = (raw - column(OPENAI_CLIP_MEAN)) / column(OPENAI_CLIP_STD)
    with torch.no_grad():
        student = model.mae(pixels, noise=noise, mask_ratio=0.75).last_hidden_state[:, 1:]
        clip = model.teacher(pixel_values=clip_pixels, output_hidden_states=True).hidden_states[2]  # block 2 of 2
        vit = model.second_teacher(pixel_values=pixels, output_hidden_states=True).hidden_states[2]
        expected = []
        for hidden, head in zip((clip, vit), model.mimic_heads):
            target = standardised(gather_tokens(hidden[:, 1:], ids_keep))
            expected.append((head(student) - target).pow(2).mean())
    assert type(model.teacher).__name__ == "CLIPVisionModel" and clip.shape == (3, 65, 64)
    torch.testing.assert_close(out.mimic_losses, torch.stack(expected), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.loss, out.reconstruction_loss + sum(expected))


def test_mimic_layer_weight_and_teacher_layer():
    pixels, noise = fixed_inputs()
    torch.manual_seed(0)
    model = hf_mae.create_model("mrmae-tiny", mimic_layer=2, mimic_weight=0.5, second_teacher_layer=1,
                                second_teacher_config=None).eval()  # fmt: skip
    assert model.teacher_names == ["teacher"] and len(model.mimic_heads) == 1
    out = model(pixels, noise=noise)
    torch.testing.assert_close(out.loss, out.reconstruction_loss + 0.5 * out.mimic_loss)
    with_second = hf_mae.create_model("mrmae-tiny", second_teacher_layer=1).eval()
    counts = [0, 0]
    for i, block in enumerate(teacher_blocks(with_second.get_teacher("second_teacher", "cpu"))):
        block.register_forward_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
    with_second(pixels, noise=noise)
    assert counts == [1, 0]  # the second teacher's block 2 never runs when block 1 is mimicked
    ids_keep = mask_from_noise(noise, 0.75).ids_keep
    with torch.no_grad():  # block 2's output (before the final norm) mimics when mimic_layer=2
        hidden = model.mae(pixels, noise=noise, mask_ratio=0.75, output_hidden_states=True).hidden_states[2][:, 1:]
        clip = model.teacher(pixel_values=pixels, output_hidden_states=True)  # only its shape matters here
    assert hidden.shape == (3, 16, 128) and clip.hidden_states[2].shape[1] == 65 and ids_keep.shape == (3, 16)


def test_teacher_instances_through_the_constructor(tmp_path):
    teacher, second = tiny_vit(40), tiny_vit(24, layers=2, seed=3)
    config = hf_mae.create_config("mrmae-tiny", teacher_config=None, second_teacher_config=None,
                                  teacher_hidden_size=None, second_teacher_hidden_size=None,
                                  teacher_image_mean=None, teacher_image_std=None)  # fmt: skip
    model = MRMAEForPreTraining(config, teacher=teacher, second_teacher=second).train()
    assert model.teacher is teacher and model.second_teacher is second
    assert (model.config.teacher_hidden_size, model.config.second_teacher_hidden_size) == (40, 24)
    out = model(*fixed_inputs())
    out.loss.backward()
    assert all(p.grad is None and not p.requires_grad for t in (teacher, second) for p in t.parameters())
    assert not teacher.training and not second.training
    assert not any("teacher" in key for key in model.state_dict())
    model.save_pretrained(tmp_path)
    again = MRMAEForPreTraining.from_pretrained(tmp_path, teacher=teacher, second_teacher=second).eval()
    pixels, noise = fixed_inputs()
    torch.testing.assert_close(again(pixels, noise=noise).loss, model.eval()(pixels, noise=noise).loss)
    # one teacher only: no second head
    alone = MRMAEForPreTraining(hf_mae.create_config("mrmae-tiny", second_teacher_config=None), teacher=teacher)
    assert alone.teacher_names == ["teacher"] and alone.mimic_heads[0].layers[0].out_features == 40


def test_teacher_by_folder_name(tmp_path):
    torch.manual_seed(1)
    MAEForPreTraining(MAEConfig(**dict(TINY, hidden_size=96, num_attention_heads=3, intermediate_size=192))) \
        .save_pretrained(tmp_path / "mae")
    model = hf_mae.create_model("mrmae-tiny", teacher_config=None, teacher_name_or_path=str(tmp_path / "mae"),
                                teacher_hidden_size=None, teacher_image_mean=None, teacher_image_std=None)
    assert model.config.teacher_hidden_size == 96
    seen = []
    out = model(*fixed_inputs())
    teacher = model.teacher
    teacher.layers[0].register_forward_hook(lambda module, args, output: seen.append(args[0].shape))
    model(*fixed_inputs())
    assert type(teacher).__name__ == "MAEModel" and seen == [(3, 65, 96)]  # an MAE teacher sees every patch
    assert torch.isfinite(out.loss)


def test_bad_configs():
    for field, value, message in [
        ("mimic_loss", "l3", "mimic_loss"), ("projection_mode", "conv", "projection_mode"),
        ("mimic_layer", 5, "mimic_layer must be a block number in 1..4"), ("teacher_layer", 0, "teacher_layer"),
        ("teacher_image_mean", [0.5, 0.5], "teacher_image_mean"), ("second_teacher_image_std", [1, 0, 1], "positive"),
        ("mimic_weight", -1.0, "mimic_weight"), ("second_teacher_config", {"hidden_size": 8}, "second_teacher_config"),
    ]:
        with pytest.raises(ValueError, match=message):
            hf_mae.create_config("mrmae-tiny", **{field: value})
    with pytest.raises(ValueError, match="needs a teacher"):
        hf_mae.create_model("mrmae-tiny", teacher_config=None)(torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="teacher layers must be block numbers in 1..2"):
        hf_mae.create_model("mrmae-tiny", teacher_layer=3)(torch.randn(2, 3, 32, 32))


def train(model, steps, pixels):
    """MAE's recipe (AdamW (0.9, 0.95), wd 0.05, 5% warm-up + cosine, lr 1.5e-3, batch 32); per-step (pixel, mimic)
    losses. The batches and the masks (the global RNG, seeded) are the same for every model."""
    from hf_mae.training.optim import build_adamw, warmup_cosine_schedule

    model.train()
    optimizer = build_adamw(model, lr=1.5e-3, weight_decay=0.05)
    schedule = warmup_cosine_schedule(optimizer, warmup_steps=steps // 20, total_steps=steps)
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    pixel, mimic = [], []
    for _ in range(steps):
        out = model(pixels[torch.randint(0, len(pixels), (32,), generator=generator)])
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        schedule.step()
        pixel.append(getattr(out, "reconstruction_loss", out.loss).item())
        mimic.append(out.mimic_loss.item() if hasattr(out, "mimic_loss") else 0.0)
    return pixel, mimic


# a smaller student than mae-tiny's (64-d x 2 / 32-d x 1 at 16 px) keeps the two 120-step runs to seconds
SMALL = dict(image_size=16, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
             decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
             decoder_intermediate_size=64)


def test_neither_loss_stalls_the_other(one_thread):
    """120 steps on digits (16 px, 4-px patches: 16 tokens; SMALL's student) for MR-MAE with the preset's two random
    teachers and for plain MAE from the same initial weights, on the same batches and masks: both MR-MAE losses fall,
    and its pixel loss keeps up with MAE's."""
    pixels, _ = digits_pixels("train", image_size=16)
    steps = 120
    torch.manual_seed(0)
    mrmae = hf_mae.create_model("mrmae-tiny", **SMALL)
    mae = hf_mae.create_model("mae-tiny", **SMALL)
    missing, unexpected = mae.load_state_dict(mrmae.state_dict(), strict=False)  # the same initial student
    assert not missing and all(key.startswith("mimic_heads.") for key in unexpected)
    pixel, mimic = train(mrmae, steps, pixels)
    pixel_mae, _ = train(mae, steps, pixels)
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    first_p, last_p, last_mae = mean(pixel[:10]), mean(pixel[-10:]), mean(pixel_mae[-10:])
    first_m, last_m = mean(mimic[:10]), mean(mimic[-10:])
    print(f"mrmae pixel {first_p:.4f} -> {last_p:.4f} (mae alone {mean(pixel_mae[:10]):.4f} -> {last_mae:.4f}), "
          f"mimic {first_m:.4f} -> {last_m:.4f} (mean of the first and last 10 of {steps} steps)")
    assert pixel[0] == pytest.approx(pixel_mae[0], abs=1e-6)  # the same student, batch and mask at step 1
    # measured: pixel 1.348 -> 0.681 (MAE alone 1.318 -> 0.675), mimic 2.850 -> 0.085
    assert last_p < 0.7 * first_p  # the pixel loss falls with the mimic term on
    assert last_m < 0.5 * first_m  # the mimic loss falls with the pixel term on
    assert last_p < 1.05 * last_mae  # and the pixel loss is at most 5% above plain MAE's at the same step


def test_pretrain_cli_with_teachers_by_config_and_folder(tmp_path, one_thread):
    records = run_pretrain(["--model", "mrmae-tiny", "--dataset", "digits", "--max-steps", "3", "--batch-size", "8",
                            "--log-steps", "1"], tmp_path / "preset")  # fmt: skip
    assert len(records) == 3 and all(r["loss"] > 0 for r in records)
    assert isinstance(AutoModelForPreTraining.from_pretrained(tmp_path / "preset"), MRMAEForPreTraining)
    vit = dict(model_type="vit", image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2,
               num_attention_heads=2, intermediate_size=64)
    torch.manual_seed(1)
    MAEForPreTraining(MAEConfig(**dict(TINY, hidden_size=96, num_attention_heads=3, intermediate_size=192))) \
        .save_pretrained(tmp_path / "mae")
    # the first teacher by folder, the second by config dict, both through --config-overrides
    run_pretrain(["--model", "mrmae-tiny", "--dataset", "digits", "--max-steps", "3", "--batch-size", "8",
                  "--config-overrides", f"teacher_name_or_path={tmp_path / 'mae'}", "teacher_config=null",
                  "teacher_hidden_size=96", "teacher_image_mean=null", "teacher_image_std=null",
                  f"second_teacher_config={json.dumps(vit)}", "second_teacher_hidden_size=32"],
                 tmp_path / "overrides")  # fmt: skip
    saved = json.loads((tmp_path / "overrides" / "config.json").read_text())
    assert saved["teacher_name_or_path"] == str(tmp_path / "mae")
    assert saved["second_teacher_config"]["hidden_size"] == 32
