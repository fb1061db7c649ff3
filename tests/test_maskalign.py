"""MaskAlign (Xue et al., CVPR 2023): attention-guided masking, Dynamic Alignment, whitened targets and the SmoothL1
alignment loss against hand computations, the frozen teacher (by config, instance, CLI), and training that raises the
linear CKA between student and teacher."""

import json

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

import hf_mae
from hf_mae.modeling.maskalign import MaskAlignForPreTraining, MaskAlignModel, dynamic_alignment_init
from hf_mae.modeling.masking import order_to_noise, score_guided_mask, score_guided_order
from hf_mae.modeling.targets import whitened
from hf_mae.modeling.teachers import build_frozen_teacher, teacher_forward
from hf_mae.training.probe import labelled_inputs, linear_cka

from conftest import run_pretrain

TINY = "maskalign-tiny"
IMAGENET_MEAN, IMAGENET_STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
# a tiny random ViT teacher with a larger init: peakier attention and features less linear in the pixels than the
# preset's (whose random features a random student already matches at CKA 0.99 on digits)
SHARP_TEACHER = dict(model_type="vit", image_size=32, patch_size=4, hidden_size=64, num_hidden_layers=4,
                     num_attention_heads=4, intermediate_size=128, initializer_range=0.3)  # fmt: skip


def test_order_to_noise_makes_the_encoder_keep_that_order():
    order = torch.tensor([[3, 0, 2, 1], [1, 2, 3, 0]])
    noise = order_to_noise(order)
    assert torch.equal(noise.argsort(dim=1), order)
    mask = score_guided_mask(torch.ones(2, 4), 0.5, torch.Generator().manual_seed(0))
    assert mask.ids_keep.shape == (2, 2) and mask.mask.sum(1).tolist() == [2.0, 2.0]


def test_guided_draw_is_multinomial_without_replacement():
    scores = torch.rand(3, 16, generator=torch.Generator().manual_seed(1))
    order = score_guided_order(scores, torch.Generator().manual_seed(7))
    expected = torch.multinomial(scores, 16, replacement=False, generator=torch.Generator().manual_seed(7))
    assert torch.equal(order, expected)
    mask = score_guided_mask(scores, 0.7, torch.Generator().manual_seed(7))
    assert torch.equal(mask.ids_keep, expected[:, : int(16 * 0.3)])  # the first drawn stay visible, in draw order
    assert torch.equal(mask.mask, 1.0 - torch.zeros(3, 16).scatter_(1, expected[:, :4], 1.0))
    with pytest.raises(ValueError, match="scores"):
        score_guided_order(-scores)


def test_attention_guided_masking_keeps_high_attention_patches_more_often():
    """Over 200 draws at r = 0.7 (19 of 64 patches kept), the 8 patches with 10x the others' score are kept far
    more often than random masking's 19/64 = 0.297 and the others less often."""
    scores = torch.ones(1, 64)
    hot = torch.arange(0, 64, 8)
    scores[0, hot] = 10.0
    generator = torch.Generator().manual_seed(0)
    kept = torch.zeros(64)
    for _ in range(200):
        kept += 1 - score_guided_mask(scores, 0.7, generator).mask[0]
    rate = kept / 200
    cold = torch.ones(64, dtype=torch.bool)
    cold[hot] = False
    print(f"kept: hot patches {rate[hot].mean():.3f}, others {rate[cold].mean():.3f}, random {19 / 64:.3f}")
    assert kept.sum() == 200 * 19
    assert rate[hot].mean() > 19 / 64 + 0.5  # measured 0.904
    assert rate[cold].mean() < 19 / 64 - 0.05  # measured 0.210 (= (19 - 8 * 0.904) / 56)


