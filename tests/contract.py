"""Input adapters of the model contract suite (tests/test_contract.py): one per modality, method quirks as
subclasses keyed by method name.

An adapter turns a registered preset into what the suite needs: a CPU-sized config (paper presets keep their widths
and patch sizes but get one or two blocks and a small grid), inputs and a fixed ``noise``, labels per task, and the
modality's own expectations (which mask a fixed noise gives, which bad inputs raise what). The suite itself is
written once against this interface, as transformers' ``ModelTesterMixin`` is written against a model tester.

A new method of an existing modality needs nothing here. A method whose masking or outputs differ from its
modality's (SimMIM's mask tokens, MixedAE's groups, MP3's key mask, ...) adds a subclass to ``METHOD_ADAPTERS``; a new
modality adds an adapter to ``MODALITY_ADAPTERS``.
"""

from __future__ import annotations

import copy
import math

import pytest
import torch
from transformers import (
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoModelForAudioClassification,
    AutoModelForImageClassification,
    AutoModelForVideoClassification,
    AutoProcessor,
)

import hf_mae
from hf_mae.modeling.embeddings import to_2tuple
from hf_mae.registry import PRESETS, create_config


def method_of(preset: str):
    """The registry row of ``preset`` (the only place the suite reads the registry's rows)."""
    return PRESETS[preset]


class Adapter:
    """The modality-independent part; subclasses fill in inputs and expectations."""

    batch = 3
    remote_atol = 1e-5  # another process's GEMM threads sum 768-to-1408-wide layers in another order (~2e-6)
    processor_auto_class = AutoImageProcessor
    classifier_auto_classes: dict = {}  # task -> the Auto class a classifier loads with
    # the pre-training model's base_model is an instance of the method's registered base class (not so for image and
    # video methods built on MAE's or VideoMAE's encoder: ColorMAE's base_model is an MAEModel)
    base_model_is_the_base_class = False

    def __init__(self, preset: str):
        self.preset = preset
        self.method = method_of(preset)

    # -- building --
    def shrink(self) -> dict:
        """Config overrides that make a paper-sized preset CPU-sized (none for ``-tiny`` presets)."""
        return {}

    def config(self, **overrides):
        return create_config(self.preset, **{**self.shrink(), **overrides})

    def model_class(self, task: str = "pretraining"):
        return self.method.model_classes[task]

    def classification_tasks(self) -> list[str]:
        # SimMIM's "masked-image-modeling" is its pre-training class under a second Auto class, not a classifier
        return [task for task in self.method.model_classes if task.endswith("-classification")]

    def build(self, task="pretraining", attn_implementation=None, **overrides):
        config = self.config(**overrides)
        model_class = self.model_class(task)
        if attn_implementation is None:
            return model_class(config).eval()
        return model_class._from_config(copy.deepcopy(config), attn_implementation=attn_implementation).eval()

    def processor(self):
        return hf_mae.create_processor(self.preset, **self.shrink())

    # -- inputs --
    def inputs(self, config, seed=0) -> dict:
        """The model inputs (no noise), by name."""
        raise NotImplementedError

    def noise(self, config, seed=0) -> dict:
        """The keyword arguments that fix the mask of a pre-training forward (``{"noise": ...}``)."""
        raise NotImplementedError

    def fixed(self, config, seed=0) -> dict:
        """Inputs plus the mask-fixing arguments: a pre-training call whose output is a function of them."""
        return {**self.inputs(config, seed), **self.noise(config, seed)}

    def base_inputs(self, model, fixed: dict) -> dict:
        """Arguments of ``model.base_model`` that reproduce the encoding inside ``model(**fixed)``."""
        return dict(fixed)

    def feature_inputs(self, config) -> dict:
        """Inputs of a feature-extraction or classification call (no mask-fixing or pre-training-only arguments)."""
        return self.inputs(config)

    def labels(self, task: str, config) -> torch.Tensor:
        return torch.tensor([0, 2, 1, 2][: self.batch])

    def half(self, inputs: dict, dtype) -> dict:
        """``inputs`` with the data (not the noise) in ``dtype``."""
        return {k: v.to(dtype) if k != "noise" and torch.is_floating_point(v) else v for k, v in inputs.items()}

    # -- expectations --
    fine_tuning_prefixes = ("classifier", "fc_norm")  # weights a classifier adds to a pre-training checkpoint

    def check_fine_tuning_load(self, model, classifier, info, task):
        assert all(key.startswith(self.fine_tuning_prefixes) for key in info["missing_keys"]), info["missing_keys"]

    def check_classifier_output(self, classifier, config, task):
        assert classifier(**self.feature_inputs(config)).logits.shape == (self.batch, 3)

    def check_processor(self, processor, config):
        assert type(processor) is type(self.processor())

    def masked_count(self, config) -> int:
        """How many tokens a pre-training forward hides per sample, drawn or fixed."""
        raise NotImplementedError

    def check_drawn_mask(self, out, config):
        """A pre-training forward without noise still masks config.mask_ratio of each sample."""
        assert out.mask.sum(1).tolist() == [self.masked_count(config)] * self.batch

    def gradient_exemptions(self, model, task) -> set[str]:
        """Trainable parameters that get no gradient by design (asserted to be exactly zero by the caller)."""
        return set()

    def num_blocks(self, config) -> int:
        return config.num_hidden_layers

    def check_hidden_states_and_attentions(self, model, base_inputs):
        """ViT-like encoders: one hidden state per block plus the embeddings, rows of attention summing to one."""
        out = model.base_model(**base_inputs, output_hidden_states=True, output_attentions=True)
        tokens, heads = out.last_hidden_state.shape[1], model.config.num_attention_heads
        assert len(out.hidden_states) == model.config.num_hidden_layers + 1
        assert len(out.attentions) == model.config.num_hidden_layers
        assert out.attentions[0].shape == (self.batch, heads, tokens, tokens)
        torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(self.batch, heads, tokens))


