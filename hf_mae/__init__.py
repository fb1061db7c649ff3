"""hf-mae: masked-modeling models (MAE and its family) as Hugging Face transformers models.

``import hf_mae`` registers every method with transformers' Auto classes.
"""

from .modeling.mae import (
    MAEConfig,
    MAEForImageClassification,
    MAEForPreTraining,
    MAEForPreTrainingOutput,
    MAEModel,
    MAEModelOutput,
    MAEPreTrainedModel,
)
from .processors.image_processing_mae import MAEImageProcessor
from .registry import METHODS, create_config, create_model, create_processor, list_models, register_all

__version__ = "0.1.0"

register_all()

__all__ = [
    "MAEConfig",
    "MAEForImageClassification",
    "MAEForPreTraining",
    "MAEForPreTrainingOutput",
    "MAEImageProcessor",
    "MAEModel",
    "MAEModelOutput",
    "MAEPreTrainedModel",
    "METHODS",
    "create_config",
    "create_model",
    "create_processor",
    "list_models",
]
