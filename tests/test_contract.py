"""The model contract: every registered preset (every modality, LV-MAE and TGM included) runs through the same
tests, written once against the input adapters of tests/contract.py (as transformers' ModelTesterMixin is written
against one small tester per model).

A new method joins by registering its presets; a method whose masking differs from its modality's adds an adapter
subclass. Paper-sized presets are shrunk by their adapter (widths and patch sizes kept, one or two blocks, a small
grid) so that the suite stays CPU-sized. Each preset is built and saved once per run (the ``exports`` fixture); the
remote-code loads of all selected presets run in one fresh process.
"""

import copy
from unittest import mock

import pytest
import torch
from contract import MODALITY_ADAPTERS, adapter_for, method_of
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, PreTrainedModel

import hf_mae
from hf_mae.registry import AUTO_CLASSES, PRESETS, create_config

ALL_PRESETS = hf_mae.list_models()
TINY_PRESETS = [preset for preset in ALL_PRESETS if preset.endswith("-tiny")]


def presets_where(condition, presets=ALL_PRESETS):
    return [preset for preset in presets if condition(adapter_for(preset))]


def modality(name):
    return lambda adapter: adapter.method.modality == name


def supports_sdpa(adapter):
    return getattr(adapter.model_class(), "_supports_sdpa", False)


def has_attention(adapter):
    # message passing (graphs) and convolutions (SparK, QLAE; their adapters say so) have no attention maps
    return adapter.method.modality != "graph" and getattr(adapter, "has_attention", True)


# -- one build, one save per preset per run ------------------------------------------------------------------------


class Export:
    """A preset's pre-training model, built once with seed 0, saved with its code and processor, with its outputs on
    the adapter's fixed inputs."""

    def __init__(self, preset, folder):
        self.adapter = adapter = adapter_for(preset)
        torch.manual_seed(0)
        model = adapter.build()
        self.config = model.config
        self.fixed = adapter.fixed(model.config)
        self.expected = model(**self.fixed)
        self.base_inputs = adapter.base_inputs(model, self.fixed)
        self.base_output = model.base_model(**self.base_inputs)
        from hf_mae.hub import save_pretrained_with_code

        self.folder = save_pretrained_with_code(model, folder, processor=adapter.processor())
        self.model = model


class Exports:
    def __init__(self, request, tmp_path_factory):
        self.request, self.tmp_path_factory = request, tmp_path_factory
        self.exports, self.remote = {}, {}

    def __call__(self, preset) -> Export:
        if preset not in self.exports:
            self.exports[preset] = Export(preset, self.tmp_path_factory.mktemp(preset))
        return self.exports[preset]

    def remote_outputs(self, preset):
        """The pre-training model of ``preset`` loaded with trust_remote_code in a fresh process without hf_mae and
        run on the fixed inputs. The first call runs every preset this session selected for the remote test in one
        process."""
        if preset not in self.remote:
            from remote_check import run_many

            selected = {item.callspec.params["preset"] for item in self.request.session.items
                        if item.originalname == "test_remote_code_round_trip" and hasattr(item, "callspec")
                        and item.module is self.request.module} | {preset}  # fmt: skip
            selected = [p for p in ALL_PRESETS if p in selected and p not in self.remote]
            jobs = [(self(p).folder, "AutoModelForPreTraining", self(p).fixed, {}) for p in selected]
            self.remote.update(zip(selected, run_many(jobs, timeout=1200)))
        return self.remote[preset]


@pytest.fixture(scope="module")
def exports(request, tmp_path_factory):
    return Exports(request, tmp_path_factory)


# -- the registry ----------------------------------------------------------------------------------------------------


