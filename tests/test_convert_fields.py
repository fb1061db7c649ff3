"""hf_mae.convert's config mappings are derived from the config classes, not listed by hand: a field that both
sides declare is converted without another edit; and the command line shows the stages of a conversion."""

import pytest
from transformers import PreTrainedConfig, VideoMAEConfig, ViTConfig, ViTMAEConfig

import hf_mae
from hf_mae.cli import main
from hf_mae.convert import mae_config_from_vit_mae, shared_config_fields, videomae_fields, vit_mae_fields
from hf_mae.convert import convert_to_videomae, vit_config_from_simmim, vit_mae_config_from_mae, vit_mim_fields
from hf_mae.modeling.base import ViTDecoderMixin, ViTImageConfig
from hf_mae.modeling.mae import MAEConfig

# The lists convert.py wrote by hand before they were derived (the same meaning under the same name, and VideoMAE's
# one renamed field): the derived mappings must hold exactly these today.
HAND_WRITTEN_VIT_MAE = {
    "image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "intermediate_size", "hidden_act", "qkv_bias", "layer_norm_eps", "hidden_dropout_prob",
    "attention_probs_dropout_prob", "decoder_hidden_size", "decoder_num_hidden_layers",
    "decoder_num_attention_heads", "decoder_intermediate_size", "mask_ratio", "norm_pix_loss", "initializer_range",
}  # fmt: skip
HAND_WRITTEN_VIT_MIM = {
    "image_size", "patch_size", "num_channels", "hidden_size", "num_hidden_layers", "num_attention_heads",
    "intermediate_size", "hidden_act", "qkv_bias", "layer_norm_eps", "hidden_dropout_prob",
    "attention_probs_dropout_prob", "initializer_range", "encoder_stride",
}  # fmt: skip
HAND_WRITTEN_VIDEOMAE = {(name, name) for name in (
    "image_size", "patch_size", "num_channels", "num_frames", "tubelet_size", "hidden_size", "num_hidden_layers",
    "num_attention_heads", "intermediate_size", "hidden_act", "layer_norm_eps", "hidden_dropout_prob",
    "attention_probs_dropout_prob", "decoder_hidden_size", "decoder_num_hidden_layers", "decoder_num_attention_heads",
    "decoder_intermediate_size", "norm_pix_loss", "initializer_range",
)} | {("qkv_bias", "qv_bias")}  # fmt: skip


def test_derived_mappings_hold_the_hand_written_lists():
    assert set(vit_mae_fields()) == {(name, name) for name in HAND_WRITTEN_VIT_MAE}
    assert set(vit_mim_fields()) == {(name, name) for name in HAND_WRITTEN_VIT_MIM}
    assert set(videomae_fields()) == HAND_WRITTEN_VIDEOMAE
    assert len(vit_mae_fields()) == 19 and len(vit_mim_fields()) == 14 and len(videomae_fields()) == 20
    # PreTrainedConfig's own fields (id2label, architectures, ...) are never part of a mapping
    assert not {"id2label", "architectures", "dtype"} & {ours for ours, _ in vit_mae_fields()}


def shared_vit_fields(config_class) -> set:
    """The fields a config base declares itself or inherits from another base (not PreTrainedConfig's)."""
    return set(config_class.__dataclass_fields__) - set(PreTrainedConfig.__dataclass_fields__)


def test_the_config_bases_fields_are_converted_where_transformers_declares_them():
    """The shared ViT fields are declared once (modeling/base.py); the conversions carry every one of them, except
    stochastic depth, which transformers' ViT configs do not have."""
    image, decoder = shared_vit_fields(ViTImageConfig), shared_vit_fields(ViTDecoderMixin)
    assert len(image) == 14 and len(decoder) == 15
    assert (image | decoder) - {ours for ours, _ in vit_mae_fields()} == {"drop_path_rate"}
    assert image - {ours for ours, _ in vit_mim_fields()} == {"drop_path_rate"}
    assert (image | decoder) - {ours for ours, _ in videomae_fields()} == {"drop_path_rate"}


