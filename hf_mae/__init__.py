"""hf-mae: masked-modeling models (MAE and its image variants, video and audio MAEs, ...) as Hugging Face transformers
models.

``import hf_mae`` registers every method with transformers' Auto classes. The public classes (``hf_mae.MAEConfig``,
``hf_mae.MAEForPreTraining``, ``hf_mae.MAEImageProcessor``, ...) are the ones the methods' registry rows name
(``hf_mae.registry.PUBLIC_CLASSES``), so a new method's classes join ``__all__`` without an edit here.
"""

from .auto import AutoModelForGraphClassification, AutoModelForNodeClassification, AutoModelForPointCloudClassification
from .registry import (
    METHODS,
    PUBLIC_CLASSES,
    create_config,
    create_model,
    create_processor,
    list_models,
    register_all,
)
from .training.callbacks import OptimizerStepHookCallback, TrainingProgressCallback

__version__ = "0.1.0"

globals().update(PUBLIC_CLASSES)
register_all()

__all__ = [
    *PUBLIC_CLASSES,
    "AutoModelForPointCloudClassification",
    "AutoModelForNodeClassification",
    "AutoModelForGraphClassification",
    "OptimizerStepHookCallback",
    "TrainingProgressCallback",
    "METHODS",
    "create_config",
    "create_model",
    "create_processor",
    "list_models",
]
