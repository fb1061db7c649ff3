"""LoRA with PEFT on the split attention projections (``config.split_qkv = True``): PEFT's ViT-style
``target_modules=["query", "value"]`` finds them, only the adapters train, merging changes no output, and the fused
checkpoint format loads into the split layout and back with identical outputs."""

import pytest
import torch

import hf_mae

peft = pytest.importorskip("peft", reason="the LoRA tests use PEFT (in the test extra)")


def split_classifier(**overrides):
    config = hf_mae.create_config("mae-tiny", num_labels=3, **overrides)
    config.split_qkv = True  # read by layers.Attention; the fused layout is the default
    return hf_mae.MAEForImageClassification(config)


def test_a_fused_checkpoint_loads_into_the_split_layout_and_saves_back_fused(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForImageClassification

    fused = hf_mae.create_model("mae-tiny", task="image-classification", num_labels=3).eval()
    fused.save_pretrained(tmp_path / "fused")
    config = AutoConfig.from_pretrained(tmp_path / "fused")
    config.split_qkv = True
    split = AutoModelForImageClassification.from_pretrained(tmp_path / "fused", config=config).eval()
    attention = split.mae.layers[0].attention
    assert not hasattr(attention, "qkv") and isinstance(attention.query, torch.nn.Linear)
    width = fused.config.hidden_size
    torch.testing.assert_close(attention.key.weight, fused.mae.layers[0].attention.qkv.weight[width : 2 * width],
                               rtol=0, atol=0)
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = fused(pixels).logits
        torch.testing.assert_close(split(pixels).logits, expected, rtol=0, atol=1e-6)

    split.save_pretrained(tmp_path / "split")
    saved = load_file(tmp_path / "split" / "model.safetensors")
    assert sorted(saved) == sorted(load_file(tmp_path / "fused" / "model.safetensors"))  # the fused format on disk
    reloaded = AutoModelForImageClassification.from_pretrained(tmp_path / "split").eval()
    assert reloaded.config.split_qkv is True and hasattr(reloaded.mae.layers[0].attention, "query")
    again = AutoModelForImageClassification.from_pretrained(tmp_path / "fused").eval()  # fused stays fused
    assert hasattr(again.mae.layers[0].attention, "qkv")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixels).logits, expected, rtol=0, atol=1e-6)
        torch.testing.assert_close(again(pixels).logits, expected, rtol=0, atol=0)


def test_split_projections_with_query_value_biases_match_fused(tmp_path):
    """VideoMAE's query / value biases (no key bias) stay parameters of their own in both layouts."""
    from transformers import AutoConfig, AutoModelForPreTraining

    fused = hf_mae.create_model("videomae-tiny").eval()
    for block in fused.videomae.layers:
        assert block.attention.q_bias is not None and block.attention.qkv.bias is None
        torch.nn.init.normal_(block.attention.q_bias)  # non-zero biases, so that losing one would show
        torch.nn.init.normal_(block.attention.v_bias)
    fused.save_pretrained(tmp_path)
    config = AutoConfig.from_pretrained(tmp_path)
    config.split_qkv = True
    split = AutoModelForPreTraining.from_pretrained(tmp_path, config=config).eval()
    attention = split.videomae.layers[0].attention
    assert attention.key.bias is None and attention.query.bias is None
    torch.testing.assert_close(attention.v_bias, fused.videomae.layers[0].attention.v_bias, rtol=0, atol=0)
    pixels, noise = torch.randn(1, 8, 3, 32, 32), torch.rand(1, 16)
    with torch.no_grad():
        torch.testing.assert_close(split(pixels, noise=noise).logits, fused(pixels, noise=noise).logits,
                                   rtol=0, atol=1e-5)


def test_lora_on_query_and_value_trains_merges_and_leaves_keys_alone():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = split_classifier()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    lora = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"]))
    trainable = [name for name, p in lora.named_parameters() if p.requires_grad]
    assert len(trainable) == 2 * 2 * model.config.num_hidden_layers  # lora_A and lora_B on q and v of each block
    assert all("lora_" in name and (".query." in name or ".value." in name) for name in trainable)
    pixels, labels = torch.randn(16, 3, 32, 32), torch.randint(0, 3, (16,))
    optimizer = torch.optim.AdamW([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(15):
        loss = lora(pixel_values=pixels, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses  # the adapters alone fit the batch (1.67 -> 0.38 here)

    lora.eval()
    with torch.no_grad():
        unmerged = lora(pixel_values=pixels).logits
        merged_model = lora.merge_and_unload()
        torch.testing.assert_close(merged_model(pixel_values=pixels).logits, unmerged, rtol=0, atol=1e-5)
    after = dict(merged_model.named_parameters())
    assert set(after) == set(before)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and all(name.endswith(("attention.query.weight", "attention.value.weight")) for name in changed)
    assert all(torch.equal(before[n], after[n]) for n in before if ".attention.key." in n)  # k untouched


@pytest.mark.parametrize("qkv_bias", [True, False, "qv"])
def test_split_cross_attention_matches_fused(qkv_bias):
    from types import SimpleNamespace

    from hf_mae.modeling.layers import CrossAttention

    fused = CrossAttention(SimpleNamespace(_attn_implementation="eager"), 16, 4, qkv_bias)
    split = CrossAttention(SimpleNamespace(_attn_implementation="eager", split_qkv=True), 16, 4, qkv_bias)
    with torch.no_grad():
        for name, rows in zip(("query", "key", "value"), fused.qkv.weight.chunk(3)):
            getattr(split, name).weight.copy_(rows)
        if qkv_bias is True:
            for name, rows in zip(("query", "key", "value"), fused.qkv.bias.chunk(3)):
                getattr(split, name).bias.copy_(rows)
        if qkv_bias == "qv":
            for layer in (fused, split):
                layer.q_bias.fill_(0.5), layer.v_bias.fill_(-0.25)
        split.proj.load_state_dict(fused.proj.state_dict())
    queries, context = torch.randn(2, 3, 16), torch.randn(2, 5, 16)
    torch.testing.assert_close(split(queries, context)[0], fused(queries, context)[0], rtol=0, atol=1e-6)
    with pytest.raises(TypeError, match="split_qkv"):
        CrossAttention(SimpleNamespace(split_qkv="yes"), 16, 4)


def test_a_split_model_saved_with_code_loads_without_hf_mae(tmp_path):
    from remote_check import load_in_fresh_process

    from hf_mae.hub import save_pretrained_with_code

    torch.manual_seed(0)
    model = split_classifier().eval()
    folder = save_pretrained_with_code(model, tmp_path / "split")
    pixels = torch.randn(2, 3, 32, 32)
    remote = load_in_fresh_process(folder, "AutoModelForImageClassification", {"pixel_values": pixels})
    assert remote.module.startswith("transformers_modules.")
    with torch.no_grad():
        torch.testing.assert_close(remote["logits"], model(pixels).logits, rtol=0, atol=1e-6)
