"""Datamodule for your own images: plain folders, or a split you already have.

Two ways to point it at the data:

- Folders: ``normal_dir`` holds normal images and ``abnormal_dirs`` one folder per defect
  type (its name is the defect type; every image goes to test). Normal images are split
  by seeded fractions into train, val and the normal part of test; with ``normal_test_dir``
  (a folder of normal test images) ``normal_dir`` is split into train and val only.
- A split layout: ``root`` holding ``train/good/``, ``test/good/``, ``test/<defect>/`` and
  optionally ``ground_truth/<defect>/<stem>_mask.png`` (MVTec AD's layout, any names):
  train/good is split into train and val, test is used as it is.

Masks come from ``mask_dir`` (``[<defect>/]<stem>.png`` or ``<stem>_mask.png``), or in the
split layout from ``ground_truth/<defect>/`` where that folder exists. Anomalous images
without a mask get an all-zero one, so pixel-level metrics then mean nothing (image-level
metrics are fine). Images are decoded once and cached in memory as uint8 at ``image_size``
(see :class:`FileDataModule`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

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

log = logging.getLogger(__name__)
SPLIT_LAYOUT = """\
  <root>/
    train/good/*.png                  normal training images (split into train and val)
    test/good/*.png                   normal test images
    test/<defect_type>/*.png          anomalous test images, one folder per defect type
    ground_truth/<defect_type>/<stem>_mask.png   optional masks"""


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
                 fractions: Sequence[float], split_seed: int, extensions: Sequence[str],
                 normal_test_dir: Path | None = None,
                 masked_defects: Sequence[str] | None = None) -> dict[str, list[FileRecord]]:
    """Seeded train/val/test-normal split of ``normal_dir`` (train/val only when
    ``normal_test_dir`` holds the normal test images); abnormal folders go to test.

    Masks are looked up in ``mask_dir`` for every defect type, or only for
    ``masked_defects`` when that is given.
    """
    normals = require_images(normal_dir, "data.normal_dir", extensions)
    what = f"data.normal_dir {normal_dir}"
    if normal_test_dir is None:
        train, val, test_normal = split_paths(normals, fractions, split_seed, what)
    else:
        train, val = split_paths(normals, fractions[:1], split_seed, what)
        test_normal = require_images(normal_test_dir, "data.normal_test_dir", extensions)
    abnormal = [(image, folder.name) for folder in abnormal_dirs
                for image in require_images(folder, "data.abnormal_dirs", extensions)]
    if mask_dir is None:
        anomalous = anomalous_records(abnormal, None)
    else:
        folder = mask_dir

        def masked(defect: str) -> bool:
            return masked_defects is None or defect in masked_defects

        def lookup(image: Path, defect: str) -> list[Path]:
            return mask_candidates(folder, image, defect)

        anomalous = anomalous_records([a for a in abnormal if masked(a[1])], lookup) + \
            anomalous_records([a for a in abnormal if not masked(a[1])], None)
    unmasked = sorted({r.defect_type for r in anomalous if r.mask is None})
    if unmasked:
        log.warning("no masks for the anomalous images of %s: pixel metrics are not "
                    "meaningful for them (image metrics are)", ", ".join(unmasked))
    return {"train": normal_records(train), "val": normal_records(val),
            "test": normal_records(test_normal) + anomalous}


def split_layout(root: Path) -> dict[str, Any]:
    """The folders of a split layout under ``root`` (see :data:`SPLIT_LAYOUT`)."""
    hint = f"\nExpected the layout:\n{SPLIT_LAYOUT}"
    for folder in (root / "train" / NORMAL_DEFECT, root / "test" / NORMAL_DEFECT):
        if not folder.is_dir():
            inner = sorted(p for p in root.iterdir() if (p / "train" / NORMAL_DEFECT).is_dir())
            meant = f" (the layout is one level down: data.root={inner[0]}?)" if inner else ""
            raise DatasetLayoutError(f"data.root={str(root)!r}: folder {folder} not found"
                                     f"{meant}.{hint}")
    defects = sorted(p for p in (root / "test").iterdir()
                     if p.is_dir() and p.name != NORMAL_DEFECT and not p.name.startswith("."))
    if not defects:
        raise DatasetLayoutError(f"data.root={str(root)!r}: no defect folders in "
                                 f"{root / 'test'} (test/<defect_type>/).{hint}")
    truth = root / "ground_truth"
    return {"normal_dir": root / "train" / NORMAL_DEFECT,
            "normal_test_dir": root / "test" / NORMAL_DEFECT, "abnormal_dirs": defects,
            "mask_dir": truth if truth.is_dir() else None,
            "masked_defects": [d.name for d in defects if (truth / d.name).is_dir()]}


class FolderDataModule(FileDataModule):
    """Normal images from ``normal_dir`` (normal test images from ``normal_test_dir`` or a
    split of ``normal_dir``); anomalous test images from ``abnormal_dirs``. Or all of them
    from the split layout under ``root``."""

    def __init__(
        self,
        normal_dir: str | Path | None = None,
        abnormal_dirs: str | Path | Sequence[str | Path] | None = None,
        mask_dir: str | Path | None = None,
        image_size: int | Sequence[int] = 128,
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        batch_size: int = 16,
        eval_batch_size: int = 32,
        num_workers: int = 0,
        extensions: Sequence[str] = IMAGE_EXTENSIONS,
        normal_test_dir: str | Path | None = None,
        root: str | Path | None = None,
        skip_unreadable: bool = False,
    ) -> None:
        super().__init__(image_size, val_fraction, split_seed, batch_size, eval_batch_size,
                         num_workers, skip_unreadable)
        self.test_fraction = fraction("data.test_fraction", test_fraction)
        self.masked_defects: list[str] | None = None
        dirs = {"normal_dir": normal_dir, "abnormal_dirs": abnormal_dirs, "mask_dir": mask_dir,
                "normal_test_dir": normal_test_dir}  # the arguments stay as given (hparams)
        if root is not None and str(root) != "":
            given = [k for k, v in dirs.items() if v not in (None, "", [])]
            if given:
                raise checks.ConfigError(
                    f"data.root={str(root)!r} reads the split layout under it, so "
                    f"{', '.join('data.' + k for k in given)} must be null: give either "
                    "data.root, or the folders (data.normal_dir, data.abnormal_dirs, ...)")
            dirs = split_layout(existing_dir("data.root", root))
            self.masked_defects = dirs.pop("masked_defects")
        self.normal_test_dir = None if dirs["normal_test_dir"] in (None, "") else \
            existing_dir("data.normal_test_dir", dirs["normal_test_dir"])
        if self.normal_test_dir is None:
            checks.require(self.val_fraction + self.test_fraction < 1, "data.test_fraction",
                           test_fraction, f"< 1 - data.val_fraction ({1 - self.val_fraction:g})")
        checks.require(dirs["normal_dir"] not in (None, ""), "data.normal_dir",
                       dirs["normal_dir"], "a folder of normal images (with data.abnormal_dirs), "
                       "or set data.root to a folder holding train/good, test/good and "
                       "test/<defect_type>")
        self.normal_dir = existing_dir("data.normal_dir", dirs["normal_dir"])
        abnormal = dirs["abnormal_dirs"]
        if isinstance(abnormal, (str, Path)):
            abnormal = [abnormal]
        checks.require(abnormal is not None and len(abnormal) > 0, "data.abnormal_dirs",
                       abnormal, "a folder or a list of folders of anomalous images")
        self.abnormal_dirs = [existing_dir("data.abnormal_dirs", d) for d in abnormal]
        names = [d.name for d in self.abnormal_dirs]
        checks.require(len(set(names)) == len(names) and NORMAL_DEFECT not in names,
                       "data.abnormal_dirs", [str(d) for d in abnormal],
                       f"folders with distinct names other than {NORMAL_DEFECT!r} (each "
                       "folder's name is its defect type)")
        checks.require(self.normal_dir.resolve() not in {d.resolve() for d in self.abnormal_dirs},
                       "data.abnormal_dirs", [str(d) for d in abnormal],
                       "folders other than data.normal_dir")
        self.mask_dir = None if dirs["mask_dir"] is None else \
            existing_dir("data.mask_dir", dirs["mask_dir"])
        checks.require(len(extensions) > 0 and all(str(e).startswith(".") for e in extensions),
                       "data.extensions", list(extensions), "file suffixes such as ['.png']")
        self.extensions = tuple(str(e).lower() for e in extensions)
        self.save_hyperparameters()

    def list_splits(self) -> dict[str, list[FileRecord]]:
        return list_folders(self.normal_dir, self.abnormal_dirs, self.mask_dir,
                            [self.val_fraction, self.test_fraction], self.split_seed,
                            self.extensions, self.normal_test_dir, self.masked_defects)
