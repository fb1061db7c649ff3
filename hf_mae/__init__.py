"""hf-mae: masked-modeling models (MAE and its image variants, video and audio MAEs, ...) as Hugging Face transformers
models.

``import hf_mae`` registers every method with transformers' Auto classes.
"""

from .modeling.audiomae import AudioMAEConfig, AudioMAEForAudioClassification, AudioMAEForPreTraining, AudioMAEModel
from .modeling.birdmae import BirdMAEConfig, BirdMAEForAudioClassification, BirdMAEForPreTraining, BirdMAEModel
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
from .modeling.crossvideomae import (
    CrossVideoMAEConfig,
    CrossVideoMAEForPreTraining,
    CrossVideoMAEForVideoClassification,
    CrossVideoMAEModel,
)
from .modeling.lvmae import LVMAEConfig, LVMAEForPreTraining, LVMAEForVideoClassification, LVMAEModel
from .modeling.tgm import TGMConfig, TGMForPreTraining, TGMForVideoClassification, TGMModel
from .modeling.graphmae import (
    GraphMAEConfig,
    GraphMAEForGraphClassification,
    GraphMAEForNodeClassification,
    GraphMAEForPreTraining,
    GraphMAEModel,
)
from .modeling.i2pmae import I2PMAEConfig, I2PMAEForPointCloudClassification, I2PMAEForPreTraining, I2PMAEModel
from .modeling.pointmae import PointMAEConfig, PointMAEForPointCloudClassification, PointMAEForPreTraining, PointMAEModel
from .processors.feature_extraction_audiomae import AudioMAEFeatureExtractor
from .processors.feature_extraction_lvmae import LVMAEFeatureExtractor
from .processors.graph_processing import GraphProcessor
from .processors.point_cloud_processing import PointCloudFeatureExtractor
from .processors.image_processing_mae import MAEImageProcessor
from .processors.processing_tgm import TGMProcessor
from .processors.image_processing_views import TwoViewImageProcessor
from .processors.video_processing_mae import MAEVideoProcessor
from .auto import AutoModelForGraphClassification, AutoModelForNodeClassification, AutoModelForPointCloudClassification
from .registry import METHODS, create_config, create_model, create_processor, list_models, register_all

__version__ = "0.1.0"

register_all()

__all__ = [
    "AutoModelForPointCloudClassification",
    "AutoModelForNodeClassification",
    "AutoModelForGraphClassification",
    "AudioMAEConfig",
    "AudioMAEFeatureExtractor",
    "AudioMAEForAudioClassification",
    "AudioMAEForPreTraining",
    "AudioMAEModel",
    "BirdMAEConfig",
    "BirdMAEForAudioClassification",
    "BirdMAEForPreTraining",
    "BirdMAEModel",
    "ColorMAEConfig",
    "ColorMAEForImageClassification",
    "ColorMAEForPreTraining",
    "ColorMAEModel",
    "CropMAEConfig",
    "CropMAEForImageClassification",
    "CropMAEForPreTraining",
    "CropMAEModel",
    "CrossVideoMAEConfig",
    "CrossVideoMAEForPreTraining",
    "CrossVideoMAEForVideoClassification",
    "CrossVideoMAEModel",
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
    "LVMAEConfig",
    "LVMAEFeatureExtractor",
    "LVMAEForPreTraining",
    "LVMAEForVideoClassification",
    "LVMAEModel",
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
    "TGMConfig",
    "TGMForPreTraining",
    "TGMForVideoClassification",
    "TGMModel",
    "TGMProcessor",
    "TwoViewImageProcessor",
    "VideoMAEForPreTraining",
    "VideoMAEForVideoClassification",
    "VideoMAEModel",
    "VideoMAEV2Config",
    "VideoMAEV2ForPreTraining",
    "VideoMAEV2ForVideoClassification",
    "VideoMAEV2Model",
    "GraphMAEConfig",
    "GraphMAEForGraphClassification",
    "GraphMAEForNodeClassification",
    "GraphMAEForPreTraining",
    "GraphMAEModel",
    "GraphProcessor",
    "I2PMAEConfig",
    "I2PMAEForPointCloudClassification",
    "I2PMAEForPreTraining",
    "I2PMAEModel",
    "PointCloudFeatureExtractor",
    "PointMAEConfig",
    "PointMAEForPointCloudClassification",
    "PointMAEForPreTraining",
    "PointMAEModel",
    "METHODS",
    "create_config",
    "create_model",
    "create_processor",
    "list_models",
]
