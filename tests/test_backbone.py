"""ViT encoders as transformers backbones (hf_mae/modeling/backbone.py): AutoBackbone gives the encoder's hidden
states as (batch, hidden, rows, cols) feature maps at the chosen stages, and transformers' UperNet trains on them."""

import pytest
import torch
from transformers import AutoBackbone

import hf_mae
from hf_mae.auto import register_backbone
from hf_mae.modeling.backbone import MAEBackbone, SimMIMBackbone


@pytest.fixture(autouse=True, scope="module")
def _registered():
    """What importing hf_mae does once the registry calls register_backbone (a no-op then)."""
    register_backbone(hf_mae.MAEConfig, hf_mae.MAEModel)
    register_backbone(hf_mae.SimMIMConfig, hf_mae.SimMIMModel)


def as_map(tokens, rows, cols):
    """(batch, 1 + rows * cols, hidden) encoder tokens -> (batch, hidden, rows, cols), the CLS token dropped."""
    patches = tokens[:, 1:]
    return patches.reshape(patches.shape[0], rows, cols, -1).permute(0, 3, 1, 2)


def test_auto_backbone_feature_maps_are_the_encoder_hidden_states(tmp_path):
    from huggingface_hub import HfApi
    from hub_server import serve_hub

    torch.manual_seed(0)
    model = hf_mae.create_model("mae-tiny").eval()  # a pre-training checkpoint: encoder + decoder
    model.save_pretrained(tmp_path / "mae")
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        hidden = model.mae(pixels, mask_ratio=0.0, output_hidden_states=True).hidden_states
    rows = cols = 32 // 4
    # transformers 5.24's AutoBackbone.from_pretrained asks the Hub whether a repo exists before loading, so a
    # local folder fails there (for its own backbones too); by repo id it loads, as a user's would from the Hub
    with serve_hub() as hub, hub.patched_client(tmp_path / "hf_home"):
        HfApi().create_repo("org/mae-tiny")
        HfApi().upload_folder(repo_id="org/mae-tiny", folder_path=tmp_path / "mae")
        backbone = AutoBackbone.from_pretrained("org/mae-tiny", out_indices=[0, 2, 4], cache_dir=tmp_path / "cache")
    local, info = MAEBackbone.from_pretrained(tmp_path / "mae", out_indices=[0, 2, 4], output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]  # the encoder's weights; the decoder ignored
    for loaded in (backbone.eval(), local.eval()):
        assert type(loaded) is MAEBackbone
        assert loaded.stage_names == ["stem", "stage1", "stage2", "stage3", "stage4"]
        assert loaded.out_features == ["stem", "stage2", "stage4"] and loaded.out_indices == [0, 2, 4]
        assert loaded.channels == [128, 128, 128]
        with torch.no_grad():
            out = loaded(pixels, output_hidden_states=True)
        assert [tuple(f.shape) for f in out.feature_maps] == [(2, 128, rows, cols)] * 3
        for feature_map, stage in zip(out.feature_maps, (0, 2, 4)):
            torch.testing.assert_close(feature_map, as_map(hidden[stage], rows, cols), rtol=0, atol=1e-6)
        assert len(out.hidden_states) == 5


def test_simmim_and_method_subclass_backbones():
    torch.manual_seed(0)
    encoder = hf_mae.create_model("simmim-tiny", task="base").eval()
    config = hf_mae.create_config("simmim-tiny")
    config.out_features = ["stage1", "stage2"]
    backbone = AutoBackbone.from_config(config).eval()
    assert type(backbone) is SimMIMBackbone and backbone.out_indices == [1, 2]
    backbone.simmim.load_state_dict(encoder.state_dict())
    pixels = torch.randn(2, 3, 32, 32)
    grid = encoder.embeddings.patch_embeddings.grid_for(pixels)
    with torch.no_grad():
        hidden = encoder(pixels, mask_ratio=0.0, output_hidden_states=True).hidden_states
        maps = backbone(pixels).feature_maps
    for feature_map, stage in zip(maps, (1, 2)):
        torch.testing.assert_close(feature_map, as_map(hidden[stage], *grid), rtol=0, atol=1e-6)

    colormae = register_backbone(hf_mae.ColorMAEConfig, hf_mae.ColorMAEModel)  # a method on MAE's encoder
    assert colormae.__name__ == "ColorMAEBackbone" and issubclass(colormae, MAEBackbone)
    assert colormae.config_class is hf_mae.ColorMAEConfig
    assert type(AutoBackbone.from_config(hf_mae.create_config("colormae-tiny"))) is colormae
    assert register_backbone(hf_mae.AudioMAEConfig, hf_mae.AudioMAEModel) is None  # spectrograms: no image backbone


