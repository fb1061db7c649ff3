"""The ViT config bases (hf_mae/modeling/base.py): ViTEncoderConfig, ViTImageConfig and ViTDecoderMixin declare and
check the shared fields once, and every ViT-family config inherits them."""

import dataclasses

import pytest
from transformers import PreTrainedConfig

import hf_mae
from hf_mae import registry
from hf_mae.modeling.base import ViTDecoderMixin, ViTEncoderConfig, ViTImageConfig
from hf_mae.modeling.presets import TINY, TINY_ENCODER, TINY_VIDEO

LVMAE_TINY = dict(
    embedding_dim=32, max_segments=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
    intermediate_size=64, decoder_hidden_size=16, decoder_num_hidden_layers=1, decoder_num_attention_heads=2,
    decoder_intermediate_size=32,
)  # fmt: skip
# (config class, tiny kwargs) for the five configs built on the bases
BASED = [
    (hf_mae.MAEConfig, TINY),
    (hf_mae.SimMIMConfig, dict(TINY_ENCODER, mask_patch_size=8)),
    (hf_mae.MP3Config, TINY_ENCODER),
    (hf_mae.HfVideoMAEConfig, TINY_VIDEO),
    (hf_mae.LVMAEConfig, LVMAE_TINY),
]
WITH_DECODER = [(cls, kwargs) for cls, kwargs in BASED if issubclass(cls, ViTDecoderMixin)]
IDS = [cls.__name__ for cls, _ in BASED]


def own_fields(config_class) -> set:
    return {field.name for field in dataclasses.fields(config_class)} - {
        field.name for field in dataclasses.fields(PreTrainedConfig)
    }


def test_the_five_configs_derive_from_the_bases():
    assert [issubclass(cls, ViTImageConfig) for cls, _ in BASED] == [True, True, True, True, False]
    assert [issubclass(cls, ViTDecoderMixin) for cls, _ in BASED] == [True, False, False, True, True]
    assert all(issubclass(cls, ViTEncoderConfig) for cls, _ in BASED)
    assert len(own_fields(ViTEncoderConfig)) == 11 and len(own_fields(ViTImageConfig)) == 14
    assert len(own_fields(ViTDecoderMixin)) == 15
    # subclasses of the five (HPM, CropMAE, VideoMAE V2, ...) inherit the bases through them
    assert sum(issubclass(method.config_class, ViTEncoderConfig) for method in registry.METHODS.values()) == 29  # + I-JEPA, DMT-JEPA, CRATE-MAE, FMAE, MultiMAE, M3AE (its fusion and MIM decoder)


@pytest.mark.parametrize("config_class, kwargs", BASED, ids=IDS)
def test_the_bases_reject_bad_values_naming_the_field(config_class, kwargs):
    config_class(**kwargs)  # the tiny sizes are valid
    bad = {
        "hidden_size 30 must be divisible by num_attention_heads 4": dict(hidden_size=30, num_attention_heads=4),
        "num_hidden_layers must be an int >= 1, got -1": dict(num_hidden_layers=-1),
        "num_attention_heads must be an int >= 1, got 0": dict(num_attention_heads=0),
        "intermediate_size must be an int >= 1, got 2.5": dict(intermediate_size=2.5),
        r"drop_path_rate must be a number in \[0, 1\), got 1.0": dict(drop_path_rate=1.0),
        r"hidden_dropout_prob must be a number in \[0, 1\), got -0.1": dict(hidden_dropout_prob=-0.1),
        r"attention_probs_dropout_prob must be a number in \[0, 1\), got 'x'": dict(attention_probs_dropout_prob="x"),
    }
    for message, values in bad.items():
        with pytest.raises(ValueError, match=f"^{message}$"):
            config_class(**{**kwargs, **values})


@pytest.mark.parametrize("config_class, kwargs", WITH_DECODER, ids=[cls.__name__ for cls, _ in WITH_DECODER])
def test_the_decoder_mixin_rejects_bad_values_naming_the_field(config_class, kwargs):
    bad = {
        "decoder_hidden_size 18 must be divisible by decoder_num_attention_heads 4": dict(
            decoder_hidden_size=18, decoder_num_attention_heads=4
        ),
        "decoder_num_hidden_layers must be an int >= 1, got 0": dict(decoder_num_hidden_layers=0),
        "decoder_intermediate_size must be an int >= 1, got True": dict(decoder_intermediate_size=True),
    }
    for message, values in bad.items():
        with pytest.raises(ValueError, match=f"^{message}$"):
            config_class(**{**kwargs, **values})


