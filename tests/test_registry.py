"""The registry: rows beside their method, discovered; public names generated from the rows.

Each ``hf_mae/modeling/<method>.py`` ends with a ``METHOD`` row; ``hf_mae.registry`` discovers them. These tests pin
the 19 methods and their presets as they were when the rows moved out of ``registry.py`` (plus those added since: CAE, MaskAlign, Hybrid Distillation, MTO, Selfie, SparK),
check that ``hf_mae`` still exports every name it exported then, and add a throwaway method in a temporary package
to show that adding a method is one file with one row.
"""

import importlib
import inspect
import sys
import types

import pytest
from transformers.backbone_utils import BackboneMixin
import torch
from transformers import AutoModelForMaskedImageModeling, PreTrainedModel

import hf_mae
from hf_mae import registry
from hf_mae.processors.image_processing_mae import MAEImageProcessor

# the presets of every method when the rows moved beside their methods
PRESET_NAMES = {
    "audiomae": ["audiomae-tiny", "audiomae-vit-base-patch16"],
    "birdmae": ["birdmae-tiny", "birdmae-vit-base-patch16"],
    "cae": ["cae-tiny", "cae-vit-base-patch16", "cae-vit-large-patch16", "cae-vit-small-patch16"],
    "colormae": ["colormae-tiny", "colormae-vit-base-patch16"],
    "cropmae": ["cropmae-tiny", "cropmae-vit-small-patch16"],
    "cratemae": ["cratemae-crate-base-patch16", "cratemae-crate-large-patch16", "cratemae-crate-small-patch16",
                 "cratemae-crate-tiny-patch16", "cratemae-tiny"],
    "crossvideomae": ["crossvideomae-tiny", "crossvideomae-vit-base-patch16"],
    "dmae": ["dmae-tiny", "dmae-vit-base-patch16"],
    "dmjd": ["dmjd-tiny", "dmjd-vit-base-patch16"],
    "dmtjepa": ["dmtjepa-tiny", "dmtjepa-vit-base-patch16"],
    "fmae": ["fmae-tiny", "fmae-vit-base-patch16", "fmae-vit-large-patch16", "fmae-vit-small-patch16"],
    "graphmae": ["graphmae-citeseer", "graphmae-cora", "graphmae-gin", "graphmae-pubmed", "graphmae-tiny"],
    "hpm": ["hpm-tiny", "hpm-vit-base-patch16"],
    "hybriddistill": ["hybriddistill-tiny", "hybriddistill-vit-base-patch16", "hybriddistill-vit-base-patch16-deit"],
    "i2pmae": ["i2pmae-shapenet", "i2pmae-tiny"],
    "ijepa": ["ijepa-tiny", "ijepa-vit-base-patch16", "ijepa-vit-huge-patch14"],
    "lut": ["lut-tiny", "lut-vit-base-patch16"],
    "lvmae": ["lvmae-languagebind-huge", "lvmae-tiny"],
    "mae": ["mae-tiny", "mae-vit-base-patch16", "mae-vit-huge-patch14", "mae-vit-large-patch16"],
    "maskalign": ["maskalign-tiny", "maskalign-vit-base-patch16", "maskalign-vit-base-patch16-dino",
                  "maskalign-vit-large-patch16"],
    "m3ae": ["m3ae-clip-vit-base-patch16-roberta-base", "m3ae-tiny"],
    "meap": ["meap-llama-0.1b", "meap-tiny"],
    "ramt": ["ramt-clip-vit-base-patch16", "ramt-tiny"],
    "mixedae": ["mixedae-tiny", "mixedae-vit-base-patch16"],
    "mp3": ["mp3-tiny", "mp3-vit-base-patch16", "mp3-vit-small-patch16"],
    "mrmae": ["mrmae-tiny", "mrmae-vit-base-patch16"],
    "mto": ["mto-simmim-vit-base-patch16", "mto-tiny"],
    "multimae": ["multimae-tiny", "multimae-vit-base-patch16"],
    "pointmae": ["pointmae-shapenet", "pointmae-tiny"],
    "qlae": ["qlae-shapes3d", "qlae-tiny"],
    "retromae": ["retromae-bert-base-uncased", "retromae-minilm-l6", "retromae-tiny"],
    "dupmae": ["dupmae-bert-base-uncased", "dupmae-minilm-l6", "dupmae-tiny"],
    "selfie": ["selfie-resnet50-cifar10", "selfie-tiny"],
    "simmim": ["simmim-tiny", "simmim-vit-base-patch16"],
    "spark": ["spark-convnext-small", "spark-convnext-tiny", "spark-resnet50", "spark-tiny"],
    "starbucks": ["starbucks-all-minilm-l6-v2", "starbucks-bert-base-uncased", "starbucks-tiny"],
    "tgm": ["tgm-tiny", "tgm-vit-base-patch16"],
    "videomae": ["videomae-tiny", "videomae-vit-base-patch16", "videomae-vit-large-patch16"],
    "videomaev2": ["videomaev2-tiny", "videomaev2-vit-base-patch16", "videomaev2-vit-giant-patch14"],
}
# method -> (modality, pretrain_lr, processor class, processor settings)
ROW_FACTS = {
    "audiomae": ("audio", None, "AudioMAEFeatureExtractor", {}),
    "birdmae": ("audio", None, "AudioMAEFeatureExtractor", {"augmentations": "birdmae"}),
    "cae": ("image", None, "MAEImageProcessor", {}),
    "colormae": ("image", None, "MAEImageProcessor", {}),
    "cropmae": ("image", None, "TwoViewImageProcessor",
                {"view_mode": "global_to_local", "crop_scale": [0.1, 1.0], "local_crop_scale": [0.3, 0.6]}),
    "cratemae": ("image", None, "MAEImageProcessor", {}),
    "crossvideomae": ("video", None, "MAEVideoProcessor", {}),
    "dmjd": ("image", None, "MAEImageProcessor", {}),
    "dmtjepa": ("image", None, "MAEImageProcessor", {}),
    "fmae": ("image", None, "MAEImageProcessor", {}),
    "graphmae": ("graph", 1e-3, "GraphProcessor", {}),
    "hpm": ("image", None, "MAEImageProcessor", {}),
    "hybriddistill": ("image", None, "MAEImageProcessor", {}),
    "i2pmae": ("point-cloud", 1e-3, "PointCloudFeatureExtractor", {}),
    "ijepa": ("image", None, "MAEImageProcessor", {}),
    "lut": ("image", None, "TwoViewImageProcessor", {"view_mode": "independent"}),
    "lvmae": ("embeddings", None, "LVMAEFeatureExtractor", {}),
    "mae": ("image", None, "MAEImageProcessor", {}),
    "maskalign": ("image", None, "MAEImageProcessor", {}),
    "m3ae": ("image-text", None, "M3AEProcessor", {}),
    "meap": ("text", 4e-4, "MEAPProcessor", {}),
    "ramt": ("image", None, "MAEImageProcessor", {"image_mean": [0.48145466, 0.4578275, 0.40821073],
                                                  "image_std": [0.26862954, 0.26130258, 0.27577711]}),
    "mixedae": ("image", None, "MAEImageProcessor", {}),
    "mp3": ("image", None, "MAEImageProcessor", {}),
    "mto": ("image", None, "MAEImageProcessor", {}),
    "multimae": ("image", None, "MAEImageProcessor", {}),
    "pointmae": ("point-cloud", 1e-3, "PointCloudFeatureExtractor", {}),
    "qlae": ("image", 1e-3, "MAEImageProcessor", {"do_normalize": False}),
    "retromae": ("text", None, "RetroMAEProcessor", {}),
    "dupmae": ("text", None, "DupMAEProcessor", {}),
    "selfie": ("image", None, "MAEImageProcessor", {}),
    "simmim": ("image", None, "MAEImageProcessor", {}),
    "spark": ("image", None, "MAEImageProcessor", {}),
    "starbucks": ("text", None, "StarbucksProcessor", {}),
    "tgm": ("video-text", None, "TGMProcessor", {}),
    "videomae": ("video", None, "MAEVideoProcessor", {}),
    "videomaev2": ("video", None, "MAEVideoProcessor", {}),
}
# preset -> a few config values it sets (sizes from the shared presets, method-specific fields, nested configs)
CONFIG_VALUES = {
    "spark-resnet50": dict(mask_ratio=0.6, decoder_hidden_size=768, densify_norm="bn", grid_size=(7, 7),
                           stage_widths=[256, 512, 1024, 2048]),
    "spark-convnext-small": dict(densify_norm="ln", patch_size=32, stage_widths=[96, 192, 384, 768]),
    "mae-tiny": dict(image_size=32, patch_size=4, hidden_size=128, num_hidden_layers=4, decoder_hidden_size=64),
    "mae-vit-huge-patch14": dict(patch_size=14, hidden_size=1280, num_hidden_layers=32, intermediate_size=5120),
    "simmim-tiny": dict(hidden_size=128, mask_patch_size=8),
    "multimae-tiny": dict(num_encoded_tokens=32, decoder_num_hidden_layers=2, num_global_tokens=1),
    "multimae-vit-base-patch16": dict(num_encoded_tokens=98, decoder_hidden_size=256, decoder_num_attention_heads=8,
                                      dirichlet_alpha=1.0),
    "simmim-vit-base-patch16": dict(image_size=192, mask_ratio=0.6, mask_patch_size=32, hidden_size=768),
    "cropmae-tiny": dict(mask_ratio=0.96875, decoder_num_hidden_layers=2),
    "cropmae-vit-small-patch16": dict(hidden_size=384, num_attention_heads=6, decoder_hidden_size=256,
                                      decoder_intermediate_size=2048, mask_ratio=0.985),
    "cratemae-tiny": dict(hidden_size=128, num_hidden_layers=4, decoder_num_hidden_layers=4, ista_lambda=0.5),
    "cratemae-crate-small-patch16": dict(hidden_size=576, num_attention_heads=12, decoder_num_hidden_layers=12),
    "cratemae-crate-large-patch16": dict(hidden_size=1024, num_hidden_layers=24, decoder_num_hidden_layers=24),
    "hpm-tiny": dict(total_steps=1000, ema_decay=0.99, ema_decay_end=0.999),
    "mp3-vit-small-patch16": dict(hidden_size=384, intermediate_size=1536),
    "videomae-tiny": dict(image_size=32, patch_size=8, num_frames=8, tubelet_size=2),
    "videomaev2-vit-giant-patch14": dict(hidden_size=1408, num_hidden_layers=40, decoder_hidden_size=512),
    "audiomae-tiny": dict(max_length=128, hidden_size=128, decoder_hidden_size=64),
    "lvmae-tiny": dict(embedding_dim=32, max_segments=64, hidden_size=64),
    "pointmae-tiny": dict(num_points=256, num_groups=16, group_size=16, hidden_size=64),
    "i2pmae-tiny": dict(group_counts=[64, 32, 16], hidden_sizes=[32, 64, 96], teacher_feature_dim=32),
    "graphmae-gin": dict(num_features=7, encoder_type="gin", num_hidden_layers=5, pooling="sum",
                         feature_normalization=None),
    "graphmae-citeseer": dict(num_features=3703, num_attention_heads=2, replace_rate=0.1, alpha_l=1.0),
    "tgm-tiny": dict(projection_dim=64, max_text_length=32, tokenizer_name_or_path=None),
    "ijepa-vit-huge-patch14": dict(patch_size=14, hidden_size=1280, decoder_hidden_size=384, decoder_num_hidden_layers=12,
                                   decoder_num_attention_heads=16, num_target_blocks=4, min_keep=10),
    "dmtjepa-vit-base-patch16": dict(hidden_size=768, decoder_hidden_size=384, decoder_num_hidden_layers=6,
                                     decoder_num_attention_heads=12, num_neighbours=4, neighbour_window=3,
                                     target_scale=[0.15, 0.2], context_scale=[0.85, 1.0]),
    "qlae-tiny": dict(image_size=32, num_latents=10, num_latent_values=10, latent_init_bound=0.5),
    "qlae-shapes3d": dict(image_size=64, conv_widths=[32, 64, 128, 256], blocks_per_stage=3, num_latents=12,
                          quantization_loss_weight=0.01, commitment_loss_weight=0.01),
}
# hf_mae.__all__ when the rows moved beside their methods
PUBLIC_NAMES = """
AudioMAEConfig AudioMAEFeatureExtractor AudioMAEForAudioClassification AudioMAEForPreTraining AudioMAEModel
AutoModelForGraphClassification AutoModelForNodeClassification AutoModelForPointCloudClassification BirdMAEConfig
BirdMAEForAudioClassification BirdMAEForPreTraining BirdMAEModel ColorMAEConfig ColorMAEForImageClassification
ColorMAEForPreTraining ColorMAEModel CropMAEConfig CropMAEForImageClassification CropMAEForPreTraining CropMAEModel
CrossVideoMAEConfig CrossVideoMAEForPreTraining CrossVideoMAEForVideoClassification CrossVideoMAEModel DMJDConfig
DMJDForImageClassification DMJDForPreTraining DMJDModel GraphMAEConfig GraphMAEForGraphClassification
GraphMAEForNodeClassification GraphMAEForPreTraining GraphMAEModel GraphProcessor HPMConfig HPMForImageClassification
HPMForPreTraining HPMModel HfVideoMAEConfig I2PMAEConfig I2PMAEForPointCloudClassification I2PMAEForPreTraining
I2PMAEModel LUTConfig LUTForImageClassification LUTForPreTraining LUTModel LVMAEConfig LVMAEFeatureExtractor
LVMAEForPreTraining LVMAEForVideoClassification LVMAEModel MAEConfig MAEForImageClassification MAEForPreTraining
MAEForPreTrainingOutput MAEImageProcessor MAEModel MAEModelOutput MAEPreTrainedModel MAEVideoProcessor METHODS
MP3Config MP3ForImageClassification MP3ForPreTraining MP3Model MixedAEConfig MixedAEForImageClassification
MixedAEForPreTraining MixedAEModel PointCloudFeatureExtractor PointMAEConfig PointMAEForPointCloudClassification
PointMAEForPreTraining PointMAEModel SimMIMConfig SimMIMForImageClassification SimMIMForPreTraining SimMIMModel
TGMConfig TGMForPreTraining TGMForVideoClassification TGMModel TGMProcessor TwoViewImageProcessor
VideoMAEForPreTraining VideoMAEForVideoClassification VideoMAEModel VideoMAEV2Config VideoMAEV2ForPreTraining
VideoMAEV2ForVideoClassification VideoMAEV2Model create_config create_model create_processor list_models
""".split()


