"""QLAE (Hsu et al., NeurIPS 2023): the scalar latent quantiser against hand computations, the loss by its
definition, the official optimiser settings, the sprites generator, the InfoMEC metrics against hand-built cases,
a short training on the sprites (every latent uses several codes), MAE's ``latent_quantization`` bottleneck and
``hf-mae pretrain --model qlae-tiny --dataset sprites``."""

import math

import numpy as np
import pytest
import torch
from conftest import run_pretrain
from transformers import AutoModel

import hf_mae
from hf_mae.modeling.qlae import QLAEConfig, QLAEForPreTraining, QLAEModel
from hf_mae.modeling.quantization import LatentQuantizer
from hf_mae.registry import METHODS, create_config
from hf_mae.training import disentanglement as dis
from hf_mae.training.optim import build_adamw
from hf_mae.training.sprites import FACTOR_SIZES, factor_grid, make_sprites, render, sprite_factors, sprites_dataset

# -- the quantiser ---------------------------------------------------------------------------------------------------


def test_codebook_starts_as_the_official_linspace_and_quantises_to_the_nearest_value():
    quantizer = LatentQuantizer(num_latents=2, num_values=5, init_bound=0.5)
    expected_row = torch.tensor([-0.5, -0.25, 0.0, 0.25, 0.5])
    torch.testing.assert_close(quantizer.codebook.detach(), expected_row.expand(2, -1))
    # make the two dimensions' codebooks differ, to see that each dimension reads its own
    with torch.no_grad():
        quantizer.codebook[1] = torch.tensor([-2.0, -1.0, 0.0, 1.0, 2.0])
    z = torch.tensor([[0.1, 0.6], [-0.4, -1.7], [0.9, 5.0]], requires_grad=True)
    out = quantizer(z)
    # by hand: dim 0 nearest of (-.5,-.25,0,.25,.5); dim 1 nearest of (-2,-1,0,1,2)
    assert out.codes.tolist() == [[2, 3], [0, 0], [4, 4]]
    torch.testing.assert_close(out.quantized.detach(), torch.tensor([[0.0, 1.0], [-0.5, -2.0], [0.5, 2.0]]))
    gaps = torch.tensor([[0.1, -0.4], [0.1, 0.3], [0.4, 3.0]])
    expected = gaps.pow(2).mean()
    torch.testing.assert_close(out.quantization_loss, expected)
    torch.testing.assert_close(out.commitment_loss, expected)  # same value, other gradient
    assert quantizer.codes_used(out.codes).tolist() == [3, 3]  # dim 0: codes 2, 0, 4; dim 1: 3, 0, 4


def test_straight_through_gradient_and_the_two_terms_train_what_they_should():
    quantizer = LatentQuantizer(num_latents=3, num_values=4)
    z = torch.tensor([[0.3, -0.2, 0.9], [0.05, 0.4, -0.6]], requires_grad=True)
    weights = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    out = quantizer(z)
    (out.quantized * weights).sum().backward()
    torch.testing.assert_close(z.grad, weights)  # the identity backward: z's gradient passes unchanged
    assert quantizer.codebook.grad is None  # the decoder's gradient never reaches the codebook
    z.grad = None
    out = quantizer(z)
    out.quantization_loss.backward()  # mean((sg(z) - z_q)^2): the codebook only
    assert z.grad is None
    chosen = torch.zeros(3, 4)
    chosen.scatter_(1, out.codes.T, 1.0)  # dims 0..2, chosen indices
    assert ((quantizer.codebook.grad != 0) == (chosen > 0)).all()  # exactly the chosen values move
    codebook = quantizer.codebook.detach()
    j, k = 0, int(out.codes[0, 0])
    rows = (out.codes[:, j] == k).nonzero().flatten()
    by_hand = sum(-2 * (z[r, j].item() - codebook[j, k].item()) for r in rows) / z.numel()
    assert math.isclose(quantizer.codebook.grad[j, k].item(), by_hand, rel_tol=1e-5)
    quantizer.zero_grad()
    out = quantizer(z)
    out.commitment_loss.backward()  # mean((z - sg(z_q))^2): the encoder only
    assert quantizer.codebook.grad is None or quantizer.codebook.grad.abs().sum() == 0
    torch.testing.assert_close(z.grad, 2 * (z - out.quantized).detach() / z.numel())


