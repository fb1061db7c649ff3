"""hf-mae: masked-modeling models (MAE, ColorMAE, HPM, SimMIM, ...) as Hugging Face transformers models.

``import hf_mae`` registers every method with transformers' Auto classes.
"""

from .modeling.colormae import ColorMAEConfig, ColorMAEForImageClassification, ColorMAEForPreTraining, ColorMAEModel
from .modeling.hpm import HPMConfig, HPMForImageClassification, HPMForPreTraining, HPMModel
from .modeling.mae import (
    MAEConfig,
    MAEForImageClassification,
    MAEForPreTraining,
    MAEForPreTrainingOutput,
    MAEModel,
    MAEModelOutput,
    MAEPreTrainedModel,
)
from .modeling.simmim import SimMIMConfig, SimMIMForImageClassification, SimMIMForPreTraining, SimMIMModel
from .processors.image_processing_mae import MAEImageProcessor
from .registry import METHODS, create_config, create_model, create_processor, list_models, register_all

__version__ = "0.1.0"

register_all()

__all__ = [
    "ColorMAEConfig",
    "ColorMAEForImageClassification",
    "ColorMAEForPreTraining",
    "ColorMAEModel",
    "HPMConfig",
    "HPMForImageClassification",
    "HPMForPreTraining",
    "HPMModel",
    "MAEConfig",
    "MAEForImageClassification",
    "MAEForPreTraining",
    "MAEForPreTrainingOutput",
    "MAEImageProcessor",
    "MAEModel",
    "MAEModelOutput",
    "MAEPreTrainedModel",
    "SimMIMConfig",
    "SimMIMForImageClassification",
    "SimMIMForPreTraining",
    "SimMIMModel",
    "METHODS",
    "create_config",
    "create_model",
    "create_processor",
    "list_models",
]