def _model_classes_defined_in(module):
    """The task classes a module defines: PreTrainedModel subclasses other than the shared ``*PreTrainedModel`` bases
    and the backbones (``modeling/backbone.py`` derives those from a row's base class; the registry registers them)."""
    return {
        obj for obj in vars(module).values()
        if inspect.isclass(obj) and issubclass(obj, PreTrainedModel) and obj.__module__ == module.__name__
        and not obj.__name__.endswith("PreTrainedModel") and not issubclass(obj, BackboneMixin)
    }


def test_every_modeling_file_with_model_classes_has_a_row_naming_them():
    files_with_models = []
    for module in registry._modules_of(hf_mae.modeling):
        defined = _model_classes_defined_in(module)
        if not defined:
            continue
        files_with_models.append(module.__name__)
        assert hasattr(module, "METHOD"), f"{module.__name__} defines {sorted(c.__name__ for c in defined)} but no row"
        method = registry.METHODS[module.METHOD["name"]]
        assert method.module == module.__name__
        assert defined <= set(method.model_classes.values()), module.__name__  # no task class left out of the row
    assert sorted(files_with_models) == sorted(f"hf_mae.modeling.{name}" for name in PRESET_NAMES)


def test_rows_give_the_registered_methods_with_their_presets():
    assert {name: sorted(method.presets) for name, method in registry.METHODS.items()} == PRESET_NAMES
    assert sorted(registry.PRESETS) == registry.list_models() == sorted(p for ps in PRESET_NAMES.values() for p in ps)
    assert len(registry.METHODS) == 39 and len(registry.PRESETS) == 102  # + MultiMAE, R-AMT, M3AE (2 presets each)
    for name, (modality, lr, processor, settings) in ROW_FACTS.items():
        method = registry.METHODS[name]
        facts = (method.modality, method.pretrain_lr, method.processor_class.__name__,
                 method.processor_settings)
        assert facts == (modality, lr, processor, settings), name
        assert registry.METHOD_BY_CONFIG[method.config_class] is method
        assert set(method.model_classes) <= set(registry.AUTO_CLASSES)
    for preset, values in CONFIG_VALUES.items():
        config = registry.create_config(preset)
        assert {key: getattr(config, key) for key in values} == values, preset
    # decoder-free presets carry no decoder fields; the tiny TGM's nested configs survive the move
    assert not [key for key in registry.METHODS["simmim"].presets["simmim-tiny"] if key.startswith("decoder_")]
    assert registry.METHODS["tgm"].presets["tgm-tiny"]["clip_config"]["vision_config"]["patch_size"] == 8


