"""The model test-suite every registered *audio* preset runs through (image: tests/test_models.py, video:
tests/test_video_models.py).

An audio method joins by adding a ``Method(modality="audio")`` row to ``hf_mae.registry.METHODS``. Inputs are
filterbanks ``input_values`` (batch, max_length, num_mel_bins); ``noise`` is per 16x16 patch of the (time, frequency)
grid. Paper-sized presets are shrunk to one encoder block, two decoder blocks (one window, one shifted window for
the Swin decoder) and 64 frames (a 4 x 8 grid) here.
"""

import copy

import pytest
import torch
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForAudioClassification, AutoModelForPreTraining

import hf_mae
from hf_mae.registry import PRESETS, create_config

PRESET_NAMES = [name for name in hf_mae.list_models() if PRESETS[name].modality == "audio"]
BATCH = 3


def suite_config(preset, **overrides):
    if not preset.endswith("-tiny"):
        overrides = dict(num_hidden_layers=1, decoder_num_hidden_layers=2, max_length=64, **overrides)
    return create_config(preset, **overrides)


def build(preset, task="pretraining", attn_implementation=None, **overrides):
    config = suite_config(preset, **overrides)
    model_class = PRESETS[preset].model_classes[task]
    if attn_implementation is None:
        return model_class(config).eval()
    return model_class._from_config(copy.deepcopy(config), attn_implementation=attn_implementation).eval()


def inputs_for(config, batch=BATCH, seed=0):
    """Filterbanks (batch, max_length, num_mel_bins) and a fixed noise (batch, num_patches)."""
    generator = torch.Generator().manual_seed(seed)
    values = torch.randn(batch, config.max_length, config.num_mel_bins, generator=generator)
    rows, cols = config.grid_size
    return values, torch.rand(batch, rows * cols, generator=generator)


def expected_mask(config, noise):
    """MAE's mask: the int(N * (1 - r)) smallest noise values stay visible."""
    kept = int(noise.shape[1] * (1 - config.mask_ratio))
    return 1.0 - torch.zeros_like(noise).scatter_(1, noise.argsort(1)[:, :kept], 1.0)