def test_every_preset_has_an_adapter_and_a_tiny_sibling():
    """Every modality is covered (LV-MAE's embeddings and TGM's video-text too) and every method has a -tiny preset."""
    assert {method_of(p).modality for p in ALL_PRESETS} == {
        "image", "video", "video-text", "audio", "point-cloud", "graph", "embeddings", "text", "image-text"}  # fmt: skip
    for preset in ALL_PRESETS:
        adapter = adapter_for(preset)
        assert isinstance(adapter, MODALITY_ADAPTERS[adapter.method.modality]), preset
        assert f"{adapter.method.name}-tiny" in PRESETS, preset
    assert {"lvmae-tiny", "lvmae-languagebind-huge", "tgm-tiny", "tgm-vit-base-patch16"} <= set(ALL_PRESETS)


def test_registry_lists_every_preset_and_rejects_unknown_names():
    assert {"mae-tiny", "mae-vit-base-patch16", "mae-vit-large-patch16", "mae-vit-huge-patch14"} <= set(ALL_PRESETS)
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


def test_video_presets_are_registered():
    assert {"videomae-tiny", "videomae-vit-base-patch16"} <= set(presets_where(modality("video")))
    config = create_config("videomae-vit-base-patch16")
    assert (config.num_frames, config.tubelet_size, config.image_size, config.mask_ratio) == (16, 2, 224, 0.9)
    assert (config.hidden_size, config.num_hidden_layers, config.decoder_hidden_size, config.decoder_num_hidden_layers) == (
        768, 12, 384, 4)


def test_audio_presets_are_registered():
    assert {"audiomae-tiny", "audiomae-vit-base-patch16", "birdmae-tiny", "birdmae-vit-base-patch16"} <= set(
        presets_where(modality("audio")))
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


def test_point_cloud_presets_are_registered():
    point_presets = presets_where(modality("point-cloud"))
    assert {"pointmae-tiny", "pointmae-shapenet"} <= set(point_presets)
    for preset in point_presets:
        config = create_config(preset)
        assert isinstance(config.num_groups, int) and 0 <= config.mask_ratio < 1 and config.num_points >= config.num_groups
        assert PRESETS[preset].model_classes["base"].main_input_name == "point_values"
        assert hf_mae.create_processor(preset).num_points == config.num_points


def test_graph_presets_are_registered():
    assert {"graphmae-tiny", "graphmae-cora", "graphmae-citeseer", "graphmae-pubmed", "graphmae-gin"} <= set(
        presets_where(modality("graph")))
    cora = create_config("graphmae-cora")
    assert (cora.num_features, cora.encoder_type, cora.decoder_type, cora.hidden_size, cora.num_attention_heads,
            cora.num_out_heads, cora.num_hidden_layers, cora.hidden_act, cora.in_drop, cora.attn_drop,
            cora.negative_slope, cora.mask_rate, cora.replace_rate, cora.alpha_l, cora.residual, cora.norm) == (
        1433, "gat", "gat", 512, 4, 1, 2, "prelu", 0.2, 0.1, 0.2, 0.5, 0.05, 3.0, False, None)  # fmt: skip
    citeseer, pubmed = create_config("graphmae-citeseer"), create_config("graphmae-pubmed")
    assert (citeseer.num_features, citeseer.num_attention_heads, citeseer.replace_rate, citeseer.alpha_l) == (3703, 2, 0.1, 1.0)
    assert (pubmed.num_features, pubmed.hidden_size, pubmed.mask_rate, pubmed.replace_rate) == (500, 1024, 0.75, 0.0)
    gin = create_config("graphmae-gin")
    assert (gin.encoder_type, gin.decoder_type, gin.norm, gin.pooling, gin.feature_normalization) == (
        "gin", "gin", "batchnorm", "sum", None)
    assert hf_mae.create_processor("graphmae-cora").feature_normalization == "row"
    assert create_config("graphmae-tiny").num_features == 16
    assert create_config("graphmae-tiny", num_features=1433).num_features == 1433  # what --config-overrides does


