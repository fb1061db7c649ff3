"""CropMAE: two visible patches at the presets' ratios, the cross-attention layer (eager = sdpa = the formula), the
decoder block against the official post-norm order, the reference view, reconstruction of a local crop from two
patches plus its global crop after a short digits run, and a 20-step `hf-mae pretrain` run.
The shared model suite (tests/test_models.py) covers the rest for the cropmae presets."""

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import digits_pixels, run_pretrain
from torch import nn
from transformers import AutoModelForPreTraining

import hf_mae
from hf_mae.modeling.cropmae import CropMAEConfig, CropMAEDecoderBlock, CropMAEForPreTraining
from hf_mae.modeling.layers import Attention, CrossAttention
from hf_mae.modeling.masking import num_kept
from hf_mae.modeling.targets import pixel_target
from hf_mae.registry import create_config
from hf_mae.training.optim import build_adamw, warmup_cosine_schedule


def test_defaults_are_the_official_ones():
    config = CropMAEConfig()
    encoder = (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size)
    decoder = (config.decoder_hidden_size, config.decoder_num_hidden_layers, config.decoder_num_attention_heads,
               config.decoder_intermediate_size)  # fmt: skip
    assert encoder == (384, 12, 6, 1536) and decoder == (256, 4, 8, 2048)
    assert (config.mask_ratio, config.decoder_dropout_prob, config.norm_pix_loss, config.patch_size) == (0.985, 0.1, True, 16)
    with pytest.raises(ValueError, match="decoder_dropout_prob"):
        CropMAEConfig(decoder_dropout_prob=1.0)


def test_two_patches_stay_visible_at_the_presets_ratios():
    assert num_kept(196, 0.985) == 2 and num_kept(64, 0.96875) == 2

    model = hf_mae.create_model("cropmae-tiny").eval()
    pixel_values, reference = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32)
    noise = torch.rand(4, 64)
    out = model(pixel_values, noise=noise, pixel_values_2=reference)
    assert (1 - out.mask).sum(1).tolist() == [2.0] * 4
    # the visible ones are the two lowest-noise patches
    visible = torch.zeros(4, 64).scatter_(1, noise.argsort(1)[:, :2], 1.0)
    assert torch.equal(1 - out.mask, visible)
    assert model.mae(pixel_values, noise=noise).last_hidden_state.shape == (4, 1 + 2, 128)

    # the paper's ViT-S/16 at 224 px (one block each, to keep it quick): 2 of 196 patches visible
    model = hf_mae.create_model("cropmae-vit-small-patch16", num_hidden_layers=1, decoder_num_hidden_layers=1).eval()
    pixel_values = torch.randn(2, 3, 224, 224)
    out = model(pixel_values, pixel_values_2=torch.randn(2, 3, 224, 224))
    assert (1 - out.mask).sum(1).tolist() == [2.0, 2.0] and out.logits.shape == (2, 196, 16 * 16 * 3)
    assert model.mae(pixel_values, mask_ratio=model.config.mask_ratio).last_hidden_state.shape == (2, 1 + 2, 384)
    assert model.mae(pixel_values).last_hidden_state.shape == (2, 1 + 196, 384)  # a plain base-model call: features


