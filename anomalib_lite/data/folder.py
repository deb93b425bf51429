"""Datamodule for a plain folder of normal images plus one or more folders of anomalies.

Normal images are split by seeded fractions into train, val and the normal part of test;
every image of an abnormal folder goes to test with ``defect_type`` = the folder's name.
Masks come from ``mask_dir`` (by image stem); without ``mask_dir`` every mask is all zeros,
so pixel-level metrics are then meaningless (image-level metrics are fine). Images are
decoded once and cached in memory as uint8 at ``image_size`` (see :class:`FileDataModule`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from anomalib_lite.data.batch import NORMAL_DEFECT
from anomalib_lite.data.file_datamodule import (
    IMAGE_EXTENSIONS,
    DatasetLayoutError,
    FileDataModule,
    FileRecord,
    anomalous_records,
    fraction,
    normal_records,
    require_images,
    split_paths,
)
from anomalib_lite.utils import checks


def existing_dir(key: str, value: str | Path | None) -> Path:
    """``value`` as a Path; raise naming ``key`` unless it is an existing directory."""
    checks.require(value is not None and str(value) != "", key, value, "a folder path")
    path = Path(str(value)).expanduser()
    if not path.is_dir():
        raise DatasetLayoutError(f"{key}={str(value)!r} is not a directory "
                                 f"(override it, e.g. {key}=/path/to/images)")
    return path


def mask_candidates(mask_dir: Path, image: Path, defect_type: str) -> list[Path]:
    """Where a mask is looked for: ``[<defect_type>/]<stem>.png`` or ``..._mask.png``."""
    return [folder / name for folder in (mask_dir / defect_type, mask_dir)
            for name in (f"{image.stem}.png", f"{image.stem}_mask.png")]


def list_folders(normal_dir: Path, abnormal_dirs: Sequence[Path], mask_dir: Path | None,
                 fractions: Sequence[float], split_seed: int,
                 extensions: Sequence[str]) -> dict[str, list[FileRecord]]:
    """Seeded train/val/test-normal split of ``normal_dir``; abnormal folders go to test."""
    normals = require_images(normal_dir, "data.normal_dir", extensions)
    train, val, test_normal = split_paths(normals, fractions, split_seed, f"data.normal_dir "
                                          f"{normal_dir}")
    abnormal = [(image, folder.name) for folder in abnormal_dirs
                for image in require_images(folder, "data.abnormal_dirs", extensions)]
    lookup = None if mask_dir is None else (lambda i, t: mask_candidates(mask_dir, i, t))
    return {"train": normal_records(train), "val": normal_records(val),
            "test": normal_records(test_normal) + anomalous_records(abnormal, lookup)}


class FolderDataModule(FileDataModule):
    """Normal images from ``normal_dir``; anomalous test images from ``abnormal_dirs``."""

    def __init__(
        self,
        normal_dir: str | Path,
        abnormal_dirs: str | Path | Sequence[str | Path],
        mask_dir: str | Path | None = None,
        image_size: int = 128,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        batch_size: int = 16,
        eval_batch_size: int = 32,
        num_workers: int = 0,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
    ) -> None:
        super().__init__(image_size, val_fraction, split_seed, batch_size, eval_batch_size,
                         num_workers)
        self.test_fraction = fraction("data.test_fraction", test_fraction)
        checks.require(self.val_fraction + self.test_fraction < 1, "data.test_fraction",
                       test_fraction, f"< 1 - data.val_fraction ({1 - self.val_fraction:g})")
        self.normal_dir = existing_dir("data.normal_dir", normal_dir)
        if isinstance(abnormal_dirs, (str, Path)):
            abnormal_dirs = [abnormal_dirs]
        checks.require(abnormal_dirs is not None and len(abnormal_dirs) > 0, "data.abnormal_dirs",
                       abnormal_dirs, "a folder or a list of folders of anomalous images")
        self.abnormal_dirs = [existing_dir("data.abnormal_dirs", d) for d in abnormal_dirs]
        names = [d.name for d in self.abnormal_dirs]
        checks.require(len(set(names)) == len(names) and NORMAL_DEFECT not in names,
                       "data.abnormal_dirs", [str(d) for d in abnormal_dirs],
                       f"folders with distinct names other than {NORMAL_DEFECT!r} (each "
                       "folder's name is its defect type)")
        checks.require(self.normal_dir.resolve() not in {d.resolve() for d in self.abnormal_dirs},
                       "data.abnormal_dirs", [str(d) for d in abnormal_dirs],
                       "folders other than data.normal_dir")
        self.mask_dir = None if mask_dir is None else existing_dir("data.mask_dir", mask_dir)
        checks.require(len(extensions) > 0 and all(str(e).startswith(".") for e in extensions),
                       "data.extensions", list(extensions), "file suffixes such as ['.png']")
        self.extensions = tuple(str(e).lower() for e in extensions)
        self.save_hyperparameters()

    def list_splits(self) -> dict[str, list[FileRecord]]:
        return list_folders(self.normal_dir, self.abnormal_dirs, self.mask_dir,
                            [self.val_fraction, self.test_fraction], self.split_seed,
                            self.extensions)
