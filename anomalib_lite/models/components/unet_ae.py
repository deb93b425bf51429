"""The first seed document's multi-scale U-Net autoencoder (skip connections)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from anomalib_lite.models.components.base import check_images
from anomalib_lite.models.components.blocks import ConvBlock
from anomalib_lite.utils import checks


class UNetAE(nn.Module):
    """ConvBlocks 3→32→64→128 with max-pooling, bottleneck ConvBlock 128→256 (16x16 at
    128 px); transposed-conv upsampling with skip concatenation 256→128→64→32; 1x1 conv to
    C channels; sigmoid. 1,928,483 parameters with the defaults (the seed: ~1.93M).
    The latent is the bottleneck feature map (N, 256, H/8, W/8).

    Options beyond the seed (defaults reproduce it):
    - ``out_channels`` (default: ``in_channels``) and ``sigmoid=False`` turn it into a
      segmentation U-Net that returns logits (the discriminative head of ``DraemLite``).
    - Skips that cannot simply copy the input, active in training only: ``skip_dropout``
      zeroes each skip of each image with that probability; ``skip_noise`` adds Gaussian
      noise of that many standard deviations of the skip's features.
    """

    def __init__(self, in_channels: int = 3, widths: Sequence[int] = (32, 64, 128, 256),
                 out_channels: int | None = None, sigmoid: bool = True,
                 skip_dropout: float = 0.0, skip_noise: float = 0.0) -> None:
        super().__init__()
        checks.in_range("model.net.skip_dropout", skip_dropout, 0.0, 1.0)
        checks.in_range("model.net.skip_noise", skip_noise, 0.0, 100.0)
        self.in_channels = in_channels
        self.skip_dropout, self.skip_noise = float(skip_dropout), float(skip_noise)
        self.depth = len(widths) - 1
        self.down = nn.ModuleList([ConvBlock(in_channels, widths[0])])
        self.down.extend(ConvBlock(a, b) for a, b in itertools.pairwise(widths[:-1]))
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = ConvBlock(widths[-2], widths[-1])
        pairs = list(zip(widths[:0:-1], widths[-2::-1], strict=True))  # (256,128) (128,64) (64,32)
        self.up = nn.ModuleList(nn.ConvTranspose2d(a, b, kernel_size=2, stride=2) for a, b in pairs)
        self.up_blocks = nn.ModuleList(ConvBlock(2 * b, b) for _, b in pairs)
        head: list[nn.Module] = [nn.Conv2d(widths[0], out_channels or in_channels, kernel_size=1)]
        self.head = nn.Sequential(*head, nn.Sigmoid()) if sigmoid else nn.Sequential(*head)

    def _encode(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        check_images(x, self.in_channels, 2**self.depth, type(self).__name__)
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else self.pool(x))
            skips.append(x)
        return self.bottleneck(self.pool(x)), skips

    def encode(self, x: Tensor) -> Tensor:
        return self._encode(x)[0]

    def _perturb(self, skip: Tensor) -> Tensor:
        """Skip dropout and noise (training only)."""
        if not self.training:
            return skip
        if self.skip_noise:
            std = skip.detach().float().std(dim=(1, 2, 3), keepdim=True).to(skip.dtype)
            skip = skip + self.skip_noise * std * torch.randn_like(skip)
        if self.skip_dropout:
            keep = torch.rand(skip.shape[0], 1, 1, 1, device=skip.device) >= self.skip_dropout
            skip = skip * keep.to(skip.dtype)
        return skip

    def forward(self, x: Tensor) -> Tensor:
        x, skips = self._encode(x)
        for up, block, skip in zip(self.up, self.up_blocks, reversed(skips), strict=True):
            x = block(torch.cat([up(x), self._perturb(skip)], dim=1))
        return self.head(x)
