"""The model test-suite every registered *video* preset runs through (image presets: tests/test_models.py).

A video method joins by adding a ``Method(modality="video")`` row to ``hf_mae.registry.METHODS``. Inputs are clips
(batch, frames, channels, H, W); ``noise`` is drawn over the spatial grid (tube masking: one spatial mask repeated
in every time slice); pre-training logits cover the hidden tokens only. Paper-sized presets are shrunk to one block
and a 2 x 4 x 4 token grid here.
"""

import copy

import pytest
import torch
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForPreTraining, AutoModelForVideoClassification

import hf_mae
from hf_mae.modeling.embeddings import to_2tuple
from hf_mae.registry import PRESETS, create_config

PRESET_NAMES = [name for name in hf_mae.list_models() if PRESETS[name].modality == "video"]
BATCH = 3


def suite_config(preset, **overrides):
    config = create_config(preset)
    if not preset.endswith("-tiny"):
        patch = to_2tuple(config.patch_size)
        overrides = dict(num_hidden_layers=1, decoder_num_hidden_layers=1, image_size=(4 * patch[0], 4 * patch[1]),
                         num_frames=2 * config.tubelet_size, **overrides)  # fmt: skip
    return create_config(preset, **overrides) if overrides else config


def build(preset, task="pretraining", attn_implementation=None, **overrides):
    config = suite_config(preset, **overrides)
    model_class = PRESETS[preset].model_classes[task]
    if attn_implementation is None:
        return model_class(config).eval()
    return model_class._from_config(copy.deepcopy(config), attn_implementation=attn_implementation).eval()


def inputs_for(config, batch=BATCH, seed=0):
    """Clips (batch, frames, C, H, W) and a fixed noise (batch, rows * cols) over the spatial grid."""
    generator = torch.Generator().manual_seed(seed)
    height, width = to_2tuple(config.image_size)
    clips = torch.randn(batch, config.num_frames, config.num_channels, height, width, generator=generator)
    _, rows, cols = config.grid_size
    return clips, torch.rand(batch, rows * cols, generator=generator)


def expected_mask(config, noise):
    """Tube masking: the int(rows * cols * (1 - r)) smallest noise values stay visible, in every time slice."""
    kept = int(noise.shape[1] * (1 - config.mask_ratio))
    spatial = 1.0 - torch.zeros_like(noise).scatter_(1, noise.argsort(1)[:, :kept], 1.0)
    return spatial.repeat(1, config.grid_size[0])


def decoded_count(config, hidden: int) -> int:
    """Tokens the decoder predicts: the encoder's hidden ones (VideoMAE), or the running cell's share of all of them
    (VideoMAE V2: int(4 * r_d) of every 2x2 cell are not decoded)."""
    ratio = getattr(config, "decoder_mask_ratio", 0.0)
    return hidden if ratio == 0.0 else config.num_tokens * (4 - int(4 * ratio)) // 4


