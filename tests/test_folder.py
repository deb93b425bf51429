"""Folder datamodule: seeded three-way split, abnormal folders, mask lookup, errors, config."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from anomalib_lite.data import FolderDataModule
from anomalib_lite.data.file_datamodule import DatasetLayoutError, UnreadableImagesError
from anomalib_lite.data.image_io import ImageLoadError
from anomalib_lite.train import CONFIG_DIR
from anomalib_lite.utils.checks import ConfigError

SIZE = 16


def write(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def random_pixels(seed: int, side: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)


def square_mask(i: int, side: int = 24) -> np.ndarray:
    mask = np.zeros((side, side), dtype=np.uint8)
    mask[i:i + 8, 2 * i:2 * i + 6] = 255
    return mask


@pytest.fixture
def dirs(tmp_path: Path) -> dict[str, Path]:
    """10 normal images (.png/.jpg, plus a non-image), 2 'crack' and 2 'hole' anomalies.

    crack masks live in ``masks/crack/<stem>_mask.png``, hole masks in ``masks/<stem>.png``.
    """
    for i in range(10):
        write(tmp_path / "good" / f"n{i}.{'jpg' if i == 9 else 'png'}", random_pixels(i))
    (tmp_path / "good" / "notes.txt").write_text("not an image")
    for i in range(2):
        write(tmp_path / "crack" / f"c{i}.png", random_pixels(100 + i))
        write(tmp_path / "masks" / "crack" / f"c{i}_mask.png", square_mask(i))
        write(tmp_path / "hole" / f"h{i}.png", random_pixels(200 + i))
        write(tmp_path / "masks" / f"h{i}.png", square_mask(i + 2))
    return {"normal_dir": tmp_path / "good", "abnormal_dirs": [tmp_path / "crack",
            tmp_path / "hole"], "mask_dir": tmp_path / "masks"}


def setup_dm(dirs: dict, **kwargs) -> FolderDataModule:
    dm = FolderDataModule(**{**dirs, "image_size": SIZE, **kwargs})
    dm.setup("fit")
    return dm


def names(dm: FolderDataModule, split: str) -> list[str]:
    return [Path(p).name for p in dm.datasets[split].paths]


def samples(dm: FolderDataModule, split: str) -> list[dict]:
    return [dm.datasets[split][i] for i in range(len(dm.datasets[split]))]


def test_three_way_split_sizes_and_determinism(dirs: dict):
    dm = setup_dm(dirs, val_fraction=0.2, test_fraction=0.2)
    assert {k: len(v) for k, v in dm.datasets.items()} == {"train": 6, "val": 2, "test": 6}
    test_normal = [n for n in names(dm, "test") if n.startswith("n")]
    parts = names(dm, "train") + names(dm, "val") + test_normal
    assert sorted(parts) == sorted([f"n{i}.png" for i in range(9)] + ["n9.jpg"])
    again = setup_dm(dirs, val_fraction=0.2, test_fraction=0.2)
    assert names(again, "val") == names(dm, "val") and names(again, "test") == names(dm, "test")
    splits = {tuple(names(setup_dm(dirs, split_seed=s), "val")) for s in range(6)}
    assert len(splits) > 1


def test_labels_defect_types_and_both_mask_lookups(dirs: dict):
    dm = setup_dm(dirs, val_fraction=0.1, test_fraction=0.1)
    test = samples(dm, "test")
    assert [(s["defect_type"], int(s["label"])) for s in test] == (
        [("good", 0)] + [("crack", 1)] * 2 + [("hole", 1)] * 2)
    assert not test[0]["mask"].any()
    for s, mask in zip(test[1:], [square_mask(i) for i in range(4)], strict=True):
        resized = Image.fromarray(mask).resize((SIZE, SIZE), Image.Resampling.NEAREST)
        assert torch.equal(s["mask"], torch.from_numpy(np.asarray(resized) > 0).float()[None])
    for s in samples(dm, "train") + samples(dm, "val"):
        assert s["label"] == 0 and s["defect_type"] == "good" and not s["mask"].any()
        assert s["image"].shape == (3, SIZE, SIZE) and s["image"].dtype == torch.float32
    batch = next(iter(dm.test_dataloader()))
    assert set(batch) == {"image", "label", "mask", "path", "defect_type"}


def test_single_abnormal_dir_without_masks_gives_empty_masks(dirs: dict):
    dm = setup_dm({"normal_dir": str(dirs["normal_dir"]),
                   "abnormal_dirs": str(dirs["abnormal_dirs"][0])})
    test = dm.datasets["test"]
    assert set(test.defect_types) == {"good", "crack"} and int(test.labels.sum()) == 2
    assert not test.masks.any()


def test_extensions_filter(dirs: dict):
    dm = setup_dm(dirs, extensions=[".png"])
    assert sum(len(dm.datasets[s]) for s in ("train", "val", "test")) == 9 + 4


def test_missing_mask_is_named(dirs: dict):
    (dirs["mask_dir"] / "h1.png").unlink()
    with pytest.raises(DatasetLayoutError, match=r"(?s)1 anomalous image.*hole/h1\.png.*h1_mask"):
        setup_dm(dirs)


def test_mask_of_another_shape_is_refused(dirs: dict):
    write(dirs["mask_dir"] / "h0.png", np.zeros((24, 40), dtype=np.uint8))
    with pytest.raises(DatasetLayoutError, match=r"mask .*h0\.png is 40x24 but image .*24x24"):
        setup_dm(dirs)


def test_corrupt_image_is_named(dirs: dict):
    (dirs["normal_dir"] / "n3.png").write_bytes(b"garbage" * 10)
    with pytest.raises(ImageLoadError, match=r"cannot read image .*good/n3\.png"):
        setup_dm(dirs)


def test_empty_and_missing_folders_are_named(dirs: dict, tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"data.abnormal_dirs: no images .*empty"):
        setup_dm({**dirs, "abnormal_dirs": tmp_path / "empty"})
    with pytest.raises(DatasetLayoutError, match=r"data.normal_dir='.*nowhere' is not a dir"):
        FolderDataModule(tmp_path / "nowhere", dirs["abnormal_dirs"])
    with pytest.raises(ConfigError, match=r"data\.normal_dir=None is invalid"):
        FolderDataModule(None, dirs["abnormal_dirs"])
    with pytest.raises(DatasetLayoutError, match=r"too few to hold out"):
        setup_dm({**dirs, "normal_dir": dirs["abnormal_dirs"][0],
                  "abnormal_dirs": dirs["abnormal_dirs"][1]})


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"abnormal_dirs": []}, "data.abnormal_dirs=.*a folder or a list"),
    ({"val_fraction": 0.5, "test_fraction": 0.5}, r"data.test_fraction=0.5 is invalid.*< 1 - "),
    ({"test_fraction": 0}, "data.test_fraction=0 is invalid"),
    ({"image_size": [20]}, r"data.image_size=\[20\] is invalid.*\[height, width\]"),
    ({"extensions": ["png"]}, "data.extensions"),
])
def test_invalid_settings_name_the_key(dirs: dict, kwargs: dict, expected: str):
    with pytest.raises(ConfigError, match=expected):
        FolderDataModule(**{**dirs, **kwargs})


def test_abnormal_dir_names_must_be_distinct_defect_types(dirs: dict, tmp_path: Path):
    write(tmp_path / "other" / "crack" / "x.png", random_pixels(0))
    with pytest.raises(ConfigError, match="distinct names"):
        FolderDataModule(dirs["normal_dir"], [*dirs["abnormal_dirs"], tmp_path / "other/crack"])
    write(tmp_path / "other" / "good" / "x.png", random_pixels(0))
    with pytest.raises(ConfigError, match="distinct names other than 'good'"):
        FolderDataModule(dirs["normal_dir"], tmp_path / "other/good")
    crack = dirs["abnormal_dirs"][0]
    with pytest.raises(ConfigError, match=r"other than data\.normal_dir"):
        FolderDataModule(crack, [tmp_path / "hole", tmp_path / "hole" / ".." / "crack"])


def test_folder_config_composes_and_instantiates(dirs: dict):
    crack, hole = dirs["abnormal_dirs"]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            "data=folder", f"data.normal_dir={dirs['normal_dir']}",
            f"data.abnormal_dirs=[{crack},{hole}]", f"data.mask_dir={dirs['mask_dir']}"])
    assert set(cfg.data) - {"_target_"} == set(inspect.signature(FolderDataModule).parameters)
    dm = instantiate(cfg.data, image_size=SIZE)
    dm.setup("test")
    assert isinstance(dm, FolderDataModule) and len(dm.datasets["test"]) == 2 + 4


# ---------------------------------------------------------------- a split the user already has
def make_split_layout(root: Path, category: str = "parts") -> Path:
    """``train/good`` (6), ``test/good`` (2), ``test/crack`` with masks in ground_truth/,
    ``test/dent`` without masks: MVTec-like, any names, masks optional per defect type."""
    folder = root / category
    for i in range(6):
        write(folder / "train" / "good" / f"t{i}.png", random_pixels(i))
    for i in range(2):
        write(folder / "test" / "good" / f"g{i}.png", random_pixels(50 + i))
        write(folder / "test" / "crack" / f"c{i}.png", random_pixels(100 + i))
        write(folder / "ground_truth" / "crack" / f"c{i}_mask.png", square_mask(i))
        write(folder / "test" / "dent" / f"d{i}.png", random_pixels(200 + i))
    return folder


def test_an_existing_split_is_used_as_it_is(tmp_path: Path, caplog):
    folder = make_split_layout(tmp_path)
    with caplog.at_level("WARNING", logger="anomalib_lite.data.folder"):
        dm = FolderDataModule(root=folder, image_size=SIZE, val_fraction=0.34)
        dm.setup("fit")
    assert sorted(names(dm, "train") + names(dm, "val")) == [f"t{i}.png" for i in range(6)]
    assert len(dm.datasets["val"]) == 2
    test = dm.datasets["test"]
    assert [Path(p).name for p in test.paths] == ["g0.png", "g1.png", "c0.png", "c1.png",
                                                  "d0.png", "d1.png"]
    assert test.defect_types == ["good", "good", "crack", "crack", "dent", "dent"]
    assert test.labels.tolist() == [0, 0, 1, 1, 1, 1]
    masked = test.masks.flatten(1).any(dim=1).tolist()
    assert masked == [False, False, True, True, False, False]  # dent has no ground truth
    assert "no masks for the anomalous images of dent" in caplog.text
    # the same data given as folders: normal_test_dir keeps the normal test images apart
    explicit = FolderDataModule(folder / "train" / "good",
                                [folder / "test" / "crack", folder / "test" / "dent"],
                                mask_dir=folder / "ground_truth", image_size=SIZE,
                                val_fraction=0.34, normal_test_dir=folder / "test" / "good")
    with pytest.raises(DatasetLayoutError, match=r"(?s)2 anomalous image.*dent/d0\.png"):
        explicit.setup("fit")  # with mask_dir, every anomalous image needs its mask
    explicit = FolderDataModule(folder / "train" / "good", [folder / "test" / "crack"],
                                mask_dir=folder / "ground_truth", image_size=SIZE,
                                val_fraction=0.34, normal_test_dir=folder / "test" / "good")
    explicit.setup("fit")
    assert names(explicit, "val") == names(dm, "val")
    assert names(explicit, "test") == ["g0.png", "g1.png", "c0.png", "c1.png"]


def test_split_layout_errors_name_the_fix(tmp_path: Path):
    folder = make_split_layout(tmp_path)
    with pytest.raises(ConfigError, match=r"data.root=.* data.normal_dir must be null"):
        FolderDataModule(normal_dir=folder, root=folder)
    with pytest.raises(DatasetLayoutError, match=r"(?s)train/good not found \(the layout is "
                                                 r"one level down: data.root=.*parts\?\)"):
        FolderDataModule(root=tmp_path)
    with pytest.raises(ConfigError, match=r"data.normal_dir=None is invalid.*data.root"):
        FolderDataModule()


def test_the_folder_config_takes_the_split_root(tmp_path: Path):
    folder = make_split_layout(tmp_path)
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=["data=folder", f"data.root={folder}"])
    dm = instantiate(cfg.data, image_size=SIZE)
    dm.setup("test")
    assert len(dm.datasets["test"]) == 6


# ---------------------------------------------------------------- unreadable and tiny files
def test_every_unreadable_file_is_listed_before_training(dirs: dict):
    (dirs["normal_dir"] / "n3.png").write_bytes(b"garbage" * 10)
    (dirs["abnormal_dirs"][0] / "c1.png").write_bytes(b"")
    with pytest.raises(UnreadableImagesError) as caught:
        setup_dm(dirs)
    message = str(caught.value)
    assert message.startswith("2 of 14 image(s) of the dataset cannot be read:")
    assert "good/n3.png" in message and "crack/c1.png" in message
    assert "data.skip_unreadable=true" in message


def test_unreadable_files_are_left_out_and_listed_when_asked(dirs: dict, caplog):
    (dirs["normal_dir"] / "n3.png").write_bytes(b"garbage" * 10)
    (dirs["abnormal_dirs"][0] / "c1.png").write_bytes(b"")
    with caplog.at_level("WARNING", logger="anomalib_lite.data.file_datamodule"):
        dm = setup_dm(dirs, skip_unreadable=True)
    every = [p for split in ("train", "val", "test") for p in dm.datasets[split].paths]
    assert len(every) == 12 and not any(p.endswith(("n3.png", "c1.png")) for p in every)
    assert sorted(Path(s["path"]).name for s in dm.skipped) == ["c1.png", "n3.png"]
    assert all("cannot read image" in s["error"] for s in dm.skipped)
    assert "2 of 14 image(s) cannot be read and are left out" in caplog.text
    assert dm.datasets["test"].masks.shape[0] == len(dm.datasets["test"]) == 5


def test_tiny_images_get_a_warning(dirs: dict, caplog):
    write(dirs["normal_dir"] / "n4.png", np.zeros((1, 1, 3), dtype=np.uint8))
    with caplog.at_level("WARNING", logger="anomalib_lite.data.file_datamodule"):
        setup_dm(dirs)
    assert "1 image(s) are much smaller than data.image_size=16" in caplog.text
    assert "n4.png (1x1)" in caplog.text