def test_create_model_builds_every_task_and_registers_auto_classes():
    for method in hf_mae.METHODS.values():
        preset = next(iter(method.presets))
        for task, model_class in method.model_classes.items():
            config = adapter_for(preset).config()  # shrunk: a paper-sized build is needless here
            assert AUTO_CLASSES[task].from_config(copy.deepcopy(config)).__class__ is model_class, (preset, task)
    with pytest.raises(ValueError, match="video-classification"):
        hf_mae.create_model("mae-tiny", task="video-classification")
    assert hf_mae.create_processor("mae-tiny").size == {"height": 32, "width": 32}


# -- every preset ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_auto_round_trip(preset, exports):
    export = exports(preset)
    adapter, folder, expected = export.adapter, export.folder, export.expected
    assert type(AutoConfig.from_pretrained(folder)) is type(export.config)
    loaded = AutoModelForPreTraining.from_pretrained(folder).eval()
    assert type(loaded) is adapter.model_class()
    reloaded = loaded(**export.fixed)
    assert torch.equal(reloaded.logits, expected.logits) and torch.equal(reloaded.loss, expected.loss)
    if getattr(expected, "mask", None) is not None:
        assert torch.equal(reloaded.mask, expected.mask)

    encoder = AutoModel.from_pretrained(folder).eval()  # the encoder alone, from a pre-training checkpoint
    assert type(encoder) is adapter.model_class("base")
    if adapter.base_model_is_the_base_class:
        assert type(loaded.base_model) is type(encoder)
    assert torch.equal(encoder(**export.base_inputs).last_hidden_state, export.base_output.last_hidden_state)
    if adapter.method.modality == "graph":
        assert encoder(**export.base_inputs).pooler_output.shape == (adapter.batch, export.config.hidden_size)

    for task in adapter.classification_tasks():
        auto_class = adapter.classifier_auto_classes[task]
        classifier, info = auto_class.from_pretrained(folder, num_labels=3, output_loading_info=True)
        assert type(classifier) is adapter.model_class(task)
        adapter.check_fine_tuning_load(loaded, classifier, info, task)
        adapter.check_classifier_output(classifier, export.config, task)
    adapter.check_processor(adapter.processor_auto_class.from_pretrained(folder), export.config)


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_remote_code_round_trip(preset, exports):
    """Saved with its code, the model loads with trust_remote_code in a process where hf_mae cannot be imported."""
    export = exports(preset)
    outputs = exports.remote_outputs(preset)
    assert outputs.error is None, outputs.error
    assert outputs.module.startswith("transformers_modules.")  # the copied code ran, not hf_mae
    atol = export.adapter.remote_atol
    torch.testing.assert_close(outputs["logits"], export.expected.logits, rtol=0, atol=atol)
    torch.testing.assert_close(outputs["loss"], export.expected.loss, rtol=0, atol=atol)
    if getattr(export.expected, "mask", None) is not None:
        assert torch.equal(outputs["mask"], export.expected.mask)


@pytest.mark.parametrize("preset", presets_where(supports_sdpa))
def test_eager_and_sdpa_agree(preset):
    adapter = adapter_for(preset)
    torch.manual_seed(0)
    eager = adapter.build(attn_implementation="eager")
    sdpa = adapter.build(attn_implementation="sdpa")
    sdpa.load_state_dict(eager.state_dict())
    assert eager.config._attn_implementation == "eager" and sdpa.config._attn_implementation == "sdpa"
    fixed = adapter.fixed(eager.config)
    a, b = eager(**fixed), sdpa(**fixed)
    difference = (a.logits - b.logits).abs().max().item()
    print(f"{preset}: eager vs sdpa max |logits difference| {difference:.2e}")
    assert difference < 1e-5 and abs(a.loss.item() - b.loss.item()) < 1e-5


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_fixed_noise_fixes_the_mask_and_the_output(preset, exports):
    export = exports(preset)
    export.adapter.check_fixed_noise(export.model, export.fixed)


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_every_trainable_parameter_gets_a_gradient(preset):
    adapter = adapter_for(preset)
    for task in ("pretraining", *adapter.classification_tasks()):
        torch.manual_seed(0)
        model = adapter.build(task, num_labels=3).train()
        if task == "pretraining":
            loss = model(**adapter.fixed(model.config)).loss
        else:
            loss = model(**adapter.feature_inputs(model.config), labels=adapter.labels(task, model.config)).loss
        assert torch.isfinite(loss)
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
        for name in adapter.gradient_exemptions(model, task):  # by design: asserted to get exactly none
            grad = model.get_parameter(name).grad  # None: not even in the graph (MultiMAE's unused input adapters)
            assert grad is None or grad.abs().sum() == 0
            missing.remove(name)
        assert not missing, f"{task}: no gradient for {missing}"
        assert not any(p.requires_grad for _, p in model.named_buffers())  # sin-cos tables are buffers, not params