def test_video_presets_are_registered():
    assert {"videomae-tiny", "videomae-vit-base-patch16"} <= set(PRESET_NAMES)
    config = create_config("videomae-vit-base-patch16")
    assert (config.num_frames, config.tubelet_size, config.image_size, config.mask_ratio) == (16, 2, 224, 0.9)
    assert (config.hidden_size, config.num_hidden_layers, config.decoder_hidden_size, config.decoder_num_hidden_layers) == (
        768, 12, 384, 4)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_auto_round_trip(preset, tmp_path):
    model = build(preset)
    clips, noise = inputs_for(model.config)
    expected = model(clips, noise=noise)
    model.save_pretrained(tmp_path)
    hf_mae.create_processor(preset).save_pretrained(tmp_path)

    assert type(AutoConfig.from_pretrained(tmp_path)) is type(model.config)
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    reloaded = loaded(clips, noise=noise)
    assert torch.equal(reloaded.logits, expected.logits) and torch.equal(reloaded.loss, expected.loss)
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert torch.equal(encoder(clips, noise=noise).last_hidden_state,
                       model.base_model(clips, noise=noise).last_hidden_state)  # fmt: skip
    classifier, info = AutoModelForVideoClassification.from_pretrained(tmp_path, num_labels=3, output_loading_info=True)
    assert all(key.startswith(("classifier", "fc_norm")) for key in info["missing_keys"]), info["missing_keys"]
    assert classifier(clips).logits.shape == (BATCH, 3)
    assert type(AutoImageProcessor.from_pretrained(tmp_path)) is type(hf_mae.create_processor(preset))


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_remote_code_round_trip(preset, tmp_path):
    """Saved with its code, the model loads with trust_remote_code in a process where hf_mae cannot be imported."""
    from remote_check import load_in_fresh_process

    from hf_mae.hub import save_pretrained_with_code

    model = build(preset)
    clips, noise = inputs_for(model.config)
    expected = model(clips, noise=noise)
    save_pretrained_with_code(model, tmp_path, processor=hf_mae.create_processor(preset))
    outputs = load_in_fresh_process(tmp_path, "AutoModelForPreTraining", {"pixel_values": clips, "noise": noise}, {})
    # the same code and weights; 768-to-1408-wide layers summed by another process's GEMM threads differ by ~2e-6
    torch.testing.assert_close(outputs["logits"], expected.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(outputs["loss"], expected.loss, rtol=0, atol=1e-5)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_eager_and_sdpa_agree(preset):
    torch.manual_seed(0)
    eager = build(preset, attn_implementation="eager")
    sdpa = build(preset, attn_implementation="sdpa")
    sdpa.load_state_dict(eager.state_dict())
    clips, noise = inputs_for(eager.config)
    a, b = eager(clips, noise=noise), sdpa(clips, noise=noise)
    assert (a.logits - b.logits).abs().max().item() < 1e-5 and abs(a.loss.item() - b.loss.item()) < 1e-5


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_fixed_noise_fixes_the_tube_mask(preset):
    model = build(preset)
    clips, noise = inputs_for(model.config)
    a, b = model(clips, noise=noise), model(clips, noise=noise)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.mask, expected_mask(model.config, noise))
    hidden = int(expected_mask(model.config, noise)[0].sum())
    assert a.logits.shape[:2] == (BATCH, decoded_count(model.config, hidden))
    drawn = model(clips)  # a random tube mask: the same count, the same spatial mask in every slice
    assert drawn.mask.sum(1).tolist() == [hidden] * BATCH
    slices = drawn.mask.reshape(BATCH, model.config.grid_size[0], -1)
    assert torch.equal(slices, slices[:, :1].expand_as(slices))
    # transformers' argument: the same mask as a bool tensor gives the same output (V2: with the same decoder mask)
    fixed = {"decoder_mask": a.decoder_mask.bool()} if getattr(a, "decoder_mask", None) is not None else {}
    torch.testing.assert_close(model(clips, bool_masked_pos=a.mask.bool(), **fixed).logits, a.logits, rtol=0, atol=0)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_every_trainable_parameter_gets_a_gradient(preset):
    for task in ("pretraining", "video-classification"):
        model = build(preset, task, num_labels=3).train()
        clips, _ = inputs_for(model.config)
        loss = model(clips).loss if task == "pretraining" else model(clips, labels=torch.tensor([0, 2, 1])).loss
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
        assert not missing, f"{task}: no gradient for {missing}"
        assert not any(p.requires_grad for _, p in model.named_buffers())


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_mask_ratio_zero_keeps_every_token_in_order(preset):
    model = build(preset, "base")
    clips, _ = inputs_for(model.config)
    out = model(clips, mask_ratio=0.0)
    assert out.last_hidden_state.shape[1] == model.config.num_tokens and out.mask.sum() == 0
    assert torch.equal(out.ids_restore, torch.arange(model.config.num_tokens).expand(BATCH, -1))
    torch.testing.assert_close(model(clips[:1], mask_ratio=0.0).last_hidden_state, out.last_hidden_state[:1],
                               rtol=0, atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_bad_inputs_raise_clear_errors(preset):
    model = build(preset)
    clips, noise = inputs_for(model.config)
    frames, channels, height, width = clips.shape[1:]
    with pytest.raises(ValueError, match="num_channels"):
        model(torch.randn(BATCH, frames, channels + 1, height, width))
    with pytest.raises(ValueError, match="num_frames"):
        model(torch.randn(BATCH, frames + model.config.tubelet_size, channels, height, width))
    with pytest.raises(ValueError, match="image_size"):
        model(torch.randn(BATCH, frames, channels, height * 2, width))
    with pytest.raises(ValueError, match="5 dimensions"):
        model(clips[:, 0])
    for ratio in (1.0, -0.1):
        with pytest.raises(ValueError, match="mask_ratio"):
            model(clips, mask_ratio=ratio)
    with pytest.raises(TypeError, match="pixel_values.*dtype"):
        model((clips * 100).to(torch.uint8))
    with pytest.raises(ValueError, match="empty batch"):
        model(clips[:0])
    with pytest.raises(ValueError, match="noise"):
        model(clips, noise=noise[:, :-1])
    with pytest.raises(ValueError, match="mask_ratio"):
        hf_mae.create_model(preset, mask_ratio=1.0)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_hidden_states_attentions_and_tuple_outputs(preset):
    model = build(preset, attn_implementation="sdpa")
    clips, noise = inputs_for(model.config)
    out = model.base_model(clips, noise=noise, output_hidden_states=True, output_attentions=True)
    tokens = out.last_hidden_state.shape[1]
    assert len(out.hidden_states) == model.config.num_hidden_layers + 1
    assert out.attentions[0].shape == (BATCH, model.config.num_attention_heads, tokens, tokens)
    torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(BATCH, model.config.num_attention_heads, tokens))
    torch.testing.assert_close(model(clips, noise=noise, return_dict=False)[1], model(clips, noise=noise).logits)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_gradient_checkpointing_gives_the_same_gradients(preset):
    model = build(preset).train()
    clips, noise = inputs_for(model.config)
    model(clips, noise=noise).loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.activation_checkpointing_enable()
    model(clips, noise=noise).loss.backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-5, atol=1e-6, msg=name)
