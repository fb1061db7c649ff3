"""The model test-suite every registered preset runs through.

A new method joins by adding its presets to ``hf_mae.registry.METHODS``. Paper-sized presets are shrunk in depth
and image size here (widths, heads and patch sizes stay the paper's) so the whole suite stays CPU-sized.
"""

import copy

import pytest
import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForImageClassification, AutoModelForPreTraining

import hf_mae
from hf_mae.modeling.embeddings import to_2tuple
from hf_mae.registry import AUTO_CLASSES, PRESETS, create_config

PRESET_NAMES = [name for name in hf_mae.list_models() if PRESETS[name].modality == "image"]  # video: test_video_models.py
BATCH = 4  # divisible by MixedAE's mixing group; every test below uses this batch size


def suite_config(preset, **overrides):
    """The preset's config; paper-sized ones get 1 encoder (and 1 decoder) block on a 4x4 patch grid."""
    config = create_config(preset)
    if not preset.endswith("-tiny"):
        patch = to_2tuple(config.patch_size)
        shrink = dict(num_hidden_layers=1, image_size=(4 * patch[0], 4 * patch[1]))
        if hasattr(config, "decoder_num_hidden_layers"):
            shrink["decoder_num_hidden_layers"] = 1
        overrides = dict(shrink, **overrides)
    return create_config(preset, **overrides) if overrides else config


# How a method masks (registry ``Method.masking``): the expectations below differ only in these helpers.
def mask_tokens(preset) -> bool:
    """True for "mask-token" methods (SimMIM): the encoder sees every patch and ``noise`` is per mask cell."""
    return PRESETS[preset].masking == "mask-token"


def key_mask(preset) -> bool:
    """True for "key-mask" methods (MP3): every token stays in order; hidden ones are masked only as attention keys."""
    return PRESETS[preset].masking == "key-mask"


def fine_tuning_keys(preset) -> tuple:
    """Weight-name prefixes a classifier may add to a pre-training checkpoint: the head, plus MP3's fine-tuning
    position embeddings (the paper adds them, zero-initialised, at fine-tuning)."""
    if key_mask(preset):
        return ("classifier", "fc_norm", "mp3.embeddings.position_embeddings")
    return ("classifier", "fc_norm")


def noise_grid(config):
    """The grid ``noise`` is drawn over: patches (MAE) or mask cells (SimMIM)."""
    return getattr(config, "mask_grid_size", config.grid_size)


def expected_mask(preset, config, noise):
    """The mask (batch, num_patches) a fixed ``noise`` must give: the int(L * (1 - r)) smallest noise values stay
    visible, L counting patches (MAE) or mask cells spread over their patches (SimMIM)."""
    kept = int(noise.shape[1] * (1 - config.mask_ratio))
    if PRESETS[preset].masking == "mixing":  # MixedAE: member j of a group sees ranks [j*kept, (j+1)*kept) of the
        group = config.mix_group  # group's first member's noise
        first_ranks = noise[::group].argsort(1).argsort(1).repeat_interleave(group, 0)
        member = torch.arange(noise.shape[0])[:, None] % group
        return 1.0 - ((first_ranks >= member * kept) & (first_ranks < (member + 1) * kept)).float()
    mask = 1.0 - torch.zeros_like(noise).scatter_(1, noise.argsort(1)[:, :kept], 1.0)
    if not mask_tokens(preset):
        return mask
    unit = config.mask_unit
    rows, cols = noise_grid(config)
    return mask.reshape(-1, rows, cols).repeat_interleave(unit, 1).repeat_interleave(unit, 2).flatten(1)


