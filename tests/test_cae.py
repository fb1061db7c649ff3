"""CAE mechanisms with numbers: BEiT's block-wise mask (exact count, blockiness against a random mask, the top-up),
the random VQ tokenizer against its definition, the loss against a hand computation from the model's own weights on
a fixed mask (cross-attention regressor written out, alignment latents, cross-entropy on the codes), the alignment
term that does not collapse on digits, the tokenizer target held as a frozen teacher, and an `hf-mae pretrain` run.
Tiny configs, CPU, fp32."""

import math
import random

import pytest
import torch
from conftest import digits_pixels, run_pretrain
from transformers import AutoModelForPreTraining

import hf_mae
from hf_mae.modeling.cae import CAEConfig, CAEForImageClassification, CAEForPreTraining, CAEModel
from hf_mae.modeling.masking import BlockMaskGenerator, RandomMaskGenerator, block_mask
from hf_mae.modeling.targets import VQTokenizer, patchify, tokenizer_target
from hf_mae.training.optim import build_adamw

TINY = "cae-tiny"


def masked_neighbours(mask: torch.Tensor, grid) -> float:
    """Mean number of masked 4-neighbours of a masked patch; mask (batch, rows * cols) of 0 / 1."""
    grid_mask = mask.reshape(-1, *grid).float()
    padded = torch.nn.functional.pad(grid_mask, (1, 1, 1, 1))
    neighbours = padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:]
    return float((neighbours * grid_mask).sum() / grid_mask.sum())


# ------------------------------------------------------------------------------------------------ block masking


@pytest.mark.parametrize("grid, ratio, masked", [((14, 14), 0.5, 98), ((8, 8), 0.5, 32), ((6, 10), 0.4, 24),
                                                 ((14, 14), 0.75, 147)])  # fmt: skip
def test_block_masks_hide_exactly_the_count(grid, ratio, masked):
    generator = BlockMaskGenerator()
    out = generator(64, grid[0] * grid[1], ratio, grid, generator=torch.Generator().manual_seed(0))
    assert out.mask.sum(1).tolist() == [masked] * 64  # L - int(L * (1 - r)), MAE's count: 196 -> 98 as CAE's script
    # visible tokens first, each in order; ids_restore undoes it
    visible = out.ids_keep
    assert torch.equal(visible, visible.sort(1).values) and (out.mask.gather(1, visible) == 0).all()
    # seeded: the same generator seed gives the same masks, another one others
    again = generator(64, grid[0] * grid[1], ratio, grid, generator=torch.Generator().manual_seed(0))
    other = generator(64, grid[0] * grid[1], ratio, grid, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out.mask, again.mask) and not torch.equal(out.mask, other.mask)


def test_block_masks_are_blocky():
    """A masked patch of a 14x14 block mask has ~3.4 masked 4-neighbours (measured 3.36; edges count as unmasked),
    one of a random 50% mask ~1.86 (half of 4, less at the border)."""
    generator = torch.Generator().manual_seed(0)
    block = BlockMaskGenerator()(256, 196, 0.5, (14, 14), generator=generator).mask
    uniform = RandomMaskGenerator()(256, 196, 0.5, (14, 14), generator=generator).mask
    block_score, random_score = masked_neighbours(block, (14, 14)), masked_neighbours(uniform, (14, 14))
    print(f"masked 4-neighbours per masked patch: block {block_score:.3f}, random {random_score:.3f}")
    assert random_score == pytest.approx(2 * 13 / 14, abs=0.1)  # 2 * (inner edges 4 * 13 * 14) / 196 / 2
    assert block_score > random_score + 1.0
    # the tiny grid (8x8, 32 of 64, at least 16 patches per block): still blocks, at most a few of them
    tiny = BlockMaskGenerator()(256, 64, 0.5, (8, 8), generator=generator).mask
    random_tiny = RandomMaskGenerator()(256, 64, 0.5, (8, 8), generator=generator).mask
    assert masked_neighbours(tiny, (8, 8)) > masked_neighbours(random_tiny, (8, 8)) + 1.0


def components(mask: torch.Tensor) -> list[int]:
    """Sizes of the 4-connected components of a (rows, cols) bool mask, largest first."""
    cells = {(i, j) for i, j in mask.nonzero().tolist()}
    sizes = []
    while cells:
        frontier, size = [cells.pop()], 0
        while frontier:
            i, j = frontier.pop()
            size += 1
            for cell in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1)):
                if cell in cells:
                    cells.remove(cell)
                    frontier.append(cell)
        sizes.append(size)
    return sorted(sizes, reverse=True)


