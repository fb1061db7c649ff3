"""I-JEPA mechanisms with numbers: the block-size rule by hand, the multi-block masks' properties (target sizes within
the scale range, the context disjoint from the targets, min_keep and its relaxation, seeding), the targets and the
smooth-L1 loss by hand, predictions that depend on the context only, the EMA momentum schedule, conversion from
transformers' IJepaModel within 1e-5, and a short pre-training on digits whose loss falls without collapse."""

import math

import pytest
import torch
from conftest import digits_pixels
from transformers import AutoModel, IJepaConfig, IJepaModel

import hf_mae
from hf_mae.convert import convert_ijepa, convert_to_ijepa, convert_to_ijepa_folder
from hf_mae.modeling.ijepa import HfIJEPAConfig, IJEPAForPreTraining, IJEPAModel
from hf_mae.modeling.masking import MultiBlockMaskGenerator, sample_block_size

TINY = "ijepa-tiny"


def rectangle(ids: torch.Tensor, cols: int) -> tuple[int, int]:
    """(height, width) of the bounding box of patch indices ``ids``."""
    rows_, cols_ = ids // cols, ids % cols
    return int(rows_.max() - rows_.min() + 1), int(cols_.max() - cols_.min() + 1)


def test_block_size_rule_by_hand():
    # a fixed share and ratio: int(196 * 0.2) = 39 patches; ratio 1: round(sqrt(39)) = 6 per side
    assert sample_block_size((14, 14), (0.2, 0.2), (1.0, 1.0)) == (6, 6)
    # ratio 2: height round(sqrt(78)) = 9, width round(sqrt(19.5)) = 4
    assert sample_block_size((14, 14), (0.2, 0.2), (2.0, 2.0)) == (9, 4)
    # the whole grid: 14 x 14 is shrunk to 13 x 13 (a block is smaller than the grid, as the official code)
    assert sample_block_size((14, 14), (1.0, 1.0), (1.0, 1.0)) == (13, 13)
    # one uniform draw sets both: seed 1 draws u = 0.757632; share 0.15 + 0.05 u = 0.18788 -> int(36.83) = 36 patches,
    # ratio 0.75 + 0.75 u = 1.31822 -> height round(sqrt(47.46)) = 7, width round(sqrt(27.31)) = 5
    generator = torch.Generator().manual_seed(1)
    assert sample_block_size((14, 14), (0.15, 0.2), (0.75, 1.5), generator) == (7, 5)
    assert sample_block_size((8, 8), (0.15, 0.15), (1.0, 1.0)) == (3, 3)  # int(9.6) = 9 patches


