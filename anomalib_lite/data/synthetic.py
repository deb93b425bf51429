"""Synthetic anomalies for training on normal images only (DRAEM-style, no downloads).

A Perlin-noise field, thresholded, gives each image an irregular blob mask; inside the
mask the image is blended with foreign content:

- ``self``: the image itself, shifted, flipped/rotated and recoloured;
- ``batch``: another image of the batch, transformed the same way;
- ``texture``: a random coloured Perlin texture;
- ``noise``: uniform colour noise;
- ``natural``: a crop of a real texture photograph, scaled, turned and tinted (DRAEM's
  natural textures; :mod:`anomalib_lite.data.anomaly_sources`);
- ``patch``: another normal image of the batch rescaled 0.5-2x and shifted (NSA).

``out = x * (1 - m) + (beta * x + (1 - beta) * source) * m`` with the opacity ``beta``
drawn per image, so the content changes only inside the mask ``m``; with
``blend="poisson"`` the source is first blended seamlessly (gradient domain) into the
image. With ``foreground=True`` masks are cut to the object (images of an object on a
uniform background; textures are left whole), so anomalies land on the object. Everything runs on
the batch tensor, on its device and batched (no per-image Python loop, no copy to the
host), driven by an explicit ``torch.Generator`` (same seed, same anomalies), so any
datamodule gets it in ``training_step`` for free.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from anomalib_lite.data.anomaly_sources import (
    natural_textures,
    object_foreground,
    rescaled_patches,
    seamless_blend,
)
from anomalib_lite.utils import checks

SOURCES = ("self", "batch", "texture", "noise", "natural", "patch")
BLENDS = ("alpha", "poisson")


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None,
             device: torch.device | str = "cpu") -> Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def _fade(t: Tensor) -> Tensor:
    return t * t * t * (t * (t * 6 - 15) + 10)


def _lerp_weights(coordinate: Tensor, cells: int, times_offset: bool) -> Tensor:
    """(n, L, cells + 1): for each pixel, the fade-interpolation weight of the two corners
    of its cell (optionally times the pixel's offset from that corner); zero elsewhere."""
    start = coordinate.floor().long().clamp(max=cells - 1)
    f = coordinate - start
    u = _fade(f)
    near, far = 1 - u, u
    if times_offset:
        near, far = near * f, far * (f - 1)
    weights = torch.zeros(*coordinate.shape, cells + 1, device=coordinate.device)
    weights.scatter_(2, start[..., None], near[..., None])
    return weights.scatter_(2, start[..., None] + 1, far[..., None])


def perlin_fields(angles: Tensor, res: Tensor, height: int, width: int) -> Tensor:
    """Perlin noise fields (n, height, width), one per image, all at once.

    ``angles`` (n, Ry + 1, Rx + 1): the gradient directions at the cell corners (only the
    first ``res[i] + 1`` rows and columns of image ``i`` are used); ``res`` (n, 2): the
    cells per axis of each image. Values lie in about [-1, 1] (scaled by sqrt 2 as in
    DRAEM). Perlin noise sums, over the four corners of a pixel's cell, the dot product of
    the corner's unit gradient with the pixel's offset, weighted by the fade
    ``6t^5 - 15t^4 + 10t^3`` of the offset along each axis. Those weights factor by axis,
    so each field is two small matrix products:
    ``rows(offset) @ cos @ cols^T + rows @ sin @ cols(offset)^T``.
    """
    device = angles.device
    _, rows, cols = angles.shape
    res = res.to(device=device, dtype=torch.float32)
    y = torch.arange(height, device=device, dtype=torch.float32) * res[:, :1] / height
    x = torch.arange(width, device=device, dtype=torch.float32) * res[:, 1:] / width
    wy, wy_dy = _lerp_weights(y, rows - 1, False), _lerp_weights(y, rows - 1, True)
    wx, wx_dx = _lerp_weights(x, cols - 1, False), _lerp_weights(x, cols - 1, True)
    field = wy_dy @ angles.cos() @ wx.transpose(1, 2) + wy @ angles.sin() @ wx_dx.transpose(1, 2)
    return math.sqrt(2) * field


def _random_angles(res: Tensor, generator: torch.Generator | None,
                   device: torch.device | str) -> Tensor:
    """Uniform gradient angles for fields of ``res`` (n, 2) cells, on ``device``."""
    rows, cols = (int(r) + 1 for r in res.max(dim=0).values)
    return 2 * math.pi * torch.rand(len(res), rows, cols, generator=generator, device=device)


def perlin_noise(height: int, width: int, res: tuple[int, int],
                 generator: torch.Generator | None = None) -> Tensor:
    """One 2-D Perlin noise field (height, width) with ``res`` gradient cells per axis."""
    cells = torch.tensor([res])
    return perlin_fields(_random_angles(cells, generator, "cpu"), cells, height, width)[0]


def perlin_masks(n: int, height: int, width: int, min_scale: int = 0, max_scale: int = 5,
                 threshold: float = 0.5, min_fraction: float = 0.005,
                 generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> Tensor:
    """``n`` binary masks (n, 1, H, W) from Perlin noise thresholded at ``threshold``.

    Each axis gets ``2**k`` cells, ``k`` uniform in ``[min_scale, max_scale]`` (DRAEM's
    recipe), and the field is randomly flipped. Every mask covers at least
    ``min_fraction`` of the image: a field too flat to cross the threshold is cut at its
    own ``1 - min_fraction`` quantile instead, so no mask is empty. ``generator`` must live
    on ``device``.
    """
    scales = torch.randint(min_scale, max_scale + 1, (n, 2), generator=generator,
                           device=device)
    flips = torch.randint(0, 2, (n, 2), generator=generator, device=device).bool()
    res = 2 ** scales
    fields = perlin_fields(_random_angles(res, generator, device), res, height, width)
    fields = torch.where(flips[:, :1, None], fields.flip(1), fields)
    fields = torch.where(flips[:, 1:, None], fields.flip(2), fields)
    quantiles = torch.quantile(fields.flatten(1), 1.0 - min_fraction, dim=1)
    cut = quantiles.clamp(max=threshold).view(n, 1, 1)
    return (fields >= cut).float().unsqueeze(1)


def _recolour(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Per-image brightness, contrast and a random channel permutation (hue-like shift)."""
    n, c = x.shape[:2]
    gain = _uniform(n, 0.6, 1.4, generator, x.device).view(n, 1, 1, 1)
    bias = _uniform(n, -0.2, 0.2, generator, x.device).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * gain + mean + bias).clamp(0, 1)
    perms = torch.rand(n, c, generator=generator, device=x.device).argsort(dim=1)
    return x.gather(1, perms.view(n, c, 1, 1).expand_as(x))


def displace(x: Tensor, shift_y: Tensor, shift_x: Tensor, turns: Tensor) -> Tensor:
    """Each image rolled by ``(shift_y, shift_x)`` pixels, then rotated by ``turns`` x 90
    degrees (``torch.rot90`` over (H, W); square images only when turning), as one gather."""
    n, c, h, w = x.shape
    device = x.device
    i = torch.arange(h, device=device).view(1, h, 1)
    j = torch.arange(w, device=device).view(1, 1, w)
    k = turns.view(n, 1, 1)
    # torch.rot90(y, k, dims=(1, 2))[i, j] = y[src_i, src_j]
    src_i = torch.where(k == 0, i, torch.where(k == 1, j, torch.where(k == 2, h - 1 - i,
                                                                       w - 1 - j)))
    src_j = torch.where(k == 0, j, torch.where(k == 1, h - 1 - i, torch.where(k == 2,
                                                                             w - 1 - j, i)))
    # y = x rolled by (shift_y, shift_x): y[a, b] = x[a - shift_y, b - shift_x]
    src_i = (src_i - shift_y.view(n, 1, 1)) % h
    src_j = (src_j - shift_x.view(n, 1, 1)) % w
    flat = (src_i * w + src_j).view(n, 1, h * w).expand(n, c, h * w)
    return x.flatten(2).gather(2, flat).view(n, c, h, w)


def _displace(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """A random cyclic shift (1/8 to 7/8 of each side) and, for square images, a random
    rotation by 0, 90, 180 or 270 degrees per image."""
    n, _, h, w = x.shape
    device = x.device
    shift_y = torch.randint(h // 8, max(h // 8 + 1, h - h // 8), (n,), generator=generator,
                            device=device)
    shift_x = torch.randint(w // 8, max(w // 8 + 1, w - w // 8), (n,), generator=generator,
                            device=device)
    turns = torch.randint(0, 4, (n,), generator=generator, device=device)
    return displace(x, shift_y, shift_x, turns if h == w else torch.zeros_like(turns))


def _textures(n: int, channels: int, height: int, width: int,
              generator: torch.Generator | None, device: torch.device | str = "cpu") -> Tensor:
    """Random coloured Perlin textures in [0, 1]: two octaves per channel, min-max scaled."""
    scales = torch.randint(2, 5, (n,), generator=generator, device=device)
    res = (2 ** scales).repeat_interleave(channels).view(-1, 1).expand(-1, 2)
    base = perlin_fields(_random_angles(res, generator, device), res, height, width)
    fine = perlin_fields(_random_angles(2 * res, generator, device), 2 * res, height, width)
    t = (base + 0.5 * fine).flatten(1)
    low, high = t.amin(dim=1, keepdim=True), t.amax(dim=1, keepdim=True)
    return ((t - low) / (high - low).clamp_min(1e-6)).view(n, channels, height, width)


class SyntheticAnomalies(nn.Module):
    """Callable anomaly generator: ``(images, generator) -> (corrupted, masks)``.

    ``probability``: fraction of images that get an anomaly (the rest pass unchanged with
    an all-zero mask). ``beta``: range of the opacity of the original image inside the
    mask (0 = fully replaced). ``sources``: relative weights of the content sources.
    ``min_scale``/``max_scale``/``threshold``: the Perlin mask recipe (see
    :func:`perlin_masks`). ``blend``: ``alpha`` or ``poisson`` (seamless). ``foreground``:
    masks only on the object. No parameters: it is an ``nn.Module`` only so that it is
    allow-listed and lives on the model.
    """

    def __init__(self, probability: float = 0.5, beta: Sequence[float] = (0.0, 0.8),
                 sources: dict[str, float] | None = None, min_scale: int = 0,
                 max_scale: int = 5, threshold: float = 0.5,
                 min_fraction: float = 0.005, blend: str = "alpha",
                 foreground: bool = False) -> None:
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
        self.blend = checks.one_of("synthesis.blend", blend, BLENDS)
        self.foreground = bool(foreground)
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
        device = images.device
        others = images[torch.randperm(n, generator=generator, device=device)]
        candidates = {
            "self": lambda idx: _recolour(_displace(images[idx], generator), generator),
            "batch": lambda idx: _recolour(_displace(others[idx], generator), generator),
            "texture": lambda idx: _textures(len(idx), c, h, w, generator, device),
            "noise": lambda idx: torch.rand(len(idx), c, h, w, generator=generator,
                                            device=device),
            "natural": lambda idx: natural_textures(len(idx), c, h, w, generator, device),
            "patch": lambda idx: rescaled_patches(others[idx], generator),
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
        in the images' dtype. ``probability`` overrides the configured one.

        Everything is computed on the images' device, batched: ``generator`` (a CPU
        generator, as the seed's owner keeps it) seeds one generator on that device, so the
        same seed gives the same anomalies.
        """
        if images.ndim != 4 or not images.is_floating_point():
            raise ValueError(f"synthetic anomalies need float images (N, C, H, W), got "
                             f"{tuple(images.shape)} {images.dtype}")
        p = self.probability if probability is None else probability
        checks.in_range("synthesis probability", p, 0.0, 1.0)
        device, dtype = images.device, images.dtype
        seed = int(torch.randint(2**62, (1,), generator=generator))
        local = torch.Generator(device=device).manual_seed(seed)
        with torch.autocast(device_type=device.type, enabled=False):  # float32 throughout
            corrupted, masks = self._corrupt(images.detach().float(), p, local)
        return corrupted.to(dtype), masks.to(dtype)

    def _corrupt(self, x: Tensor, p: float, local: torch.Generator) -> tuple[Tensor, Tensor]:
        """``(corrupted, masks)`` of float32 images ``x``, drawn from ``local``."""
        device = x.device
        n, _, h, w = x.shape
        masks = perlin_masks(n, h, w, generator=local, device=device, **self.mask_kwargs)
        if self.foreground:  # on the object; a mask that misses it entirely is kept whole
            on_object = masks * object_foreground(x)
            hit = on_object.flatten(1).sum(1) > 0
            masks = torch.where(hit.view(n, 1, 1, 1), on_object, masks)
        masks *= (torch.rand(n, generator=local, device=device) < p).float().view(n, 1, 1, 1)
        kinds = torch.multinomial(self.source_weights.to(device), n, replacement=True,
                                  generator=local)
        source = self.sources(x, kinds, local)
        if self.blend == "poisson":
            source = seamless_blend(x, source, masks)
        beta = _uniform(n, *self.beta, local, device).view(n, 1, 1, 1)
        return x * (1 - masks) + (beta * x + (1 - beta) * source) * masks, masks
