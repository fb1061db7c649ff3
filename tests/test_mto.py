"""MTO (masked token optimisation) on SimMIM, with numbers against the definitions written in
hf_mae/modeling/masked_token_optimization.py: the weight recalibration (the reweighted attention rows by hand, and
gamma = 0 cutting the mask tokens out of the visible tokens), L_spa, L_e and L_r by hand on a fixed mask, the total
loss, plain SimMIM bit for bit with the flag off, the config checks, and `hf-mae pretrain --model mto-tiny`."""

import math

import pytest
import torch
from conftest import run_pretrain
from transformers import AutoModelForPreTraining

import hf_mae
from hf_mae.modeling.masked_token_optimization import (
    attention_sparsity_loss,
    depth_weights,
    masked_key_share,
    recalibration_bias,
    row_entropy_loss,
    singularity_loss,
)
from hf_mae.modeling.mto import MTOConfig, MTOForPreTraining
from hf_mae.modeling.simmim import SimMIMForPreTraining, masked_l1

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def tiny(preset="mto-tiny", seed=0, **overrides):
    """A small random model (its weights from ``seed``) in eval mode with eager attention."""
    torch.manual_seed(seed)
    model = hf_mae.create_model(preset, **{**SMALL, **overrides}).eval()
    model.config._attn_implementation = "eager"
    return model


def fixed_inputs(seed=3):
    generator = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(2, 3, 32, 32, generator=generator)
    bool_masked_pos = torch.rand(2, 64, generator=generator) < 0.6  # 8x8 patches of 4 px
    return pixel_values, bool_masked_pos


def test_recalibration_reweights_visible_rows_by_gamma_and_renormalises():
    model = tiny(mto_recalibration=0.25)
    pixel_values, bool_masked_pos = fixed_inputs()
    with torch.no_grad():
        recalibrated = model.simmim(pixel_values, bool_masked_pos=bool_masked_pos, output_attentions=True).attentions
        model.config.mto_recalibration = 1.0  # the same weights, no recalibration
        plain = model.simmim(pixel_values, bool_masked_pos=bool_masked_pos, output_attentions=True).attentions
    # block 1 sees the same input either way, so its rows are comparable: by hand, for a few rows of image 0, head 1
    key_masked = [0.0] + bool_masked_pos[0].float().tolist()  # the cls key is visible
    checked = 0
    for query in (0, 1, 2, 5, 9, 20, 40, 63, 64):
        row = plain[0][0, 1, query].tolist()
        got = recalibrated[0][0, 1, query].tolist()
        if query > 0 and key_masked[query]:  # a masked query: its row is left alone
            assert got == pytest.approx(row, abs=1e-6)
            continue
        weights = [0.25 if masked else 1.0 for masked in key_masked]
        total = sum(a * w for a, w in zip(row, weights))
        assert got == pytest.approx([a * w / total for a, w in zip(row, weights)], abs=1e-6)
        # the share on masked keys follows gamma s / (1 - s + gamma s)
        share = sum(a for a, masked in zip(row, key_masked) if masked)
        expected = 0.25 * share / (1 - share + 0.25 * share)
        assert sum(a for a, masked in zip(got, key_masked) if masked) == pytest.approx(expected, abs=1e-6)
        checked += 1
    assert checked >= 4
    # the bias itself: log(gamma) exactly on (visible query, masked key) pairs
    bias = recalibration_bias(bool_masked_pos.float(), 0.25)
    assert bias.shape == (2, 1, 65, 65)
    query_visible = torch.tensor([1.0] + (~bool_masked_pos[1]).float().tolist())
    expected_bias = math.log(0.25) * query_visible[:, None] * (1 - query_visible)[None, :]
    assert torch.allclose(bias[1, 0], expected_bias)
    assert recalibration_bias(bool_masked_pos.float(), 1.0) is None
    with pytest.raises(ValueError, match="factor"):
        recalibration_bias(bool_masked_pos.float(), 1.5)


