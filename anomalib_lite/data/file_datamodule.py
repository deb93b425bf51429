"""Shared pieces of the file-backed datamodules (MVTec AD, plain folders).

A subclass only lists its files as :class:`FileRecord` lists per split; this module
validates the common settings, splits normal images, decodes the files once into an
in-memory uint8 cache (:class:`InMemoryAnomalyDataset`) and serves the dataloaders.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from anomalib_lite.data.base import InMemoryDataModule
from anomalib_lite.data.batch import NORMAL_DEFECT
from anomalib_lite.data.image_io import (
    ImageLoadError,
    image_dims,
    read_image_with_dims,
    read_mask_bool,
    size_hw,
)
from anomalib_lite.data.preprocess import format_size, image_size_hw
from anomalib_lite.data.tensor_dataset import InMemoryAnomalyDataset
from anomalib_lite.utils import checks

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
STAGE_SPLITS = {"fit": SPLITS, "validate": ("val",), "test": ("test",), "predict": ("test",)}
MAX_DECODE_THREADS = 8
MAX_LISTED = 5  # files named in one error message
log = logging.getLogger(__name__)


class DatasetLayoutError(FileNotFoundError):
    """The files on disk do not match the expected dataset layout; the message says how."""


@dataclass(frozen=True)
class FileRecord:
    """One image file, its label (0 normal, 1 anomalous), defect type and optional mask file."""

    image: Path
    label: int
    defect_type: str
    mask: Path | None = None


def list_images(folder: Path, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Image files directly in ``folder``, sorted; hidden files (``._x.png``) are skipped."""
    suffixes = {e.lower() for e in extensions}
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes)


def require_images(folder: Path, what: str, extensions: Iterable[str] = IMAGE_EXTENSIONS,
                   hint: str = "") -> list[Path]:
    """:func:`list_images`, raising a message naming ``what`` if the folder is missing or empty."""
    if not folder.is_dir():
        raise DatasetLayoutError(f"{what}: folder {folder} not found.{hint}")
    images = list_images(folder, extensions)
    if not images:
        raise DatasetLayoutError(f"{what}: no images ({', '.join(extensions)}) in {folder}.{hint}")
    return images


def normal_records(paths: Iterable[Path]) -> list[FileRecord]:
    return [FileRecord(p, 0, NORMAL_DEFECT) for p in paths]


def anomalous_records(images: Iterable[tuple[Path, str]],
                      mask_candidates: Callable[[Path, str], list[Path]] | None,
                      hint: str = "") -> list[FileRecord]:
    """Label-1 records for ``(image, defect_type)`` pairs, each with the first existing mask
    among ``mask_candidates(image, defect_type)``; no masks at all when that is ``None``.

    Raises naming the images without a mask (the first few) and where each was looked for.
    """
    records, missing = [], []
    for image, defect_type in images:
        candidates = mask_candidates(image, defect_type) if mask_candidates else []
        mask = next((m for m in candidates if m.is_file()), None)
        if mask_candidates and mask is None:
            missing.append(f"  image {image} -> expected mask {' or '.join(map(str, candidates))}")
        records.append(FileRecord(image, 1, defect_type, mask))
    if missing:
        raise DatasetLayoutError(f"{len(missing)} anomalous image(s) have no mask:\n"
                                 + "\n".join(missing[:MAX_LISTED]) + hint)
    return records


