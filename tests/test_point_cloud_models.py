"""The model test-suite every registered *point-cloud* preset runs through (image: tests/test_models.py, audio:
tests/test_audio_models.py).

A point-cloud method joins by adding a ``Method(modality="point-cloud")`` row to ``hf_mae.registry.METHODS``. The
suite asserts only the common API (see the module docstring of hf_mae/modeling/pointmae.py and I2P-MAE's):
``point_values`` (batch, N, 3); ``noise`` (batch, config.num_groups) fixes the mask, which hides
``int(mask_ratio * num_groups)`` groups; ``last_hidden_state`` (batch, visible groups, hidden); ``mask`` (batch, G);
``centers``; pre-training ``loss`` / ``logits``; classification ``logits`` (batch, num_labels). Paper-sized presets
are shrunk here to one block per stack, and a teacher named by ``teacher_name_or_path`` becomes a tiny random ViT
(see ``suite_config``).
"""

import copy

import pytest
import torch
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForPreTraining

import hf_mae
from hf_mae.auto import AutoModelForPointCloudClassification
from hf_mae.registry import PRESETS, create_config

PRESET_NAMES = [name for name in hf_mae.list_models() if PRESETS[name].modality == "point-cloud"]
BATCH = 3


def suite_config(preset, **overrides):
    """The preset's config; a paper-sized one keeps its widths, points and groups but gets one block per stack
    (``num_hidden_layers``, ``decoder_num_hidden_layers``, or one per scale in list fields ``depths`` /
    ``decoder_depths``), whichever of those fields its config has."""
    if not preset.endswith("-tiny"):
        config = create_config(preset)
        shrink = {name: 1 for name in ("num_hidden_layers", "decoder_num_hidden_layers") if hasattr(config, name)}
        shrink.update({name: [1] * len(getattr(config, name)) for name in ("depths", "decoder_depths") if hasattr(config, name)})
        if getattr(config, "teacher_name_or_path", None):  # I2P-MAE: a tiny random ViT teacher, nothing downloaded
            shrink.update(teacher_name_or_path=None, teacher_feature_dim=32, teacher_config=dict(
                model_type="vit", image_size=224, patch_size=16, hidden_size=32, num_hidden_layers=1,
                num_attention_heads=2, intermediate_size=64))  # fmt: skip
        overrides = {**shrink, **overrides}
    return create_config(preset, **overrides)


def build(preset, task="pretraining", attn_implementation=None, **overrides):
    config = suite_config(preset, **overrides)
    model_class = PRESETS[preset].model_classes[task]
    if attn_implementation is None:
        return model_class(config).eval()
    return model_class._from_config(copy.deepcopy(config), attn_implementation=attn_implementation).eval()


def inputs_for(config, batch=BATCH, seed=0):
    """Clouds (batch, num_points, 3) on the unit sphere's scale and a fixed noise (batch, num_groups)."""
    generator = torch.Generator().manual_seed(seed)
    points = torch.randn(batch, config.num_points, 3, generator=generator) * 0.5
    return points, torch.rand(batch, config.num_groups, generator=generator)


