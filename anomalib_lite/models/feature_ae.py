"""Feature reconstruction: an autoencoder on frozen pretrained features (DFR-style).

A frozen backbone turns each image into patch features (``PatchFeatures``: mid-level
layers on one grid), standardized per channel with the statistics of the normal training
images. A small convolutional autoencoder learns to reconstruct them; the anomaly map
``feature`` is the per-location mean squared reconstruction error, upsampled to the image.
``fit`` computes the features of the normal training images once and caches them (the
backbone is frozen), so each training epoch only runs the small autoencoder.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from anomalib_lite.data.batch import Batch
from anomalib_lite.models.patch_features import PatchFeatures, to_image_size
from anomalib_lite.models.protocol import AnomalyModel
from anomalib_lite.utils import checks


def conv_autoencoder(channels: int, widths: Sequence[int], kernel_size: int) -> nn.Sequential:
    """Conv-BN-ReLU layers ``channels → widths[0] → … → widths[-1]`` (the bottleneck) and
    back, then a linear conv to ``channels``; the spatial size is kept."""
    sizes = [channels, *widths, *widths[-2::-1]]
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Conv2d(a, b, kernel_size, padding=kernel_size // 2),
                   nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
    layers.append(nn.Conv2d(sizes[-1], channels, kernel_size, padding=kernel_size // 2))
    return nn.Sequential(*layers)


class FeatureAE(AnomalyModel):
    """Autoencoder ``widths`` (the last is the bottleneck) with ``kernel_size`` x
    ``kernel_size`` convolutions over the standardized features of ``backbone``; with
    ``noise`` > 0 it is trained to restore them from copies with Gaussian noise of that
    standard deviation added (a denoising autoencoder)."""

    map_names = ("feature",)

    def __init__(self, backbone: nn.Module | Mapping, pool: int = 3,
                 widths: Sequence[int] = (128, 64), kernel_size: int = 1,
                 noise: float = 0.0) -> None:
        super().__init__()
        checks.require(len(widths) > 0 and all(isinstance(w, int) and w > 0 for w in widths),
                       "model.net.widths", list(widths), "a non-empty list of positive widths")
        checks.require(kernel_size in (1, 3, 5), "model.net.kernel_size", kernel_size,
                       "1, 3 or 5")
        self.noise = checks.in_range("model.net.noise", noise, 0.0, 10.0)
        self.features = PatchFeatures(backbone, pool)
        channels = self.features.channels
        self.autoencoder = conv_autoencoder(channels, list(widths), kernel_size)
        self.register_buffer("mean", torch.zeros(1, channels, 1, 1))
        self.register_buffer("std", torch.ones(1, channels, 1, 1))
        self._cache: dict[str, Tensor] = {}  # standardized training features by image path
        self._cache_size: tuple[int, ...] = ()  # the image size they were computed at

    def standardized(self, images: Tensor) -> Tensor:
        return (self.features(images) - self.mean) / self.std

    def fit(self, dataloader: Iterable[Batch]) -> None:
        """Per-channel statistics of the training features; cache them by image path."""
        paths, features = [], []
        for batch in dataloader:
            paths += list(batch["path"])
            features.append(self.features(batch["image"]))
        stacked = torch.cat(features)
        self.mean = stacked.mean(dim=(0, 2, 3), keepdim=True)
        self.std = stacked.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
        stacked = (stacked - self.mean) / self.std
        self._cache = dict(zip(paths, stacked, strict=True))
        self._cache_size = tuple(batch["image"].shape[-2:])

    def _batch_features(self, batch: Batch) -> Tensor:
        paths = batch.get("path") or []
        whole = tuple(batch["image"].shape[-2:]) == self._cache_size  # not a training crop
        if paths and whole and all(p in self._cache for p in paths):
            return torch.stack([self._cache[p] for p in paths]).to(batch["image"].device)
        return self.standardized(batch["image"].float())

    def training_objective(self, batch: Batch, generator: torch.Generator
                           ) -> tuple[Tensor, dict[str, Tensor]]:
        features = self._batch_features(batch)
        noisy = features
        if self.noise:  # denoising: restore the clean features from noisy ones
            noisy = features + self.noise * torch.randn(features.shape, generator=generator,
                                                        device="cpu").to(features.device)
        loss = (self.autoencoder(noisy).float() - features).square().mean()
        return loss, {}

    def anomaly_maps(self, images: Tensor, names: Iterable[str] | None = None
                     ) -> dict[str, Tensor]:
        features = self.standardized(images)
        error = (self.autoencoder(features).float() - features).square().mean(1, keepdim=True)
        return {"feature": to_image_size(error, images)}
