"""Sprite datamodule: dSprites-style images with injected ellipse anomalies, made on the fly.

No download: every split is generated deterministically from ``seed`` when it is set up.
Train and validation hold normal images only; test holds normal and anomalous images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict

import numpy as np
import torch
from torch import Tensor

from anomalib_lite.data.base import InMemoryDataModule
from anomalib_lite.data.batch import NORMAL_DEFECT
from anomalib_lite.data.sprites_render import (
    EllipseAnomaly,
    SpriteStyle,
    inject_ellipses,
    render_sprites,
    sample_factors,
    to_uint8,
)
from anomalib_lite.data.tensor_dataset import InMemoryAnomalyDataset
from anomalib_lite.utils import checks

SPLIT_IDS = {"train": 0, "val": 1, "test": 2, "predict": 2}
ANOMALY_TYPE = "ellipse"
CHUNK = 1024  # images rendered per vectorised call (bounds peak memory)


def split_generator(seed: int, split: str) -> torch.Generator:
    """An independent, reproducible random stream for each (seed, split)."""
    state = np.random.SeedSequence([seed, SPLIT_IDS[split]]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state))


def generate_split(
    n_normal: int,
    n_anomalous: int,
    style: SpriteStyle,
    anomaly: EllipseAnomaly,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor, Tensor]:
    """Render ``n_normal`` normal then ``n_anomalous`` anomalous images.

    Returns uint8 images (N, 3, H, W), labels (N,) and bool masks (N, 1, H, W).
    """
    size = style.image_size
    images, masks = [], []
    for start in range(0, n_normal + n_anomalous, CHUNK):
        n = min(CHUNK, n_normal + n_anomalous - start)
        chunk = render_sprites(sample_factors(n, generator), style, generator)
        mask = torch.zeros(n, 1, size, size, dtype=torch.bool)
        first_anomalous = max(0, n_normal - start)
        if first_anomalous < n:
            chunk[first_anomalous:], mask[first_anomalous:] = inject_ellipses(
                chunk[first_anomalous:], anomaly, generator
            )
        images.append(to_uint8(chunk))
        masks.append(mask)
    labels = torch.cat([torch.zeros(n_normal), torch.ones(n_anomalous)]).long()
    return torch.cat(images), labels, torch.cat(masks)


class SpritesDataModule(InMemoryDataModule):
    """dSprites-style anomaly detection data, generated deterministically from ``seed``."""

    def __init__(
        self,
        n_train: int = 15000,
        n_val: int = 500,
        n_test_normal: int = 1001,
        n_test_anomalous: int = 1001,
        image_size: int = 64,
        seed: int = 0,
        batch_size: int = 20,
        eval_batch_size: int = 100,
        num_workers: int = 0,
        sprite_extent: float = 0.16,
        position_margin: float = 0.2,
        background: Sequence[float] = (0.0, 0.75),
        foreground: Sequence[float] = (1.0, 1.0, 1.0),
        anomaly: dict | None = None,
        root: str | None = None,
    ) -> None:
        """``root`` is not used (the sprites are generated): it is there so that a sweep
        across datasets can set ``data.root`` for the ones read from disk."""
        super().__init__(batch_size, eval_batch_size, num_workers)
        for key in ("n_train", "n_val", "n_test_normal", "n_test_anomalous", "image_size"):
            checks.positive_int(f"data.{key}", locals()[key])
        checks.non_negative_int("data.seed", seed)
        checks.in_range("data.sprite_extent", sprite_extent, 0.01, 0.5)
        checks.in_range("data.position_margin", position_margin, 0.0, 0.5)
        checks.require(len(background) == 2 and 0 <= background[0] <= background[1] <= 1,
                       "data.background", list(background),
                       "[low, high] with 0 <= low <= high <= 1")
        checks.require(len(foreground) == 3 and all(0 <= c <= 1 for c in foreground),
                       "data.foreground", list(foreground), "three RGB values in [0, 1]")
        self.style = SpriteStyle(
            image_size=image_size,
            sprite_extent=sprite_extent,
            position_margin=position_margin,
            background_low=float(background[0]),
            background_high=float(background[1]),
            foreground=tuple(float(c) for c in foreground),
        )
        self.anomaly = _anomaly_from_config(anomaly or {})
        self.image_size = image_size
        self.sizes = {
            "train": (n_train, 0),
            "val": (n_val, 0),
            "test": (n_test_normal, n_test_anomalous),
        }
        self.seed = seed
        self.save_hyperparameters({"style": asdict(self.style), "anomaly": asdict(self.anomaly),
                                   "sizes": self.sizes, "seed": seed})

    def make_dataset(self, split: str) -> InMemoryAnomalyDataset:
        """Generate one split (deterministic in ``seed`` and ``split``)."""
        n_normal, n_anomalous = self.sizes[split]
        images, labels, masks = generate_split(
            n_normal, n_anomalous, self.style, self.anomaly, split_generator(self.seed, split)
        )
        defect_types = [NORMAL_DEFECT] * n_normal + [ANOMALY_TYPE] * n_anomalous
        paths = [f"sprites/{split}/{d}/{i:05d}" for i, d in enumerate(defect_types)]
        return InMemoryAnomalyDataset(images, labels, masks, paths, defect_types)

    def setup(self, stage: str | None = None) -> None:
        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",),
                  "predict": ("test",)}.get(stage or "", ("train", "val", "test"))
        for split in wanted:
            if split not in self.datasets:
                self.datasets[split] = self.make_dataset(split)


def _anomaly_from_config(cfg: dict) -> EllipseAnomaly:
    """Build and validate the ellipse-anomaly parameters from ``data.anomaly``."""
    known = set(EllipseAnomaly.__dataclass_fields__)
    unknown = set(cfg) - known
    checks.require(not unknown, "data.anomaly", sorted(unknown), f"keys among {sorted(known)}")
    anomaly = EllipseAnomaly(**cfg)
    checks.positive_int("data.anomaly.min_count", anomaly.min_count)
    checks.require(anomaly.max_count >= anomaly.min_count, "data.anomaly.max_count",
                   anomaly.max_count, f"an integer >= data.anomaly.min_count ({anomaly.min_count})")
    checks.in_range("data.anomaly.min_radius", anomaly.min_radius, 0.005, 0.5)
    checks.in_range("data.anomaly.max_radius", anomaly.max_radius, anomaly.min_radius, 0.5)
    checks.in_range("data.anomaly.min_center", anomaly.min_center, 0.0, 1.0)
    checks.in_range("data.anomaly.max_center", anomaly.max_center, anomaly.min_center, 1.0)
    return anomaly
