"""The table of methods: name -> config, model class per task, processor, presets.

Importing ``hf_mae`` registers every row with transformers' Auto classes. A new method adds one ``Method`` row
(and its presets) to ``METHODS``; the shared model test-suite, the CLI and ``create_model`` pick it up from here.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers import (
    AutoConfig,
    AutoFeatureExtractor,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForAudioClassification,
    AutoModelForPreTraining,
    AutoModelForVideoClassification,
    AutoProcessor,
)

from .modeling.colormae import (
    ColorMAEConfig,
    ColorMAEForImageClassification,
    ColorMAEForPreTraining,
    ColorMAEModel,
)
from .modeling.mae import MAEConfig, MAEForImageClassification, MAEForPreTraining, MAEModel
from .modeling.hpm import HPMConfig, HPMForImageClassification, HPMForPreTraining, HPMModel
from .modeling.simmim import SimMIMConfig, SimMIMForImageClassification, SimMIMForPreTraining, SimMIMModel
from .modeling.cropmae import CropMAEConfig, CropMAEForImageClassification, CropMAEForPreTraining, CropMAEModel
from .modeling.dmjd import DMJDConfig, DMJDForImageClassification, DMJDForPreTraining, DMJDModel
from .modeling.lut import LUTConfig, LUTForImageClassification, LUTForPreTraining, LUTModel
from .modeling.mixedae import MixedAEConfig, MixedAEForImageClassification, MixedAEForPreTraining, MixedAEModel
from .modeling.mp3 import MP3Config, MP3ForImageClassification, MP3ForPreTraining, MP3Model
from .modeling.videomae import HfVideoMAEConfig, VideoMAEForPreTraining, VideoMAEForVideoClassification, VideoMAEModel
from .modeling.videomaev2 import (
    VideoMAEV2Config,
    VideoMAEV2ForPreTraining,
    VideoMAEV2ForVideoClassification,
    VideoMAEV2Model,
)
from .modeling.crossvideomae import CrossVideoMAEConfig, CrossVideoMAEForPreTraining, CrossVideoMAEForVideoClassification, CrossVideoMAEModel  # noqa: E501
from .modeling.tgm import TGMConfig, TGMForPreTraining, TGMForVideoClassification, TGMModel
from .modeling.lvmae import LVMAEConfig, LVMAEFeatureExtractor, LVMAEForPreTraining, LVMAEForVideoClassification, LVMAEModel
from .modeling.audiomae import (
    AudioMAEConfig,
    AudioMAEForAudioClassification,
    AudioMAEForPreTraining,
    AudioMAEModel,
)
from .modeling.birdmae import BirdMAEConfig, BirdMAEForAudioClassification, BirdMAEForPreTraining, BirdMAEModel
from .processors.feature_extraction_audiomae import AudioMAEFeatureExtractor
from .modeling.pointmae import PointMAEConfig, PointMAEForPointCloudClassification, PointMAEForPreTraining, PointMAEModel
from .processors.point_cloud_processing import PointCloudFeatureExtractor
from .modeling.i2pmae import I2PMAEConfig, I2PMAEForPointCloudClassification, I2PMAEForPreTraining, I2PMAEModel
from .modeling.graphmae import GraphMAEConfig, GraphMAEForGraphClassification, GraphMAEForNodeClassification, GraphMAEForPreTraining, GraphMAEModel  # noqa: E501
from .processors.graph_processing import GraphProcessor
# -- new methods: one import line each, above this comment --
from .auto import AutoModelForGraphClassification, AutoModelForNodeClassification, AutoModelForPointCloudClassification
from .modeling.embeddings import to_2tuple
from .processors.image_processing_mae import MAEImageProcessor
from .processors.image_processing_views import TwoViewImageProcessor
from .processors.video_processing_mae import MAEVideoProcessor
from .processors.processing_tgm import TGMProcessor

# task name (as in create_model and the CLI) -> the Auto class that loads it
AUTO_CLASSES = {
    "base": AutoModel,
    "pretraining": AutoModelForPreTraining,
    "image-classification": AutoModelForImageClassification,
    "video-classification": AutoModelForVideoClassification,
    "audio-classification": AutoModelForAudioClassification,
    "point-cloud-classification": AutoModelForPointCloudClassification,
    "node-classification": AutoModelForNodeClassification,
    "graph-classification": AutoModelForGraphClassification,
}


def image_processor_for(processor_class, **settings) -> Callable:
    """A processor factory that sizes an image processor to the config's ``image_size`` (plus fixed ``settings``)."""

    def build(config):
        height, width = to_2tuple(config.image_size)
        return processor_class(size={"height": height, "width": width}, **settings)

    return build


