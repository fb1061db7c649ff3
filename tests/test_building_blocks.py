"""Unit tests of the shared mechanics: sin-cos tables, patch embedding, patchify, masking, losses, blocks."""

import copy

import numpy as np
import pytest
import torch

from hf_mae.modeling.embeddings import PatchEmbedding2D, interpolate_pos_embed, sincos_1d, sincos_2d
from hf_mae.modeling.layers import Attention, DropPath, TransformerBlock, build_blocks
from hf_mae.modeling.losses import masked_mse
from hf_mae.modeling.masking import (
    RandomMaskGenerator,
    build_mask_generator,
    gather_tokens,
    keep_all,
    mask_from_noise,
    restore_tokens,
)
from hf_mae.modeling.mae import MAEConfig
from hf_mae.modeling.targets import patchify, pixel_target, unpatchify


def reference_sincos(height, width, dim):
    """The MAE paper code's formula, written out independently in numpy: 1D codes of (column, row) concatenated."""
    def code(positions, d):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        angles = np.outer(positions, omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return np.concatenate([code(cols.ravel(), dim // 2), code(rows.ravel(), dim // 2)], axis=1)


def test_sincos_2d_matches_the_mae_layout_on_non_square_grids():
    table = sincos_2d((3, 5), 16, cls_token=True)
    assert table.shape == (16, 16) and table.dtype == torch.float32
    assert torch.equal(table[0], torch.zeros(16))  # the cls row
    np.testing.assert_allclose(table[1:].numpy(), reference_sincos(3, 5, 16), atol=1e-7)
    # width-first: the first half changes along a row, the second half down a column
    grid = table[1:].reshape(3, 5, 16)
    assert torch.equal(grid[0, :, :8], grid[2, :, :8]) and torch.equal(grid[:, 0, 8:], grid[:, 4, 8:])
    canonical = sincos_2d((3, 5), 16, width_first=False)
    assert torch.equal(canonical[:, :8], table[1:, 8:])
    with pytest.raises(ValueError, match="divisible by 4"):
        sincos_2d(4, 18)
    assert sincos_1d(torch.arange(3), 4)[0].tolist() == [0.0, 0.0, 1.0, 1.0]


def test_position_interpolation_is_identity_at_the_same_grid_and_smooth_elsewhere():
    table = sincos_2d((4, 4), 32)[None]
    assert interpolate_pos_embed(table, 4, (4, 4)) is table
    resized = interpolate_pos_embed(table, (4, 4), (8, 6))
    assert resized.shape == (1, 48, 32)
    # corners keep (roughly) the corner codes; bicubic does not overshoot far beyond [-1, 1]
    assert resized.abs().max() < 1.2


def test_patch_embedding_any_channels_non_square():
    embed = PatchEmbedding2D((24, 40), (4, 8), num_channels=5, hidden_size=12)
    assert embed.grid_size == (6, 5) and embed.num_patches == 30
    x = torch.randn(2, 5, 24, 40)
    assert embed(x).shape == (2, 30, 12)
    # token k is the projection of patch k in row-major order
    w = embed.projection.weight.reshape(12, -1)
    patch = x[:, :, 4:8, 16:24].reshape(2, -1)  # row 1, column 2 -> token 1*5+2
    torch.testing.assert_close(embed(x)[:, 7], patch @ w.T + embed.projection.bias, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="image_size height 25"):
        PatchEmbedding2D((25, 40), 4, 3, 8)


def test_patchify_round_trip_and_layout():
    x = torch.randn(2, 3, 8, 12)
    patches = patchify(x, (4, 6))
    assert patches.shape == (2, 4, 4 * 6 * 3)
    # MAE layout: (ph, pw, channels) inside each patch
    assert torch.equal(patches[0, 1].reshape(4, 6, 3), x[0, :, 0:4, 6:12].permute(1, 2, 0))
    assert torch.equal(unpatchify(patches, (4, 6), (2, 2), 3), x)
    with pytest.raises(ValueError, match="grid_size"):
        unpatchify(patches, (4, 6), (3, 2), 3)
    target = pixel_target(x, (4, 6), norm_pix=True)
    torch.testing.assert_close(target.mean(-1), torch.zeros(2, 4), atol=1e-5, rtol=0)
    torch.testing.assert_close(target.var(-1), torch.ones(2, 4), atol=1e-4, rtol=0)


def test_mask_from_noise_keeps_smallest_and_restores_order():
    noise = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.4, 0.6]])
    m = mask_from_noise(noise, 0.5)
    assert m.ids_keep.tolist() == [[1, 3], [0, 2]]
    assert m.mask.tolist() == [[1, 0, 1, 0], [0, 1, 0, 1]]
    tokens = torch.arange(8.0).reshape(2, 4, 1)
    visible = gather_tokens(tokens, m.ids_keep)
    restored = restore_tokens(visible, torch.full((1, 1, 1), -1.0), m.ids_restore)
    # visible tokens go back to their places; hidden places hold the mask token
    assert restored.squeeze(-1).tolist() == [[-1, 1, -1, 3], [4, -1, 6, -1]]
    none = keep_all(2, 4)
    assert none.mask.sum() == 0 and none.ids_keep.tolist() == [[0, 1, 2, 3]] * 2


def test_random_mask_generator_is_seeded_and_batch_friendly():
    generator = build_mask_generator("random")
    a = generator(64, 49, 0.75, generator=torch.Generator().manual_seed(1))
    b = generator(64, 49, 0.75, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a.mask, b.mask)
    assert a.mask.sum(1).eq(49 - int(49 * 0.25)).all()
    assert not torch.equal(a.mask[0], a.mask[1])  # per-sample masks
    # every position is hidden about 75% of the time across a large batch
    big = generator(4000, 49, 0.75, generator=torch.Generator().manual_seed(2))
    assert big.mask.mean(0).sub(0.755).abs().max() < 0.04
    with pytest.raises(ValueError, match="mask_generator"):
        build_mask_generator("checkerboard-nope")
    with pytest.raises(ValueError, match="mask_ratio"):
        RandomMaskGenerator()(2, 4, 1.0)


def test_masked_mse_counts_only_hidden_tokens():
    prediction = torch.zeros(1, 3, 2)
    target = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]])
    assert masked_mse(prediction, target, torch.tensor([[0.0, 1.0, 1.0]])).item() == pytest.approx((4 + 9) / 2)
    assert masked_mse(prediction, target, torch.zeros(1, 3)).item() == 0.0  # nothing hidden: no NaN


