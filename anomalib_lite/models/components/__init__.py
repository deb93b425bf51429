"""Plain ``nn.Module`` networks. Each maps images (N, C, H, W) in [0, 1] to a reconstruction
of the same shape and exposes ``encode`` for its latent code. A network may also expose
``segment(images, reconstruction)`` → anomaly logits (N, 1, H, W): its sigmoid is the
``seg`` anomaly map."""

from anomalib_lite.models.components.baseline_ae import BaselineAE
from anomalib_lite.models.components.draem_lite import DraemLite
from anomalib_lite.models.components.sprite_ae import SpriteAE
from anomalib_lite.models.components.unet_ae import UNetAE

__all__ = ["BaselineAE", "DraemLite", "SpriteAE", "UNetAE"]
