"""One LightningDataModule per dataset; all yield :class:`~anomalib_lite.data.batch.Batch`."""

from anomalib_lite.data.batch import Batch, Sample
from anomalib_lite.data.file_datamodule import DatasetLayoutError, FileDataModule
from anomalib_lite.data.folder import FolderDataModule
from anomalib_lite.data.image_io import ImageLoadError, load_image, load_mask
from anomalib_lite.data.mvtec import MVTEC_CATEGORIES, MVTecDataModule
from anomalib_lite.data.sprites import SpritesDataModule

__all__ = [
    "MVTEC_CATEGORIES",
    "Batch",
    "DatasetLayoutError",
    "FileDataModule",
    "FolderDataModule",
    "ImageLoadError",
    "MVTecDataModule",
    "Sample",
    "SpritesDataModule",
    "load_image",
    "load_mask",
]