def test_quantizer_refuses_bad_arguments():
    for kwargs, name in ((dict(num_latents=0), "num_latents"), (dict(num_latents=2, num_values=1), "num_values"),
                         (dict(num_latents=2, init_bound=0.0), "init_bound")):  # fmt: skip
        with pytest.raises(ValueError, match=name):
            LatentQuantizer(**kwargs)
    quantizer = LatentQuantizer(3)
    with pytest.raises(ValueError, match="num_latents=3"):
        quantizer(torch.zeros(2, 4))
    with pytest.raises(TypeError, match="floating-point"):
        quantizer(torch.zeros(2, 3, dtype=torch.long))


# -- the model, the loss, the optimiser --------------------------------------------------------------------------------


def test_loss_is_bce_plus_the_weighted_vq_terms_and_shapes_follow_the_config():
    torch.manual_seed(0)
    model = hf_mae.create_model("qlae-tiny").eval()
    pixels = torch.rand(3, 3, 32, 32)
    out = model(pixels)
    assert out.logits.shape == (3, 3, 32, 32) and out.codes.shape == (3, 10) and out.latents.shape == (3, 10)
    probs = torch.sigmoid(out.logits)
    bce = -(pixels * probs.log() + (1 - pixels) * (1 - probs).log()).mean()
    torch.testing.assert_close(out.reconstruction_loss, bce, rtol=1e-4, atol=1e-6)
    gap = (out.continuous_latents - out.latents).pow(2).mean()
    torch.testing.assert_close(out.quantization_loss, gap)
    torch.testing.assert_close(out.loss, bce + 0.01 * gap + 0.01 * gap, rtol=1e-4, atol=1e-6)
    # the decoder reads codebook values only
    codebook = model.qlae.quantizer.codebook
    torch.testing.assert_close(out.latents, codebook.gather(1, out.codes.T).T, rtol=0, atol=0)
    # the base model's feature is the same code
    torch.testing.assert_close(model.qlae(pixels).last_hidden_state, out.latents)
    # the continuous AE of the same size: no quantiser, the loss is the BCE alone, the same encoder and decoder sizes
    ae = hf_mae.create_model("qlae-tiny", latent_quantization=False).eval()
    assert ae.qlae.quantizer is None and ae(pixels).codes is None
    torch.testing.assert_close(ae(pixels).loss, ae(pixels).reconstruction_loss)
    sizes = lambda m: sorted((n, p.shape) for n, p in m.named_parameters() if "codebook" not in n)  # noqa: E731
    assert sizes(ae) == sizes(model)
    mse = hf_mae.create_model("qlae-tiny", reconstruction_loss="mse", latent_quantization=False).eval()
    out = mse(pixels)
    torch.testing.assert_close(out.loss, (out.logits - pixels).pow(2).mean())


def test_architecture_follows_the_official_configs():
    config = create_config("qlae-shapes3d")
    model = QLAEForPreTraining(config)
    convs = [m for m in model.qlae.encoder.convs if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs] == [
        (w, k, s) for w in (32, 64, 128, 256) for k, s in ((3, 1), (3, 1), (4, 2))]
    assert all(c.bias is None for c in convs)  # the official blocks are bias-free
    ups = [b.conv for b in model.decoder.blocks]
    assert [u.out_channels for u in ups] == [256] * 3 + [128] * 3 + [64] * 3 + [32] * 3
    assert model.decoder.input_map.shape == (256, 4, 4) and torch.all(model.decoder.input_map == 0.1)
    assert [m.out_features for m in model.qlae.encoder.dense if isinstance(m, torch.nn.Linear)] == [256, 256]
    assert model.qlae.encoder.head.out_features == 12 and model.qlae.quantizer.num_values == 10
    hidden = model.decoder.blocks[0]
    assert hidden.norm.affine is False and hidden.modulation.out_features == 2 * 256
    with pytest.raises(ValueError, match="divisible by 2 \\*\\* len\\(conv_widths\\) = 16"):
        QLAEConfig(image_size=40)
    with pytest.raises(ValueError, match="conv_widths"):
        QLAEConfig(conv_widths=[])
    with pytest.raises(ValueError, match="mask_ratio"):
        model(torch.rand(1, 3, 64, 64), mask_ratio=0.5)