def test_audio_presets_are_registered():
    assert {"audiomae-tiny", "audiomae-vit-base-patch16", "birdmae-tiny", "birdmae-vit-base-patch16"} <= set(PRESET_NAMES)
    audio = create_config("audiomae-vit-base-patch16")
    assert (audio.max_length, audio.num_mel_bins, audio.grid_size, audio.mask_ratio, audio.sampling_rate) == (
        1024, 128, (64, 8), 0.8, 16000)
    assert (audio.hidden_size, audio.num_hidden_layers, audio.decoder_hidden_size, audio.decoder_num_hidden_layers,
            audio.decoder_mode, tuple(audio.decoder_window_size), tuple(audio.decoder_shift_size)) == (
        768, 12, 512, 16, "swin", (4, 4), (2, 0))  # fmt: skip
    bird = create_config("birdmae-vit-base-patch16")
    assert (bird.max_length, bird.grid_size, bird.sampling_rate, bird.mean, bird.std, bird.mask_ratio) == (
        512, (32, 8), 32000, -7.2, 4.43, 0.8)
    assert (bird.decoder_mode, bird.decoder_hidden_size, bird.decoder_num_hidden_layers, bird.decoder_num_attention_heads) == (
        "global", 512, 8, 16)
    processor = hf_mae.create_processor("birdmae-tiny")
    assert (processor.sampling_rate, processor.max_length, processor.num_mel_bins, processor.mean) == (32000, 128, 128, -7.2)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_auto_round_trip(preset, tmp_path):
    model = build(preset)
    values, noise = inputs_for(model.config)
    expected = model(values, noise=noise)
    model.save_pretrained(tmp_path)
    hf_mae.create_processor(preset).save_pretrained(tmp_path)

    assert type(AutoConfig.from_pretrained(tmp_path)) is type(model.config)
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    reloaded = loaded(values, noise=noise)
    assert torch.equal(reloaded.logits, expected.logits) and torch.equal(reloaded.loss, expected.loss)
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder) is type(model.base_model) is PRESETS[preset].model_classes["base"]
    assert torch.equal(encoder(values, noise=noise).last_hidden_state,
                       model.base_model(values, noise=noise).last_hidden_state)  # fmt: skip
    classifier, info = AutoModelForAudioClassification.from_pretrained(tmp_path, num_labels=3, output_loading_info=True)
    assert type(classifier) is PRESETS[preset].model_classes["audio-classification"]
    assert all(key.startswith(("classifier", "fc_norm")) for key in info["missing_keys"]), info["missing_keys"]
    assert classifier(input_values=values).logits.shape == (BATCH, 3)
    assert type(AutoFeatureExtractor.from_pretrained(tmp_path)) is type(hf_mae.create_processor(preset))


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_remote_code_round_trip(preset, tmp_path):
    """Saved with its code, the model loads with trust_remote_code in a process where hf_mae cannot be imported."""
    from remote_check import load_in_fresh_process

    from hf_mae.hub import save_pretrained_with_code

    model = build(preset)
    values, noise = inputs_for(model.config)
    expected = model(values, noise=noise)
    save_pretrained_with_code(model, tmp_path, processor=hf_mae.create_processor(preset))
    outputs = load_in_fresh_process(tmp_path, "AutoModelForPreTraining", {"input_values": values, "noise": noise}, {})
    torch.testing.assert_close(outputs["logits"], expected.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(outputs["loss"], expected.loss, rtol=0, atol=1e-5)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_eager_and_sdpa_agree(preset):
    torch.manual_seed(0)
    eager = build(preset, attn_implementation="eager")
    sdpa = build(preset, attn_implementation="sdpa")
    sdpa.load_state_dict(eager.state_dict())
    values, noise = inputs_for(eager.config)
    a, b = eager(values, noise=noise), sdpa(values, noise=noise)
    difference = (a.logits - b.logits).abs().max().item()
    print(f"{preset}: eager vs sdpa max |logits difference| {difference:.2e}")
    assert difference < 1e-5 and abs(a.loss.item() - b.loss.item()) < 1e-5


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_fixed_noise_fixes_the_mae_mask(preset):
    model = build(preset)
    values, noise = inputs_for(model.config)
    a, b = model(values, noise=noise), model(values, noise=noise)
    mask = expected_mask(model.config, noise)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.mask, mask)
    rows, cols = model.config.grid_size
    assert a.logits.shape == (BATCH, rows * cols, 16 * 16)  # every patch is predicted, the loss reads the hidden ones
    drawn = model(values)  # a random mask hides the same count
    assert drawn.mask.sum(1).tolist() == mask.sum(1).tolist()


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_every_trainable_parameter_gets_a_gradient(preset):
    for task in ("pretraining", "audio-classification"):
        model = build(preset, task, num_labels=3).train()
        values, _ = inputs_for(model.config)
        loss = model(values).loss if task == "pretraining" else model(values, labels=torch.tensor([0, 2, 1])).loss
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
        assert not missing, f"{task}: no gradient for {missing}"
        assert not any(p.requires_grad for _, p in model.named_buffers())


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_mask_ratio_zero_keeps_every_token_in_order(preset):
    model = build(preset, "base")
    values, _ = inputs_for(model.config)
    num_patches = model.config.grid_size[0] * model.config.grid_size[1]
    out = model(values, mask_ratio=0.0)
    assert out.last_hidden_state.shape[1] == 1 + num_patches and out.mask.sum() == 0
    assert torch.equal(out.ids_restore, torch.arange(num_patches).expand(BATCH, -1))
    torch.testing.assert_close(model(values[:1], mask_ratio=0.0).last_hidden_state, out.last_hidden_state[:1],
                               rtol=0, atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_bad_inputs_raise_clear_errors(preset):
    model = build(preset)
    values, noise = inputs_for(model.config)
    frames, bins = values.shape[1:]
    with pytest.raises(ValueError, match="num_mel_bins"):
        model(torch.randn(BATCH, frames, bins // 2))
    with pytest.raises(ValueError, match="max_length"):
        model(torch.randn(BATCH, frames + 16, bins))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        model(torch.randn(BATCH, frames + 8, bins), interpolate_pos_encoding=True)
    with pytest.raises(ValueError, match="3 dimensions"):
        model(values[:, None])
    for ratio in (1.0, -0.1):
        with pytest.raises(ValueError, match="mask_ratio"):
            model(values, mask_ratio=ratio)
    with pytest.raises(TypeError, match="input_values.*dtype"):
        model((values * 100).to(torch.int16))
    with pytest.raises(TypeError, match="input_values must be a torch.Tensor"):
        model(values.tolist())
    with pytest.raises(ValueError, match="empty batch"):
        model(values[:0])
    with pytest.raises(ValueError, match="noise"):
        model(values, noise=noise[:, :-1])
    with pytest.raises(ValueError, match="mask_ratio"):
        hf_mae.create_model(preset, mask_ratio=1.0)
    with pytest.raises(ValueError, match="decoder_mode"):
        create_config(preset, decoder_mode="local")
    with pytest.raises(ValueError, match="num_channels"):
        create_config(preset, num_channels=3)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_other_lengths_run_with_interpolated_positions(preset):
    """Clips of another length (a multiple of the patch) run with interpolated positions, in both decoders."""
    model = build(preset)
    values, _ = inputs_for(model.config)
    longer = torch.cat([values, values], dim=1)
    out = model(longer, interpolate_pos_encoding=True)
    rows, cols = model.config.grid_size
    assert out.logits.shape == (BATCH, 2 * rows * cols, 256) and torch.isfinite(out.loss)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_hidden_states_attentions_and_tuple_outputs(preset):
    model = build(preset, attn_implementation="sdpa")
    values, noise = inputs_for(model.config)
    out = model.base_model(values, noise=noise, output_hidden_states=True, output_attentions=True)
    tokens = out.last_hidden_state.shape[1]
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    assert out.attentions[0].shape == (BATCH, model.config.num_attention_heads, tokens, tokens)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(BATCH, model.config.num_attention_heads, tokens))
    torch.testing.assert_close(model(values, noise=noise, return_dict=False)[1], model(values, noise=noise).logits)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_gradient_checkpointing_gives_the_same_gradients(preset):
    model = build(preset).train()
    values, noise = inputs_for(model.config)
    model(values, noise=noise).loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.activation_checkpointing_enable()
    model(values, noise=noise).loss.backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-5, atol=1e-6, msg=name)
