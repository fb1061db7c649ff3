"""DMJD: disjoint masks, the HOG target against hand-computed histograms, the two-branch loss, training, the CLI."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import digits_pixels, run_pretrain
from transformers import AutoModelForPreTraining

import hf_mae
from hf_mae.modeling.dmjd import DMJDForPreTraining, disjoint_masks
from hf_mae.modeling.masking import mask_from_noise
from hf_mae.modeling.targets import hog_features, hog_target

# a small dmjd-tiny for the training tests
SMALL = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, decoder_hidden_size=64,
             decoder_num_hidden_layers=1, decoder_intermediate_size=128)  # fmt: skip


@pytest.mark.parametrize(
    "mask_ratio, pred_ratio, shared_visible",
    [(0.75, 1.0, 0), (0.6, 1.0, 0), (0.6, 0.9, 6)],  # L = 64: K = 16, 25, 25; view 2 hides E = 16, 25, 19 of them
)
def test_disjoint_masks(mask_ratio, pred_ratio, shared_visible):
    length, keep = 64, int(64 * (1 - mask_ratio))
    noise = torch.rand(8, length)
    noise_1, noise_2 = disjoint_masks(noise, mask_ratio, pred_ratio)
    view_1, view_2 = mask_from_noise(noise_1, mask_ratio), mask_from_noise(noise_2, mask_ratio)
    assert torch.equal(view_1.mask, mask_from_noise(noise, mask_ratio).mask)  # view 1 is MAE's mask
    # the same corruption ratio in both views
    assert view_1.mask.sum(1).tolist() == view_2.mask.sum(1).tolist() == [length - keep] * 8
    visible_1, visible_2 = view_1.mask == 0, view_2.mask == 0
    # view 2 sees exactly K - E of view 1's visible tokens: none with pred_ratio = 1
    assert (visible_1 & visible_2).sum(1).tolist() == [shared_visible] * 8
    if shared_visible == 0:
        assert not (visible_2 & ~(view_1.mask == 1)).any()  # view-2 visible is a subset of view-1 masked
        assert torch.equal((view_1.mask + view_2.mask).clamp(max=1), torch.ones(8, length))  # together: every token
    # the ids the encoder keeps for view 2 are view 2's visible tokens
    assert torch.equal(visible_2.gather(1, view_2.ids_keep), torch.ones_like(view_2.ids_keep, dtype=torch.bool))


def test_the_model_masks_two_disjoint_views_from_one_noise():
    model = hf_mae.create_model("dmjd-tiny").eval()
    pixel_values, noise = torch.randn(4, 3, 32, 32), torch.rand(4, 64)
    out = model(pixel_values, noise=noise)
    assert torch.equal(out.mask, mask_from_noise(noise, 0.75).mask)
    assert torch.equal(out.mask_2, mask_from_noise(disjoint_masks(noise, 0.75)[1], 0.75).mask)
    assert ((out.mask == 0) & (out.mask_2 == 0)).sum() == 0 and ((out.mask == 1) | (out.mask_2 == 1)).all()
    assert torch.equal(model(pixel_values, noise=noise).loss, out.loss)  # the noise fixes both views
    free = model(pixel_values)  # without noise: a fresh draw, still disjoint
    assert ((free.mask == 0) & (free.mask_2 == 0)).sum() == 0 and free.mask_2.sum(1).tolist() == [48.0] * 4


def test_hog_of_hand_built_images():
    # rising and falling vertical edges, 8x8, four 4x4 cells: only columns 3 and 4 have a gradient (|g_col| = 1,
    # g_row = 0), at 0 and at 180 degrees, which are the same unsigned orientation: bin 0 gets 4 pixels x 1 / 16
    edge = torch.zeros(1, 2, 8, 8)
    edge[:, 0, :, 4:] = 1.0
    edge[:, 1, :, :4] = 1.0
    hist = hog_features(edge, cell_size=4, num_bins=9)
    expected = torch.zeros(1, 2, 2, 2, 9)
    expected[..., 0] = 0.25
    torch.testing.assert_close(hist, expected, rtol=0, atol=1e-7)

    # ramps x = +-2 * row + col: inside, (g_row, g_col) = (+-4, 2): 63.4 deg (bin 3 of 20-deg bins) and
    # -63.4 = 116.6 deg (bin 5), magnitude sqrt(20); on the first/last row only g_col = 2 (bin 0); on the
    # first/last column only g_row = +-4 (90 deg, bin 4); corners 0. Every 4x4 cell has 9 inner pixels, 3 row-edge
    # pixels and 3 column-edge pixels
    rows, cols = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    ramps = torch.stack([2 * rows + cols, -2 * rows + cols])[None]
    hist = hog_features(ramps, cell_size=4, num_bins=9)
    for channel, inner_bin in ((0, 3), (1, 5)):
        cell = torch.zeros(9)
        cell[inner_bin] = 9 * math.sqrt(20)
        cell[0] = 3 * 2
        cell[4] = 3 * 4
        torch.testing.assert_close(hist[0, channel], (cell / 16).expand(2, 2, 9), rtol=0, atol=1e-5)
    print(f"HOG ramp cell (channel 0): {[round(v, 4) for v in hist[0, 0, 0, 0].tolist()]}")


def test_hog_target_whitens_each_histogram_and_orders_patch_vectors_as_official():
    pixel_values = torch.randn(2, 3, 16, 16)
    hist = hog_features(pixel_values, cell_size=4)  # (2, 3, 4, 4, 9)
    target = hog_target(pixel_values, patch_size=8, cell_size=4)
    assert target.shape == (2, 4, 2 * 2 * 9 * 3)
    for b, ph, pw, dh, dw, c in [(0, 0, 0, 0, 0, 0), (1, 1, 0, 1, 1, 2), (0, 0, 1, 1, 0, 1), (1, 1, 1, 0, 1, 2)]:
        h = hist[b, c, 2 * ph + dh, 2 * pw + dw]
        whitened = (h - h.mean()) / torch.sqrt(h.var(unbiased=False) + 1e-5)
        # 'b c (ph dh) (pw dw) d -> b (ph pw) (dh dw d c)'
        start = (dh * 2 + dw) * 9 * 3 + c
        torch.testing.assert_close(target[b, 2 * ph + pw, start : start + 27 : 3], whitened, rtol=0, atol=1e-5)
    # the standardisation removes the pixels' scale (up to its eps): normalised and raw pixels give one target
    torch.testing.assert_close(hog_target(pixel_values * 57.0, 8, 4), target, rtol=0, atol=1e-2)  # observed 1.7e-3
    with pytest.raises(ValueError, match="cell_size"):
        hog_target(pixel_values, patch_size=8, cell_size=3)


def test_loss_is_the_sum_of_the_two_branches():
    model = hf_mae.create_model("dmjd-tiny", visible_loss_weight=0.5).eval()
    pixel_values, noise = torch.randn(2, 3, 32, 32), torch.rand(2, 64)
    out = model(pixel_values, noise=noise)
    target = hog_target(pixel_values, 4, 2)
    assert out.logits.shape == out.logits_2.shape == (2, 64, 108) == target.shape
    masked = [((logits - target) ** 2).mean(-1)[mask == 1] for logits, mask in ((out.logits, out.mask), (out.logits_2, out.mask_2))]
    l_mim = torch.cat(masked).mean()
    # each visible prediction (encoder order = ascending noise of its view) against its own token's target
    order = torch.cat([view.argsort(1)[:, :16] for view in disjoint_masks(noise, 0.75)])
    l_vis = F.smooth_l1_loss(out.visible_logits, target.repeat(2, 1, 1).gather(1, order[..., None].expand(-1, -1, 108)), beta=2.0)
    torch.testing.assert_close(out.masked_loss, l_mim)
    torch.testing.assert_close(out.visible_loss, l_vis)
    torch.testing.assert_close(out.loss, l_mim + 0.5 * l_vis)
    last_norm = model.visible_head.projector[-1]
    assert last_norm.weight is None and last_norm.bias is None  # the projector ends in a non-affine LayerNorm


def test_bad_config_values_raise():
    with pytest.raises(ValueError, match="hog_cell_size"):
        hf_mae.create_model("dmjd-tiny", hog_cell_size=3)
    with pytest.raises(ValueError, match="pred_ratio"):
        hf_mae.create_model("dmjd-tiny", pred_ratio=1.5)


def test_both_branch_losses_fall_on_digits(one_thread):
    from hf_mae.training.optim import build_adamw, warmup_cosine_schedule

    pixels, _ = digits_pixels("train")
    model = hf_mae.create_model("dmjd-tiny", **SMALL).train()
    steps = 100
    optimizer = build_adamw(model, lr=2e-3, weight_decay=0.05)
    schedule = warmup_cosine_schedule(optimizer, warmup_steps=steps // 20, total_steps=steps)
    generator = torch.Generator().manual_seed(0)
    masked, visible = [], []
    for _ in range(steps):
        out = model(pixels[torch.randint(0, len(pixels), (32,), generator=generator)])
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        optimizer.step()
        schedule.step()
        masked.append(out.masked_loss.item())
        visible.append(out.visible_loss.item())
    first_m, last_m = sum(masked[:10]) / 10, sum(masked[-10:]) / 10
    first_v, last_v = sum(visible[:10]) / 10, sum(visible[-10:]) / 10
    print(f"dmjd L_mim {first_m:.4f} -> {last_m:.4f}, L_vis {first_v:.4f} -> {last_v:.4f} (mean of steps 1-10 -> 91-100)")
    assert last_m < 0.85 * first_m  # observed 1.072 -> 0.726
    assert last_v < 0.85 * first_v  # observed 0.268 -> 0.178


def test_pretrain_cli_runs_and_the_loss_falls(tmp_path, one_thread):
    argv = ["--model", "dmjd-tiny", "--dataset", "digits", "--max-steps", "20",
            "--batch-size", "32", "--lr", "2e-3", "--log-steps", "5",
            "--config-overrides", "hidden_size=32", "num_hidden_layers=2", "intermediate_size=64"]  # fmt: skip
    records = run_pretrain(argv, tmp_path / "run")
    folder = tmp_path / "run"
    print(f"dmjd-tiny loss {records[0]['loss']:.4f} (steps 1-5) -> {records[-1]['loss']:.4f} (steps 16-20)")
    assert records[-1]["loss"] < 0.8 * records[0]["loss"]  # observed 1.409 -> 0.912
    assert not (folder / "reconstruction.png").exists()  # HOG targets: nothing to draw
    assert isinstance(AutoModelForPreTraining.from_pretrained(folder), DMJDForPreTraining)