def test_gamma_zero_cuts_the_mask_tokens_out_of_the_visible_tokens():
    """With gamma = 0 no visible token attends to a masked one in any block, so the visible tokens' features do not
    depend on the mask token at all (data singularity taken to its limit), while the masked tokens' do."""
    model = tiny(mto_recalibration=0.0)
    pixel_values, bool_masked_pos = fixed_inputs()
    with torch.no_grad():
        out = model.simmim(pixel_values, bool_masked_pos=bool_masked_pos, output_attentions=True)
        share = masked_key_share(out.attentions, bool_masked_pos.float())
        visible_queries = torch.cat([torch.ones(2, 1, dtype=torch.bool), ~bool_masked_pos], 1)
        assert share.permute(0, 2, 1, 3)[:, :, visible_queries].abs().max().item() == 0.0
        model.simmim.embeddings.mask_token.add_(torch.randn(model.config.hidden_size))
        moved = model.simmim(pixel_values, bool_masked_pos=bool_masked_pos).last_hidden_state
    before, after = out.last_hidden_state[:, 1:], moved[:, 1:]
    visible = ~bool_masked_pos
    assert torch.allclose(before[visible], after[visible], atol=1e-5)
    assert (before[bool_masked_pos] - after[bool_masked_pos]).abs().max().item() > 0.1


@pytest.mark.parametrize("weighting, block_weights", [("linear", (2 / 3, 1 / 3)), ("uniform", (0.5, 0.5))])
def test_mto_terms_and_total_loss_by_hand(weighting, block_weights):
    model = tiny(mto_sparsity_weight=0.3, mto_entropy_weight=0.2, mto_singularity_weight=0.7,
                 mto_depth_weighting=weighting)
    pixel_values, bool_masked_pos = fixed_inputs()
    with torch.no_grad():
        out = model(pixel_values, bool_masked_pos=bool_masked_pos, output_attentions=True)
    attentions, mask = out.attentions, bool_masked_pos.tolist()
    assert len(attentions) == 2 and attentions[0].shape == (2, 2, 65, 65)
    # by hand, per block: L_spa over the masked queries' share on masked keys, L_e over every row's entropy / log 65
    l_spa = l_e = 0.0
    for block, block_weight in zip(attentions, block_weights):
        shares, entropies = [], []
        for b in range(2):
            key_masked = [False] + mask[b]
            for head in range(2):
                for query in range(65):
                    row = block[b, head, query].tolist()
                    entropies.append(-sum(a * math.log(a) for a in row if a > 0) / math.log(65))
                    if query > 0 and mask[b][query - 1]:
                        shares.append(sum(a for a, masked in zip(row, key_masked) if masked))
                    else:  # the exclusion (gamma = 0): a visible row puts nothing on masked keys
                        assert sum(a for a, masked in zip(row, key_masked) if masked) == 0.0
        l_spa += block_weight * sum(shares) / len(shares)
        l_e += block_weight * sum(entropies) / len(entropies)
    # L_r by hand: squared cosine of the mask token with every visible patch embedding
    token = model.simmim.embeddings.mask_token.detach().flatten().tolist()
    with torch.no_grad():
        embedded = model.simmim.embeddings.patch_embeddings(pixel_values)
    squares = []
    for b in range(2):
        for n in range(64):
            if mask[b][n]:
                continue
            e = embedded[b, n].tolist()
            dot = sum(x * y for x, y in zip(e, token))
            squares.append((dot / math.sqrt(sum(x * x for x in e)) / math.sqrt(sum(y * y for y in token))) ** 2)
    l_r = sum(squares) / len(squares)
    print(f"{weighting}: by hand L_spa {l_spa:.6f}, L_e {l_e:.6f}, L_r {l_r:.6f}; model "
          f"{out.mto_sparsity_loss.item():.6f}, {out.mto_entropy_loss.item():.6f}, "
          f"{out.mto_singularity_loss.item():.6f}")
    assert out.mto_sparsity_loss.item() == pytest.approx(l_spa, rel=1e-5)
    assert out.mto_entropy_loss.item() == pytest.approx(l_e, rel=1e-5)
    assert out.mto_singularity_loss.item() == pytest.approx(l_r, rel=1e-4)
    # at a random init attention is nearly uniform: a masked query's share is about the masked share of the keys
    # (~0.6), the rows' entropy near its maximum of 1
    assert 0.45 < l_spa < 0.75 and l_e > 0.9
    # the total: SimMIM's masked L1 plus the weighted terms
    l1 = masked_l1(pixel_values, out.logits, model.pixel_mask(out.mask, (32, 32))).item()
    assert out.reconstruction_loss.item() == pytest.approx(l1, rel=1e-6)
    assert out.loss.item() == pytest.approx(l1 + 0.3 * l_spa + 0.2 * l_e + 0.7 * l_r, rel=1e-5)
    # the functions on their own agree, and a zero weight drops its term
    share = masked_key_share(attentions, bool_masked_pos.float())
    assert attention_sparsity_loss(share, bool_masked_pos.float(), weighting=weighting).item() == pytest.approx(
        l_spa, rel=1e-5)
    assert row_entropy_loss(attentions, weighting).item() == pytest.approx(l_e, rel=1e-5)
    model.config.mto_entropy_weight = 0.0
    with torch.no_grad():
        dropped = model(pixel_values, bool_masked_pos=bool_masked_pos)
    assert dropped.mto_entropy_loss is None and dropped.attentions is None  # not asked for, not returned
    assert dropped.loss.item() == pytest.approx(l1 + 0.3 * l_spa + 0.7 * l_r, rel=1e-5)


