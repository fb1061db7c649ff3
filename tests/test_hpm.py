"""HPM (Hard Patches Mining): ranking loss, easy-to-hard schedule, mining, the predictor learning on digits, and
save/load. The shared suite (tests/test_models.py) covers the MAE behaviour of the hpm presets."""

import json
import math

import pytest
import torch
from conftest import digits_pixels
from transformers import AutoModelForPreTraining

import hf_mae
from hf_mae.modeling.hpm import HPMConfig, hard_patch_noise, num_hard_patches, ranking_loss
from hf_mae.training.optim import build_adamw, warmup_cosine_schedule


def softplus(x):
    return math.log1p(math.exp(x))


def test_ranking_loss_matches_a_hand_computed_example():
    s = torch.tensor([[0.0, 1.0, 3.0]])
    l = torch.tensor([[1.0, 2.0, 0.0]])
    # ordered pairs with l_j > l_i: (0,1), (2,0), (2,1) -> -log sigmoid(s_j - s_i) = softplus(s_i - s_j);
    # their mirrors give -log(1 - sigmoid(s_i - s_j)), the same values: 6 pairs, each unordered pair twice
    expected = (softplus(-1.0) + softplus(3.0) + softplus(2.0)) / 3
    assert ranking_loss(s, l, torch.ones(1, 3)).item() == pytest.approx(expected, abs=1e-6)  # 1.829592
    # the official formula (1e-6 inside the logs) agrees
    pos = (l.unsqueeze(1) > l.unsqueeze(2)).float()
    neg = (l.unsqueeze(1) < l.unsqueeze(2)).float()
    diff = s.unsqueeze(1) - s.unsqueeze(2)
    official = (-pos * torch.log(torch.sigmoid(diff) + 1e-6) - neg * torch.log(1 - torch.sigmoid(diff) + 1e-6)).sum() / (pos + neg).sum()
    assert ranking_loss(s, l, torch.ones(1, 3)).item() == pytest.approx(official.item(), abs=1e-4)  # eps 1e-6 / sigmoid(-3)
    # visible patches (mask 0) take no part; ties are no pair
    assert ranking_loss(s, l, torch.tensor([[1.0, 1.0, 0.0]])).item() == pytest.approx(softplus(-1.0), abs=1e-6)
    tied = ranking_loss(s, torch.tensor([[1.0, 1.0, 0.0]]), torch.ones(1, 3))  # pairs (2,0), (2,1) only
    assert tied.item() == pytest.approx((softplus(3.0) + softplus(2.0)) / 2, abs=1e-6)
    # a predictor that orders the patches right by a wide margin has a loss near 0
    assert ranking_loss(10 * l, l, torch.ones(1, 3)).item() < 1e-4


def test_easy_to_hard_schedule_counts_hard_patches():
    # hpm-tiny: 8x8 = 64 patches, r = 0.75 -> 48 masked; hard share = 0.5 * progress
    assert [num_hard_patches(64, 0.75, p) for p in (0.0, 0.5, 1.0)] == [0, 12, 24]
    assert num_hard_patches(196, 0.75, 1.0) == 73  # ViT-B/16: int(147 * 0.5), as int((L - len_keep) * 0.5)
    with pytest.raises(ValueError, match="progress"):
        num_hard_patches(64, 0.75, 1.5)

    model = hf_mae.create_model("hpm-tiny", total_steps=4).train()
    pixels = torch.randn(2, 3, 32, 32)
    counts = {p: model(pixels, progress=p).hard_mask.sum(1).tolist() for p in (0.0, 0.5, 1.0)}
    assert counts == {0.0: [0, 0], 0.5: [12, 12], 1.0: [24, 24]}
    # without progress= the step counter drives it: 3 forwards so far, 3 / 4 of the way -> int(48 * 0.375) = 18
    assert model.hpm_step.item() == 3
    assert model(pixels).hard_mask.sum(1).tolist() == [18, 18]
    with pytest.raises(ValueError, match="progress"):
        model(pixels, progress=2.0)
    with pytest.raises(ValueError, match="hard_ratio_max"):
        HPMConfig(hard_ratio_max=1.5)