def test_the_image_base_and_the_method_checks():
    with pytest.raises(ValueError, match=r"^image_size 30 must be divisible by patch_size 4$"):
        hf_mae.MAEConfig(**{**TINY, "image_size": 30})
    with pytest.raises(ValueError, match=r"^image_size \(32, 30\) must be divisible by patch_size 4$"):
        hf_mae.MP3Config(**{**TINY_ENCODER, "image_size": (32, 30)})
    with pytest.raises(ValueError, match=r"^num_channels must be an int >= 1, got 0$"):
        hf_mae.HfVideoMAEConfig(**{**TINY_VIDEO, "num_channels": 0})
    with pytest.raises(ValueError, match=r"^classifier_pooling must be one of 'mean', 'cls'; got 'max'$"):
        hf_mae.MAEConfig(**{**TINY, "classifier_pooling": "max"})
    with pytest.raises(ValueError, match=r"^loss must be one of 'mse', 'cosine'; got 'l1'$"):
        hf_mae.LVMAEConfig(**{**LVMAE_TINY, "loss": "l1"})
    with pytest.raises(ValueError, match=r"^decoder_hidden_size 66 must be divisible by 4 \(2D sin-cos positions\)$"):
        hf_mae.MAEConfig(**{**TINY, "decoder_hidden_size": 66, "decoder_num_attention_heads": 2})
    with pytest.raises(ValueError, match=r"^hidden_size 33 must be even \(sin-cos positions\)$"):
        hf_mae.LVMAEConfig(**{**LVMAE_TINY, "hidden_size": 33, "num_attention_heads": 1})
    assert hf_mae.MAEConfig(**TINY).grid_size == (8, 8) and hf_mae.HfVideoMAEConfig(**TINY_VIDEO).grid_size == (4, 4, 4)


@pytest.mark.parametrize("config_class, kwargs", BASED, ids=IDS)
def test_a_config_round_trips_with_its_inherited_fields(config_class, kwargs):
    inherited = dict(
        hidden_act="relu", qkv_bias=False, layer_norm_eps=1e-5, hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.2, drop_path_rate=0.3, initializer_range=0.01,
    )  # fmt: skip
    if issubclass(config_class, ViTDecoderMixin):
        inherited.update(decoder_num_hidden_layers=3)
    config = config_class(**{**kwargs, **inherited})
    saved = config.to_dict()
    assert {name: saved[name] for name in inherited} == inherited
    assert own_fields(config_class) <= set(saved)
    again = config_class.from_dict(saved)
    assert type(again) is config_class and again.to_dict() == saved
    assert config_class.from_dict(config_class().to_dict()).to_dict() == config_class().to_dict()


def test_a_method_redeclares_a_shared_field_only_to_change_its_default():
    """A config that redeclares an inherited field must give it another default or type (SimMIM's int-only
    patch_size); else the line only repeats the base."""
    repeated = []
    for method in registry.METHODS.values():
        for cls in method.config_class.__mro__:
            if cls is PreTrainedConfig or not issubclass(cls, PreTrainedConfig):
                continue
            inherited = {}
            for base in cls.__bases__:
                inherited.update(getattr(base, "__dataclass_fields__", {}))
            for name in vars(cls).get("__annotations__", {}):
                field, base_field = cls.__dataclass_fields__[name], inherited.get(name)
                if base_field is not None and (field.default, field.type) == (base_field.default, base_field.type):
                    repeated.append(f"{cls.__name__}.{name}")
    assert not repeated, sorted(set(repeated))


def test_decoder_block_kwargs():
    config = hf_mae.HfVideoMAEConfig(**TINY_VIDEO, hidden_act="relu", layer_norm_eps=1e-5)
    expected = dict(
        hidden_size=64, num_heads=4, intermediate_size=256, hidden_act="relu", qkv_bias=True, layer_norm_eps=1e-5
    )
    assert config.decoder_block_kwargs() == expected
    assert config.decoder_block_kwargs(qkv_bias="qv") == {**expected, "qkv_bias": "qv"}
    model = hf_mae.VideoMAEForPreTraining(config)
    block = model.decoder.decoder_layers[0]
    assert len(model.decoder.decoder_layers) == 2 and block.mlp.fc1.out_features == 256
    assert block.norm1.eps == 1e-5 and block.attention.num_heads == 4 and block.attention.q_bias is not None
