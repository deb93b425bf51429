"""A nearest-neighbour reference (PatchCore-style): distance to the closest normal patch.

``fit`` stores the patch features of every normal training image, subsampled by a greedy
k-center coreset (PatchCore, Roth et al. 2022) so the memory bank stays bounded; the
anomaly map ``knn`` is each patch's Euclidean distance to its nearest bank entry,
upsampled to the image. No gradient step: a one-pass, fit-only model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from anomalib_lite.data.batch import Batch
from anomalib_lite.models.patch_features import PatchFeatures, to_image_size
from anomalib_lite.models.protocol import AnomalyModel
from anomalib_lite.utils import checks
from anomalib_lite.utils.buffers import take_fitted_shapes

BANK_CHUNK = 4096  # bank entries compared at a time (bounds the distance matrix)


def greedy_coreset(points: Tensor, size: int, projection: int = 128, seed: int = 0) -> Tensor:
    """Indices of ``size`` points chosen by greedy k-center selection: each next point is
    the one farthest from those chosen so far (distances on a random Gaussian projection
    to ``projection`` dimensions, as in PatchCore). Starts at a seeded random point."""
    n = points.shape[0]
    if size >= n:
        return torch.arange(n)
    generator = torch.Generator().manual_seed(seed)
    z = points.float()
    if projection and z.shape[1] > projection:
        matrix = torch.randn(z.shape[1], projection, generator=generator) / math.sqrt(projection)
        z = z @ matrix.to(z.device)
    z_sq = z.square().sum(1)

    def squared_distance(i: int) -> Tensor:
        return z_sq - 2 * (z @ z[i]) + z_sq[i]

    chosen = torch.empty(size, dtype=torch.long)
    chosen[0] = int(torch.randint(n, (1,), generator=generator))
    nearest = squared_distance(int(chosen[0]))
    for i in range(1, size):
        chosen[i] = int(nearest.argmax())
        nearest = torch.minimum(nearest, squared_distance(int(chosen[i])))
    return chosen


def nearest_distance(queries: Tensor, bank: Tensor) -> Tensor:
    """Euclidean distance of each query row to its nearest bank row (bank in chunks)."""
    q_sq = queries.square().sum(1, keepdim=True)
    best = None
    for start in range(0, bank.shape[0], BANK_CHUNK):
        chunk = bank[start:start + BANK_CHUNK]
        d = q_sq - 2 * queries @ chunk.T + chunk.square().sum(1)
        low = d.amin(dim=1)
        best = low if best is None else torch.minimum(best, low)
    assert best is not None
    return best.clamp_min(0).sqrt()


class PatchKNN(AnomalyModel):
    """Memory bank of normal patch features; map ``knn`` = distance to the nearest one.

    ``coreset_ratio``: fraction of the training patches kept (greedy k-center), capped at
    ``max_bank`` entries; ``projection``: dimensions of the random projection the coreset
    selection measures distances in; ``pool``: patch neighbourhood (``PatchFeatures``).
    """

    map_names = ("knn",)

    def __init__(self, backbone: nn.Module | Mapping, pool: int = 3,
                 coreset_ratio: float = 0.1, max_bank: int = 50_000, projection: int = 128,
                 seed: int = 0) -> None:
        super().__init__()
        checks.in_range("model.net.coreset_ratio", coreset_ratio, 1e-6, 1.0)
        self.max_bank = checks.positive_int("model.net.max_bank", max_bank)
        self.projection = checks.non_negative_int("model.net.projection", projection)
        self.coreset_ratio, self.seed = float(coreset_ratio), int(seed)
        self.features = PatchFeatures(backbone, pool)
        self.register_buffer("bank", torch.empty(0, self.features.channels))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        take_fitted_shapes(self, state_dict, prefix, ("bank",))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def fit(self, dataloader: Iterable[Batch]) -> None:
        patches = torch.cat([self.features(b["image"]).permute(0, 2, 3, 1).flatten(0, 2)
                             for b in dataloader])
        size = min(self.max_bank, max(1, math.ceil(self.coreset_ratio * len(patches))))
        keep = greedy_coreset(patches, size, self.projection, self.seed)
        self.bank = patches[keep.to(patches.device)].contiguous()

    def anomaly_maps(self, images: Tensor, names: Iterable[str] | None = None
                     ) -> dict[str, Tensor]:
        if self.bank.numel() == 0:
            raise RuntimeError("PatchKNN is not fitted: its memory bank is empty")
        features = self.features(images)
        n, c, h, w = features.shape
        distance = nearest_distance(features.permute(0, 2, 3, 1).reshape(-1, c), self.bank)
        return {"knn": to_image_size(distance.view(n, 1, h, w), images)}
