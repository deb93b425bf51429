"""Reconstruction losses: a weighted sum of L1, MSE and (1 - SSIM) (SSIM from kornia);
the focal (+ Dice) loss of a segmentation head against synthetic anomaly masks."""

from __future__ import annotations

import kornia
import torch
import torch.nn.functional as F
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


class FocalLoss(nn.Module):
    """Segmentation loss of anomaly logits (N, 1, H, W) against binary masks: the binary
    focal loss ``-(1 - p_t)^gamma log p_t`` (DRAEM's choice, mean over pixels), plus
    ``dice`` times the soft Dice loss ``1 - 2|P∩M| / (|P| + |M|)`` over the batch."""

    def __init__(self, gamma: float = 2.0, dice: float = 0.0) -> None:
        super().__init__()
        checks.require(gamma >= 0, "seg_loss.gamma", gamma, "a number >= 0")
        checks.require(dice >= 0, "seg_loss.dice", dice, "a weight >= 0")
        self.gamma, self.dice = float(gamma), float(dice)

    def forward(self, logits: Tensor, masks: Tensor) -> Tensor:
        logits, masks = logits.float(), masks.float()
        bce = F.binary_cross_entropy_with_logits(logits, masks, reduction="none")
        p_t = torch.exp(-bce)
        loss = ((1 - p_t) ** self.gamma * bce).mean()
        if self.dice:
            probs = logits.sigmoid()
            overlap = (probs * masks).sum()
            loss = loss + self.dice * (1 - (2 * overlap + 1) / (probs.sum() + masks.sum() + 1))
        return loss
