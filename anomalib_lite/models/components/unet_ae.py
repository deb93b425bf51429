"""The first seed document's multi-scale U-Net autoencoder (skip connections)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from anomalib_lite.models.components.base import check_images
from anomalib_lite.models.components.blocks import ConvBlock


class UNetAE(nn.Module):
    """ConvBlocks 3→32→64→128 with max-pooling, bottleneck ConvBlock 128→256 (16x16 at
    128 px); transposed-conv upsampling with skip concatenation 256→128→64→32; 1x1 conv to
    C channels; sigmoid. 1,928,483 parameters with the defaults (the seed: ~1.93M).
    The latent is the bottleneck feature map (N, 256, H/8, W/8).
    """

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.depth = len(widths) - 1
        self.down = nn.ModuleList([ConvBlock(in_channels, widths[0])])
        self.down.extend(ConvBlock(a, b) for a, b in itertools.pairwise(widths[:-1]))
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = ConvBlock(widths[-2], widths[-1])
        pairs = list(zip(widths[:0:-1], widths[-2::-1], strict=True))  # (256,128) (128,64) (64,32)
        self.up = nn.ModuleList(nn.ConvTranspose2d(a, b, kernel_size=2, stride=2) for a, b in pairs)
        self.up_blocks = nn.ModuleList(ConvBlock(2 * b, b) for _, b in pairs)
        self.head = nn.Sequential(nn.Conv2d(widths[0], in_channels, kernel_size=1), nn.Sigmoid())

    def _encode(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        check_images(x, self.in_channels, 2**self.depth, type(self).__name__)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        return self.bottleneck(self.pool(x)), skips

    def encode(self, x: Tensor) -> Tensor:
        return self._encode(x)[0]

    def forward(self, x: Tensor) -> Tensor:
        x, skips = self._encode(x)
        for up, block, skip in zip(self.up, self.up_blocks, reversed(skips), strict=True):
            x = block(torch.cat([up(x), skip], dim=1))
        return self.head(x)
