"""LoRA on the query and value projections: the split qkv layout (``config.qkv_layout = "split"``), the lossless
conversions ``split_qkv_projections()`` / ``fuse_qkv_projections()``, save / load of split checkpoints, PEFT's
``target_modules=["query", "value"]``, and that none of it leaks into other models of the same process."""

import copy
import json

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForImageClassification, AutoModelForPreTraining

import hf_mae
from contract import adapter_for
from hf_mae.hub import save_pretrained_with_code
from hf_mae.modeling.layers import Attention
from hf_mae.registry import METHODS, create_config
from remote_check import run_in_fresh_process

# an image, a video (query / value biases, no key bias), an audio preset, CropMAE for its cross-attention and
# MixedAE, whose homologous attention selects keys from the attention's own q/k projections
PRESETS = ["mae-tiny", "videomae-tiny", "audiomae-tiny", "cropmae-tiny", "mixedae-tiny"]


def max_diff(a, b) -> float:
    return (a.float() - b.float()).abs().max().item()


def lora_names(model) -> list[str]:
    names = [name for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    return sorted(name.removeprefix("base_model.model.") for name in names)


def classifier(num_labels=3):
    """A random mae-tiny image classifier (4 encoder blocks)."""
    config = create_config("mae-tiny", num_labels=num_labels)
    return METHODS["mae"].model_classes["image-classification"](config).eval()


@pytest.mark.parametrize("preset", PRESETS)
def test_split_layout_gives_the_fused_outputs_and_fuses_back_exactly(preset):
    adapter = adapter_for(preset)
    model = adapter.build()
    inputs = adapter.fixed(model.config)
    fused_state = {key: value.clone() for key, value in model.state_dict().items()}
    with torch.no_grad():
        fused = model(**inputs)
    attentions = [m for m in model.modules() if isinstance(m, Attention)]

    rng = torch.get_rng_state()
    assert model.split_qkv_projections() is model
    assert torch.equal(torch.get_rng_state(), rng)  # built without an initialisation: nothing drawn
    assert model.config.qkv_layout == "split" and all(m.qkv_layout == "split" for m in attentions)
    keys = list(model.state_dict())
    assert not [key for key in keys if ".qkv." in key]
    assert len([key for key in keys if key.endswith(".query.weight")]) == len(attentions)
    with torch.no_grad():
        split = model(**inputs)
    diffs = {name: max_diff(getattr(split, name), getattr(fused, name)) for name in ("logits", "loss")}
    print(f"{preset}: split vs fused max |diff| {diffs} over {len(attentions)} attentions")
    assert all(d <= 1e-5 for d in diffs.values()), diffs

    model.fuse_qkv_projections()
    assert model.config.qkv_layout == "fused"
    state = model.state_dict()
    assert list(state) == list(fused_state)  # same keys, same order
    assert all(torch.equal(state[key], fused_state[key]) for key in state)
    with torch.no_grad():
        refused = model(**inputs)
    assert max_diff(refused.logits, fused.logits) <= 1e-6 and max_diff(refused.loss, fused.loss) <= 1e-6


def test_conversion_is_idempotent_and_refuses_what_it_cannot_convert():
    model = classifier()
    query = model.split_qkv_projections().mae.layers[0].attention.query
    assert model.split_qkv_projections().mae.layers[0].attention.query is query  # already split: untouched
    model.fuse_qkv_projections()
    qkv = model.mae.layers[0].attention.qkv
    assert model.fuse_qkv_projections().mae.layers[0].attention.qkv is qkv
    # a part converted alone would disagree with the config it shares with the rest (here the decoder)
    adapter = adapter_for("mae-tiny")
    pretraining = adapter.build()
    pretraining.mae.split_qkv_projections()
    with pytest.raises(RuntimeError, match=r"holds fused q/k/v projections but its config says qkv_layout='split'"):
        pretraining(**adapter.fixed(pretraining.config))
    # an adapter on the fused qkv would be dropped by splitting: refused, nothing converted
    on_qkv = get_peft_model(classifier(), LoraConfig(r=4, target_modules=["qkv"]))
    with pytest.raises(TypeError, match=r"split_qkv_projections needs plain nn.Linear projections, but mae\.layers\.0"):
        on_qkv.split_qkv_projections()
    assert getattr(on_qkv.config, "qkv_layout", "fused") == "fused" and len(lora_names(on_qkv)) == 4
    config = create_config("mae-tiny")
    config.qkv_layout = "separate"
    with pytest.raises(ValueError, match=r"config.qkv_layout must be one of 'fused', 'split'; got 'separate'"):
        METHODS["mae"].model_classes["base"](config)


def test_split_checkpoint_saves_split_and_loads_split(tmp_path):
    adapter = adapter_for("mae-tiny")
    model = adapter.build()
    model.save_pretrained(tmp_path / "fused")
    assert "qkv_layout" not in json.loads((tmp_path / "fused" / "config.json").read_text())  # format unchanged

    model.split_qkv_projections().save_pretrained(tmp_path / "split")
    assert json.loads((tmp_path / "split" / "config.json").read_text())["qkv_layout"] == "split"
    saved = load_file(tmp_path / "split" / "model.safetensors")
    assert "mae.layers.0.attention.query.weight" in saved and not [key for key in saved if ".qkv." in key]

    loaded, info = AutoModelForPreTraining.from_pretrained(tmp_path / "split", output_loading_info=True)
    assert not any(info.values()), info
    assert loaded.config.qkv_layout == "split"
    assert all(m.qkv_layout == "split" for m in loaded.modules() if isinstance(m, Attention))
    state = loaded.state_dict()
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())
    inputs = adapter.fixed(model.config)
    with torch.no_grad():
        assert max_diff(loaded.eval()(**inputs).logits, model(**inputs).logits) <= 1e-6
        base = AutoModel.from_pretrained(tmp_path / "split").eval()
        features = base(inputs["pixel_values"], mask_ratio=0.0).last_hidden_state
        assert max_diff(features, model.mae(inputs["pixel_values"], mask_ratio=0.0).last_hidden_state) <= 1e-6