def test_point_cloud_presets_are_registered():
    assert {"pointmae-tiny", "pointmae-shapenet"} <= set(PRESET_NAMES)
    for preset in PRESET_NAMES:
        config = create_config(preset)
        assert isinstance(config.num_groups, int) and 0 <= config.mask_ratio < 1 and config.num_points >= config.num_groups
        assert PRESETS[preset].model_classes["base"].main_input_name == "point_values"
        assert hf_mae.create_processor(preset).num_points == config.num_points


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_auto_round_trip(preset, tmp_path):
    model = build(preset)
    points, noise = inputs_for(model.config)
    expected = model(points, noise=noise)
    model.save_pretrained(tmp_path)
    hf_mae.create_processor(preset).save_pretrained(tmp_path)

    assert type(AutoConfig.from_pretrained(tmp_path)) is type(model.config)
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    reloaded = loaded(points, noise=noise)
    assert torch.equal(reloaded.logits, expected.logits) and torch.equal(reloaded.loss, expected.loss)
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder) is type(model.base_model) is PRESETS[preset].model_classes["base"]
    assert torch.equal(encoder(points, noise=noise).last_hidden_state,
                       model.base_model(points, noise=noise).last_hidden_state)  # fmt: skip
    classifier, info = AutoModelForPointCloudClassification.from_pretrained(tmp_path, num_labels=3, output_loading_info=True)
    assert type(classifier) is PRESETS[preset].model_classes["point-cloud-classification"]
    # every encoder weight comes from the checkpoint; only the new head's are missing
    prefix = model.base_model_prefix
    encoder_keys = {f"{prefix}.{key}" for key in model.base_model.state_dict()}
    assert info["missing_keys"] and not set(info["missing_keys"]) & encoder_keys, info["missing_keys"]
    for key, value in model.base_model.state_dict().items():
        assert torch.equal(classifier.state_dict()[f"{prefix}.{key}"], value), key
    logits = classifier.eval()(point_values=points).logits  # eval: the new head's BatchNorm statistics are used
    assert logits.shape == (BATCH, 3) and torch.isfinite(logits).all()
    processor = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert type(processor) is type(hf_mae.create_processor(preset)) and processor.num_points == model.config.num_points


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_remote_code_round_trip(preset, tmp_path):
    """Saved with its code, the model loads with trust_remote_code in a process where hf_mae cannot be imported."""
    from remote_check import load_in_fresh_process

    from hf_mae.hub import save_pretrained_with_code

    model = build(preset)
    points, noise = inputs_for(model.config)
    expected = model(points, noise=noise)
    save_pretrained_with_code(model, tmp_path, processor=hf_mae.create_processor(preset))
    outputs = load_in_fresh_process(tmp_path, "AutoModelForPreTraining", {"point_values": points, "noise": noise}, {})
    torch.testing.assert_close(outputs["logits"], expected.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(outputs["loss"], expected.loss, rtol=0, atol=1e-5)
    assert outputs.module.startswith("transformers_modules.")


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_eager_and_sdpa_agree(preset):
    torch.manual_seed(0)
    eager = build(preset, attn_implementation="eager")
    sdpa = build(preset, attn_implementation="sdpa")
    sdpa.load_state_dict(eager.state_dict())
    points, noise = inputs_for(eager.config)
    a, b = eager(points, noise=noise), sdpa(points, noise=noise)
    difference = (a.logits - b.logits).abs().max().item()
    print(f"{preset}: eager vs sdpa max |logits difference| {difference:.2e}")
    assert difference < 1e-5 and abs(a.loss.item() - b.loss.item()) < 1e-5


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_fixed_noise_fixes_the_mask(preset):
    model = build(preset)
    points, noise = inputs_for(model.config)
    a, b = model(points, noise=noise), model(points, noise=noise)
    groups = model.config.num_groups
    masked = int(model.config.mask_ratio * groups)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.mask, b.mask) and torch.equal(a.loss, b.loss)
    assert a.mask.shape == (BATCH, groups) and a.mask.sum(1).tolist() == [masked] * BATCH
    assert set(a.mask.unique().tolist()) <= {0.0, 1.0}
    other = model(points, noise=torch.rand(BATCH, groups, generator=torch.Generator().manual_seed(7)))
    assert not torch.equal(other.mask, a.mask)  # the noise, not the points, picks the hidden groups
    encoded = model.base_model(points, noise=noise)
    assert encoded.last_hidden_state.shape[:2] == (BATCH, groups - masked)  # the encoder sees the visible ones
    assert encoded.mask.sum(1).tolist() == [masked] * BATCH and encoded.centers.shape == (BATCH, groups, 3)
    assert model(points).mask.sum(1).tolist() == [masked] * BATCH  # a drawn mask hides the same count


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_every_trainable_parameter_gets_a_gradient(preset):
    for task in ("pretraining", "point-cloud-classification"):
        torch.manual_seed(0)
        model = build(preset, task, num_labels=3).train()
        points, _ = inputs_for(model.config)
        loss = model(points).loss if task == "pretraining" else model(points, labels=torch.tensor([0, 2, 1])).loss
        assert torch.isfinite(loss)
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
        assert not missing, f"{task}: no gradient for {missing}"
        assert not any(p.requires_grad for _, p in model.named_buffers())


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_mask_ratio_zero_keeps_every_group_in_order(preset):
    model = build(preset, "base")
    points, noise = inputs_for(model.config)
    groups = model.config.num_groups
    out = model(points, mask_ratio=0.0)
    assert out.last_hidden_state.shape[:2] == (BATCH, groups) and out.mask.sum() == 0
    # in group order whatever the noise, and each cloud encoded on its own
    assert torch.equal(model(points, noise=noise, mask_ratio=0.0).last_hidden_state, out.last_hidden_state)
    torch.testing.assert_close(model(points[:1], mask_ratio=0.0).last_hidden_state, out.last_hidden_state[:1],
                               rtol=0, atol=1e-5)  # fmt: skip


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_hidden_states_attentions_and_tuple_outputs(preset):
    model = build(preset, attn_implementation="sdpa")
    points, noise = inputs_for(model.config)
    out = model.base_model(points, noise=noise, output_hidden_states=True, output_attentions=True)
    tokens = out.last_hidden_state.shape[1]
    assert len(out.hidden_states) >= 2 and len(out.attentions) >= 1
    last = out.attentions[-1]
    assert last.shape[0] == BATCH and last.shape[-2:] == (tokens, tokens)
    torch.testing.assert_close(last.sum(-1), torch.ones(last.shape[:-1]))
    assert model.base_model(points, noise=noise).hidden_states is None
    torch.testing.assert_close(model(points, noise=noise, return_dict=False)[1], model(points, noise=noise).logits)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_gradient_checkpointing_gives_the_same_gradients(preset):
    model = build(preset).train()
    points, noise = inputs_for(model.config)
    torch.manual_seed(0)  # the same drop-path draws in both runs
    model(points, noise=noise).loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.activation_checkpointing_enable()
    torch.manual_seed(0)
    model(points, noise=noise).loss.backward()
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, expected[name], rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_bad_inputs_raise_clear_errors(preset):
    model = build(preset)
    points, noise = inputs_for(model.config)
    with pytest.raises(ValueError, match="point_values.*last dimension"):
        model(torch.randn(BATCH, points.shape[1], 4))
    with pytest.raises(ValueError, match="point_values.*3 dimensions"):
        model(points[0])
    with pytest.raises(TypeError, match="point_values.*dtype"):
        model((points * 100).to(torch.int32))
    with pytest.raises(TypeError, match="point_values must be a torch.Tensor"):
        model(points.tolist())
    with pytest.raises(ValueError, match="empty batch"):
        model(points[:0])
    with pytest.raises(ValueError, match="noise"):
        model(points, noise=noise[:, :-1])
    broken = points.clone()
    broken[1, 5, 2] = float("nan")
    with pytest.raises(ValueError, match="point_values.*NaN"):
        model(broken)
    for ratio in (1.0, -0.1):
        with pytest.raises(ValueError, match="mask_ratio"):
            model(points, mask_ratio=ratio)
    with pytest.raises(ValueError, match="mask_ratio"):
        hf_mae.create_model(preset, mask_ratio=1.0)
    config = create_config(preset)
    with pytest.raises(ValueError, match="group_size"):
        create_config(preset, group_size=config.num_points + 1)
    with pytest.raises(ValueError, match="num_groups"):
        create_config(preset, num_groups=config.num_points + 1)