def test_model_masks_where_its_teacher_looks():
    """The pre-training forward draws its mask from the teacher's last-block CLS->patch attention (mean over heads):
    over 200 draws the 8 patches the teacher attends to most are kept more often than under random masking."""
    torch.manual_seed(0)
    model = hf_mae.create_model(TINY, teacher_config=SHARP_TEACHER).eval()
    image = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    teacher_out = model.get_teacher("cpu")(pixel_values=image, output_attentions=True)
    importance = teacher_out.attentions[-1][:, :, 0, 1:].mean(dim=1)  # by hand from the HF teacher's own output
    out = model(image.expand(200, -1, -1, -1))
    torch.testing.assert_close(out.importance, importance.expand(200, -1))
    top = importance[0].topk(8).indices
    guided = (1 - out.mask)[:, top].mean().item()
    random = (1 - model(image.expand(200, -1, -1, -1), noise=torch.rand(200, 64)).mask)[:, top].mean().item()
    print(f"top-8 attention patches kept: guided {guided:.3f}, random {random:.3f} (expected {19 / 64:.3f})")
    assert guided > random + 0.3  # measured 0.997 vs 0.302


def test_dynamic_alignment_starts_at_identity_plus_001():
    model = hf_mae.create_model(TINY)  # 4 student blocks, 4 teacher blocks, min(5, 4) = 4 aligned
    torch.testing.assert_close(model.alignment.weight.detach(), torch.eye(4) + 0.01, rtol=0, atol=0)
    top2 = hf_mae.create_model(TINY, loss_layers=2)  # the last 2 teacher blocks: rows 2 and 3 of I + 0.01
    assert top2.config.aligned_teacher_layers == [2, 3]
    torch.testing.assert_close(top2.alignment.weight.detach(), (torch.eye(4) + 0.01)[2:], rtol=0, atol=0)
    assert len(top2.alignment.heads) == 2 and top2.alignment.heads[0].out_features == 64
    # ViT-L/16 (24 blocks) with CLIP-B/16 (12): teacher block t starts from student block 2t + 1
    weight = dynamic_alignment_init(24, 12, range(7, 12))
    assert weight.argmax(dim=1).tolist() == [15, 17, 19, 21, 23]
    assert torch.allclose(weight.sum(dim=1), torch.full((5,), 1 + 0.01 * 24))
    # loaded with every weight missing, _init_weights restores I + 0.01 (not torch's draw)
    loaded = MaskAlignForPreTraining.from_pretrained(None, config=model.config, state_dict={})
    torch.testing.assert_close(loaded.alignment.weight.detach(), torch.eye(4) + 0.01, rtol=0, atol=0)


