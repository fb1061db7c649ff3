"""hf-mae convert: transformers ViTMAE <-> hf-mae and facebookresearch/mae -> hf-mae, with numerical parity.

Every conversion goes through the CLI entry (``hf_mae.cli.main``) and is checked by loading the result with the
Auto classes and comparing outputs for the same ``noise`` (fp32, tolerance 1e-5)."""

import argparse
import json

import pytest
import torch
from transformers import AutoModel, AutoModelForImageClassification, AutoModelForPreTraining
from transformers import ViTMAEConfig, ViTMAEForPreTraining

import hf_mae
from hf_mae.cli import main
from hf_mae.convert import convert_to_vit_mae, mae_official_config, to_mae_official_state_dict
from hf_mae.modeling.embeddings import sincos_2d

TOL = 1e-5
TINY = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
    decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=4, decoder_intermediate_size=48,
)  # fmt: skip


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


def assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def compare_pretraining(reference, converted, image_size, channels, num_patches):
    """Max |logits| and |loss| differences for the same pixels and noise."""
    pixels, noise = torch.randn(2, channels, image_size, image_size), torch.rand(2, num_patches)
    with torch.no_grad():
        want, got = reference(pixel_values=pixels, noise=noise), converted(pixel_values=pixels, noise=noise)
    assert torch.equal(want.mask, got.mask)
    return max_diff(want.logits, got.logits), abs(want.loss.item() - got.loss.item())


def random_vit_mae(image_size, patch_size, num_channels, **overrides):
    """A random ViTMAEForPreTraining with non-zero sin-cos tables (a fresh one holds zeros): the encoder gets MAE's
    table, the decoder random values, so a dropped or recomputed table would show in the outputs."""
    config = ViTMAEConfig(image_size=image_size, patch_size=patch_size, num_channels=num_channels, **TINY, **overrides)
    model = ViTMAEForPreTraining(config).eval()
    grid = image_size // patch_size
    with torch.no_grad():
        model.vit.embeddings.position_embeddings.copy_(sincos_2d((grid, grid), 32, cls_token=True)[None])
        model.decoder.decoder_pos_embed.normal_()
    return model