def test_block_mask_tops_up_with_neighbours_when_no_rectangle_fits():
    # square blocks of at least 8 patches (3x3 or 4x4) on a 5x5 grid, 8 to hide: every block adds too many, so every
    # patch comes from the top-up, which grows one 4-connected region from a random seed patch
    for seed in range(20):
        mask = block_mask((5, 5), 8, random.Random(seed), min_patches=8, min_aspect=1.0).reshape(5, 5)
        assert int(mask.sum()) == 8 and components(mask) == [8]
    # the rectangles respect min_patches: hiding 16 of 196, the first block holds 14 to 16 patches (4x4, 3x5, 2x7:
    # its area is 16 and it may not overshoot), the rest is filled next to it or in small overlapping blocks
    for seed in range(20):
        mask = block_mask((14, 14), 16, random.Random(seed)).reshape(14, 14)
        assert int(mask.sum()) == 16 and components(mask)[0] >= 14


def test_block_generator_rejects_bad_settings():
    for kwargs, match in [(dict(min_patches=0), "min_patches"), (dict(max_patches=0), "max_patches"),
                          (dict(min_aspect=0.0), "min_aspect"), (dict(min_aspect=0.5, max_aspect=0.4), "max_aspect")]:
        with pytest.raises(ValueError, match=match):
            BlockMaskGenerator(**kwargs)
    with pytest.raises(ValueError, match="grid_size"):
        BlockMaskGenerator()(2, 50, 0.5)
    for field, value in [("mask_min_patches_per_block", 0), ("mask_min_aspect", -1.0), ("target", "dalle"),
                         ("codebook_size", 1), ("align_loss_weight", -1.0), ("regressor_num_hidden_layers", 0)]:
        with pytest.raises(ValueError, match=field):
            hf_mae.create_config(TINY, **{field: value})


# ----------------------------------------------------------------------------------------------------- tokenizer


def test_vq_tokenizer_is_the_nearest_codebook_vector():
    tokenizer = VQTokenizer(4, 3, codebook_size=16, embedding_dim=8, seed=3)
    images = torch.randn(2, 3, 8, 8)
    images[1, :, :4, :4] = 0.7  # a flat patch: zero features after per-patch normalisation -> code 0
    patches = patchify(images, 4)
    normed = (patches - patches.mean(-1, keepdim=True)) / (patches.var(-1, keepdim=True) + 1e-6).sqrt()
    features = normed @ tokenizer.projection
    assert patches[1, 0].std() < 1e-6 and normed[1, 0].abs().max() > 0  # rounding noise, amplified: not a code
    distances = torch.cdist(torch.nn.functional.normalize(features, dim=-1), tokenizer.codebook)  # unit vectors
    codes = tokenizer(images)
    assert codes.shape == (2, 4) and codes.dtype == torch.long
    assert torch.equal(codes[0], distances[0].argmin(-1))
    assert torch.equal(codes[1, 1:], distances[1, 1:].argmin(-1)) and codes[1, 0] == 0
    # built from the seed: the same arguments, the same codes; and the codebook is used (not one code)
    assert torch.equal(VQTokenizer(4, 3, 16, 8, seed=3)(images), codes)
    many = VQTokenizer(4, 3, 16, 8, seed=3)(torch.randn(64, 3, 8, 8))
    assert many.unique().numel() >= 12
    assert torch.equal(tokenizer_target(tokenizer, images, 4, 16), codes)


def test_tokenizer_target_rejects_bad_codes():
    images = torch.randn(2, 3, 8, 8)

    class Fixed(torch.nn.Module):
        def __init__(self, codes):
            super().__init__()
            self.codes = codes

        def forward(self, pixel_values):
            return self.codes

    with pytest.raises(TypeError, match="integer codes"):
        tokenizer_target(Fixed(torch.rand(2, 4)), images, 4, 16)
    with pytest.raises(ValueError, match="one code per patch"):
        tokenizer_target(Fixed(torch.zeros(2, 5, dtype=torch.long)), images, 4, 16)
    with pytest.raises(ValueError, match="codebook_size=16"):
        tokenizer_target(Fixed(torch.full((2, 2, 2), 16)), images, 4, 16)
    assert tokenizer_target(Fixed(torch.ones(2, 2, 2, dtype=torch.int32)), images, 4, 16).dtype == torch.long