def test_lora_targets_query_and_value_of_encoder_and_decoder():
    model = adapter_for("mae-tiny").build().split_qkv_projections()  # 4 encoder blocks, 2 decoder blocks
    config = model.config
    # by name: every attention, the encoder's and the decoder's
    both = lora_names(get_peft_model(copy.deepcopy(model), LoraConfig(r=4, target_modules=["query", "value"])))
    assert len(both) == 2 * (config.num_hidden_layers + config.decoder_num_hidden_layers) == 12
    assert {name.rsplit(".", 1)[1] for name in both} == {"query", "value"}  # keys are not adapted
    # the encoder only: a regex over the full module name, or the block indices under "layers"
    encoder = [f"mae.layers.{i}.attention.{part}" for i in range(config.num_hidden_layers)
               for part in ("query", "value")]
    by_regex = LoraConfig(r=4, target_modules=r"mae\.layers\.\d+\.attention\.(query|value)")
    assert lora_names(get_peft_model(copy.deepcopy(model), by_regex)) == sorted(encoder)
    by_index = LoraConfig(r=4, target_modules=["query", "value"], layers_pattern="layers",
                          layers_to_transform=list(range(config.num_hidden_layers)))
    assert lora_names(get_peft_model(copy.deepcopy(model), by_index)) == sorted(encoder)
    # a classifier has only the encoder
    clf = classifier().split_qkv_projections()
    assert len(lora_names(get_peft_model(clf, LoraConfig(r=4, target_modules=["query", "value"])))) == 8


