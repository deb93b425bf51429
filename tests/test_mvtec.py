"""MVTec AD datamodule and image loading: splits, labels, masks, modes, errors, configs."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import box_mask, make_mvtec, write_image
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from anomalib_lite.data import MVTEC_CATEGORIES, MVTecDataModule
from anomalib_lite.data.file_datamodule import DatasetLayoutError
from anomalib_lite.data.image_io import ImageLoadError, load_image, load_mask
from anomalib_lite.train import CONFIG_DIR
from anomalib_lite.utils.checks import ConfigError

SIZE = 32
REAL_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "mvtec"


def setup_dm(root: Path, **kwargs) -> MVTecDataModule:
    dm = MVTecDataModule(root, "bottle", **{"image_size": SIZE, **kwargs})
    dm.setup("fit")
    return dm


def all_samples(dm: MVTecDataModule, split: str) -> list[dict]:
    return [dm.datasets[split][i] for i in range(len(dm.datasets[split]))]


def split_names(dm: MVTecDataModule, split: str) -> list[str]:
    return [Path(p).name for p in dm.datasets[split].paths]


# ---------------------------------------------------------------- splits and contents


def test_split_sizes_and_determinism(mvtec_root: Path):
    dm = setup_dm(mvtec_root, val_fraction=0.2)
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 5, "val": 1, "test": 4}
    train, val = split_names(dm, "train"), split_names(dm, "val")
    assert sorted(train + val) == [f"{i:03d}.png" for i in range(6)]
    assert split_names(setup_dm(mvtec_root, val_fraction=0.2), "val") == val
    vals = {tuple(split_names(setup_dm(mvtec_root, val_fraction=0.3, split_seed=s), "val"))
            for s in range(6)}
    assert len(vals) > 1  # other seeds, other splits
    assert len(setup_dm(mvtec_root, val_fraction=0.01).datasets["val"]) == 1  # at least one


def test_labels_defect_types_and_masks(mvtec_root: Path):
    dm = setup_dm(mvtec_root)
    samples = all_samples(dm, "test")
    assert [int(s["label"]) for s in samples] == [0, 0, 1, 1]
    assert [s["defect_type"] for s in samples] == ["good", "good", "crack", "crack"]
    for s in samples[:2]:
        assert s["mask"].shape == (1, SIZE, SIZE) and not s["mask"].any()
    for i, s in enumerate(samples[2:]):
        resized = Image.fromarray(box_mask(i)).resize((SIZE, SIZE), Image.Resampling.NEAREST)
        expected = torch.from_numpy(np.asarray(resized) > 0).float()[None]
        assert s["mask"].dtype == torch.float32 and torch.equal(s["mask"], expected)
        assert s["mask"].any() and s["path"].endswith(f"test/crack/{i:03d}.png")
    for split in ("train", "val"):
        assert all(s["label"] == 0 and s["defect_type"] == "good" and not s["mask"].any()
                   for s in all_samples(dm, split))


def test_images_shape_dtype_range_and_loaders(mvtec_root: Path):
    dm = setup_dm(mvtec_root, batch_size=2, eval_batch_size=3)
    assert dm.num_channels == 3
    for split in ("train", "val", "test"):
        for s in all_samples(dm, split):
            assert s["image"].shape == (3, SIZE, SIZE) and s["image"].dtype == torch.float32
            assert s["image"].min() >= 0 and s["image"].max() <= 1
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, SIZE, SIZE) and batch["label"].dtype == torch.long
    test_batch = next(iter(dm.test_dataloader()))
    assert test_batch["mask"].shape == (3, 1, SIZE, SIZE) and len(test_batch["path"]) == 3
    assert len(next(iter(dm.val_dataloader()))["image"]) == 1


def test_setup_stage_decodes_only_what_it_needs(mvtec_root: Path):
    dm = MVTecDataModule(mvtec_root, "bottle", image_size=SIZE)
    dm.setup("test")
    assert set(dm.datasets) == {"test"}


# ---------------------------------------------------------------- image loading


@pytest.mark.parametrize("mode", ["L", "RGBA", "LA", "P", "1", "CMYK"])
def test_load_image_converts_modes_to_rgb(tmp_path: Path, mode: str):
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    write_image(path, 0, mode)
    image = load_image(path, SIZE)
    assert image.shape == (3, SIZE, SIZE) and image.dtype == torch.float32
    assert image.min() >= 0 and image.max() <= 1 and image.std() > 0.05
    if mode in ("L", "LA", "1"):
        assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])


def test_grayscale_is_replicated_and_16_bit_is_scaled(tmp_path: Path):
    gray = np.random.default_rng(0).integers(0, 256, (40, 40), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "8.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "16.png")
    eight, sixteen = load_image(tmp_path / "8.png", 40), load_image(tmp_path / "16.png", 40)
    assert torch.equal(eight[0], torch.from_numpy(gray).float() / 255)
    assert torch.equal(eight, sixteen)
    assert load_image(tmp_path / "8.png", 40, channels=1).shape == (1, 40, 40)


def test_rgba_alpha_is_composited_onto_black(tmp_path: Path):
    rgba = np.full((8, 8, 4), 255, dtype=np.uint8)
    rgba[:4, :, 3] = 0  # top half transparent
    Image.fromarray(rgba).save(tmp_path / "a.png")
    image = load_image(tmp_path / "a.png", 8)
    assert not image[:, :4].any() and bool((image[:, 4:] == 1).all())


def test_load_mask_binarises_any_nonzero_value(tmp_path: Path):
    mask = np.zeros((40, 40), dtype=np.uint8)
    mask[:10, :10], mask[30:, 30:] = 1, 200
    Image.fromarray(mask).save(tmp_path / "m.png")
    loaded = load_mask(tmp_path / "m.png", 8)
    assert loaded.shape == (1, 8, 8) and set(loaded.unique().tolist()) == {0.0, 1.0}
    assert loaded[0, 0, 0] == 1 and loaded[0, 7, 7] == 1 and loaded[0, 4, 0] == 0


def test_corrupt_and_truncated_files_are_named(tmp_path: Path):
    (tmp_path / "garbage.png").write_bytes(b"not a png" * 20)
    write_image(tmp_path / "full.png", 0)
    (tmp_path / "cut.png").write_bytes((tmp_path / "full.png").read_bytes()[:200])
    for name in ("garbage.png", "cut.png", "missing.png"):
        with pytest.raises(ImageLoadError, match=f"cannot read image .*{name}"):
            load_image(tmp_path / name, SIZE)


def test_decompression_bomb_is_refused_by_name(tmp_path: Path, monkeypatch):
    write_image(tmp_path / "big.png", 0)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40 x 40 = 1600 pixels
    with pytest.raises(ImageLoadError, match=r"big\.png.*DecompressionBomb"):
        load_image(tmp_path / "big.png", SIZE)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageLoadError, match="DecompressionBombError"):
        load_mask(tmp_path / "big.png", SIZE)


# ---------------------------------------------------------------- errors


def test_missing_root_shows_layout_url_and_how_to_set_it(tmp_path: Path):
    with pytest.raises(DatasetLayoutError) as err:
        MVTecDataModule(tmp_path / "nowhere", "bottle")
    message = str(err.value)
    assert "nowhere" in message and "ground_truth/<defect_type>/<stem>_mask.png" in message
    assert "https://www.mvtec.com/company/research/datasets/mvtec-ad" in message
    assert "data.root=<path>" in message and "MVTEC_ROOT" in message
    with pytest.raises(ConfigError, match=r"(?s)data.root is not set.*data.root=<path>.*MVTEC"):
        MVTecDataModule(None, "bottle")


def test_missing_category_dir_lists_present_ones(mvtec_root: Path):
    with pytest.raises(DatasetLayoutError, match=r"(?s)grid not found.*\['bottle'\].*mvtec-ad"):
        MVTecDataModule(mvtec_root, "grid")


def test_unknown_category_lists_valid_ones(mvtec_root: Path):
    with pytest.raises(ConfigError, match=r"data.category='bottel'.*'bottle'.*'zipper'"):
        MVTecDataModule(mvtec_root, "bottel")


def test_missing_mask_names_image_and_expected_path(mvtec_root: Path):
    (mvtec_root / "bottle" / "ground_truth" / "crack" / "001_mask.png").unlink()
    with pytest.raises(DatasetLayoutError,
                       match=r"(?s)1 anomalous image.*test/crack/001.png.*crack/001_mask.png"):
        setup_dm(mvtec_root)


def test_corrupt_image_is_named(mvtec_root: Path):
    (mvtec_root / "bottle" / "test" / "crack" / "000.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(ImageLoadError, match=r"cannot read image .*test/crack/000.png"):
        setup_dm(mvtec_root)


def test_empty_splits_are_named(mvtec_root: Path):
    test_dir = mvtec_root / "bottle" / "test" / "crack"
    for f in test_dir.iterdir():
        f.unlink()
    with pytest.raises(DatasetLayoutError, match="empty test split: no defect images"):
        setup_dm(mvtec_root)
    for f in (mvtec_root / "bottle" / "train" / "good").iterdir():
        f.unlink()
    with pytest.raises(DatasetLayoutError, match=r"empty train split: no images .*train/good"):
        setup_dm(mvtec_root)


def test_too_few_train_images_for_a_val_split(tmp_path: Path):
    root = make_mvtec(tmp_path, n_train=2)
    for f in sorted((root / "bottle" / "train" / "good").iterdir())[1:]:
        f.unlink()
    with pytest.raises(DatasetLayoutError, match=r"train/good has 1 image"):
        setup_dm(root)


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("image_size", "big", r"positive integer \(a square\) or \[height, width\]"),
    ("image_size", 0, "positive integer"),
    ("val_fraction", 1.0, "strictly between 0 and 1"),
    ("val_fraction", 0, "strictly between 0 and 1"),
    ("split_seed", -1, "integer >= 0"),
    ("batch_size", 2.5, "positive integer"),
])
def test_invalid_settings_name_the_key(mvtec_root: Path, key: str, value, expected: str):
    with pytest.raises(ConfigError, match=f"data.{key}={value!r} is invalid.*{expected}"):
        MVTecDataModule(mvtec_root, "bottle", **{key: value})


# ---------------------------------------------------------------- Hydra configs


def compose_data(*overrides: str):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return [compose(config_name="train", overrides=[o]).data for o in overrides]


def test_compose_bottle_with_root_instantiates(mvtec_root: Path):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["data=bottle", f"data.root={mvtec_root}"])
    assert cfg.data.category == "bottle"
    assert cfg.data._target_ == "anomalib_lite.data.MVTecDataModule"
    dm = instantiate(cfg.data, image_size=SIZE)
    dm.setup("test")
    assert isinstance(dm, MVTecDataModule) and len(dm.datasets["test"]) == 4
    params = set(inspect.signature(MVTecDataModule).parameters)
    assert set(cfg.data) - {"_target_"} == params


def test_every_category_config_composes():
    configs = compose_data(*(f"data={c}" for c in MVTEC_CATEGORIES))
    assert [c.category for c in configs] == list(MVTEC_CATEGORIES)
    assert {c._target_ for c in configs} == {"anomalib_lite.data.MVTecDataModule"}
    assert {c.image_size for c in configs} == {128}


def test_root_from_env_or_error_naming_how_to_set_it(mvtec_root: Path, monkeypatch):
    monkeypatch.delenv("MVTEC_ROOT", raising=False)
    (cfg,) = compose_data("data=bottle")
    assert cfg.root is None
    with pytest.raises(Exception, match=r"(?s)data.root=<path>.*MVTEC_ROOT"):
        instantiate(cfg)
    monkeypatch.setenv("MVTEC_ROOT", str(mvtec_root))
    (cfg,) = compose_data("data=bottle")
    assert cfg.root == str(mvtec_root)


# ---------------------------------------------------------------- real data


@pytest.mark.skipif(not (REAL_ROOT / "bottle").is_dir(), reason="no MVTec AD copy on this machine")
def test_real_bottle_counts():
    dm = MVTecDataModule(REAL_ROOT, "bottle", image_size=64)
    dm.setup("fit")
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 209
    test = dm.datasets["test"]
    assert int((test.labels == 0).sum()) == 20 and int((test.labels == 1).sum()) == 63
    anomalous = test.labels == 1
    assert bool(test.masks[anomalous].flatten(1).any(dim=1).all())
    assert not test.masks[~anomalous].any()
    assert set(test.defect_types) == {"good", "broken_large", "broken_small", "contamination"}