# ------------------------------------------------------------------------------------------- the loss by hand


def layer_norm(x, norm):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], norm.weight, norm.bias, norm.eps)


def cross_attention_by_hand(attention, queries, keys_in, values_in):
    """Multi-head attention written out from the fused qkv weight (rows: q, k, v), query / value biases, no key
    bias (the official CrossAttention)."""
    width = queries.shape[-1]
    heads, weight = attention.num_heads, attention.qkv.weight
    q = queries @ weight[:width].T + attention.q_bias
    k = keys_in @ weight[width : 2 * width].T
    v = values_in @ weight[2 * width :].T + attention.v_bias
    split = lambda t: t.unflatten(-1, (heads, width // heads)).transpose(1, 2)  # noqa: E731
    q, k, v = split(q), split(k), split(v)
    weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(width // heads), dim=-1)
    return attention.proj((weights @ v).transpose(1, 2).flatten(2))


def encode_by_hand(model, images, ids):
    """The encoder on the cls token and the patches ``ids`` (batch, k): embeddings, positions, blocks, final norm."""
    encoder = model.cae
    patches = encoder.embeddings.patch_embeddings(images) + encoder.embeddings.position_embeddings[:, 1:]
    patches = torch.stack([patches[b, ids[b]] for b in range(len(ids))])
    hidden = torch.cat([encoder.embeddings.cls_token.expand(len(ids), -1, -1), patches], dim=1)
    for block in encoder.layers:
        hidden, _ = block(hidden)
    return encoder.layernorm(hidden)


def test_loss_matches_a_hand_computation():
    # a bridge (128-d encoder -> 64-d regressor), LayerScale 0.1 everywhere, a 16-code VQ tokenizer
    config = hf_mae.create_config(TINY, decoder_hidden_size=64, decoder_intermediate_size=256, target="tokenizer",
                                  codebook_size=16, tokenizer_embedding_dim=8)  # fmt: skip
    torch.manual_seed(0)
    model = CAEForPreTraining(config).eval()
    with torch.no_grad():  # non-zero biases, so that a wrongly placed key bias would show
        for block in model.regressor.layers:
            block.cross_attention.q_bias.normal_(std=0.5)
            block.cross_attention.v_bias.normal_(std=0.5)
    images = torch.randn(2, 3, 32, 32)
    mask = BlockMaskGenerator()(2, 64, 0.5, (8, 8), generator=torch.Generator().manual_seed(0)).mask.bool()
    out = model(images, bool_masked_pos=mask)

    visible = torch.stack([row.logical_not().nonzero().flatten() for row in mask])  # in order
    hidden = torch.stack([row.nonzero().flatten() for row in mask])
    assert torch.equal(out.ids_masked, hidden) and torch.equal(out.mask, mask.float())

    bridge = lambda x: layer_norm(model.encoder_to_regressor(x), model.encoder_to_regressor_norm)  # noqa: E731
    latents = bridge(encode_by_hand(model, images, visible)[:, 1:])
    target = bridge(encode_by_hand(model, images, hidden)[:, 1:])  # the encoder itself on the masked patches

    regressor = model.regressor
    positions = regressor.position_embeddings[0, 1:]  # CAE's sin-cos table: the row code first
    assert torch.allclose(positions[8 * 2 + 5, :16], torch.sin(2 / 10000 ** (torch.arange(16) / 16.0)), atol=1e-6)
    pos_q, pos_v = positions[hidden], positions[visible]
    x = regressor.mask_token.expand(2, hidden.shape[1], -1)
    for block in regressor.layers:
        context = torch.cat([latents, x], dim=1)
        attended = cross_attention_by_hand(
            block.cross_attention,
            layer_norm(x + pos_q, block.norm_query),
            layer_norm(context + torch.cat([pos_v, pos_q], dim=1), block.norm_key),  # keys: with positions
            layer_norm(context, block.norm_value),  # values: without
        )
        x = layer_norm(x + block.layer_scale1.gamma * attended, block.norm2)
        x = x + block.layer_scale2.gamma * block.mlp(x)
    prediction = layer_norm(x, regressor.norm)

    decoded = prediction + pos_q  # the decoder sees the predicted latents of the masked patches only
    for block in model.decoder.layers:
        decoded, _ = block(decoded)
    logits = model.decoder.head(layer_norm(decoded, model.decoder.norm))
    codes = model.get_tokenizer("cpu")(images).gather(1, hidden)
    cross_entropy = -torch.log_softmax(logits, -1).gather(-1, codes[..., None]).mean()
    alignment = (prediction - target).pow(2).mean()

    torch.testing.assert_close(out.latent_prediction, prediction, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.latent_target, target, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.logits, logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.reconstruction_loss, cross_entropy, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.alignment_loss, alignment, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(out.loss, cross_entropy + 2.0 * alignment, atol=1e-5, rtol=1e-5)
    assert out.loss.item() > 1.0  # ~ log 16 for an untrained decoder: not a vacuous comparison

    # the alignment latents carry no gradient: the alignment term moves the regressor (and, through its input, the
    # encoder's visible path), never the encoder through the target
    assert not out.latent_target.requires_grad
    model.zero_grad()
    out.alignment_loss.backward()
    assert model.regressor.mask_token.grad.abs().sum() > 0 and model.decoder.head.weight.grad is None
    # the pixel target: MSE on per-patch normalised pixels of the masked patches
    pixel_model = CAEForPreTraining(hf_mae.create_config(TINY)).eval()
    pixel_out = pixel_model(images, bool_masked_pos=mask)
    pixels = patchify(images, 4)
    pixels = (pixels - pixels.mean(-1, keepdim=True)) / (pixels.var(-1, keepdim=True) + 1e-6).sqrt()
    expected = (pixel_out.logits - torch.stack([pixels[b, hidden[b]] for b in range(2)])).pow(2).mean()
    torch.testing.assert_close(pixel_out.reconstruction_loss, expected, atol=1e-5, rtol=1e-5)


def test_noise_and_bool_masked_pos_agree():
    model = hf_mae.create_model(TINY).eval()
    images, noise = torch.randn(3, 3, 32, 32), torch.rand(3, 64)
    by_noise = model(images, noise=noise)
    by_mask = model(images, bool_masked_pos=by_noise.mask.bool())
    # the same patches, another order: the same losses
    torch.testing.assert_close(by_noise.loss, by_mask.loss, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="bool_masked_pos or noise"):
        model(images, noise=noise, bool_masked_pos=by_noise.mask.bool())
    with pytest.raises(ValueError, match="needs masked patches"):
        model(images, mask_ratio=0.0)
    with pytest.raises(ValueError, match="bool_masked_pos must have shape"):
        model(images, bool_masked_pos=by_noise.mask.bool()[:, :-1])


# --------------------------------------------------------------------------------------------- training on digits


def train_on_digits(steps: int, batch_size: int = 16, seed: int = 0, **overrides):
    """cae-tiny on digits, AdamW lr 1.5e-3; per step: (reconstruction loss, alignment loss, regressor-output std
    across tokens (std over the batch's masked tokens per channel, mean over channels))."""
    torch.manual_seed(seed)
    pixels, _ = digits_pixels("train")
    model = hf_mae.create_model(TINY, **overrides).train()
    optimizer = build_adamw(model, lr=1.5e-3, weight_decay=0.05)
    generator = torch.Generator().manual_seed(seed)
    history = []
    for _ in range(steps):
        out = model(pixels[torch.randint(0, len(pixels), (batch_size,), generator=generator)])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        spread = out.latent_prediction.detach().flatten(0, 1).std(0).mean().item()
        history.append((out.reconstruction_loss.item(), out.alignment_loss.item(), spread))
    return model, history


def test_losses_fall_and_the_alignment_does_not_collapse(one_thread):
    """100 steps of 8 digits. Measured: reconstruction 1.18 -> 0.63, alignment 0.76 -> 0.22; the regressor-output std
    across tokens starts at 0.148 (positions only: every query is the same mask token), contracts to 0.017 in steps
    10-50 (predicting the mean latent while the regressor cannot yet tell the tokens apart) and spreads out again to
    0.28. A collapsed regressor (one vector for every token, which the alignment MSE alone would allow) has std 0:
    the floor 0.15 at the end, and 3x the run's minimum, rule that out."""
    _, history = train_on_digits(100, batch_size=8)
    mean = lambda values: sum(values) / len(values)  # noqa: E731
    first, last = history[:10], history[-10:]
    rec_0, rec_1 = mean([h[0] for h in first]), mean([h[0] for h in last])
    align_0, align_1 = mean([h[1] for h in first]), mean([h[1] for h in last])
    std_0, std_min, std_1 = history[0][2], min(h[2] for h in history), mean([h[2] for h in history[-5:]])
    print(f"digits, 100 steps: reconstruction {rec_0:.3f} -> {rec_1:.3f}, alignment {align_0:.3f} -> {align_1:.3f}, "
          f"regressor std {std_0:.3f} -> min {std_min:.3f} -> {std_1:.3f}")
    assert rec_1 < 0.7 * rec_0
    assert align_1 < 0.5 * align_0
    assert std_1 > 0.15 and std_1 > 3 * std_min


# ---------------------------------------------------------------------------------------- the tokenizer target


class PatchBrightness(torch.nn.Module):
    """A user's tokenizer: 4 codes by the mean of each 4x4 patch (quartiles of the normalised range)."""

    def get_codebook_indices(self, pixel_values):
        means = patchify(pixel_values, 4).mean(-1)
        return torch.bucketize(means, torch.tensor([-0.5, 0.0, 0.5]))


def test_tokenizer_target_learns_and_is_never_saved(tmp_path, one_thread):
    config = hf_mae.create_config(TINY, target="tokenizer", codebook_size=4)
    model = CAEForPreTraining(config, tokenizer=PatchBrightness())
    assert not any("tokenizer" in name for name in model.state_dict())
    pixels, _ = digits_pixels("train")
    torch.manual_seed(0)
    optimizer = build_adamw(model.train(), lr=1.5e-3, weight_decay=0.05)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(25):
        out = model(pixels[torch.randint(0, len(pixels), (16,), generator=generator)])
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        losses.append(out.reconstruction_loss.item())
    print(f"cross-entropy on 4 brightness codes: {sum(losses[:5]) / 5:.3f} -> {sum(losses[-5:]) / 5:.3f}")
    assert out.logits.shape == (16, 32, 4)
    # measured 1.84 -> 1.08: below log 4 = 1.386, a uniform guess over the 4 codes
    assert sum(losses[-5:]) / 5 < min(0.75 * sum(losses[:5]) / 5, math.log(4))
    # saved without the tokenizer; loaded back with it the outputs are the same
    model.eval().save_pretrained(tmp_path)
    images, noise = pixels[:4], torch.rand(4, 64)
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path, tokenizer=PatchBrightness()).eval()
    assert torch.equal(loaded(images, noise=noise).loss, model(images, noise=noise).loss)
    # without one, the config's random VQ tokenizer is built (a different target, the same model weights)
    default = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert isinstance(default.get_tokenizer("cpu"), VQTokenizer)
    with pytest.raises(ValueError, match="target is 'pixels'"):
        CAEForPreTraining(hf_mae.create_config(TINY), tokenizer=PatchBrightness())


def test_encoder_and_classifier_never_mask():
    config = hf_mae.create_config(TINY, num_labels=3)
    encoder, classifier = CAEModel(config).eval(), CAEForImageClassification(config).eval()
    images = torch.randn(2, 3, 32, 32)
    assert encoder(images).last_hidden_state.shape == (2, 65, 128) and encoder(images).mask.sum() == 0
    assert torch.equal(classifier(images).logits, classifier(images).logits)
    assert isinstance(hf_mae.create_config("cae-vit-base-patch16"), CAEConfig)


def test_pretrain_cli_runs(tmp_path, one_thread):
    records = run_pretrain(["--model", TINY, "--dataset", "digits", "--max-steps", "3", "--batch-size", "16",
                            "--log-steps", "1"], tmp_path / "run")  # fmt: skip
    assert len(records) == 3 and all(math.isfinite(r["loss"]) for r in records)
    model = AutoModelForPreTraining.from_pretrained(tmp_path / "run")
    assert isinstance(model, CAEForPreTraining) and model.config.mask_generator == "block"


def test_pretrain_python_api_takes_a_tokenizer(tmp_path, one_thread):
    from hf_mae.training.pretrain import pretrain

    folder, summary = pretrain(model=TINY, dataset="digits", output_dir=str(tmp_path / "run"), max_steps=2,
                               batch_size=8, config_overrides={"target": "tokenizer", "codebook_size": 4},
                               teachers={"tokenizer": PatchBrightness()})  # fmt: skip
    assert summary["steps"] == 2 and math.isfinite(summary["final_loss"])
    model = AutoModelForPreTraining.from_pretrained(folder, tokenizer=PatchBrightness())
    assert model.config.target == "tokenizer" and not any("tokenizer" in k for k in model.state_dict())
