"""Synthetic anomalies for training on normal images only (DRAEM-style, no downloads).

A Perlin-noise field, thresholded, gives each image an irregular blob mask; inside the
mask the image is blended with foreign content:

- ``self``: the image itself, shifted, flipped/rotated and recoloured;
- ``batch``: another image of the batch, transformed the same way;
- ``texture``: a random coloured Perlin texture (a stand-in for DRAEM's DTD textures);
- ``noise``: uniform colour noise.

``out = x * (1 - m) + (beta * x + (1 - beta) * source) * m`` with the opacity ``beta``
drawn per image, so the content changes only inside the mask ``m``. Everything runs on
the batch tensor in torch, driven by an explicit ``torch.Generator`` (same seed, same
anomalies), so any datamodule gets it in ``training_step`` for free.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from anomalib_lite.utils import checks

SOURCES = ("self", "batch", "texture", "noise")


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


def perlin_noise(height: int, width: int, res: tuple[int, int],
                 generator: torch.Generator | None = None) -> Tensor:
    """One 2-D Perlin noise field (height, width) with ``res`` gradient cells per axis.

    Values lie in about [-1, 1] (scaled by sqrt 2 as in DRAEM); the smooth fade
    ``6t^5 - 15t^4 + 10t^3`` interpolates the dot products of the random unit gradients at
    the four cell corners.
    """
    ry, rx = res
    angles = 2 * math.pi * torch.rand(ry + 1, rx + 1, generator=generator)
    grads = torch.stack([angles.cos(), angles.sin()], dim=-1)
    y = torch.arange(height, dtype=torch.float32) * ry / height
    x = torch.arange(width, dtype=torch.float32) * rx / width
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    y0, x0 = yy.floor().long(), xx.floor().long()
    fy, fx = yy - y0, xx - x0

    def corner(dy: int, dx: int) -> Tensor:
        g = grads[y0 + dy, x0 + dx]
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    def fade(t: Tensor) -> Tensor:
        return t * t * t * (t * (t * 6 - 15) + 10)

    uy, ux = fade(fy), fade(fx)
    top = corner(0, 0) + ux * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + ux * (corner(1, 1) - corner(1, 0))
    return math.sqrt(2) * (top + uy * (bottom - top))


def perlin_masks(n: int, height: int, width: int, min_scale: int = 0, max_scale: int = 5,
                 threshold: float = 0.5, min_fraction: float = 0.005,
                 generator: torch.Generator | None = None) -> Tensor:
    """``n`` binary masks (n, 1, H, W) from Perlin noise thresholded at ``threshold``.

    Each axis gets ``2**k`` cells, ``k`` uniform in ``[min_scale, max_scale]`` (DRAEM's
    recipe), and the field is randomly transposed/flipped. Every mask covers at least
    ``min_fraction`` of the image: a field too flat to cross the threshold is cut at its
    own ``1 - min_fraction`` quantile instead, so no mask is empty.
    """
    masks = torch.zeros(n, 1, height, width)
    scales = torch.randint(min_scale, max_scale + 1, (n, 2), generator=generator)
    flips = torch.randint(0, 2, (n, 2), generator=generator)
    for i in range(n):
        field = perlin_noise(height, width, (2 ** int(scales[i, 0]), 2 ** int(scales[i, 1])),
                             generator)
        if flips[i, 0]:
            field = field.flip(0)
        if flips[i, 1]:
            field = field.flip(1)
        cut = min(threshold, float(torch.quantile(field.flatten(), 1.0 - min_fraction)))
        masks[i, 0] = (field >= cut).float()
    return masks


def _recolour(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Per-image brightness, contrast and a random channel permutation (hue-like shift)."""
    n, c = x.shape[:2]
    gain = _uniform(n, 0.6, 1.4, generator).view(n, 1, 1, 1)
    bias = _uniform(n, -0.2, 0.2, generator).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * gain + mean + bias).clamp(0, 1)
    perms = torch.stack([torch.randperm(c, generator=generator) for _ in range(n)])
    return torch.stack([x[i, perms[i]] for i in range(n)])


