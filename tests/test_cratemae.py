"""CRATE-MAE: the white-box blocks against hand computations (MSSA, the ISTA step, the encoder and decoder layers),
mask tokens entering the encoder, the parameter count against an MAE of the same sizes, the masked loss and ISTA's
sparsity on digits, config checks and ``hf-mae pretrain`` end to end. The contract suite (tests/test_contract.py -k
cratemae) covers saving, loading, Auto classes, remote code and bad inputs."""

import math

import pytest
import torch
from conftest import digits_pixels, run_pretrain
from transformers import AutoModelForPreTraining

import hf_mae
from hf_mae.modeling.cratemae import (
    CrateDecoderBlock,
    CrateEncoderBlock,
    CrateISTA,
    CrateMAEConfig,
    CrateMAEForPreTraining,
    CrateMSSA,
)
from hf_mae.modeling.mae import MAEConfig, MAEForPreTraining
from hf_mae.modeling.masking import mask_from_noise
from hf_mae.registry import create_config
from hf_mae.training.optim import build_adamw, warmup_cosine_schedule

SMALL = dict(image_size=8, patch_size=4, hidden_size=4, num_hidden_layers=1, num_attention_heads=2,
             decoder_num_hidden_layers=1)  # fmt: skip


def hand_mssa(y, subspaces, proj_weight, proj_bias, heads):
    """softmax((U_k y)(U_k y)^T / sqrt(d_k)) U_k y per head, concatenated, then the output Linear, with Python loops
    over tokens and channels. y: (tokens, hidden) as nested lists or a tensor; returns a (tokens, hidden) tensor."""
    y = torch.as_tensor(y, dtype=torch.float64).tolist()
    u = torch.as_tensor(subspaces, dtype=torch.float64).tolist()
    tokens, width = len(y), len(u)
    head_dim = width // heads
    w = [[sum(u[c][j] * y[t][j] for j in range(len(y[t]))) for c in range(width)] for t in range(tokens)]
    attended = [[0.0] * width for _ in range(tokens)]
    for h in range(heads):
        cols = range(h * head_dim, (h + 1) * head_dim)
        for t in range(tokens):
            scores = [sum(w[t][c] * w[s][c] for c in cols) / math.sqrt(head_dim) for s in range(tokens)]
            top = max(scores)
            exps = [math.exp(v - top) for v in scores]
            weights = [e / sum(exps) for e in exps]
            for c in cols:
                attended[t][c] = sum(weights[s] * w[s][c] for s in range(tokens))
    p = torch.as_tensor(proj_weight, dtype=torch.float64).tolist()
    b = torch.as_tensor(proj_bias, dtype=torch.float64).tolist()
    return torch.tensor([[sum(p[o][c] * attended[t][c] for c in range(width)) + b[o] for o in range(width)]
                         for t in range(tokens)], dtype=torch.float64)  # fmt: skip


def set_mssa(mssa: CrateMSSA, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in mssa.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator))


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_mssa_is_softmax_of_ux_uxt_times_ux_by_hand(attn_implementation):
    config = CrateMAEConfig(**SMALL)
    config._attn_implementation = attn_implementation
    mssa = CrateMSSA(config, hidden_size=4, num_heads=2).eval()
    set_mssa(mssa, seed=3)
    assert mssa.subspaces.bias is None  # U is bias-free: one projection is query, key and value
    y = torch.randn(3, 4, generator=torch.Generator().manual_seed(4))
    output, _ = mssa(y[None], output_attentions=False)
    expected = hand_mssa(y, mssa.subspaces.weight, mssa.proj.weight, mssa.proj.bias, heads=2)
    torch.testing.assert_close(output[0].double(), expected, rtol=0, atol=1e-5)
    # the attention weights are the softmax of the Gram matrix of U y (a symmetric score matrix)
    _, weights = mssa(y[None], output_attentions=True)
    w = (y @ mssa.subspaces.weight.T).view(3, 2, 2).transpose(0, 1)  # (heads, tokens, head_dim)
    torch.testing.assert_close(weights[0], torch.softmax(w @ w.transpose(-1, -2) / math.sqrt(2), -1), rtol=0, atol=1e-6)
    # a separate key projection would break it: the hand value for another U differs
    other = hand_mssa(y, mssa.subspaces.weight * 1.5, mssa.proj.weight, mssa.proj.bias, heads=2)
    assert (other - expected).abs().max() > 0.1