def test_mined_patches_are_the_teachers_hardest_and_the_rest_random():
    model = hf_mae.create_model("hpm-tiny").train()
    pixels = torch.randn(4, 3, 32, 32)
    out = model(pixels, progress=1.0)
    # at init the EMA teacher equals the online model, so the update inside forward left it unchanged
    predicted = model.predict_difficulty(pixels)
    hardest = torch.zeros_like(predicted).scatter_(1, predicted.topk(24, dim=1).indices, 1.0)
    assert torch.equal(out.hard_mask, hardest)
    assert (out.mask[out.hard_mask.bool()] == 1).all() and out.mask.sum(1).tolist() == [48] * 4
    # the other 24 masked patches are random: they differ between two calls
    again = model(pixels, progress=1.0)
    assert torch.equal(again.hard_mask, out.hard_mask) and not torch.equal(again.mask, out.mask)

    # the noise helper on a hand-made score: patches 5, 2 hardest
    scores = torch.tensor([[0.1, 0.2, 0.9, 0.3, 0.0, 1.0]])
    noise = hard_patch_noise(scores, 2, generator=torch.Generator().manual_seed(0))
    assert noise.argsort(1)[0, -2:].sort().values.tolist() == [2, 5] and (noise[0, [0, 1, 3, 4]] < 1).all()

    # EMA: teacher <- d * teacher + (1 - d) * online
    before = model.teacher.decoder_embed.weight.clone()
    with torch.no_grad():
        model.decoder.decoder_embed.weight.add_(1.0)
    model.update_teacher(0.9)
    torch.testing.assert_close(model.teacher.decoder_embed.weight, before + 0.1)
    assert model.ema_decay(0.0) == pytest.approx(0.99) and model.ema_decay(1.0) == pytest.approx(0.999)


def spearman(predicted, true, mask):
    """Mean over images of Spearman's rank correlation between predicted and true losses of the masked patches."""
    values = []
    for p, t, m in zip(predicted, true, mask.bool()):
        rp, rt = p[m].argsort().argsort().float(), t[m].argsort().argsort().float()
        rp, rt = rp - rp.mean(), rt - rt.mean()
        values.append((rp * rt).sum() / (rp.norm() * rt.norm()))
    return torch.stack(values).mean().item()


def test_loss_predictor_learns_to_rank_the_true_patch_losses_on_digits():
    steps = 60
    torch.manual_seed(0)
    pixels, _ = digits_pixels("train")
    held_out, _ = digits_pixels("test")
    held_out = held_out[:128]
    noise = torch.rand(len(held_out), 64, generator=torch.Generator().manual_seed(1))
    model = hf_mae.create_model("hpm-tiny", total_steps=steps).train()
    optimizer = build_adamw(model, lr=1.5e-3, weight_decay=0.05)
    schedule = warmup_cosine_schedule(optimizer, warmup_steps=3, total_steps=steps)

    def correlation():
        model.eval()
        with torch.no_grad():
            out = model(held_out, noise=noise)
        model.train()
        return spearman(out.predicted_loss, out.patch_loss, out.mask), out.reconstruction_loss.item()

    first, first_rec = correlation()
    generator = torch.Generator().manual_seed(0)
    hard = []
    for _ in range(steps):
        out = model(pixels[torch.randint(0, len(pixels), (32,), generator=generator)])
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        schedule.step()
        hard.append(out.hard_mask.sum(1)[0].item())
    last, last_rec = correlation()
    print(f"Spearman(predicted, true patch loss): {first:.3f} -> {last:.3f}; reconstruction {first_rec:.3f} -> {last_rec:.3f}")
    assert first < 0.3
    assert last > 0.5 and last - first > 0.3
    assert last_rec < 0.5 * first_rec
    assert hard[0] == 0 and hard[-1] == int(48 * 0.5 * (steps - 1) / steps)  # the curriculum ran to its end


def test_save_and_load_round_trip(tmp_path):
    model = hf_mae.create_model("hpm-tiny").train()
    pixels = torch.randn(2, 3, 32, 32)
    model(pixels, progress=0.5).loss.backward()  # one step: the counter moves, the teacher is in the state
    model.eval()
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "hpm"
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert type(loaded).__name__ == "HPMForPreTraining" and loaded.hpm_step.item() == 1
    expected, state = model.state_dict(), loaded.state_dict()
    assert expected.keys() == state.keys() and all(torch.equal(expected[k], state[k]) for k in expected)
    noise = torch.rand(2, 64)
    a, b = model(pixels, noise=noise), loaded(pixels, noise=noise)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.predicted_loss, b.predicted_loss) and torch.equal(a.loss, b.loss)
