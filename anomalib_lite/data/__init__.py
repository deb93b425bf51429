"""One LightningDataModule per dataset; all yield :class:`~anomalib_lite.data.batch.Batch`."""

from anomalib_lite.data.batch import Batch, Sample
from anomalib_lite.data.sprites import SpritesDataModule

__all__ = ["Batch", "Sample", "SpritesDataModule"]
