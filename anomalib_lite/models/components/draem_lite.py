"""A small DRAEM-style model: a reconstructive autoencoder plus a discriminative U-Net.

DRAEM (Zavrtanik et al., ICCV 2021) trains on normal images corrupted by synthetic
anomalies: the reconstructive subnet restores the clean image, the discriminative subnet
segments the anomaly from (input, reconstruction). DRAEM's subnets have ~97M parameters;
here both are the project's own seed architectures at reduced widths (about 1M in all by
default), so training fits minutes on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anomalib_lite.models.components.baseline_ae import BaselineAE
from anomalib_lite.models.components.unet_ae import UNetAE
from anomalib_lite.utils import checks


class DraemLite(nn.Module):
    """``forward(x)``: the reconstruction (a :class:`BaselineAE`, no skips);
    ``segment(x, reconstruction)``: anomaly logits (N, 1, H, W) from a :class:`UNetAE` on
    the 2C-channel concatenation; ``encode(x)``: the reconstructive bottleneck.

    ``downsample``: both subnets work on the input average-pooled by this factor, and the
    reconstruction and logits are upsampled (bilinear) back: 4x less compute at 2.
    """

    def __init__(self, in_channels: int = 3,
                 recon_widths: Sequence[int] = (16, 32, 64, 128),
                 seg_widths: Sequence[int] = (16, 32, 64, 128), downsample: int = 1) -> None:
        super().__init__()
        checks.require(downsample in (1, 2, 4), "model.net.downsample", downsample,
                       "1, 2 or 4")
        self.in_channels, self.downsample = in_channels, downsample
        self.reconstructive = BaselineAE(in_channels, recon_widths)
        self.discriminative = UNetAE(2 * in_channels, seg_widths, out_channels=1,
                                     sigmoid=False)

    def _down(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.downsample) if self.downsample > 1 else x

    def _up(self, x: Tensor, size: torch.Size) -> Tensor:
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False) \
            if self.downsample > 1 else x

    def encode(self, x: Tensor) -> Tensor:
        return self.reconstructive.encode(self._down(x))

    def forward(self, x: Tensor) -> Tensor:
        return self._up(self.reconstructive(self._down(x)), x.shape[-2:])

    def segment(self, x: Tensor, reconstruction: Tensor) -> Tensor:
        pair = torch.cat([x, reconstruction.to(x.dtype)], dim=1)
        return self._up(self.discriminative(self._down(pair)), x.shape[-2:])