def test_attention_is_bidirectional_and_eager_equals_sdpa():
    config = MAEConfig(hidden_size=16, num_attention_heads=4, decoder_hidden_size=16, decoder_num_attention_heads=4)
    torch.manual_seed(0)
    x = torch.randn(2, 7, 16)
    eager_cfg, sdpa_cfg = copy.deepcopy(config), copy.deepcopy(config)
    eager_cfg._attn_implementation, sdpa_cfg._attn_implementation = "eager", "sdpa"
    eager, sdpa = Attention(eager_cfg, 16, 4), Attention(sdpa_cfg, 16, 4)
    sdpa.load_state_dict(eager.state_dict())
    assert eager.is_causal is False
    out_e, weights = eager(x, output_attentions=True)
    out_s, _ = sdpa(x)
    torch.testing.assert_close(out_e, out_s, rtol=0, atol=1e-6)
    assert weights.shape == (2, 4, 7, 7) and (weights[..., 0, 1:] > 0).all()  # first token sees the future
    # permuting tokens permutes outputs (no positional or causal bias inside attention)
    perm = torch.randperm(7)
    torch.testing.assert_close(sdpa(x[:, perm])[0], out_s[:, perm], rtol=1e-5, atol=1e-6)


def test_block_layer_scale_and_drop_path():
    config = MAEConfig()
    config._attn_implementation = "sdpa"
    block = TransformerBlock(config, 16, 4, 32, layer_scale_init_value=1e-4, drop_path=0.5)
    assert block.layer_scale1.gamma.eq(1e-4).all()
    x = torch.randn(4, 5, 16)
    block.eval()
    y, _ = block(x)
    assert (y - x).abs().max() < 1e-2  # tiny residual branches at LayerScale 1e-4
    drop = DropPath(0.25).train()
    torch.manual_seed(0)
    ones = torch.ones(20000, 1)
    out = drop(ones)
    assert torch.isclose(out, torch.zeros(1)).logical_or(torch.isclose(out, torch.full((1,), 1 / 0.75))).all()
    assert out.mean().item() == pytest.approx(1.0, abs=0.03)  # expectation preserved
    assert torch.equal(drop.eval()(ones), ones)
    rates = [b.drop_path.drop_prob if isinstance(b.drop_path, DropPath) else 0.0 for b in
             build_blocks(config, 5, drop_path_rate=0.2, hidden_size=16, num_heads=4, intermediate_size=32)]
    assert rates == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])
