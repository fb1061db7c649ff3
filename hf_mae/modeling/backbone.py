"""Backbones for dense-prediction heads: the ViT encoders of MAE (and its image subclasses) and SimMIM as
transformers ``AutoBackbone`` models, so UperNet, DPT, Mask2Former and any head built with ``load_backbone`` can use
them.

    backbone = AutoBackbone.from_pretrained("runs/mae", out_indices=[2, 4, 6, 8])
    maps = backbone(pixel_values).feature_maps          # 4 x (batch, hidden, rows, cols)
    UperNetForSemanticSegmentation(UperNetConfig(backbone_config=MAEConfig(out_indices=[2, 4, 6, 8]), ...))

Stages follow transformers' ViT backbones (``Dinov2Backbone``): ``stem`` is the embedding output (the input of the
first block), ``stage{i}`` the output of block ``i``. A feature map is that stage's patch tokens, reshaped to the
patch grid and channels-first: the encoder's ``hidden_states[i]`` without the CLS token, unmasked
(``mask_ratio=0``), without a final norm. Every stage has ``hidden_size`` channels at the patch-grid resolution;
heads that want a pyramid (UperNet) resample them themselves.

The method configs are not transformers ``BackboneConfigMixin`` configs: ``out_features`` / ``out_indices`` are read
from the backbone's keyword arguments (``from_pretrained(..., out_indices=...)``) or from the config attributes of
those names, checked and aligned with transformers' own ``BackboneConfigMixin`` rules, and stored back on the
config (so a saved backbone config reloads the same stages).

Remote-code rule: this file imports only torch, transformers and its siblings (see DESIGN.md).
"""

from __future__ import annotations

import torch
from transformers.backbone_utils import BackboneConfigMixin, BackboneMixin
from transformers.modeling_outputs import BackboneOutput

from .mae import MAEModel, MAEPreTrainedModel
from .simmim import SimMIMModel, SimMIMPreTrainedModel

ENCODER_FAMILIES = (MAEModel, SimMIMModel)


