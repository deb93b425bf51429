"""Anomaly models (the protocol and its families), their networks (``components``) and the
LightningModule that trains and scores any of them."""

from anomalib_lite.models.feature_ae import FeatureAE
from anomalib_lite.models.module import AnomalyModule
from anomalib_lite.models.patch_knn import PatchKNN
from anomalib_lite.models.pca import PCAModel
from anomalib_lite.models.protocol import AnomalyModel
from anomalib_lite.models.reconstruction import ReconstructionModel

__all__ = ["AnomalyModel", "AnomalyModule", "FeatureAE", "PCAModel", "PatchKNN",
           "ReconstructionModel"]
