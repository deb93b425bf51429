"""The first seed document's baseline autoencoder: symmetric, no skip connections."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import Tensor, nn

from anomalib_lite.models.components.base import check_images
from anomalib_lite.models.components.blocks import ConvBlock


class BaselineAE(nn.Module):
    """Encoder ConvBlocks 3→32→64→128→256 with 2x max-pooling between them; decoder
    2x upsampling + ConvBlocks 256→128→64→32; 1x1 conv to C channels; sigmoid.

    With the default widths it has 1,756,227 parameters (the seed reports ~1.73M).
    The latent is the (N, 256, H/8, W/8) bottleneck.
    """

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.depth = len(widths) - 1
        encoder: list[nn.Module] = [ConvBlock(in_channels, widths[0])]
        for w_in, w_out in itertools.pairwise(widths):
            encoder += [nn.MaxPool2d(2), ConvBlock(w_in, w_out)]
        decoder: list[nn.Module] = []
        for w_in, w_out in zip(widths[:0:-1], widths[-2::-1], strict=True):
            decoder += [nn.Upsample(scale_factor=2, mode="nearest"), ConvBlock(w_in, w_out)]
        decoder += [nn.Conv2d(widths[0], in_channels, kernel_size=1), nn.Sigmoid()]
        self.encoder, self.decoder = nn.Sequential(*encoder), nn.Sequential(*decoder)

    def encode(self, x: Tensor) -> Tensor:
        check_images(x, self.in_channels, 2**self.depth, type(self).__name__)
        return self.encoder(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encode(x))