def test_processors_come_from_the_rows():
    # sized by the config (from_model_config), plus the row's fixed settings
    assert registry.create_processor("mae-tiny").size == {"height": 32, "width": 32}
    assert registry.create_processor("simmim-vit-base-patch16").size == {"height": 192, "width": 192}
    crop = registry.create_processor("cropmae-tiny")
    assert (crop.view_mode, list(crop.crop_scale), list(crop.local_crop_scale)) == ("global_to_local", [0.1, 1.0],
                                                                                     [0.3, 0.6])
    video = registry.create_processor("videomae-tiny")
    assert (video.num_frames, video.size, video.crop_size) == (8, {"shortest_edge": 32}, {"height": 32, "width": 32})
    bird, audio = registry.create_processor("birdmae-tiny"), registry.create_processor("audiomae-tiny")
    assert (bird.sampling_rate, bird.max_length, bird.augmentations) == (32000, 128, "birdmae")
    assert (audio.sampling_rate, audio.augmentations) == (16000, None)
    assert registry.create_processor("pointmae-tiny").num_points == 256
    assert registry.create_processor("graphmae-gin").feature_normalization is None
    assert registry.create_processor("lvmae-tiny").max_segments == 64
    tgm = registry.create_processor("tgm-tiny")
    assert (tgm.max_text_length, tgm.image_processor.num_frames) == (32, 8)