def test_chosen_stages_are_checked():
    config = hf_mae.create_config("mae-tiny")
    with pytest.raises(ValueError, match="out_indices"):
        MAEBackbone(config, out_indices=[7])
    with pytest.raises(ValueError, match="out_features"):
        MAEBackbone(config, out_features=["stage9"])
    backbone = MAEBackbone(config, out_indices=[1, 3])
    backbone.out_features = ["stage4"]  # the setter re-aligns out_indices, as on transformers' backbones
    assert backbone.out_indices == [4] and backbone.channels == [128]


def upernet():
    from transformers import UperNetConfig, UperNetForSemanticSegmentation

    backbone_config = hf_mae.create_config("mae-tiny")
    backbone_config.out_indices = [1, 2, 3, 4]  # UperNet's FCN auxiliary head reads the third map
    config = UperNetConfig(backbone_config=backbone_config, hidden_size=16, auxiliary_channels=8, pool_scales=[1, 2],
                           num_labels=3)  # fmt: skip
    return UperNetForSemanticSegmentation(config)


def test_upernet_on_the_backbone_trains():
    torch.manual_seed(0)
    model = upernet()
    assert type(model.backbone) is MAEBackbone and model.backbone.channels == [128] * 4
    pixels, labels = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
    out = model(pixel_values=pixels, labels=labels)
    assert out.logits.shape == (2, 3, 32, 32) and torch.isfinite(out.loss)
    out.loss.backward()
    grad = model.backbone.mae.layers[0].attention.qkv.weight.grad
    assert grad is not None and grad.abs().sum() > 0  # the loss reaches the encoder


def test_upernet_on_the_backbone_reloads(tmp_path):
    from transformers import UperNetForSemanticSegmentation

    torch.manual_seed(0)
    model = upernet().eval()
    model.save_pretrained(tmp_path)
    reloaded = UperNetForSemanticSegmentation.from_pretrained(tmp_path).eval()
    assert reloaded.backbone.out_indices == [1, 2, 3, 4]
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=pixels).logits, model(pixel_values=pixels).logits,
                                   rtol=0, atol=1e-6)


@pytest.mark.parametrize("preset", ["colormae-tiny", "hpm-tiny", "cropmae-tiny", "dmjd-tiny", "lut-tiny",
                                    "mixedae-tiny"])
def test_every_mae_image_method_has_its_backbone(preset):
    """Each MAE-based image method gets <Method>Backbone over its own encoder, with the same feature maps."""
    torch.manual_seed(0)
    encoder = hf_mae.create_model(preset, task="base").eval()
    config = hf_mae.create_config(preset)
    backbone_class = register_backbone(type(config), type(encoder))
    assert backbone_class.__name__ == type(encoder).__name__.removesuffix("Model") + "Backbone"
    config.out_indices = [config.num_hidden_layers]
    backbone = AutoBackbone.from_config(config).eval()
    assert type(backbone) is backbone_class
    backbone.mae.load_state_dict(encoder.state_dict())
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        last = encoder(pixels, mask_ratio=0.0, output_hidden_states=True).hidden_states[-1]
        (feature_map,) = backbone(pixels).feature_maps
    torch.testing.assert_close(feature_map, as_map(last, 8, 8), rtol=0, atol=1e-6)
