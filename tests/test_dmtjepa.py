"""DMT-JEPA mechanisms with numbers: the wrapped-around 3x3 neighbour indices and the cosine top-k selection worked
out by hand on small grids, the class-attention blocks against a written-out computation (target side: each patch
aggregates its selected neighbours with its own image's mean token as the query; context side: a pooled vector added
to every token), the EMA copy of the head, a short pre-training on digits whose loss falls without collapse, and
``hf-mae pretrain --model dmtjepa-tiny --dataset digits``."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import run_pretrain
from test_ijepa import short_pretraining_on_digits
from transformers import AutoModel, AutoModelForPreTraining

import hf_mae
from hf_mae.modeling.dmtjepa import (
    DMTJEPAConfig,
    DMTJEPAForPreTraining,
    DMTJEPAModel,
    neighbour_indices,
    select_neighbours,
)

TINY = "dmtjepa-tiny"


def test_neighbour_indices_wrap_around_by_hand():
    table = neighbour_indices((4, 4), 3)
    assert table.shape == (16, 8)
    # patch 0 = (row 0, col 0): rows {3, 0, 1} x cols {3, 0, 1} without itself
    assert table[0].tolist() == [1, 3, 4, 5, 7, 12, 13, 15]
    assert table[5].tolist() == [0, 1, 2, 4, 6, 8, 9, 10]  # (1, 1): the plain 3 x 3 square
    assert table[15].tolist() == [0, 2, 3, 8, 10, 11, 12, 14]  # (3, 3): rows {2, 3, 0} x cols {2, 3, 0}
    assert table[7].tolist() == [0, 2, 3, 4, 6, 8, 10, 11]  # (1, 3): cols {2, 3, 0}
    # a non-square grid (3 rows x 5 cols): patch 0 sees rows {2, 0, 1} and cols {4, 0, 1}
    assert neighbour_indices((3, 5), 3)[0].tolist() == [1, 4, 5, 6, 9, 10, 11, 14]
    # every patch appears in exactly 8 windows (the neighbour relation is symmetric)
    assert torch.bincount(table.flatten(), minlength=16).tolist() == [8] * 16
    with pytest.raises(ValueError, match="neighbour_window"):
        neighbour_indices((2, 4), 3)


def test_top_k_neighbours_by_cosine_similarity_by_hand():
    # a 3 x 3 grid (every patch neighbours every other, with wrap-around) of 2-d tokens at these angles (degrees),
    # each scaled by a different length: cosine similarity ignores the length
    angles = torch.tensor([0.0, 80, 22, 71, 40, 33, 90, 49, 10])
    lengths = torch.arange(1.0, 10.0)
    tokens = torch.stack([torch.cos(torch.deg2rad(angles)), torch.sin(torch.deg2rad(angles))], -1) * lengths[:, None]
    chosen = select_neighbours(tokens[None], neighbour_indices((3, 3), 3), k=4)[0]  # (9, 4, 2)
    # patch 4 (40 deg): the nearest angles are patch 5 (7 deg away), 7 (9), 2 (18), 8 (30)
    assert torch.equal(chosen[4], tokens[[5, 7, 2, 8]])
    # patch 0 (0 deg): 8 (10 deg), 2 (22), 5 (33), 4 (40)
    assert torch.equal(chosen[0], tokens[[8, 2, 5, 4]])


def manual_class_attention(block, query, tokens, local):
    """One class-attention block written out: LayerNorm over [query, tokens], softmax(q k^T / sqrt(d_h)) v per head,
    output projection, the residual (on the query when local, on every token otherwise), then the MLP."""
    attention = block.attention
    normed = F.layer_norm(torch.cat([query, tokens], 1), query.shape[-1:], block.norm1.weight, block.norm1.bias, 1e-6)
    width, heads = query.shape[-1], attention.num_heads
    w, b = attention.qkv.weight, attention.qkv.bias
    q = (normed[:, :1] @ w[:width].T + b[:width]).unflatten(-1, (heads, -1)).transpose(1, 2)
    k = (normed @ w[width:2 * width].T + b[width:2 * width]).unflatten(-1, (heads, -1)).transpose(1, 2)
    v = (normed @ w[2 * width:].T + b[2 * width:]).unflatten(-1, (heads, -1)).transpose(1, 2)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width // heads), dim=-1)
    pooled = attention.proj((weights @ v).transpose(1, 2).flatten(2))
    hidden = (query if local else tokens) + pooled
    mlp = block.mlp
    return hidden + mlp.fc2(F.gelu(mlp.fc1(F.layer_norm(hidden, hidden.shape[-1:], block.norm2.weight,
                                                        block.norm2.bias, 1e-6))))  # fmt: skip


def test_local_aggregation_head_against_a_written_out_computation():
    torch.manual_seed(0)
    config = hf_mae.create_config(TINY)
    model = DMTJEPAForPreTraining._from_config(config, attn_implementation="eager").eval()
    head = model.agg_head
    with torch.no_grad():
        for p in head.parameters():  # away from the near-zero init, so every term matters
            p.add_(0.2 * torch.randn_like(p))
        tokens = torch.randn(2, 64, 128)
        # target side: patch 9 of image 1 aggregates its 4 most similar neighbours; query = image 1's mean token
        out = head(tokens, (8, 8), local=True)
        keys = select_neighbours(tokens, neighbour_indices((8, 8), 3), 4)[1, 9][None]  # (1, 4, 128)
        hidden = tokens[1].mean(0)[None, None]
        for block in head.blocks:
            hidden = manual_class_attention(block, hidden, keys, local=True)
        expected = F.layer_norm(hidden[0, 0], (128,), head.norm.weight, head.norm.bias, 1e-6)
        torch.testing.assert_close(out[1, 9], expected, rtol=0, atol=1e-5)
        # each image's targets depend on that image alone (its own mean token is the query)
        other = head(torch.cat([tokens[:1], torch.randn(1, 64, 128)]), (8, 8), local=True)
        torch.testing.assert_close(other[0], out[0], rtol=0, atol=1e-6)
        # context side: each block pools the context (query: its mean) and adds the result to every token
        context = tokens[:, :20]
        hidden = context
        for index, block in enumerate(head.blocks):
            hidden = manual_class_attention(block, hidden.mean(1, keepdim=True), hidden, local=False)
        expected = F.layer_norm(hidden, (128,), head.norm.weight, head.norm.bias, 1e-6)
        torch.testing.assert_close(head(context, local=False), expected, rtol=0, atol=1e-5)


def test_targets_go_through_the_ema_head_and_the_head_follows_the_student():
    torch.manual_seed(0)
    model = hf_mae.create_model(TINY, total_steps=10).eval()
    pixels = torch.randn(2, 3, 32, 32)
    drawn = model.config.mask_generator()(2, (8, 8), generator=torch.Generator().manual_seed(0))
    out = model(pixels, context_ids=drawn.context_ids, target_ids=drawn.target_ids)
    features = model.teacher.encoder(pixels).last_hidden_state
    aggregated = model.teacher.agg_head(F.layer_norm(features, (128,)), (8, 8), local=True)
    torch.testing.assert_close(out.targets[1, 2], aggregated[1, drawn.target_ids[1, 2]], rtol=0, atol=1e-6)
    # the head's EMA copy moves with the encoder's, at the same momentum
    student, teacher = model.agg_head.norm.weight, model.teacher.agg_head.norm.weight
    with torch.no_grad():
        student.fill_(3.0)
        teacher.fill_(1.0)
    model.after_optimizer_step(0)
    model.after_optimizer_step(5)
    m = 0.996 + 0.004 * 5 / 10
    torch.testing.assert_close(teacher, torch.full_like(teacher, m + (1 - m) * 3.0))
    assert not any(name.startswith("teacher.") for name, _ in model.named_parameters())


def test_bad_configs():
    with pytest.raises(ValueError, match="neighbour_window"):
        DMTJEPAConfig(neighbour_window=4)
    with pytest.raises(ValueError, match="num_neighbours"):
        DMTJEPAConfig(num_neighbours=9)
    with pytest.raises(ValueError, match="neighbour_window"):
        DMTJEPAConfig(image_size=32, patch_size=16)  # a 2 x 2 grid: the 3 x 3 window would repeat patches


def test_short_pretraining_on_digits_lowers_the_loss_without_collapse(one_thread):
    _, first_loss, first_std, last_loss, last_std = short_pretraining_on_digits(TINY)
    assert last_loss < 0.2 * first_loss
    assert last_std > 0.1 * first_std  # no collapse


def test_pretrain_cli_on_digits(tmp_path, one_thread):
    records = run_pretrain(["--model", TINY, "--dataset", "digits", "--max-steps", "3", "--batch-size", "8",
                            "--log-steps", "1", "--config-overrides", "total_steps=3"], tmp_path)  # fmt: skip
    losses = [r["loss"] for r in records if "loss" in r]
    assert len(losses) >= 3 and all(0 < loss < 10 for loss in losses)
    model = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert isinstance(model, DMTJEPAForPreTraining) and model.teacher_step == 3  # the loop stepped the EMA
    assert isinstance(AutoModel.from_pretrained(tmp_path), DMTJEPAModel)