def test_ista_step_by_hand():
    ista = CrateISTA(2, step_size=0.1, lambd=0.5)
    with torch.no_grad():
        ista.weight.copy_(torch.tensor([[1.0, 0.5], [0.0, 2.0]]))  # D
    y = torch.tensor([[1.0, -0.5], [2.0, 1.0]])
    # token 1: D y = (0.75, -1), y - D y = (0.25, 0.5), D^T (y - D y) = (0.25, 1.125),
    #   y + 0.1 * that - 0.1 * 0.5 = (0.975, -0.4375) -> ReLU -> (0.975, 0)
    # token 2: D y = (2.5, 2), y - D y = (-0.5, -1), D^T (.) = (-0.5, -2.25), y + 0.1 * that - 0.05 = (1.9, 0.725)
    expected = torch.tensor([[0.975, 0.0], [1.9, 0.725]])
    torch.testing.assert_close(ista(y), expected, rtol=0, atol=1e-6)
    # the official form: ReLU(y + eta (D^T y - D^T D y) - eta lambda)
    d = ista.weight
    official = torch.relu(y + 0.1 * (y @ d - (y @ d.T) @ d) - 0.05)
    torch.testing.assert_close(ista(y), official, rtol=0, atol=1e-6)


def test_encoder_block_is_mssa_residual_then_ista_without_residual():
    config = CrateMAEConfig(**SMALL)
    config._attn_implementation = "eager"
    block = CrateEncoderBlock(config).eval()
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5 + (parameter.ndim == 1) * 1.0)
    x = torch.randn(1, 5, 4, generator=generator)
    out, _ = block(x)
    attn = block.attention
    z = x[0].double() + hand_mssa(block.norm1(x)[0], attn.subspaces.weight, attn.proj.weight, attn.proj.bias, 2)
    y = torch.nn.functional.layer_norm(z, (4,), block.norm2.weight.double(), block.norm2.bias.double(), eps=1e-6)
    d = block.ista.weight.double()
    expected = torch.relu(y + 0.1 * (y - y @ d.T) @ d - 0.1 * 0.5)
    torch.testing.assert_close(out[0].double(), expected, rtol=0, atol=1e-5)
    assert (out == 0).any() and (out >= 0).all()  # ReLU output: no residual carries x past the ISTA step


def test_decoder_block_is_linear_step_minus_mssa():
    config = CrateMAEConfig(**SMALL)
    config._attn_implementation = "eager"
    block = CrateDecoderBlock(config).eval()
    generator = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for parameter in block.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5 + (parameter.ndim == 1) * 1.0)
    x = torch.randn(1, 5, 4, generator=generator)
    out, _ = block(x)
    a = block.projection.weight.double()
    g = torch.nn.functional.layer_norm(x[0].double(), (4,), block.norm1.weight.double(), block.norm1.bias.double(),
                                       eps=1e-6) @ a.T  # fmt: skip
    attn = block.attention
    normed = torch.nn.functional.layer_norm(g, (4,), block.norm2.weight.double(), block.norm2.bias.double(), eps=1e-6)
    expected = g - hand_mssa(normed, attn.subspaces.weight, attn.proj.weight, attn.proj.bias, heads=2)
    torch.testing.assert_close(out[0].double(), expected, rtol=0, atol=1e-5)
    assert block.projection.weight.shape == (4, 4) and not hasattr(block.projection, "bias")


