"""Content and blending for synthetic anomalies that look like real defects.

- :func:`natural_textures`: crops of real textures (scikit-image's CC0 brick, grass and
  gravel photographs, shipped in its wheel: no download), randomly scaled, turned and
  tinted: DRAEM fills its masks with natural textures.
- :func:`rescaled_patches`: another normal image's content, rescaled by 0.5-2x and
  shifted (NSA's source: a patch of a different normal image).
- :func:`seamless_blend`: gradient-domain (Poisson) blending: inside the mask the result
  keeps the source's gradients but meets the image at the mask's border, so the pasted
  content has no visible seam (NSA's Poisson image editing).
- :func:`object_foreground`: where the object is, for images of an object on a uniform
  background (the colour of the image border), so anomalies land on the object.

Everything is batched on the images' device and driven by an explicit generator.
"""

from __future__ import annotations

import math
from functools import cache

import torch
import torch.nn.functional as F
from torch import Tensor

TEXTURES = ("brick", "grass", "gravel")


@cache
def texture_bank() -> Tensor:
    """The natural texture photographs (T, 1, 512, 512), float in [0, 1], on the CPU."""
    try:
        from skimage import data
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise ImportError("natural texture anomalies need scikit-image "
                          "(pip install scikit-image)") from err
    return torch.stack([torch.from_numpy(getattr(data, name)()).float().div(255)[None]
                        for name in TEXTURES])


def _affine_grid(n: int, height: int, width: int, scale: Tensor, angle: Tensor,
                 shift: Tensor) -> Tensor:
    """Sampling grids (n, H, W, 2) that zoom by ``scale``, turn by ``angle`` and shift by
    ``shift`` (in normalized coordinates)."""
    cos, sin = angle.cos() / scale, angle.sin() / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    return F.affine_grid(theta, [n, 1, height, width], align_corners=False)


def natural_textures(n: int, channels: int, height: int, width: int,
                     generator: torch.Generator, device: torch.device | str) -> Tensor:
    """``n`` texture crops (n, C, H, W): a random texture, zoomed 0.5-2x, turned by a random
    angle, shifted, tinted by a random colour and contrast, in [0, 1]."""
    bank = texture_bank().to(device)
    pick = torch.randint(len(bank), (n,), generator=generator, device=device)
    scale = 2 ** (2 * torch.rand(n, generator=generator, device=device) - 1)
    angle = 2 * math.pi * torch.rand(n, generator=generator, device=device)
    shift = 2 * torch.rand(n, 2, generator=generator, device=device) - 1
    side = bank.shape[-1]
    grid = _affine_grid(n, height, width, scale * side / max(height, width), angle, shift)
    gray = F.grid_sample(bank[pick], grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)
    tint = torch.rand(n, channels, 1, 1, generator=generator, device=device)
    offset = torch.rand(n, channels, 1, 1, generator=generator, device=device)
    contrast = 0.5 + torch.rand(n, 1, 1, 1, generator=generator, device=device)
    mean = gray.mean(dim=(2, 3), keepdim=True)
    textured = ((gray - mean) * contrast + mean).clamp(0, 1)
    return (textured * (0.4 + 0.6 * tint) + 0.3 * offset).clamp(0, 1)


def rescaled_patches(others: Tensor, generator: torch.Generator) -> Tensor:
    """Each of ``others`` (n, C, H, W) zoomed by 0.5-2x about a random point and shifted
    (reflected at the border): content of a different normal image at another scale."""
    n, _, h, w = others.shape
    device = others.device
    scale = 2 ** (2 * torch.rand(n, generator=generator, device=device) - 1)
    shift = 1.5 * torch.rand(n, 2, generator=generator, device=device) - 0.75
    grid = _affine_grid(n, h, w, scale, torch.zeros(n, device=device), shift)
    return F.grid_sample(others, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


def _neighbour_mean(x: Tensor) -> Tensor:
    """The mean of the 4 neighbours of every pixel (borders replicated)."""
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return (padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1] + padded[..., 1:-1, :-2]
            + padded[..., 1:-1, 2:]) / 4


def _relax(x: Tensor, values: Tensor, known: Tensor, sweeps: int) -> Tensor:
    """Jacobi sweeps of Laplace's equation on the unknown pixels, known pixels fixed."""
    for _ in range(sweeps):
        x = torch.where(known, values, _neighbour_mean(x))
    return x


def harmonic_fill(values: Tensor, known: Tensor, sweeps: int = 30) -> Tensor:
    """Fill the unknown pixels (``known`` == 0) with the harmonic (membrane) interpolation
    of the known values: the solution of Laplace's equation with the known pixels as
    boundary. Cascadic multigrid: the known values are averaged down a pyramid; from the
    coarsest level up, each level starts from the coarser solution and is relaxed by
    ``sweeps`` Jacobi sweeps (its fully known pixels fixed)."""
    known = known.expand_as(values).to(values.dtype)
    sums, weights = [values * known], [known]
    while min(sums[-1].shape[-2:]) > 2:  # average the known values down
        sums.append(F.avg_pool2d(sums[-1], 2, ceil_mode=True))
        weights.append(F.avg_pool2d(weights[-1], 2, ceil_mode=True))
    x = None
    for total, weight in zip(sums[::-1], weights[::-1], strict=True):
        level = total / weight.clamp_min(1e-8)
        fixed = weight > 0.999
        start = level.mean(dim=(-2, -1), keepdim=True).expand_as(level) if x is None else \
            F.interpolate(x, size=level.shape[-2:], mode="bilinear", align_corners=False)
        x = _relax(torch.where(fixed, level, start), level, fixed, sweeps)
    assert x is not None
    return x


def seamless_blend(images: Tensor, source: Tensor, masks: Tensor,
                   sweeps: int = 10) -> Tensor:
    """Poisson image editing: inside ``masks`` the result is ``source`` plus the harmonic
    correction that makes it meet ``images`` at the mask's border (the minimizer of the
    gradient difference to ``source`` with the image fixed outside); outside, ``images``."""
    known = 1 - (masks > 0).to(images.dtype)
    correction = harmonic_fill(images - source, known, sweeps)
    return torch.where(known.bool(), images, (source + correction).clamp(0, 1))


def object_foreground(images: Tensor, threshold: float = 0.1,
                      min_uniformity: float = 0.05) -> Tensor:
    """Masks (N, 1, H, W) of where the object is: pixels whose colour differs from the
    median colour of the image's border by more than ``threshold``, smoothed. An image
    whose border is not uniform (its spread above ``min_uniformity``: a texture, not an
    object on a background) is all foreground."""
    n, c = images.shape[:2]
    border = torch.cat([images[..., 0, :], images[..., -1, :], images[..., :, 0],
                        images[..., :, -1]], dim=-1)  # (N, C, 2H + 2W)
    background = border.median(dim=-1).values.view(n, c, 1)
    spread = (border - background).abs().mean(dim=(1, 2))
    background = background.view(n, c, 1, 1)
    distance = (images - background).abs().amax(dim=1, keepdim=True)
    foreground = F.max_pool2d((distance > threshold).to(images.dtype), 5, stride=1,
                              padding=2)
    textured = (spread > min_uniformity).view(n, 1, 1, 1)
    return torch.where(textured, torch.ones_like(foreground), foreground)
