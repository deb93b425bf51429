"""Reconstruction networks: shapes, value range, latent access, input validation."""

from __future__ import annotations

import pytest
import torch

from anomalib_lite.models.components import BaselineAE, SpriteAE, UNetAE


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


@pytest.mark.parametrize(("net", "seed_params"), [(BaselineAE, 1.73e6), (UNetAE, 1.93e6)])
def test_seed000_parameter_counts_within_two_percent(net, seed_params):
    count = sum(p.numel() for p in net().parameters())
    assert abs(count - seed_params) / seed_params < 0.02, count


@pytest.mark.parametrize("net", [BaselineAE, UNetAE])
def test_seed000_shapes_latent_and_range(net):
    model = net().eval()
    x = torch.rand(2, 3, 64, 64)
    recon = model(x)
    assert recon.shape == x.shape and recon.min() >= 0.0 and recon.max() <= 1.0
    assert model.encode(x).shape == (2, 256, 8, 8)  # 16x16 at 128 px, as in the seed
    with pytest.raises(ValueError, match="divisible by 8"):
        model(torch.rand(1, 3, 60, 60))


def test_unet_skips_carry_the_input_baseline_does_not():
    """A perturbation at the input reaches the U-Net output through the full-resolution skip."""
    torch.manual_seed(0)
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    for net, expect_local in ((UNetAE().eval(), True), (BaselineAE().eval(), False)):
        out = net(x)
        (grad,) = torch.autograd.grad(out[0, :, 16, 16].sum(), x)
        local = grad[0, :, 15:18, 15:18].abs().sum() / grad.abs().sum()
        assert (local > 0.05) == expect_local, (type(net).__name__, float(local))