def test_the_recipe_decays_weights_by_01_but_not_biases_or_codebooks():
    method = METHODS["qlae"]
    assert (method.pretrain_lr, method.pretrain_betas, method.pretrain_weight_decay) == (1e-3, (0.9, 0.999), 0.1)
    assert method.pretrain_augmentation is None and METHODS["mae"].pretrain_weight_decay == 0.05
    model = hf_mae.create_model("qlae-tiny")
    optimizer = build_adamw(model, 1e-3, method.pretrain_weight_decay)
    decay = {n: g["weight_decay"] for g in optimizer.param_groups for n in g["param_names"]}
    assert decay["qlae.quantizer.codebook"] == 0.0 and decay["qlae.encoder.head.bias"] == 0.0
    assert decay["qlae.encoder.convs.0.weight"] == 0.1 and decay["decoder.blocks.0.conv.weight"] == 0.1
    assert decay["decoder.input_map"] == 0.1  # a weight of the decoder, decayed as the official code does
    assert hf_mae.create_processor("qlae-tiny").do_normalize is False  # pixels in [0, 1]: the BCE target


# -- the sprites -------------------------------------------------------------------------------------------------------


def test_sprites_are_the_full_factor_grid_deterministic_and_split_disjointly():
    grid = factor_grid()
    assert grid.shape == (int(np.prod(FACTOR_SIZES)), 5) == (2592, 5)
    assert len({tuple(row) for row in grid}) == 2592  # every combination once: uniform, independent factors
    images = render(grid, 32)
    assert images.dtype == np.uint8 and images.shape == (2592, 32, 32)
    assert np.array_equal(render(grid[:40], 32), images[:40])  # deterministic
    assert len(np.unique(images.reshape(2592, -1), axis=0)) == 2592  # no two factor combinations look alike
    assert np.array_equal(sprite_factors(seed=0), sprite_factors(seed=0))
    assert not np.array_equal(sprite_factors(seed=0), sprite_factors(seed=1))  # the seed shuffles
    train, test = sprite_factors(seed=3, split="train"), sprite_factors(seed=3, split="test")
    assert len(train) == 2074 and len(test) == 518
    assert not {tuple(r) for r in train} & {tuple(r) for r in test}
    # the factors do what they say: x moves the centre of mass right, scale grows the area, rotation keeps it
    base = np.array([[0, 0, 0, 0, 2], [0, 0, 0, 5, 2], [0, 3, 0, 0, 2], [0, 0, 3, 0, 2]])
    drawn = render(base, 32).astype(float)
    cols = np.arange(32)
    centre = [(d.sum(0) * cols).sum() / d.sum() for d in drawn]
    assert centre[1] - centre[0] > 10
    assert drawn[2].sum() > 2.5 * drawn[0].sum()
    assert abs(drawn[3].sum() - drawn[0].sum()) / drawn[0].sum() < 0.08
    dataset = sprites_dataset("test")
    assert dataset.column_names == ["image", "label", "shape", "scale", "rotation", "x", "y"]
    assert len(dataset) == 518 and dataset[0]["image"].size == (32, 32)
    with pytest.raises(ValueError, match="split"):
        sprite_factors(split="val")


# -- the metrics -------------------------------------------------------------------------------------------------------


