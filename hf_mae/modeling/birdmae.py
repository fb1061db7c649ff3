"""Bird-MAE: Can Masked Autoencoders Also Listen to Birds? (Rauch et al., 2025).

Bird-MAE is Audio-MAE (see ``audiomae.py``) pre-trained on bird recordings (BirdSet's Xeno-Canto, XCL): 5-s clips at
32 kHz, 512-frame x 128-bin Kaldi filterbanks normalised with the data set's statistics (mean -7.2, std 4.43), 16x16
patches (a 32 x 8 grid), a ViT encoder, MAE's plain *global* decoder (8 blocks, 512-d, 16 heads; not Audio-MAE's
Swin decoder), mask ratio 0.8 and the norm-pix MSE. The model code is Audio-MAE's; the classes below only change the
defaults and the names, so a checkpoint's ``config.json`` says ``"model_type": "birdmae"``.

Remote-code rule: only sibling imports (``from .x import y``), torch and transformers (see DESIGN.md).
"""

from __future__ import annotations

from .audiomae import AudioMAEConfig, AudioMAEForAudioClassification, AudioMAEForPreTraining, AudioMAEModel


class BirdMAEConfig(AudioMAEConfig):
    r"""Configuration of a Bird-MAE model: an :class:`AudioMAEConfig` with the paper's defaults (ViT-B/16 on
    512 frames x 128 mel bins at 32 kHz, mean -7.2, std 4.43, a global 8 x 512 decoder, mask ratio 0.8)."""

    model_type = "birdmae"

    sampling_rate: int = 32000
    max_length: int = 512
    image_size: int | list[int] | tuple[int, int] = (512, 128)
    mean: float = -7.2
    std: float = 4.43
    decoder_mode: str = "global"
    decoder_num_hidden_layers: int = 8


class BirdMAEModel(AudioMAEModel):
    """The Bird-MAE ViT encoder (:class:`AudioMAEModel`). Same inputs and outputs."""

    config_class = BirdMAEConfig


class BirdMAEForPreTraining(AudioMAEForPreTraining):
    """Bird-MAE pre-training (:class:`AudioMAEForPreTraining` with the global decoder). Same inputs and outputs."""

    config_class = BirdMAEConfig
    encoder_class = BirdMAEModel


class BirdMAEForAudioClassification(AudioMAEForAudioClassification):
    """A Bird-MAE encoder with Audio-MAE's mean-pooling classifier. Same inputs and outputs."""

    config_class = BirdMAEConfig
    encoder_class = BirdMAEModel


__all__ = ["BirdMAEConfig", "BirdMAEModel", "BirdMAEForPreTraining", "BirdMAEForAudioClassification"]


# ----------------------------------------------------------------------------------------------- registry row
# Read by hf_mae.registry, which builds the method from it (DESIGN.md, "adding a method"). Plain data naming this
# file's classes and the processor by class name: as remote code this file imports no hf_mae module.
from .presets import TINY_AUDIO, VIT  # noqa: E402

METHOD = dict(
    name="birdmae",
    paper="Can Masked Autoencoders Also Listen to Birds? (Rauch et al., 2025)",
    config_class=BirdMAEConfig,
    model_classes={
        "base": BirdMAEModel,
        "pretraining": BirdMAEForPreTraining,
        "audio-classification": BirdMAEForAudioClassification,
    },
    processor="AudioMAEFeatureExtractor",
    # Bird-MAE's pre-training augmentations (active only in augment=True calls); Audio-MAE pre-trains without
    processor_settings=dict(augmentations="birdmae"),
    presets={
        # audiomae-tiny's sizes with Bird-MAE's global decoder, 32 kHz and XCL statistics
        "birdmae-tiny": dict(TINY_AUDIO, max_length=128),
        # the paper's Base: 512 x 128 at 32 kHz (32 x 8 tokens), mask 0.8, global decoder 512-d x 8 blocks
        "birdmae-vit-base-patch16": dict(**VIT["base"]),
    },
    modality="audio",
)
