"""The second seed document's convolutional autoencoder (two strided convs each way)."""

from __future__ import annotations

from torch import Tensor, nn

from anomalib_lite.models.components.base import check_images


class SpriteAE(nn.Module):
    """Conv(C→16, k3 s2 p1) ReLU Conv(16→32, k3 s2 p1) | ConvT(32→16, k4 s2 p1) ReLU
    ConvT(16→C, k4 s2 p1) Sigmoid. The latent is the (N, 32, H/4, W/4) feature map."""

    def __init__(self, in_channels: int = 3, hidden: int = 16, latent: int = 32) -> None:
        super().__init__()
        self.in_channels = in_channels
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, hidden, kernel_size=3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, latent, kernel_size=3, stride=2, padding=1),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(latent, hidden, kernel_size=4, stride=2, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(hidden, in_channels, kernel_size=4, stride=2, padding=1),
            nn.Sigmoid(),
        )

    def encode(self, x: Tensor) -> Tensor:
        check_images(x, self.in_channels, 4, type(self).__name__)
        return self.encoder(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.encode(x))