def test_depth_weights():
    assert depth_weights(4).tolist() == pytest.approx([0.4, 0.3, 0.2, 0.1])
    assert depth_weights(3, "uniform").tolist() == pytest.approx([1 / 3] * 3)
    with pytest.raises(ValueError, match="weighting"):
        depth_weights(3, "cosine")


def test_singularity_loss_moves_only_the_mask_token():
    token = torch.tensor([1.0, 0.0, 0.0], requires_grad=True)
    embeddings = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [1.0, 1.0, 0.0]]], requires_grad=True)
    mask = torch.tensor([[0.0, 0.0, 1.0]])  # the third patch is hidden: it does not count
    loss = singularity_loss(token, embeddings, mask)
    assert loss.item() == pytest.approx((1.0 + 0.0) / 2)
    loss.backward()
    assert embeddings.grad is None and token.grad is not None
    # gradient of mean cos^2 w.r.t. the token at (1, 0, 0): zero along the token itself (scale-invariant)
    assert abs(token.grad[0].item()) < 1e-6


def test_flag_off_is_plain_simmim_bit_for_bit():
    pixel_values, bool_masked_pos = fixed_inputs()
    simmim = tiny("simmim-tiny", seed=5)
    off = tiny("mto-tiny", seed=5, use_mto=False)
    assert isinstance(off, MTOForPreTraining) and not simmim.config.use_mto
    state = simmim.state_dict()
    assert all(torch.equal(state[key], value) for key, value in off.state_dict().items())
    with torch.no_grad():
        plain = simmim(pixel_values, bool_masked_pos=bool_masked_pos)
        flagged_off = off(pixel_values, bool_masked_pos=bool_masked_pos)
        # on, but with nothing to do (gamma 1, weights 0): the same numbers too
        neutral = tiny("mto-tiny", seed=5, mto_recalibration=1.0, mto_sparsity_weight=0.0, mto_entropy_weight=0.0,
                       mto_singularity_weight=0.0)(pixel_values, bool_masked_pos=bool_masked_pos)
        on = tiny("mto-tiny", seed=5)(pixel_values, bool_masked_pos=bool_masked_pos)
    print(f"SimMIM L1 {plain.loss.item():.6f}; MTO on: L1 {on.reconstruction_loss.item():.6f}, "
          f"total {on.loss.item():.6f}")
    assert torch.equal(plain.loss, flagged_off.loss) and torch.equal(plain.logits, flagged_off.logits)
    assert torch.equal(plain.loss, neutral.reconstruction_loss) and torch.equal(plain.logits, neutral.logits)
    assert len(plain.to_tuple()) == 3 and plain.reconstruction_loss is None  # loss, logits, mask: as before
    assert not torch.equal(plain.logits, on.logits) and on.loss.item() > on.reconstruction_loss.item()


