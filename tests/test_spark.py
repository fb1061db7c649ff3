"""SparK: the sparse emulation (masked positions exactly zero at every hooked layer, sparse BatchNorm statistics),
the official cell-mask rule, the masked norm-pix loss by hand, fine-tuning through transformers' own classes, the
config's checks, learning on digits and the CLI."""

import math

import pytest
import torch
from conftest import digits_pixels, run_pretrain
from transformers import (
    AutoModelForPreTraining,
    ConvNextConfig,
    ConvNextForImageClassification,
    ResNetConfig,
    ResNetForImageClassification,
)

import hf_mae
from hf_mae.modeling.spark import (
    SparKConfig,
    SparKForImageClassification,
    SparKForPreTraining,
    SparKModel,
    cell_mask_from_noise,
    expand_active,
    sparse_batch_norm,
)

PRESETS = ["spark-tiny", "spark-convnext-tiny"]


def fixed_noise(batch=4, cells=16, seed=0):
    return torch.rand(batch, cells, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("preset", PRESETS)
def test_masked_positions_are_exactly_zero_at_every_hooked_layer(preset):
    torch.manual_seed(0)
    model = hf_mae.create_model(preset).train()
    backbone = model.spark.backbone
    hooked = model.spark.sparse_modules
    # every Conv2d, pooling and norm of the backbone is hooked (ConvNeXt: also each block)
    kinds = (torch.nn.Conv2d, torch.nn.MaxPool2d, torch.nn.BatchNorm2d, torch.nn.LayerNorm)
    expected = {name for name, module in backbone.named_modules() if isinstance(module, kinds)
                and not (name == "layernorm")}  # ConvNeXt's final LayerNorm acts on the pooled (batch, C) feature
    assert expected <= set(hooked), sorted(expected - set(hooked))
    outputs = {}
    handles = [module.register_forward_hook(lambda m, a, o, name=name: outputs.__setitem__(name, o))
               for name, module in hooked.items()]  # registered after SparK's: they see the re-masked outputs
    noise = fixed_noise()
    pixels = torch.randn(4, 3, 64, 64)
    out = model(pixels, noise=noise)
    active = (1 - out.mask).view(4, 1, 4, 4)
    assert out.mask.sum(1).tolist() == [10] * 4  # round(16 * 0.4) = 6 cells stay
    assert len(outputs) == len(hooked)
    for name, value in outputs.items():
        channels_last = getattr(hooked[name], "data_format", None) == "channels_last"
        height, width = (value.shape[1], value.shape[2]) if channels_last else value.shape[-2:]
        here = expand_active(active, height, width)
        here = here.permute(0, 2, 3, 1) if channels_last else here
        assert value.mul(1 - here).abs().max().item() == 0.0, name  # exactly zero where masked
        assert value.mul(here).abs().max().item() > 0.0, name  # and not trivially so
    for handle in handles:
        handle.remove()
    # without the hooks' re-masking the holes fill in: the dense backbone on the same zeroed input
    model.spark.sparse_state.start(None)
    dense = backbone(pixels * expand_active(active, 64, 64)).last_hidden_state
    assert dense.mul(1 - expand_active(active, 4, 4)).abs().max().item() > 1e-5  # ConvNeXt: ~7e-4 (LayerScale 1e-6)
    # the feature maps handed to the densify step are zero at the masked cells too
    encoded = model.spark(pixels, noise=noise)
    for features in encoded.feature_maps:
        assert features.mul(1 - expand_active(active, *features.shape[-2:])).abs().max().item() == 0.0


def test_sparse_batch_norm_statistics_are_those_of_the_active_positions():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 8, 8) * 2 + 1
    active = expand_active((torch.rand(3, 1, 2, 2) > 0.5).float(), 8, 8)
    active[0, 0, 0, 0] = 1.0
    norm = torch.nn.BatchNorm2d(5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    out = sparse_batch_norm(norm.train(), x, active)
    # by hand: the features of the active positions only, (n, C)
    chosen = x.permute(0, 2, 3, 1)[active[:, 0].bool()]
    n = chosen.shape[0]
    mean = chosen.sum(0) / n
    biased = ((chosen - mean) ** 2).sum(0) / n
    unbiased = ((chosen - mean) ** 2).sum(0) / (n - 1)
    torch.testing.assert_close(norm.running_mean, 0.1 * mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(norm.running_var, 0.9 + 0.1 * unbiased, rtol=1e-5, atol=1e-6)
    expected = (chosen - mean) / torch.sqrt(biased + 1e-5) * norm.weight + norm.bias
    torch.testing.assert_close(out.permute(0, 2, 3, 1)[active[:, 0].bool()], expected, rtol=1e-5, atol=1e-5)
    assert out.mul(1 - active).abs().max().item() == 0.0
    # ... which is the official SparK's BatchNorm1d on the active features
    official = torch.nn.BatchNorm1d(5).train()
    official.load_state_dict({k: v for k, v in norm.state_dict().items() if k != "num_batches_tracked"}, strict=False)
    official.running_mean.zero_(), official.running_var.fill_(1.0)
    torch.testing.assert_close(official(chosen), expected, rtol=1e-5, atol=1e-5)
    # the dense BN's statistics differ (zeros at the masked positions weigh in), so the test can tell them apart
    assert (x * active).mean((0, 2, 3)).sub(mean).abs().max() > 0.1
    # eval: the running statistics, zero where inactive
    dense = torch.nn.functional.batch_norm(x, norm.running_mean, norm.running_var, norm.weight, norm.bias, False)
    torch.testing.assert_close(sparse_batch_norm(norm.eval(), x, active), dense * active)


def test_a_hooked_backbone_batch_norm_updates_its_statistics_from_the_active_positions_only():
    torch.manual_seed(0)
    model = hf_mae.create_model("spark-tiny").train()
    norm = model.spark.backbone.embedder.embedder.normalization
    seen = {}
    norm.register_forward_pre_hook(lambda m, args: seen.__setitem__("input", args[0].detach().clone()))
    out = model(torch.randn(4, 3, 64, 64), noise=fixed_noise())
    x = seen["input"]  # the masked stem convolution's output, (4, 16, 32, 32)
    active = expand_active((1 - out.mask).view(4, 1, 4, 4), 32, 32)[:, 0].bool()
    chosen = x.permute(0, 2, 3, 1)[active]
    torch.testing.assert_close(norm.running_mean, 0.1 * chosen.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(norm.running_var, 0.9 + 0.1 * chosen.var(0), rtol=1e-4, atol=1e-6)
    assert norm.num_batches_tracked.item() == 1  # counted once, not once per (dense + sparse) pass


def test_the_sparse_state_is_per_thread_and_copies_start_empty():
    import copy
    import pickle
    import threading

    model = hf_mae.create_model("spark-tiny").eval()
    pixels, noise = torch.randn(2, 3, 64, 64), fixed_noise(2)
    expected = model(pixels, noise=noise).logits
    copied = copy.deepcopy(model)
    assert copied.spark.sparse_state is not model.spark.sparse_state
    torch.testing.assert_close(copied(pixels, noise=noise).logits, expected, rtol=0, atol=0)
    torch.testing.assert_close(pickle.loads(pickle.dumps(model))(pixels, noise=noise).logits, expected, rtol=0, atol=0)
    state = model.spark.sparse_state
    state.start(torch.ones(2, 1, 4, 4))
    seen = []
    thread = threading.Thread(target=lambda: seen.append(state.active))
    thread.start(), thread.join()
    assert seen == [None] and state.active is not None  # another thread's forward is dense unless it masks
    state.stop()


def test_cell_mask_keeps_the_official_rounded_count():
    noise = fixed_noise(2, 49)
    mask = cell_mask_from_noise(noise, 0.6)
    assert mask.sum(1).tolist() == [29.0, 29.0]  # round(49 * 0.4) = 20 stay; MAE's int() would keep 19
    kept = noise.argsort(1)[:, :20]
    assert torch.equal(mask.gather(1, kept), torch.zeros(2, 20))
    assert cell_mask_from_noise(fixed_noise(1, 4), 0.99).sum().item() == 3  # at least one cell stays


def test_loss_is_norm_pix_mse_on_the_masked_cells_by_hand():
    torch.manual_seed(0)
    model = hf_mae.create_model("spark-tiny").eval()
    pixels, noise = torch.randn(2, 3, 64, 64), fixed_noise(2)
    out = model(pixels, noise=noise)
    assert out.logits.shape == (2, 16, 16 * 16 * 3)
    total, count = 0.0, 0
    for b in range(2):
        for cell in range(16):
            row, col = divmod(cell, 4)
            patch = pixels[b, :, 16 * row:16 * row + 16, 16 * col:16 * col + 16].permute(1, 2, 0).reshape(-1)
            target = (patch - patch.mean()) / (patch.var() + 1e-6).sqrt()
            if out.mask[b, cell]:
                total += ((out.logits[b, cell] - target) ** 2).mean().item()
                count += 1
    assert count == 20
    assert out.loss.item() == pytest.approx(total / count, rel=1e-5)
    # a visible cell's pixels reach the prediction; a masked cell's never do (the encoder sees zeros there)
    def changed_at(cell):
        changed = pixels.clone()
        row, col = divmod(cell, 4)
        changed[0, :, 16 * row:16 * row + 16, 16 * col:16 * col + 16] += 1.0
        return model(changed, noise=noise).logits
    visible, masked = (out.mask[0] == 0).nonzero()[0].item(), out.mask[0].nonzero()[0].item()
    assert (changed_at(visible) - out.logits).abs().max().item() > 0
    assert torch.equal(changed_at(masked), out.logits)


def test_reconstruction_pastes_the_visible_cells_back(tmp_path):
    from hf_mae.training.visualize import save_reconstruction_grid

    torch.manual_seed(0)
    model = hf_mae.create_model("spark-tiny").eval()
    pixels, noise = torch.randn(2, 3, 64, 64), fixed_noise(2)
    out = model(pixels, noise=noise)
    masked, reconstruction, pasted = model.reconstruct(pixels, out)
    visible = expand_active((1 - out.mask).view(2, 1, 4, 4), 64, 64).bool().expand(-1, 3, -1, -1)
    assert torch.equal(masked[visible], pixels[visible]) and masked[~visible].abs().max() == 0
    torch.testing.assert_close(pasted[visible], pixels[visible])
    torch.testing.assert_close(pasted[~visible], reconstruction[~visible])
    save_reconstruction_grid(model, hf_mae.create_processor("spark-tiny"), pixels, tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 0


def test_densify_and_decoder_follow_the_official_layout():
    model = hf_mae.create_model("spark-tiny")
    # stride 16: four upsampling blocks of widths 64 -> 32 -> 16 -> 8 -> 4, then a 1x1 to 3 channels
    assert [block.up_sample.in_channels for block in model.decoder.blocks] == [64, 32, 16, 8]
    assert model.decoder.proj.out_channels == 3 and model.decoder.proj.kernel_size == (1, 1)
    projections = model.densify_projections
    assert isinstance(projections[0], torch.nn.Identity)  # the coarsest stage is as wide as the decoder
    shapes = [(p.in_channels, p.out_channels, p.kernel_size) for p in projections[1:]]
    assert shapes == [(32, 32, (3, 3)), (16, 16, (3, 3))]
    assert [tuple(t.shape) for t in model.mask_tokens] == [(1, 64, 1, 1), (1, 32, 1, 1), (1, 16, 1, 1)]
    assert all(t.abs().max() <= 0.02 for t in model.mask_tokens)
    assert type(model.densify_norms[0]).__name__ == "SparseBatchNorm2d"
    convnext = hf_mae.create_model("spark-convnext-tiny", decoder_hidden_size=128)
    assert type(convnext.densify_norms[0]).__name__ == "SparseLayerNorm2d"
    assert convnext.densify_projections[0].kernel_size == (1, 1)  # 64 -> 128: a 1x1 at the coarsest scale


@pytest.mark.parametrize("preset, transformers_class", [("spark-tiny", ResNetForImageClassification),
                                                        ("spark-convnext-tiny", ConvNextForImageClassification)])
def test_fine_tuning_goes_through_the_backbones_own_classification_class(preset, transformers_class, tmp_path):
    torch.manual_seed(0)
    pretrained = hf_mae.create_model(preset)
    pretrained.train()(torch.randn(4, 3, 64, 64))  # move the BN running statistics off their init
    pretrained.save_pretrained(tmp_path / "pretrain")
    classifier, info = SparKForImageClassification.from_pretrained(tmp_path / "pretrain", num_labels=3,
                                                                   output_loading_info=True)
    assert all(key.startswith("classifier.") for key in info["missing_keys"]) and info["missing_keys"]
    classifier.eval()
    pixels = torch.randn(2, 3, 64, 64)
    exported = classifier.to_transformers()
    assert type(exported) is transformers_class
    torch.testing.assert_close(exported(pixels).logits, classifier(pixels).logits, rtol=0, atol=1e-6)
    # the pre-trained backbone, saved as transformers' own model, loads into transformers' own class
    pretrained.spark.save_backbone(tmp_path / "backbone")
    loaded, info = transformers_class.from_pretrained(tmp_path / "backbone", num_labels=3, output_loading_info=True)
    assert sorted(info["missing_keys"]) == sorted(k for k in exported.state_dict() if k.startswith("classifier."))
    assert not info["unexpected_keys"]
    base = transformers_class.base_model_prefix
    features = getattr(loaded.eval(), base)(pixels).pooler_output.flatten(1)
    torch.testing.assert_close(features, pretrained.spark.eval()(pixels).pooler_output, rtol=0, atol=1e-6)
    with torch.no_grad():
        loaded.classifier.load_state_dict(classifier.classifier.state_dict())
    torch.testing.assert_close(loaded(pixels).logits, classifier(pixels).logits, rtol=0, atol=1e-6)


def test_base_model_tokens_fit_the_probes():
    model = hf_mae.create_model("spark-tiny", task="base").eval()
    pixels = torch.randn(2, 3, 64, 64)
    out = model(pixels)
    assert out.last_hidden_state.shape == (2, 1 + 16, 64) and out.mask.sum() == 0
    torch.testing.assert_close(out.last_hidden_state[:, 0], out.pooler_output)
    torch.testing.assert_close(out.last_hidden_state[:, 1:].mean(1), out.pooler_output)  # ResNet: the global average
    dense = model.backbone(pixels).last_hidden_state  # a plain call is the dense backbone
    torch.testing.assert_close(out.last_hidden_state[:, 1:], dense.flatten(2).transpose(1, 2), rtol=0, atol=0)
    assert model(torch.randn(1, 3, 96, 64)).last_hidden_state.shape == (1, 1 + 24, 64)  # any multiple of the stride


def test_config_accepts_dicts_configs_and_names_and_rejects_bad_values(tmp_path):
    as_config = SparKConfig(backbone_config=ResNetConfig(hidden_sizes=[8, 16], depths=[1, 1], embedding_size=8),
                            image_size=32, decoder_hidden_size=16)
    assert as_config.backbone_type == "resnet" and as_config.downsample_ratio == 8 and as_config.grid_size == (4, 4)
    assert as_config.densify_norm == "bn"
    ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2).save_pretrained(tmp_path / "cnx")
    by_name = SparKConfig(backbone_name_or_path=str(tmp_path / "cnx"), image_size=32, decoder_hidden_size=16)
    assert by_name.backbone_config["model_type"] == "convnext" and by_name.densify_norm == "ln"
    assert by_name.stage_widths == [8, 16] and by_name.downsample_ratio == 8
    reloaded = SparKConfig.from_dict(by_name.to_dict())
    assert reloaded.backbone_config == by_name.backbone_config
    assert SparKConfig().backbone().hidden_sizes == [256, 512, 1024, 2048]  # default: ResNet-50
    # ``hf-mae finetune --drop-path`` reaches a ConvNeXt backbone's stochastic depth
    assert hf_mae.create_config("spark-convnext-tiny", drop_path_rate=0.3).backbone().drop_path_rate == 0.3
    assert hf_mae.create_config("spark-convnext-small").backbone().drop_path_rate == 0.2  # the paper's
    with pytest.raises(ValueError, match="backbone_config model_type must be one of"):
        SparKConfig(backbone_config={"model_type": "vit"})
    with pytest.raises(ValueError, match="backbone_config must be a config dict"):
        SparKConfig(backbone_config={"hidden_sizes": [8]})
    with pytest.raises(ValueError, match="divisible by the backbone's stride 32"):
        SparKConfig(image_size=200)
    with pytest.raises(ValueError, match="decoder_hidden_size 16 .* >= 32"):
        SparKConfig(decoder_hidden_size=16)
    with pytest.raises(ValueError, match="densify_norm"):
        SparKConfig(densify_norm="group")
    with pytest.raises(ValueError, match="mask_ratio"):
        SparKConfig(mask_ratio=1.0)
    with pytest.raises(ValueError, match="drop_path_rate"):
        SparKConfig(drop_path_rate=1.5)
    model = SparKModel(hf_mae.create_config("spark-tiny"))
    with pytest.raises(ValueError, match="divisible by the backbone's stride 16"):
        model(torch.randn(1, 3, 72, 64))
    with pytest.raises(ValueError, match=r"noise must have shape \(batch, cells\) = \(1, 16\)"):
        model(torch.randn(1, 3, 64, 64), noise=torch.rand(1, 15))


def test_loss_falls_on_digits():
    """40 AdamW steps of batch 16 of spark-tiny on 64x64 digits: the masked norm-pix loss falls by more than 20%
    (first 5 steps' mean vs the last 5's; measured 39%: 0.977 -> 0.594)."""
    torch.manual_seed(0)
    pixels, _ = digits_pixels("train", image_size=64)
    model = hf_mae.create_model("spark-tiny").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95), weight_decay=0.04)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(40):
        batch = pixels[torch.randint(len(pixels), (16,), generator=generator)]
        loss = model(batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    print(f"spark-tiny on digits: loss {first:.3f} -> {last:.3f} ({1 - last / first:.0%} lower)")
    assert last < 0.8 * first


def test_pretrain_cli_runs(tmp_path, one_thread):
    records = run_pretrain(["--model", "spark-tiny", "--dataset", "digits", "--max-steps", "3", "--batch-size", "16",
                            "--log-steps", "1"], tmp_path / "run")  # fmt: skip
    assert len(records) == 3 and all(math.isfinite(r["loss"]) for r in records)
    model = AutoModelForPreTraining.from_pretrained(tmp_path / "run")
    assert isinstance(model, SparKForPreTraining) and model.config.backbone_type == "resnet"
