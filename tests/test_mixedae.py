"""MixedAE: the mixing partition (disjoint, covering, exact counts), homologous (TopK) attention against a hand
computation, homologous recognition rising above chance and the per-source reconstruction loss falling on digits,
and a 20-step `hf-mae pretrain` run."""

import math

import pytest
import torch
from conftest import digits_pixels, requires_flex_attention, run_pretrain
from transformers import AutoModelForPreTraining

import hf_mae
from hf_mae.modeling.layers import Attention
from hf_mae.modeling.masking import mask_from_noise
from hf_mae.modeling.mixedae import (
    MixedAEConfig,
    MixedAEForPreTraining,
    homologous_attention_mask,
    homologous_block_mask,
    homologous_keys,
    mix_tokens,
    mixing_partition,
    partition_noise,
    source_mask,
)

SMALL = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, decoder_num_hidden_layers=1)


@pytest.mark.parametrize("mix_group, num_patches", [(4, 64), (2, 64), (4, 196)])
def test_partition_is_disjoint_covers_the_grid_in_exact_counts(mix_group, num_patches):
    batch = 4 * mix_group
    noise = torch.rand(batch, num_patches, generator=torch.Generator().manual_seed(1))
    partition = mixing_partition(noise, mix_group)
    assert partition.shape == (batch // mix_group, num_patches)
    mask = source_mask(partition, mix_group).view(batch // mix_group, mix_group, num_patches)
    # every position of a mixed image is visible to exactly one member (disjoint and covering) ...
    assert torch.equal((1 - mask).sum(1), torch.ones(batch // mix_group, num_patches))
    # ... and every member supplies exactly L / g positions
    assert torch.equal((1 - mask).sum(2), torch.full((batch // mix_group, mix_group), num_patches / mix_group))
    # member 0 gets MAE's kept set for its own noise; member j the next L/g ranks of that noise
    share = num_patches // mix_group
    order = noise[::mix_group].argsort(1)
    for j in range(mix_group):
        assert torch.equal(partition.gather(1, order[:, j * share : (j + 1) * share]), torch.full((batch // mix_group, share), j))
    # the per-image noise the encoder uses keeps exactly the same positions as MAE masking would
    assert torch.equal(mask_from_noise(partition_noise(noise, mix_group), 1 - 1 / mix_group).mask, mask.flatten(0, 1))
    # the mixed image takes each token from the member the partition names
    tokens = torch.randn(batch, num_patches, 3)
    mixed = mix_tokens(tokens, partition)
    for n in range(batch // mix_group):
        for position in (0, num_patches // 2, num_patches - 1):
            assert torch.equal(mixed[n, position], tokens[n * mix_group + partition[n, position], position])


def test_model_mask_follows_the_noise_and_bad_batches_are_refused():
    model = hf_mae.create_model("mixedae-tiny", **SMALL).eval()
    pixel_values, noise = torch.randn(8, 3, 32, 32), torch.rand(8, 64)
    out = model(pixel_values, noise=noise)
    assert torch.equal(out.mask, source_mask(mixing_partition(noise, 4), 4))
    assert out.mask.sum(1).tolist() == [48.0] * 8  # each source hidden on 3/4 of its 64 patches
    assert torch.equal(out.partition, mixing_partition(noise, 4))
    # the per-image encoder masks the same positions for the same noise
    assert torch.equal(model.base_model(pixel_values, noise=noise).mask, out.mask)
    with pytest.raises(ValueError, match=r"pixel_values batch size 6 .*mix_group=4"):
        model(pixel_values[:6])
    with pytest.raises(ValueError, match=r"mask_ratio.*mix_group=4.*0\.75"):
        model(pixel_values, mask_ratio=0.5)
    with pytest.raises(ValueError, match="mix_group"):
        MixedAEConfig(mix_group=1)
    with pytest.raises(ValueError, match="mask_ratio"):
        MixedAEConfig(mix_group=2, mask_ratio=0.75)
    assert MixedAEConfig(mix_group=2).mask_ratio == 0.5
    with pytest.raises(ValueError, match="homologous_attention_layers"):
        MixedAEConfig(num_hidden_layers=2, homologous_attention_layers=[2])


def test_homologous_attention_keeps_only_the_topk_keys():
    """One head, q = k = v = x (identity projections), so the scores are x_i . x_j / sqrt(4), checked by hand."""
    config = MixedAEConfig(hidden_size=4, num_attention_heads=1, num_hidden_layers=1, decoder_hidden_size=4,
                           decoder_num_attention_heads=1)  # fmt: skip
    config._attn_implementation = "eager"
    attention = Attention(config, hidden_size=4, num_heads=1)
    with torch.no_grad():
        attention.qkv.weight.copy_(torch.eye(4).repeat(3, 1))
        attention.qkv.bias.zero_()
        attention.proj.weight.copy_(torch.eye(4))
        attention.proj.bias.zero_()
    # cls = 0, then two "sources": patches 1, 2 along e1, patches 3, 4 along e2
    x = torch.tensor([[0, 0, 0, 0], [2, 0, 0, 0], [1, 0, 1, 0], [0, 2, 0, 0], [0, 1, 0, 1]], dtype=torch.float)[None]
    mask = homologous_attention_mask(attention, x, topk=2)
    out, weights = attention(x, mask, output_attentions=True)
    # by hand, scores / 2: patch 1 -> (cls 0, p1 2, p2 1, p3 0, p4 0): top-2 patch keys {p1, p2}
    kept = {1: [1, 2], 2: [1, 2], 3: [3, 4], 4: [3, 4]}
    expected = torch.zeros(5, 5)
    expected[0] = torch.softmax((x[0] @ x[0, 0]) / 2, 0)  # cls attends everywhere (all scores 0: uniform 1/5)
    for query, keys in kept.items():
        scores = {key: float(x[0, query] @ x[0, key]) / 2 for key in [0] + keys}
        total = sum(math.exp(s) for s in scores.values())
        for key, s in scores.items():
            expected[query, key] = math.exp(s) / total
    torch.testing.assert_close(weights[0, 0], expected, rtol=0, atol=1e-6)
    assert weights[0, 0, 1, 3].item() == 0.0 and weights[0, 0, 3, 2].item() == 0.0  # exactly zero outside the top-k
    torch.testing.assert_close(out[0], expected @ x[0], rtol=0, atol=1e-6)  # v = x, proj = identity
    # sdpa with the same mask gives the same output
    config._attn_implementation = "sdpa"
    torch.testing.assert_close(attention(x, mask)[0], out, rtol=0, atol=1e-6)


def test_homologous_block_mask_is_the_additive_mask():
    """Flex attention gets homologous attention as a BlockMask (an additive mask tensor crashes the process on CPU
    under flex): its mask function allows exactly the keys the additive mask leaves at 0, per batch and head."""
    config = MixedAEConfig(hidden_size=16, num_attention_heads=2, num_hidden_layers=1, decoder_hidden_size=16,
                           decoder_num_attention_heads=2)  # fmt: skip
    attention = Attention(config, hidden_size=16, num_heads=2)
    tokens = torch.randn(3, 1 + 16, 16)
    keep = homologous_keys(attention, tokens, topk=4)
    assert keep.shape == (3, 2, 17, 17) and (keep[:, :, 1:, 1:].sum(-1) == 4).all() and keep[:, :, 0].all()
    assert torch.equal(homologous_attention_mask(attention, tokens, topk=4) == 0, keep)
    block_mask = homologous_block_mask(attention, tokens, topk=4)
    b, h, q, k = torch.meshgrid(*(torch.arange(n) for n in keep.shape), indexing="ij")
    assert torch.equal(block_mask.mask_mod(b, h, q, k), keep)
    assert block_mask.shape == (3, 2, 17, 17)


@requires_flex_attention
def test_pretraining_with_flex_attention_matches_eager(fresh_flex_compile):
    """MixedAE pre-training forward with flex attention (homologous masks as BlockMasks) against eager, same weights
    and mixing: logits within 1e-5 (measured 1.4e-6, float32 rounding), the same loss within 1e-5."""
    model = hf_mae.create_model("mixedae-tiny", num_hidden_layers=1, decoder_num_hidden_layers=1).eval()
    pixels = torch.randn(8, 3, 32, 32)
    outputs = {}
    for implementation in ("eager", "flex_attention"):
        model.set_attn_implementation(implementation)
        torch.manual_seed(1)  # the same mixing partition
        with torch.no_grad():
            outputs[implementation] = model(pixels)
    eager, flex = outputs["eager"], outputs["flex_attention"]
    torch.testing.assert_close(flex.logits, eager.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(flex.loss, eager.loss, rtol=0, atol=1e-5)
    assert torch.equal(flex.mask, eager.mask)


def test_homologous_recognition_rises_above_chance_and_reconstruction_falls(one_thread):
    """Chance of the top-(L/g - 1) recognition accuracy is (16 - 1) / (64 - 1) = 0.238 for 64 patches in groups of 4."""
    pixels, _ = digits_pixels("train")
    model = hf_mae.create_model("mixedae-tiny", **SMALL).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    generator = torch.Generator().manual_seed(0)
    reconstruction, accuracy = [], []
    for _ in range(80):
        out = model(pixels[torch.randint(0, len(pixels), (32,), generator=generator)])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        reconstruction.append(out.reconstruction_loss.item())
        accuracy.append(out.homologous_accuracy.item())
    chance = 15 / 63
    early, late = sum(accuracy[:5]) / 5, sum(accuracy[-10:]) / 10
    rec_early, rec_late = sum(reconstruction[:5]) / 5, sum(reconstruction[-10:]) / 10
    print(f"homologous accuracy {early:.3f} (steps 1-5) -> {late:.3f} (steps 71-80), chance {chance:.3f}; "
          f"per-source reconstruction {rec_early:.3f} -> {rec_late:.3f}")  # fmt: skip
    assert early < chance + 0.1  # starts near chance
    assert late > 0.8  # observed 0.241 -> 1.000 (segment embeddings make sources separable)
    assert rec_late < 0.5 * rec_early  # observed 1.288 -> 0.527


def test_pretrain_cli_runs_and_the_loss_falls(tmp_path, one_thread):
    argv = ["--model", "mixedae-tiny", "--dataset", "digits", "--max-steps", "20",
            "--batch-size", "32", "--lr", "2e-3", "--log-steps", "5",
            "--config-overrides", "hidden_size=32", "num_hidden_layers=2", "intermediate_size=64",
            "decoder_num_hidden_layers=1"]  # fmt: skip
    records = run_pretrain(argv, tmp_path / "run")
    folder = tmp_path / "run"
    print(f"mixedae-tiny loss {records[0]['loss']:.4f} (steps 1-5) -> {records[-1]['loss']:.4f} (steps 16-20)")
    assert records[-1]["loss"] < 0.9 * records[0]["loss"]  # observed 5.870 -> 5.022 (reconstruction + contrast)
    assert (folder / "reconstruction.png").stat().st_size > 0
    assert isinstance(AutoModelForPreTraining.from_pretrained(folder), MixedAEForPreTraining)


def tinted_images(count: int, generator) -> torch.Tensor:
    """(count, 3, 32, 32) images that differ in content only: each a random colour plus pixel noise, so the patches of
    one source share a colour and recognising a patch's source needs no segment embedding."""
    colours = torch.rand(count, 3, 1, 1, generator=generator) * 2 - 1
    return colours + 0.3 * torch.randn(count, 3, 32, 32, generator=generator)


def test_recognition_learns_from_content_without_segment_embeddings(one_thread):
    """With segment embeddings off, the only cue to a token's source is its content: accuracy must still rise."""
    torch.manual_seed(0)
    model = hf_mae.create_model("mixedae-tiny", use_segment_embeddings=False, **SMALL).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    generator = torch.Generator().manual_seed(0)
    accuracy = [model(tinted_images(32, generator)).homologous_accuracy.item()]
    for _ in range(40):
        out = model(tinted_images(32, generator))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        accuracy.append(out.homologous_accuracy.item())
    chance = 15 / 63
    late = sum(accuracy[-5:]) / 5
    print(f"content-only homologous accuracy {accuracy[0]:.3f} -> {late:.3f} (chance {chance:.3f})")
    assert late > chance + 0.3 and late > accuracy[0] + 0.2  # observed 0.592 (untrained) -> 0.979, chance 0.238
