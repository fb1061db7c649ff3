"""hf-mae convert pointmae-official: official Pang-Yatian/Point-MAE state dicts (``Point_MAE`` pre-training,
``PointTransformer`` fine-tuned) <-> hf-mae Point-MAE.

The official code needs CUDA extensions, so CI checks the conversion against hf-mae itself: ours -> official layout
-> ours must give identical state dicts (every weight and BatchNorm statistic) and identical outputs for the same
noise, through the Python API and the CLI. The one-time check against the official model code (max |diff| 4.3e-6 on
the paper-size model, 0 with eager attention) is reported in the README."""

import pytest
import torch
from transformers import AutoFeatureExtractor, AutoModelForPreTraining

import hf_mae
from hf_mae.cli import main
from hf_mae.convert import (
    convert_pointmae_official,
    pointmae_official_config,
    to_mae_official_state_dict,
    to_pointmae_official_state_dict,
)
from hf_mae.modeling.pointmae import PointMAEConfig, PointMAEForPointCloudClassification, PointMAEForPreTraining

# The official modules fix the mini-PointNet (128, 256, 512), the position MLPs (128), mlp_ratio 4 and the head's 256
# units; everything else is small. The heads (4 and 2) are not the paper's 6, so they must be passed back.
OFFICIAL_TINY = dict(
    num_points=128, num_groups=8, group_size=16, embedding_channels=[128, 256, 512], position_hidden_size=128,
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, decoder_num_hidden_layers=1,
    decoder_num_attention_heads=2,
)  # fmt: skip
NOT_IN_WEIGHTS = dict(num_heads=4, decoder_num_heads=2, num_groups=8, num_points=128)
CLI_FLAGS = ["--num-heads", "4", "--decoder-num-heads", "2", "--num-groups", "8", "--num-points", "128"]