def test_public_names_are_generated_from_the_rows():
    assert set(PUBLIC_NAMES) <= set(hf_mae.__all__)
    assert len(hf_mae.__all__) == len(set(hf_mae.__all__))
    for name in hf_mae.__all__:
        assert getattr(hf_mae, name) is not None, name
    from hf_mae import MAEConfig, MAEModelOutput, SimMIMForPreTraining, TwoViewImageProcessor

    assert MAEConfig is importlib.import_module("hf_mae.modeling.mae").MAEConfig
    assert MAEModelOutput is importlib.import_module("hf_mae.modeling.mae").MAEModelOutput
    assert SimMIMForPreTraining is registry.METHODS["simmim"].model_classes["pretraining"]
    assert TwoViewImageProcessor is registry.METHODS["cropmae"].processor_class
    for method in registry.METHODS.values():  # every class a row names is public
        for cls in (method.config_class, method.processor_class, *method.model_classes.values()):
            assert getattr(hf_mae, cls.__name__) is cls and cls.__name__ in hf_mae.__all__


TOY_METHOD = '''
"""A throwaway method: MAE under another model_type, with its own task class and a processor of its own."""
from hf_mae.modeling.mae import MAEConfig, MAEForPreTraining, MAEModel
from hf_mae.modeling.presets import TINY


class ToyMAEConfig(MAEConfig):
    model_type = "toymae-registry-test"


class ToyMAEModel(MAEModel):
    config_class = ToyMAEConfig


class ToyMAEForPreTraining(MAEForPreTraining):
    config_class = ToyMAEConfig


class ToyProcessor:
    def __init__(self, image_size, scale):
        self.image_size, self.scale = image_size, scale

    @classmethod
    def from_model_config(cls, config, **settings):
        return cls(config.image_size, **settings)


METHOD = dict(
    name="toymae",
    paper="A test method",
    config_class=ToyMAEConfig,
    model_classes={"base": ToyMAEModel, "pretraining": ToyMAEForPreTraining},
    processor="PROCESSOR",
    processor_settings=SETTINGS,
    presets={"toymae-tiny": dict(TINY, mask_ratio=0.5)},
)
'''


