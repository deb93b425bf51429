"""PCA: a linear autoencoder fitted in closed form, the baseline every table shows.

Images are optionally downscaled to ``size`` x ``size`` pixels and turned gray; ``fit``
keeps the mean and the first ``n_components`` principal directions of the normal training
images (SVD). The reconstruction is the projection on them; the maps ``l1``, ``l2`` and
``ssim`` compare it with the (downscaled) image, as for the other autoencoders, and are
upsampled back to the image size.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from anomalib_lite.data.batch import Batch
from anomalib_lite.models.protocol import AnomalyModel
from anomalib_lite.scoring.maps import MAP_KINDS, anomaly_map
from anomalib_lite.utils import checks
from anomalib_lite.utils.buffers import take_fitted_shapes

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma


class PCAModel(AnomalyModel):
    """``mean + (x - mean) V^T V`` with the top ``n_components`` rows ``V`` of the SVD."""

    map_names = MAP_KINDS

    def __init__(self, n_components: int = 50, size: int | None = 64, gray: bool = False,
                 ssim_window: int = 7) -> None:
        super().__init__()
        self.n_components = checks.positive_int("model.net.n_components", n_components)
        checks.require(size is None or (isinstance(size, int) and size >= 8), "model.net.size",
                       size, "an image side >= 8 pixels, or null for the data's own size")
        checks.require(isinstance(ssim_window, int) and ssim_window >= 3 and ssim_window % 2,
                       "model.net.ssim_window", ssim_window, "an odd integer >= 3")
        self.size, self.gray, self.ssim_window = size, bool(gray), ssim_window
        self.register_buffer("mean", torch.empty(0))
        self.register_buffer("components", torch.empty(0))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        take_fitted_shapes(self, state_dict, prefix, ("mean", "components"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def prepare(self, images: Tensor) -> Tensor:
        """Images as the PCA sees them: downscaled (area) and, with ``gray``, luma only."""
        x = images.float()
        if self.size is not None and x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="area")
        if self.gray and x.shape[1] == 3:
            x = (x * x.new_tensor(GRAY_WEIGHTS).view(1, 3, 1, 1)).sum(1, keepdim=True)
        return x

    def fit(self, dataloader: Iterable[Batch]) -> None:
        x = torch.cat([self.prepare(b["image"]).flatten(1) for b in dataloader]).double()
        mean = x.mean(dim=0)
        _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
        k = min(self.n_components, vh.shape[0])
        self.mean, self.components = mean.float(), vh[:k].float().contiguous()

    def _project(self, x: Tensor) -> Tensor:
        if self.components.numel() == 0:
            raise RuntimeError("PCAModel is not fitted: call fit() on normal images first")
        flat = x.flatten(1)
        if flat.shape[1] != self.mean.numel():
            raise ValueError(f"PCAModel was fitted on {self.mean.numel()} values per image, got "
                             f"{flat.shape[1]}: use the training image size")
        coefficients = (flat - self.mean) @ self.components.T
        return (self.mean + coefficients @ self.components).view_as(x)

    def embedding(self, images: Tensor) -> Tensor:
        x = self.prepare(images).flatten(1)
        return (x - self.mean) @ self.components.T

    def reconstruct(self, images: Tensor) -> Tensor:
        reconstruction = self._project(self.prepare(images)).clamp(0, 1)
        if reconstruction.shape[1] != images.shape[1]:
            reconstruction = reconstruction.expand(-1, images.shape[1], -1, -1)
        return F.interpolate(reconstruction, size=images.shape[-2:], mode="bilinear",
                             align_corners=False)

    def anomaly_maps(self, images: Tensor, names: Iterable[str] | None = None
                     ) -> dict[str, Tensor]:
        names = set(self.map_names if names is None else names)
        x = self.prepare(images)
        reconstruction = self._project(x)
        return {kind: F.interpolate(anomaly_map(x, reconstruction, kind, self.ssim_window),
                                    size=images.shape[-2:], mode="bilinear",
                                    align_corners=False)
                for kind in MAP_KINDS if kind in names}