class ImageAdapter(Adapter):
    batch = 4  # divisible by MixedAE's mixing group
    classifier_auto_classes = {"image-classification": AutoModelForImageClassification}

    @property
    def remote_atol(self) -> float:
        # the tiny presets' narrow layers agree to 1e-6 across processes; the paper presets keep their 768-wide
        # layers (measured: simmim-vit-base-patch16 differed by 2.9e-6 once), the base class's 1e-5
        return 1e-6 if self.preset.endswith("-tiny") else Adapter.remote_atol

    def shrink(self):
        if self.preset.endswith("-tiny"):
            return {}
        config = create_config(self.preset)
        patch = to_2tuple(config.patch_size)
        shrink = dict(num_hidden_layers=1, image_size=(4 * patch[0], 4 * patch[1]))
        if hasattr(config, "decoder_num_hidden_layers"):
            shrink["decoder_num_hidden_layers"] = 1
        return shrink

    def noise_grid(self, config):
        """The grid ``noise`` is drawn over: patches (MAE) or mask cells (SimMIM)."""
        return config.grid_size

    def inputs(self, config, seed=0):
        generator = torch.Generator().manual_seed(seed)
        height, width = to_2tuple(config.image_size)
        return {"pixel_values": torch.randn(self.batch, config.num_channels, height, width, generator=generator)}

    def noise(self, config, seed=0):
        generator = torch.Generator().manual_seed(seed)
        height, width = to_2tuple(config.image_size)
        torch.randn(self.batch, config.num_channels, height, width, generator=generator)  # drawn after the pixels
        rows, cols = self.noise_grid(config)
        return {"noise": torch.rand(self.batch, rows * cols, generator=generator)}

    def expected_mask(self, config, noise):
        """The int(L * (1 - r)) smallest noise values stay visible."""
        kept = int(noise.shape[1] * (1 - config.mask_ratio))
        return 1.0 - torch.zeros_like(noise).scatter_(1, noise.argsort(1)[:, :kept], 1.0)

    def per_unit(self, config) -> int:
        """Patches per noise value."""
        return 1

    def masked_count(self, config):
        cells = self.noise_grid(config)[0] * self.noise_grid(config)[1]
        return (cells - int(cells * (1 - config.mask_ratio))) * self.per_unit(config)

    reorders_tokens = True  # the encoder shuffles tokens and returns ids_restore

    def logits_shape(self, config, height, width):
        """Per-patch pixels (batch, N, p*p*C) of MAE's decoder."""
        patch = to_2tuple(config.patch_size)
        return (self.batch, (height // patch[0]) * (width // patch[1]), patch[0] * patch[1] * config.num_channels)

    def labels(self, task, config):
        return torch.tensor([0, 2, 1, 2])

    def check_fixed_noise(self, model, fixed):
        config = model.config
        a, b = model(**fixed), model(**fixed)
        assert torch.equal(a.logits, b.logits) and torch.equal(a.mask, b.mask)
        noise = fixed["noise"]
        assert torch.equal(a.mask, self.expected_mask(config, noise))  # kept: the smallest noise values
        kept = int(noise.shape[1] * (1 - config.mask_ratio))
        assert a.mask.sum(1).tolist() == [(noise.shape[1] - kept) * self.per_unit(config)] * self.batch
        c = model(fixed["pixel_values"])  # without noise: a drawn mask, the same count
        assert c.mask.sum(1).tolist() == a.mask.sum(1).tolist()

    def check_mask_ratio_zero(self, model):
        pixel_values = self.inputs(model.config)["pixel_values"]
        out = model(pixel_values, mask_ratio=0.0)
        num_patches = out.mask.shape[1]
        assert out.last_hidden_state.shape[1] == num_patches + 1
        assert out.mask.sum() == 0
        if self.reorders_tokens:
            assert torch.equal(out.ids_restore, torch.arange(num_patches).expand(self.batch, -1))
        else:  # the encoder never reorders tokens: no permutation to undo
            assert out.ids_restore is None
        # identical to passing the identity order as noise (ViTMAE's way to switch shuffling off)
        rows, cols = self.noise_grid(model.config)
        identity = torch.arange(rows * cols, dtype=torch.float).expand(self.batch, -1)
        torch.testing.assert_close(out.last_hidden_state,
                                   model(pixel_values, noise=identity, mask_ratio=0.0).last_hidden_state)  # fmt: skip
        # each token's feature does not depend on the batch it is in
        torch.testing.assert_close(model(pixel_values[:1], mask_ratio=0.0).last_hidden_state, out.last_hidden_state[:1],
                                   rtol=0, atol=1e-5)  # fmt: skip

    def check_bad_inputs(self, model):
        fixed = self.fixed(model.config)
        pixel_values, noise = fixed["pixel_values"], fixed["noise"]
        batch, channels = self.batch, model.config.num_channels
        with pytest.raises(ValueError, match="num_channels"):
            model(torch.randn(batch, channels + 1, *pixel_values.shape[-2:]))
        with pytest.raises(ValueError, match="divisible"):
            model(torch.randn(batch, channels, pixel_values.shape[-2] + 1, pixel_values.shape[-1]), interpolate_pos_encoding=True)
        with pytest.raises(ValueError, match="image_size"):  # another size without interpolation
            patch = to_2tuple(model.config.patch_size)
            model(torch.randn(batch, channels, pixel_values.shape[-2] + patch[0], pixel_values.shape[-1]))
        for ratio in (1.0, -0.1, 1.5):
            with pytest.raises(ValueError, match="mask_ratio"):
                model(pixel_values, mask_ratio=ratio)
        with pytest.raises(TypeError, match="mask_ratio"):
            model(pixel_values, mask_ratio="0.5")
        with pytest.raises(TypeError, match="pixel_values.*dtype"):
            model((pixel_values * 100).to(torch.uint8))
        with pytest.raises(TypeError, match="pixel_values"):
            model(pixel_values.numpy())
        with pytest.raises(ValueError, match="empty batch"):
            model(pixel_values[:0])
        with pytest.raises(ValueError, match="noise"):
            model(pixel_values, noise=noise[:, :-1])
        with pytest.raises(ValueError, match="mask_ratio"):
            hf_mae.create_model(self.preset, mask_ratio=1.0)

    def check_other_sizes(self, model):
        """A larger image runs with interpolated positions; at the native size interpolation is the identity."""
        fixed = self.fixed(model.config)
        pixel_values = fixed["pixel_values"]
        patch = to_2tuple(model.config.patch_size)
        larger = torch.randn(self.batch, model.config.num_channels, pixel_values.shape[-2] + 2 * patch[0], pixel_values.shape[-1])
        self.check_larger(model, larger)
        torch.testing.assert_close(model(**fixed, interpolate_pos_encoding=True).logits, model(**fixed).logits)

    def check_larger(self, model, larger):
        out = model(larger, interpolate_pos_encoding=True)
        assert out.logits.shape == self.logits_shape(model.config, *larger.shape[-2:])
        assert torch.isfinite(out.loss)


class SimMIMAdapter(ImageAdapter):
    """Mask tokens: the encoder sees every patch; ``noise`` is per mask cell of mask_unit x mask_unit patches; the
    head predicts the full image."""

    reorders_tokens = False

    def noise_grid(self, config):
        return config.mask_grid_size

    def per_unit(self, config):
        return config.mask_unit**2

    def expected_mask(self, config, noise):
        cells = super().expected_mask(config, noise)
        unit, (rows, cols) = config.mask_unit, config.mask_grid_size
        return cells.reshape(-1, rows, cols).repeat_interleave(unit, 1).repeat_interleave(unit, 2).flatten(1)

    def logits_shape(self, config, height, width):
        return (self.batch, config.num_channels, height, width)


class CrateMAEAdapter(ImageAdapter):
    """Mask tokens enter the encoder at the hidden patches (MAE's per-patch noise rule), every token stays in order:
    no ids_restore; the decoder predicts every patch as MAE's."""

    reorders_tokens = False


class MixedAEAdapter(ImageAdapter):
    """Groups of mix_group images are mixed into one; member j of a group sees ranks [j*kept, (j+1)*kept) of the
    group's first member's noise."""

    def expected_mask(self, config, noise):
        kept = int(noise.shape[1] * (1 - config.mask_ratio))
        group = config.mix_group
        first_ranks = noise[::group].argsort(1).argsort(1).repeat_interleave(group, 0)
        member = torch.arange(noise.shape[0])[:, None] % group
        return 1.0 - ((first_ranks >= member * kept) & (first_ranks < (member + 1) * kept)).float()


class MP3Adapter(ImageAdapter):
    """Key mask: every token stays in order, hidden ones are masked as attention keys only; logits (batch, L, L)
    classify positions of the pre-training grid."""

    reorders_tokens = False
    # the paper adds fine-tuning position embeddings, zero-initialised, to a pre-training checkpoint
    fine_tuning_prefixes = ("classifier", "fc_norm", "mp3.embeddings.position_embeddings")

    def logits_shape(self, config, height, width):
        patch = to_2tuple(config.patch_size)
        return (self.batch, (height // patch[0]) * (width // patch[1]), config.num_positions)

    def check_larger(self, model, larger):  # the position classifier has the pre-training grid's classes only
        with pytest.raises(ValueError, match="positions"):
            model(larger, interpolate_pos_encoding=True)


class DMJDAdapter(ImageAdapter):
    """Targets are per-patch HOG histograms, not pixels."""

    def logits_shape(self, config, height, width):
        patch = to_2tuple(config.patch_size)
        return (self.batch, (height // patch[0]) * (width // patch[1]), config.hog_dim)


class FrozenTeacherImageAdapter(ImageAdapter):
    """Image methods distilled from frozen teachers named by ``<prefix>_name_or_path`` (DMAE, MR-MAE): a paper
    preset's teachers become tiny random ones on the shrunk preset's patch grid (nothing downloaded), MAE-like for
    DMAE (``vit_mae``, so the shared mask is exercised) and plain ViTs otherwise; aligned blocks become block 1."""

    def shrink(self):
        shrink = super().shrink()
        if not shrink:
            return shrink
        config = create_config(self.preset)
        height, _ = shrink["image_size"]
        tiny = dict(image_size=height, patch_size=to_2tuple(config.patch_size)[0], hidden_size=32, num_hidden_layers=1,
                    num_attention_heads=2, intermediate_size=64)
        for prefix in ("teacher", "second_teacher"):
            if getattr(config, f"{prefix}_name_or_path", None) is None:
                continue
            teacher = dict(tiny, model_type="vit")
            if hasattr(config, "teacher_layers"):  # DMAE: an MAE teacher that shares the student's mask
                teacher.update(model_type="vit_mae", mask_ratio=config.mask_ratio)
                shrink.update(student_layers=[1], teacher_layers=[1])
            shrink.update({f"{prefix}_name_or_path": None, f"{prefix}_config": teacher, f"{prefix}_hidden_size": 32})
        return shrink


class CAEAdapter(ImageAdapter):
    """The decoder predicts the masked patches only: logits (batch, M, codebook_size) with the tokenizer target (the
    paper presets), (batch, M, p*p*C) with pixels (cae-tiny); paper presets also get a one-block regressor."""

    def shrink(self):
        shrink = super().shrink()
        return {**shrink, "regressor_num_hidden_layers": 1} if shrink else shrink

    def logits_shape(self, config, height, width):
        patch = to_2tuple(config.patch_size)
        tokens = (height // patch[0]) * (width // patch[1])
        masked = tokens - int(tokens * (1 - config.mask_ratio))
        dim = config.codebook_size if config.target == "tokenizer" else patch[0] * patch[1] * config.num_channels
        return (self.batch, masked, dim)


class MultiMAEAdapter(ImageAdapter):
    """MultiMAE: the mask covers the tokens of every input modality (the image's and its pseudo-labelled maps'),
    concatenated; ``noise`` (batch, total tokens) keeps the ``num_encoded_tokens`` smallest values of all (a drawn
    mask splits the same budget by a Dirichlet draw); the base model sees the maps the pre-training class derived;
    a classifier given ``pixel_values`` alone leaves the other input adapters without gradient. Paper preset: 8
    visible tokens of the shrunk 3 x 16."""

    def shrink(self):
        shrink = super().shrink()
        return {**shrink, "num_encoded_tokens": 8} if shrink else shrink

    def total_tokens(self, config) -> int:
        return config.num_patches * len(config.input_modalities)

    def noise(self, config, seed=0):
        generator = torch.Generator().manual_seed(seed)
        height, width = to_2tuple(config.image_size)
        torch.randn(self.batch, config.num_channels, height, width, generator=generator)  # drawn after the pixels
        return {"noise": torch.rand(self.batch, self.total_tokens(config), generator=generator)}

    def modality_inputs(self, model, pixel_values) -> dict:
        """The input modalities' maps as the pre-training class makes them, by keyword."""
        from hf_mae.modeling.multimae import values_name

        pretraining = model if hasattr(model, "modality_maps") else None
        if pretraining is None:
            pretraining = self.model_class("pretraining")(model.config).eval()
        maps = pretraining.modality_maps(pixel_values, {})
        return {values_name(model.config, m): maps[m["name"]] for m in model.config.input_modalities}

    def base_inputs(self, model, fixed):
        return {**self.modality_inputs(model, fixed["pixel_values"]), "noise": fixed["noise"]}

    def expected_mask(self, config, noise):
        kept = config.num_encoded_tokens
        return 1.0 - torch.zeros_like(noise).scatter_(1, noise.argsort(1)[:, :kept], 1.0)

    def masked_count(self, config):
        return self.total_tokens(config) - config.num_encoded_tokens

    def gradient_exemptions(self, model, task):
        if task == "pretraining":
            return set()
        image = model.config.modalities[0]["name"]
        return {name for name, _ in model.named_parameters()
                if ".embeddings.adapters." in name and f".adapters.{image}." not in name}

    def check_fixed_noise(self, model, fixed):
        config = model.config
        a, b = model(**fixed), model(**fixed)
        assert torch.equal(a.logits, b.logits) and torch.equal(a.mask, b.mask)
        assert torch.equal(a.mask, self.expected_mask(config, fixed["noise"]))
        assert a.mask.sum(1).tolist() == [self.masked_count(config)] * self.batch
        assert a.modality_budget.sum(1).tolist() == [config.num_encoded_tokens] * self.batch
        c = model(fixed["pixel_values"])  # a drawn Dirichlet split of the same budget
        assert c.mask.sum(1).tolist() == a.mask.sum(1).tolist()
        assert c.modality_budget.sum(1).tolist() == [config.num_encoded_tokens] * self.batch

    def check_mask_ratio_zero(self, model):
        """A plain call encodes every token of the modalities given, in order; identity noise keeping them all gives
        the same features; a sample's features do not depend on its batch."""
        pixel_values = self.inputs(model.config)["pixel_values"]
        inputs = self.modality_inputs(model, pixel_values)
        out = model(**inputs)
        total, globals_ = self.total_tokens(model.config), model.config.num_global_tokens
        assert out.last_hidden_state.shape[1] == total + globals_ and out.mask.sum() == 0
        assert torch.equal(out.ids_restore, torch.arange(total).expand(self.batch, -1))
        identity = torch.arange(total, dtype=torch.float).expand(self.batch, -1)
        torch.testing.assert_close(out.last_hidden_state,
                                   model(**inputs, noise=identity, num_encoded_tokens=total).last_hidden_state)
        image_only = model(pixel_values)
        assert image_only.last_hidden_state.shape[1] == model.config.num_patches + globals_
        single = {key: value[:1] for key, value in inputs.items()}
        torch.testing.assert_close(model(**single).last_hidden_state, out.last_hidden_state[:1], rtol=0, atol=1e-5)

    def check_bad_inputs(self, model):
        fixed = self.fixed(model.config)
        pixel_values, noise = fixed["pixel_values"], fixed["noise"]
        batch, channels, config = self.batch, model.config.num_channels, model.config
        with pytest.raises(ValueError, match="num_channels"):
            model(torch.randn(batch, channels + 1, *pixel_values.shape[-2:]))
        with pytest.raises(ValueError, match="divisible"):
            model(torch.randn(batch, channels, pixel_values.shape[-2] + 1, pixel_values.shape[-1]), interpolate_pos_encoding=True)
        with pytest.raises(ValueError, match="image_size"):
            patch = to_2tuple(config.patch_size)
            model(torch.randn(batch, channels, pixel_values.shape[-2] + patch[0], pixel_values.shape[-1]))
        for count in (0, self.total_tokens(config) + 1, 2.5):
            with pytest.raises(ValueError, match="num_encoded_tokens"):
                model(pixel_values, num_encoded_tokens=count)
        with pytest.raises(TypeError, match="pixel_values.*dtype"):
            model((pixel_values * 100).to(torch.uint8))
        with pytest.raises(TypeError, match="pixel_values"):
            model(pixel_values.numpy())
        with pytest.raises(ValueError, match="empty batch"):
            model(pixel_values[:0])
        with pytest.raises(ValueError, match="noise"):
            model(pixel_values, noise=noise[:, :-1])
        modalities = len(config.input_modalities)
        with pytest.raises(ValueError, match="modality_budget"):
            model(pixel_values, modality_budget=torch.ones(batch, modalities + 1, dtype=torch.long))
        uneven = torch.ones(batch, modalities, dtype=torch.long)
        uneven[0, 0] = 2
        with pytest.raises(ValueError, match="modality_budget"):
            model(pixel_values, modality_budget=uneven)
        semantic = next((m for m in config.input_modalities if m["kind"] == "semantic"), None)
        if semantic is not None:
            stride = semantic["stride"]
            ids = torch.full((batch, pixel_values.shape[-2] // stride, pixel_values.shape[-1] // stride),
                             semantic["num_classes"])
            with pytest.raises(ValueError, match=f"{semantic['name']}_values"):
                model(pixel_values, **{f"{semantic['name']}_values": ids})
        with pytest.raises(ValueError, match="num_encoded_tokens"):
            hf_mae.create_model(self.preset, num_encoded_tokens=10**6)
        with pytest.raises(ValueError, match=r"modalities\[1\]\['kind'\]"):
            hf_mae.create_model(self.preset, modalities=[config.modalities[0], dict(name="x", kind="sparse")])


class VideoAdapter(Adapter):
    """Clips (batch, frames, C, H, W); tube masking: ``noise`` over the spatial grid, one spatial mask in every time
    slice; pre-training logits cover the decoded tokens only."""

    classifier_auto_classes = {"video-classification": AutoModelForVideoClassification}

    @property
    def remote_atol(self) -> float:
        # the tiny presets' narrow layers agree to 1e-6 across processes; the paper presets keep their 768-wide
        # layers (measured: simmim-vit-base-patch16 differed by 2.9e-6 once), the base class's 1e-5
        return 1e-6 if self.preset.endswith("-tiny") else Adapter.remote_atol

    def shrink(self):
        if self.preset.endswith("-tiny"):
            return {}
        config = create_config(self.preset)
        patch = to_2tuple(config.patch_size)
        return dict(num_hidden_layers=1, decoder_num_hidden_layers=1, image_size=(4 * patch[0], 4 * patch[1]),
                    num_frames=2 * config.tubelet_size)  # fmt: skip

    def inputs(self, config, seed=0):
        generator = torch.Generator().manual_seed(seed)
        height, width = to_2tuple(config.image_size)
        shape = (self.batch, config.num_frames, config.num_channels, height, width)
        return {"pixel_values": torch.randn(*shape, generator=generator)}

    def noise(self, config, seed=0):
        generator = torch.Generator().manual_seed(seed)
        height, width = to_2tuple(config.image_size)
        torch.randn(self.batch, config.num_frames, config.num_channels, height, width, generator=generator)
        _, rows, cols = config.grid_size
        return {"noise": torch.rand(self.batch, rows * cols, generator=generator)}

    def expected_mask(self, config, noise):
        """The int(rows * cols * (1 - r)) smallest noise values stay visible, in every time slice."""
        kept = int(noise.shape[1] * (1 - config.mask_ratio))
        spatial = 1.0 - torch.zeros_like(noise).scatter_(1, noise.argsort(1)[:, :kept], 1.0)
        return spatial.repeat(1, config.grid_size[0])

    def masked_count(self, config):
        _, rows, cols = config.grid_size
        return (rows * cols - int(rows * cols * (1 - config.mask_ratio))) * config.grid_size[0]

    def decoded_count(self, config, hidden: int) -> int:
        """Tokens the decoder predicts: the encoder's hidden ones."""
        return hidden

    def labels(self, task, config):
        return torch.tensor([0, 2, 1])

    def check_fixed_noise(self, model, fixed):
        config, clips, noise = model.config, fixed["pixel_values"], fixed["noise"]
        a, b = model(clips, noise=noise), model(clips, noise=noise)
        assert torch.equal(a.logits, b.logits) and torch.equal(a.mask, self.expected_mask(config, noise))
        hidden = int(self.expected_mask(config, noise)[0].sum())
        assert a.logits.shape[:2] == (self.batch, self.decoded_count(config, hidden))
        drawn = model(clips)  # a random tube mask: the same count, the same spatial mask in every slice
        assert drawn.mask.sum(1).tolist() == [hidden] * self.batch
        slices = drawn.mask.reshape(self.batch, config.grid_size[0], -1)
        assert torch.equal(slices, slices[:, :1].expand_as(slices))
        # transformers' argument: the same mask as a bool tensor gives the same output (V2: with the same decoder mask)
        given = {"decoder_mask": a.decoder_mask.bool()} if getattr(a, "decoder_mask", None) is not None else {}
        torch.testing.assert_close(model(clips, bool_masked_pos=a.mask.bool(), **given).logits, a.logits, rtol=0, atol=0)

    def check_mask_ratio_zero(self, model):
        clips = self.inputs(model.config)["pixel_values"]
        out = model(clips, mask_ratio=0.0)
        assert out.last_hidden_state.shape[1] == model.config.num_tokens and out.mask.sum() == 0
        assert torch.equal(out.ids_restore, torch.arange(model.config.num_tokens).expand(self.batch, -1))
        torch.testing.assert_close(model(clips[:1], mask_ratio=0.0).last_hidden_state, out.last_hidden_state[:1],
                                   rtol=0, atol=1e-5)  # fmt: skip

    def check_bad_inputs(self, model):
        clips, noise = self.inputs(model.config)["pixel_values"], VideoAdapter.noise(self, model.config)["noise"]
        batch, (frames, channels, height, width) = self.batch, clips.shape[1:]
        with pytest.raises(ValueError, match="num_channels"):
            model(torch.randn(batch, frames, channels + 1, height, width))
        with pytest.raises(ValueError, match="num_frames"):
            model(torch.randn(batch, frames + model.config.tubelet_size, channels, height, width))
        with pytest.raises(ValueError, match="image_size"):
            model(torch.randn(batch, frames, channels, height * 2, width))
        with pytest.raises(ValueError, match="5 dimensions"):
            model(clips[:, 0])
        for ratio in (1.0, -0.1):
            with pytest.raises(ValueError, match="mask_ratio"):
                model(clips, mask_ratio=ratio)
        with pytest.raises(TypeError, match="pixel_values.*dtype"):
            model((clips * 100).to(torch.uint8))
        with pytest.raises(ValueError, match="empty batch"):
            model(clips[:0])
        with pytest.raises(ValueError, match="noise"):
            model(clips, noise=noise[:, :-1])
        with pytest.raises(ValueError, match="mask_ratio"):
            hf_mae.create_model(self.preset, mask_ratio=1.0)


class VideoMAEV2Adapter(VideoAdapter):
    """Dual masking: the decoder reconstructs only the running cells' share (int(4 * r_d) of every 2x2 cell are not
    decoded)."""

    def decoded_count(self, config, hidden):
        ratio = config.decoder_mask_ratio
        return hidden if ratio == 0.0 else config.num_tokens * (4 - int(4 * ratio)) // 4


class VideoTextAdapter(VideoAdapter):
    """TGM: clips plus one caption each. With captions the mask is text-guided (no ``noise``; ``bool_masked_pos``
    overrides it); without them TGM masks as VideoMAE does."""

    processor_auto_class = AutoProcessor
    captions = ("a red square moving left", "a green square moving up", "a blue square moving right")

    def shrink(self):
        if self.preset.endswith("-tiny"):
            return {}
        shrink = super().shrink()
        config = create_config(self.preset)
        height, _ = shrink["image_size"]
        # tgm-tiny's random CLIP scorer and byte-level text tower, on this preset's patch grid: nothing downloaded
        tiny = create_config("tgm-tiny")
        clip_config = copy.deepcopy(tiny.clip_config)
        clip_config["vision_config"].update(image_size=height, patch_size=to_2tuple(config.patch_size)[0])
        return dict(shrink, clip_name_or_path=None, text_encoder_name_or_path=None, tokenizer_name_or_path=None,
                    clip_config=clip_config, text_config=copy.deepcopy(tiny.text_config),
                    max_text_length=tiny.max_text_length)  # fmt: skip

    def inputs(self, config, seed=0):
        tokens = self.processor()(text=list(self.captions[: self.batch]), return_tensors="pt")
        return {**super().inputs(config, seed), "input_ids": tokens["input_ids"], "attention_mask": tokens["attention_mask"]}

    def noise(self, config, seed=0):
        return {}

    def base_inputs(self, model, fixed):
        mask = model(**fixed).mask.bool()  # the encoder under the text-guided mask
        return {"pixel_values": fixed["pixel_values"], "bool_masked_pos": mask}

    def feature_inputs(self, config):
        return {"pixel_values": self.inputs(config)["pixel_values"]}

    def check_fixed_noise(self, model, fixed):
        captioned_a, captioned_b = model(**fixed), model(**fixed)  # text-guided: a function of clips and captions
        assert torch.equal(captioned_a.mask, captioned_b.mask) and torch.equal(captioned_a.logits, captioned_b.logits)
        assert captioned_a.mask.sum(1).tolist() == [self.masked_count(model.config)] * self.batch
        clips = fixed["pixel_values"]
        super().check_fixed_noise(model, {"pixel_values": clips, **super().noise(model.config)})  # no captions

    def check_bad_inputs(self, model):
        super().check_bad_inputs(model)
        fixed = self.fixed(model.config)
        with pytest.raises(ValueError, match="input_ids"):
            model(fixed["pixel_values"], input_ids=fixed["input_ids"][:1])
        with pytest.raises(ValueError, match="noise"):
            model(**fixed, noise=super().noise(model.config)["noise"])


class AudioAdapter(Adapter):
    """Filterbanks ``input_values`` (batch, max_length, num_mel_bins); ``noise`` per 16x16 patch of the (time,
    frequency) grid. Paper presets: one encoder block, two decoder blocks (a window and a shifted window), 64 frames."""

    base_model_is_the_base_class = True

    processor_auto_class = AutoFeatureExtractor
    classifier_auto_classes = {"audio-classification": AutoModelForAudioClassification}

    def shrink(self):
        if self.preset.endswith("-tiny"):
            return {}
        return dict(num_hidden_layers=1, decoder_num_hidden_layers=2, max_length=64)

    def inputs(self, config, seed=0):
        generator = torch.Generator().manual_seed(seed)
        return {"input_values": torch.randn(self.batch, config.max_length, config.num_mel_bins, generator=generator)}

    def noise(self, config, seed=0):
        generator = torch.Generator().manual_seed(seed)
        torch.randn(self.batch, config.max_length, config.num_mel_bins, generator=generator)
        rows, cols = config.grid_size
        return {"noise": torch.rand(self.batch, rows * cols, generator=generator)}

    def expected_mask(self, config, noise):
        kept = int(noise.shape[1] * (1 - config.mask_ratio))
        return 1.0 - torch.zeros_like(noise).scatter_(1, noise.argsort(1)[:, :kept], 1.0)

    def masked_count(self, config):
        patches = config.grid_size[0] * config.grid_size[1]
        return patches - int(patches * (1 - config.mask_ratio))

    def labels(self, task, config):
        return torch.tensor([0, 2, 1])

    def check_classifier_output(self, classifier, config, task):
        assert type(classifier) is self.model_class(task)
        super().check_classifier_output(classifier, config, task)

    def check_fixed_noise(self, model, fixed):
        values, noise = fixed["input_values"], fixed["noise"]
        a, b = model(values, noise=noise), model(values, noise=noise)
        mask = self.expected_mask(model.config, noise)
        assert torch.equal(a.logits, b.logits) and torch.equal(a.mask, mask)
        rows, cols = model.config.grid_size
        assert a.logits.shape == (self.batch, rows * cols, 16 * 16)  # every patch predicted, the loss reads the hidden
        drawn = model(values)  # a random mask hides the same count
        assert drawn.mask.sum(1).tolist() == mask.sum(1).tolist()

    def check_mask_ratio_zero(self, model):
        values = self.inputs(model.config)["input_values"]
        num_patches = model.config.grid_size[0] * model.config.grid_size[1]
        out = model(values, mask_ratio=0.0)
        assert out.last_hidden_state.shape[1] == 1 + num_patches and out.mask.sum() == 0
        assert torch.equal(out.ids_restore, torch.arange(num_patches).expand(self.batch, -1))
        torch.testing.assert_close(model(values[:1], mask_ratio=0.0).last_hidden_state, out.last_hidden_state[:1],
                                   rtol=0, atol=1e-5)  # fmt: skip

    def check_bad_inputs(self, model):
        fixed = self.fixed(model.config)
        values, noise = fixed["input_values"], fixed["noise"]
        batch, (frames, bins) = self.batch, values.shape[1:]
        with pytest.raises(ValueError, match="num_mel_bins"):
            model(torch.randn(batch, frames, bins // 2))
        with pytest.raises(ValueError, match="max_length"):
            model(torch.randn(batch, frames + 16, bins))
        with pytest.raises(ValueError, match="multiple of the patch size"):
            model(torch.randn(batch, frames + 8, bins), interpolate_pos_encoding=True)
        with pytest.raises(ValueError, match="3 dimensions"):
            model(values[:, None])
        for ratio in (1.0, -0.1):
            with pytest.raises(ValueError, match="mask_ratio"):
                model(values, mask_ratio=ratio)
        with pytest.raises(TypeError, match="input_values.*dtype"):
            model((values * 100).to(torch.int16))
        with pytest.raises(TypeError, match="input_values must be a torch.Tensor"):
            model(values.tolist())
        with pytest.raises(ValueError, match="empty batch"):
            model(values[:0])
        with pytest.raises(ValueError, match="noise"):
            model(values, noise=noise[:, :-1])
        with pytest.raises(ValueError, match="mask_ratio"):
            hf_mae.create_model(self.preset, mask_ratio=1.0)
        with pytest.raises(ValueError, match="decoder_mode"):
            create_config(self.preset, decoder_mode="local")
        with pytest.raises(ValueError, match="num_channels"):
            create_config(self.preset, num_channels=3)

    def check_other_sizes(self, model):
        """Clips of another length (a multiple of the patch) run with interpolated positions, in both decoders."""
        values = self.inputs(model.config)["input_values"]
        out = model(torch.cat([values, values], dim=1), interpolate_pos_encoding=True)
        rows, cols = model.config.grid_size
        assert out.logits.shape == (self.batch, 2 * rows * cols, 256) and torch.isfinite(out.loss)


class PointCloudAdapter(Adapter):
    """``point_values`` (batch, N, 3); ``noise`` (batch, num_groups) hides int(mask_ratio * num_groups) groups; the
    encoder sees the visible groups. Paper presets: one block per stack, a quarter of the points and groups; a teacher
    named by ``teacher_name_or_path`` becomes a tiny random ViT on 32-px depth images."""

    base_model_is_the_base_class = True

    processor_auto_class = AutoFeatureExtractor

    @property
    def classifier_auto_classes(self):
        from hf_mae.auto import AutoModelForPointCloudClassification

        return {"point-cloud-classification": AutoModelForPointCloudClassification}

    def shrink(self):
        if self.preset.endswith("-tiny"):
            return {}
        config = create_config(self.preset)
        shrink = {name: 1 for name in ("num_hidden_layers", "decoder_num_hidden_layers") if hasattr(config, name)}
        shrink.update({name: [1] * len(getattr(config, name)) for name in ("depths", "decoder_depths") if hasattr(config, name)})
        # a quarter of the points and groups (the group sizes kept): sampling and grouping dominate a CPU forward
        if hasattr(config, "group_counts"):
            shrink.update(num_points=config.num_points // 4, group_counts=[n // 4 for n in config.group_counts])
        else:
            shrink.update(num_points=config.num_points // 4, num_groups=config.num_groups // 4)
        if getattr(config, "teacher_name_or_path", None):  # I2P-MAE: a tiny random ViT teacher on 32-px depth
            shrink.update(teacher_name_or_path=None, teacher_feature_dim=32, image_size=32, densify=3,  # images
                          teacher_config=dict(model_type="vit", image_size=32, patch_size=8, hidden_size=32,
                                              num_hidden_layers=1, num_attention_heads=2, intermediate_size=64))
        return shrink

    def inputs(self, config, seed=0):
        generator = torch.Generator().manual_seed(seed)
        return {"point_values": torch.randn(self.batch, config.num_points, 3, generator=generator) * 0.5}

    def noise(self, config, seed=0):
        generator = torch.Generator().manual_seed(seed)
        torch.randn(self.batch, config.num_points, 3, generator=generator)
        return {"noise": torch.rand(self.batch, config.num_groups, generator=generator)}

    def masked_count(self, config):
        return int(config.mask_ratio * config.num_groups)

    def labels(self, task, config):
        return torch.tensor([0, 2, 1])

    def num_blocks(self, config):
        return sum(config.depths) if hasattr(config, "depths") else config.num_hidden_layers

    def check_fine_tuning_load(self, model, classifier, info, task):
        assert type(classifier) is self.model_class(task)
        # every encoder weight comes from the checkpoint; only the new head's are missing
        prefix = model.base_model_prefix
        encoder_keys = {f"{prefix}.{key}" for key in model.base_model.state_dict()}
        assert info["missing_keys"] and not set(info["missing_keys"]) & encoder_keys, info["missing_keys"]
        for key, value in model.base_model.state_dict().items():
            assert torch.equal(classifier.state_dict()[f"{prefix}.{key}"], value), key

    def check_classifier_output(self, classifier, config, task):
        logits = classifier.eval()(**self.inputs(config)).logits  # eval: the new head's BatchNorm statistics
        assert logits.shape == (self.batch, 3) and torch.isfinite(logits).all()

    def check_processor(self, processor, config):
        super().check_processor(processor, config)
        assert processor.num_points == config.num_points

    def check_fixed_noise(self, model, fixed):
        points, noise = fixed["point_values"], fixed["noise"]
        a, b = model(points, noise=noise), model(points, noise=noise)
        groups, masked = model.config.num_groups, self.masked_count(model.config)
        assert torch.equal(a.logits, b.logits) and torch.equal(a.mask, b.mask) and torch.equal(a.loss, b.loss)
        assert a.mask.shape == (self.batch, groups) and a.mask.sum(1).tolist() == [masked] * self.batch
        assert set(a.mask.unique().tolist()) <= {0.0, 1.0}
        other = model(points, noise=torch.rand(self.batch, groups, generator=torch.Generator().manual_seed(7)))
        assert not torch.equal(other.mask, a.mask)  # the noise, not the points, picks the hidden groups
        encoded = model.base_model(points, noise=noise)
        assert encoded.last_hidden_state.shape[:2] == (self.batch, groups - masked)  # the encoder sees the visible
        assert encoded.mask.sum(1).tolist() == [masked] * self.batch and encoded.centers.shape == (self.batch, groups, 3)
        assert model(points).mask.sum(1).tolist() == [masked] * self.batch  # a drawn mask hides the same count

    def check_mask_ratio_zero(self, model):
        fixed = self.fixed(model.config)
        points, noise = fixed["point_values"], fixed["noise"]
        out = model(points, mask_ratio=0.0)
        assert out.last_hidden_state.shape[:2] == (self.batch, model.config.num_groups) and out.mask.sum() == 0
        # in group order whatever the noise, and each cloud encoded on its own
        assert torch.equal(model(points, noise=noise, mask_ratio=0.0).last_hidden_state, out.last_hidden_state)
        torch.testing.assert_close(model(points[:1], mask_ratio=0.0).last_hidden_state, out.last_hidden_state[:1],
                                   rtol=0, atol=1e-5)  # fmt: skip

    def check_hidden_states_and_attentions(self, model, base_inputs):
        """Multi-scale encoders (I2P-MAE) have several stacks: at least one block's states and attentions."""
        out = model.base_model(**base_inputs, output_hidden_states=True, output_attentions=True)
        tokens = out.last_hidden_state.shape[1]
        assert len(out.hidden_states) >= 2 and len(out.attentions) >= 1
        last = out.attentions[-1]
        assert last.shape[0] == self.batch and last.shape[-2:] == (tokens, tokens)
        torch.testing.assert_close(last.sum(-1), torch.ones(last.shape[:-1]))
        assert model.base_model(**base_inputs).hidden_states is None

    def check_bad_inputs(self, model):
        fixed = self.fixed(model.config)
        points, noise, batch = fixed["point_values"], fixed["noise"], self.batch
        with pytest.raises(ValueError, match="point_values.*last dimension"):
            model(torch.randn(batch, points.shape[1], 4))
        with pytest.raises(ValueError, match="point_values.*3 dimensions"):
            model(points[0])
        with pytest.raises(TypeError, match="point_values.*dtype"):
            model((points * 100).to(torch.int32))
        with pytest.raises(TypeError, match="point_values must be a torch.Tensor"):
            model(points.tolist())
        with pytest.raises(ValueError, match="empty batch"):
            model(points[:0])
        with pytest.raises(ValueError, match="noise"):
            model(points, noise=noise[:, :-1])
        broken = points.clone()
        broken[1, 5, 2] = float("nan")
        with pytest.raises(ValueError, match="point_values.*NaN"):
            model(broken)
        for ratio in (1.0, -0.1):
            with pytest.raises(ValueError, match="mask_ratio"):
                model(points, mask_ratio=ratio)
        with pytest.raises(ValueError, match="mask_ratio"):
            hf_mae.create_model(self.preset, mask_ratio=1.0)
        config = create_config(self.preset)
        with pytest.raises(ValueError, match="group_size"):
            create_config(self.preset, group_size=config.num_points + 1)
        with pytest.raises(ValueError, match="num_groups"):
            create_config(self.preset, num_groups=config.num_points + 1)


class GraphAdapter(Adapter):
    """A disjoint union of two graphs (7 and 5 nodes): ``node_features`` (N, F), ``edge_index`` (2, E), ``batch``
    (N,); ``noise`` per node. Paper presets: 12 features, 16 hidden units, at most 2 layers."""

    base_model_is_the_base_class = True

    processor_auto_class = AutoFeatureExtractor
    sizes = (7, 5)
    batch = 2  # graphs

    @property
    def classifier_auto_classes(self):
        from hf_mae import AutoModelForGraphClassification, AutoModelForNodeClassification

        return {"node-classification": AutoModelForNodeClassification,
                "graph-classification": AutoModelForGraphClassification}  # fmt: skip

    def shrink(self):
        if self.preset.endswith("-tiny"):
            return {}
        layers = min(create_config(self.preset).num_hidden_layers, 2)
        return dict(num_features=12, hidden_size=16, num_hidden_layers=layers)

    def processor(self):
        shrink = self.shrink()
        return hf_mae.create_processor(self.preset, **{k: shrink[k] for k in ("num_features", "hidden_size") if k in shrink})

    @property
    def num_nodes(self):
        return sum(self.sizes)

    def graphs(self, config, seed=0):
        """Two random graphs as raw dicts (features of width config.num_features, a few random edges each)."""
        generator = torch.Generator().manual_seed(seed)
        return [
            {"x": torch.rand(n, config.num_features, generator=generator),
             "edge_index": torch.randint(0, n, (2, 2 * n), generator=generator), "y": label}
            for label, n in enumerate(self.sizes)
        ]  # fmt: skip

    def inputs(self, config, seed=0):
        union = self.processor()(self.graphs(config, seed))
        return {"node_features": union["node_features"], "edge_index": union["edge_index"], "batch": union["batch"]}

    def noise(self, config, seed=0):
        return {"noise": torch.rand(self.num_nodes, generator=torch.Generator().manual_seed(seed + 1))}

    def base_inputs(self, model, fixed):
        return {k: v for k, v in fixed.items() if k != "noise"}

    def masked_count(self, config):
        return int(config.mask_rate * self.num_nodes)

    def check_drawn_mask(self, out, config):
        assert out.mask.sum() == self.masked_count(config)

    def labels(self, task, config):
        return torch.arange(self.num_nodes) % 3 if task == "node-classification" else torch.tensor([0, 2])

    def gradient_exemptions(self, model, task):
        # A GAT decoder's target-side attention vector scores a_r . W h_i of the node being rebuilt; the loss reads
        # only masked nodes, whose codes h_i were re-masked to zero, so a_r never gets a gradient (as in the
        # official code): expected, not a bug.
        if task == "pretraining" and model.config.decoder_type == "gat":
            return {"decoder.net.layers.0.attn_r"}
        return set()

    def check_fine_tuning_load(self, model, classifier, info, task):
        assert type(classifier) is self.model_class(task)
        assert all(key.startswith("classifier") for key in info["missing_keys"]), info["missing_keys"]
        x, edges, batch = self.inputs(model.config).values()
        torch.testing.assert_close(classifier.eval().graphmae(x, edges, batch).last_hidden_state,
                                   model.base_model(x, edges, batch).last_hidden_state)  # fmt: skip

    def check_classifier_output(self, classifier, config, task):
        x, edges, batch = self.inputs(config).values()
        if task == "node-classification":
            logits = classifier.eval()(x, edges).logits
            assert logits.shape == (self.num_nodes, 3)
        else:
            logits = classifier.eval()(x, edges, batch).logits
            assert logits.shape == (len(self.sizes), 3)
        assert torch.isfinite(logits).all()

    def check_processor(self, processor, config):
        super().check_processor(processor, config)
        assert processor.feature_normalization == config.feature_normalization
        assert torch.equal(processor(self.graphs(config))["node_features"], self.inputs(config)["node_features"])

    def check_fixed_noise(self, model, fixed):
        from hf_mae.modeling.graphmae import graph_mask

        x, edges, batch, noise = fixed["node_features"], fixed["edge_index"], fixed["batch"], fixed["noise"]
        a, b = model(**fixed), model(**fixed)
        mask, _, _ = graph_mask(x.shape[0], model.config.mask_rate, model.config.replace_rate, noise=noise)
        assert torch.equal(a.logits, b.logits) and torch.equal(a.loss, b.loss) and torch.equal(a.mask, mask)
        assert a.logits.shape == x.shape and a.mask.sum() == self.masked_count(model.config)
        drawn = model(x, edges, batch)  # a random mask hides the same count
        assert drawn.mask.sum() == a.mask.sum()
        given = model(x, edges, batch, mask=mask)  # an explicit mask: the same masked nodes
        assert torch.equal(given.mask, mask)

    def check_hidden_states_and_attentions(self, model, base_inputs):
        """Message-passing layers: one hidden state per layer (no embedding state), no attention maps."""
        out = model.base_model(**base_inputs, output_hidden_states=True)
        assert len(out.hidden_states) == model.config.num_hidden_layers
        assert torch.equal(out.hidden_states[-1], out.last_hidden_state)
        # extra fields of a collated batch are accepted (the pretrain loop calls model(**batch))
        fixed = {**base_inputs, **self.noise(model.config)}
        masks = {"train_mask": torch.ones(self.num_nodes, dtype=torch.bool), "labels": torch.tensor([0, 1])}
        torch.testing.assert_close(model(**fixed, **masks).loss, model(**fixed).loss)

    def check_alone_and_in_a_union(self, model):
        """Embeddings of a graph alone and inside a union agree."""
        processor = self.processor()
        first, second = self.graphs(model.config)
        union = processor([first, second])
        out = model(union["node_features"], union["edge_index"], union["batch"])
        for index, graph in enumerate((first, second)):
            alone = processor(graph)
            single = model(alone["node_features"], alone["edge_index"])  # batch None: one graph
            rows = union["batch"] == index
            torch.testing.assert_close(out.last_hidden_state[rows], single.last_hidden_state, rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(out.pooler_output[index : index + 1], single.pooler_output, rtol=1e-5, atol=1e-6)

    def check_bad_inputs(self, model):
        fixed = self.fixed(model.config)
        x, edges, batch, noise = fixed["node_features"], fixed["edge_index"], fixed["batch"], fixed["noise"]
        with pytest.raises(ValueError, match="num_features"):
            model(x[:, :-1], edges)
        with pytest.raises(ValueError, match=r"edge_index holds node ids outside \[0, 11\].*span \[0, 12\]"):
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
                create_config(self.preset, mask_rate=rate)
        for rate in (1.0, -0.5):
            with pytest.raises(ValueError, match="replace_rate"):
                create_config(self.preset, replace_rate=rate)
        with pytest.raises(ValueError, match="encoder_type"):
            create_config(self.preset, encoder_type="gcn")
        with pytest.raises(ValueError, match="decoder_type"):
            create_config(self.preset, decoder_type="transformer")
        with pytest.raises(ValueError, match="pooling"):
            create_config(self.preset, pooling="attention")
        with pytest.raises(ValueError, match="divisible by num_attention_heads"):
            create_config(self.preset, encoder_type="gat", hidden_size=10, num_attention_heads=4)
        with pytest.raises(ValueError, match="labels must hold one label per graph"):
            self.build("graph-classification", num_labels=2)(x, edges, batch, labels=torch.tensor([0, 1, 1]))


class EmbeddingsAdapter(Adapter):
    """LV-MAE: sequences of segment embeddings ``inputs_embeds`` (batch, L, embedding_dim) with an
    ``attention_mask`` (the second sequence padded). The default importance masking is a function of the inputs;
    ``noise`` fixes random masking. Paper preset: one block per stack, widths kept."""

    processor_auto_class = AutoFeatureExtractor
    classifier_auto_classes = {"video-classification": AutoModelForVideoClassification}
    batch = 2
    length, padded_length = 10, 6

    def shrink(self):
        if self.preset.endswith("-tiny"):
            return {}
        return dict(num_hidden_layers=1, decoder_num_hidden_layers=1)

    def inputs(self, config, seed=0):
        generator = torch.Generator().manual_seed(seed)
        embeds = torch.randn(self.batch, self.length, config.embedding_dim, generator=generator)
        mask = torch.ones(self.batch, self.length, dtype=torch.long)
        mask[1, self.padded_length :] = 0
        return {"inputs_embeds": embeds, "attention_mask": mask}

    def noise(self, config, seed=0):
        return {}  # importance masking needs none

    def masked_count(self, config):
        return self.length - int(self.length * (1 - config.mask_ratio))  # the unpadded sequence

    def check_drawn_mask(self, out, config):
        assert out.mask[0].sum() == self.masked_count(config)  # the unpadded sequence

    def labels(self, task, config):
        return torch.tensor([0, 2])

    def check_fine_tuning_load(self, model, classifier, info, task):
        assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias"}

    def check_fixed_noise(self, model, fixed):
        a, b = model(**fixed), model(**fixed)  # importance masking: a function of the embeddings
        assert torch.equal(a.logits, b.logits) and torch.equal(a.mask, b.mask)
        assert a.mask[0].sum().item() == self.masked_count(model.config)
        assert a.mask[1, self.padded_length :].sum() == 0  # padding is neither kept nor hidden
        # random masking with a fixed noise: the int(L * (1 - r)) smallest noise values stay visible
        embeds = fixed["inputs_embeds"][:1]
        noise = torch.rand(1, self.length, generator=torch.Generator().manual_seed(3))
        out = model(embeds, noise=noise, masking_strategy="random")
        kept = int(self.length * (1 - model.config.mask_ratio))
        expected = 1.0 - torch.zeros_like(noise).scatter_(1, noise.argsort(1)[:, :kept], 1.0)
        assert torch.equal(out.mask.float(), expected)
        assert torch.equal(model(embeds, noise=noise, masking_strategy="random").logits, out.logits)

    def check_mask_ratio_zero(self, model):
        fixed = self.fixed(model.config)
        out = model(**fixed, mask_ratio=0.0)
        assert out.mask.sum() == 0 and out.last_hidden_state.shape[1] == 1 + self.length
        torch.testing.assert_close(model(fixed["inputs_embeds"][:1], mask_ratio=0.0).last_hidden_state,
                                   out.last_hidden_state[:1], rtol=0, atol=1e-5)  # fmt: skip

    def check_bad_inputs(self, model):
        config, fixed = model.config, self.fixed(model.config)
        embeds = fixed["inputs_embeds"]
        with pytest.raises(ValueError, match=f"embedding_dim={config.embedding_dim}"):
            model(embeds[..., :-1])
        with pytest.raises(ValueError, match=f"max_segments={config.max_segments}"):
            model(torch.randn(1, config.max_segments + 1, config.embedding_dim))
        with pytest.raises(TypeError, match="floating-point"):
            model(embeds.long())
        with pytest.raises(ValueError, match="attention_mask must have shape"):
            model(embeds, attention_mask=fixed["attention_mask"][:, :-1])
        with pytest.raises(ValueError, match="noise"):
            model(embeds, noise=torch.rand(self.batch, self.length - 1), masking_strategy="random")
        for ratio in (1.0, -0.1):
            with pytest.raises(ValueError, match="mask_ratio"):
                model(embeds, mask_ratio=ratio)
        with pytest.raises(ValueError, match="masking_strategy"):
            model(embeds, masking_strategy="block")
        with pytest.raises(ValueError, match="mask_ratio"):
            hf_mae.create_model(self.preset, mask_ratio=1.0)



class TextAdapter(Adapter):
    """Text methods (RetroMAE, DupMAE, Starbucks): a transformers masked LM inside. The processor draws the masks
    (``processor(texts, for_pretraining=True, generator=g)``, as the methods' official collators do), so the fixed
    inputs are its output under a seeded generator and ``noise`` is empty; a paper preset keeps its widths but gets
    one layer, no warm start (nothing downloaded) and the tiny presets' local tokenizer (the same uncased vocabulary).
    The second and third texts are padded (the first is the longest)."""

    processor_auto_class = AutoProcessor
    batch = 3
    texts = (
        "Masked auto-encoders pre-train retrieval models: the encoder's [CLS] state must carry the whole passage.",
        "A shorter second passage about dense retrieval.",
        "Third text!",
    )
    base_model_is_the_base_class = True

    def shrink(self):
        if self.preset.endswith("-tiny"):
            return {}
        from hf_mae.modeling.text import MINILM

        config = create_config(self.preset)
        encoder = dict(config.encoder_config, num_hidden_layers=1)
        return dict(encoder_name_or_path=None, encoder_config=encoder, tokenizer_name_or_path=MINILM, max_length=64)

    def inputs(self, config, seed=0):
        generator = torch.Generator().manual_seed(seed)
        return dict(self.processor()(list(self.texts), return_tensors="pt", for_pretraining=True, generator=generator))

    def noise(self, config, seed=0):
        return {}  # the processor's seeded generator fixes the masks

    def base_inputs(self, model, fixed):
        return {"input_ids": fixed["input_ids"], "attention_mask": fixed["attention_mask"]}

    def feature_inputs(self, config):
        return dict(self.processor()(list(self.texts), return_tensors="pt"))

    def num_blocks(self, config):
        return config.backbone_config().num_hidden_layers

    def masked_count(self, config):
        raise NotImplementedError("text masks are whole words: the count depends on the words")

    def check_drawn_mask(self, out, config):
        assert torch.isfinite(out.loss) and out.logits.shape[:2] == self.inputs(config)["input_ids"].shape

    def check_fixed_noise(self, model, fixed):
        a, b = model(**fixed), model(**fixed)
        assert torch.equal(a.logits, b.logits) and torch.equal(a.loss, b.loss)
        again = self.inputs(model.config)  # the same seed: the same masks
        assert all(torch.equal(again[key], fixed[key]) for key in fixed)
        other = self.inputs(model.config, seed=1)
        assert not torch.equal(other["input_ids"], fixed["input_ids"])
        # the encoder's whole-word mask covers about mask_ratio of the ordinary tokens (special ones never)
        ordinary = self.processor().tokenize(list(self.texts))["word_ids"] >= 0
        masked = fixed["labels"] != -100
        assert not (masked & ~ordinary).any()
        share = masked.sum().item() / ordinary.sum().item()
        assert abs(share - model.config.mask_ratio) < 0.15, share

    def check_mask_ratio_zero(self, model):
        """The base model masks nothing: every token in order, and a text's features do not depend on its batch
        (padding is masked out)."""
        inputs = self.feature_inputs(model.config)
        out = model(**inputs)
        assert out.last_hidden_state.shape[:2] == inputs["input_ids"].shape
        length = int(inputs["attention_mask"][1].sum())
        alone = model(input_ids=inputs["input_ids"][1:2, :length], attention_mask=inputs["attention_mask"][1:2, :length])
        torch.testing.assert_close(alone.last_hidden_state[0], out.last_hidden_state[1, :length], rtol=0, atol=1e-5)

    @staticmethod
    def check_bad_token_inputs(model, fixed):
        """The token-input errors every text model raises (float / numpy / empty / out-of-vocabulary ids, a
        mis-shaped attention mask)."""
        ids = fixed["input_ids"]
        with pytest.raises(TypeError, match="integer token ids"):
            model(**{**fixed, "input_ids": ids.float()})
        with pytest.raises(TypeError, match="torch.Tensor"):
            model(**{**fixed, "input_ids": ids.numpy()})
        with pytest.raises(ValueError, match="empty batch"):
            model(**{**fixed, "input_ids": ids[:0]})
        with pytest.raises(ValueError, match="outside the vocabulary"):
            model(**{**fixed, "input_ids": ids + 10**6})
        with pytest.raises(ValueError, match="attention_mask must have the shape"):
            model(**{**fixed, "attention_mask": fixed["attention_mask"][:, :-1]})

    def check_bad_inputs(self, model):
        fixed = self.fixed(model.config)
        ids = fixed["input_ids"]
        self.check_bad_token_inputs(model, fixed)
        with pytest.raises(ValueError, match="pre-training inputs"):
            model(input_ids=ids, attention_mask=fixed["attention_mask"])
        with pytest.raises(ValueError, match="mask_ratio"):
            hf_mae.create_model(self.preset, **self.shrink(), encoder_mask_ratio=1.0)
        with pytest.raises(ValueError, match="empty texts"):
            self.processor()(["fine", ""], return_tensors="pt")

    def check_hidden_states_and_attentions(self, model, base_inputs):
        """One hidden state per backbone layer plus the embeddings; attention rows sum to one (eager: sdpa
        returns no maps)."""
        eager = self.build(attn_implementation="eager")
        eager.load_state_dict(model.state_dict())
        out = eager.base_model(**base_inputs, output_hidden_states=True, output_attentions=True)
        backbone = model.config.backbone_config()
        tokens = base_inputs["input_ids"].shape[1]
        assert len(out.hidden_states) == backbone.num_hidden_layers + 1
        assert len(out.attentions) == backbone.num_hidden_layers
        assert out.attentions[0].shape == (self.batch, backbone.num_attention_heads, tokens, tokens)
        torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(self.batch, backbone.num_attention_heads, tokens))


class StarbucksAdapter(TextAdapter):
    """Starbucks: a paper preset shrunk to one layer keeps its layer_dim_pairs valid, (1, 32) and (1, full width)."""

    def shrink(self):
        settings = super().shrink()
        if settings:
            width = settings["encoder_config"]["hidden_size"]
            settings["layer_dim_pairs"] = [[1, 32], [1, width]]
        return settings

class MEAPAdapter(TextAdapter):
    """MEAP: a transformers causal LM inside; the processor only tokenises (``labels`` = the unmasked ids) and the
    model masks the same positions in every sequence, drawn from the step: ``mask_positions`` (step ``seed``'s)
    fixes them in any mode (the eval-mode default masks nothing: the plain LM). The paper preset keeps its widths, gets one layer and the
    byte-level tokenizer (vocabulary 260, [MASK] 259; nothing downloaded)."""

    base_model_is_the_base_class = False  # base_model is the wrapped transformers LM

    def shrink(self):
        if self.preset.endswith("-tiny"):
            return {}
        config = create_config(self.preset)
        lm = dict(config.lm_config, num_hidden_layers=1, vocab_size=260)
        return dict(lm_name_or_path=None, lm_config=lm, tokenizer_name_or_path=None, mask_token_id=259, max_length=64)

    def noise(self, config, seed=0):
        from hf_mae.modeling.masking import step_seeded_positions

        length = self.inputs(config)["input_ids"].shape[1]
        return {"mask_positions": step_seeded_positions(length, config.mask_ratio, config.step_seed(seed))}

    def base_inputs(self, model, fixed):
        masked = fixed["input_ids"].clone()
        masked[:, fixed["mask_positions"]] = model.config.mask_token_id
        return {"input_ids": masked, "attention_mask": fixed["attention_mask"]}

    def check_drawn_mask(self, out, config):
        # eval mode: the plain LM, nothing masked, the loss against the processor's labels
        assert out.mask is None and torch.isfinite(out.loss)
        assert out.logits.shape[:2] == self.inputs(config)["input_ids"].shape

    def check_fixed_noise(self, model, fixed):
        a, b = model(**fixed), model(**fixed)
        assert torch.equal(a.logits, b.logits) and torch.equal(a.loss, b.loss) and torch.equal(a.mask, b.mask)
        length = fixed["input_ids"].shape[1]
        count = max(1, int(length * model.config.mask_ratio))
        assert a.mask.sum(1).tolist() == [count] * self.batch  # the same positions in every sequence
        assert (a.mask == a.mask[:1]).all()
        assert torch.equal(a.mask[0].nonzero().flatten(), model.mask_positions_for(length, step=0))
        other = model(**{**fixed, **self.noise(model.config, seed=1)})
        assert not torch.equal(other.mask, a.mask)
        # the targets are the unmasked ids: the loss equals the plain LM's on the masked ids against them
        inputs = self.base_inputs(model, fixed)
        plain = model.lm(**inputs, labels=fixed["labels"]).loss
        torch.testing.assert_close(a.loss, plain)

    def check_bad_inputs(self, model):
        fixed = self.fixed(model.config)
        self.check_bad_token_inputs(model, fixed)
        with pytest.raises(ValueError, match="mask_ratio"):
            hf_mae.create_model(self.preset, **self.shrink(), mask_ratio=1.0)
        with pytest.raises(ValueError, match="mode"):
            hf_mae.create_model(self.preset, **self.shrink(), mode="mlm")
        with pytest.raises(ValueError, match="empty texts"):
            self.processor()(["fine", ""], return_tensors="pt")


def tiny_vit_teacher(config, width: int = 32, depth: int = 2) -> dict:
    """A tiny random ViT teacher on the (shrunk) preset's image and patch size: nothing is downloaded."""
    return dict(model_type="vit", image_size=to_2tuple(config.image_size)[0], patch_size=to_2tuple(config.patch_size)[0],
                hidden_size=width, num_hidden_layers=depth, num_attention_heads=2, intermediate_size=2 * width)


class MaskAlignAdapter(ImageAdapter):
    """No decoder: ``logits`` are the aligned predictions (batch, K, 1 + kept, teacher width) of the visible tokens.
    Paper presets: a tiny random ViT teacher (2 blocks of 32) instead of the named CLIP / DINO one."""

    def shrink(self):
        shrink = super().shrink()
        if not shrink:
            return shrink
        config = create_config(self.preset, **shrink)
        return dict(shrink, teacher_name_or_path=None, teacher_config=tiny_vit_teacher(config), teacher_hidden_size=32,
                    teacher_num_hidden_layers=2)  # fmt: skip

    def logits_shape(self, config, height, width):
        patch = to_2tuple(config.patch_size)
        patches = (height // patch[0]) * (width // patch[1])
        layers = min(config.loss_layers, config.teacher_num_hidden_layers)
        return (self.batch, layers, 1 + int(patches * (1 - config.mask_ratio)), config.teacher_hidden_size)


class HybridDistillAdapter(ImageAdapter):
    """Two teachers; ``logits`` are the projected features (batch, 1 + kept by the last block, feature teacher width)
    after the progressive token dropping. Paper presets: two student blocks (relations at the first, a drop after it)
    and two tiny random ViT teachers instead of the named MAE / CLIP / DeiT ones."""

    def shrink(self):
        shrink = super().shrink()
        if not shrink:
            return shrink
        shrink.update(num_hidden_layers=2, token_drop_layers=[1])
        config = create_config(self.preset, **shrink)
        return dict(shrink, mim_teacher_name_or_path=None, mim_teacher_config=tiny_vit_teacher(config),
                    feature_teacher_name_or_path=None, feature_teacher_config=tiny_vit_teacher(config),
                    feature_teacher_seed=1, feature_teacher_hidden_size=32)  # fmt: skip

    def logits_shape(self, config, height, width):
        patch = to_2tuple(config.patch_size)
        held = int((height // patch[0]) * (width // patch[1]) * (1 - config.mask_ratio))
        for _ in config.token_drop_layers:
            held = max(1, math.ceil(config.token_keep_rate * held - 1e-9))
        return (self.batch, 1 + held, config.feature_teacher_hidden_size)


class SelfieAdapter(ImageAdapter):
    """Selfie keeps the visible patches in grid order (no shuffling) and its logits are the patch choices
    (batch, M, M) among the M masked patches; the paper preset's ResNet-50-sized patch network (3 / 4 / 6 blocks of
    256 / 512 / 1024 channels) gets one block per stage and a quarter of the channels (its pooling keeps its width)."""

    reorders_tokens = False

    def shrink(self):
        shrink = super().shrink()
        if not shrink:
            return shrink
        config = create_config(self.preset)
        return dict(shrink, patch_blocks=[1] * len(config.patch_blocks),
                    patch_channels=[max(8, c // 4) for c in config.patch_channels])

    def logits_shape(self, config, height, width):
        patch = to_2tuple(config.patch_size)
        patches = (height // patch[0]) * (width // patch[1])
        masked = patches - int(patches * (1 - config.mask_ratio))
        return (self.batch, masked, masked)


class SparKAdapter(ImageAdapter):
    """SparK: a transformers convnet (ResNet / ConvNeXt) made sparse. ``noise`` is per cell of the backbone's
    coarsest stride (``config.patch_size``), ``round(cells * (1 - mask_ratio))`` cells stay (the official rounding),
    nothing is reordered; ``last_hidden_state`` is the pooled feature then the coarsest map's cells. No attention:
    hidden states are the backbone's own (stem, then each stage); the model runs on any multiple of its stride, so
    another size needs no ``interpolate_pos_encoding`` (the flag is accepted and changes nothing). Paper presets
    keep their widths with one block per stage, on 2x2 cells."""

    reorders_tokens = False
    has_attention = False

    def shrink(self):
        if self.preset.endswith("-tiny"):
            return {}
        config = create_config(self.preset)
        backbone = dict(config.backbone_config, depths=[1] * len(config.stage_widths), drop_path_rate=0.0)
        if backbone["model_type"] == "resnet":
            backbone.pop("drop_path_rate")
        stride = config.downsample_ratio
        return dict(backbone_config=backbone, image_size=2 * stride)

    def expected_mask(self, config, noise):
        kept = max(1, round(noise.shape[1] * (1 - config.mask_ratio)))
        return 1.0 - torch.zeros_like(noise).scatter_(1, noise.argsort(1)[:, :kept], 1.0)

    def masked_count(self, config):
        cells = config.grid_size[0] * config.grid_size[1]
        return cells - max(1, round(cells * (1 - config.mask_ratio)))

    def check_fixed_noise(self, model, fixed):
        a, b = model(**fixed), model(**fixed)
        assert torch.equal(a.logits, b.logits) and torch.equal(a.mask, b.mask)
        assert torch.equal(a.mask, self.expected_mask(model.config, fixed["noise"]))
        assert model(fixed["pixel_values"]).mask.sum(1).tolist() == a.mask.sum(1).tolist()

    def check_hidden_states_and_attentions(self, model, base_inputs):
        """The backbone's hidden states (stem + one per stage), each zero at the masked cells; no attentions."""
        out = model.base_model(**base_inputs, output_hidden_states=True)
        stages = len(model.config.stage_widths)
        assert len(out.hidden_states) == stages + 1 and out.attentions is None
        assert len(out.feature_maps) == stages
        rows, cols = model.config.grid_size
        active = (1 - out.mask).view(-1, 1, rows, cols)
        for state in out.hidden_states:
            here = active.repeat_interleave(state.shape[-2] // rows, 2).repeat_interleave(state.shape[-1] // cols, 3)
            assert state.mul(1 - here).abs().max().item() == 0.0

    def check_bad_inputs(self, model):
        fixed = self.fixed(model.config)
        pixel_values, noise = fixed["pixel_values"], fixed["noise"]
        batch, channels, stride = self.batch, model.config.num_channels, model.config.patch_size
        with pytest.raises(ValueError, match="num_channels"):
            model(torch.randn(batch, channels + 1, *pixel_values.shape[-2:]))
        with pytest.raises(ValueError, match="divisible"):
            model(torch.randn(batch, channels, pixel_values.shape[-2] + 1, pixel_values.shape[-1]))
        other = model(torch.randn(batch, channels, pixel_values.shape[-2] + stride, pixel_values.shape[-1]))
        assert other.mask.shape[1] == (model.config.grid_size[0] + 1) * model.config.grid_size[1]  # no flag needed
        for ratio in (1.0, -0.1, 1.5):
            with pytest.raises(ValueError, match="mask_ratio"):
                model(pixel_values, mask_ratio=ratio)
        with pytest.raises(TypeError, match="mask_ratio"):
            model(pixel_values, mask_ratio="0.5")
        with pytest.raises(TypeError, match="pixel_values.*dtype"):
            model((pixel_values * 100).to(torch.uint8))
        with pytest.raises(TypeError, match="pixel_values"):
            model(pixel_values.numpy())
        with pytest.raises(ValueError, match="empty batch"):
            model(pixel_values[:0])
        with pytest.raises(ValueError, match="noise"):
            model(pixel_values, noise=noise[:, :-1])
        with pytest.raises(ValueError, match="mask_ratio"):
            hf_mae.create_model(self.preset, mask_ratio=1.0)
        with pytest.raises(ValueError, match="backbone_config"):
            hf_mae.create_model(self.preset, backbone_config={"model_type": "vit"})


class JEPAAdapter(ImageAdapter):
    """I-JEPA and DMT-JEPA: the mask is a multi-block one (context and target patch indices), not a noise; the
    encoder has no cls token and never reorders tokens; logits are (batch, num_targets, M, hidden) predicted target
    features. The mask-fixing arguments are ``context_ids`` / ``target_ids`` drawn by the config's own generator
    from a seeded ``torch.Generator``. Paper presets are shrunk to a 4x4 grid, so their context keeps > 1 patch."""

    reorders_tokens = False

    def shrink(self):
        shrink = super().shrink()
        return {**shrink, "min_keep": 1} if shrink else shrink

    def noise(self, config, seed=0):
        generator = torch.Generator().manual_seed(seed)
        drawn = config.mask_generator()(self.batch, config.grid_size, generator=generator)
        return {"context_ids": drawn.context_ids, "target_ids": drawn.target_ids}

    def base_inputs(self, model, fixed):
        return {"pixel_values": fixed["pixel_values"], "context_ids": fixed["context_ids"]}

    def feature_inputs(self, config):
        return self.inputs(config)

    def half(self, inputs, dtype):
        return {k: v.to(dtype) if torch.is_floating_point(v) else v for k, v in inputs.items()}

    def expected_mask(self, config, context_ids):
        rows, cols = config.grid_size
        return 1.0 - torch.zeros(context_ids.shape[0], rows * cols).scatter_(1, context_ids, 1.0)

    def check_drawn_mask(self, out, config):
        hidden = out.mask.sum(1)
        rows, cols = config.grid_size
        assert hidden.tolist() == [hidden[0].item()] * self.batch and 0 < hidden[0] < rows * cols
        assert out.logits.shape[:2] == (self.batch, config.num_target_blocks)

    def check_fixed_noise(self, model, fixed):
        config = model.config
        a, b = model(**fixed), model(**fixed)
        assert torch.equal(a.logits, b.logits) and torch.equal(a.mask, b.mask)
        assert torch.equal(a.mask, self.expected_mask(config, fixed["context_ids"]))
        assert a.logits.shape == (*fixed["target_ids"].shape, config.hidden_size)
        self.check_drawn_mask(model(fixed["pixel_values"]), config)  # without ids: a drawn multi-block mask

    def check_mask_ratio_zero(self, model):
        pixel_values = self.inputs(model.config)["pixel_values"]
        out = model(pixel_values, mask_ratio=0.0)
        num_patches = out.mask.shape[1]
        assert out.last_hidden_state.shape[1] == num_patches  # no cls token
        assert out.mask.sum() == 0 and out.ids_restore is None
        torch.testing.assert_close(out.last_hidden_state, model(pixel_values).last_hidden_state)
        identity = torch.arange(num_patches).expand(self.batch, -1)
        torch.testing.assert_close(out.last_hidden_state, model(pixel_values, context_ids=identity).last_hidden_state)
        torch.testing.assert_close(model(pixel_values[:1], mask_ratio=0.0).last_hidden_state, out.last_hidden_state[:1],
                                   rtol=0, atol=1e-5)  # fmt: skip

    def check_bad_inputs(self, model):
        fixed = self.fixed(model.config)
        pixel_values, context_ids, target_ids = fixed["pixel_values"], fixed["context_ids"], fixed["target_ids"]
        batch, channels = self.batch, model.config.num_channels
        with pytest.raises(ValueError, match="num_channels"):
            model(torch.randn(batch, channels + 1, *pixel_values.shape[-2:]))
        with pytest.raises(ValueError, match="divisible"):
            model(torch.randn(batch, channels, pixel_values.shape[-2] + 1, pixel_values.shape[-1]), interpolate_pos_encoding=True)
        with pytest.raises(ValueError, match="image_size"):
            patch = to_2tuple(model.config.patch_size)
            model(torch.randn(batch, channels, pixel_values.shape[-2] + patch[0], pixel_values.shape[-1]))
        with pytest.raises(ValueError, match="both or neither"):
            model(pixel_values, context_ids=context_ids)
        with pytest.raises(ValueError, match="context_ids"):
            model(pixel_values, context_ids=context_ids + 1000, target_ids=target_ids)
        with pytest.raises(ValueError, match="target_ids"):
            model(pixel_values, context_ids=context_ids, target_ids=target_ids[:, 0])
        with pytest.raises(TypeError, match="context_ids"):
            model(pixel_values, context_ids=context_ids.float(), target_ids=target_ids)
        with pytest.raises(ValueError, match="mask_ratio"):
            model.base_model(pixel_values, mask_ratio=0.5)
        with pytest.raises(TypeError, match="pixel_values.*dtype"):
            model((pixel_values * 100).to(torch.uint8))
        with pytest.raises(TypeError, match="pixel_values"):
            model(pixel_values.numpy())
        with pytest.raises(ValueError, match="empty batch"):
            model(pixel_values[:0])
        with pytest.raises(ValueError, match="target_scale"):
            hf_mae.create_model(self.preset, target_scale=[0.3, 0.2])

    def check_larger(self, model, larger):
        out = model(larger, interpolate_pos_encoding=True)
        assert out.logits.shape[:2] == (self.batch, model.config.num_target_blocks)
        assert out.logits.shape[-1] == model.config.hidden_size and torch.isfinite(out.loss)


class QLAEAdapter(ImageAdapter):
    """QLAE: a convolutional autoencoder with a quantised latent, no masking and no attention. A forward is a function
    of the images alone (no ``noise``); ``logits`` are the reconstruction logits (batch, C, H, W); the base model's
    ``last_hidden_state`` is the latent code (batch, num_latents); the dense layer after the convolutions fixes the
    image size. Paper preset: one block per stage, narrow dense layers (the stage widths kept)."""

    has_attention = False
    reorders_tokens = False

    def shrink(self):
        if self.preset.endswith("-tiny"):
            return {}
        return dict(blocks_per_stage=1, dense_widths=[32])

    def noise(self, config, seed=0):
        return {}

    def logits_shape(self, config, height, width):
        return (self.batch, config.num_channels, height, width)

    def check_drawn_mask(self, out, config):
        assert getattr(out, "mask", None) is None  # nothing is masked

    def check_fixed_noise(self, model, fixed):
        config = model.config
        a, b = model(**fixed), model(**fixed)  # deterministic: no mask to draw
        assert torch.equal(a.logits, b.logits) and torch.equal(a.loss, b.loss)
        assert a.logits.shape == self.logits_shape(config, config.image_size, config.image_size)
        if config.latent_quantization:  # every latent is one of its dimension's codebook values
            codebook = model.qlae.quantizer.codebook
            expected = codebook.gather(1, a.codes.T).T
            torch.testing.assert_close(a.latents, expected, rtol=0, atol=0)

    def check_mask_ratio_zero(self, model):
        """No masking: instead, a sample's latent does not depend on the batch it is in (instance norm)."""
        pixel_values = self.inputs(model.config)["pixel_values"]
        out = model(pixel_values)
        assert out.last_hidden_state.shape == (self.batch, model.config.num_latents)
        torch.testing.assert_close(model(pixel_values[:1]).last_hidden_state, out.last_hidden_state[:1],
                                   rtol=0, atol=1e-5)  # fmt: skip

    def check_bad_inputs(self, model):
        pixel_values = self.inputs(model.config)["pixel_values"]
        batch, channels, size = self.batch, model.config.num_channels, model.config.image_size
        with pytest.raises(ValueError, match="num_channels"):
            model(torch.randn(batch, channels + 1, size, size))
        with pytest.raises(ValueError, match="image_size"):
            model(torch.randn(batch, channels, size + 8, size))
        with pytest.raises(ValueError, match="4 dimensions"):
            model(pixel_values[0])
        with pytest.raises(TypeError, match="pixel_values.*dtype"):
            model((pixel_values * 100).to(torch.uint8))
        with pytest.raises(TypeError, match="pixel_values"):
            model(pixel_values.numpy())
        with pytest.raises(ValueError, match="empty batch"):
            model(pixel_values[:0])
        with pytest.raises(ValueError, match="image_size"):
            hf_mae.create_model(self.preset, image_size=size + 1)
        with pytest.raises(ValueError, match="reconstruction_loss"):
            hf_mae.create_model(self.preset, reconstruction_loss="l1")
        with pytest.raises(ValueError, match="num_latent_values"):
            hf_mae.create_model(self.preset, num_latent_values=1)

    def check_other_sizes(self, model):
        """The encoder's dense layer is sized to ``image_size``: another size is refused, naming it."""
        size = model.config.image_size
        with pytest.raises(ValueError, match="image_size"):
            model(torch.randn(self.batch, model.config.num_channels, 2 * size, 2 * size))

    def check_hidden_states_and_attentions(self, model, base_inputs):
        """Convolutions: no hidden-state tuple, no attention maps; the base model's output is the latent code."""
        out = model.base_model(**base_inputs)
        assert out.last_hidden_state.shape == (self.batch, model.config.num_latents)
        assert torch.equal(out.pooler_output, out.last_hidden_state)


class RAMTAdapter(ImageAdapter):
    """R-AMT: masks on a frozen CLIP-like dual encoder, a zero-shot classifier over ``config.id2label``. Nothing is
    masked per sample: the pre-training class is the mask-tuning classifier, whose fixed inputs are the pixels plus
    ``labels`` (its loss, CE + L2 on the scores, needs them; ``noise`` is empty). Three classes throughout (the
    class embeddings are a saved buffer sized by them). The paper preset keeps its widths (768 / 512), gets one block
    per tower, a 64-px image, no warm start (nothing downloaded) and the tiny preset's MiniLM tokenizer."""

    batch = 4
    base_model_is_the_base_class = True
    fine_tuning_prefixes = ()  # the classifier is the pre-training class: nothing is new

    def shrink(self):
        labels = dict(num_labels=3, id2label={0: "cat", 1: "dog", 2: "car"}, label2id={"cat": 0, "dog": 1, "car": 2})
        if self.preset.endswith("-tiny"):
            return labels
        from hf_mae.modeling.text import MINILM

        clip = copy.deepcopy(create_config(self.preset).clip_config)
        clip["vision_config"].update(num_hidden_layers=1, image_size=64)
        clip["text_config"].update(num_hidden_layers=1, vocab_size=30522, bos_token_id=101, eos_token_id=102,
                                   pad_token_id=0)
        return dict(labels, clip_name_or_path=None, clip_config=clip, tokenizer_name_or_path=MINILM)

    def image_shape(self, config):
        size = config.image_size
        return (config.vision_config().num_channels, *to_2tuple(size))

    def inputs(self, config, seed=0):
        generator = torch.Generator().manual_seed(seed)
        return {"pixel_values": torch.randn(self.batch, *self.image_shape(config), generator=generator)}

    def noise(self, config, seed=0):
        return {"labels": torch.tensor([0, 2, 1, 2])}

    def base_inputs(self, model, fixed):
        return {"pixel_values": fixed["pixel_values"]}

    def check_classifier_output(self, classifier, config, task):
        assert classifier(**self.feature_inputs(config)).logits.shape == (self.batch, 3)

    def check_drawn_mask(self, out, config):
        # no labels: logits only; the masks are weights, not drawn per sample
        assert out.loss is None and out.logits.shape == (self.batch, 3)

    def check_fixed_noise(self, model, fixed):
        import torch.nn.functional as F

        a, b = model(**fixed), model(**fixed)
        assert torch.equal(a.logits, b.logits) and torch.equal(a.loss, b.loss)
        assert torch.equal(a.logits, model.zero_shot_logits(fixed["pixel_values"]))  # every mask one at the start
        penalty = sum(s.float().norm(2) for s in model.ramt.mask_scores.values())
        expected = F.cross_entropy(a.logits, fixed["labels"]) + model.config.score_l2_weight * penalty
        torch.testing.assert_close(a.loss, expected)

    def check_mask_ratio_zero(self, model):
        """The base model masks no token: every token of the image encoder in order, each image's features
        independent of its batch."""
        pixel_values = self.inputs(model.config)["pixel_values"]
        out = model(pixel_values)
        grid = to_2tuple(model.config.image_size)[0] // to_2tuple(model.config.vision_config().patch_size)[0]
        assert out.last_hidden_state.shape[:2] == (self.batch, grid * grid + 1)
        torch.testing.assert_close(model(pixel_values[:1]).last_hidden_state, out.last_hidden_state[:1], rtol=0,
                                   atol=1e-5)

    def check_bad_inputs(self, model):
        fixed = self.fixed(model.config)
        pixel_values = fixed["pixel_values"]
        with pytest.raises(ValueError, match="channels"):
            model(pixel_values[:, :2])
        with pytest.raises(TypeError, match="pixel_values.*dtype"):
            model((pixel_values * 100).to(torch.uint8))
        with pytest.raises(TypeError, match="pixel_values"):
            model(pixel_values.numpy())
        with pytest.raises(ValueError, match="empty batch"):
            model(pixel_values[:0])
        with pytest.raises(ValueError, match="labels must be class ids"):
            model(pixel_values, labels=fixed["labels"] + 3)
        with pytest.raises(ValueError, match="score_init"):
            hf_mae.create_model(self.preset, **self.shrink(), threshold=0.5)

    def check_hidden_states_and_attentions(self, model, base_inputs):
        """One hidden state per image-encoder block plus the embeddings; attention rows sum to one (eager: sdpa
        returns no maps)."""
        eager = self.build(attn_implementation="eager")
        eager.load_state_dict(model.state_dict())
        super().check_hidden_states_and_attentions(eager, base_inputs)

    def check_other_sizes(self, model):
        fixed = self.fixed(model.config)
        pixel_values = fixed["pixel_values"]
        patch = to_2tuple(model.config.vision_config().patch_size)
        larger = torch.randn(self.batch, pixel_values.shape[1], pixel_values.shape[-2] + 2 * patch[0],
                             pixel_values.shape[-1] + 2 * patch[1])
        out = model(larger, interpolate_pos_encoding=True, labels=fixed["labels"])
        assert out.logits.shape == (self.batch, 3) and torch.isfinite(out.loss)
        torch.testing.assert_close(model(**fixed, interpolate_pos_encoding=True).logits, model(**fixed).logits)


class ImageTextAdapter(Adapter):
    """Image-caption pairs (M3AE): ``pixel_values`` (batch, 3, H, W) plus one caption each. The processor draws the
    pre-training inputs (MLM corruption, ITM pairs, the MIM ``noise``) from a seeded generator; ``noise`` fixes the
    MIM mask as MAE's does (the kept patches: the smallest noise). A paper preset keeps its fusion width but gets one
    fusion layer, MIM from it, a one-block decoder, one-layer towers at 64 px, no warm start (nothing downloaded) and
    the tiny preset's local tokenizer. The second and third captions are padded (the first is the longest)."""

    processor_auto_class = AutoProcessor
    classifier_auto_classes = {"image-classification": AutoModelForImageClassification}
    base_model_is_the_base_class = True
    captions = ("a black dog runs across a green field with a red ball", "a cat on a sofa", "two birds")

    def shrink(self):
        if self.preset.endswith("-tiny"):
            return {}
        from hf_mae.modeling.text import MINILM

        config = create_config(self.preset)
        vision = dict(config.vision_config, num_hidden_layers=1, image_size=64)
        text = dict(config.text_config, num_hidden_layers=1)
        return dict(vision_name_or_path=None, vision_config=vision, text_name_or_path=None, text_config=text,
                    tokenizer_name_or_path=MINILM, max_length=32, num_hidden_layers=1, mim_layer=1,
                    decoder_num_hidden_layers=1)

    def draw(self, config, seed=0) -> dict:
        generator = torch.Generator().manual_seed(seed)
        height, width = to_2tuple(config.image_size)
        images = [torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8).numpy()
                  for _ in range(self.batch)]
        return dict(self.processor()(images, text=list(self.captions[: self.batch]), return_tensors="pt",
                                     for_pretraining=True, generator=generator))

    def inputs(self, config, seed=0):
        return {k: v for k, v in self.draw(config, seed).items() if k != "noise"}

    def noise(self, config, seed=0):
        return {"noise": self.draw(config, seed)["noise"]}

    def base_inputs(self, model, fixed):
        return {key: fixed[key] for key in ("pixel_values", "input_ids", "attention_mask")}

    def feature_inputs(self, config):
        return self.base_inputs(None, self.inputs(config))

    def masked_count(self, config):
        return config.num_patches - int(config.num_patches * (1 - config.mask_ratio))

    def check_fixed_noise(self, model, fixed):
        config = model.config
        a, b = model(**fixed), model(**fixed)
        assert torch.equal(a.logits, b.logits) and torch.equal(a.loss, b.loss)
        kept = int(config.num_patches * (1 - config.mask_ratio))
        expected = torch.ones_like(fixed["noise"]).scatter_(1, fixed["noise"].argsort(1)[:, :kept], 0.0)
        assert torch.equal(a.mask, expected)
        patch = to_2tuple(config.patch_size)
        assert a.logits.shape == (self.batch, config.num_patches, patch[0] * patch[1] * config.num_channels)
        again = self.draw(config)  # the same seed: the same draws; another seed: other ones
        assert all(torch.equal(again[key], fixed[key]) for key in fixed)
        other = self.draw(config, seed=1)
        assert not torch.equal(other["noise"], fixed["noise"])
        # the whole-word MLM mask covers about mlm_ratio of the ordinary tokens, never a special one
        words = self.processor().tokenize(list(self.captions))["word_ids"]
        masked = fixed["mlm_labels"] != -100
        assert masked.any() and not (masked & (words < 0)).any()
        # ITM: batch - int(batch / 2) pairs get another row's image
        assert int((fixed["itm_labels"] == 0).sum()) == self.batch - int(self.batch * (1 - config.itm_negative_rate))
        assert torch.equal(fixed["itm_image_index"] == torch.arange(self.batch), fixed["itm_labels"] == 1)

    def check_mask_ratio_zero(self, model):
        """The base model drops nothing: every patch in order; a caption's fused tokens do not depend on the padding
        of its batch."""
        inputs = self.feature_inputs(model.config)
        out = model(**inputs)
        length, patches = inputs["input_ids"].shape[1], model.config.num_patches
        assert out.last_hidden_state.shape[1] == length + 1 + patches and out.mask.sum() == 0
        assert torch.equal(out.ids_restore, torch.arange(patches).expand(self.batch, -1))
        real = int(inputs["attention_mask"][1].sum())
        alone = model(pixel_values=inputs["pixel_values"][1:2], input_ids=inputs["input_ids"][1:2, :real],
                      attention_mask=inputs["attention_mask"][1:2, :real])
        torch.testing.assert_close(alone.text_last_hidden_state[0], out.text_last_hidden_state[1, :real], rtol=0, atol=1e-5)
        torch.testing.assert_close(alone.image_last_hidden_state[0], out.image_last_hidden_state[1], rtol=0, atol=1e-5)

    def check_bad_inputs(self, model):
        fixed = self.fixed(model.config)
        TextAdapter.check_bad_token_inputs(model, fixed)
        pixels = fixed["pixel_values"]
        with pytest.raises(ValueError, match="channels"):
            model(**{**fixed, "pixel_values": pixels[:, :1]})
        with pytest.raises(ValueError, match="image_size"):
            model(**{**fixed, "pixel_values": pixels[..., :-8]})
        with pytest.raises(TypeError, match="pixel_values"):
            model(**{**fixed, "pixel_values": (pixels * 100).to(torch.uint8)})
        with pytest.raises(ValueError, match="noise"):
            model(**{**fixed, "noise": fixed["noise"][:, :-1]})
        with pytest.raises(ValueError, match="one caption per image"):
            model(**{**fixed, "pixel_values": pixels[:1]})
        with pytest.raises(ValueError, match="itm_image_index"):
            model(**{**fixed, "itm_image_index": fixed["itm_image_index"] + self.batch})
        with pytest.raises(ValueError, match="pre-training inputs"):
            model(**self.base_inputs(model, fixed))
        with pytest.raises(ValueError, match="mask_ratio"):
            hf_mae.create_model(self.preset, **self.shrink(), mask_ratio=1.0)
        with pytest.raises(ValueError, match="mim_layer"):
            hf_mae.create_model(self.preset, **{**self.shrink(), "mim_layer": 99})
        with pytest.raises(ValueError, match="one caption per image"):
            self.processor()([torch.zeros(8, 8, 3, dtype=torch.uint8).numpy()], text=["one", "two"], return_tensors="pt")

    def check_hidden_states_and_attentions(self, model, base_inputs):
        """The text stream: its fusion input plus one state per fusion layer; its self-attention rows sum to one
        (eager: sdpa returns no maps)."""
        eager = self.build(attn_implementation="eager")
        eager.load_state_dict(model.state_dict())
        out = eager.base_model(**base_inputs, output_hidden_states=True, output_attentions=True)
        layers, heads = model.config.num_hidden_layers, model.config.num_attention_heads
        tokens = base_inputs["input_ids"].shape[1]
        assert len(out.hidden_states) == layers + 1 and len(out.attentions) == layers
        assert out.hidden_states[-1].shape == out.text_last_hidden_state.shape
        torch.testing.assert_close(out.hidden_states[-1], out.text_last_hidden_state)
        assert out.attentions[0].shape == (self.batch, heads, tokens, tokens)
        torch.testing.assert_close(out.attentions[0].sum(-1), torch.ones(self.batch, heads, tokens))


MODALITY_ADAPTERS = {
    "image": ImageAdapter,
    "video": VideoAdapter,
    "video-text": VideoTextAdapter,
    "audio": AudioAdapter,
    "point-cloud": PointCloudAdapter,
    "graph": GraphAdapter,
    "embeddings": EmbeddingsAdapter,
    "text": TextAdapter,
    "image-text": ImageTextAdapter,
}
# methods whose masking or outputs differ from their modality's
METHOD_ADAPTERS = {
    "starbucks": StarbucksAdapter,
    "simmim": SimMIMAdapter,
    "mto": SimMIMAdapter,  # SimMIM + masked token optimisation: SimMIM's inputs and outputs
    "mixedae": MixedAEAdapter,
    "mp3": MP3Adapter,
    "dmjd": DMJDAdapter,
    "dmae": FrozenTeacherImageAdapter,
    "mrmae": FrozenTeacherImageAdapter,
    "cae": CAEAdapter,
    "cratemae": CrateMAEAdapter,
    "videomaev2": VideoMAEV2Adapter,
    "maskalign": MaskAlignAdapter,
    "hybriddistill": HybridDistillAdapter,
    "selfie": SelfieAdapter,
    "spark": SparKAdapter,
    "ijepa": JEPAAdapter,
    "dmtjepa": JEPAAdapter,
    "qlae": QLAEAdapter,
    "meap": MEAPAdapter,
    "ramt": RAMTAdapter,
    "multimae": MultiMAEAdapter,
}


def adapter_for(preset: str) -> Adapter:
    method = method_of(preset)
    return METHOD_ADAPTERS.get(method.name, MODALITY_ADAPTERS[method.modality])(preset)