@pytest.mark.parametrize("preset", presets_where(lambda adapter: adapter.method.modality != "graph"))
def test_mask_ratio_zero_keeps_every_token_in_order(preset):
    adapter = adapter_for(preset)
    adapter.check_mask_ratio_zero(adapter.build("base"))


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_bad_inputs_raise_clear_errors(preset, exports):
    export = exports(preset)
    export.adapter.check_bad_inputs(export.model)


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_hidden_states_attentions_and_tuple_outputs(preset):
    adapter = adapter_for(preset)
    model = adapter.build(attn_implementation="sdpa" if supports_sdpa(adapter) else None)
    fixed = adapter.fixed(model.config)
    adapter.check_hidden_states_and_attentions(model, adapter.base_inputs(model, fixed))
    torch.testing.assert_close(model(**fixed, return_dict=False)[1], model(**fixed).logits)


@pytest.mark.parametrize("preset", presets_where(lambda adapter: adapter.model_class().supports_gradient_checkpointing))
def test_gradient_checkpointing_gives_the_same_gradients(preset):
    adapter = adapter_for(preset)
    model = adapter.build().train()
    fixed = adapter.fixed(model.config)
    torch.manual_seed(0)  # the same dropout / drop-path draws in both runs
    model(**fixed).loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    model.activation_checkpointing_enable()
    torch.manual_seed(0)
    model(**fixed).loss.backward()
    for name, param in model.named_parameters():
        if name in expected:
            torch.testing.assert_close(param.grad, expected[name], rtol=1e-5, atol=1e-6, msg=name)
        else:
            assert param.grad is None, name


@pytest.mark.parametrize("preset", presets_where(lambda adapter: hasattr(adapter, "check_other_sizes")))
def test_other_sizes_run_with_interpolated_positions(preset, exports):
    export = exports(preset)
    export.adapter.check_other_sizes(export.model)


@pytest.mark.parametrize("preset", presets_where(modality("graph")))
def test_embeddings_of_a_graph_alone_and_inside_a_union_agree(preset):
    adapter = adapter_for(preset)
    adapter.check_alone_and_in_a_union(adapter.build("base"))


