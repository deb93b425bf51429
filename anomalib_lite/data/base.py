"""The datamodule base every dataset shares: in-memory splits and their dataloaders."""

from __future__ import annotations

from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from anomalib_lite.data.preprocess import Preprocessing
from anomalib_lite.data.tensor_dataset import InMemoryAnomalyDataset
from anomalib_lite.utils import checks


class InMemoryDataModule(LightningDataModule):
    """Holds ``datasets[split]`` for ``train``/``val``/``test`` and serves their loaders.

    Training batches are shuffled and of ``batch_size``; evaluation batches keep the order
    and are of ``eval_batch_size``. Subclasses fill ``datasets`` in ``setup``.
    """

    num_channels = 3
    # every image is num_channels x H x W: image_size is a number (a square) or (height, width)
    image_size: int | tuple[int, int]

    def __init__(self, batch_size: int, eval_batch_size: int, num_workers: int) -> None:
        super().__init__()
        checks.positive_int("data.batch_size", batch_size)
        checks.positive_int("data.eval_batch_size", eval_batch_size)
        checks.non_negative_int("data.num_workers", num_workers)
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers = num_workers
        self.datasets: dict[str, InMemoryAnomalyDataset] = {}

    @property
    def preprocessing(self) -> Preprocessing:
        """How this datamodule's images are made; the model keeps it in its checkpoint."""
        return Preprocessing(self.image_size, self.num_channels)

    def _loader(self, split: str, shuffle: bool, batch_size: int) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=batch_size, shuffle=shuffle,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def eval_loader(self, split: str) -> DataLoader:
        """An unshuffled loader over any split (e.g. to fit a density on ``train``)."""
        return self._loader(split, False, self.eval_batch_size)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False, self.eval_batch_size)

    def predict_dataloader(self) -> DataLoader:
        return self.test_dataloader()
