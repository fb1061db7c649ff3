"""VideoMAE V2: Scaling Video Masked Autoencoders with Dual Masking (Wang et al., CVPR 2023).

VideoMAE with **dual masking**, following the official code (OpenGVLab/VideoMAEv2: ``models/modeling_pretrain.py``,
``dataset/masking_generator.py``, ``engine_for_pretraining.py``):
1. the encoder sees the tokens a tube mask keeps (ratio 0.9), exactly as VideoMAE;
2. the decoder does not reconstruct every hidden token: a second, **running-cell** mask (ratio 0.5, independent of
   the encoder's) picks the positions it decodes; each gets a mask token, whether or not the encoder saw it;
3. the loss is the MSE over the decoded tokens the encoder did *not* see (``cal_loss_mask``), against VideoMAE's
   per-tubelet normalised pixels.
The decoder thus processes kept + decoded tokens (about 10% + 50% of the clip) instead of all of them, which is
what makes billion-parameter video MAEs affordable. With ``decoder_mask_ratio=0`` the decoder decodes exactly the
encoder's hidden tokens and the model equals VideoMAE (the official "no decoder masking": ``1 - encoder_mask``).

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Unpack

import torch
from transformers.utils import TransformersKwargs
from transformers.utils.generic import can_return_tuple

from .masking import build_mask_generator, check_mask_ratio
from .outputs import MaskedPreTrainingOutput
from .videomae import HfVideoMAEConfig, VideoMAEForPreTraining, VideoMAEForVideoClassification, VideoMAEModel


class VideoMAEV2Config(HfVideoMAEConfig):
    r"""Configuration of a VideoMAE V2 model: VideoMAE's fields (tube masking at 0.9 for the encoder) plus

    decoder_mask_ratio: share of the tokens the decoder does *not* decode (official 0.5); 0 = VideoMAE.
    decoder_mask_generator: "running_cell" (official; the token grid needs even rows and columns).
    """

    model_type = "videomaev2"

    decoder_mask_ratio: float = 0.5
    decoder_mask_generator: str = "running_cell"

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        check_mask_ratio(self.decoder_mask_ratio)


@dataclass
class VideoMAEV2PreTrainingOutput(MaskedPreTrainingOutput):
    """MaskedPreTrainingOutput plus
    decoder_mask: (batch, num_tokens), 1 = not decoded; logits are the decoded tokens' (the 0s here), in order.
    loss_mask: (batch, decoded tokens), 1 where the loss counts (decoded and hidden from the encoder).
    """

    decoder_mask: torch.Tensor | None = None
    loss_mask: torch.Tensor | None = None


class VideoMAEV2Model(VideoMAEModel):
    config_class = VideoMAEV2Config


class VideoMAEV2ForPreTraining(VideoMAEForPreTraining):
    """VideoMAE's encoder and decoder, trained with dual masking."""

    config_class = VideoMAEV2Config

    def __init__(self, config: VideoMAEV2Config):
        super().__init__(config)
        self.decoder_mask_generator = build_mask_generator(config.decoder_mask_generator)

    @can_return_tuple
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        mask_ratio: float | None = None,
        decoder_mask: torch.Tensor | None = None,
        decoder_mask_ratio: float | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ):
        """VideoMAE's inputs plus
        decoder_mask: (batch, num_tokens) bool, optional: True = not decoded (the official ``decode_masked_pos``);
            every clip must decode the same number of tokens. Default: a running-cell mask whose start is drawn, or,
            with a fixed ``noise``, ``floor(4 * noise[:, 0])`` (so a fixed noise fixes both masks).
        decoder_mask_ratio: overrides ``config.decoder_mask_ratio`` for this call (0: decode the encoder's hidden
            tokens, i.e. VideoMAE).
        Returns VideoMAEV2PreTrainingOutput: logits (batch, decoded, tubelet * ph * pw * C), the masked MSE ``loss``.
        """
        ratio = check_mask_ratio(self.config.decoder_mask_ratio if decoder_mask_ratio is None else decoder_mask_ratio)
        encoded = self.videomae(
            pixel_values,
            bool_masked_pos=bool_masked_pos,
            noise=noise,
            mask_ratio=self.config.mask_ratio if mask_ratio is None else mask_ratio,
            return_dict=True,
            **kwargs,
        )
        hidden = encoded.mask.bool()
        if not hidden.any():
            raise ValueError("pre-training needs hidden tokens: mask_ratio is 0 and no bool_masked_pos hides any")
        batch, num_tokens = hidden.shape
        if decoder_mask is not None:
            if tuple(decoder_mask.shape) != (batch, num_tokens):
                raise ValueError(
                    f"decoder_mask must have shape (batch, num_tokens) = {(batch, num_tokens)}, got {tuple(decoder_mask.shape)}"
                )
            decode = ~decoder_mask.to(hidden.device).bool()
            counts = decode.sum(1)
            if not bool((counts == counts[0]).all()):
                raise ValueError(f"every clip must decode the same number of tokens, got {counts.tolist()}")
        elif ratio == 0.0:
            decode = hidden  # no decoder masking: VideoMAE
        elif noise is not None:  # a fixed noise fixes the decoder mask too: the running cell starts at floor(4 * noise[:, 0])
            starts = (noise[:, 0].to(hidden.device) * 4).long().clamp(0, 3)
            decode = ~self.decoder_mask_generator.from_starts(starts, ratio, self.config.grid_size).mask.bool()
        else:
            drawn = self.decoder_mask_generator(batch, num_tokens, ratio, self.config.grid_size, hidden.device)
            decode = ~drawn.mask.bool()
        logits = self.decoder(encoded.last_hidden_state, encoded.mask, decode)
        num_decoded = logits.shape[1]
        target = self.target(pixel_values)[decode].reshape(batch, num_decoded, -1)
        loss_mask = hidden[decode].reshape(batch, num_decoded).float()  # decoded and unseen by the encoder
        if bool(loss_mask.all()):  # every decoded token is a hidden one (no decoder masking): VideoMAE's loss, bit for bit
            loss = torch.nn.functional.mse_loss(logits.float(), target)
        else:
            per_token = (logits.float() - target).pow(2).mean(dim=-1)
            loss = (per_token * loss_mask).sum() / loss_mask.sum().clamp_min(1.0)
        output = VideoMAEV2PreTrainingOutput(
            loss=loss,
            logits=logits,
            mask=encoded.mask,
            ids_restore=encoded.ids_restore,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
            decoder_mask=(~decode).float(),
            loss_mask=loss_mask,
        )
        return output