def test_sdpa_carries_the_recalibration_as_eager_does():
    pixel_values, bool_masked_pos = fixed_inputs()
    model = tiny(mto_sparsity_weight=0.0, mto_entropy_weight=0.0)  # no attention weights needed: sdpa may run
    with torch.no_grad():
        eager = model(pixel_values, bool_masked_pos=bool_masked_pos)
        model.config._attn_implementation = "sdpa"
        sdpa = model(pixel_values, bool_masked_pos=bool_masked_pos)
    assert torch.allclose(eager.logits, sdpa.logits, atol=1e-5)
    model.config._attn_implementation = "flash_attention_2"  # refused before any kernel is looked up
    with pytest.raises(ValueError, match="mto_recalibration"):
        model(pixel_values, bool_masked_pos=bool_masked_pos)


def test_config_checks_name_the_field():
    assert MTOConfig().use_mto and MTOConfig().image_size == 192 and MTOConfig().mask_ratio == 0.6
    with pytest.raises(ValueError, match="mto_recalibration"):
        MTOConfig(mto_recalibration=1.5)
    with pytest.raises(ValueError, match="mto_entropy_weight"):
        MTOConfig(mto_entropy_weight=-0.1)
    with pytest.raises(ValueError, match="mto_sparsity_weight"):
        MTOConfig(mto_sparsity_weight=float("nan"))
    with pytest.raises(ValueError, match="mto_depth_weighting"):
        MTOConfig(mto_depth_weighting="cosine")
    with pytest.raises(ValueError, match="use_mto"):
        hf_mae.create_config("simmim-tiny", use_mto="yes")
    # the flag works on SimMIM's own config: simmim-tiny + use_mto is mto-tiny under another model_type
    flagged = hf_mae.create_model("simmim-tiny", use_mto=True, **SMALL)
    assert isinstance(flagged, SimMIMForPreTraining) and flagged.config.mto_needs_attentions


def test_training_lowers_the_share_of_attention_on_mask_tokens(one_thread):
    """20 AdamW steps on one batch: L_spa (a masked token's attention share on masked keys) and L_e fall well below
    their start, as the losses ask, and the reconstruction still improves."""
    model = tiny(mto_sparsity_weight=1.0, mto_entropy_weight=0.5).train()
    pixel_values, bool_masked_pos = fixed_inputs()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    history = []
    for _ in range(20):
        out = model(pixel_values, bool_masked_pos=bool_masked_pos)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        history.append((out.mto_sparsity_loss.item(), out.mto_entropy_loss.item(), out.reconstruction_loss.item()))
    (spa_0, e_0, l1_0), (spa, e, l1) = history[0], history[-1]
    print(f"L_spa {spa_0:.4f} -> {spa:.4f}, L_e {e_0:.4f} -> {e:.4f}, L1 {l1_0:.4f} -> {l1:.4f}")
    assert spa < 0.5 * spa_0 and e < 0.9 * e_0 and l1 < l1_0


def test_pretrain_cli_end_to_end(tmp_path, one_thread):
    argv = ["--model", "mto-tiny", "--dataset", "digits", "--max-steps", "3", "--batch-size", "16", "--log-steps", "1",
            "--config-overrides", "hidden_size=32", "num_hidden_layers=2", "intermediate_size=64"]  # fmt: skip
    records = run_pretrain(argv, tmp_path / "run")
    assert len(records) == 3 and all(math.isfinite(record["loss"]) for record in records)
    model = AutoModelForPreTraining.from_pretrained(tmp_path / "run")
    assert isinstance(model, MTOForPreTraining) and model.config.use_mto and model.config.model_type == "mto"
