"""Patch features of a frozen pretrained backbone: several layers on one grid.

The feature maps of ``backbone.layers`` are each averaged over a ``pool`` x ``pool``
neighbourhood (a patch sees its surroundings, PatchCore's local aggregation), resized
(bilinear) to the grid of the first layer and concatenated along the channels.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from anomalib_lite.models.backbones import Backbone
from anomalib_lite.models.protocol import as_module
from anomalib_lite.utils import checks


def as_backbone(value: nn.Module | Mapping, key: str = "model.net.backbone") -> nn.Module:
    """A backbone given as a module, a config with ``_target_``, or Backbone's arguments."""
    if isinstance(value, Mapping) and "_target_" not in value:
        return Backbone(**value)
    return as_module(value, key)


class PatchFeatures(nn.Module):
    """``images (N, 3, H, W)`` in [0, 1] → patch features ``(N, C, h, w)`` (frozen)."""

    def __init__(self, backbone: nn.Module | Mapping, pool: int = 3) -> None:
        super().__init__()
        checks.require(isinstance(pool, int) and pool >= 1 and pool % 2 == 1,
                       "model.net.pool", pool, "an odd integer >= 1 (1: no aggregation)")
        self.backbone = as_backbone(backbone)
        self.pool = pool
        self.channels = sum(self.backbone.out_channels)
        self.stride = self.backbone.strides[0]

    def forward(self, images: Tensor) -> Tensor:
        with torch.no_grad():
            maps = self.backbone(images)
        size = maps[0].shape[-2:]
        if self.pool > 1:
            maps = [F.avg_pool2d(m, self.pool, stride=1, padding=self.pool // 2,
                                 count_include_pad=False) for m in maps]
        maps = [m if m.shape[-2:] == size else
                F.interpolate(m, size=size, mode="bilinear", align_corners=False) for m in maps]
        return torch.cat(maps, dim=1).float()


def to_image_size(amap: Tensor, images: Tensor) -> Tensor:
    """A patch-grid map (N, 1, h, w) upsampled (bilinear) to the images' size."""
    return F.interpolate(amap, size=images.shape[-2:], mode="bilinear", align_corners=False)