def video_processor_for(config) -> MAEVideoProcessor:
    """A video processor sampling ``config.num_frames`` frames, each resized and centre-cropped to ``image_size``."""
    height, width = to_2tuple(config.image_size)
    return MAEVideoProcessor(
        num_frames=config.num_frames, size={"shortest_edge": min(height, width)}, crop_size={"height": height, "width": width}
    )


def audio_feature_extractor_for(config) -> AudioMAEFeatureExtractor:
    """Log-mel filterbanks at the config's sampling rate, bins, frame count and normalisation statistics."""
    return AudioMAEFeatureExtractor(
        sampling_rate=config.sampling_rate, num_mel_bins=config.num_mel_bins, max_length=config.max_length,
        mean=config.mean, std=config.std,
        # Bird-MAE's pre-training augmentations (active only in augment=True calls); Audio-MAE pre-trains without
        augmentations="birdmae" if config.model_type == "birdmae" else None,
    )


@dataclass
class Method:
    name: str
    paper: str
    config_class: type
    model_classes: dict  # task -> PreTrainedModel subclass
    processor_class: type
    make_processor: Callable  # config -> processor
    presets: dict = field(default_factory=dict)  # preset name -> config kwargs
    modality: str = "image"  # image | video | video-text | audio | embeddings | point-cloud | graph
    # "token-drop": the encoder sees only the kept tokens, ``noise`` is per token (MAE);
    # "mask-token": the encoder sees every token, hidden ones as a mask token, ``noise`` is per mask cell (SimMIM)
    # "mixing": groups of mix_group images are mixed into one; ``mask`` is per source image and a fixed ``noise``
    # gives each group the ranks of its first member's noise, ranks [j*L/g, (j+1)*L/g) to member j (MixedAE)
    # "key-mask": the encoder sees every token in order, hidden ones are masked as attention keys only; ``noise``
    # is per token; logits (batch, L, L) classify positions, at the pre-training grid only (MP3)
    masking: str = "token-drop"
    # the recipe's absolute pre-training lr, used by ``hf-mae pretrain`` when neither --lr nor --base-lr is given
    # (None: MAE's base_lr * batch / 256; a single graph per step makes batch scaling meaningless)
    pretrain_lr: float | None = None


# CPU-sized ViT for tests and the quick start: 32x32 images, an 8x8 grid of 4x4 patches, 128-d x 4 / 64-d x 2
_TINY = dict(
    image_size=32, patch_size=4, hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=512,
    decoder_hidden_size=64, decoder_num_hidden_layers=2, decoder_num_attention_heads=4, decoder_intermediate_size=256,
)
# CPU-sized video ViT: 8 frames of 32x32 in tubelets of 2 frames x 8x8 pixels, a 4 x 4 x 4 grid of 64 tokens
_TINY_VIDEO = dict(
    image_size=32, patch_size=8, num_frames=8, tubelet_size=2, hidden_size=128, num_hidden_layers=4,
    num_attention_heads=4, intermediate_size=512, decoder_hidden_size=64, decoder_num_hidden_layers=2,
    decoder_num_attention_heads=4, decoder_intermediate_size=256,
)
_VIT = {  # encoder sizes of the paper's ViTs
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
    "huge": dict(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, intermediate_size=5120),
}

