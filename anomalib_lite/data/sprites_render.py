"""Functional core of the sprite dataset: dSprites-style shapes and injected ellipse anomalies.

Everything is vectorised over the batch with torch and driven by an explicit
``torch.Generator``, so the same seed always gives the same pixels.

dSprites (Matthey et al., 2017) factors are reproduced: three shapes (square, ellipse,
heart), 6 scales in [0.5, 1], 40 orientations in [0, 2π] and 32x32 positions in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

SHAPES = ("square", "ellipse", "heart")
N_SCALES = 6
N_ORIENTATIONS = 40
N_POSITIONS = 32


@dataclass(frozen=True)
class SpriteStyle:
    """How sprites are drawn. Lengths are fractions of the image side."""

    image_size: int = 64
    sprite_extent: float = 0.16  # half-size of a sprite at scale 1
    position_margin: float = 0.2  # positions 0..1 map to [margin, 1 - margin]
    background_low: float = 0.0  # per-channel uniform background colour range
    background_high: float = 0.75
    foreground: tuple[float, float, float] = (1.0, 1.0, 1.0)


@dataclass(frozen=True)
class EllipseAnomaly:
    """Random ellipses injected into an image; lengths are fractions of the image side."""

    min_count: int = 1
    max_count: int = 3
    min_radius: float = 0.04
    max_radius: float = 0.15
    min_center: float = 0.1
    max_center: float = 0.9


def pixel_grid(size: int, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """Pixel-centre coordinates in [0, 1]: ``(ys, xs)`` of shape (size, size)."""
    coords = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size
    return torch.meshgrid(coords, coords, indexing="ij")


def sample_factors(n: int, generator: torch.Generator) -> dict[str, Tensor]:
    """Draw ``n`` dSprites latent factor indices (shape, scale, orientation, pos_x, pos_y)."""
    def draw(high: int) -> Tensor:
        return torch.randint(0, high, (n,), generator=generator)

    return {
        "shape": draw(len(SHAPES)),
        "scale": draw(N_SCALES),
        "orientation": draw(N_ORIENTATIONS),
        "pos_x": draw(N_POSITIONS),
        "pos_y": draw(N_POSITIONS),
    }


def shape_masks(factors: dict[str, Tensor], style: SpriteStyle) -> Tensor:
    """Binary sprite silhouettes, (N, H, W) bool, from factor indices."""
    ys, xs = pixel_grid(style.image_size)
    scale = 0.5 + 0.5 * factors["scale"].float() / (N_SCALES - 1)
    theta = 2 * math.pi * factors["orientation"].float() / (N_ORIENTATIONS - 1)
    span = 1 - 2 * style.position_margin
    cx = style.position_margin + span * factors["pos_x"].float() / (N_POSITIONS - 1)
    cy = style.position_margin + span * factors["pos_y"].float() / (N_POSITIONS - 1)
    radius = (style.sprite_extent * scale)[:, None, None]
    dx = (xs[None] - cx[:, None, None]) / radius
    dy = (ys[None] - cy[:, None, None]) / radius
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    u = cos * dx + sin * dy
    v = -sin * dx + cos * dy
    square = torch.maximum(u.abs(), v.abs()) <= 0.8
    ellipse = u.square() + (v / 0.5).square() <= 1.0
    hx, hy = 1.1 * u, -1.1 * v + 0.15  # classic implicit heart, y pointing up
    heart = (hx.square() + hy.square() - 1) ** 3 - hx.square() * hy**3 <= 0
    shape = factors["shape"][:, None, None]
    return torch.where(shape == 0, square, torch.where(shape == 1, ellipse, heart))


def render_sprites(
    factors: dict[str, Tensor], style: SpriteStyle, generator: torch.Generator
) -> Tensor:
    """Sprites on random coloured backgrounds, float (N, 3, H, W) in [0, 1]."""
    n = factors["shape"].shape[0]
    low, high = style.background_low, style.background_high
    background = low + (high - low) * torch.rand(n, 3, 1, 1, generator=generator)
    foreground = torch.tensor(style.foreground, dtype=torch.float32).view(1, 3, 1, 1)
    silhouettes = shape_masks(factors, style)[:, None]
    size = style.image_size
    return torch.where(silhouettes, foreground, background.expand(n, 3, size, size))


def inject_ellipses(
    images: Tensor, anomaly: EllipseAnomaly, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Paint 1..max_count random ellipses of random size, angle and colour on each image.

    Returns the anomalous images and the masks (N, 1, H, W) of exactly the painted pixels.
    """
    n, _, size, _ = images.shape
    k = anomaly.max_count
    ys, xs = pixel_grid(size)

    def uniform(lo: float, hi: float, *shape: int) -> Tensor:
        return lo + (hi - lo) * torch.rand(*shape, generator=generator)

    count = torch.randint(anomaly.min_count, anomaly.max_count + 1, (n,), generator=generator)
    active = torch.arange(k)[None] < count[:, None]  # (N, K)
    cx, cy = uniform(anomaly.min_center, anomaly.max_center, 2, n, k)
    ra, rb = uniform(anomaly.min_radius, anomaly.max_radius, 2, n, k)
    theta = uniform(0.0, math.pi, n, k)
    colour = torch.rand(n, k, 3, generator=generator)

    out = images.clone()
    mask = torch.zeros(n, 1, size, size, dtype=torch.bool)
    for j in range(k):
        dx = xs[None] - cx[:, j, None, None]
        dy = ys[None] - cy[:, j, None, None]
        cos, sin = torch.cos(theta[:, j])[:, None, None], torch.sin(theta[:, j])[:, None, None]
        u = (cos * dx + sin * dy) / ra[:, j, None, None]
        v = (-sin * dx + cos * dy) / rb[:, j, None, None]
        inside = ((u.square() + v.square()) <= 1.0) & active[:, j, None, None]
        inside = inside[:, None]
        out = torch.where(inside, colour[:, j, :, None, None], out)
        mask |= inside
    return out, mask


def to_uint8(images: Tensor) -> Tensor:
    """Quantise float images in [0, 1] to uint8."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)
