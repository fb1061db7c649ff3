"""I2P-MAE mechanisms with numbers: the multi-view projection of a known cloud, pixel sampling of feature maps,
2-D-guided masking (top-k and Gumbel-top-k), mask propagation down the scales, the frozen teacher kept out of the
checkpoint, and a short pre-training on procedural shapes that lowers both losses. Tiny configs, CPU, fp32."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining

import hf_mae
from hf_mae.modeling.i2pmae import (
    I2PMAEConfig,
    I2PMAEForPreTraining,
    I2PMAEModel,
    gumbel_topk_noise,
    point_pixels,
    project_to_depth_maps,
    propagate_mask,
    sample_at_pixels,
)

TINY = "i2pmae-tiny"

# a cloud whose pixels can be worked out by hand: the in-plane extent of view 0 (rows x, columns y) is 1, so with
# image_size 19 a pixel is 1 / (19 - 3) = 1/16 (exact in binary)
KNOWN = torch.tensor([[[0.0, 0.0, 0.5], [1.0, 0.0, 1.0], [0.0, 1.0, -2.0], [0.0, 0.0, 0.25]]])


def logits_of(images):
    """The summed depths behind depth images made with mean 0, std 1 (sigmoid undone)."""
    return torch.logit(images[:, :, 0].double())


def test_projection_of_a_known_cloud():
    images, grid = project_to_depth_maps(KNOWN, image_size=19, densify=1, image_mean=(0, 0, 0), image_std=(1, 1, 1),
                                         return_grid=True)
    assert images.shape == (1, 3, 3, 19, 19)
    assert torch.equal(images[:, :, 0], images[:, :, 2])  # the depth is copied to the 3 channels
    depth = logits_of(images)[0]
    # view 0 (x, y | z): pixels 1 + x*16 (rows) and 1 + y*16 (cols), centred by a shift of -1 -> (0,0), (16,0),
    # (0,16); the two points on (0, 0) sum their depths 0.5 + 0.25
    expected = torch.zeros(19, 19, dtype=torch.float64)
    expected[0, 0], expected[16, 0], expected[0, 16] = 0.75, 1.0, -2.0
    assert torch.allclose(depth[0], expected, atol=1e-5)
    # view 2 (y, z | x): pixel 3/16 (z spans 3); only (1, 0, 1) has depth x != 0; rows shift +5, cols -1 -> (6, 16)
    expected = torch.zeros(19, 19, dtype=torch.float64)
    expected[6, 16] = 1.0
    assert torch.allclose(depth[2], expected, atol=1e-5)
    # empty pixels are sigmoid(0) = 0.5; point_pixels finds each point where it was drawn
    assert images[0, 0, 0, 5, 5].item() == 0.5
    pixels = point_pixels(KNOWN, grid)
    assert pixels[0, 0].tolist() == [[0, 0], [16, 0], [0, 16], [0, 0]]
    assert pixels[0, 2, 1].tolist() == [6, 16]
    # the default normalisation is ImageNet's, per channel
    normalised = project_to_depth_maps(KNOWN, image_size=19, densify=1)
    value = torch.sigmoid(torch.tensor(1.0))
    for channel, (mean, std) in enumerate(zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))):
        assert normalised[0, 0, channel, 16, 0].item() == pytest.approx((value.item() - mean) / std, abs=1e-5)


def test_projection_densifies_and_sums():
    images = project_to_depth_maps(KNOWN, image_size=19, densify=3, image_mean=(0, 0, 0), image_std=(1, 1, 1))
    depth = logits_of(images)[0, 0]
    # each point covers a 3x3 square; splats one pixel outside land on the border, so the total depth is 9x the sum
    assert depth.sum().item() == pytest.approx(9 * (0.5 + 1.0 - 2.0 + 0.25), abs=1e-4)
    # pixel (0, 0) takes 4 of the 9 splats of each point on it, (1, 1) one: 4 * 0.75 and 0.75
    assert depth[0, 0].item() == pytest.approx(3.0, abs=1e-5)
    assert depth[1, 1].item() == pytest.approx(0.75, abs=1e-5)
    assert depth[2, 2].item() == pytest.approx(0.0, abs=1e-6)


def test_sample_at_pixels_reads_the_right_values():
    # at the native resolution bicubic upsampling is the identity: the sample is the map's value at (row, col)
    maps = torch.arange(2 * 3 * 4 * 8 * 8, dtype=torch.float32).reshape(2, 3, 4, 8, 8)
    pixels = torch.tensor([[0, 0], [7, 7], [2, 5], [5, 2]]).expand(2, 3, 4, 2)
    sampled = sample_at_pixels(maps, pixels, image_size=8)
    assert sampled.shape == (2, 3, 4, 4)
    for b in range(2):
        for v in range(3):
            for m, (row, col) in enumerate(pixels[b, v].tolist()):
                assert torch.allclose(sampled[b, v, m], maps[b, v, :, row, col], atol=1e-3)
    # from a coarse 4x4 grid: the same as F.interpolate(bicubic) to 32 px read at the pixels (the official I2P)
    coarse = torch.randn(1, 3, 5, 4, 4)
    upsampled = torch.nn.functional.interpolate(coarse.flatten(0, 1), size=(32, 32), mode="bicubic")
    pixels = torch.randint(0, 32, (1, 3, 50, 2))
    expected = torch.stack([upsampled[v][:, pixels[0, v, :, 0], pixels[0, v, :, 1]].T for v in range(3)])
    assert torch.allclose(sample_at_pixels(coarse, pixels, 32)[0], expected, atol=1e-5)


def test_topk_masking_keeps_the_most_salient_groups():
    config = hf_mae.create_config(TINY, masking="topk")
    model = I2PMAEModel(config).eval()
    points = torch.randn(2, 256, 3)
    saliency = torch.stack([torch.randperm(16).float(), torch.randperm(16).float()])
    out = model(points, saliency=saliency)
    masked = int(0.8 * 16)  # 12: int(r G), the official count
    assert out.mask.sum(dim=1).tolist() == [masked, masked]
    for b in range(2):
        kept = set(torch.nonzero(out.mask[b] == 0).flatten().tolist())
        assert kept == set(saliency[b].topk(16 - masked).indices.tolist())
    assert out.last_hidden_state.shape == (2, 16 - masked, 96)


def test_guided_masking_is_a_gumbel_top_k_draw():
    model = I2PMAEModel(hf_mae.create_config(TINY, guided_masking_temperature=0.5)).eval()
    saliency, noise = torch.randn(3, 16), torch.rand(3, 16)
    mask = model(torch.randn(3, 256, 3), noise=noise, saliency=saliency).mask
    # by hand: perturbed logits s / T + Gumbel(u), the 16 - int(0.8 * 16) = 4 largest stay visible
    keys = saliency / 0.5 - torch.log(-torch.log(noise))
    expected = torch.ones(3, 16)
    expected.scatter_(1, keys.topk(4, dim=1).indices, 0.0)
    assert torch.equal(mask, expected)
    # the same noise fixes the mask; without saliency the noise alone decides (smallest kept, Point-MAE's rule)
    assert torch.equal(model(torch.randn(3, 256, 3), noise=noise, saliency=saliency).mask, expected)
    random = model(torch.randn(3, 256, 3), noise=noise).mask
    assert torch.equal(random, (noise.argsort(1).argsort(1) >= 4).float())


def test_gumbel_top_k_matches_sampling_without_replacement():
    """Kool et al.: the k largest of logits + Gumbel are distributed as the first k multinomial draws."""
    generator = torch.Generator().manual_seed(0)
    scores = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -2.0])
    trials, k = 20000, 2
    uniform = torch.rand(trials, 6, generator=generator)
    gumbel_kept = torch.zeros(6).scatter_add_(0, gumbel_topk_noise(scores.expand(trials, -1), uniform).argsort(1)[:, :k]
                                              .flatten(), torch.ones(trials * k))
    draws = torch.multinomial(scores.softmax(0).expand(trials, -1), 6, replacement=False, generator=generator)
    multinomial_kept = torch.zeros(6).scatter_add_(0, draws[:, :k].flatten(), torch.ones(trials * k))
    difference = (gumbel_kept - multinomial_kept).abs().max().item() / trials
    print(f"inclusion frequencies, Gumbel-top-2 vs multinomial: max difference {difference:.4f}")
    assert difference < 0.02  # measured 0.0097 (binomial std ~0.005)


def test_masks_propagate_to_child_groups():
    model = I2PMAEModel(hf_mae.create_config(TINY)).eval()
    points = torch.randn(2, 256, 3)
    out = model(points, noise=torch.rand(2, 16))
    scales = model.tokenize(points)
    masks = [m.bool() for m in out.scale_masks]
    assert [m.shape[1] for m in masks] == [64, 32, 16]
    for i in (2, 1):  # brute force: a lower token is visible iff some visible upper group contains it
        for b in range(2):
            members = scales[i].member_indices[b]
            visible = {int(j) for g in range(members.shape[0]) if not masks[i][b, g] for j in members[g]}
            assert set(torch.nonzero(~masks[i - 1][b]).flatten().tolist()) == visible
    # the helper on a hand-made case: groups {0,1}, {1,2}, {3,4}; only the second is visible
    lower = propagate_mask(torch.tensor([[True, False, True]]), torch.tensor([[[0, 1], [1, 2], [3, 4]]]), 6)
    assert lower.tolist() == [[True, False, False, True, True, True]]
    # features: all groups in FPS order without masking, the default of a plain call
    full = model(points, mask_ratio=0.0)
    assert full.mask.sum().item() == 0 and full.last_hidden_state.shape == (2, 16, 96)
    plain = model(points, output_hidden_states=True)
    assert torch.equal(plain.last_hidden_state, full.last_hidden_state) and plain.mask.sum().item() == 0
    assert torch.equal(plain.pooler_output, full.last_hidden_state.mean(dim=1))
    # captured: the first block's input and one state per block of the 3 scales, each over its visible tokens
    # (padded to the batch's largest count; a lower token in no upper group stays out even with nothing masked)
    visible = [int((m == 0).sum(dim=1).max()) for m in plain.scale_masks]
    assert visible[-1] == 16
    assert [tuple(h.shape) for h in plain.hidden_states] == [
        (2, visible[0], 32), (2, visible[0], 32), (2, visible[1], 64), (2, visible[2], 96)]


def test_pretraining_targets_and_losses_by_hand():
    model = hf_mae.create_model(TINY).eval()
    points, noise = torch.randn(2, 256, 3), torch.rand(2, 16)
    out = model(points, noise=noise)
    config, scales = model.config, model.i2pmae.tokenize(points)
    assert config.loss_scale == 1
    masked = out.scale_masks[1].bool()
    # 3-D: Chamfer-L2 of the masked middle groups, recomputed from the logits
    assert out.logits.shape == (int(masked.sum()), 4, 3)
    chamfer = hf_mae.modeling.losses.chamfer_l2(out.logits, scales[1].neighborhoods[masked]).mean()
    assert out.loss_3d.item() == pytest.approx(chamfer.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(out.loss_3d.item() + out.loss_2d.item(), rel=1e-5)
    # saliency: the teacher's CLS attention at each top centre's pixel, mean over the 3 views (hand loop)
    images, grid = project_to_depth_maps(points, 32, 3, return_grid=True)
    _, attention = model.teacher_maps(images)
    upsampled = torch.nn.functional.interpolate(attention.flatten(0, 1), size=(32, 32), mode="bicubic")
    upsampled = upsampled.reshape(2, 3, 32, 32)
    pixels = point_pixels(scales[-1].centers, grid)
    for b in range(2):
        for g in range(16):
            by_hand = sum(upsampled[b, v, pixels[b, v, g, 0], pixels[b, v, g, 1]] for v in range(3)) / 3
            assert out.saliency[b, g].item() == pytest.approx(by_hand.item(), abs=1e-5)


def test_teacher_is_frozen_and_not_saved(tmp_path):
    model = hf_mae.create_model(TINY).eval()
    points, noise = torch.randn(2, 256, 3), torch.rand(2, 16)
    loss = model(points, noise=noise).loss
    loss.backward()
    teacher = model.teacher
    assert teacher is not None and not teacher.training
    assert all(not p.requires_grad and p.grad is None for p in teacher.parameters())
    names = {id(p) for p in model.parameters()}
    assert not any(id(p) in names for p in teacher.parameters())  # out of the optimiser
    assert not any(key.startswith("teacher") for key in model.state_dict())
    model.save_pretrained(tmp_path)
    saved = load_file(tmp_path / "model.safetensors")
    assert not any("teacher" in key for key in saved) and len(saved) == len(model.state_dict())
    # reloaded with the same teacher instance, and rebuilt from the seeded teacher_config: the same loss
    with torch.no_grad():
        reference = model(points, noise=noise)
        again = I2PMAEForPreTraining.from_pretrained(tmp_path, teacher=teacher).eval()
        assert again.teacher is teacher
        assert torch.equal(again(points, noise=noise).loss, reference.loss)
        rebuilt = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
        assert torch.allclose(rebuilt(points, noise=noise).loss, reference.loss, atol=1e-6)
    assert json.loads((tmp_path / "config.json").read_text())["group_counts"] == [64, 32, 16]
    assert AutoConfig.from_pretrained(tmp_path).num_groups == 16
    assert isinstance(AutoModel.from_pretrained(tmp_path), I2PMAEModel)


def test_teacher_instances_any_vit_or_clip():
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                  num_attention_heads=2)
    clip = AutoModel.from_config(
        AutoConfig.for_model("clip", projection_dim=24, vision_config=vision,
                             text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                              num_attention_heads=2, bos_token_id=0, eos_token_id=1, pad_token_id=1)),
        attn_implementation="eager",
    )
    model = I2PMAEForPreTraining(hf_mae.create_config(TINY), teacher=clip)
    assert model.config.teacher_feature_dim == 24  # CLIP's projected patch features
    out = model(torch.randn(2, 256, 3))
    assert torch.isfinite(out.loss) and out.loss_2d.item() > 0
    sdpa_vit = AutoModel.from_config(AutoConfig.for_model("vit", **vision), attn_implementation="sdpa")
    with pytest.raises(ValueError, match="eager"):
        I2PMAEForPreTraining(hf_mae.create_config(TINY), teacher=sdpa_vit)(torch.randn(2, 256, 3))
    with pytest.raises(TypeError, match="teacher"):
        I2PMAEForPreTraining(hf_mae.create_config(TINY), teacher=torch.nn.Linear(2, 2))


def test_bad_configs_and_inputs():
    with pytest.raises(ValueError, match="group_counts"):
        I2PMAEConfig(num_points=128, group_counts=[256, 64], group_sizes=[8, 8], hidden_sizes=[32, 64], depths=[1, 1])
    with pytest.raises(ValueError, match="group_sizes"):
        I2PMAEConfig(group_sizes=[16, 8])
    with pytest.raises(ValueError, match="mask_ratio"):
        I2PMAEConfig(mask_ratio=1.0)
    with pytest.raises(ValueError, match="masking"):
        I2PMAEConfig(masking="block")
    with pytest.raises(ValueError, match="decoder_up_blocks"):
        I2PMAEConfig(decoder_depths=[1, 1, 1])
    with pytest.raises(ValueError, match="densify"):
        I2PMAEConfig(densify=4)
    model = hf_mae.create_model(TINY)
    with pytest.raises(ValueError, match="noise"):
        model(torch.randn(2, 256, 3), noise=torch.rand(2, 15))
    with pytest.raises(ValueError, match="point_values"):
        model(torch.randn(2, 256, 4))
    with pytest.raises(ValueError, match="mask_ratio"):
        model(torch.randn(2, 256, 3), mask_ratio=0.0)


def test_classifier_never_masks():
    model = hf_mae.create_model(TINY, task="point-cloud-classification", num_labels=4).eval()
    points = torch.randn(3, 256, 3)
    out = model(points, labels=torch.tensor([0, 1, 3]), output_hidden_states=True)
    assert out.logits.shape == (3, 4) and out.loss.item() > 0
    assert out.hidden_states[-1].shape == (3, 16, 96)  # the top scale, all 16 groups
    assert torch.equal(model(points).logits, out.logits)  # deterministic: no mask drawn


def test_short_pretraining_lowers_both_losses(one_thread):
    from hf_mae.training.shapes import make_shapes

    clouds, _ = make_shapes(24, num_points=256, seed=0)
    clouds = torch.from_numpy(clouds)
    torch.manual_seed(0)
    model = hf_mae.create_model(TINY).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    generator = torch.Generator().manual_seed(0)
    losses_3d, losses_2d = [], []
    for _ in range(200):
        out = model(clouds[torch.randint(0, len(clouds), (16,), generator=generator)])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses_3d.append(out.loss_3d.item())
        losses_2d.append(out.loss_2d.item())
    first_3d, last_3d = sum(losses_3d[:20]) / 20, sum(losses_3d[-20:]) / 20
    first_2d, last_2d = sum(losses_2d[:20]) / 20, sum(losses_2d[-20:]) / 20
    print(f"loss_3d {first_3d:.4f} -> {last_3d:.4f}, loss_2d {first_2d:.4f} -> {last_2d:.4f}")
    assert last_3d < 0.85 * first_3d  # measured 0.1334 -> 0.1020 (x0.76)
    assert last_2d < 0.85 * first_2d  # measured 0.7265 -> 0.5681 (x0.78)
