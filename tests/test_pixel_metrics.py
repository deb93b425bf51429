"""Pixel metrics, F1-max and per-defect AUROC against scikit-learn or small references."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from sklearn.metrics import precision_recall_curve, roc_auc_score

from anomalib_lite.metrics import aupro, f1_max, per_defect_auroc, pixel_auroc


def reference_aupro(maps: np.ndarray, masks: np.ndarray, limit: float = 0.3) -> float:
    """Brute force: every distinct score as a threshold, PRO averaged over regions."""
    regions = []
    for i, mask in enumerate(masks):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3)))
        regions += [(i, labelled == r) for r in range(1, count + 1)]
    normal = masks == 0
    points = [(0.0, 0.0)]
    for t in np.unique(maps)[::-1]:
        pred = maps >= t
        fpr = (pred & normal).sum() / normal.sum()
        pro = np.mean([(pred[i] & region).sum() / region.sum() for i, region in regions])
        points.append((fpr, pro))
    x, y = map(np.array, zip(*points, strict=True))
    if x[-1] > limit:
        j = np.searchsorted(x, limit, side="right")
        y_limit = y[j - 1] + (y[j] - y[j - 1]) * (limit - x[j - 1]) / (x[j] - x[j - 1])
        x, y = np.append(x[:j], limit), np.append(y[:j], y_limit)
    return float(np.trapezoid(y, x) / limit)


def random_masks(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    masks = np.zeros((n, size, size), dtype=np.uint8)
    for i in range(n):
        for _ in range(rng.integers(0, 3)):
            y, x = rng.integers(0, size - 3, 2)
            masks[i, y:y + rng.integers(1, 5), x:x + rng.integers(1, 5)] = 1
    masks[0, :2, :2] = 1  # at least one region
    return masks


@pytest.mark.parametrize("case", ["random", "ties", "all_equal", "informative"])
def test_aupro_matches_the_reference(case):
    rng = np.random.default_rng(0)
    masks = random_masks(rng, 6, 12)
    maps = rng.random(masks.shape)
    if case == "ties":
        maps = np.round(maps, 1)
    elif case == "all_equal":
        maps = np.full(masks.shape, 0.5)
    elif case == "informative":
        maps = maps * 0.5 + masks * rng.random(masks.shape)
    expected = reference_aupro(maps, masks)
    assert aupro(torch.tensor(maps), torch.tensor(masks)) == pytest.approx(expected, abs=1e-6)


def test_aupro_perfect_and_undefined():
    masks = np.zeros((2, 8, 8), dtype=np.uint8)
    masks[0, 2:4, 2:5] = 1
    assert aupro(torch.tensor(masks * 1.0), torch.tensor(masks)) == pytest.approx(1.0)
    assert math.isnan(aupro(torch.rand(2, 8, 8), torch.zeros(2, 8, 8)))


@pytest.mark.parametrize("seed", range(3))
def test_pixel_auroc_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    masks = random_masks(rng, 5, 10)
    maps = np.round(rng.random(masks.shape) + masks * rng.random(), 2) * 40  # ties, > 1
    expected = roc_auc_score(masks.flatten(), maps.flatten())
    got = pixel_auroc(torch.tensor(maps).unsqueeze(1), torch.tensor(masks).unsqueeze(1))
    assert got == pytest.approx(expected, abs=1e-6)
    assert math.isnan(pixel_auroc(torch.rand(2, 1, 4, 4), torch.zeros(2, 1, 4, 4)))


@pytest.mark.parametrize("seed", range(4))
def test_f1_max_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 200)
    scores = np.round(rng.normal(size=200) + labels, 1 if seed % 2 else 6)
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    best, threshold = f1_max(torch.tensor(scores), torch.tensor(labels))
    assert best == pytest.approx(f1[:-1].max(), abs=1e-6)
    assert threshold == pytest.approx(thresholds[np.argmax(f1[:-1])])
    assert all(math.isnan(v) for v in f1_max(torch.rand(5), torch.zeros(5)))


def test_per_defect_auroc_matches_sklearn_on_each_subset():
    rng = np.random.default_rng(1)
    defects = ["good"] * 30 + ["crack"] * 20 + ["hole"] * 15
    labels = np.array([0 if d == "good" else 1 for d in defects])
    scores = rng.normal(size=len(defects)) + np.array([{"good": 0, "crack": 2, "hole": 0.3}[d]
                                                       for d in defects])
    result = per_defect_auroc(torch.tensor(scores), torch.tensor(labels), defects)
    for defect in ("crack", "hole"):
        chosen = np.array([d in ("good", defect) for d in defects])
        assert result[defect] == pytest.approx(roc_auc_score(labels[chosen], scores[chosen]))
    assert set(result) == {"crack", "hole"}
