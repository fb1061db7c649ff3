"""The model test-suite every registered *graph* preset runs through (image: tests/test_models.py, audio:
tests/test_audio_models.py).

A graph method joins by adding a ``Method(modality="graph")`` row to ``hf_mae.registry.METHODS``. Inputs are a
disjoint union of graphs: ``node_features`` (N, num_features), ``edge_index`` (2, E), ``batch`` (N,); ``noise`` is
per node. Paper-sized presets are shrunk here to 12 features, 16 hidden units and at most 2 layers.
"""

import pytest
import torch
from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoModelForPreTraining

import hf_mae
from hf_mae import AutoModelForGraphClassification, AutoModelForNodeClassification
from hf_mae.modeling.graphmae import graph_mask
from hf_mae.registry import PRESETS, create_config

PRESET_NAMES = [name for name in hf_mae.list_models() if PRESETS[name].modality == "graph"]
SIZES = (7, 5)  # nodes of the two graphs in the test batch


def suite_config(preset, **overrides):
    if not preset.endswith("-tiny"):
        layers = min(create_config(preset).num_hidden_layers, 2)
        overrides = dict(num_features=12, hidden_size=16, num_hidden_layers=layers, **overrides)
    return create_config(preset, **overrides)


def build(preset, task="pretraining", **overrides):
    config = suite_config(preset, **overrides)
    return PRESETS[preset].model_classes[task](config).eval()


def graphs_for(config, seed=0):
    """Two random graphs as raw dicts (features of width config.num_features, a few random edges each)."""
    generator = torch.Generator().manual_seed(seed)
    return [
        {"x": torch.rand(n, config.num_features, generator=generator),
         "edge_index": torch.randint(0, n, (2, 2 * n), generator=generator), "y": label}
        for label, n in enumerate(SIZES)
    ]  # fmt: skip


def inputs_for(preset, config, seed=0):
    """(node_features (12, F), edge_index (2, E), batch (12,), noise (12,)) of the union, through the processor."""
    union = hf_mae.create_processor(preset, **_overrides(preset))(graphs_for(config, seed))
    noise = torch.rand(sum(SIZES), generator=torch.Generator().manual_seed(seed + 1))
    return union["node_features"], union["edge_index"], union["batch"], noise


def _overrides(preset):
    return {} if preset.endswith("-tiny") else dict(num_features=12, hidden_size=16)


