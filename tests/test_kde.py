"""Latent KDE: agreement with scikit-learn, bandwidth rule, checkpoint round trip."""

from __future__ import annotations

import pytest
import torch
from sklearn.neighbors import KernelDensity

from anomalib_lite.scoring.kde import LatentKDE, pool_latent


def test_scores_equal_sklearn_kernel_density():
    torch.manual_seed(0)
    train = torch.randn(300, 8, 4, 4)
    kde = LatentKDE(n_components=5).fit(train)
    test = torch.randn(50, 8, 4, 4) * 1.5
    reference = KernelDensity(kernel="gaussian", bandwidth=float(kde.bandwidth)).fit(
        kde.points.numpy())
    expected = -reference.score_samples(kde.project(test).numpy())
    assert torch.allclose(kde(test).double(), torch.tensor(expected), atol=1e-4, rtol=1e-6)
    assert kde.points.shape == (300, 5) and 0.03 < float(kde.bandwidth) < 10


def test_outliers_score_higher_and_max_points_subsamples():
    torch.manual_seed(1)
    train = torch.randn(500, 6)
    kde = LatentKDE(n_components=6, max_points=100).fit(train)
    assert kde.points.shape == (100, 6)
    assert kde(torch.zeros(1, 6)) < kde(torch.full((1, 6), 6.0))


def test_tiny_sets_use_scotts_rule_and_pooling():
    latents = torch.randn(5, 3, 2, 2)
    kde = LatentKDE().fit(latents)
    assert float(kde.bandwidth) == pytest.approx(5 ** (-1 / (3 + 4)))
    assert torch.equal(pool_latent(latents), latents.mean(dim=(2, 3)))
    with pytest.raises(RuntimeError, match="not fitted"):
        LatentKDE()(latents)


def test_state_dict_round_trip_restores_fitted_shapes():
    kde = LatentKDE(n_components=3).fit(torch.randn(40, 7))
    fresh = LatentKDE(n_components=3)
    fresh.load_state_dict(kde.state_dict())
    x = torch.randn(4, 7)
    assert torch.equal(fresh(x), kde(x))