METHODS = {
    "mae": Method(
        name="mae",
        paper="Masked Autoencoders Are Scalable Vision Learners (He et al., 2021), arXiv:2111.06377",
        config_class=MAEConfig,
        model_classes={
            "base": MAEModel,
            "pretraining": MAEForPreTraining,
            "image-classification": MAEForImageClassification,
        },
        processor_class=MAEImageProcessor,
        make_processor=image_processor_for(MAEImageProcessor),
        presets={
            "mae-tiny": dict(_TINY),
            "mae-vit-base-patch16": dict(patch_size=16, **_VIT["base"]),
            "mae-vit-large-patch16": dict(patch_size=16, **_VIT["large"]),
            "mae-vit-huge-patch14": dict(patch_size=14, **_VIT["huge"]),
        },
    ),
    "colormae": Method(
        name="colormae",
        paper=(
            "ColorMAE: Exploring data-independent masking strategies in Masked AutoEncoders "
            "(Hinojosa et al., ECCV 2024), arXiv:2407.13036"
        ),
        config_class=ColorMAEConfig,
        model_classes={
            "base": ColorMAEModel,
            "pretraining": ColorMAEForPreTraining,
            "image-classification": ColorMAEForImageClassification,
        },
        processor_class=MAEImageProcessor,
        make_processor=image_processor_for(MAEImageProcessor),
        presets={
            # mae-tiny's sizes; green noise is the default colour
            "colormae-tiny": dict(_TINY),
            # the paper's ViT-B/16, r=0.75, green noise
            "colormae-vit-base-patch16": dict(patch_size=16, mask_ratio=0.75, noise_color="green", **_VIT["base"]),
        },
    ),
    "hpm": Method(
        name="hpm",
        paper="Hard Patches Mining for Masked Image Modeling (Wang et al., CVPR 2023), arXiv:2304.05919",
        config_class=HPMConfig,
        model_classes={
            "base": HPMModel,
            "pretraining": HPMForPreTraining,
            "image-classification": HPMForImageClassification,
        },
        processor_class=MAEImageProcessor,
        make_processor=image_processor_for(MAEImageProcessor),
        presets={
            # mae-tiny's sizes; the curriculum spans 1000 forwards and the EMA is faster than the paper's
            # (0.99 -> 0.999), since tiny runs last a few hundred steps; set total_steps to your run's length
            "hpm-tiny": dict(_TINY, total_steps=1000, ema_decay=0.99, ema_decay_end=0.999),
            "hpm-vit-base-patch16": dict(patch_size=16, **_VIT["base"]),
        },
    ),
    "simmim": Method(
        name="simmim",
        paper="SimMIM: a Simple Framework for Masked Image Modeling (Xie et al., CVPR 2022), arXiv:2111.09886",
        config_class=SimMIMConfig,
        model_classes={
            "base": SimMIMModel,
            "pretraining": SimMIMForPreTraining,
            "image-classification": SimMIMForImageClassification,
        },
        processor_class=MAEImageProcessor,
        make_processor=image_processor_for(MAEImageProcessor),
        presets={
            # mae-tiny's encoder; 8-px mask cells (2x2 patches) on 32-px images, as 32-px cells on 16-px patches
            "simmim-tiny": dict(
                {k: v for k, v in _TINY.items() if not k.startswith("decoder_")}, mask_patch_size=8
            ),
            # the paper's ViT-B/16 pre-training: 192 px, r=0.6, 32-px mask cells
            "simmim-vit-base-patch16": dict(
                image_size=192, patch_size=16, mask_ratio=0.6, mask_patch_size=32, **_VIT["base"]
            ),
        },
        masking="mask-token",
    ),
    "cropmae": Method(
        name="cropmae",
        paper=(
            "Efficient Image Pre-Training with Siamese Cropped Masked Autoencoders "
            "(Eymaël et al., ECCV 2024), arXiv:2403.17823"
        ),
        config_class=CropMAEConfig,
        model_classes={
            "base": CropMAEModel,
            "pretraining": CropMAEForPreTraining,
            "image-classification": CropMAEForImageClassification,
        },
        # pre-training views (official GlobalToLocal): a global crop (area 0.1-1) and a local crop of it (0.3-0.6)
        processor_class=TwoViewImageProcessor,
        make_processor=image_processor_for(
            TwoViewImageProcessor, view_mode="global_to_local", crop_scale=[0.1, 1.0], local_crop_scale=[0.3, 0.6]
        ),
        presets={
            # mae-tiny's sizes; r = 1 - 2/64 keeps 2 of the 64 patches, as r = 0.985 keeps 2 of 196
            "cropmae-tiny": dict(_TINY, mask_ratio=0.96875),
            # the official ViT-S/16 with its 256-d x 4 cross-attention decoder (FFN 2048), r = 0.985
            "cropmae-vit-small-patch16": dict(
                patch_size=16, hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                decoder_hidden_size=256, decoder_num_hidden_layers=4, decoder_num_attention_heads=8,
                decoder_intermediate_size=2048, mask_ratio=0.985,
            ),
        },
    ),
    "dmjd": Method(
        name="dmjd",
        paper=(
            "Disjoint Masking with Joint Distillation for Efficient Masked Image Modeling "
            "(Ma et al., 2023), arXiv:2301.00230"
        ),
        config_class=DMJDConfig,
        model_classes={
            "base": DMJDModel,
            "pretraining": DMJDForPreTraining,
            "image-classification": DMJDForImageClassification,
        },
        processor_class=MAEImageProcessor,
        make_processor=image_processor_for(MAEImageProcessor),
        presets={
            # mae-tiny's sizes; 2-px HOG cells make 2x2 cells per 4-px patch, as 8-px cells per 16-px patch
            "dmjd-tiny": dict(_TINY, hog_cell_size=2),
            # ViT-B/16 with the official defaults: r=0.75, pred_ratio 1, decoder 512-d x 8 (MLP 4096), HOG 8-px cells
            "dmjd-vit-base-patch16": dict(patch_size=16, **_VIT["base"]),
        },
    ),
    "lut": Method(
        name="lut",
        paper="Learning with Unmasked Tokens Drives Stronger Vision Learners (Kim et al., ECCV 2024), arXiv:2310.13593",
        config_class=LUTConfig,
        model_classes={
            "base": LUTModel,
            "pretraining": LUTForPreTraining,
            "image-classification": LUTForImageClassification,
        },
        # pre-training views: two independent random resized crops (area 0.2-1) with flips, MAE's crop
        processor_class=TwoViewImageProcessor,
        make_processor=image_processor_for(TwoViewImageProcessor, view_mode="independent"),
        presets={
            # mae-tiny's sizes, 256-d heads; the EMA is faster than the paper's (0.99 -> 1 over 1000 forwards),
            # since tiny runs last a few hundred steps; set total_steps to your run's length
            "lut-tiny": dict(_TINY, projector_hidden_size=256, ema_decay=0.99, total_steps=1000),
            # the official recommended ViT-B/16 run: r=0.75, norm-pix, heads 768-4096-768, w_bc 0.25, EMA 0.996 -> 1
            "lut-vit-base-patch16": dict(patch_size=16, **_VIT["base"]),
        },
    ),
    "mixedae": Method(
        name="mixedae",
        paper="Mixed Autoencoder for Self-supervised Visual Representation Learning (Chen et al., CVPR 2023), arXiv:2303.17152",
        config_class=MixedAEConfig,
        model_classes={
            "base": MixedAEModel,
            "pretraining": MixedAEForPreTraining,
            "image-classification": MixedAEForImageClassification,
        },
        processor_class=MAEImageProcessor,
        make_processor=image_processor_for(MAEImageProcessor),
        presets={
            # mae-tiny's sizes, groups of 4 (16 of the 64 patches per source), a 64-d recognition head
            "mixedae-tiny": dict(_TINY, homologous_projection_dim=64),
            # the paper's ViT-B/16 with MAE's decoder, mixing ratio 0.25 (groups of 4, r = 0.75 per source)
            "mixedae-vit-base-patch16": dict(patch_size=16, mix_group=4, **_VIT["base"]),
        },
        masking="mixing",
    ),
    "mp3": Method(
        name="mp3",
        paper="Position Prediction as an Effective Pretraining Strategy (Zhai et al., ICML 2022), arXiv:2207.07611",
        config_class=MP3Config,
        model_classes={
            "base": MP3Model,
            "pretraining": MP3ForPreTraining,
            "image-classification": MP3ForImageClassification,
        },
        processor_class=MAEImageProcessor,
        make_processor=image_processor_for(MAEImageProcessor),
        presets={
            # mae-tiny's encoder (no decoder): 64 positions to classify, 16 context patches at eta = 0.75
            "mp3-tiny": {k: v for k, v in _TINY.items() if not k.startswith("decoder_")},
            # the paper's ImageNet ViT-S/16 and ViT-B/16 (DeiT sizes), eta = 0.75
            "mp3-vit-small-patch16": dict(
                patch_size=16, hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536
            ),
            "mp3-vit-base-patch16": dict(patch_size=16, **_VIT["base"]),
        },
        masking="key-mask",
    ),
    "videomae": Method(
        name="videomae",
        paper=(
            "VideoMAE: Masked Autoencoders are Data-Efficient Learners for Self-Supervised Video Pre-Training "
            "(Tong et al., NeurIPS 2022), arXiv:2203.12602"
        ),
        config_class=HfVideoMAEConfig,
        model_classes={
            "base": VideoMAEModel,
            "pretraining": VideoMAEForPreTraining,
            "video-classification": VideoMAEForVideoClassification,
        },
        processor_class=MAEVideoProcessor,
        make_processor=video_processor_for,
        presets={
            # 64 tokens, 4 of them visible (r = 0.9 keeps 1 of 16 positions per time slice)
            "videomae-tiny": dict(_TINY_VIDEO),
            # the paper's ViT-B and ViT-L: 16 frames at 224 px, tubelets 2x16x16, tube masking at 0.9
            "videomae-vit-base-patch16": dict(patch_size=16, **_VIT["base"]),
            "videomae-vit-large-patch16": dict(
                patch_size=16, decoder_hidden_size=512, decoder_num_attention_heads=8, decoder_intermediate_size=2048,
                **_VIT["large"],
            ),
        },
        modality="video",
    ),
    "videomaev2": Method(
        name="videomaev2",
        paper=(
            "VideoMAE V2: Scaling Video Masked Autoencoders with Dual Masking (Wang et al., CVPR 2023), "
            "arXiv:2303.16727"
        ),
        config_class=VideoMAEV2Config,
        model_classes={
            "base": VideoMAEV2Model,
            "pretraining": VideoMAEV2ForPreTraining,
            "video-classification": VideoMAEV2ForVideoClassification,
        },
        processor_class=MAEVideoProcessor,
        make_processor=video_processor_for,
        presets={
            # videomae-tiny's sizes; the decoder reconstructs half of the 64 tokens (running cells)
            "videomaev2-tiny": dict(_TINY_VIDEO),
            # the official ViT-B and ViT-g pre-training: tube 0.9 for the encoder, running cell 0.5 for the decoder
            "videomaev2-vit-base-patch16": dict(patch_size=16, **_VIT["base"]),
            "videomaev2-vit-giant-patch14": dict(
                patch_size=14, hidden_size=1408, num_hidden_layers=40, num_attention_heads=16, intermediate_size=6144,
                decoder_hidden_size=512, decoder_num_attention_heads=8, decoder_intermediate_size=2048,
            ),
        },
        modality="video",
    ),
    "crossvideomae": Method(
        name="crossvideomae",
        paper=(
            "CrossVideoMAE: Self-Supervised Image-Video Representation Learning with Masked Autoencoders "
            "(Ahamed et al., 2025), arXiv:2502.07811"
        ),
        config_class=CrossVideoMAEConfig,
        model_classes={
            "base": CrossVideoMAEModel,
            "pretraining": CrossVideoMAEForPreTraining,
            "video-classification": CrossVideoMAEForVideoClassification,
        },
        processor_class=MAEVideoProcessor,
        make_processor=video_processor_for,
        presets={
            # videomae-tiny's sizes; the frame branch is an MAE encoder of the same sizes on 2 frames, 128-d heads
            "crossvideomae-tiny": dict(_TINY_VIDEO, projection_dim=128),
            # the paper's two ViT-B/16 branches: tube masking 0.9 for video, 0.75 for the sampled frames
            "crossvideomae-vit-base-patch16": dict(patch_size=16, **_VIT["base"]),
        },
        modality="video",
    ),
    "tgm": Method(
        name="tgm",
        paper="Text-Guided Video Masked Autoencoder (Fan et al., ECCV 2024), arXiv:2408.00759",
        config_class=TGMConfig,
        model_classes={
            "base": TGMModel,
            "pretraining": TGMForPreTraining,
            "video-classification": TGMForVideoClassification,
        },
        processor_class=TGMProcessor,
        make_processor=lambda config: TGMProcessor.for_config(config, video_processor_for(config)),
        presets={
            # videomae-tiny's sizes; a tiny random CLIP (32 px, 8-px patches: the 4x4 token grid) scores the tokens,
            # a tiny CLIP text tower on ByT5 byte ids (no files) embeds the captions; nothing is downloaded
            "tgm-tiny": dict(
                _TINY_VIDEO, projection_dim=64, max_text_length=32, tokenizer_name_or_path=None,
                clip_name_or_path=None, text_encoder_name_or_path=None,
                clip_config=dict(
                    model_type="clip", projection_dim=32,
                    text_config=dict(vocab_size=384, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                     num_attention_heads=2, max_position_embeddings=32, pad_token_id=0,
                                     bos_token_id=0, eos_token_id=1),
                    vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=1, num_attention_heads=2),
                ),
                text_config=dict(model_type="clip_text_model", vocab_size=384, hidden_size=64, intermediate_size=128,
                                 num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=32,
                                 pad_token_id=0, bos_token_id=0, eos_token_id=1),
            ),
            # ViT-B/16 VideoMAE at r = 0.9, scored by CLIP ViT-B/16, CLIP's text encoder and tokenizer (77 tokens)
            "tgm-vit-base-patch16": dict(patch_size=16, **_VIT["base"]),
        },
        modality="video-text",  # clips + captions: not in the shared video suites (tests/test_tgm.py has its own)
    ),
    "lvmae": Method(
        name="lvmae",
        paper=(
            "LV-MAE: Learning Long Video Representations through Masked-Embedding Autoencoders "
            "(Naiman et al., ICCV 2025), arXiv:2504.03501"
        ),
        config_class=LVMAEConfig,
        model_classes={
            "base": LVMAEModel,
            "pretraining": LVMAEForPreTraining,
            "video-classification": LVMAEForVideoClassification,
        },
        processor_class=LVMAEFeatureExtractor,
        make_processor=LVMAEFeatureExtractor.from_model_config,
        presets={
            # 32-d segment embeddings, up to 64 segments; a 64-d x 2 encoder and a 32-d x 1 decoder
            "lvmae-tiny": dict(
                embedding_dim=32, max_segments=64, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=256, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                decoder_num_attention_heads=4, decoder_intermediate_size=128,
            ),
            # the README's run on LanguageBind-Huge embeddings: 256 x 1024-d, encoder 1024 x 32, decoder 512 x 8,
            # importance masking at 0.5, MSE
            "lvmae-languagebind-huge": dict(),
        },
        modality="embeddings",  # (batch, segments, dim) embeddings, not clips: the shared suites skip it
    ),
    "audiomae": Method(
        name="audiomae",
        paper="Masked Autoencoders that Listen (Huang et al., NeurIPS 2022), arXiv:2207.06405",
        config_class=AudioMAEConfig,
        model_classes={
            "base": AudioMAEModel,
            "pretraining": AudioMAEForPreTraining,
            "audio-classification": AudioMAEForAudioClassification,
        },
        processor_class=AudioMAEFeatureExtractor,
        make_processor=audio_feature_extractor_for,
        presets={
            # 128 frames x 128 mel bins: an 8 x 8 grid of 16x16 patches, Swin decoder windows (4, 4) shifted (2, 0)
            "audiomae-tiny": dict(
                max_length=128, **{k: v for k, v in _TINY.items() if k not in ("image_size", "patch_size")}
            ),
            # the paper's AudioSet ViT-B/16: 1024 x 128 (64 x 8 tokens), mask 0.8, Swin decoder 512-d x 16 blocks
            "audiomae-vit-base-patch16": dict(**_VIT["base"]),
        },
        modality="audio",
    ),
    "birdmae": Method(
        name="birdmae",
        paper="Can Masked Autoencoders Also Listen to Birds? (Rauch et al., 2025)",
        config_class=BirdMAEConfig,
        model_classes={
            "base": BirdMAEModel,
            "pretraining": BirdMAEForPreTraining,
            "audio-classification": BirdMAEForAudioClassification,
        },
        processor_class=AudioMAEFeatureExtractor,
        make_processor=audio_feature_extractor_for,
        presets={
            # audiomae-tiny's sizes with Bird-MAE's global decoder, 32 kHz and XCL statistics
            "birdmae-tiny": dict(
                max_length=128, **{k: v for k, v in _TINY.items() if k not in ("image_size", "patch_size")}
            ),
            # the paper's Base: 512 x 128 at 32 kHz (32 x 8 tokens), mask 0.8, global decoder 512-d x 8 blocks
            "birdmae-vit-base-patch16": dict(**_VIT["base"]),
        },
        modality="audio",
    ),
    "pointmae": Method(
        name="pointmae",
        paper="Masked Autoencoders for Point Cloud Self-supervised Learning (Pang et al., ECCV 2022), arXiv:2203.06604",
        config_class=PointMAEConfig,
        model_classes={
            "base": PointMAEModel,
            "pretraining": PointMAEForPreTraining,
            "point-cloud-classification": PointMAEForPointCloudClassification,
        },
        processor_class=PointCloudFeatureExtractor,
        make_processor=lambda config: PointCloudFeatureExtractor(num_points=config.num_points),
        presets={
            # CPU-sized: 256 points in 16 groups of 16, a 64-d x 2 encoder, 1 decoder block, a slim mini-PointNet
            "pointmae-tiny": dict(
                num_points=256, num_groups=16, group_size=16, embedding_channels=[32, 64, 128], hidden_size=64,
                num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, position_hidden_size=32,
                decoder_num_hidden_layers=1, decoder_num_attention_heads=4,
            ),
            # the paper's ShapeNet pre-training: 1024 points, 64 x 32 groups, 384-d x 12 (6 heads), decoder x 4, r=0.6
            "pointmae-shapenet": dict(),
        },
        modality="point-cloud",
        pretrain_lr=1e-3,  # Point-MAE: AdamW 1e-3 at batch 128
    ),
    "i2pmae": Method(
        name="i2pmae",
        paper=(
            "Learning 3D Representations from 2D Pre-trained Models via Image-to-Point Masked Autoencoders "
            "(Zhang et al., CVPR 2023), arXiv:2212.06785"
        ),
        config_class=I2PMAEConfig,
        model_classes={
            "base": I2PMAEModel,
            "pretraining": I2PMAEForPreTraining,
            "point-cloud-classification": I2PMAEForPointCloudClassification,
        },
        processor_class=PointCloudFeatureExtractor,
        make_processor=lambda config: PointCloudFeatureExtractor(num_points=config.num_points),
        presets={
            # CPU-sized: 256 points, 3 scales of 64 / 32 / 16 groups, 32/64/96-d x 1 block each; a tiny random ViT
            # (32-px depth images, 8-px patches, 32-d) is the 2-D teacher, so nothing is downloaded
            "i2pmae-tiny": dict(
                num_points=256, group_counts=[64, 32, 16], group_sizes=[8, 4, 4], hidden_sizes=[32, 64, 96],
                depths=[1, 1, 1], embedding_channels=[32, 64, 128], num_attention_heads=4, decoder_depths=[1, 1],
                decoder_up_blocks=[1], image_size=32, densify=3, teacher_name_or_path=None, teacher_feature_dim=32,
                teacher_config=dict(model_type="vit", image_size=32, patch_size=8, hidden_size=32,
                                    num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
            ),
            # the paper's ShapeNet-55 pre-training: 2048 points, groups [512, 256, 64] x [16, 8, 8], widths
            # [96, 192, 384] x 5 blocks, decoder [1, 1], r = 0.8, CLIP ViT-B/16 teacher (512-d projected features)
            "i2pmae-shapenet": dict(),
        },
        modality="point-cloud",
        pretrain_lr=1e-3,  # I2P-MAE: AdamW 1e-3 at batch 64
    ),
    "graphmae": Method(
        name="graphmae",
        paper="GraphMAE: Self-Supervised Masked Graph Autoencoders (Hou et al., KDD 2022), arXiv:2205.10803",
        config_class=GraphMAEConfig,
        model_classes={
            "base": GraphMAEModel,
            "pretraining": GraphMAEForPreTraining,
            "node-classification": GraphMAEForNodeClassification,
            "graph-classification": GraphMAEForGraphClassification,
        },
        processor_class=GraphProcessor,
        make_processor=lambda config: GraphProcessor(feature_normalization=config.feature_normalization),
        presets={
            # CPU-sized GAT (2 layers, 4 heads x 8); num_features=16 is a placeholder: hf-mae pretrain sets it to
            # the data's width (or give num_features=<F> as a config override)
            "graphmae-tiny": dict(num_features=16, hidden_size=32),
            # the official configs.yml: GAT 2 layers, 4 x 128 heads, PReLU, in_drop 0.2, attn_drop 0.1, mask 0.5,
            # replace 0.05, SCE alpha 3 (pre-train: Adam 1e-3, wd 2e-4, cosine, 1500 epochs)
            "graphmae-cora": dict(num_features=1433),
            # 2 x 256 heads, mask 0.5, replace 0.1, alpha 1 (wd 2e-5, 300 epochs)
            "graphmae-citeseer": dict(num_features=3703, num_attention_heads=2, replace_rate=0.1, alpha_l=1.0),
            # 4 x 256 heads, mask 0.75, no replacement, alpha 3 (wd 1e-5, 1000 epochs)
            "graphmae-pubmed": dict(num_features=500, hidden_size=1024, mask_rate=0.75, replace_rate=0.0),
            # the official MUTAG graph-classification config: GIN encoder and decoder, 5 layers x 32, batch norm,
            # mask 0.75, replace 0.1, alpha 2, sum pooling; 7 one-hot atom types, not normalised
            "graphmae-gin": dict(
                num_features=7, encoder_type="gin", decoder_type="gin", hidden_size=32, num_hidden_layers=5,
                norm="batchnorm", mask_rate=0.75, replace_rate=0.1, alpha_l=2.0, pooling="sum",
                feature_normalization=None,
            ),
        },
        modality="graph",
        pretrain_lr=1e-3,  # GraphMAE: Adam 1e-3, one graph per step
    ),
    # -- new methods: one Method row each, above this comment --
}