def test_graph_presets_are_registered():
    assert {"graphmae-tiny", "graphmae-cora", "graphmae-citeseer", "graphmae-pubmed", "graphmae-gin"} <= set(PRESET_NAMES)
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


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_auto_round_trip(preset, tmp_path):
    model = build(preset)
    x, edges, batch, noise = inputs_for(preset, model.config)
    expected = model(x, edges, batch, noise=noise)
    model.save_pretrained(tmp_path)
    hf_mae.create_processor(preset, **_overrides(preset)).save_pretrained(tmp_path)

    assert type(AutoConfig.from_pretrained(tmp_path)) is type(model.config)
    loaded = AutoModelForPreTraining.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    reloaded = loaded(x, edges, batch, noise=noise)
    assert torch.equal(reloaded.logits, expected.logits) and torch.equal(reloaded.loss, expected.loss)
    encoder = AutoModel.from_pretrained(tmp_path).eval()
    assert type(encoder) is type(model.base_model) is PRESETS[preset].model_classes["base"]
    out = encoder(x, edges, batch)
    assert torch.equal(out.last_hidden_state, model.base_model(x, edges, batch).last_hidden_state)
    assert out.pooler_output.shape == (len(SIZES), model.config.hidden_size)
    for auto_class, task in ((AutoModelForNodeClassification, "node-classification"),
                             (AutoModelForGraphClassification, "graph-classification")):  # fmt: skip
        head, info = auto_class.from_pretrained(tmp_path, num_labels=3, output_loading_info=True)
        assert type(head) is PRESETS[preset].model_classes[task]
        assert all(key.startswith("classifier") for key in info["missing_keys"]), info["missing_keys"]
        torch.testing.assert_close(head.eval().graphmae(x, edges, batch).last_hidden_state, out.last_hidden_state)
    nodes = AutoModelForNodeClassification.from_pretrained(tmp_path, num_labels=3).eval()(x, edges).logits
    graphs = AutoModelForGraphClassification.from_pretrained(tmp_path, num_labels=3).eval()(x, edges, batch).logits
    assert nodes.shape == (12, 3) and graphs.shape == (2, 3)
    assert torch.isfinite(nodes).all() and torch.isfinite(graphs).all()
    processor = AutoFeatureExtractor.from_pretrained(tmp_path)
    assert type(processor) is type(hf_mae.create_processor(preset))
    assert processor.feature_normalization == model.config.feature_normalization
    assert torch.equal(processor(graphs_for(model.config))["node_features"], x)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_remote_code_round_trip(preset, tmp_path):
    """Saved with its code, the model loads with trust_remote_code in a process where hf_mae cannot be imported."""
    from remote_check import load_in_fresh_process

    from hf_mae.hub import save_pretrained_with_code

    model = build(preset)
    x, edges, batch, noise = inputs_for(preset, model.config)
    expected = model(x, edges, batch, noise=noise)
    save_pretrained_with_code(model, tmp_path, processor=hf_mae.create_processor(preset, **_overrides(preset)))
    outputs = load_in_fresh_process(tmp_path, "AutoModelForPreTraining", {"node_features": x, "edge_index": edges},
                                    {"batch": batch, "noise": noise})  # fmt: skip
    assert outputs.module.startswith("transformers_modules.")
    torch.testing.assert_close(outputs["logits"], expected.logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(outputs["loss"], expected.loss, rtol=0, atol=1e-5)
    assert torch.equal(outputs["mask"], expected.mask)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_fixed_noise_fixes_the_mask(preset):
    model = build(preset)
    x, edges, batch, noise = inputs_for(preset, model.config)
    a, b = model(x, edges, batch, noise=noise), model(x, edges, batch, noise=noise)
    mask, _, _ = graph_mask(x.shape[0], model.config.mask_rate, model.config.replace_rate, noise=noise)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.loss, b.loss) and torch.equal(a.mask, mask)
    assert a.logits.shape == x.shape and a.mask.sum() == int(model.config.mask_rate * x.shape[0])
    drawn = model(x, edges, batch)  # a random mask hides the same count
    assert drawn.mask.sum() == a.mask.sum()
    given = model(x, edges, batch, mask=mask)  # an explicit mask: the same masked nodes
    assert torch.equal(given.mask, mask)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_every_trainable_parameter_gets_a_gradient(preset):
    for task in ("pretraining", "node-classification", "graph-classification"):
        model = build(preset, task, num_labels=3).train()
        x, edges, batch, noise = inputs_for(preset, model.config)
        if task == "pretraining":
            loss = model(x, edges, batch, noise=noise).loss
        elif task == "node-classification":
            loss = model(x, edges, batch, labels=torch.arange(12) % 3).loss
        else:
            loss = model(x, edges, batch, labels=torch.tensor([0, 2])).loss
        loss.backward()
        missing = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]
        # A GAT decoder's target-side attention vector scores a_r . W h_i of the node being rebuilt; the loss reads
        # only masked nodes, whose codes h_i were re-masked to zero, so a_r never gets a gradient (as in the
        # official code): expected, not a bug.
        if task == "pretraining" and model.config.decoder_type == "gat":
            assert model.decoder.net.layers[0].attn_r.grad.abs().sum() == 0
            missing.remove("decoder.net.layers.0.attn_r")
        assert not missing, f"{task}: no gradient for {missing}"


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_embeddings_of_a_graph_alone_and_inside_a_union_agree(preset):
    model = build(preset, "base")
    processor = hf_mae.create_processor(preset, **_overrides(preset))
    first, second = graphs_for(model.config)
    union = processor([first, second])
    out = model(union["node_features"], union["edge_index"], union["batch"])
    for index, graph in enumerate((first, second)):
        alone = processor(graph)
        single = model(alone["node_features"], alone["edge_index"])  # batch None: one graph
        rows = union["batch"] == index
        torch.testing.assert_close(out.last_hidden_state[rows], single.last_hidden_state, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(out.pooler_output[index : index + 1], single.pooler_output, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_hidden_states_and_tuple_outputs(preset):
    model = build(preset)
    x, edges, batch, noise = inputs_for(preset, model.config)
    out = model.base_model(x, edges, batch, output_hidden_states=True)
    assert len(out.hidden_states) == model.config.num_hidden_layers
    assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
    torch.testing.assert_close(model(x, edges, batch, noise=noise, return_dict=False)[1],
                               model(x, edges, batch, noise=noise).logits)  # fmt: skip
    # extra fields of a collated batch are accepted (the pretrain loop calls model(**batch))
    masks = {"train_mask": torch.ones(12, dtype=torch.bool), "labels": torch.tensor([0, 1])}
    torch.testing.assert_close(model(x, edges, batch, noise=noise, **masks).loss, model(x, edges, batch, noise=noise).loss)


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_bad_inputs_raise_clear_errors(preset):
    model = build(preset)
    x, edges, batch, noise = inputs_for(preset, model.config)
    with pytest.raises(ValueError, match="num_features"):
        model(x[:, :-1], edges)
    with pytest.raises(ValueError, match=r"edge_index holds node ids in \[0, 12\]"):
        model(x, torch.cat([edges, torch.tensor([[0], [12]])], dim=1))
    with pytest.raises(ValueError, match=r"edge_index must have shape \(2, num_edges\)"):
        model(x, edges.T)
    with pytest.raises(TypeError, match="edge_index must be an integer tensor"):
        model(x, edges.float())
    with pytest.raises(TypeError, match="node_features must be a floating-point"):
        model(x.long(), edges)
    with pytest.raises(TypeError, match="node_features must be a torch.Tensor"):
        model(x.tolist(), edges)
    with pytest.raises(ValueError, match=r"batch must have shape \(12,\)"):
        model(x, edges, batch[:-1])
    with pytest.raises(ValueError, match=r"noise must be a tensor of shape \(12,\)"):
        model(x, edges, noise=noise[:-1])
    with pytest.raises(ValueError, match="mask must be a bool tensor"):
        model(x, edges, mask=torch.ones(12))
    with pytest.raises(TypeError, match="unexpected argument"):
        model(x, edges, nosie=noise)
    for rate in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="mask_rate"):
            create_config(preset, mask_rate=rate)
    for rate in (1.0, -0.5):
        with pytest.raises(ValueError, match="replace_rate"):
            create_config(preset, replace_rate=rate)
    with pytest.raises(ValueError, match="encoder_type"):
        create_config(preset, encoder_type="gcn")
    with pytest.raises(ValueError, match="decoder_type"):
        create_config(preset, decoder_type="transformer")
    with pytest.raises(ValueError, match="pooling"):
        create_config(preset, pooling="attention")
    with pytest.raises(ValueError, match="divisible by num_attention_heads"):
        create_config(preset, encoder_type="gat", hidden_size=10, num_attention_heads=4)
    with pytest.raises(ValueError, match="labels must hold one label per graph"):
        build(preset, "graph-classification", num_labels=2)(x, edges, batch, labels=torch.tensor([0, 1, 1]))
