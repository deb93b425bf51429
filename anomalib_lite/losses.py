"""Reconstruction losses: a weighted sum of L1, MSE and (1 - SSIM) (SSIM from kornia)."""

from __future__ import annotations

import kornia
from torch import Tensor, nn

from anomalib_lite.utils import checks


def ssim_loss(x: Tensor, y: Tensor, window_size: int = 11) -> Tensor:
    """Mean of (1 - SSIM) / 2 (kornia's convention), in [0, 1]."""
    return kornia.losses.ssim_loss(x, y, window_size=window_size, reduction="mean")


class ReconstructionLoss(nn.Module):
    """``l1 * |x - r| + mse * (x - r)^2 + ssim * (1 - SSIM(x, r)) / 2``, each term averaged."""

    def __init__(self, l1: float = 0.0, mse: float = 0.0, ssim: float = 0.0,
                 ssim_window: int = 11) -> None:
        super().__init__()
        for key, weight in (("l1", l1), ("mse", mse), ("ssim", ssim)):
            checks.require(weight >= 0, f"loss.{key}", weight, "a weight >= 0")
        checks.require(l1 + mse + ssim > 0, "loss", {"l1": l1, "mse": mse, "ssim": ssim},
                       "at least one positive weight among loss.l1, loss.mse, loss.ssim")
        checks.require(ssim_window % 2 == 1 and ssim_window >= 3, "loss.ssim_window",
                       ssim_window, "an odd integer >= 3")
        self.weights = {"l1": float(l1), "mse": float(mse), "ssim": float(ssim)}
        self.ssim_window = ssim_window

    def forward(self, reconstruction: Tensor, target: Tensor) -> Tensor:
        total = reconstruction.new_zeros(())
        if self.weights["l1"]:
            total = total + self.weights["l1"] * (reconstruction - target).abs().mean()
        if self.weights["mse"]:
            total = total + self.weights["mse"] * (reconstruction - target).square().mean()
        if self.weights["ssim"]:
            total = total + self.weights["ssim"] * ssim_loss(
                reconstruction.float(), target.float(), self.ssim_window)
        return total