PRESETS = {preset: method for method in METHODS.values() for preset in method.presets}
METHOD_BY_CONFIG = {method.config_class: method for method in METHODS.values()}


def list_models() -> list[str]:
    """Names of every preset, e.g. ``["mae-tiny", "mae-vit-base-patch16", ...]``."""
    return sorted(PRESETS)


def get_method(preset: str) -> Method:
    if preset not in PRESETS:
        raise ValueError(f"unknown model {preset!r}; available presets: {', '.join(list_models())}")
    return PRESETS[preset]


def create_config(name: str, **config_overrides):
    """The config of preset ``name`` with ``config_overrides`` applied (unknown keys raise a ValueError)."""
    method = get_method(name)
    kwargs = {**method.presets[name], **config_overrides}
    known = set(method.config_class.__dataclass_fields__) | {"num_labels"}  # num_labels is an init-only kwarg
    unknown = sorted(set(config_overrides) - known)
    if unknown:
        raise ValueError(f"unknown config field(s) {unknown} for {method.config_class.__name__}")
    return method.config_class(**kwargs)


def create_model(name: str, task: str = "pretraining", **config_overrides):
    """A randomly initialised model of preset ``name`` for ``task`` ("pretraining", "base", "image-classification")."""
    method = get_method(name)
    if task not in method.model_classes:
        raise ValueError(f"task {task!r} is not available for {name!r}; choose one of {sorted(method.model_classes)}")
    return method.model_classes[task](create_config(name, **config_overrides))


