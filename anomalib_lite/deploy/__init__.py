"""From a trained model to production: safe loading, prediction on new images, ONNX export."""

from anomalib_lite.deploy.checkpoint import (
    CheckpointError,
    UnsafeCheckpointError,
    load_model,
    preprocessing_of,
)
from anomalib_lite.deploy.predictor import Prediction, Predictor

__all__ = ["CheckpointError", "Prediction", "Predictor", "UnsafeCheckpointError", "load_model",
           "preprocessing_of"]