# -- what transformers checks of its own models ----------------------------------------------------------------------


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_every_weight_is_initialised_by_init_weights(preset):
    """transformers' test_can_init_all_missing_weights: with the same seed before each module's init, a model
    loaded with every weight missing (each one filled in by ``_init_weights``) equals one built from its config.
    A weight that ``_init_weights`` skips keeps torch's draw in one and uninitialised memory in the other."""
    adapter = adapter_for(preset)
    original = PreTrainedModel._initialize_weights

    def seeded(self, module, *args, **kwargs):
        torch.manual_seed(0)
        return original(self, module, *args, **kwargs)

    config = adapter.config(num_labels=3)
    problems = {}
    for model_class in adapter.method.model_classes.values():
        with mock.patch.object(PreTrainedModel, "_initialize_weights", seeded):
            built = model_class(copy.deepcopy(config))
            loaded = model_class.from_pretrained(None, config=copy.deepcopy(config), state_dict={})
        loaded_state = loaded.state_dict()
        on_meta = [name for name, value in loaded_state.items() if value.device.type == "meta"]
        different = [name for name, value in built.state_dict().items()
                     if name not in on_meta and not torch.equal(value, loaded_state[name])]  # fmt: skip
        if on_meta or different:
            problems[model_class.__name__] = {"left on the meta device": on_meta, "not as declared": different}
    assert not problems, f"weights not initialised by _init_weights: {problems}"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_loads_and_runs_in_half_precision(preset, dtype, exports):
    """``from_pretrained(folder, dtype=...)`` runs with finite outputs; in bf16 eager and sdpa agree within 4 bf16
    steps at the logits' largest magnitude, 4 * 2**-7 * max(1, max |logits|) (measured: at most 2 steps)."""
    export = exports(preset)
    adapter = export.adapter
    implementations = ("eager", "sdpa") if supports_sdpa(adapter) else (None,)
    logits = []
    for implementation in implementations:
        kwargs = {} if implementation is None else {"attn_implementation": implementation}
        model = AutoModelForPreTraining.from_pretrained(export.folder, dtype=dtype, **kwargs).eval()
        assert next(model.parameters()).dtype == dtype
        with torch.no_grad():
            out = model(**adapter.half(export.fixed, dtype))
        assert torch.isfinite(out.logits).all() and torch.isfinite(out.loss), implementation
        logits.append(out.logits.float())
    if dtype is torch.bfloat16 and len(logits) == 2:
        difference = (logits[0] - logits[1]).abs().max().item()
        print(f"{preset}: bf16 eager vs sdpa max |logits difference| {difference:.2e}")
        assert difference <= 4 * 2**-7 * max(1.0, logits[0].abs().max().item())


@pytest.mark.parametrize("preset", TINY_PRESETS)
def test_torch_export_matches_eager(preset, exports):
    """``torch.export.export`` of the base model (AutoModel) traces its default call and matches eager within 1e-5."""
    export = exports(preset)
    model = AutoModel.from_pretrained(export.folder).eval()
    inputs = export.adapter.feature_inputs(export.config)
    exported = torch.export.export(model, args=(), kwargs=inputs)
    with torch.no_grad():
        expected = model(**inputs).last_hidden_state
    torch.testing.assert_close(exported.module()(**inputs).last_hidden_state, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("preset", presets_where(has_attention))
def test_output_capture_follows_transformers(preset):
    """transformers' output capture: the base class declares ``_can_record_outputs`` for hidden states and
    attentions, and a forward returns one hidden state per block plus the embeddings' and one (batch, heads, n, n)
    attention map per block."""
    adapter = adapter_for(preset)
    model = adapter.build(attn_implementation="eager")
    recorded = type(model.base_model)._can_record_outputs or {}
    assert {"hidden_states", "attentions"} <= set(recorded), f"{type(model.base_model).__name__}: {recorded}"
    fixed = adapter.fixed(model.config)
    out = model.base_model(**adapter.base_inputs(model, fixed), output_hidden_states=True, output_attentions=True)
    blocks = adapter.num_blocks(model.config)
    assert len(out.hidden_states) == blocks + 1 and len(out.attentions) == blocks
    heads = model.config.num_attention_heads
    for attention in out.attentions:
        assert attention.shape[:2] == (adapter.batch, heads) and attention.shape[-1] == attention.shape[-2]


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_base_model_is_deterministic_by_default(preset, exports):
    """AutoModel in eval mode is a feature extractor: two calls on the same input are equal and nothing is masked
    unless asked; the pre-training class still masks config.mask_ratio of every sample."""
    export = exports(preset)
    adapter = export.adapter
    inputs = adapter.feature_inputs(export.config)
    encoder = AutoModel.from_pretrained(export.folder).eval()
    first, second = encoder(**inputs), encoder(**inputs)
    difference = (first.last_hidden_state - second.last_hidden_state).abs().max().item()
    assert difference == 0, f"two eval calls differ by up to {difference:.3g}"
    mask = getattr(first, "mask", None)
    assert mask is None or mask.sum() == 0, f"the default call masks {int(mask.sum())} tokens"
    adapter.check_drawn_mask(export.model(**adapter.inputs(export.config)), export.config)
