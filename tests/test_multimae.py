"""MultiMAE: the Dirichlet budget by hand and over many draws, the masks it gives, the input / output adapters, the
pseudo-labels and the losses against their definitions, cross-modal prediction (depth from RGB alone beats a constant
predictor), RGB-only fine-tuning and `hf-mae pretrain --model multimae-tiny --dataset digits`."""

import math

import pytest
import torch
from conftest import digits_pixels, run_pretrain
from transformers import AutoConfig, AutoModelForPreTraining

import hf_mae
from hf_mae.modeling.losses import masked_sample_mean
from hf_mae.modeling.masking import DirichletBudgetMaskGenerator, allocate_budget, budget_mask, dirichlet_proportions
from hf_mae.modeling.multimae import (
    MultiMAEForImageClassification,
    MultiMAEForPreTraining,
    MultiMAEModel,
    blurred_luminance,
    color_palette,
    color_palette_labels,
    gaussian_blur,
    paper_modalities,
    truncated_standardize,
    unnormalize,
)

TINY = "multimae-tiny"
# rgb + depth only, narrow: the cross-modal test trains it on CPU in seconds
SMALL = dict(modalities=paper_modalities(num_classes=8, semantic_stride=2, class_embedding_size=16, blur_sigma=1.0)[:2],
             hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4, decoder_hidden_size=32,
             decoder_intermediate_size=64, decoder_num_attention_heads=2, extra_norm_pix_loss=False)


# -- the budget ---------------------------------------------------------------------------------------------------


def test_allocate_budget_by_hand():
    # exact shares stay as they are
    assert allocate_budget(torch.tensor([[0.5, 0.3, 0.2]]), 10, [64, 64, 64]).tolist() == [[5, 3, 2]]
    # floors 3, 3, 3; the tenth token goes to the largest unmet share (0.4 of modality 0)
    assert allocate_budget(torch.tensor([[0.34, 0.33, 0.33]]), 10, [64, 64, 64]).tolist() == [[4, 3, 3]]
    # a share above a modality's capacity: 9 wanted, 4 there; the 5 left alternate between the others (unmet 0 vs 0:
    # the first, then the other, ...): 1 + 3 and 0 + 2
    assert allocate_budget(torch.tensor([[0.9, 0.1, 0.0]]), 10, [4, 10, 10]).tolist() == [[4, 4, 2]]
    with pytest.raises(ValueError, match="total"):
        allocate_budget(torch.tensor([[0.5, 0.5]]), 9, [4, 4])


def test_dirichlet_budget_is_exact_and_its_proportions_are_dirichlet_1():
    """20 000 draws over 3 modalities of 64 tokens, 32 visible. Every row keeps exactly 32 tokens and the mask holds
    exactly the budget of each modality. Dirichlet(1, 1, 1)'s marginals are Beta(1, 2): mean 1/3, variance 1/18,
    P(share < 0.1) = 1 - 0.9^2 = 0.19. Standard errors over 20 000 draws: 0.0017 (mean), 0.0005 (variance), 0.003
    (probability); tolerances 0.01, 0.004 and 0.015 (about 5 standard errors, plus the rounding to 1/32 steps for
    the budget's shares)."""
    generator = torch.Generator().manual_seed(0)
    draws = 20_000
    proportions = dirichlet_proportions(draws, 3, 1.0, generator)
    assert torch.allclose(proportions.sum(1), torch.ones(draws))
    mean, var = proportions.mean(0), proportions.var(0)
    assert (mean - 1 / 3).abs().max() < 0.01, mean
    assert (var - 1 / 18).abs().max() < 0.004, var
    assert ((proportions < 0.1).float().mean(0) - 0.19).abs().max() < 0.015

    token_mask, budget = DirichletBudgetMaskGenerator(1.0)(draws, [64, 64, 64], 32, generator=generator)
    assert budget.sum(1).eq(32).all() and budget.max() <= 32 and budget.min() >= 0
    visible = (1 - token_mask.mask).reshape(draws, 3, 64).sum(-1)
    assert torch.equal(visible.long(), budget)
    assert token_mask.ids_keep.shape == (draws, 32)
    shares = budget.float() / 32
    assert (shares.mean(0) - 1 / 3).abs().max() < 0.01, shares.mean(0)
    assert (shares.var(0) - 1 / 18).abs().max() < 0.004 + 1 / 32**2, shares.var(0)
    # the same generator seed gives the same draw; the global RNG is left alone
    state = torch.random.get_rng_state()
    again = DirichletBudgetMaskGenerator(1.0)(5, [64, 64, 64], 32, generator=torch.Generator().manual_seed(3))[1]
    assert torch.equal(again, DirichletBudgetMaskGenerator(1.0)(5, [64, 64, 64], 32,
                                                                generator=torch.Generator().manual_seed(3))[1])
    assert torch.equal(state, torch.random.get_rng_state())


