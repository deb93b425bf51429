"""MVTec AD datamodule for the official folder layout (one category at a time).

``<root>/<category>/train/good`` is split into train and validation by a seeded fraction;
the test split is ``test/<defect_type>`` (label 0 for ``good``, 1 otherwise) with masks
from ``ground_truth/<defect_type>/<stem>_mask.png`` (all zeros for ``good``). Images are
decoded once and cached in memory as uint8 at ``image_size`` (see :class:`FileDataModule`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from anomalib_lite.data.batch import NORMAL_DEFECT
from anomalib_lite.data.file_datamodule import (
    DatasetLayoutError,
    FileDataModule,
    FileRecord,
    anomalous_records,
    list_images,
    normal_records,
    require_images,
    split_paths,
)
from anomalib_lite.utils import checks

MVTEC_URL = "https://www.mvtec.com/company/research/datasets/mvtec-ad"
MVTEC_ROOT_ENV = "MVTEC_ROOT"
MVTEC_CATEGORIES = (
    "bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
    "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper",
)
MVTEC_LAYOUT = """\
  <root>/
    <category>/                       e.g. bottle/
      train/good/*.png                normal training images
      test/good/*.png                 normal test images
      test/<defect_type>/*.png        anomalous test images
      ground_truth/<defect_type>/<stem>_mask.png"""


def layout_help() -> str:
    """The expected layout, where MVTec AD is published and how to point the config at it."""
    return (f"Expected the MVTec AD layout:\n{MVTEC_LAYOUT}\n"
            f"MVTec AD is published at {MVTEC_URL}; extract it and set data.root=<path> "
            f"(the folder holding the category folders), paths.data_dir=<path> or the "
            f"environment variable {MVTEC_ROOT_ENV}. For another dataset in this layout, "
            "use data=folder data.root=<the category folder>.")


def category_dir(root: str | Path | None, category: str) -> Path:
    """Validate ``root`` and ``category`` and return ``<root>/<category>``."""
    checks.one_of("data.category", category, MVTEC_CATEGORIES)
    if root is None or str(root) == "":
        raise checks.ConfigError(f"data.root is not set (it is null).\n{layout_help()}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetLayoutError(f"data.root={str(root)!r} is not a directory.\n{layout_help()}")
    folder = root / category
    if not folder.is_dir():
        present = sorted(p.name for p in root.iterdir() if p.name in MVTEC_CATEGORIES)
        raise DatasetLayoutError(f"category folder {folder} not found (categories present in "
                                 f"{root}: {present or 'none'}).\n{layout_help()}")
    return folder


def mask_path(folder: Path, image: Path) -> Path:
    """``<category>/ground_truth/<defect_type>/<stem>_mask.png`` for a test image."""
    return folder / "ground_truth" / image.parent.name / f"{image.stem}_mask.png"


def list_mvtec(folder: Path, val_fraction: float, split_seed: int) -> dict[str, list[FileRecord]]:
    """Train/val (seeded split of ``train/good``) and test records of one category folder.

    Test holds ``test/good`` (label 0, no mask) then every ``test/<defect_type>`` (label 1)
    with its ground-truth masks.
    """
    hint = f"\n{layout_help()}"
    good = require_images(folder / "train" / NORMAL_DEFECT, "empty train split", hint=hint)
    train, val = split_paths(good, [val_fraction], split_seed, str(folder / "train" / "good"))
    test_good = require_images(folder / "test" / NORMAL_DEFECT, "empty test split", hint=hint)
    defect_dirs = sorted(p for p in (folder / "test").iterdir()
                         if p.is_dir() and p.name != NORMAL_DEFECT)
    defects = [(image, d.name) for d in defect_dirs for image in list_images(d)]
    if not defects:
        raise DatasetLayoutError(f"empty test split: no defect images in "
                                 f"{folder / 'test'}/<defect_type>/.{hint}")
    anomalous = anomalous_records(defects, lambda image, _: [mask_path(folder, image)], hint)
    return {"train": normal_records(train), "val": normal_records(val),
            "test": normal_records(test_good) + anomalous}


class MVTecDataModule(FileDataModule):
    """One MVTec AD category: train/val normal images, test normal and defective with masks."""

    def __init__(
        self,
        root: str | Path | None,
        category: str,
        image_size: int | Sequence[int] = 128,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        batch_size: int = 16,
        eval_batch_size: int = 32,
        num_workers: int = 0,
        skip_unreadable: bool = False,
    ) -> None:
        super().__init__(image_size, val_fraction, split_seed, batch_size, eval_batch_size,
                         num_workers, skip_unreadable)
        self.category = category
        self.folder = category_dir(root, category)
        self.save_hyperparameters()

    def list_splits(self) -> dict[str, list[FileRecord]]:
        return list_mvtec(self.folder, self.val_fraction, self.split_seed)