@pytest.mark.parametrize(
    "image_size, patch_size, num_channels, overrides",
    [
        (48, 8, 1, dict(norm_pix_loss=True)),
        (32, 4, 4, dict(norm_pix_loss=False, qkv_bias=False, hidden_act="gelu_new", mask_ratio=0.5)),
        (32, 8, 3, dict(norm_pix_loss=True, layer_norm_eps=1e-6)),
    ],
)
def test_vit_mae_to_hf_mae_parity(tmp_path, image_size, patch_size, num_channels, overrides):
    source = random_vit_mae(image_size, patch_size, num_channels, **overrides)
    source.save_pretrained(tmp_path / "vit")
    with pytest.warns(UserWarning, match="decoder_pos_embed is 'other'"):  # the random decoder table is reported
        assert main(["convert", "vit-mae", str(tmp_path / "vit"), str(tmp_path / "mae")]) == 0

    converted = AutoModelForPreTraining.from_pretrained(tmp_path / "mae")
    assert type(converted).__name__ == "MAEForPreTraining"
    for field in ("layer_norm_eps", "norm_pix_loss", "mask_ratio", "qkv_bias", "hidden_act", "num_channels"):
        assert getattr(converted.config, field) == getattr(source.config, field), field
    assert torch.equal(converted.decoder.decoder_pos_embed, source.decoder.decoder_pos_embed)
    assert (tmp_path / "mae" / "preprocessor_config.json").is_file()

    num_patches = (image_size // patch_size) ** 2
    pixels, noise = torch.randn(2, num_channels, image_size, image_size), torch.rand(2, num_patches)
    logits = {}
    for implementation in ("eager", "sdpa"):
        want = ViTMAEForPreTraining.from_pretrained(tmp_path / "vit", attn_implementation=implementation).eval()
        got = AutoModelForPreTraining.from_pretrained(tmp_path / "mae", attn_implementation=implementation).eval()
        with torch.no_grad():
            want, got = want(pixel_values=pixels, noise=noise), got(pixel_values=pixels, noise=noise)
        logits_diff, loss_diff = max_diff(want.logits, got.logits), abs(want.loss.item() - got.loss.item())
        name = f"{image_size}/{patch_size} C={num_channels} {implementation}"
        print(f"{name}: |dlogits| {logits_diff:.2e} |dloss| {loss_diff:.2e}")
        assert torch.equal(want.mask, got.mask) and logits_diff < TOL and loss_diff < TOL
        logits[implementation] = got.logits
    print(f"hf-mae eager vs sdpa: |dlogits| {max_diff(logits['eager'], logits['sdpa']):.2e}")
    assert max_diff(logits["eager"], logits["sdpa"]) < TOL


def test_hf_mae_vit_mae_round_trip(tmp_path):
    config = hf_mae.MAEConfig(image_size=32, patch_size=4, num_channels=3, norm_pix_loss=True, mask_ratio=0.6, **TINY)
    model = hf_mae.MAEForPreTraining(config).eval()
    model.save_pretrained(tmp_path / "mae")
    processor = hf_mae.create_processor("mae-tiny")
    processor.image_mean, processor.image_std = [0.5, 0.4, 0.3], [0.2, 0.2, 0.2]
    processor.save_pretrained(tmp_path / "mae")

    assert main(["convert", "--to", "vit-mae", str(tmp_path / "mae"), str(tmp_path / "vit")]) == 0
    vit = ViTMAEForPreTraining.from_pretrained(tmp_path / "vit").eval()
    logits_diff, loss_diff = compare_pretraining(model, vit, 32, 3, 64)
    print(f"hf-mae -> vit-mae: |dlogits| {logits_diff:.2e} |dloss| {loss_diff:.2e}")
    assert logits_diff < TOL and loss_diff < TOL
    assert vit.config.mask_ratio == 0.6 and vit.config.layer_norm_eps == config.layer_norm_eps
    assert json.loads((tmp_path / "vit" / "preprocessor_config.json").read_text())["image_mean"] == [0.5, 0.4, 0.3]

    assert main(["convert", "vit-mae", str(tmp_path / "vit"), str(tmp_path / "back")]) == 0
    back = AutoModelForPreTraining.from_pretrained(tmp_path / "back")
    assert_same_state(back.state_dict(), model.state_dict())
    assert back.config.to_diff_dict() == {**model.config.to_diff_dict(), "architectures": ["MAEForPreTraining"]}
    assert json.loads((tmp_path / "back" / "preprocessor_config.json").read_text())["image_std"] == [0.2, 0.2, 0.2]


def test_to_vit_mae_refuses_what_vit_mae_cannot_hold():
    with pytest.raises(ValueError, match="image_size must be square"):
        convert_to_vit_mae(hf_mae.MAEForPreTraining(hf_mae.MAEConfig(image_size=(32, 48), patch_size=8, **TINY)))
    with pytest.raises(ValueError, match="layer_scale_init_value"):
        config = hf_mae.MAEConfig(image_size=32, patch_size=8, layer_scale_init_value=0.1, **TINY)
        convert_to_vit_mae(hf_mae.MAEForPreTraining(config))
    # drop path only acts in training: dropped with a warning, outputs unchanged
    model = hf_mae.MAEForPreTraining(hf_mae.MAEConfig(image_size=32, patch_size=8, drop_path_rate=0.1, **TINY)).eval()
    with pytest.warns(UserWarning, match="drop_path_rate"):
        vit = convert_to_vit_mae(model)
    assert max(compare_pretraining(model, vit, 32, 3, 16)) < TOL


# ----------------------------------------------------------------------------------------------------------------
# facebookresearch/mae


def official_shapes(width, depth, heads_dim_mlp, patch, channels, num_patches, decoder=None, num_labels=None):
    """Key -> shape of a facebookresearch/mae state dict, written out from models_mae.py / timm's Block."""
    shapes = {
        "cls_token": (1, 1, width),
        "pos_embed": (1, num_patches + 1, width),
        "patch_embed.proj.weight": (width, channels, patch, patch),
        "patch_embed.proj.bias": (width,),
    }

    def blocks(prefix, count, dim, mlp):
        for i in range(count):
            for name, shape in (
                ("norm1.weight", (dim,)), ("norm1.bias", (dim,)),
                ("attn.qkv.weight", (3 * dim, dim)), ("attn.qkv.bias", (3 * dim,)),
                ("attn.proj.weight", (dim, dim)), ("attn.proj.bias", (dim,)),
                ("norm2.weight", (dim,)), ("norm2.bias", (dim,)),
                ("mlp.fc1.weight", (mlp, dim)), ("mlp.fc1.bias", (mlp,)),
                ("mlp.fc2.weight", (dim, mlp)), ("mlp.fc2.bias", (dim,)),
            ):  # fmt: skip
                shapes[f"{prefix}.{i}.{name}"] = shape

    blocks("blocks", depth, width, heads_dim_mlp)
    shapes.update({"norm.weight": (width,), "norm.bias": (width,)})
    if decoder:
        dim, dec_depth, mlp = decoder
        shapes.update({"decoder_embed.weight": (dim, width), "decoder_embed.bias": (dim,), "mask_token": (1, 1, dim)})
        shapes["decoder_pos_embed"] = (1, num_patches + 1, dim)
        blocks("decoder_blocks", dec_depth, dim, mlp)
        shapes.update({"decoder_norm.weight": (dim,), "decoder_norm.bias": (dim,)})
        pixels = patch * patch * channels
        shapes.update({"decoder_pred.weight": (pixels, dim), "decoder_pred.bias": (pixels,)})
    if num_labels:
        shapes.update({"head.weight": (num_labels, width), "head.bias": (num_labels,)})
    return shapes


def official_model(**overrides):
    kwargs = dict(image_size=32, patch_size=8, num_channels=3, layer_norm_eps=1e-6, **TINY)
    config = hf_mae.MAEConfig(**{**kwargs, **overrides})
    return hf_mae.MAEForPreTraining(config).eval()


def save_official(path, state_dict):
    # training checkpoints also pickle their argparse arguments: weights_only loading must still accept them
    torch.save({"model": state_dict, "epoch": 399, "args": argparse.Namespace(model="mae_vit_tiny")}, path)


def test_mae_official_pretraining_parity(tmp_path):
    model = official_model(patch_size=4, num_channels=1, norm_pix_loss=False)
    state = to_mae_official_state_dict(model)
    expected = official_shapes(32, 2, 64, 4, 1, 64, decoder=(16, 1, 48))
    assert {key: tuple(t.shape) for key, t in state.items()} == expected
    # the official table is width-first (h/w swapped): hf-mae's default layout
    assert torch.equal(state["pos_embed"][0], sincos_2d((8, 8), 32, cls_token=True, width_first=True))
    save_official(tmp_path / "ckpt.pth", state)

    args = ["convert", "mae-official", str(tmp_path / "ckpt.pth"), str(tmp_path / "out"), "--num-heads", "4",
            "--decoder-num-heads", "4", "--no-norm-pix-loss"]  # fmt: skip
    assert main(args) == 0
    converted = AutoModelForPreTraining.from_pretrained(tmp_path / "out").eval()
    assert_same_state(converted.state_dict(), model.state_dict())
    assert converted.config.layer_norm_eps == 1e-6 and converted.config.norm_pix_loss is False
    logits_diff, loss_diff = compare_pretraining(model, converted, 32, 1, 64)
    print(f"mae-official: |dlogits| {logits_diff:.2e} |dloss| {loss_diff:.2e}")
    assert logits_diff == 0.0 and loss_diff == 0.0

    # and back: hf-mae folder -> official .pth holds the very same tensors
    assert main(["convert", "--to", "mae-official", str(tmp_path / "out"), str(tmp_path / "again.pth")]) == 0
    assert_same_state(torch.load(tmp_path / "again.pth", weights_only=True)["model"], state)


def test_mae_official_height_first_table_is_detected(tmp_path):
    state = to_mae_official_state_dict(official_model())
    state["pos_embed"] = sincos_2d((4, 4), 32, cls_token=True, width_first=False)[None]
    save_official(tmp_path / "ckpt.pth", state)
    args = ["convert", "mae-official", str(tmp_path / "ckpt.pth"), str(tmp_path / "out"), "--num-heads", "4",
            "--decoder-num-heads", "4"]  # fmt: skip
    with pytest.raises(ValueError, match="position_embeddings is 'height-first'"):
        main(args + ["--strict"])
    assert not (tmp_path / "out").exists()
    with pytest.warns(UserWarning, match="height-first"):
        main(args)
    converted = AutoModelForPreTraining.from_pretrained(tmp_path / "out")
    assert torch.equal(converted.mae.embeddings.position_embeddings, state["pos_embed"])  # copied as stored


def test_mae_official_encoder_only_and_finetuned(tmp_path):
    model = official_model()
    full = to_mae_official_state_dict(model)
    encoder = {k: v for k, v in full.items() if not k.startswith(("decoder", "mask_token"))}
    save_official(tmp_path / "encoder.pth", encoder)
    main(["convert", "mae-official", str(tmp_path / "encoder.pth"), str(tmp_path / "enc"), "--num-heads", "4"])
    base = AutoModel.from_pretrained(tmp_path / "enc").eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        want, got = model.mae(pixels, mask_ratio=0.0), base(pixels, mask_ratio=0.0)
        diff = max_diff(want.last_hidden_state, got.last_hidden_state)
    assert type(base).__name__ == "MAEModel" and diff == 0.0

    # a models_vit fine-tune with cls pooling: norm + head
    classifier = hf_mae.MAEForImageClassification(
        hf_mae.MAEConfig(image_size=32, patch_size=8, num_labels=5, classifier_pooling="cls", **TINY)
    ).eval()
    tuned = to_mae_official_state_dict(classifier)
    assert {k: tuple(v.shape) for k, v in tuned.items()} == official_shapes(32, 2, 64, 8, 3, 16, num_labels=5)
    tuned["pos_embed"] = torch.randn_like(tuned["pos_embed"])  # fine-tuning trains the table; it must be kept
    save_official(tmp_path / "tuned.pth", tuned)
    main(["convert", "mae-official", str(tmp_path / "tuned.pth"), str(tmp_path / "cls"), "--num-heads", "4"])
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path / "cls").eval()
    with torch.no_grad():
        classifier.mae.embeddings.position_embeddings.copy_(tuned["pos_embed"])
        diff = max_diff(loaded(pixels).logits, classifier(pixels).logits)
    assert diff == 0.0

    # a global_pool fine-tune: fc_norm + head, no final norm; hf-mae's mean pooling is the same computation
    pooled_model = hf_mae.MAEForImageClassification(
        hf_mae.MAEConfig(image_size=32, patch_size=8, num_labels=5, classifier_pooling="mean", **TINY)
    ).eval()
    pooled = to_mae_official_state_dict(pooled_model)
    assert "fc_norm.weight" in pooled and "norm.weight" not in pooled
    save_official(tmp_path / "pooled.pth", pooled)
    main(["convert", "mae-official", str(tmp_path / "pooled.pth"), str(tmp_path / "pooled"), "--num-heads", "4"])
    loaded = AutoModelForImageClassification.from_pretrained(tmp_path / "pooled").eval()
    assert loaded.config.classifier_pooling == "mean"
    with torch.no_grad():
        assert max_diff(loaded(pixels).logits, pooled_model(pixels).logits) == 0.0