def test_budget_mask_keeps_the_smallest_noise_within_each_modality():
    noise = torch.tensor([[0.9, 0.1, 0.5, 0.3, 0.2, 0.8]])  # two modalities of 3 tokens
    token_mask = budget_mask(noise, [3, 3], torch.tensor([[2, 1]]))
    # modality 0 keeps 0.1 and 0.5 (tokens 1, 2), modality 1 keeps 0.2 (token 4); seen in ascending noise
    assert token_mask.mask.tolist() == [[1.0, 0.0, 0.0, 1.0, 0.0, 1.0]]
    assert token_mask.ids_keep.tolist() == [[1, 4, 2]]
    # then the hidden ones in ascending noise (0.3, 0.8, 0.9: tokens 3, 5, 0); ids_restore undoes that order
    restored = torch.cat([token_mask.ids_keep, torch.tensor([[3, 5, 0]])], 1).gather(1, token_mask.ids_restore)
    assert restored.tolist() == [[0, 1, 2, 3, 4, 5]]


# -- the model -----------------------------------------------------------------------------------------------------


def test_masking_follows_the_budget_and_output_only_modalities_count_every_token():
    torch.manual_seed(0)
    config = hf_mae.create_config(TINY)
    model = MultiMAEForPreTraining(config).eval()
    pixels = torch.randn(2, 3, 32, 32)
    # RGB only: 32 visible image tokens, depth and semantics entirely hidden
    out = model(pixels, modality_budget=torch.tensor([[32, 0, 0], [20, 12, 0]]))
    hidden = out.mask.reshape(2, 3, 64).sum(-1)
    assert hidden.tolist() == [[32, 64, 64], [44, 52, 64]]
    assert out.logits.shape == (2, 64, 4 * 4 * 3)
    assert set(out.modality_logits) == {"rgb", "depth", "semseg", "norm_rgb"}
    assert out.modality_logits["semseg"].shape == (2, 64, 2 * 2 * 8)  # stride 2: 2x2 label pixels x 8 classes
    assert out.modality_logits["depth"].shape == (2, 64, 16)
    # a plain call splits config.num_encoded_tokens (32) by a Dirichlet draw
    drawn = model(pixels)
    assert drawn.modality_budget.sum(1).tolist() == [32, 32] and drawn.mask.sum(1).tolist() == [160, 160]
    # the losses, recomputed from their definitions: per-sample means over the hidden tokens, then over samples
    maps = model.modality_maps(pixels, {})
    mask = out.mask.reshape(2, 3, 64)
    depth_target = model.target("depth", maps["depth"])
    depth = (out.modality_logits["depth"] - depth_target).abs().mean(-1)
    expected_depth = ((depth * mask[:, 1]).sum(1) / mask[:, 1].sum(1)).mean()
    torch.testing.assert_close(out.modality_losses["depth"], expected_depth)
    rgb_target = hf_mae.modeling.targets.patchify(pixels, (4, 4))
    rgb = (out.modality_logits["rgb"] - rgb_target).pow(2).mean(-1)
    torch.testing.assert_close(out.modality_losses["rgb"], ((rgb * mask[:, 0]).sum(1) / mask[:, 0].sum(1)).mean())
    labels = maps["semseg"].reshape(2, 8, 2, 8, 2).permute(0, 1, 3, 2, 4).reshape(2, 64, 4)
    scores = out.modality_logits["semseg"].reshape(2, 64, 4, 8)
    ce = torch.nn.functional.cross_entropy(scores.reshape(-1, 8), labels.reshape(-1), reduction="none")
    ce = ce.reshape(2, 64, 4).mean(-1)
    torch.testing.assert_close(out.modality_losses["semseg"], ((ce * mask[:, 2]).sum(1) / mask[:, 2].sum(1)).mean())
    torch.testing.assert_close(out.loss, sum(out.modality_losses.values()))

    # depth as an output only: no depth tokens in the encoder, its loss over all 64 of its tokens
    modalities = [dict(m) for m in config.modalities]
    modalities[1]["input"] = False
    target_only = MultiMAEForPreTraining(hf_mae.create_config(TINY, modalities=modalities)).eval()
    out = target_only(pixels)
    assert out.mask.shape == (2, 128) and out.modality_budget.shape == (2, 2)
    depth = (out.modality_logits["depth"] - target_only.target("depth", maps["depth"])).abs().mean()
    torch.testing.assert_close(out.modality_losses["depth"], depth)


