"""Building blocks shared by the seed-000 autoencoders."""

from __future__ import annotations

from torch import nn


class ConvBlock(nn.Sequential):
    """(Conv3x3 → BatchNorm → ReLU) x 2, keeping the spatial size."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