class ViTEncoderBackboneMixin(BackboneMixin):
    """The backbone mechanics shared by every ViT-encoder family; a concrete class names the wrapped base model
    class (``encoder_class``) and inherits the family's ``PreTrainedModel`` (flags, ``_init_weights``)."""

    encoder_class: type = None

    def __init__(self, config, out_features: list[str] | None = None, out_indices: list[int] | None = None):
        # given here by from_pretrained(..., out_indices=...), which passes what the config does not know
        if out_features is not None or out_indices is not None:
            config.out_features, config.out_indices = out_features, out_indices
        super().__init__(config)
        # the encoder under the family's prefix, so the keys of any saved model of the family ("mae.layers...")
        # load as they are; a decoder in the checkpoint is left out
        setattr(self, self.base_model_prefix, self.encoder_class(config))
        self.post_init()

    @property
    def encoder(self):
        return getattr(self, self.base_model_prefix)

    def _init_transformers_backbone(self) -> None:
        config = self.config
        self.stage_names = ["stem"] + [f"stage{i}" for i in range(1, config.num_hidden_layers + 1)]
        self.num_features = [config.hidden_size] * len(self.stage_names)
        self._set_stages(getattr(config, "out_features", None), getattr(config, "out_indices", None))

    def _set_stages(self, out_features, out_indices) -> None:
        """Checks and aligns the chosen stages with transformers' rules (ValueError naming the problem)."""
        stages = BackboneConfigMixin()
        stages.stage_names = self.stage_names
        stages.set_output_features_output_indices(
            list(out_features) if out_features is not None else None,
            list(out_indices) if out_indices is not None else None,
        )
        config = self.config
        config.stage_names = self.stage_names
        config.out_features, config.out_indices = stages.out_features, stages.out_indices
        config._out_features, config._out_indices = stages.out_features, stages.out_indices  # what BackboneMixin reads

    @property
    def out_features(self):
        return self.config._out_features

    @out_features.setter
    def out_features(self, out_features: list[str]):
        self._set_stages(out_features, None)

    @property
    def out_indices(self):
        return self.config._out_indices

    @out_indices.setter
    def out_indices(self, out_indices: list[int]):
        self._set_stages(None, out_indices)

    def forward(
        self,
        pixel_values: torch.Tensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> BackboneOutput:
        """pixel_values: (batch, channels, height, width). Returns BackboneOutput: ``feature_maps``, one
        (batch, hidden, height / patch, width / patch) tensor per chosen stage; ``hidden_states`` (every stage's
        tokens, CLS first) when asked; ``attentions`` when asked."""
        config = self.config
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        return_dict = config.return_dict if return_dict is None else return_dict
        rows, cols = self.encoder.embeddings.patch_embeddings.grid_for(pixel_values, interpolate_pos_encoding)
        encoded = self.encoder(
            pixel_values, mask_ratio=0.0, interpolate_pos_encoding=interpolate_pos_encoding,
            output_hidden_states=True, output_attentions=output_attentions, return_dict=True,
        )  # fmt: skip
        feature_maps = tuple(
            # the last rows * cols tokens are the patches in grid order (CLS and any other extra tokens come first)
            hidden[:, -rows * cols :].transpose(1, 2).reshape(hidden.shape[0], -1, rows, cols).contiguous()
            for stage, hidden in zip(self.stage_names, encoded.hidden_states)
            if stage in self.out_features
        )
        output = BackboneOutput(
            feature_maps=feature_maps,
            hidden_states=encoded.hidden_states if output_hidden_states else None,
            attentions=encoded.attentions,
        )
        return output if return_dict else output.to_tuple()


def backbone_class_for(model_class) -> type | None:
    """The backbone class over base model class ``model_class`` (``MAEModel``, ``SimMIMModel`` or an image subclass
    such as ``ColorMAEModel``), or None when it is not a ViT image encoder of those families.

    MAEBackbone and SimMIMBackbone are defined here; a subclass gets its own class named after it
    (``ColorMAEBackbone``, ``config_class`` ColorMAEConfig), as the Auto classes require one class per config."""
    if not (isinstance(model_class, type) and issubclass(model_class, ENCODER_FAMILIES)):
        return None
    if getattr(model_class, "main_input_name", None) != "pixel_values":
        return None  # e.g. Audio-MAE's spectrogram encoder
    if model_class in _BACKBONES:
        return _BACKBONES[model_class]
    family = next(cls for cls in ENCODER_FAMILIES if issubclass(model_class, cls))
    name = model_class.__name__.removesuffix("Model") + "Backbone"
    backbone = type(name, (_BACKBONES[family],), {
        "encoder_class": model_class, "config_class": model_class.config_class, "__module__": __name__,
        "__doc__": f"{model_class.__name__}'s encoder as a transformers backbone (see {_BACKBONES[family].__name__}).",
    })  # fmt: skip
    _BACKBONES[model_class] = backbone
    return backbone


class MAEBackbone(ViTEncoderBackboneMixin, MAEPreTrainedModel):
    """MAE's ViT encoder as a backbone: ``feature_maps`` (batch, hidden, rows, cols) at the chosen stages."""

    encoder_class = MAEModel
    _keys_to_ignore_on_load_unexpected = [r"^(?!mae\.)"]  # a checkpoint's decoder or head: not part of the encoder


class SimMIMBackbone(ViTEncoderBackboneMixin, SimMIMPreTrainedModel):
    """SimMIM's ViT encoder as a backbone: ``feature_maps`` (batch, hidden, rows, cols) at the chosen stages."""

    encoder_class = SimMIMModel
    _keys_to_ignore_on_load_unexpected = [r"^(?!simmim\.)"]


_BACKBONES = {MAEModel: MAEBackbone, SimMIMModel: SimMIMBackbone}

__all__ = ["MAEBackbone", "SimMIMBackbone", "ViTEncoderBackboneMixin", "backbone_class_for"]