def _toy_package(tmp_path, monkeypatch, name, processor, settings):
    """A package ``name`` holding a building-block module (no row) and one method file with a row."""
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "toylayers.py").write_text("import torch\n\nclass ToyBlock(torch.nn.Identity):\n    pass\n")
    (root / "toymae.py").write_text(TOY_METHOD.replace("PROCESSOR", processor).replace("SETTINGS", settings))
    monkeypatch.syspath_prepend(str(tmp_path))
    return importlib.import_module(name)


def test_a_new_method_file_with_a_row_is_discovered(tmp_path, monkeypatch):
    # a processor from hf_mae.processors, named by class, with fixed settings
    package = _toy_package(tmp_path, monkeypatch, "toy_methods_a", "MAEImageProcessor", "dict(do_normalize=False)")
    methods = registry.discover_methods(package)
    assert list(methods) == ["toymae"]  # toylayers has no row and is skipped
    method, toy = methods["toymae"], sys.modules["toy_methods_a.toymae"]
    assert (method.module, method.config_class, method.model_classes) == (
        "toy_methods_a.toymae", toy.ToyMAEConfig, {"base": toy.ToyMAEModel, "pretraining": toy.ToyMAEForPreTraining})
    assert (method.modality, method.pretrain_lr) == ("image", None)  # row defaults
    config = method.config_class(**method.presets["toymae-tiny"])
    processor = method.make_processor(config)
    assert type(processor) is MAEImageProcessor and processor.size == {"height": 32, "width": 32}
    assert processor.do_normalize is False
    torch.manual_seed(0)
    model = method.model_classes["pretraining"](config).eval()
    out = model(torch.randn(2, 3, 32, 32))
    assert out.mask.sum().item() == 2 * 32  # mask_ratio 0.5 of the preset: 32 of 64 patches hidden per image
    # a ViT image encoder also gets its AutoBackbone class, derived from the row's base class
    assert set(registry.public_classes(methods)) == {"ToyMAEConfig", "ToyMAEModel", "ToyMAEForPreTraining",
                                                     "MAEImageProcessor", "ToyMAEBackbone"}
    # a processor only its method uses may live in the method file itself (as LV-MAE's once did)
    package = _toy_package(tmp_path, monkeypatch, "toy_methods_b", "ToyProcessor", "dict(scale=2)")
    method = registry.discover_methods(package)["toymae"]
    processor = method.make_processor(method.config_class(**method.presets["toymae-tiny"]))
    assert (type(processor).__name__, processor.image_size, processor.scale) == ("ToyProcessor", 32, 2)


