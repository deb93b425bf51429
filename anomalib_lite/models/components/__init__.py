"""Plain ``nn.Module`` networks. Each maps images (N, C, H, W) in [0, 1] to a reconstruction
of the same shape and exposes ``encode`` for its latent code."""

from anomalib_lite.models.components.sprite_ae import SpriteAE

__all__ = ["SpriteAE"]
