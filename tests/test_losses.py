"""Reconstruction losses against their definitions."""

from __future__ import annotations

import pytest
import torch

from anomalib_lite.losses import ReconstructionLoss, ssim_loss
from anomalib_lite.utils.checks import ConfigError


def test_weighted_terms_match_their_definitions():
    x, r = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    l1, mse = (x - r).abs().mean(), (x - r).square().mean()
    ssim = ssim_loss(r, x, 5)
    assert ReconstructionLoss(l1=1.0)(r, x) == pytest.approx(l1.item())
    assert ReconstructionLoss(mse=1.0)(r, x) == pytest.approx(mse.item())
    combined = ReconstructionLoss(l1=0.5, ssim=2.0, ssim_window=5)(r, x)
    assert combined == pytest.approx(0.5 * l1.item() + 2.0 * ssim.item(), rel=1e-5)
    assert ReconstructionLoss(ssim=1.0, ssim_window=5)(x, x) == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"l1": -1.0}, "loss.l1"), ({}, "loss="), ({"l1": 1.0, "ssim_window": 4}, "loss.ssim_window"),
])
def test_bad_loss_config_names_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        ReconstructionLoss(**kwargs)