def test_lora_trains_then_merges_and_fuses_into_a_plain_checkpoint(tmp_path, one_thread):
    model = classifier().split_qkv_projections()
    base_query = model.mae.layers[0].attention.query.weight.clone()
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"]))
    trainable = [name for name, p in peft_model.named_parameters() if p.requires_grad]
    assert len(trainable) == 2 * 8 and all(".lora_A." in name or ".lora_B." in name for name in trainable)

    generator = torch.Generator().manual_seed(0)
    pixels, labels = torch.randn(8, 3, 32, 32, generator=generator), torch.randint(0, 3, (8,), generator=generator)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    peft_model.train()
    losses = []
    for _ in range(20):
        loss = peft_model(pixel_values=pixels, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    print(f"LoRA (query, value; r=4), classifier frozen: loss {losses[0]:.3f} -> {losses[-1]:.3f} in 20 steps")
    # measured 2.006 -> 0.023: the frozen random head is fitted through the adapters alone
    assert losses[0] > 1.5 and losses[-1] < 0.2
    assert torch.equal(model.mae.layers[0].attention.query.base_layer.weight, base_query)  # the base stays frozen

    peft_model.eval()
    with pytest.raises(TypeError, match=r"mae\.layers\.0\.attention\.query.*merge_and_unload"):
        peft_model.fuse_qkv_projections()
    assert model.config.qkv_layout == "split"  # refused before anything changed
    with torch.no_grad():
        adapted = peft_model(pixel_values=pixels).logits
        merged = peft_model.merge_and_unload()
        merged_logits = merged(pixel_values=pixels).logits
        fused = merged.fuse_qkv_projections()
        fused_logits = fused(pixel_values=pixels).logits
    assert not lora_names(merged)
    diffs = {"merged vs adapted": max_diff(merged_logits, adapted),
             "fused vs merged": max_diff(fused_logits, merged_logits)}
    print("max |diff|:", diffs)
    assert all(d <= 1e-5 for d in diffs.values()), diffs

    fused.save_pretrained(tmp_path / "fused")
    assert json.loads((tmp_path / "fused" / "config.json").read_text())["qkv_layout"] == "fused"
    reloaded, info = AutoModelForImageClassification.from_pretrained(tmp_path / "fused", output_loading_info=True)
    assert not any(info.values()), info
    with torch.no_grad():
        assert max_diff(reloaded.eval()(pixel_values=pixels).logits, fused_logits) <= 1e-6
    # AutoModel reads it as it reads a classifier that was never split: without the head (classifier, fc_norm)
    # and without the base model's final layernorm (mean pooling uses fc_norm instead)
    classifier().save_pretrained(tmp_path / "never_split")
    base, base_info = AutoModel.from_pretrained(tmp_path / "fused", output_loading_info=True)
    _, plain_info = AutoModel.from_pretrained(tmp_path / "never_split", output_loading_info=True)
    assert base_info == plain_info and plain_info["missing_keys"] == {"layernorm.weight", "layernorm.bias"}, base_info
    assert hasattr(base.layers[0].attention, "qkv")


def test_splitting_one_model_changes_nothing_for_the_next(tmp_path):
    """What the first attempt got wrong (a conversion registered per model type): a split model in the process
    changed how a fused MAEForPreTraining saved afterwards loaded with AutoModel (features off by 4.6)."""
    split = adapter_for("mae-tiny").build().split_qkv_projections()
    get_peft_model(split, LoraConfig(r=4, target_modules=["query", "value"]))
    split.save_pretrained(tmp_path / "split")
    AutoModelForPreTraining.from_pretrained(tmp_path / "split")

    torch.manual_seed(1)
    model = hf_mae.create_model("mae-tiny").eval()
    model.save_pretrained(tmp_path / "fused")
    base, info = AutoModel.from_pretrained(tmp_path / "fused", output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    assert getattr(base.config, "qkv_layout", "fused") == "fused" and hasattr(base.layers[0].attention, "qkv")
    pixels = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        features = base.eval()(pixels, mask_ratio=0.0).last_hidden_state
        expected = model.mae(pixels, mask_ratio=0.0).last_hidden_state
    assert max_diff(features, expected) <= 1e-6


@pytest.mark.slow  # a fresh Python process (importing torch and transformers again)
def test_split_checkpoint_loads_as_remote_code_without_hf_mae(tmp_path):
    adapter = adapter_for("mae-tiny")
    model = adapter.build().split_qkv_projections()
    folder = save_pretrained_with_code(model, tmp_path / "remote")
    inputs = adapter.fixed(model.config)
    pixels = inputs["pixel_values"]
    (base,) = run_in_fresh_process(folder, [("AutoModel", {"pixel_values": pixels}, {"mask_ratio": 0.0})])
    with torch.no_grad():
        expected = model.mae(pixels, mask_ratio=0.0).last_hidden_state
    assert base.module.startswith("transformers_modules.") and base.class_name == "MAEModel"
    assert max_diff(base["last_hidden_state"], expected) <= adapter.remote_atol
