"""Reconstruction networks: shapes, value range, latent access, input validation."""

from __future__ import annotations

import pytest
import torch

from anomalib_lite.models.components import SpriteAE


def test_sprite_ae_shapes_and_range():
    net = SpriteAE(in_channels=3)
    x = torch.rand(2, 3, 64, 64)
    recon = net(x)
    assert recon.shape == x.shape
    assert recon.min() >= 0.0 and recon.max() <= 1.0
    assert net.encode(x).shape == (2, 32, 16, 16)


def test_sprite_ae_matches_the_seed_layers():
    net = SpriteAE()
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)]
    shapes = [(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding) for m in convs]
    assert shapes == [(3, 16, (3, 3), (2, 2), (1, 1)), (16, 32, (3, 3), (2, 2), (1, 1)),
                      (32, 16, (4, 4), (2, 2), (1, 1)), (16, 3, (4, 4), (2, 2), (1, 1))]


@pytest.mark.parametrize(("shape", "message"), [
    ((3, 64, 64), r"\(N, C, H, W\)"),
    ((1, 1, 64, 64), "in_channels=1"),
    ((1, 3, 62, 64), "divisible by 4"),
])
def test_sprite_ae_rejects_bad_input(shape, message):
    with pytest.raises(ValueError, match=message):
        SpriteAE()(torch.rand(*shape))