def _displace(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Per-image cyclic shift, flips and (square images) a 90-degree rotation."""
    n, _, h, w = x.shape
    shifts = torch.stack([torch.randint(h // 8, max(h // 8 + 1, h - h // 8), (n,),
                                        generator=generator),
                          torch.randint(w // 8, max(w // 8 + 1, w - w // 8), (n,),
                                        generator=generator)], dim=1)
    ops = torch.randint(0, 4, (n,), generator=generator)
    out = []
    for i in range(n):
        y = x[i].roll((int(shifts[i, 0]), int(shifts[i, 1])), dims=(1, 2))
        if h == w and ops[i] > 0:
            y = y.rot90(int(ops[i]), dims=(1, 2))
        out.append(y)
    return torch.stack(out)


def _textures(n: int, channels: int, height: int, width: int,
              generator: torch.Generator | None) -> Tensor:
    """Random coloured Perlin textures in [0, 1]: two octaves per channel, min-max scaled."""
    out = torch.empty(n, channels, height, width)
    scales = torch.randint(2, 5, (n,), generator=generator)
    for i in range(n):
        res = 2 ** int(scales[i])
        for ch in range(channels):
            t = perlin_noise(height, width, (res, res), generator) + 0.5 * perlin_noise(
                height, width, (2 * res, 2 * res), generator)
            out[i, ch] = (t - t.min()) / (t.max() - t.min()).clamp_min(1e-6)
    return out


class SyntheticAnomalies(nn.Module):
    """Callable anomaly generator: ``(images, generator) -> (corrupted, masks)``.

    ``probability``: fraction of images that get an anomaly (the rest pass unchanged with
    an all-zero mask). ``beta``: range of the opacity of the original image inside the
    mask (0 = fully replaced). ``sources``: relative weights of the content sources.
    ``min_scale``/``max_scale``/``threshold``: the Perlin mask recipe (see
    :func:`perlin_masks`). No parameters: it is an ``nn.Module`` only so that it is
    allow-listed and lives on the model.
    """

    def __init__(self, probability: float = 0.5, beta: Sequence[float] = (0.0, 0.8),
                 sources: dict[str, float] | None = None, min_scale: int = 0,
                 max_scale: int = 5, threshold: float = 0.5,
                 min_fraction: float = 0.005) -> None:
        super().__init__()
        sources = dict(sources if sources is not None else {"self": 1.0, "batch": 1.0,
                                                             "texture": 1.0, "noise": 0.5})
        checks.in_range("synthesis.probability", probability, 0.0, 1.0)
        checks.require(len(beta) == 2 and 0 <= beta[0] <= beta[1] < 1, "synthesis.beta",
                       list(beta), "[low, high] with 0 <= low <= high < 1")
        checks.require(len(sources) > 0 and set(sources) <= set(SOURCES)
                       and all(w >= 0 for w in sources.values())
                       and sum(sources.values()) > 0, "synthesis.sources", sources,
                       f"non-negative weights for some of {list(SOURCES)}, not all zero")
        checks.require(0 <= min_scale <= max_scale <= 8, "synthesis.min_scale/max_scale",
                       [min_scale, max_scale], "0 <= min_scale <= max_scale <= 8")
        checks.in_range("synthesis.min_fraction", min_fraction, 1e-6, 1.0)
        self.probability = float(probability)
        self.beta = (float(beta[0]), float(beta[1]))
        self.source_names = list(sources)
        self.source_weights = torch.tensor([float(sources[s]) for s in self.source_names])
        self.mask_kwargs = {"min_scale": min_scale, "max_scale": max_scale,
                            "threshold": threshold, "min_fraction": min_fraction}

    def sources(self, images: Tensor, kinds: Tensor,
                generator: torch.Generator | None) -> Tensor:
        """Foreign content for each image; ``kinds`` indexes ``self.source_names``."""
        n, c, h, w = images.shape
        others = images[torch.randperm(n, generator=generator)]
        candidates = {
            "self": lambda idx: _recolour(_displace(images[idx], generator), generator),
            "batch": lambda idx: _recolour(_displace(others[idx], generator), generator),
            "texture": lambda idx: _textures(len(idx), c, h, w, generator),
            "noise": lambda idx: torch.rand(len(idx), c, h, w, generator=generator),
        }
        out = torch.empty_like(images)
        for k, name in enumerate(self.source_names):
            chosen = (kinds == k).nonzero().flatten()
            if len(chosen):
                out[chosen] = candidates[name](chosen)
        return out

    @torch.no_grad()
    def forward(self, images: Tensor, generator: torch.Generator | None = None,
                probability: float | None = None) -> tuple[Tensor, Tensor]:
        """Corrupt a batch (N, C, H, W) in [0, 1]; returns ``(corrupted, masks (N, 1, H, W))``
        on the images' device and dtype. ``probability`` overrides the configured one."""
        if images.ndim != 4 or not images.is_floating_point():
            raise ValueError(f"synthetic anomalies need float images (N, C, H, W), got "
                             f"{tuple(images.shape)} {images.dtype}")
        p = self.probability if probability is None else probability
        checks.in_range("synthesis probability", p, 0.0, 1.0)
        device, dtype = images.device, images.dtype
        x = images.detach().float().cpu()
        n, _, h, w = x.shape
        masks = perlin_masks(n, h, w, generator=generator, **self.mask_kwargs)
        masks *= (torch.rand(n, generator=generator) < p).float().view(n, 1, 1, 1)
        kinds = torch.multinomial(self.source_weights, n, replacement=True,
                                  generator=generator)
        source = self.sources(x, kinds, generator)
        beta = _uniform(n, *self.beta, generator).view(n, 1, 1, 1)
        corrupted = x * (1 - masks) + (beta * x + (1 - beta) * source) * masks
        return corrupted.to(device, dtype), masks.to(device, dtype)