def test_mae_official_config_uses_paper_head_counts():
    def fake(width, patch=16, grid=14, decoder=512):
        shapes = official_shapes(width, 1, 4 * width, patch, 3, grid * grid, decoder=(decoder, 1, 4 * decoder))
        return {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}

    base, large = mae_official_config(fake(768)), mae_official_config(fake(1024))
    assert (base.num_attention_heads, base.image_size, base.decoder_num_attention_heads) == (12, 224, 16)
    assert large.num_attention_heads == 16 and large.layer_norm_eps == 1e-6 and large.norm_pix_loss is True
    assert mae_official_config(fake(1280, patch=14, grid=16)).num_attention_heads == 16
    with pytest.raises(ValueError, match="--num-heads"):
        mae_official_config(fake(96))


# ----------------------------------------------------------------------------------------------------------------
# bad inputs


def test_bad_inputs_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="SRC .* does not exist"):
        main(["convert", "vit-mae", str(tmp_path / "missing"), str(tmp_path / "out")])
    with pytest.raises(ValueError, match="FORMAT 'timm'"):
        main(["convert", "timm", str(tmp_path), str(tmp_path / "out")])
    with pytest.raises(ValueError, match="--to 'onnx'"):
        main(["convert", "--to", "onnx", str(tmp_path), str(tmp_path / "out")])
    with pytest.raises(ValueError, match="--num-heads"):
        main(["convert", "vit-mae", str(tmp_path), str(tmp_path / "out"), "--num-heads", "4"])

    source = random_vit_mae(32, 8, 3)
    source.save_pretrained(tmp_path / "vit")
    with pytest.raises(ValueError, match="SRC .* holds a 'vit_mae' model"):
        main(["convert", "--to", "vit-mae", str(tmp_path / "vit"), str(tmp_path / "out")])
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="SRC .*junk.pth"):
        main(["convert", "mae-official", str(tmp_path / "junk.pth"), str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()

    # an existing DST is left untouched without --overwrite and replaced with it
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "keep.txt").write_text("mine")
    with pytest.raises(ValueError, match="DST .* already exists; pass --overwrite"):
        main(["convert", "vit-mae", str(tmp_path / "vit"), str(tmp_path / "dst")])
    assert [p.name for p in (tmp_path / "dst").iterdir()] == ["keep.txt"]
    with pytest.warns(UserWarning):
        main(["convert", "vit-mae", str(tmp_path / "vit"), str(tmp_path / "dst"), "--overwrite"])
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == [
        "config.json", "model.safetensors", "preprocessor_config.json"
    ]  # fmt: skip
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no staging folder left behind


def test_fresh_vit_mae_zero_tables_are_reported(tmp_path):
    """A freshly built ViTMAE (transformers 5.x) holds all-zero sin-cos tables, encoder and decoder: copied, but reported."""
    fresh = ViTMAEForPreTraining(ViTMAEConfig(image_size=32, patch_size=8, **TINY))
    assert not fresh.decoder.decoder_pos_embed.any()
    fresh.save_pretrained(tmp_path / "vit")
    with pytest.warns(UserWarning) as record:
        main(["convert", "vit-mae", str(tmp_path / "vit"), str(tmp_path / "mae")])
    messages = " ".join(str(warning.message) for warning in record)
    assert "position_embeddings is 'zeros'" in messages and "decoder_pos_embed is 'zeros'" in messages
    assert not AutoModelForPreTraining.from_pretrained(tmp_path / "mae").decoder.decoder_pos_embed.any()