def test_mask_tokens_enter_the_encoder_in_order():
    torch.manual_seed(0)
    model = hf_mae.create_model("cratemae-tiny").eval()
    encoder = model.crate_mae
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    noise = torch.rand(2, 64, generator=torch.Generator().manual_seed(2))
    seen = {}
    handle = encoder.layers[0].register_forward_pre_hook(lambda module, args: seen.update(x=args[0]))
    out = encoder(pixels, noise=noise, mask_ratio=0.75)
    handle.remove()
    mask = mask_from_noise(noise, 0.75).mask
    assert torch.equal(out.mask, mask) and out.mask.sum(1).tolist() == [48, 48] and out.ids_restore is None
    assert out.last_hidden_state.shape == (2, 65, 128)  # every token, in order, with the cls token
    # the encoder's input: patch embeddings, the mask token at the 48 hidden patches, cls first, positions on all
    embeddings = encoder.embeddings
    patches = embeddings.patch_embeddings(pixels)
    tokens = torch.where(mask[..., None].bool(), embeddings.mask_token, patches)
    expected = torch.cat([embeddings.cls_token.expand(2, -1, -1), tokens], 1) + embeddings.position_embeddings
    torch.testing.assert_close(seen["x"], expected, rtol=0, atol=1e-6)
    # a hidden patch's pixels never reach the model; a visible patch's do
    hidden_patch = int(mask[0].nonzero()[0])
    visible_patch = int((1 - mask[0]).nonzero()[0])

    def poke(patch_index):
        poked = pixels.clone()
        row, col = divmod(patch_index, 8)
        poked[:, :, 4 * row : 4 * row + 4, 4 * col : 4 * col + 4] += 3.0
        return encoder(poked, noise=noise, mask_ratio=0.75).last_hidden_state

    assert torch.equal(poke(hidden_patch), out.last_hidden_state)
    assert (poke(visible_patch) - out.last_hidden_state).abs().max() > 1e-2


def count(model) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def test_parameters_are_about_a_quarter_of_an_mae_of_the_same_sizes():
    # per layer: encoder U, output projection (+ bias), D and two LayerNorms; decoder A, U, output, two LayerNorms
    config = create_config("cratemae-crate-base-patch16")
    with torch.device("meta"):
        crate = CrateMAEForPreTraining(config)
        d = config.hidden_size
        assert count(crate.crate_mae.layers[0]) == count(crate.decoder.decoder_layers[0]) == 3 * d * d + 5 * d
        ratios = {}
        for size in ("tiny", "small", "base", "large"):
            config = create_config(f"cratemae-crate-{size}-patch16")
            crate = CrateMAEForPreTraining(config)
            # MAE with the same configuration: the same encoder and decoder widths, depths and heads, ViT MLPs (4x)
            width, depth, heads = config.hidden_size, config.num_hidden_layers, config.num_attention_heads
            mae = MAEForPreTraining(MAEConfig(
                patch_size=16, hidden_size=width, num_hidden_layers=depth, num_attention_heads=heads,
                intermediate_size=4 * width, decoder_hidden_size=width,
                decoder_num_hidden_layers=config.decoder_num_hidden_layers, decoder_num_attention_heads=heads,
                decoder_intermediate_size=4 * width,
            ))  # fmt: skip
            ratios[size] = count(crate) / count(mae)
            if size == "base":
                base_count = count(crate)
    # measured: tiny 0.260 (11.26M vs 43.33M), small 0.256, base 0.254 (43.75M vs 171.89M), large 0.252: 3 d^2 per
    # layer against a ViT block's 12 d^2, plus the shared patch embedding and head (the paper: "~30%")
    assert all(0.24 <= ratio <= 0.27 for ratio in ratios.values()), ratios
    assert base_count == 43_745_280  # the official mae_crate_base less its unused 768 x 768 decoder_embed


