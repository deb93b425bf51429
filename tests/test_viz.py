"""Pictures of a test run: real PNGs of the expected size, not blank; gallery ordering."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from anomalib_lite.callbacks.visual_outputs import pick_gallery_rows
from anomalib_lite.train import train

EXPECTED = {"histogram": (600, 400), "roc_pr": (1000, 450), "kde_density": (600, 400),
            "training_curves": (1000, 400), "gallery": (1200, 1600)}


def test_every_test_run_writes_real_pictures(fast_cfg, tmp_path):
    train(fast_cfg("trainer.max_epochs=2"))
    for name, size in EXPECTED.items():
        path = tmp_path / f"{name}.png"
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == size, name
            pixels = np.asarray(image.convert("L"), dtype=np.float64)
        assert pixels.std() > 10, f"{name}.png looks blank"
        assert (pixels < 128).mean() > 0.01, f"{name}.png has almost nothing drawn"
    assert not list(tmp_path.glob(".*.tmp"))  # atomic writes leave no temporary files


def test_gallery_shows_false_positives_then_false_negatives_then_true_positives():
    rows = [{"label": 0, "s": 0.9}, {"label": 0, "s": 0.1}, {"label": 1, "s": 0.2},
            {"label": 1, "s": 0.8}, {"label": 0, "s": 0.7}, {"label": 1, "s": 0.05},
            {"label": 1, "s": 0.95}]
    picked = pick_gallery_rows(rows, "s", threshold=0.5, count=6)
    assert [(r["label"], r["s"]) for r in picked] == [(0, 0.9), (0, 0.7), (1, 0.05), (1, 0.2),
                                                      (1, 0.95), (1, 0.8)]
    assert len(pick_gallery_rows(rows, "s", 0.5, count=2)) == 2


@pytest.mark.parametrize("rows", [8, 3])
def test_gallery_height_follows_the_row_count(fast_cfg, tmp_path, rows):
    train(fast_cfg("callbacks.visual_outputs.gallery_rows=" + str(rows)))
    with Image.open(tmp_path / "gallery.png") as image:
        assert image.size == (1200, 200 * rows)