def randomised(model):
    """``model`` in eval mode with random values in every weight and BatchNorm statistic (a fresh model holds 1/0
    norms, zero biases and 0/1 running stats, under which a swapped or dropped weight would not show)."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                tensor.fill_(5)  # num_batches_tracked
            elif name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            else:
                tensor.add_(0.1 * torch.randn(tensor.shape, generator=generator))
    return model.eval()


def pretraining_model():
    return randomised(PointMAEForPreTraining(PointMAEConfig(**OFFICIAL_TINY)))


def classifier_model(num_labels=5):
    return randomised(PointMAEForPointCloudClassification(PointMAEConfig(**OFFICIAL_TINY, num_labels=num_labels)))


def clouds(batch=3):
    return torch.randn(batch, 128, 3, generator=torch.Generator().manual_seed(1)) * 0.5


def assert_same_state(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def assert_same_pretraining_outputs(a, b):
    points, noise = clouds(), torch.rand(3, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want, got = a(points, noise=noise), b(points, noise=noise)
    assert torch.equal(want.mask, got.mask) and torch.equal(want.logits, got.logits)
    assert want.loss.item() == got.loss.item() > 0


def test_pretraining_round_trip_is_exact():
    model = pretraining_model()
    official = to_pointmae_official_state_dict(model)
    # the official Point_MAE names (two nested ``blocks`` in its encoder, one in its decoder), BatchNorm stats included
    for key in ("MAE_encoder.encoder.first_conv.0.weight", "MAE_encoder.encoder.second_conv.1.running_var",
                "MAE_encoder.encoder.first_conv.1.num_batches_tracked", "MAE_encoder.pos_embed.2.bias",
                "MAE_encoder.blocks.blocks.1.attn.qkv.weight", "MAE_encoder.norm.weight", "mask_token",
                "decoder_pos_embed.0.weight", "MAE_decoder.blocks.0.mlp.fc2.bias", "MAE_decoder.norm.bias",
                "increase_dim.0.weight"):  # fmt: skip
        assert key in official, key
    assert len(official) == len(model.state_dict()) == 66  # 46 encoder + 20 decoder tensors
    assert not any(key.endswith("qkv.bias") for key in official)  # Point-MAE's attention has no qkv bias

    back = convert_pointmae_official(official, **NOT_IN_WEIGHTS)
    assert type(back) is PointMAEForPreTraining
    assert_same_state(model.state_dict(), back.state_dict())
    assert back.config.to_diff_dict() == model.config.to_diff_dict()
    assert_same_pretraining_outputs(model, back)


def test_classifier_round_trip_is_exact():
    model = classifier_model(num_labels=5)
    official = to_pointmae_official_state_dict(model)
    for key in ("encoder.first_conv.1.running_mean", "blocks.blocks.0.attn.proj.weight", "pos_embed.0.weight",
                "norm.weight", "cls_token", "cls_pos", "cls_head_finetune.5.running_var",
                "cls_head_finetune.8.weight"):  # fmt: skip
        assert key in official, key
    assert len(official) == len(model.state_dict())

    back = convert_pointmae_official(official, **NOT_IN_WEIGHTS, group_size=16)
    assert type(back) is PointMAEForPointCloudClassification and back.config.num_labels == 5
    assert_same_state(model.state_dict(), back.state_dict())
    with torch.no_grad():
        want, got = model(clouds()).logits, back(clouds()).logits
    assert want.shape == (3, 5) and torch.equal(want, got)


def test_config_is_read_from_the_shapes_with_the_papers_heads():
    paper = hf_mae.create_model("pointmae-shapenet")
    config = pointmae_official_config(to_pointmae_official_state_dict(paper))
    for field in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "group_size",
                  "embedding_channels", "position_hidden_size", "decoder_num_hidden_layers",
                  "decoder_num_attention_heads", "qkv_bias", "layer_norm_eps", "num_points", "num_groups"):  # fmt: skip
        assert getattr(config, field) == getattr(paper.config, field), field
    paper_sizes = (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.group_size)
    assert paper_sizes == (384, 12, 6, 32)

    # settings that are not weights come from arguments; those the weights fix must agree with them
    official = to_pointmae_official_state_dict(pretraining_model())
    config = pointmae_official_config(official, 4, 2, num_groups=8, num_points=128, mask_type="block", mask_ratio=0.5)
    assert (config.group_size, config.num_groups, config.mask_type, config.mask_ratio) == (16, 8, "block", 0.5)
    with pytest.raises(ValueError, match="--num-heads.*width 32 is not divisible by the paper's 6"):
        pointmae_official_config(official)
    with pytest.raises(ValueError, match="group_size=32 but the weights give 16"):
        pointmae_official_config(official, 4, 2, group_size=32)
    with pytest.raises(ValueError, match=r"unknown PointMAEConfig field\(s\) \['num_group'\]"):
        pointmae_official_config(official, 4, 2, num_group=8)


def test_checkpoint_wrappers_and_ddp_prefix_are_accepted():
    model = pretraining_model()
    official = to_pointmae_official_state_dict(model)
    ddp = {f"module.{key}": tensor for key, tensor in official.items()}
    for checkpoint in ({"base_model": ddp, "epoch": 300}, {"model": official}, ddp):
        assert_same_state(model.state_dict(), convert_pointmae_official(checkpoint, **NOT_IN_WEIGHTS).state_dict())


def test_cli_round_trips_both_models(tmp_path):
    model = pretraining_model()
    model.save_pretrained(tmp_path / "ours")
    assert main(["convert", "--to", "pointmae-official", str(tmp_path / "ours"), str(tmp_path / "pretrain.pth")]) == 0
    saved = torch.load(tmp_path / "pretrain.pth", weights_only=True)
    assert list(saved) == ["base_model"]  # what the official tools/builder.load_model reads
    assert_same_state(saved["base_model"], to_pointmae_official_state_dict(model))

    args = ["convert", "pointmae-official", str(tmp_path / "pretrain.pth"), str(tmp_path / "back"), *CLI_FLAGS]
    assert main(args) == 0
    back = AutoModelForPreTraining.from_pretrained(tmp_path / "back").eval()
    assert type(back) is PointMAEForPreTraining
    assert_same_state(model.state_dict(), back.state_dict())
    assert_same_pretraining_outputs(model, back)
    assert AutoFeatureExtractor.from_pretrained(tmp_path / "back").num_points == 128

    classifier = classifier_model(num_labels=7)
    classifier.save_pretrained(tmp_path / "cls")
    assert main(["convert", "--to", "pointmae-official", str(tmp_path / "cls"), str(tmp_path / "cls.pth")]) == 0
    args = ["convert", "pointmae-official", str(tmp_path / "cls.pth"), str(tmp_path / "cls_back"), *CLI_FLAGS]
    assert main([*args, "--group-size", "16"]) == 0
    back = PointMAEForPointCloudClassification.from_pretrained(tmp_path / "cls_back").eval()
    assert back.config.num_labels == 7
    with torch.no_grad():
        assert torch.equal(classifier(clouds()).logits, back(clouds()).logits)


def leftovers(folder, name):
    return [path.name for path in folder.iterdir() if name in path.name]


def test_bad_checkpoints_are_refused_by_name_and_nothing_is_written(tmp_path):
    official = to_pointmae_official_state_dict(pretraining_model())
    cases = {
        "not_pointmae": ({"model": {"patch_embed.proj.weight": torch.zeros(8, 3, 4, 4)}},
                         r"not an official Point-MAE state dict.*patch_embed.proj.weight"),
        "missing": ({key: t for key, t in official.items() if key not in ("MAE_decoder.norm.bias",
                     "MAE_encoder.encoder.first_conv.1.running_mean")},
                    r"missing \['MAE_decoder.norm.bias', 'MAE_encoder.encoder.first_conv.1.running_mean'\], "
                    r"unexpected \[\]"),
        "unexpected": ({**official, "MAE_encoder.cls_token": torch.zeros(1, 1, 32)},
                       r"missing \[\], unexpected \['MAE_encoder.cls_token'\]"),
        # block 0's qkv bias makes the config ask for one in every block
        "qkv_bias": ({**official, "MAE_encoder.blocks.blocks.0.attn.qkv.bias": torch.zeros(96)},
                     r"missing \['MAE_decoder.blocks.0.attn.qkv.bias', 'MAE_encoder.blocks.blocks.1.attn.qkv.bias'\]"),
        "shape": ({**official, "mask_token": torch.zeros(1, 1, 31)}, "does not fit PointMAEForPreTraining"),
        "junk": ([1, 2, 3], "checkpoint must be a dict"),
    }  # fmt: skip
    for name, (checkpoint, message) in cases.items():
        torch.save(checkpoint, tmp_path / f"{name}.pth")
        dst = tmp_path / f"{name}_out"
        with pytest.raises(ValueError, match=message):
            main(["convert", "pointmae-official", str(tmp_path / f"{name}.pth"), str(dst), *CLI_FLAGS])
        assert leftovers(tmp_path, f"{name}_out") == []  # no DST, no staging folder


def test_bad_arguments_name_the_argument(tmp_path):
    tiny_preset = hf_mae.create_model("pointmae-tiny")  # a slimmer mini-PointNet than the official Encoder
    with pytest.raises(ValueError, match=r"embedding_channels=\[32, 64, 128\] \(official: \[128, 256, 512\]\)"):
        to_pointmae_official_state_dict(tiny_preset)
    with pytest.raises(ValueError, match="qkv_bias=True"):
        to_pointmae_official_state_dict(PointMAEForPreTraining(PointMAEConfig(**OFFICIAL_TINY, qkv_bias=True)))
    with pytest.raises(TypeError, match="model must be one of .* got PointMAEModel"):
        to_pointmae_official_state_dict(hf_mae.create_model("pointmae-tiny", task="base"))
    with pytest.raises(TypeError, match="checkpoint must be a dict"):
        convert_pointmae_official([("mask_token", torch.zeros(1))])
    with pytest.raises(ValueError, match="model cannot be converted to mae-official"):  # the MAE path is unchanged
        to_mae_official_state_dict(hf_mae.create_model("mae-tiny", qkv_bias=False))

    pretraining_model().save_pretrained(tmp_path / "ours")
    with pytest.raises(ValueError, match="--num-points, --num-groups and --group-size apply only to FORMAT"):
        main(["convert", "--to", "pointmae-official", "--num-groups", "8", str(tmp_path / "ours"), str(tmp_path / "y")])
    hf_mae.create_model("mae-tiny").save_pretrained(tmp_path / "mae")
    with pytest.raises(ValueError, match="SRC .* holds a 'mae' model; this conversion reads 'pointmae'"):
        main(["convert", "--to", "pointmae-official", str(tmp_path / "mae"), str(tmp_path / "x.pth")])
    (tmp_path / "exists.pth").write_bytes(b"keep me")
    with pytest.raises(ValueError, match="DST .* already exists; pass --overwrite"):
        main(["convert", "--to", "pointmae-official", str(tmp_path / "ours"), str(tmp_path / "exists.pth")])
    assert (tmp_path / "exists.pth").read_bytes() == b"keep me"
    assert main(["convert", "--to", "pointmae-official", "--overwrite", str(tmp_path / "ours"),
                 str(tmp_path / "exists.pth")]) == 0  # fmt: skip
    assert "base_model" in torch.load(tmp_path / "exists.pth", weights_only=True)