def test_mutual_information_and_infomec_on_hand_built_latents():
    factors = factor_grid()[:, [0, 1, 3]]  # shape (3), scale (4), x (6): a product grid
    h = [math.log(3), math.log(4), math.log(6)]
    assert math.isclose(dis.entropy(factors[:, 1]), h[1])
    assert math.isclose(dis.mutual_information(factors[:, 0], factors[:, 0]), h[0])
    assert abs(dis.mutual_information(factors[:, 0], factors[:, 2])) < 1e-12  # independent by construction
    # perfectly disentangled codes: each latent is one factor
    perfect = dis.infomec(factors, factors, discrete=True)
    np.testing.assert_allclose(perfect["nmi"], np.eye(3), atol=1e-12)
    assert math.isclose(perfect["infom"], 1.0) and math.isclose(perfect["infoc"], 1.0)
    assert perfect["infoe"] > 0.99
    # one latent holding shape and scale together (12 codes), one holding x, one constant (inactive)
    entangled = np.stack([factors[:, 0] * 4 + factors[:, 1], factors[:, 2], np.zeros(len(factors))], 1)
    scores = dis.infomec(factors, entangled, discrete=True)
    assert scores["active"].tolist() == [True, True, False]
    # by hand: latent 0 has NMI 1 with shape and with scale -> max/sum = 1/2; latent 1 -> 1; K = 3
    expected_infom = ((0.5 + 1.0) / 2 - 1 / 3) / (1 - 1 / 3)
    assert math.isclose(scores["infom"], expected_infom, rel_tol=1e-9)
    # each factor is held by one active latent: compact
    assert math.isclose(scores["infoc"], 1.0, rel_tol=1e-9)
    # a factor copied into two latents: InfoC drops to (1/2 - 1/2) / (1 - 1/2) = 0 for it
    copied = np.stack([factors[:, 0], factors[:, 0]], 1)
    infom, infoc = dis.infom_infoc(dis.normalized_mutual_information(factors, copied), np.array([True, True]))
    assert math.isclose(infom, 1.0) and math.isclose(infoc, ((0.5 + 1 / 2 + 1 / 2) / 3 - 1 / 2) / (1 - 1 / 2))
    # noise latents: almost nothing is explicit
    noise = np.random.RandomState(0).randint(0, 10, size=(len(factors), 3))
    assert dis.infomec(factors, noise, discrete=True)["infoe"] < 0.05
    # continuous latents are binned: a linear function of a factor (plus tiny noise) is as good as the factor
    continuous = factors * 0.3 + np.random.RandomState(1).normal(0, 1e-3, factors.shape)
    binned = dis.infomec(factors, continuous, discrete=False, num_bins=12)
    assert binned["infom"] > 0.99 and binned["infoe"] > 0.99
    np.testing.assert_array_equal(dis.discretize(np.array([[0.0], [0.49], [0.51], [1.0]]), 2)[:, 0], [0, 0, 1, 1])


# -- training ----------------------------------------------------------------------------------------------------------

FAST = dict(conv_widths=[8, 16], blocks_per_stage=1, dense_widths=[32])


def train_on_sprites(quantized: bool, steps: int, seed: int = 0, batch_size: int = 32):
    torch.manual_seed(seed)
    model = hf_mae.create_model("qlae-tiny", latent_quantization=quantized, **FAST).train()
    images, factors = make_sprites(32, seed=0)
    pixels = torch.from_numpy(images).float().div(255)[:, None].expand(-1, 3, -1, -1).contiguous()
    optimizer = build_adamw(model, 2e-3, 0.1, betas=(0.9, 0.999))
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        batch = pixels[torch.randint(len(pixels), (batch_size,), generator=generator)]
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return model.eval(), pixels, factors, losses


def test_short_training_on_sprites_lowers_the_loss_and_every_latent_uses_several_codes(one_thread):
    model, pixels, factors, losses = train_on_sprites(quantized=True, steps=120)
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5]), (losses[:5], losses[-10:])
    latents, discrete = dis.model_latents(model, pixels)
    assert discrete and latents.shape == (2592, 10)
    codes_used = model.qlae.quantizer.codes_used(torch.from_numpy(latents).long())
    print("codes used per latent:", codes_used.tolist())
    assert (codes_used > 1).all(), codes_used.tolist()  # no dimension collapsed onto one value
    scores = dis.infomec(factors, latents, discrete=True)
    print({k: round(scores[k], 3) for k in ("infom", "infoe", "infoc")})
    assert 0.0 <= scores["infom"] <= 1.0 and 0.0 <= scores["infoc"] <= 1.0
    assert scores["infoe"] > 0.2  # the codes predict the factors well above chance (0)
    # the codebooks moved from their linspace: the quantisation term trains them
    start = torch.linspace(-0.5, 0.5, 10).expand(10, -1)
    assert (model.qlae.quantizer.codebook.detach() - start).abs().max() > 1e-3