def test_cross_attention_is_softmax_attention_under_eager_and_sdpa():
    config = CropMAEConfig(hidden_size=32, num_attention_heads=4, decoder_hidden_size=32, decoder_num_attention_heads=4)
    layers = {}
    for implementation in ("eager", "sdpa"):
        config = copy.deepcopy(config)
        config._attn_implementation = implementation
        torch.manual_seed(0)
        layers[implementation] = CrossAttention(config, 32, 4).eval()
    queries, context = torch.randn(2, 5, 32), torch.randn(2, 7, 32)  # 5 queries over 7 keys
    eager, weights = layers["eager"](queries, context, output_attentions=True)
    sdpa, _ = layers["sdpa"](queries, context)

    # the formula, by hand: rows [0, 32) of the packed projection make the queries, the rest keys and values
    layer = layers["eager"]
    w, b = layer.qkv.weight, layer.qkv.bias
    heads = lambda x: x.view(2, -1, 4, 8).transpose(1, 2)  # noqa: E731
    q, k, v = heads(queries @ w[:32].T + b[:32]), heads(context @ w[32:64].T + b[32:64]), heads(context @ w[64:].T + b[64:])
    attention = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5, dim=-1)
    expected = layer.proj((attention @ v).transpose(1, 2).reshape(2, 5, 32))
    torch.testing.assert_close(eager, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(sdpa, expected, rtol=1e-5, atol=1e-6)
    assert weights.shape == (2, 4, 5, 7)
    torch.testing.assert_close(weights, attention)
    print(f"cross-attention eager vs sdpa: max |diff| {(eager - sdpa).abs().max().item():.1e}")
    # attending over its own input, it is the self-attention of the same weights
    torch.testing.assert_close(layer(context, context)[0], Attention.forward(layer, context)[0])

    # the whole model (two different views) agrees between the two kernels
    tiny = create_config("cropmae-tiny")
    models = {impl: CropMAEForPreTraining._from_config(copy.deepcopy(tiny), attn_implementation=impl).eval()
              for impl in ("eager", "sdpa")}  # fmt: skip
    models["sdpa"].load_state_dict(models["eager"].state_dict())
    pixel_values, reference, noise = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32), torch.rand(4, 64)
    outs = [m(pixel_values, noise=noise, pixel_values_2=reference) for m in models.values()]
    torch.testing.assert_close(outs[0].logits, outs[1].logits, rtol=1e-4, atol=1e-5)


def test_decoder_block_follows_the_official_post_norm_order():
    """Official DecoderBlock (norm_first=False) with nn.MultiheadAttention, weights copied from ours:
    x = norm2(x + cross(x, mem)); x = norm3(x + ffn(x)); x = norm1(x + self(x))."""
    config = create_config("cropmae-tiny")
    config._attn_implementation = "sdpa"  # set by the model class in normal use
    torch.manual_seed(0)
    block = CropMAEDecoderBlock(config).eval()
    for param in block.parameters():  # LayerNorms start at (1, 0): move every weight away from its init
        param.data.add_(0.1 * torch.randn_like(param))
    width, heads = config.decoder_hidden_size, config.decoder_num_attention_heads

    def mha(attention):
        module = nn.MultiheadAttention(width, heads, batch_first=True).eval()
        module.in_proj_weight.data.copy_(attention.qkv.weight)
        module.in_proj_bias.data.copy_(attention.qkv.bias)
        module.out_proj.load_state_dict(attention.proj.state_dict())
        return module

    cross, self_attention = mha(block.cross_attention), mha(block.self_attention)
    x, memory = torch.randn(3, 9, width), torch.randn(3, 17, width)
    expected = block.norm_cross(x + cross(x, memory, memory, need_weights=False)[0])
    expected = block.norm_mlp(expected + block.mlp.fc2(F.gelu(block.mlp.fc1(expected))))
    expected = block.norm_self(expected + self_attention(expected, expected, expected, need_weights=False)[0])
    torch.testing.assert_close(block(x, memory)[0], expected, rtol=1e-5, atol=1e-5)
    # dropout 0.1 is active in training
    block.train()
    assert not torch.equal(block(x, memory)[0], block(x, memory)[0])


def test_reference_view_defaults_to_pixel_values_and_is_checked():
    model = hf_mae.create_model("cropmae-tiny").eval()
    pixel_values, noise = torch.randn(4, 3, 32, 32), torch.rand(4, 64)
    same = model(pixel_values, noise=noise)
    torch.testing.assert_close(same.logits, model(pixel_values, noise=noise, pixel_values_2=pixel_values).logits)
    other = model(pixel_values, noise=noise, pixel_values_2=torch.randn(4, 3, 32, 32))
    assert (other.logits - same.logits).abs().mean() > 1e-3  # the decoder reads the reference view
    # another reference size works with interpolated positions
    larger = model(pixel_values, noise=noise, pixel_values_2=torch.randn(4, 3, 48, 48), interpolate_pos_encoding=True)
    assert larger.logits.shape == (4, 64, 48)
    with pytest.raises(TypeError, match="pixel_values_2"):
        model(pixel_values, pixel_values_2=pixel_values.numpy())
    with pytest.raises(ValueError, match="pixel_values_2"):
        model(pixel_values, pixel_values_2=pixel_values[:2])


