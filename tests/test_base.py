"""The shared base (hf_mae/modeling/base.py): config validators and refusing transformers folders that
``hf-mae convert`` reads."""

import pytest
import torch
import transformers

import hf_mae
from hf_mae.modeling.base import check_choice, check_heads, check_int, check_rate


def test_validators_name_the_field_the_value_and_what_is_allowed():
    assert check_int("num_hidden_layers", 3) == 3 and check_int("depth", 0, minimum=0) == 0
    for bad in (0, -2, 2.0, True, "3"):
        with pytest.raises(ValueError, match=r"num_hidden_layers must be an int >= 1, got"):
            check_int("num_hidden_layers", bad)
    assert check_rate("mask_ratio", 0.0) == 0.0 and check_rate("drop", 1.0, closed=True) == 1.0
    with pytest.raises(ValueError, match=r"mask_ratio must be a number in \[0, 1\), got 1.0"):
        check_rate("mask_ratio", 1.0)
    with pytest.raises(ValueError, match=r"drop must be a number in \[0, 1\], got -0.1"):
        check_rate("drop", -0.1, closed=True)
    assert check_choice("pool", "cls", ("mean", "cls")) == "cls"
    with pytest.raises(ValueError, match=r"pool must be one of 'mean', 'cls'; got 'max'"):
        check_choice("pool", "max", ("mean", "cls"))
    assert check_rate("mask_rate", 0.5, allow_zero=False) == 0.5
    for bad in (0.0, 1.0, float("nan"), "0.5"):
        with pytest.raises(ValueError, match=r"^mask_rate must be a number in \(0, 1\), got "):
            check_rate("mask_rate", bad, allow_zero=False)
    check_heads("hidden_size", 64, "num_attention_heads", 4)
    with pytest.raises(ValueError, match=r"^hidden_sizes\[1\] 30 must be divisible by num_attention_heads 4$"):
        check_heads("hidden_sizes[1]", 30, "num_attention_heads", 4)
    with pytest.raises(ValueError, match=r"^hidden_size 30 must be divisible by num_attention_heads 4 \(GAT\)$"):
        check_heads("hidden_size", 30, "num_attention_heads", 4, why="GAT")


def tiny_vit_mae_folder(path):
    config = transformers.ViTMAEConfig(
        image_size=32, patch_size=4, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
        decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
        decoder_intermediate_size=64,
    )  # fmt: skip
    transformers.ViTMAEForPreTraining(config).save_pretrained(path)
    return path


@pytest.mark.parametrize("model_class", [hf_mae.MAEForPreTraining, hf_mae.MAEModel, hf_mae.MAEForImageClassification])
def test_a_transformers_vit_mae_folder_is_refused_with_the_convert_command(model_class, tmp_path):
    folder = tiny_vit_mae_folder(tmp_path / "vit-mae")
    with pytest.raises(ValueError, match=r"holds a transformers 'vit_mae' model.*hf-mae convert vit-mae"):
        model_class.from_pretrained(folder)
    with pytest.raises(ValueError, match="hf-mae convert vit-mae"):  # an explicit config path is checked too
        model_class.from_pretrained(None, config=str(folder))


def test_a_transformers_videomae_folder_is_refused(tmp_path):
    config = transformers.VideoMAEConfig(
        image_size=32, patch_size=8, num_frames=4, tubelet_size=2, hidden_size=32, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=64, decoder_hidden_size=32, decoder_num_hidden_layers=1,
        decoder_num_attention_heads=2, decoder_intermediate_size=64,
    )  # fmt: skip
    transformers.VideoMAEForPreTraining(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="hf-mae convert videomae"):
        hf_mae.VideoMAEForPreTraining.from_pretrained(tmp_path)


def test_hf_mae_folders_and_converted_ones_still_load(tmp_path):
    folder = tiny_vit_mae_folder(tmp_path / "vit-mae")
    from hf_mae.convert import convert_vit_mae_folder

    convert_vit_mae_folder(folder, tmp_path / "converted")
    model = hf_mae.MAEForPreTraining.from_pretrained(tmp_path / "converted")
    reference = transformers.ViTMAEForPreTraining.from_pretrained(folder)
    assert model.mae.embeddings.patch_embeddings.projection.weight.equal(
        reference.vit.embeddings.patch_embeddings.projection.weight
    )
    mae = hf_mae.create_model("mae-tiny")
    mae.save_pretrained(tmp_path / "mae")
    loaded = hf_mae.MAEForPreTraining.from_pretrained(tmp_path / "mae")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in mae.state_dict().items())
