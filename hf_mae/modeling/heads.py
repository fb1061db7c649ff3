"""Task heads shared across methods.

Remote-code rule: this file imports only torch, transformers and siblings (see DESIGN.md).
"""

from __future__ import annotations

from typing import Unpack

import torch
from torch import nn
from transformers.modeling_outputs import ImageClassifierOutput
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple

from .losses import classification_loss


class ImageClassifierMixin:
    """``forward`` of a ``<Method>ForImageClassification``: the unmasked encoder (``self.base_model``), pooled as
    MAE and SimMIM fine-tune, then a linear classifier.

    ``classifier_pooling="mean"``: the mean of the patch tokens, then ``fc_norm`` (build the encoder without its
    final norm, which fc_norm replaces); ``"cls"``: the encoder's normalised cls token.
    """

    def build_classifier(self, config) -> None:
        self.num_labels = config.num_labels
        mean = config.classifier_pooling == "mean"
        self.fc_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps) if mean else nn.Identity()
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool = False,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """pixel_values (batch, channels, H, W); labels (batch,). Returns ImageClassifierOutput (logits (batch, num_labels));
        output_hidden_states / output_attentions / return_dict as in transformers."""
        encoded = self.base_model(
            pixel_values, mask_ratio=0.0, interpolate_pos_encoding=interpolate_pos_encoding, return_dict=True, **kwargs
        )
        tokens = encoded.last_hidden_state
        pooled = tokens[:, 1:].mean(dim=1) if self.config.classifier_pooling == "mean" else tokens[:, 0]
        logits = self.classifier(self.fc_norm(pooled))
        loss = classification_loss(logits, labels, self.config) if labels is not None else None
        return ImageClassifierOutput(
            loss=loss, logits=logits, hidden_states=encoded.hidden_states, attentions=encoded.attentions
        )
