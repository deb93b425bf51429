"""Networks (``components``) and the LightningModule that trains and evaluates any of them."""

from anomalib_lite.models.module import AnomalyModule

__all__ = ["AnomalyModule"]