def test_masked_sample_mean_skips_samples_without_hidden_tokens():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    assert masked_sample_mean(per_token, torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]])).item() == 2.0
    assert masked_sample_mean(per_token, torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])).item() == 3.25
    assert masked_sample_mean(per_token, torch.zeros(2, 3)).item() == 0.0


def test_base_model_encodes_the_modalities_it_is_given():
    torch.manual_seed(0)
    pretraining = MultiMAEForPreTraining(hf_mae.create_config(TINY)).eval()
    model = pretraining.multimae
    pixels = torch.randn(2, 3, 32, 32)
    maps = pretraining.modality_maps(pixels, {})
    image_only = model(pixels)
    assert image_only.last_hidden_state.shape == (2, 1 + 64, 128) and image_only.mask.sum() == 0
    both = model(pixels, depth_values=maps["depth"])
    assert both.last_hidden_state.shape == (2, 1 + 128, 128)
    # semantic ids through their class embedding: a map of one class is one embedding vector per pixel
    semseg = model(semseg_values=torch.full((2, 16, 16), 3))
    adapter = model.embeddings.adapters["semseg"]
    tokens = adapter(torch.full((2, 16, 16), 3))
    by_hand = adapter.patch_embeddings(adapter.class_embedding.weight[3].view(1, -1, 1, 1).expand(2, -1, 16, 16))
    torch.testing.assert_close(tokens, by_hand)
    assert semseg.last_hidden_state.shape == (2, 65, 128)
    with pytest.raises(ValueError, match="at least one input modality"):
        model()
    with pytest.raises(ValueError, match="unknown modality input"):
        model(pixels, dpeth_values=maps["depth"])
    with pytest.raises(TypeError, match="semseg_values must be an integer tensor"):
        model(semseg_values=torch.zeros(2, 16, 16))
    with pytest.raises(ValueError, match="depth_values has 2 channels"):
        model(pixels, depth_values=torch.zeros(2, 2, 32, 32))
    with pytest.raises(ValueError, match="mask_ratio"):
        model(pixels, mask_ratio=0.75)