def random_crops(images, scale, generator):
    """Square crops covering an area share drawn from ``scale``, anywhere inside each image, resampled to the input
    size (bilinear). images (n, C, H, W) -> (n, C, H, W)."""
    n = images.shape[0]
    side = torch.empty(n).uniform_(*scale, generator=generator).sqrt()  # in units of the image side
    centre = (torch.rand(n, 2, generator=generator) * 2 - 1) * (1 - side).unsqueeze(1)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = side
    theta[:, :, 2] = centre
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def global_and_local_views(images, generator):
    """The official GlobalToLocal strategy (without flips): a global crop (area 0.6-1) of the image, then a local crop
    (area 0.3-0.6, the official range) of the global one. Returns (local = masked view, global = reference view)."""
    global_view = random_crops(images, (0.6, 1.0), generator)
    return random_crops(global_view, (0.3, 0.6), generator), global_view


def test_local_crop_is_reconstructed_from_two_patches_and_its_global_crop(one_thread):
    """After 400 steps on digits, the local crop's hidden patches (all but 2) are predicted far better than by the
    best constant guess per position, and only with the right reference view: a noise reference undoes it.

    CPU-sized: a 16-px digit, 4x4 patches (16 patches, r = 0.875 keeps 2, as 0.985 keeps 2 of 196), a 32-d encoder,
    pixel targets (norm_pix_loss off, so the per-position mean is a meaningful baseline), no decoder dropout.
    """
    torch.manual_seed(0)
    pixels, _ = digits_pixels("train", image_size=16)
    test_pixels, _ = digits_pixels("test", image_size=16)
    model = hf_mae.create_model(
        "cropmae-tiny", image_size=16, mask_ratio=0.875, hidden_size=32, num_hidden_layers=2, intermediate_size=64,
        decoder_intermediate_size=128, decoder_dropout_prob=0.0, norm_pix_loss=False,
    ).train()  # fmt: skip
    steps = 400
    optimizer = build_adamw(model, lr=4e-3, weight_decay=0.05)
    schedule = warmup_cosine_schedule(optimizer, warmup_steps=steps // 20, total_steps=steps)
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        local, reference = global_and_local_views(pixels[torch.randint(0, len(pixels), (128,), generator=generator)], generator)
        loss = model(local, pixel_values_2=reference).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()

    model.eval()
    generator = torch.Generator().manual_seed(1)
    local, reference = global_and_local_views(test_pixels[:256], generator)
    noise = torch.rand(256, 16, generator=generator)
    with torch.no_grad():
        out = model(local, noise=noise, pixel_values_2=reference)
        with_noise = model(local, noise=noise, pixel_values_2=torch.randn_like(reference)).loss.item()
    assert (1 - out.mask).sum(1).eq(2).all()
    target = pixel_target(local, (4, 4), norm_pix=False)
    hidden = out.mask
    # the best constant prediction per patch position: the mean over the evaluated images themselves
    per_patch = (target - target.mean(0, keepdim=True)).pow(2).mean(-1)
    mean_baseline = ((per_patch * hidden).sum() / hidden.sum()).item()
    loss = out.loss.item()
    print(f"masked MSE from 2 patches + global crop {loss:.3f}; per-position mean {mean_baseline:.3f}; "
          f"noise as the reference view {with_noise:.3f}")  # fmt: skip
    assert loss < 0.65 * mean_baseline  # observed 0.886 vs 1.832
    assert with_noise > 1.5 * loss  # observed 1.901


def test_pretrain_cli_runs_and_the_loss_falls(tmp_path, one_thread):
    argv = ["--model", "cropmae-tiny", "--dataset", "digits", "--max-steps", "20",
            "--batch-size", "32", "--lr", "2e-3", "--log-steps", "5",
            "--config-overrides", "hidden_size=32", "num_hidden_layers=2", "intermediate_size=64"]  # fmt: skip
    records = run_pretrain(argv, tmp_path / "run")
    folder = tmp_path / "run"
    print(f"cropmae-tiny MSE {records[0]['loss']:.4f} (steps 1-5) -> {records[-1]['loss']:.4f} (steps 16-20)")
    assert records[-1]["loss"] < 0.8 * records[0]["loss"]
    assert (folder / "reconstruction.png").stat().st_size > 0
    assert isinstance(AutoModelForPreTraining.from_pretrained(folder), CropMAEForPreTraining)