def _fake_module(**names):
    module = types.ModuleType("fake_method")
    vars(module).update(names)
    return module


def test_bad_rows_are_refused_with_the_module_and_key():
    mae = registry.METHODS["mae"]
    row = dict(name="fake", paper="p", config_class=mae.config_class, model_classes={"base": mae.model_classes["base"]},
               processor="MAEImageProcessor", presets={})
    assert registry.method_from_row(dict(row), _fake_module()).processor_class is MAEImageProcessor
    with pytest.raises(ValueError, match=r"fake_method.*unknown keys \['preset_list'\]"):
        registry.method_from_row(dict(row, preset_list=[]), _fake_module())
    with pytest.raises(ValueError, match=r"fake_method lacks \['paper'\]"):
        registry.method_from_row({k: v for k, v in row.items() if k != "paper"}, _fake_module())
    with pytest.raises(ValueError, match=r"unknown task\(s\) \['segmentation'\]"):
        registry.method_from_row(dict(row, model_classes={"segmentation": mae.model_classes["base"]}), _fake_module())
    with pytest.raises(ValueError, match="processor 'NoSuchProcessor'"):
        registry.method_from_row(dict(row, processor="NoSuchProcessor"), _fake_module())
    with pytest.raises(ValueError, match="modality must be one of"):
        registry.method_from_row(dict(row, modality="smell"), _fake_module())
    with pytest.raises(ValueError, match=r"exports names \['Missing'\]"):
        registry.method_from_row(dict(row, exports=["Missing"]), _fake_module())
    with pytest.raises(TypeError, match="must be a dict"):
        registry.method_from_row([("name", "fake")], _fake_module())


