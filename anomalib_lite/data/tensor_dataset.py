"""A dataset of images held in memory as uint8 tensors."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.utils.data import Dataset

from anomalib_lite.data.batch import Sample
from anomalib_lite.data.preprocess import to_model_input


class InMemoryAnomalyDataset(Dataset):
    """Images (N, C, H, W) uint8, labels (N,), masks (N, 1, H, W) bool, names and defect types."""

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        masks: Tensor,
        paths: list[str],
        defect_types: list[str],
    ) -> None:
        n = images.shape[0]
        if not (labels.shape[0] == masks.shape[0] == len(paths) == len(defect_types) == n):
            raise ValueError("images, labels, masks, paths and defect_types must have equal length")
        if images.dtype != torch.uint8:
            raise TypeError(f"images must be uint8, got {images.dtype}")
        self.images, self.labels, self.masks = images, labels.long(), masks.bool()
        self.paths, self.defect_types = paths, defect_types

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Sample:
        return Sample(
            image=to_model_input(self.images[index]),
            label=self.labels[index],
            mask=self.masks[index].float(),
            path=self.paths[index],
            defect_type=self.defect_types[index],
        )