def create_processor(name: str, **config_overrides):
    """The processor matching preset ``name`` (e.g. an image processor sized to its ``image_size``)."""
    method = get_method(name)
    return method.make_processor(create_config(name, **config_overrides))


def method_for_config(config) -> Method:
    """The registry row of a config (by exact class: ColorMAEConfig is also an MAEConfig)."""
    if type(config) not in METHOD_BY_CONFIG:
        raise ValueError(f"no hf-mae method uses {type(config).__name__}")
    return METHOD_BY_CONFIG[type(config)]


# modality -> the Auto class its processor is registered with (``_register``) and loads back with
PROCESSOR_AUTO_CLASSES = {
    "image": AutoImageProcessor, "video": AutoImageProcessor, "video-text": AutoProcessor,
    "embeddings": AutoFeatureExtractor, "audio": AutoFeatureExtractor, "point-cloud": AutoFeatureExtractor,
    "graph": AutoFeatureExtractor,
}


def processor_auto_class(config):
    """The Auto class that loads the processor saved beside a model of ``config`` (AutoImageProcessor for a config
    hf-mae does not know: a transformers image model)."""
    method = METHOD_BY_CONFIG.get(type(config))
    return AutoImageProcessor if method is None else PROCESSOR_AUTO_CLASSES[method.modality]


