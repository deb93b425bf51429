"""Realistic synthetic anomalies: seamless (Poisson) blending, the harmonic fill it rests
on, natural textures, rescaled patches of other images and the object's foreground."""

from __future__ import annotations

import torch

from anomalib_lite.data.anomaly_sources import (
    harmonic_fill,
    natural_textures,
    object_foreground,
    rescaled_patches,
    seamless_blend,
)
from anomalib_lite.data.synthetic import SyntheticAnomalies


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _hole(size: int = 48) -> torch.Tensor:
    known = torch.ones(1, 1, size, size)
    known[..., 8:40, 12:36] = 0
    return known


def test_harmonic_fill_solves_laplaces_equation_in_the_hole():
    yy, xx = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    linear = (0.01 * yy - 0.02 * xx + 0.3)[None, None]  # harmonic: its own fill
    known = _hole()
    torch.testing.assert_close(harmonic_fill(linear, known, 30), linear, atol=1e-4, rtol=0)
    noisy = torch.rand(1, 1, 48, 48, generator=_gen(1))
    filled = harmonic_fill(noisy, known, 60)
    assert torch.equal(filled[known.bool()], noisy[known.bool()])  # boundary kept
    inside = ~known.bool()
    padded = torch.nn.functional.pad(filled, (1, 1, 1, 1), mode="replicate")
    mean4 = (padded[..., :-2, 1:-1] + padded[..., 2:, 1:-1] + padded[..., 1:-1, :-2]
             + padded[..., 1:-1, 2:]) / 4
    assert (filled - mean4)[inside].abs().max() < 1e-3  # discrete Laplacian ~ 0 inside


def test_seamless_blend_keeps_the_source_gradients_and_meets_the_image():
    image = torch.rand(2, 3, 48, 48, generator=_gen(2)) * 0.5
    masks = 1 - _hole().expand(2, 1, 48, 48)
    # a source that is the image plus a constant has the image's gradients: nothing shows
    same_gradients = seamless_blend(image, image + 0.3, masks, sweeps=30)
    torch.testing.assert_close(same_gradients, image, atol=1e-4, rtol=0)
    coarse = torch.rand(2, 3, 4, 4, generator=_gen(3))  # smooth content, offset from the image
    source = torch.nn.functional.interpolate(coarse, size=(48, 48), mode="bilinear") + 0.4
    blended = seamless_blend(image, source, masks, sweeps=30)
    outside = masks.expand_as(image) == 0
    assert torch.equal(blended[outside], image[outside])
    # at the mask's inner edge the blend is much closer to the image than a plain paste
    edge = (masks - torch.nn.functional.avg_pool2d(masks, 3, 1, 1) > 0).expand_as(image)
    pasted = torch.where(outside, image, source)
    assert (blended - image)[edge].abs().mean() < 0.5 * (pasted - image)[edge].abs().mean()


def test_foreground_finds_an_object_on_a_uniform_background_and_spares_textures():
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 < 15**2).float()
    objects = (0.2 + 0.6 * disc).expand(1, 3, 64, 64)
    texture = torch.rand(1, 3, 64, 64, generator=_gen(4))
    found = object_foreground(torch.cat([objects, texture]))
    assert found[0, 0][disc.bool()].min() == 1  # the whole object
    assert found[0, 0][~disc.bool()].mean() < 0.1  # little background (a 2-px margin)
    assert found[1].min() == 1  # a texture is foreground everywhere


def test_anomalies_on_objects_land_on_the_object():
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    disc = ((yy - 32) ** 2 + (xx - 32) ** 2 < 18**2).float()
    images = (0.1 + 0.7 * disc).expand(16, 3, 64, 64).contiguous()
    synth = SyntheticAnomalies(probability=1.0, foreground=True, blend="poisson",
                               sources={"natural": 1.0, "patch": 1.0})
    corrupted, masks = synth(images, _gen(5))
    near_object = torch.nn.functional.max_pool2d(disc[None], 5, 1, 2)
    hits = (masks[:, 0] * disc).flatten(1).sum(1) > 0  # a mask missing the object stays whole
    assert hits.sum() >= 12 and masks.flatten(1).sum(1).min() > 0
    assert (masks[hits, 0] * (1 - near_object)).sum() == 0
    assert corrupted.min() >= 0 and corrupted.max() <= 1


def test_natural_textures_and_rescaled_patches_are_seeded_and_varied():
    a = natural_textures(6, 3, 32, 40, _gen(6), "cpu")
    assert a.shape == (6, 3, 32, 40) and a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, natural_textures(6, 3, 32, 40, _gen(6), "cpu"))
    assert a.flatten(1).std(1).min() > 0.02  # real texture, not flat colour
    others = torch.rand(4, 3, 32, 32, generator=_gen(7))
    patches = rescaled_patches(others, _gen(8))
    assert patches.shape == others.shape
    assert torch.equal(patches, rescaled_patches(others, _gen(8)))
    assert not torch.equal(patches, others)
