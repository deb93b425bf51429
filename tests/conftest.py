"""Shared fixtures: real Hydra composition of the project's configs on tiny settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

from anomalib_lite.train import CONFIG_DIR

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose ``conf/train.yaml`` with overrides; outputs go to a temporary directory."""

    def _compose(*overrides: str, config_name: str = "train",
                 output_dir: Path | None = None) -> DictConfig:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(config_name=config_name,
                           overrides=[f"paths.output_dir={output_dir or tmp_path}", *overrides])

    return _compose


TINY_SPRITES = ("data.n_train=40", "data.n_val=20", "data.n_test_normal=20",
                "data.n_test_anomalous=20")


@pytest.fixture
def fast_cfg(compose_cfg: Callable[..., DictConfig]) -> Callable[..., DictConfig]:
    """``debug=fast`` (tiny images, a few steps) plus overrides; tiny splits for the sprites."""

    def _fast(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        other_data = any(o.startswith("data=") for o in overrides)
        sizes = () if other_data else TINY_SPRITES
        quiet = () if any(o.startswith("logger=") for o in overrides) else ("logger=none",)
        return compose_cfg("debug=fast", *sizes, *quiet, *overrides, output_dir=output_dir)

    return _fast


# ---------------------------------------------------------------- tiny MVTec AD layout
def write_image(path: Path, seed: int, mode: str = "RGB", side: int = 40) -> None:
    """A random ``side`` x ``side`` image saved in PIL ``mode``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)


def box_mask(seed: int, side: int = 40) -> np.ndarray:
    """A uint8 0/255 mask with one random rectangle."""
    y, x = np.random.default_rng(seed).integers(2, side // 2, 2)
    mask = np.zeros((side, side), dtype=np.uint8)
    mask[y:y + side // 3, x:x + side // 4] = 255
    return mask


def make_mvtec(root: Path, category: str = "bottle", n_train: int = 6) -> Path:
    """Tiny MVTec layout: ``n_train`` train/good (one L, one RGBA), 2 test/good, 2 crack."""
    folder = root / category
    modes = ["L", "RGBA"] + ["RGB"] * (n_train - 2)
    for i, mode in enumerate(modes):
        write_image(folder / "train" / "good" / f"{i:03d}.png", i, mode)
    for i in range(2):
        write_image(folder / "test" / "good" / f"{i:03d}.png", 100 + i)
        write_image(folder / "test" / "crack" / f"{i:03d}.png", 200 + i)
        mask_file = folder / "ground_truth" / "crack" / f"{i:03d}_mask.png"
        mask_file.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(box_mask(i)).save(mask_file)
    return root


@pytest.fixture
def mvtec_root(tmp_path: Path) -> Path:
    return make_mvtec(tmp_path / "mvtec")


def make_folder_dataset(root: Path, n_normal: int = 10, n_anomalous: int = 3) -> dict[str, Path]:
    """A user's own data: ``good/``, ``scratch/`` and ``masks/scratch/<stem>_mask.png``."""
    for i in range(n_normal):
        write_image(root / "good" / f"{i:03d}.png", 300 + i)
    for i in range(n_anomalous):
        write_image(root / "scratch" / f"s{i}.png", 400 + i)
        mask_file = root / "masks" / "scratch" / f"s{i}_mask.png"
        mask_file.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(box_mask(i)).save(mask_file)
    return {"normal": root / "good", "scratch": root / "scratch", "masks": root / "masks"}


# ---------------------------------------------------------------- W&B offline run reader
def read_wandb_records(wandb_dir: Path) -> list:
    """Every protobuf record of the one offline run under ``wandb_dir``.

    The ``.wandb`` file is a LevelDB-style log: a 7-byte header (``:W&B``, magic, version),
    then 32 KiB blocks of records, each with a 7-byte header (crc32, length, type) and
    FULL/FIRST/MIDDLE/LAST fragments.
    """
    import struct

    from wandb.proto import wandb_internal_pb2

    (path,) = wandb_dir.glob("offline-run-*/run-*.wandb")
    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, chunks, partial = 7, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            chunks.append(chunk)
        elif kind == 2:
            partial = chunk
        elif kind == 3:
            partial += chunk
        elif kind == 4:
            chunks.append(partial + chunk)
    records = []
    for raw in chunks:
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        records.append(record)
    return records


# ---------------------------------------------------------------- one trained model
@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run directory of a tiny model trained and tested once (real Trainer, real Hydra
    compose) on a tiny MVTec layout of 32 px images: ``model.ckpt``, ``scores.csv``. The
    layout is at ``<run>/../mvtec``; its test split holds 6 normal and 2 defective images.
    """
    from anomalib_lite.train import train

    base = tmp_path_factory.mktemp("trained")
    root = make_mvtec(base / "mvtec", n_train=8)
    for i in range(2, 6):
        write_image(root / "bottle" / "test" / "good" / f"{i:03d}.png", 100 + i)
    run = base / "run"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[
            f"paths.output_dir={run}", "debug=fast", "logger=none", "callbacks=none",
            "data=bottle", f"data.root={root}", "data.val_fraction=0.25"])
    train(cfg)
    return run