def test_duplicate_presets_across_rows_are_refused(tmp_path, monkeypatch):
    package = _toy_package(tmp_path, monkeypatch, "toy_methods_c", "MAEImageProcessor", "{}")
    source = (tmp_path / "toy_methods_c" / "toymae.py").read_text()
    (tmp_path / "toy_methods_c" / "toymae2.py").write_text(source.replace('name="toymae"', 'name="toymae2"'))
    with pytest.raises(ValueError, match="preset 'toymae-tiny' is in both toy_methods_c.toymae and"):
        registry.discover_methods(package)


def test_simmim_loads_with_auto_model_for_masked_image_modeling(tmp_path):
    torch.manual_seed(0)
    model = hf_mae.create_model("simmim-tiny").eval()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForMaskedImageModeling.from_pretrained(tmp_path).eval()
    assert type(loaded) is type(model) is hf_mae.SimMIMForPreTraining
    generator = torch.Generator().manual_seed(1)
    pixel_values = torch.randn(2, 3, 32, 32, generator=generator)
    bool_masked_pos = torch.rand(2, 64, generator=generator) < 0.6
    with torch.no_grad():
        expected = model(pixel_values, bool_masked_pos=bool_masked_pos)
        ours = loaded(pixel_values, bool_masked_pos=bool_masked_pos)
    assert torch.equal(ours.mask, bool_masked_pos.float())
    assert torch.equal(ours.loss, expected.loss) and torch.equal(ours.logits, expected.logits)
    assert expected.loss.item() > 0
    # saved with its code, the folder's auto_map names the Auto class too: plain transformers loads it the same way
    from remote_check import load_in_fresh_process

    from hf_mae.hub import save_pretrained_with_code

    save_pretrained_with_code(model, tmp_path / "with-code")
    remote = load_in_fresh_process(tmp_path / "with-code", "AutoModelForMaskedImageModeling",
                                   {"pixel_values": pixel_values}, {"bool_masked_pos": bool_masked_pos})
    assert (remote.module.startswith("transformers_modules."), remote.class_name) == (True, "SimMIMForPreTraining")
    torch.testing.assert_close(remote["loss"], expected.loss, rtol=0, atol=1e-6)