# -- MAE's bottleneck --------------------------------------------------------------------------------------------------


def test_mae_with_latent_quantization_trains_and_decodes_codebook_values(one_thread):
    torch.manual_seed(0)
    model = hf_mae.create_model("mae-tiny", latent_quantization=True, num_latent_values=10, num_hidden_layers=2,
                                decoder_num_hidden_layers=1).train()  # fmt: skip
    assert model.latent_quantizer.codebook.shape == (128, 10)
    assert hf_mae.create_model("mae-tiny").latent_quantizer is None
    seen = {}
    model.decoder.register_forward_pre_hook(lambda module, args: seen.update(latent=args[0].detach()))
    images = render(sprite_factors(seed=0)[:256], 32)
    pixels = torch.from_numpy(images).float().div(255)[:, None].expand(-1, 3, -1, -1).contiguous()
    optimizer = build_adamw(model, 1e-3, 0.05)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(25):
        loss = model(pixels[torch.randint(256, (16,), generator=generator)]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3]), (losses[:3], losses[-5:])
    model.eval()
    noise = torch.rand(4, 64, generator=generator)
    out = model(pixels[:4], noise=noise)
    latent = seen["latent"]  # what the decoder read: (4, 1 + kept, 128), every entry a value of its feature's codebook
    codebook = model.latent_quantizer.codebook.detach()
    distance = (latent.unsqueeze(-1) - codebook).abs().amin(-1)
    assert distance.max() == 0  # exactly: the straight-through estimate is sg(z_q) + (z - sg(z)) = z_q
    # the loss is the masked MSE plus 0.01 * (quantisation + commitment) of the encoder's output
    encoded = model.mae(pixels[:4], noise=noise, mask_ratio=model.config.mask_ratio)
    terms = model.latent_quantizer(encoded.last_hidden_state)
    plain = model.decoder(terms.quantized, encoded.ids_restore, model.config.grid_size)
    torch.testing.assert_close(out.logits, plain)
    from hf_mae.modeling.losses import masked_mse
    from hf_mae.modeling.targets import pixel_target

    target = pixel_target(pixels[:4], (4, 4), True)
    expected = masked_mse(plain, target, encoded.mask) + 0.01 * (terms.quantization_loss + terms.commitment_loss)
    torch.testing.assert_close(out.loss, expected)
    with pytest.raises(ValueError, match="MAE .*only"):
        create_config("hpm-tiny", latent_quantization=True)
    from hf_mae.convert.vit_mae import convert_to_vit_mae

    with pytest.raises(ValueError, match="latent_quantization"):
        convert_to_vit_mae(model)


# -- the CLI -----------------------------------------------------------------------------------------------------------


def test_hf_mae_pretrain_qlae_tiny_on_sprites(tmp_path, one_thread):
    import json

    output_dir = tmp_path / "run"
    records = run_pretrain(["--model", "qlae-tiny", "--dataset", "sprites", "--max-steps", "12", "--batch-size", "32",
                            "--log-steps", "4", "--save-steps", "0", "--config-overrides", "conv_widths=8,16",
                            "blocks_per_stage=1", "dense_widths=[32]"], output_dir)  # fmt: skip
    assert [r["step"] for r in records] == [4, 8, 12]
    assert records[-1]["loss"] < records[0]["loss"]
    summary = json.loads((output_dir / "metrics.json").read_text())
    assert summary["weight_decay"] == 0.1 and summary["lr"] == 1e-3  # the recipe's, from the registry row
    assert summary["augmentation"] == "none"
    model = QLAEForPreTraining.from_pretrained(output_dir)
    assert model.config.conv_widths == [8, 16]
    assert isinstance(AutoModel.from_pretrained(output_dir), QLAEModel)
