"""hf-mae: masked-modeling models (MAE, its image variants, VideoMAE, ...) as Hugging Face transformers models.

``import hf_mae`` registers every method with transformers' Auto classes.
"""

from .modeling.colormae import ColorMAEConfig, ColorMAEForImageClassification, ColorMAEForPreTraining, ColorMAEModel
from .modeling.cropmae import CropMAEConfig, CropMAEForImageClassification, CropMAEForPreTraining, CropMAEModel
from .modeling.dmjd import DMJDConfig, DMJDForImageClassification, DMJDForPreTraining, DMJDModel
from .modeling.hpm import HPMConfig, HPMForImageClassification, HPMForPreTraining, HPMModel
from .modeling.lut import LUTConfig, LUTForImageClassification, LUTForPreTraining, LUTModel
from .modeling.mae import (
    MAEConfig,
    MAEForImageClassification,
    MAEForPreTraining,
    MAEForPreTrainingOutput,
    MAEModel,
    MAEModelOutput,
    MAEPreTrainedModel,
)
from .modeling.mixedae import MixedAEConfig, MixedAEForImageClassification, MixedAEForPreTraining, MixedAEModel
from .modeling.mp3 import MP3Config, MP3ForImageClassification, MP3ForPreTraining, MP3Model
from .modeling.simmim import SimMIMConfig, SimMIMForImageClassification, SimMIMForPreTraining, SimMIMModel
from .modeling.videomae import HfVideoMAEConfig, VideoMAEForPreTraining, VideoMAEForVideoClassification, VideoMAEModel
from .modeling.videomaev2 import (
    VideoMAEV2Config,
    VideoMAEV2ForPreTraining,
    VideoMAEV2ForVideoClassification,
    VideoMAEV2Model,
)
from .processors.image_processing_mae import MAEImageProcessor
from .processors.image_processing_views import TwoViewImageProcessor
from .processors.video_processing_mae import MAEVideoProcessor
from .registry import METHODS, create_config, create_model, create_processor, list_models, register_all

__version__ = "0.1.0"

register_all()

__all__ = [
    "ColorMAEConfig",
    "ColorMAEForImageClassification",
    "ColorMAEForPreTraining",
    "ColorMAEModel",
    "CropMAEConfig",
    "CropMAEForImageClassification",
    "CropMAEForPreTraining",
    "CropMAEModel",
    "DMJDConfig",
    "DMJDForImageClassification",
    "DMJDForPreTraining",
    "DMJDModel",
    "HfVideoMAEConfig",
    "HPMConfig",
    "HPMForImageClassification",
    "HPMForPreTraining",
    "HPMModel",
    "LUTConfig",
    "LUTForImageClassification",
    "LUTForPreTraining",
    "LUTModel",
    "MAEConfig",
    "MAEForImageClassification",
    "MAEForPreTraining",
    "MAEForPreTrainingOutput",
    "MAEImageProcessor",
    "MAEModel",
    "MAEModelOutput",
    "MAEPreTrainedModel",
    "MAEVideoProcessor",
    "MixedAEConfig",
    "MixedAEForImageClassification",
    "MixedAEForPreTraining",
    "MixedAEModel",
    "MP3Config",
    "MP3ForImageClassification",
    "MP3ForPreTraining",
    "MP3Model",
    "SimMIMConfig",
    "SimMIMForImageClassification",
    "SimMIMForPreTraining",
    "SimMIMModel",
    "TwoViewImageProcessor",
    "VideoMAEForPreTraining",
    "VideoMAEForVideoClassification",
    "VideoMAEModel",
    "VideoMAEV2Config",
    "VideoMAEV2ForPreTraining",
    "VideoMAEV2ForVideoClassification",
    "VideoMAEV2Model",
    "METHODS",
    "create_config",
    "create_model",
    "create_processor",
    "list_models",
]
