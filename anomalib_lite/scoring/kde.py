"""Latent kernel density estimation (the second seed's idea): density of normal latents.

The latent code (N, C, h, w) is average-pooled to (N, C), projected on its first principal
components (whitened) and modelled with a Gaussian kernel density. The bandwidth is chosen
by 5-fold cross-validated log-likelihood with scikit-learn's ``KernelDensity`` (Scott's
rule below 10 points). The score is the negative log density. Everything fitted is kept in
buffers and scored in torch, so it travels in ``weights_only`` checkpoints and exports.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from anomalib_lite.utils import checks
from anomalib_lite.utils.buffers import take_fitted_shapes

KDE_SCORE = "latent_kde"
BANDWIDTH_GRID = np.logspace(-1.5, 1.0, 26)
CV_FOLDS = 5


def pool_latent(latent: Tensor) -> Tensor:
    """(N, C, h, w) → (N, C) by global average pooling; (N, D) passes through."""
    return latent.flatten(2).mean(dim=2) if latent.ndim > 2 else latent


def choose_bandwidth(points: np.ndarray, seed: int = 0) -> float:
    """Cross-validated (log-likelihood) Gaussian bandwidth; Scott's rule for tiny sets."""
    n, d = points.shape
    if n < 2 * CV_FOLDS:
        return float(n ** (-1.0 / (d + 4)))
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.neighbors import KernelDensity

    search = GridSearchCV(KernelDensity(kernel="gaussian"), {"bandwidth": BANDWIDTH_GRID},
                          cv=KFold(CV_FOLDS, shuffle=True, random_state=seed))
    search.fit(points)
    return float(search.best_params_["bandwidth"])


class LatentKDE(nn.Module):
    """Gaussian KDE on pooled, PCA-whitened latent codes; ``forward`` gives -log density."""

    def __init__(self, n_components: int = 16, max_points: int = 2000, seed: int = 0) -> None:
        super().__init__()
        self.n_components = checks.positive_int("score.kde.n_components", n_components)
        self.max_points = checks.positive_int("score.kde.max_points", max_points)
        self.seed = seed
        for name in ("mean", "components", "scale", "points"):
            self.register_buffer(name, torch.empty(0))
        self.register_buffer("bandwidth", torch.tensor(float("nan"), dtype=torch.float64))

    @property
    def fitted(self) -> bool:
        return self.points.numel() > 0

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any,
                              **kwargs: Any) -> None:
        # fitted buffers have data-dependent shapes: take the checkpoint's shapes
        take_fitted_shapes(self, state_dict, prefix, ("mean", "components", "scale", "points"))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def project(self, latent: Tensor) -> Tensor:
        return ((pool_latent(latent).double() - self.mean) @ self.components) / self.scale

    def fit(self, latents: Tensor) -> LatentKDE:
        """Fit on the latent codes of normal training images."""
        pooled = pool_latent(latents).double().cpu()
        n, d = pooled.shape
        if n < 2:
            raise ValueError(f"latent KDE needs at least 2 training images, got {n}")
        k = min(self.n_components, d, n - 1)
        mean = pooled.mean(dim=0)
        _, _, vh = torch.linalg.svd(pooled - mean, full_matrices=False)
        components = vh[:k].T.contiguous()
        projected = (pooled - mean) @ components
        scale = projected.std(dim=0).clamp_min(1e-12)
        projected = projected / scale
        if n > self.max_points:
            keep = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))
            projected = projected[keep[: self.max_points]]
        device = self.bandwidth.device
        self.mean, self.components, self.scale = mean.to(device), components.to(device), \
            scale.to(device)
        self.points = projected.to(device)
        self.bandwidth = torch.tensor(choose_bandwidth(projected.numpy(), self.seed),
                                      dtype=torch.float64, device=device)
        return self

    def forward(self, latent: Tensor) -> Tensor:
        """Negative log density of each latent code (higher = more anomalous)."""
        if not self.fitted:
            raise RuntimeError("LatentKDE is not fitted: call fit() on normal latents first")
        x = self.project(latent.to(self.points.device))
        h = self.bandwidth
        sq = torch.cdist(x, self.points).square()
        d = self.points.shape[1]
        log_density = (torch.logsumexp(-sq / (2 * h * h), dim=1) - math.log(len(self.points))
                       - 0.5 * d * torch.log(2 * math.pi * h * h))
        return (-log_density).float()


class KDEScores(nn.Module):
    """The latent KDE's two image scores: ``latent_kde`` (-log density of the model's
    embedding) and ``<primary>+latent_kde`` (the sum of the primary and KDE scores, each
    z-normalized by their mean and std on normal validation images, kept in ``stats``)."""

    def __init__(self, primary: str, n_components: int = 16, max_points: int = 2000,
                 seed: int = 0) -> None:
        super().__init__()
        self.kde = LatentKDE(n_components, max_points, seed)
        self.names = [KDE_SCORE, f"{primary}+{KDE_SCORE}"]
        self.register_buffer("stats", torch.full((4,), float("nan"), dtype=torch.float64))

    @property
    def fitted(self) -> bool:
        return self.kde.fitted

    def _combine(self, primary: Tensor, density: Tensor) -> Tensor:
        mu_p, sd_p, mu_k, sd_k = self.stats.to(primary.device, primary.dtype)
        return (primary - mu_p) / sd_p.clamp_min(1e-12) + (density - mu_k) / sd_k.clamp_min(
            1e-12)

    def fit(self, train_latents: Tensor, val_latents: Tensor, val_primary: Tensor
            ) -> dict[str, Tensor]:
        """Fit the density on normal training latents and the z-statistics on normal
        validation images; returns both scores of the validation images (for thresholds)."""
        self.kde.fit(train_latents)
        p = val_primary.double()
        k = self.kde(val_latents).double().to(p.device)
        self.stats = torch.stack([p.mean(), p.std(), k.mean(), k.std()]).to(self.stats)
        return dict(zip(self.names, (k, self._combine(p, k)), strict=True))

    def forward(self, latent: Tensor, primary: Tensor) -> dict[str, Tensor]:
        density = self.kde(latent).to(primary.device)
        return dict(zip(self.names, (density, self._combine(primary, density)), strict=True))