class VideoMAEV2ForVideoClassification(VideoMAEForVideoClassification):
    config_class = VideoMAEV2Config


__all__ = [
    "VideoMAEV2Config",
    "VideoMAEV2Model",
    "VideoMAEV2ForPreTraining",
    "VideoMAEV2ForVideoClassification",
    "VideoMAEV2PreTrainingOutput",
]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
from .presets import TINY_VIDEO, VIT  # noqa: E402

METHOD = dict(
    name="videomaev2",
    paper=(
        "VideoMAE V2: Scaling Video Masked Autoencoders with Dual Masking (Wang et al., CVPR 2023), "
        "arXiv:2303.16727"
    ),
    config_class=VideoMAEV2Config,
    model_classes={
        "base": VideoMAEV2Model, "pretraining": VideoMAEV2ForPreTraining,
        "video-classification": VideoMAEV2ForVideoClassification,
    },
    processor="MAEVideoProcessor",
    presets={
        # videomae-tiny's sizes; the decoder reconstructs half of the 64 tokens (running cells)
        "videomaev2-tiny": dict(TINY_VIDEO),
        # the official ViT-B and ViT-g pre-training: tube 0.9 for the encoder, running cell 0.5 for the decoder
        "videomaev2-vit-base-patch16": dict(patch_size=16, **VIT["base"]),
        "videomaev2-vit-giant-patch14": dict(
            patch_size=14, hidden_size=1408, num_hidden_layers=40, num_attention_heads=16, intermediate_size=6144,
            decoder_hidden_size=512, decoder_num_attention_heads=8, decoder_intermediate_size=2048,
        ),
    },
    modality="video",
)