class RegisterMAEConfig(MAEConfig):
    register_tokens: int = 0  # a field a future MAE variant might add


class RegisterViTMAEConfig(ViTMAEConfig):
    register_tokens: int = 0


def test_a_field_added_to_both_configs_is_converted(monkeypatch):
    pairs = shared_config_fields(RegisterMAEConfig, RegisterViTMAEConfig)
    assert ("register_tokens", "register_tokens") in pairs and len(pairs) == 20
    assert ("register_tokens", "register_tokens") not in shared_config_fields(RegisterMAEConfig, ViTMAEConfig)

    # through the conversion functions themselves: the new field is carried both ways with no edit in convert/
    monkeypatch.setattr("hf_mae.convert.vit_mae.MAEConfig", RegisterMAEConfig)
    monkeypatch.setattr("hf_mae.convert.vit_mae.ViTMAEConfig", RegisterViTMAEConfig)
    ours = mae_config_from_vit_mae(RegisterViTMAEConfig(register_tokens=4, hidden_size=48))
    assert isinstance(ours, RegisterMAEConfig) and ours.register_tokens == 4 and ours.hidden_size == 48
    theirs = vit_mae_config_from_mae(RegisterMAEConfig(register_tokens=7))
    assert isinstance(theirs, RegisterViTMAEConfig) and theirs.register_tokens == 7


def test_renamed_fields_replace_their_shared_name():
    class Ours(ViTConfig):
        extra: int = 0

    class Theirs(VideoMAEConfig):
        other_extra: int = 0

    pairs = shared_config_fields(Ours, Theirs, (("extra", "other_extra"),))
    assert pairs[-1] == ("extra", "other_extra") and ("extra", "extra") not in pairs
    assert [ours for ours, _ in pairs].count("extra") == 1


def test_the_command_line_shows_the_stages(tmp_path, capsys):
    hf_mae.create_model("mae-tiny").save_pretrained(tmp_path / "ours")
    assert main(["convert", "--to", "mae-official", str(tmp_path / "ours"), str(tmp_path / "official.pth")]) == 0
    captured = capsys.readouterr()
    stages = ["0/3, read SRC", "1/3, convert", "2/3, write DST", "3/3, done"]
    assert all(f"convert mae -> mae-official: {stage}" in captured.err for stage in stages), captured.err
    assert f"converted mae {tmp_path / 'ours'} -> mae-official {tmp_path / 'official.pth'}" in captured.out


def test_vit_routes_share_the_size_and_block_checks():
    with pytest.raises(ValueError, match=r"^patch_size must be square to convert to vit-mae .* got \(4, 8\)$"):
        vit_mae_config_from_mae(hf_mae.create_config("mae-tiny", patch_size=(4, 8)))
    with pytest.raises(ValueError, match=r"^layer_scale_init_value=0.1: .* cannot be converted to vit-mim"):
        vit_config_from_simmim(hf_mae.create_config("simmim-tiny", layer_scale_init_value=0.1))
    with pytest.warns(UserWarning, match=r"^vit-mim has no \{'drop_path_rate': 0.2\}: dropped"):
        vit = vit_config_from_simmim(hf_mae.create_config("simmim-tiny", drop_path_rate=0.2))
    assert (vit.image_size, vit.patch_size) == (32, 4)
    with pytest.warns(UserWarning, match=r"^vit-mae has no \{'mask_generator': 'block'\}: dropped"):
        vit = vit_mae_config_from_mae(hf_mae.create_config("mae-tiny", image_size=[32, 32], mask_generator="block"))
    assert (vit.image_size, vit.patch_size) == (32, 4)
    with pytest.raises(ValueError, match=r"^image_size must be square to convert to videomae .* got \(32, 16\)$"):
        convert_to_videomae(hf_mae.create_model("videomae-tiny", image_size=(32, 16)))