def processor_for_config(config):
    """The default processor of any registered config (used when a run folder has none)."""
    return method_for_config(config).make_processor(config)


def _register(method: Method) -> None:
    config_class = method.config_class
    if CONFIG_MAPPING._extra_content.get(config_class.model_type) is config_class:
        return  # already registered in this process (e.g. after importlib.reload)
    # no exist_ok: registering over a transformers built-in must fail loudly, never shadow it
    AutoConfig.register(config_class.model_type, config_class)
    for task, model_class in method.model_classes.items():
        AUTO_CLASSES[task].register(config_class, model_class)
    auto_class = PROCESSOR_AUTO_CLASSES[method.modality]
    if auto_class is AutoImageProcessor:  # the video processor is a Pillow-backed image processor too
        AutoImageProcessor.register(config_class, image_processor_classes={"pil": method.processor_class})
    else:  # TGM's ProcessorMixin (video processor + caption tokenizer); feature extractors for embedding sequences
        # (LV-MAE), waveforms -> filterbanks, clouds -> normalised points, graphs -> tensors
        auto_class.register(config_class, method.processor_class)


def register_all() -> None:
    for method in METHODS.values():
        _register(method)


def copy_config(config):
    """A deep copy: transformers' ``_from_config`` keeps and mutates the config object it is given."""
    return copy.deepcopy(config)