def expected_logits_shape(preset, config, height, width):
    """Per-patch pixels (batch, N, p*p*C) for MAE's decoder, a full image (batch, C, H, W) for SimMIM's head."""
    if mask_tokens(preset):
        return (BATCH, config.num_channels, height, width)
    patch = to_2tuple(config.patch_size)
    if key_mask(preset):  # every patch's scores over the grid's positions
        return (BATCH, (height // patch[0]) * (width // patch[1]), config.num_positions)
    if PRESETS[preset].name == "dmjd":  # per-patch HOG histograms, not pixels
        return (BATCH, (height // patch[0]) * (width // patch[1]), config.hog_dim)
    return (BATCH, (height // patch[0]) * (width // patch[1]), patch[0] * patch[1] * config.num_channels)


def build(preset, task="pretraining", attn_implementation=None, **overrides):
    config = suite_config(preset, **overrides)
    model_class = PRESETS[preset].model_classes[task]
    if attn_implementation is None:
        return model_class(config).eval()
    return model_class._from_config(copy.deepcopy(config), attn_implementation=attn_implementation).eval()


def inputs_for(config, batch=BATCH, seed=0):
    """pixel_values (batch, C, H, W) and a fixed noise (batch, num_patches or num_mask_cells)."""
    generator = torch.Generator().manual_seed(seed)
    height, width = to_2tuple(config.image_size)
    pixel_values = torch.randn(batch, config.num_channels, height, width, generator=generator)
    rows, cols = noise_grid(config)
    return pixel_values, torch.rand(batch, rows * cols, generator=generator)


def test_registry_lists_every_preset_and_rejects_unknown_names():
    assert {"mae-tiny", "mae-vit-base-patch16", "mae-vit-large-patch16", "mae-vit-huge-patch14"} <= set(PRESET_NAMES)
    with pytest.raises(ValueError, match="mae-tiny"):  # the error lists the valid names
        hf_mae.create_model("mae-nonexistent")
    with pytest.raises(ValueError, match="task"):
        hf_mae.create_model("mae-tiny", task="segmentation")
    with pytest.raises(ValueError, match="not_a_field"):
        hf_mae.create_model("mae-tiny", not_a_field=3)


def test_paper_presets_have_the_paper_sizes():
    sizes = {
        "mae-vit-base-patch16": (768, 12, 12, 16),
        "mae-vit-large-patch16": (1024, 24, 16, 16),
        "mae-vit-huge-patch14": (1280, 32, 16, 14),
    }
    for preset, (width, depth, heads, patch) in sizes.items():
        config = create_config(preset)
        assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.patch_size) == (
            width, depth, heads, patch)
        assert (config.decoder_hidden_size, config.decoder_num_hidden_layers, config.mask_ratio) == (512, 8, 0.75)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_auto_round_trip(preset, tmp_path):
    model = build(preset)
    pixel_values, noise = inputs_for(model.config)
    expected = model(pixel_values, noise=noise)
    model.save_pretrained(tmp_path)
    hf_mae.create_processor(preset).save_pretrained(tmp_path)

    assert type(AutoConfig.from_pretrained(tmp_path)) is type(model.config)
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    reloaded = loaded(pixel_values, noise=noise)
    assert torch.equal(reloaded.logits, expected.logits) and torch.equal(reloaded.loss, expected.loss)

    encoder = AutoModel.from_pretrained(tmp_path).eval()  # the encoder alone, from a pre-training checkpoint
    assert torch.equal(
        encoder(pixel_values, noise=noise).last_hidden_state,
        model.base_model(pixel_values, noise=noise).last_hidden_state,
    )
    classifier, info = AutoModelForImageClassification.from_pretrained(tmp_path, num_labels=3, output_loading_info=True)
    assert all(key.startswith(fine_tuning_keys(preset)) for key in info["missing_keys"]), info["missing_keys"]
    assert classifier(pixel_values).logits.shape == (BATCH, 3)

    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(processor) is type(hf_mae.create_processor(preset))


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_remote_code_round_trip(preset, tmp_path):
    """Saved with its code, the model loads with trust_remote_code in a process where hf_mae cannot be imported."""
    from remote_check import load_in_fresh_process

    from hf_mae.hub import save_pretrained_with_code

    model = build(preset)
    pixel_values, noise = inputs_for(model.config)
    expected = model(pixel_values, noise=noise)
    save_pretrained_with_code(model, tmp_path, processor=hf_mae.create_processor(preset))
    outputs = load_in_fresh_process(
        tmp_path, "AutoModelForPreTraining", {"pixel_values": pixel_values, "noise": noise}, {}
    )
    torch.testing.assert_close(outputs["logits"], expected.logits, rtol=0, atol=1e-6)
    torch.testing.assert_close(outputs["loss"], expected.loss, rtol=0, atol=1e-6)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_eager_and_sdpa_agree(preset):
    torch.manual_seed(0)
    eager = build(preset, attn_implementation="eager")
    sdpa = build(preset, attn_implementation="sdpa")
    sdpa.load_state_dict(eager.state_dict())
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    pixel_values, noise = inputs_for(eager.config)
    a, b = eager(pixel_values, noise=noise), sdpa(pixel_values, noise=noise)
    assert (a.logits - b.logits).abs().max().item() < 1e-5
    assert abs(a.loss.item() - b.loss.item()) < 1e-5


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_fixed_noise_fixes_the_mask_and_the_output(preset):
    model = build(preset)
    pixel_values, noise = inputs_for(model.config)
    a, b = model(pixel_values, noise=noise), model(pixel_values, noise=noise)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.mask, b.mask)
    # the kept patches (or mask cells) are exactly the ones with the smallest noise
    kept = int(noise.shape[1] * (1 - model.config.mask_ratio))
    assert torch.equal(a.mask, expected_mask(preset, model.config, noise))
    per_unit = model.config.mask_unit**2 if mask_tokens(preset) else 1
    assert a.mask.sum(1).tolist() == [(noise.shape[1] - kept) * per_unit] * BATCH
    # without noise, masks differ between calls but keep the same count
    c = model(pixel_values)
    assert c.mask.sum(1).tolist() == a.mask.sum(1).tolist()


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_every_trainable_parameter_gets_a_gradient(preset):
    for task in ("pretraining", "image-classification"):
        model = build(preset, task, num_labels=3).train()
        pixel_values, _ = inputs_for(model.config)
        if task == "pretraining":
            loss = model(pixel_values).loss
        else:
            loss = model(pixel_values, labels=torch.tensor([0, 2, 1, 2])).loss
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
        assert not missing, f"{task}: no gradient for {missing}"
        assert not any(p.requires_grad for n, p in model.named_buffers())  # sin-cos tables are buffers, not params


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_mask_ratio_zero_keeps_every_token_in_order(preset):
    model = build(preset, "base")
    pixel_values, _ = inputs_for(model.config)
    out = model(pixel_values, mask_ratio=0.0)
    num_patches = out.mask.shape[1]
    assert out.last_hidden_state.shape[1] == num_patches + 1
    assert out.mask.sum() == 0
    if mask_tokens(preset) or key_mask(preset):  # the encoder never reorders tokens: no permutation to undo
        assert out.ids_restore is None
    else:
        assert torch.equal(out.ids_restore, torch.arange(num_patches).expand(BATCH, -1))
    # identical to passing the identity order as noise (ViTMAE's way to switch shuffling off)
    rows, cols = noise_grid(model.config)
    identity = torch.arange(rows * cols, dtype=torch.float).expand(BATCH, -1)
    torch.testing.assert_close(out.last_hidden_state, model(pixel_values, noise=identity, mask_ratio=0.0).last_hidden_state)
    # each token's feature does not depend on the batch it is in
    torch.testing.assert_close(model(pixel_values[:1], mask_ratio=0.0).last_hidden_state, out.last_hidden_state[:1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_bad_inputs_raise_clear_errors(preset):
    model = build(preset)
    pixel_values, noise = inputs_for(model.config)
    channels = model.config.num_channels
    with pytest.raises(ValueError, match="num_channels"):
        model(torch.randn(BATCH, channels + 1, *pixel_values.shape[-2:]))
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(BATCH, channels, pixel_values.shape[-2] + 1, pixel_values.shape[-1]), interpolate_pos_encoding=True)
    with pytest.raises(ValueError, match="image_size"):  # another size without interpolation
        patch = to_2tuple(model.config.patch_size)
        model(torch.randn(BATCH, channels, pixel_values.shape[-2] + patch[0], pixel_values.shape[-1]))
    for ratio in (1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="mask_ratio"):
            model(pixel_values, mask_ratio=ratio)
    with pytest.raises(TypeError, match="mask_ratio"):
        model(pixel_values, mask_ratio="0.5")
    with pytest.raises(TypeError, match="pixel_values.*dtype"):
        model((pixel_values * 100).to(torch.uint8))
    with pytest.raises(TypeError, match="pixel_values"):
        model(pixel_values.numpy())
    with pytest.raises(ValueError, match="empty batch"):
        model(pixel_values[:0])
    with pytest.raises(ValueError, match="noise"):
        model(pixel_values, noise=noise[:, :-1])
    with pytest.raises(ValueError, match="mask_ratio"):
        hf_mae.create_model(preset, mask_ratio=1.0)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_hidden_states_attentions_and_tuple_outputs(preset):
    model = build(preset, attn_implementation="sdpa")
    pixel_values, noise = inputs_for(model.config)
    out = model.base_model(pixel_values, noise=noise, output_hidden_states=True, output_attentions=True)
    tokens = out.last_hidden_state.shape[1]
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    assert len(out.attentions) == model.config.num_hidden_layers
    assert out.attentions[0].shape == (BATCH, model.config.num_attention_heads, tokens, tokens)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(BATCH, model.config.num_attention_heads, tokens))
    as_tuple = model(pixel_values, noise=noise, return_dict=False)
    torch.testing.assert_close(as_tuple[1], model(pixel_values, noise=noise).logits)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_gradient_checkpointing_gives_the_same_gradients(preset):
    model = build(preset).train()
    pixel_values, noise = inputs_for(model.config)
    torch.manual_seed(0)  # the same dropout draws in both runs (CropMAE's decoder has dropout)
    model(pixel_values, noise=noise).loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.activation_checkpointing_enable()
    torch.manual_seed(0)
    model(pixel_values, noise=noise).loss.backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_other_resolutions_with_interpolated_positions(preset):
    model = build(preset)
    pixel_values, _ = inputs_for(model.config)
    patch = to_2tuple(model.config.patch_size)
    larger = torch.randn(BATCH, model.config.num_channels, pixel_values.shape[-2] + 2 * patch[0], pixel_values.shape[-1])
    if key_mask(preset):  # MP3's position classifier has the pre-training grid's classes only
        with pytest.raises(ValueError, match="positions"):
            model(larger, interpolate_pos_encoding=True)
    else:
        out = model(larger, interpolate_pos_encoding=True)
        assert out.logits.shape == expected_logits_shape(preset, model.config, *larger.shape[-2:])
        assert torch.isfinite(out.loss)
    # at the native size, interpolation is the identity
    _, noise = inputs_for(model.config)
    torch.testing.assert_close(
        model(pixel_values, noise=noise, interpolate_pos_encoding=True).logits, model(pixel_values, noise=noise).logits
    )


def test_create_model_builds_every_task_and_registers_auto_classes():
    for method in hf_mae.METHODS.values():
        preset = next(iter(method.presets))
        for task, model_class in method.model_classes.items():
            config = create_config(preset)
            assert AUTO_CLASSES[task].from_config(copy.deepcopy(config)).__class__ is model_class, (preset, task)
    with pytest.raises(ValueError, match="video-classification"):
        hf_mae.create_model("mae-tiny", task="video-classification")
    assert hf_mae.create_processor("mae-tiny").size == {"height": 32, "width": 32}