def test_multiblock_masks_have_the_papers_properties():
    generator = MultiBlockMaskGenerator()  # the paper's settings: 4 targets (0.15-0.2, 0.75-1.5), context 0.85-1
    rows = cols = 14
    shares, touches_last_row, relaxed = [], False, 0
    rng = torch.Generator().manual_seed(0)
    before = torch.random.get_rng_state()
    for _ in range(30):
        drawn = generator(8, (rows, cols), generator=rng)
        batch, num_targets, size = drawn.target_ids.shape
        assert (batch, num_targets) == (8, 4)
        shares.append(size / (rows * cols))
        for b in range(batch):
            context = drawn.context_ids[b]
            assert torch.equal(context, context.sort().values) and len(set(context.tolist())) == len(context)
            assert len(context) > 10  # min_keep
            assert max(rectangle(context, cols)) <= 13  # inside one 13 x 13 context block
            for block in drawn.target_ids[b]:
                height, width = rectangle(block, cols)
                assert height * width == size  # a full rectangle
                assert 0.6 <= height / width <= 1.75  # the aspect range 0.75-1.5, up to rounding to whole patches
                touches_last_row |= bool((block // cols == rows - 1).any())
            overlap = set(context.tolist()) & set(drawn.target_ids[b].flatten().tolist())
            relaxed += bool(overlap)
        # the mask conventions: 1 = hidden from the context encoder / inside a target block
        assert torch.equal(drawn.mask.sum(1), torch.full((8,), rows * cols - drawn.context_ids.shape[1], dtype=torch.float))
        assert torch.equal(drawn.target_mask.bool(), torch.zeros(8, 196, dtype=torch.bool).scatter(
            1, drawn.target_ids.flatten(1), True))  # fmt: skip
    assert torch.equal(torch.random.get_rng_state(), before)  # every draw came from the generator
    assert relaxed == 0  # at these settings the context never needed to give up a target's constraint
    # block shares: int(196 * 0.15) = 29 .. int(196 * 0.2) = 39 patches, up to rounding the sides (28..42 patches)
    assert all(0.14 <= share <= 0.215 for share in shares) and min(shares) < 0.17 and max(shares) > 0.19
    assert touches_last_row  # hf-mae's placement reaches the last row (the official one never does)
    # the same seed gives the same masks
    a = generator(4, (rows, cols), generator=torch.Generator().manual_seed(5))
    b = generator(4, (rows, cols), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.context_ids, b.context_ids) and torch.equal(a.target_ids, b.target_ids)


def test_context_is_the_context_block_minus_the_targets_and_min_keep_relaxes():
    # one 2 x 2 target and a 3 x 3 context block on a 4 x 4 grid: the context is the square minus the target
    generator = MultiBlockMaskGenerator(num_targets=1, target_scale=(0.25, 0.25), target_aspect_ratio=(1, 1),
                                        context_scale=(1.0, 1.0), min_keep=0)  # fmt: skip
    drawn = generator(64, (4, 4), generator=torch.Generator().manual_seed(0))
    assert drawn.target_ids.shape == (64, 1, 4)
    for context, target in zip(drawn.context_ids, drawn.target_ids[:, 0]):
        assert not set(context.tolist()) & set(target.tolist())
    # contexts are cut to the batch's smallest, keeping each one's first patches in raster order
    assert drawn.context_ids.shape[1] == 5  # 9 - 4: some sample's target lies wholly inside its context square
    # min_keep above what the context can keep once 4 targets are removed: their constraints are dropped one by one
    strict = MultiBlockMaskGenerator(min_keep=40)
    drawn = strict(16, (8, 8), generator=torch.Generator().manual_seed(0))
    assert drawn.context_ids.shape[1] > 40
    overlaps = [bool(set(c.tolist()) & set(t.flatten().tolist())) for c, t in zip(drawn.context_ids, drawn.target_ids)]
    assert any(overlaps)
    with pytest.raises(ValueError, match="min_keep"):  # a 7 x 7 context block can never keep more than 49
        MultiBlockMaskGenerator(min_keep=49)(2, (8, 8))
    with pytest.raises(ValueError, match="target_scale"):
        MultiBlockMaskGenerator(target_scale=(0.3, 0.2))
    with pytest.raises(ValueError, match="num_targets"):
        MultiBlockMaskGenerator(num_targets=0)


def test_targets_loss_and_predictions_by_hand():
    torch.manual_seed(0)
    model = hf_mae.create_model(TINY).eval()
    pixels = torch.randn(2, 3, 32, 32)
    drawn = model.config.mask_generator()(2, (8, 8), generator=torch.Generator().manual_seed(0))
    out = model(pixels, context_ids=drawn.context_ids, target_ids=drawn.target_ids)
    # targets: the target encoder on the whole image, layer-normed without affine, at each block's patches
    full = model.teacher.encoder(pixels).last_hidden_state
    normed = (full - full.mean(-1, keepdim=True)) / torch.sqrt(full.var(-1, unbiased=False, keepdim=True) + 1e-5)
    for b in range(2):
        for t in range(4):
            torch.testing.assert_close(out.targets[b, t], normed[b, drawn.target_ids[b, t]], rtol=0, atol=1e-5)
    # smooth L1 with beta 1: 0.5 d^2 where |d| < 1, |d| - 0.5 elsewhere, averaged over every element
    d = (out.logits - out.targets).abs()
    assert out.loss.item() == pytest.approx(torch.where(d < 1, 0.5 * d**2, d - 0.5).mean().item(), rel=1e-6)
    # the teacher starts as an exact copy of the context encoder: a full context reproduces the target encoder
    torch.testing.assert_close(model.ijepa(pixels).last_hidden_state, full, rtol=0, atol=0)
    # predictions see the context only: changing every patch outside it leaves them as they were
    outside = drawn.mask.reshape(2, 1, 8, 8).repeat_interleave(4, 2).repeat_interleave(4, 3)
    changed = model(pixels + 5 * outside * torch.randn_like(pixels), context_ids=drawn.context_ids,
                    target_ids=drawn.target_ids)  # fmt: skip
    torch.testing.assert_close(changed.logits, out.logits, rtol=0, atol=1e-5)
    assert (changed.targets - out.targets).abs().max() > 0.1  # while the targets (whole image) change
    # each block is predicted on its own: the first block's prediction is the same without the other three
    alone = model(pixels, context_ids=drawn.context_ids, target_ids=drawn.target_ids[:, :1])
    torch.testing.assert_close(alone.logits[:, 0], out.logits[:, 0], rtol=0, atol=1e-5)
    assert torch.equal(out.mask, drawn.mask) and torch.equal(out.target_mask, drawn.target_mask)


def test_ema_momentum_schedule_and_update():
    torch.manual_seed(0)
    model = hf_mae.create_model(TINY, total_steps=100)  # momentum 0.996 -> 1 linearly over 100 optimiser steps
    schedule = model.teacher.schedule
    assert [schedule(s) for s in (0, 25, 50, 100, 200)] == pytest.approx([0.996, 0.997, 0.998, 1.0, 1.0])
    student, teacher = model.ijepa.layernorm.weight, model.teacher.encoder.layernorm.weight
    with torch.no_grad():
        student.fill_(2.0)
        teacher.fill_(1.0)
    assert model.after_optimizer_step(0) is False  # hands the teacher to the loop, moves nothing
    assert model.after_optimizer_step(1) is True
    m = 0.996 + 0.004 * 1 / 100
    torch.testing.assert_close(teacher, torch.full_like(teacher, m * 1.0 + (1 - m) * 2.0))  # 1.00396
    assert model.after_optimizer_step(1) is False and model.teacher_step == 1  # a step is applied once
    assert not any(name.startswith("teacher.") for name, _ in model.named_parameters())  # outside the optimiser
    assert any(name.startswith("teacher.encoder.") for name in model.state_dict())  # saved with the model
    with pytest.raises(ValueError, match="ema_momentum"):
        HfIJEPAConfig(ema_momentum=1.5)


def test_conversion_from_transformers_ijepa(tmp_path):
    torch.manual_seed(0)
    config = IJepaConfig(image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64)  # fmt: skip
    source = IJepaModel(config).eval()  # random, learned position embeddings
    pixels = torch.randn(3, 3, 32, 32)
    expected = source(pixels).last_hidden_state
    ours = convert_ijepa(source)
    assert isinstance(ours, IJEPAModel) and ours.config.layer_norm_eps == 1e-12
    torch.testing.assert_close(ours(pixels).last_hidden_state, expected, rtol=0, atol=1e-5)
    # into a pre-training model: both encoders hold the weights, the predictor is new
    pretraining = convert_ijepa(source, pretraining=True, decoder_hidden_size=32, decoder_num_attention_heads=4,
                                min_keep=4)  # fmt: skip
    assert isinstance(pretraining, IJEPAForPreTraining)
    torch.testing.assert_close(pretraining.ijepa(pixels).last_hidden_state, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(pretraining.target_encoder_model()(pixels).last_hidden_state, expected, rtol=0, atol=1e-5)
    assert torch.isfinite(pretraining(pixels).loss)
    # and back
    torch.testing.assert_close(convert_to_ijepa(ours)(pixels).last_hidden_state, expected, rtol=0, atol=1e-5)
    # folders: a transformers folder is refused by hf-mae classes with the command that converts it
    source.save_pretrained(tmp_path / "transformers")
    with pytest.raises(ValueError, match="hf-mae convert ijepa"):
        IJEPAModel.from_pretrained(tmp_path / "transformers")
    from hf_mae import cli

    assert cli.main(["convert", "ijepa", str(tmp_path / "transformers"), str(tmp_path / "hf-mae")]) == 0
    encoder = AutoModel.from_pretrained(tmp_path / "hf-mae").eval()
    assert type(encoder) is IJEPAModel
    torch.testing.assert_close(encoder(pixels).last_hidden_state, expected, rtol=0, atol=1e-5)
    convert_to_ijepa_folder(tmp_path / "hf-mae", tmp_path / "back")
    again = IJepaModel.from_pretrained(tmp_path / "back").eval()
    torch.testing.assert_close(again(pixels).last_hidden_state, expected, rtol=0, atol=1e-5)


def test_classifier_mean_pools_every_patch():
    torch.manual_seed(0)
    classifier = hf_mae.create_model(TINY, task="image-classification", num_labels=3).eval()
    pixels = torch.randn(2, 3, 32, 32)
    tokens = classifier.ijepa(pixels).last_hidden_state
    assert tokens.shape == (2, 64, 128)  # no cls token
    torch.testing.assert_close(classifier(pixels).logits, classifier.classifier(tokens.mean(1)))


def short_pretraining_on_digits(preset, steps=40, batch=16):
    """``steps`` AdamW steps of ``preset`` on digits with the EMA stepped after each; returns the model and the
    held-out loss and per-dimension target std (across the batch, averaged over dimensions) before and after,
    under one fixed multi-block mask. Shared by the I-JEPA and DMT-JEPA tests."""
    torch.manual_seed(0)
    pixels, _ = digits_pixels("train")
    held_out = pixels[:64]
    model = hf_mae.create_model(preset, total_steps=steps).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    fixed = model.config.mask_generator()(64, (8, 8), generator=torch.Generator().manual_seed(1))

    def evaluate():
        model.eval()
        with torch.no_grad():
            out = model(held_out, context_ids=fixed.context_ids, target_ids=fixed.target_ids)
        model.train()
        return out.loss.item(), out.targets.reshape(-1, out.targets.shape[-1]).std(0).mean().item()

    first_loss, first_std = evaluate()
    generator = torch.Generator().manual_seed(0)
    model.after_optimizer_step(0)
    for step in range(1, steps + 1):
        out = model(pixels[torch.randint(0, len(pixels), (batch,), generator=generator)])
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        model.after_optimizer_step(step)
    last_loss, last_std = evaluate()
    print(f"held-out loss {first_loss:.4f} -> {last_loss:.4f}; target std {first_std:.4f} -> {last_std:.4f}")
    return model, first_loss, first_std, last_loss, last_std


def test_short_pretraining_on_digits_lowers_the_loss_without_collapse(one_thread):
    steps = 40
    model, first_loss, first_std, last_loss, last_std = short_pretraining_on_digits(TINY, steps)
    assert model.teacher_step == steps and model.teacher.schedule(steps) == 1.0
    assert last_loss < 0.5 * first_loss
    assert last_std > 0.5 * first_std  # no collapse
    assert math.isfinite(last_loss)


def test_probe_pools_every_patch_of_an_encoder_without_cls_token():
    from hf_mae.training.probe import extract_tokens, pool

    torch.manual_seed(0)
    encoder = hf_mae.create_model(TINY, task="base").eval()
    pixels = torch.randn(3, 3, 32, 32)
    patches = encoder(pixels).last_hidden_state
    tokens = extract_tokens(encoder, pixels)
    assert tokens.shape == (3, 65, 128)  # the mean token stands where a cls token would be
    torch.testing.assert_close(pool(tokens, "mean"), patches.mean(1))
    torch.testing.assert_close(pool(tokens, "cls"), patches.mean(1))