def fraction(key: str, value: Any) -> float:
    """Validate a fraction strictly between 0 and 1."""
    checks.require(isinstance(value, (int, float)) and not isinstance(value, bool)
                   and 0 < value < 1, key, value, "a fraction strictly between 0 and 1")
    return float(value)


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Sizes of the held-out parts (each ``round(n * f)``, at least 1); the rest is train."""
    return [max(1, round(n * f)) for f in fractions]


def split_paths(paths: Sequence[Path], fractions: Sequence[float], seed: int,
                what: str) -> list[list[Path]]:
    """Shuffle ``paths`` with ``seed`` and cut ``[train, *held-out parts]`` (each sorted).

    Deterministic in ``seed`` and the (sorted) file list; raises if train would be empty.
    """
    counts = split_counts(len(paths), fractions)
    if len(paths) - sum(counts) < 1:
        raise DatasetLayoutError(
            f"{what} has {len(paths)} image(s): too few to hold out {counts} for "
            f"{'/'.join(['val', 'test'][:len(counts)])} and keep >= 1 for train")
    order = np.random.default_rng(seed).permutation(len(paths)).tolist()
    shuffled = [paths[i] for i in order]
    bounds = np.cumsum([len(paths) - sum(counts), *counts]).tolist()
    return [sorted(shuffled[a:b]) for a, b in zip([0, *bounds[:-1]], bounds, strict=True)]


def check_mask_matches(record: FileRecord) -> None:
    """Raise if the mask's aspect ratio differs from its image's (likely the wrong mask)."""
    if record.mask is None:
        return
    (w, h), (mw, mh) = image_dims(record.image), image_dims(record.mask)
    if abs(w * mh - h * mw) > 0.01 * w * mh:
        raise DatasetLayoutError(f"mask {record.mask} is {mw}x{mh} but image {record.image} "
                                 f"is {w}x{h}: the mask does not belong to the image")


UPSCALE_WARNING = 4  # warn about images upscaled more than this on a side


class UnreadableImagesError(ImageLoadError):
    """Files of the dataset cannot be read; the message lists every one and the fix."""


@dataclass
class Decoded:
    """A decoded split: the readable images, the unreadable files and the tiny images."""

    dataset: InMemoryAnomalyDataset
    unreadable: list[tuple[FileRecord, str]]  # record, reason
    tiny: list[tuple[FileRecord, tuple[int, int]]]  # record, (width, height) on disk


def _decode(record: FileRecord, size: tuple[int, int],
            channels: int) -> tuple[Tensor, Tensor | None, tuple[int, int]] | str:
    """The image, its mask and its size on disk, or why the files cannot be read."""
    try:
        check_mask_matches(record)
        mask = None if record.mask is None else read_mask_bool(record.mask, size)
        image, dims = read_image_with_dims(record.image, size, channels)
    except ImageLoadError as err:
        return str(err)
    return image, mask, dims


def decode_records(records: Sequence[FileRecord], size: int | tuple[int, int],
                   channels: int = 3) -> Decoded:
    """Decode every file once (threads; PIL releases the GIL) into an in-memory uint8 dataset
    of the readable ones; the unreadable files are listed with their reason, never raised.

    Images without a mask file get an all-zero mask.
    """
    height, width = size_hw(size)
    images = torch.empty(len(records), channels, height, width, dtype=torch.uint8)
    masks = torch.zeros(len(records), 1, height, width, dtype=torch.bool)
    readable, unreadable, tiny = [], [], []
    threads = max(1, min(MAX_DECODE_THREADS, os.cpu_count() or 1, len(records)))
    with ThreadPoolExecutor(threads) as pool:
        decoded = pool.map(lambda r: _decode(r, (height, width), channels), records)
        for i, (record, result) in enumerate(zip(records, decoded, strict=True)):
            if isinstance(result, str):
                unreadable.append((record, result))
                continue
            image, mask, (w, h) = result
            readable.append(i)
            images[i] = image
            if mask is not None:
                masks[i] = mask
            if w * UPSCALE_WARNING < width or h * UPSCALE_WARNING < height:
                tiny.append((record, (w, h)))
    if unreadable:
        keep = torch.tensor(readable, dtype=torch.long)
        images, masks = images[keep], masks[keep]
        records = [records[i] for i in readable]
    labels = torch.tensor([r.label for r in records], dtype=torch.long)
    dataset = InMemoryAnomalyDataset(images, labels, masks, [str(r.image) for r in records],
                                     [r.defect_type for r in records])
    return Decoded(dataset, unreadable, tiny)


def unreadable_listing(unreadable: Sequence[tuple[str, FileRecord, str]]) -> str:
    """One line per unreadable file: its split and why it cannot be read."""
    return "\n".join(f"  [{split}] {reason}" for split, _, reason in unreadable)


class FileDataModule(InMemoryDataModule):
    """Base for file-backed datamodules; subclasses implement :meth:`list_splits`.

    On the first ``setup`` all splits are listed (so a missing mask or an empty split fails
    before training); ``setup("fit")`` decodes train, val and test (a corrupt test image is
    reported before training, not after it), ``setup("test")`` only test. Every file of
    those splits is read once: unreadable ones are listed all together (an error, or with
    ``skip_unreadable`` a warning, and left out: :attr:`skipped`), and images upscaled
    more than 4x get a warning. Decoded images are cached in memory as uint8 at
    ``image_size`` (one number, or ``[height, width]``): N x 3 x H x W bytes per split.
    """

    def __init__(self, image_size: int | Sequence[int], val_fraction: float, split_seed: int,
                 batch_size: int, eval_batch_size: int, num_workers: int,
                 skip_unreadable: bool = False) -> None:
        super().__init__(batch_size, eval_batch_size, num_workers)
        height, width = image_size_hw(image_size, "data.image_size")
        checks.non_negative_int("data.split_seed", split_seed)
        checks.require(isinstance(skip_unreadable, bool), "data.skip_unreadable",
                       skip_unreadable, "true or false")
        self.image_size = height if height == width else (height, width)
        self.split_seed, self.skip_unreadable = split_seed, skip_unreadable
        self.val_fraction = fraction("data.val_fraction", val_fraction)
        self.records: dict[str, list[FileRecord]] = {}
        self.skipped: list[dict[str, str]] = []  # {split, path, error} left out as unreadable

    def list_splits(self) -> dict[str, list[FileRecord]]:
        """File records for ``train``, ``val`` and ``test`` (each non-empty)."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not self.records:
            records = self.list_splits()
            for split in SPLITS:
                if not records.get(split):
                    raise DatasetLayoutError(f"{type(self).__name__}: the {split} split is empty")
            self.records = records
        splits = [s for s in STAGE_SPLITS.get(stage or "", SPLITS) if s not in self.datasets]
        decoded = {s: decode_records(self.records[s], self.image_size, self.num_channels)
                   for s in splits}
        unreadable = [(s, r, why) for s in splits for r, why in decoded[s].unreadable]
        total = sum(len(self.records[s]) for s in splits)
        if unreadable and not self.skip_unreadable:
            raise UnreadableImagesError(
                f"{len(unreadable)} of {total} image(s) of the dataset cannot be read:\n"
                f"{unreadable_listing(unreadable)}\nFix or remove these files, or set "
                "data.skip_unreadable=true to leave them out (they are then listed in the "
                "log and in results.json).")
        if unreadable:
            log.warning("data.skip_unreadable=true: %d of %d image(s) cannot be read and are "
                        "left out:\n%s", len(unreadable), total, unreadable_listing(unreadable))
            self.skipped += [{"split": s, "path": str(r.image), "error": why}
                             for s, r, why in unreadable]
        tiny = [(r, dims) for s in splits for r, dims in decoded[s].tiny]
        if tiny:
            listed = "\n".join(f"  {r.image} ({w}x{h})" for r, (w, h) in tiny[:MAX_LISTED * 2])
            more = f"\n  ... and {len(tiny) - MAX_LISTED * 2} more" \
                if len(tiny) > MAX_LISTED * 2 else ""
            log.warning("%d image(s) are much smaller than data.image_size=%s (upscaled more "
                        "than %dx): are they the right files?\n%s%s", len(tiny),
                        format_size(self.image_size), UPSCALE_WARNING, listed, more)
        for split in splits:
            if len(decoded[split].dataset) == 0:
                raise DatasetLayoutError(f"{type(self).__name__}: the {split} split has no "
                                         "readable image")
            self.datasets[split] = decoded[split].dataset