def test_whitened_target_is_a_parameter_free_layer_norm():
    x = torch.randn(2, 5, 7) * 3 + 1
    mean = x.mean(dim=-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(dim=-1, keepdim=True)  # biased, as layer norm
    torch.testing.assert_close(whitened(x), (x - mean) / torch.sqrt(variance + 1e-5))


def smooth_l1(a, b):
    difference = (a - b).abs()
    return torch.where(difference < 1, 0.5 * difference**2, difference - 0.5).mean()


def test_loss_by_hand_on_a_fixed_mask():
    """2 * SmoothL1 between W-mixed, head-projected student block outputs and the whitened teacher blocks at the cls
    token and the kept patches, averaged over the aligned blocks, rebuilt from the model's parts."""
    torch.manual_seed(0)
    model = hf_mae.create_model(TINY, loss_layers=3).eval()
    generator = torch.Generator().manual_seed(0)
    images, noise = torch.randn(2, 3, 32, 32, generator=generator), torch.rand(2, 64, generator=generator)
    out = model(images, noise=noise)

    kept = int(64 * (1 - 0.7))
    ids_keep = noise.argsort(dim=1)[:, :kept]
    assert torch.equal(out.mask, 1.0 - torch.zeros(2, 64).scatter_(1, ids_keep, 1.0))
    student = model.mae(images, noise=noise, mask_ratio=0.7, output_hidden_states=True).hidden_states[1:]
    teacher = model.get_teacher("cpu")(pixel_values=images, output_hidden_states=True).hidden_states[1:]
    weight = model.alignment.weight.detach()
    losses = []
    for row, layer in enumerate([1, 2, 3]):  # the last 3 of the teacher's 4 blocks
        mixed = sum(weight[row, s] * student[s] for s in range(4))
        prediction = model.alignment.heads[row](mixed)
        target = teacher[layer]
        mean, std = target.mean(-1, keepdim=True), target.var(-1, unbiased=False, keepdim=True).add(1e-5).sqrt()
        target = (target - mean) / std
        target = torch.cat([target[:, :1], target[:, 1:][torch.arange(2)[:, None], ids_keep]], dim=1)
        torch.testing.assert_close(out.logits[:, row], prediction, rtol=1e-5, atol=1e-6)
        losses.append(2 * smooth_l1(prediction, target))
    torch.testing.assert_close(out.loss, sum(losses) / 3, rtol=1e-5, atol=1e-6)


def test_teacher_instance_clip_renormalisation_and_not_saved(tmp_path):
    """A CLIP vision tower given as an instance: its sizes set the config, it sees the pixels re-normalised from
    ImageNet to CLIP statistics, it is frozen and never saved."""
    vision = dict(image_size=32, patch_size=4, hidden_size=48, num_hidden_layers=3, num_attention_heads=4,
                  intermediate_size=96)  # fmt: skip
    clip = AutoModel.from_config(AutoConfig.for_model("clip_vision_model", **vision), attn_implementation="eager")
    config = hf_mae.create_config(TINY, teacher_image_mean=[0.48145466, 0.4578275, 0.40821073],
                                  teacher_image_std=[0.26862954, 0.26130258, 0.27577711])  # fmt: skip
    model = MaskAlignForPreTraining(config, teacher=clip)
    assert (config.teacher_hidden_size, config.teacher_num_hidden_layers) == (48, 3)
    assert model.alignment.weight.shape == (3, 4)
    seen = []
    hook = clip.embeddings.register_forward_hook(lambda module, args, output: seen.append(args[0]))
    images = torch.randn(2, 3, 32, 32)
    loss = model(images).loss
    hook.remove()
    clip_mean, clip_std = torch.tensor(config.teacher_image_mean), torch.tensor(config.teacher_image_std)
    expected = (images * IMAGENET_STD[:, None, None] + IMAGENET_MEAN[:, None, None] - clip_mean[:, None, None]) / clip_std[:, None, None]
    torch.testing.assert_close(seen[0], expected, rtol=1e-5, atol=1e-5)
    loss.backward()
    assert all(p.grad is None and not p.requires_grad for p in clip.parameters())
    assert not any(name.startswith("teacher") for name in model.state_dict())
    assert all(p is not q for p in model.parameters() for q in clip.parameters())
    model.save_pretrained(tmp_path / "run")
    reloaded = AutoModelForPreTraining.from_pretrained(tmp_path / "run", teacher=clip)  # the instance again
    torch.testing.assert_close(reloaded(images, noise=torch.rand(2, 64, generator=torch.Generator().manual_seed(0))).loss,
                               model(images, noise=torch.rand(2, 64, generator=torch.Generator().manual_seed(0))).loss)
    with pytest.raises(RuntimeError, match="mismatched_sizes"):  # without it: the preset's teacher (64 x 4), other heads
        AutoModelForPreTraining.from_pretrained(tmp_path / "run")
    encoder = AutoModel.from_pretrained(tmp_path / "run")
    assert isinstance(encoder, MaskAlignModel) and not hasattr(encoder, "alignment")


def test_bad_configs():
    with pytest.raises(ValueError, match="masking"):
        hf_mae.create_config(TINY, masking="block")
    with pytest.raises(ValueError, match="teacher_image_mean"):
        hf_mae.create_config(TINY, teacher_image_mean=[0.5, 0.5])
    with pytest.raises(ValueError, match="teacher_config"):
        hf_mae.create_config(TINY, teacher_config={"hidden_size": 8})
    with pytest.raises(ValueError, match="loss_layers"):
        hf_mae.create_config(TINY, loss_layers=0)
    with pytest.raises(TypeError, match="teacher"):
        MaskAlignForPreTraining(hf_mae.create_config(TINY), teacher=torch.nn.Linear(3, 3))
    # a Hub-id teacher's sizes are the config's to state: a wrong one is caught at the first forward
    model = hf_mae.create_model(TINY, teacher_hidden_size=32, teacher_name_or_path="some/hub-id", teacher_config=None)
    model.set_frozen_teacher("teacher", build_frozen_teacher(hf_mae.create_config(TINY)))  # the preset's: 64-d
    with pytest.raises(ValueError, match="teacher_hidden_size"):
        model(torch.randn(1, 3, 32, 32))


def test_alignment_raises_linear_cka_with_the_teacher(one_thread):
    """100 steps on digits: the loss falls and the linear CKA between the student's and the teacher's last-block
    patch tokens (64 test digits, unmasked) rises."""
    torch.manual_seed(0)
    model = hf_mae.create_model(TINY, teacher_config=SHARP_TEACHER)
    processor = hf_mae.create_processor(TINY)
    images = labelled_inputs("digits", "train", processor)[0]
    held_out = labelled_inputs("digits", "test", processor)[0][:64]

    def cka():
        model.eval()
        with torch.no_grad():
            student = model.mae(held_out, mask_ratio=0.0, output_hidden_states=True).hidden_states[-1][:, 1:]
            teacher = teacher_forward(model.get_teacher("cpu"), held_out).hidden_states[-1][:, 1:]
        model.train()
        return linear_cka(student.flatten(0, 1), teacher.flatten(0, 1))

    before = cka()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(100):
        loss = model(images[torch.randint(0, len(images), (16,), generator=generator)]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    after = cka()
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    print(f"loss {first:.3f} -> {last:.3f}; linear CKA(student, teacher) {before:.3f} -> {after:.3f}")
    assert last < 0.5 * first  # measured 1.177 -> 0.146
    assert after > before + 0.05  # measured 0.831 -> 0.942


def test_pretrain_cli_with_a_teacher_config_override(tmp_path, one_thread):
    teacher = dict(model_type="vit", image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2,
                   num_attention_heads=2, intermediate_size=64)  # fmt: skip
    argv = ["--model", TINY, "--dataset", "digits", "--max-steps", "3", "--batch-size", "8",
            "--config-overrides", f"teacher_config={json.dumps(teacher)}"]  # its sizes set the heads  # fmt: skip
    records = run_pretrain(argv, tmp_path / "run")
    assert all(torch.isfinite(torch.tensor(record["loss"])) for record in records)
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path / "run")
    assert isinstance(loaded, MaskAlignForPreTraining) and loaded.config.teacher_config == teacher
    assert loaded.alignment.weight.shape == (2, 4)
    assert torch.isfinite(loaded(torch.randn(2, 3, 32, 32)).loss)


def test_pretrain_python_api_takes_a_teacher_instance(tmp_path, one_thread):
    from hf_mae.training.pretrain import pretrain

    vision = dict(image_size=32, patch_size=4, hidden_size=48, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=96)  # fmt: skip
    teacher = AutoModel.from_config(AutoConfig.for_model("vit", **vision), attn_implementation="eager")
    folder, summary = pretrain(model=TINY, dataset="digits", output_dir=str(tmp_path / "run"), max_steps=2,
                               batch_size=8, teachers={"teacher": teacher})  # fmt: skip
    assert summary["steps"] == 2
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["teacher_hidden_size"], config["teacher_num_hidden_layers"]) == (48, 2)  # from the instance


def test_teacher_from_a_local_folder_sets_the_sizes(tmp_path):
    """A teacher named by a folder (an hf-mae run, as ``compare_methods --teacher`` gives): its config sets the sizes
    (the preset's 64 x 4 would not match), and its AutoModel, the encoder, teaches."""
    mae = hf_mae.create_model("mae-tiny", hidden_size=32, num_hidden_layers=2, intermediate_size=64)
    mae.save_pretrained(tmp_path / "mae")
    model = hf_mae.create_model(TINY, teacher_name_or_path=str(tmp_path / "mae"), teacher_config=None)
    assert (model.config.teacher_hidden_size, model.config.teacher_num_hidden_layers) == (32, 2)
    out = model(torch.randn(2, 3, 32, 32))
    assert torch.isfinite(out.loss) and out.logits.shape == (2, 2, 20, 32)