def test_masked_loss_falls_and_ista_stays_sparse_on_digits(one_thread):
    steps, batch = 30, 32
    torch.manual_seed(0)
    pixels, _ = digits_pixels("train")
    held_out, _ = digits_pixels("test")
    held_out = held_out[:64]
    noise = torch.rand(len(held_out), 64, generator=torch.Generator().manual_seed(1))
    model = hf_mae.create_model("cratemae-tiny", norm_pix_loss=True).train()
    optimizer = build_adamw(model, lr=1.5e-3, weight_decay=0.05)
    schedule = warmup_cosine_schedule(optimizer, warmup_steps=2, total_steps=steps)

    def evaluate():
        model.eval()
        with torch.no_grad():
            loss = model(held_out, noise=noise).loss.item()
            states = model.crate_mae(held_out, noise=noise, output_hidden_states=True).hidden_states[1:]
        model.train()
        return loss, [(state == 0).float().mean().item() for state in states]  # each encoder layer's ISTA output

    first, zeros_at_init = evaluate()
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        loss = model(pixels[torch.randint(len(pixels), (batch,), generator=generator)]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    last, zeros_after = evaluate()
    print(f"held-out masked norm-pix MSE {first:.3f} -> {last:.3f}; exact zeros per layer {zeros_at_init} -> {zeros_after}")
    # measured: 2.58 -> 0.733 (the random init predicts large values). 0.732 is the loss of predicting the mean
    # normalised patch everywhere: the tokens first collapse to one vector; with batch 64 the run stays on that
    # plateau for ~200 steps and leaves it later (0.608 at step 300), too slow for a test
    assert last < 0.3 * first and last < 0.8, (first, last)
    # ISTA's ReLU with threshold eta * lambda = 0.05: measured 50-53% exact zeros at init, 50-65% after
    assert all(0.45 <= zeros <= 0.6 for zeros in zeros_at_init), zeros_at_init
    assert all(zeros >= 0.45 for zeros in zeros_after), zeros_after


def test_config_checks():
    with pytest.raises(ValueError, match="hidden_size 6 must be divisible by 4"):
        CrateMAEConfig(hidden_size=6, num_attention_heads=2)
    with pytest.raises(ValueError, match="ista_step_size must be a number >= 0"):
        CrateMAEConfig(ista_step_size=-0.1)
    with pytest.raises(ValueError, match="ista_step_size must be > 0"):
        CrateMAEConfig(ista_step_size=0)
    with pytest.raises(ValueError, match="ista_lambda must be a number >= 0, got 'a'"):
        CrateMAEConfig(ista_lambda="a")
    with pytest.raises(ValueError, match="decoder_num_hidden_layers"):
        CrateMAEConfig(decoder_num_hidden_layers=0)
    with pytest.raises(ValueError, match="classifier_pooling"):
        CrateMAEConfig(classifier_pooling="max")
    with pytest.raises(ValueError, match="mask_ratio"):
        CrateMAEConfig(mask_ratio=1.0)
    classifier = hf_mae.create_model("cratemae-tiny", task="image-classification", num_labels=3)
    assert classifier.crate_mae.embeddings.mask_token is None  # the classifier never masks
    with pytest.raises(ValueError, match="without a mask token"):
        classifier.crate_mae(torch.randn(1, 3, 32, 32), mask_ratio=0.5)


def test_pretrain_cli_end_to_end(tmp_path, one_thread):
    records = run_pretrain(["--model", "cratemae-tiny", "--dataset", "digits", "--max-steps", "3", "--batch-size", "8",
                            "--log-steps", "1"], tmp_path)  # fmt: skip
    losses = [record["loss"] for record in records if "loss" in record]
    assert len(losses) >= 3 and all(math.isfinite(loss) and loss > 0 for loss in losses)
    model = AutoModelForPreTraining.from_pretrained(tmp_path)
    assert isinstance(model, CrateMAEForPreTraining) and model.config.model_type == "cratemae"
