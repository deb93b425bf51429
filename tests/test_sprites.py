"""The sprite datamodule: determinism, split contents, exact masks, config validation."""

from __future__ import annotations

import pytest
import torch

from anomalib_lite.data.sprites import SpritesDataModule, split_generator
from anomalib_lite.data.sprites_render import (
    N_ORIENTATIONS,
    N_POSITIONS,
    N_SCALES,
    SHAPES,
    EllipseAnomaly,
    SpriteStyle,
    inject_ellipses,
    render_sprites,
    sample_factors,
    shape_masks,
)
from anomalib_lite.utils.checks import ConfigError

SMALL = dict(n_train=16, n_val=8, n_test_normal=10, n_test_anomalous=12, image_size=32)


def test_same_seed_same_pixels_other_seed_other_pixels():
    a = SpritesDataModule(seed=3, **SMALL).make_dataset("test")
    b = SpritesDataModule(seed=3, **SMALL).make_dataset("test")
    c = SpritesDataModule(seed=4, **SMALL).make_dataset("test")
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.images, c.images)


def test_splits_are_independent_streams():
    dm = SpritesDataModule(seed=0, **{**SMALL, "n_train": 8, "n_val": 8})
    assert not torch.equal(dm.make_dataset("train").images, dm.make_dataset("val").images)


def test_split_contents_and_shapes():
    dm = SpritesDataModule(seed=1, **SMALL)
    dm.setup("fit")
    dm.setup("test")
    train, val, test = (dm.datasets[s] for s in ("train", "val", "test"))
    assert len(train) == 16 and len(val) == 8 and len(test) == 22
    assert train.labels.sum() == 0 and val.labels.sum() == 0
    assert train.masks.sum() == 0 and val.masks.sum() == 0
    assert test.labels.tolist() == [0] * 10 + [1] * 12
    assert set(test.defect_types) == {"good", "ellipse"}
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (22, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["image"].min() >= 0.0 and batch["image"].max() <= 1.0
    assert batch["mask"].shape == (22, 1, 32, 32)
    # every anomalous image carries a non-empty mask, every normal one an empty mask
    per_image = batch["mask"].flatten(1).sum(1)
    assert (per_image[batch["label"] == 1] > 0).all()
    assert (per_image[batch["label"] == 0] == 0).all()


def test_masks_cover_exactly_the_injected_pixels():
    style, anomaly = SpriteStyle(image_size=48), EllipseAnomaly(min_count=1, max_count=3)
    gen = torch.Generator().manual_seed(7)
    clean = render_sprites(sample_factors(64, gen), style, gen)
    dirty, mask = inject_ellipses(clean, anomaly, gen)
    changed = (dirty != clean).any(dim=1, keepdim=True)
    # random colours never equal the pixel underneath exactly: changed pixels == mask
    assert torch.equal(changed, mask)
    assert mask.any(dim=(1, 2, 3)).all()


def test_anomaly_count_and_size_follow_the_config():
    style = SpriteStyle(image_size=64, background_low=0.5, background_high=0.5)
    big = EllipseAnomaly(min_count=3, max_count=3, min_radius=0.2, max_radius=0.25)
    small = EllipseAnomaly(min_count=1, max_count=1, min_radius=0.02, max_radius=0.03)
    gen = torch.Generator().manual_seed(0)
    clean = render_sprites(sample_factors(32, gen), style, gen)
    _, big_mask = inject_ellipses(clean, big, gen)
    _, small_mask = inject_ellipses(clean, small, gen)
    assert big_mask.float().mean() > 10 * small_mask.float().mean()


def test_factors_cover_dsprites_ranges():
    factors = sample_factors(20000, torch.Generator().manual_seed(0))
    expected = {"shape": len(SHAPES), "scale": N_SCALES, "orientation": N_ORIENTATIONS,
                "pos_x": N_POSITIONS, "pos_y": N_POSITIONS}
    for key, n in expected.items():
        assert set(factors[key].unique().tolist()) == set(range(n)), key


def test_each_shape_renders_a_distinct_silhouette():
    n = len(SHAPES)
    factors = {"shape": torch.arange(n), "scale": torch.full((n,), 5),
               "orientation": torch.zeros(n, dtype=torch.long),
               "pos_x": torch.full((n,), 16), "pos_y": torch.full((n,), 16)}
    masks = shape_masks(factors, SpriteStyle(image_size=64))
    areas = masks.flatten(1).sum(1)
    assert (areas > 50).all()
    assert len({tuple(m.flatten().tolist()) for m in masks}) == n


def test_split_generator_is_deterministic():
    a = torch.rand(4, generator=split_generator(5, "train"))
    b = torch.rand(4, generator=split_generator(5, "train"))
    assert torch.equal(a, b)


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"n_train": -5}, "data.n_train"),
    ({"image_size": 0}, "data.image_size"),
    ({"batch_size": 0}, "data.batch_size"),
    ({"background": [0.8, 0.2]}, "data.background"),
    ({"anomaly": {"min_count": 2, "max_count": 1}}, "data.anomaly.max_count"),
    ({"anomaly": {"radius": 0.1}}, "data.anomaly"),
])
def test_bad_values_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        SpritesDataModule(**kwargs)