def test_bad_configs_name_the_field():
    rgb = dict(name="rgb", kind="dense", channels=3)
    cases = {
        r"modalities\[1\]\['num_classes'\]": [rgb, dict(name="seg", kind="semantic")],
        r"modalities\[1\]\['stride'\] 3 must divide": [rgb, dict(name="d", channels=1, stride=3)],
        r"modalities\[1\] has unknown key": [rgb, dict(name="d", channels=1, colour="red")],
        r"modalities\[1\]\['name'\]": [rgb, dict(name="rgb", channels=1)],
        r"modalities\[0\] is the image": [dict(name="d", channels=1)],
        r"'blurred_luminance' makes 1-channel": [rgb, dict(name="d", channels=2, pseudo_label="blurred_luminance")],
        r"modalities\[1\]\['loss'\]": [rgb, dict(name="d", channels=1, loss="huber")],
    }
    for message, modalities in cases.items():
        with pytest.raises(ValueError, match=message):
            hf_mae.create_config(TINY, modalities=modalities)
    with pytest.raises(ValueError, match="dirichlet_alpha"):
        hf_mae.create_config(TINY, dirichlet_alpha=0.0)
    with pytest.raises(ValueError, match="num_encoded_tokens must be at most"):
        hf_mae.create_config(TINY, num_encoded_tokens=193)
    # a user's own modality: a 2-channel flow map given by the batch
    flow = [rgb, dict(name="flow", kind="dense", channels=2, loss="l1")]
    model = MultiMAEForPreTraining(hf_mae.create_config(TINY, modalities=flow, num_encoded_tokens=16)).eval()
    with pytest.raises(ValueError, match="needs flow_values"):
        model(torch.randn(1, 3, 32, 32))
    out = model(torch.randn(1, 3, 32, 32), flow_values=torch.randn(1, 2, 32, 32))
    assert out.modality_logits["flow"].shape == (1, 64, 32) and torch.isfinite(out.loss)


# -- pseudo-labels -------------------------------------------------------------------------------------------------


def test_builtin_pseudo_labels_by_hand():
    # luminance of a constant colour is 0.299 R + 0.587 G + 0.114 B everywhere, and blurring keeps a constant
    rgb = torch.tensor([0.2, 0.6, 1.0]).view(1, 3, 1, 1).expand(1, 3, 8, 8)
    depth = blurred_luminance(rgb, (8, 8), 1.0)
    torch.testing.assert_close(depth, torch.full((1, 1, 8, 8), 0.299 * 0.2 + 0.587 * 0.6 + 0.114))
    # the blur of an impulse is a normalised Gaussian: sums to 1, peak exp(0) / (sum over the 7x7 window)
    impulse = torch.zeros(1, 1, 15, 15)
    impulse[0, 0, 7, 7] = 1.0
    blurred = gaussian_blur(impulse, 1.0)
    one_d = torch.exp(-0.5 * torch.arange(-3.0, 4.0) ** 2)
    assert abs(blurred.sum().item() - 1.0) < 1e-5
    assert abs(blurred[0, 0, 7, 7].item() - (1 / one_d.sum()).item() ** 2) < 1e-6
    # 8 classes: the cell centres 0.25 / 0.75 of a 2x2x2 grid in raster (R, G, B) order
    palette = color_palette(8)
    assert palette[4].tolist() == [0.75, 0.25, 0.25] and palette[7].tolist() == [0.75, 0.75, 0.75]
    colours = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.9, 0.9, 0.1], [0.2, 0.7, 0.8]])
    image = colours.T.reshape(1, 3, 2, 2)
    assert color_palette_labels(image, (2, 2), 8).flatten().tolist() == [4, 0, 6, 3]
    # the processor's normalisation is undone first
    normalised = (torch.rand(1, 3, 4, 4) - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert 0.0 <= unnormalize(normalised).min() and unnormalize(normalised).max() <= 1.0


def test_truncated_standardisation_by_hand():
    values = torch.arange(10.0).view(1, 1, 2, 5)
    # middle 80 %: 1..8, mean 4.5, unbiased variance 6
    expected = (values - 4.5) / math.sqrt(6.0 + 1e-6)
    torch.testing.assert_close(truncated_standardize(values), expected)


def test_pseudo_labels_from_a_function_and_from_transformers_models():
    torch.manual_seed(0)
    pixels = torch.randn(2, 3, 32, 32)
    calls = []

    def depth_fn(rgb):
        calls.append(rgb)
        return rgb.mean(1, keepdim=True)

    config = hf_mae.create_config(TINY)
    model = MultiMAEForPreTraining(config, pseudo_labelers={"depth": depth_fn}).eval()
    maps = model.modality_maps(pixels, {})
    assert calls and 0.0 <= calls[0].min() and calls[0].max() <= 1.0  # the function sees RGB in [0, 1]
    torch.testing.assert_close(maps["depth"], truncated_standardize(unnormalize(pixels).mean(1, keepdim=True)))
    # a tiny random DPT and a tiny random SegFormer from config dicts (nothing downloaded), built on first use
    modalities = [dict(m) for m in config.modalities]
    modalities[1].update(pseudo_label=None, pseudo_label_config=dict(
        model_type="dpt", image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
        intermediate_size=64, neck_hidden_sizes=[8, 16, 32, 32], fusion_hidden_size=16, head_hidden_size=8,
        backbone_out_indices=[0, 1, 2, 3]))
    modalities[2].update(pseudo_label=None, pseudo_label_config=dict(
        model_type="segformer", num_labels=8, num_channels=3, hidden_sizes=[8, 8, 8, 8], depths=[1, 1, 1, 1],
        num_attention_heads=[1, 1, 1, 1], decoder_hidden_size=8))
    model = MultiMAEForPreTraining(hf_mae.create_config(TINY, modalities=modalities)).eval()
    maps = model.modality_maps(pixels, {})
    assert maps["depth"].shape == (2, 1, 32, 32) and torch.isfinite(maps["depth"]).all()
    assert maps["semseg"].shape == (2, 16, 16) and maps["semseg"].dtype == torch.long
    assert 0 <= maps["semseg"].min() and maps["semseg"].max() < 8
    labeler = model.pseudo_labeler_depth
    assert type(labeler).__name__ == "DPTForDepthEstimation" and not labeler.training
    assert not any(p.requires_grad for p in labeler.parameters())
    assert not any(key.startswith("pseudo_labeler") for key in model.state_dict())
    assert torch.isfinite(model(pixels).loss)
    # an instance, as pretrain(teachers={"pseudo_labelers": nn.ModuleDict(...)}) passes it: frozen, not saved
    from types import SimpleNamespace

    from hf_mae.registry import METHODS
    from hf_mae.training.pretrain import teacher_instances

    teachers = teacher_instances(SimpleNamespace(teachers={"pseudo_labelers": torch.nn.ModuleDict({"depth": labeler})}),
                                 METHODS["multimae"])
    given = MultiMAEForPreTraining(config, **teachers).eval()
    assert given.pseudo_labeler_depth is labeler and not any(k.startswith("pseudo") for k in given.state_dict())
    assert given.modality_maps(pixels, {})["depth"].shape == (2, 1, 32, 32)
    # a labeller instance with the wrong class count is refused, naming both
    wrong = [dict(m) for m in modalities]
    wrong[2]["pseudo_label_config"] = {**modalities[2]["pseudo_label_config"], "num_labels": 5}
    with pytest.raises(ValueError, match="predicts 5 classes.*num_classes=8"):
        MultiMAEForPreTraining(hf_mae.create_config(TINY, modalities=wrong)).modality_maps(pixels, {})


# -- learning ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return digits_pixels("train"), digits_pixels("test")


@pytest.fixture(scope="module")
def rgb_depth_model(digits):
    """rgb + depth (blurred luminance), narrow, pre-trained 40 steps on digits (batch 64, AdamW 2e-3)."""
    torch.set_num_threads(1)
    (pixels, _), _ = digits
    torch.manual_seed(0)
    model = MultiMAEForPreTraining(hf_mae.create_config(TINY, **SMALL))
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95), weight_decay=0.05)
    generator = torch.Generator().manual_seed(0)
    for _ in range(40):
        batch = pixels[torch.randint(0, pixels.shape[0], (64,), generator=generator)]
        model(batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


def test_depth_from_rgb_alone_beats_a_constant(rgb_depth_model, digits):
    """On the 360 test digits, every RGB token visible and no depth token: the depth adapter's L1 against the
    standardised blurred luminance is at most 0.75 x that of the best constant (the targets' median). Measured:
    0.640 vs 1.007 (ratio 0.64) after 40 steps.

    Disappointing and printed, not asserted: at 40 steps this is the positional prior, not yet the image. The
    per-position mean depth of the train set scores 0.577 (better), and the same prediction from another image's
    RGB scores the same (0.641). benchmarks/multimae_depth_from_rgb.py trains longer: the image is read from ~300
    steps on, and at 1000 steps the L1 is 0.186 with the right RGB, 0.747 with another image's."""
    model = rgb_depth_model
    (train_pixels, _), (pixels, _) = digits
    with torch.no_grad():
        out = model(pixels, modality_budget=torch.tensor([[64, 0]]).expand(pixels.shape[0], -1))
        target = model.target("depth", model.modality_maps(pixels, {})["depth"])
        train_target = model.target("depth", model.modality_maps(train_pixels, {})["depth"])
    assert out.mask[:, 64:].eq(1).all() and out.mask[:, :64].eq(0).all()
    model_l1 = (out.modality_logits["depth"] - target).abs().mean().item()
    constant_l1 = (target - target.median()).abs().mean().item()
    per_position_l1 = (target - train_target.mean(0)).abs().mean().item()
    with torch.no_grad():
        shuffled = model(pixels.roll(1, 0), modality_budget=torch.tensor([[64, 0]]).expand(pixels.shape[0], -1))
    shuffled_l1 = (shuffled.modality_logits["depth"] - target).abs().mean().item()
    print(f"depth L1 from RGB alone {model_l1:.3f}, from another image's RGB {shuffled_l1:.3f}, best constant "
          f"{constant_l1:.3f}, per-position mean {per_position_l1:.3f}")
    assert model_l1 <= 0.75 * constant_l1
    torch.testing.assert_close(out.modality_losses["depth"].item(), model_l1, rtol=1e-5, atol=1e-6)


def test_rgb_only_fine_tuning(rgb_depth_model, digits, tmp_path):
    """The pre-trained checkpoint loads into MultiMAEForImageClassification (only fc_norm and the classifier are
    new), which reads ``pixel_values`` alone (no pseudo-labels, the depth adapter unused), equals the encoder's
    RGB-only features, and 60 steps of fine-tuning lift test accuracy above 0.3 (10 classes: chance 0.1; measured
    0.433)."""
    rgb_depth_model.save_pretrained(tmp_path)
    model, info = MultiMAEForImageClassification.from_pretrained(tmp_path, num_labels=10, output_loading_info=True)
    assert sorted(info["missing_keys"]) == ["classifier.bias", "classifier.weight", "fc_norm.bias", "fc_norm.weight"]
    (pixels, labels), (test_pixels, test_labels) = digits
    model.eval()
    with torch.no_grad():
        features = rgb_depth_model.multimae(test_pixels[:4]).pooler_output
        torch.testing.assert_close(model(test_pixels[:4]).logits, model.classifier(model.fc_norm(features)))
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.05)
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        index = torch.randint(0, pixels.shape[0], (64,), generator=generator)
        model(pixels[index], labels=labels[index]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    with torch.no_grad():
        accuracy = (model(test_pixels).logits.argmax(-1) == test_labels).float().mean().item()
    print(f"RGB-only fine-tuning: test accuracy {accuracy:.3f} after 60 steps")
    assert accuracy > 0.3
    assert model.multimae.embeddings.adapters["depth"].patch_embeddings.projection.weight.grad is None


def test_pretrain_cli_runs_and_the_loss_falls(tmp_path, one_thread):
    argv = ["--model", TINY, "--dataset", "digits", "--max-steps", "12", "--batch-size", "32", "--lr", "2e-3",
            "--log-steps", "4", "--config-overrides", "hidden_size=64", "num_hidden_layers=2", "intermediate_size=128"]
    records = run_pretrain(argv, tmp_path / "run")
    print(f"multimae-tiny loss {records[0]['loss']:.3f} (steps 1-4) -> {records[-1]['loss']:.3f} (steps 9-12)")
    assert records[-1]["loss"] < 0.8 * records[0]["loss"]
    model = AutoModelForPreTraining.from_pretrained(tmp_path / "run")
    assert isinstance(model, MultiMAEForPreTraining)
    assert AutoConfig.from_pretrained(tmp_path / "run").modalities[2]["num_classes"] == 8
    assert isinstance(model.base_model, MultiMAEModel)
