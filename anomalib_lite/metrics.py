"""Image- and pixel-level metrics from gathered scores, labels, maps and masks.

Ranking metrics come from torchmetrics' functional API on dense ranks (exact for ties and
for scores outside [0, 1]); AUPRO follows the MVTec AD reference algorithm.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import Tensor
from torchmetrics.functional.classification import (
    binary_auroc,
    binary_average_precision,
    binary_confusion_matrix,
    binary_roc,
)

# FPRs at which the detection rate is reported; 0.331 is the second seed's operating point
# (331 false positives of 1001 normal images).
FPR_TARGETS = (0.01, 0.05, 0.1, 0.331)


def dense_ranks(scores: Tensor) -> Tensor:
    """Scores → their dense ranks scaled to [0, 1]: the order and the ties are kept exactly.

    torchmetrics squashes scores outside [0, 1] with a sigmoid, which can merge close
    float32 values into ties; ranking metrics depend on the order alone.
    """
    _, inverse = torch.unique(scores, return_inverse=True)
    return inverse.double() / max(1, int(inverse.max()) if inverse.numel() else 1)


def tpr_at_fpr(scores: Tensor, labels: Tensor,
               targets: tuple[float, ...] = FPR_TARGETS) -> dict[str, float]:
    """Highest TPR reachable by a threshold whose FPR does not exceed each target."""
    fpr, tpr, _ = binary_roc(dense_ranks(scores), labels.long())
    return {f"{t:g}": float(tpr[fpr <= t + 1e-12].max()) for t in targets}


def confusion_at(scores: Tensor, labels: Tensor, threshold: float) -> dict[str, float]:
    """Confusion matrix and rates for ``score > threshold`` ⇒ anomalous."""
    if math.isnan(threshold):
        nan = float("nan")
        return {k: nan for k in ("tp", "fn", "tn", "fp", "precision", "recall", "f1", "fpr")}
    predictions = (scores > threshold).long()
    (tn, fp), (fn, tp) = binary_confusion_matrix(predictions, labels.long()).tolist()
    precision = tp / (tp + fp) if tp + fp else float("nan")
    recall = tp / (tp + fn) if tp + fn else float("nan")
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")
    fpr = fp / (fp + tn) if fp + tn else float("nan")
    return {"tp": tp, "fn": fn, "tn": tn, "fp": fp, "precision": precision, "recall": recall,
            "f1": f1, "fpr": fpr}


def image_metrics(scores: Tensor, labels: Tensor, threshold: float) -> dict[str, float | dict]:
    """AUROC, average precision (PR-AUC), mean score per class and the confusion matrix.

    With a single class present the ranking metrics are undefined: they are NaN and a
    warning says why, instead of an error in the middle of a run.
    """
    scores, labels = scores.detach().double().cpu(), labels.detach().long().cpu()
    normal, anomalous = scores[labels == 0], scores[labels == 1]
    finite = bool(torch.isfinite(scores).all())
    if normal.numel() and anomalous.numel() and finite:
        ranks = dense_ranks(scores)
        auroc = float(binary_auroc(ranks, labels))
        ap = float(binary_average_precision(ranks, labels))
        operating = tpr_at_fpr(scores, labels)
    else:
        reason = ("some scores are NaN or infinite (a diverged model?)" if not finite else
                  f"the test set holds a single class ({normal.numel()} normal, "
                  f"{anomalous.numel()} anomalous)")
        warnings.warn(f"{reason}: AUROC and PR-AUC are NaN", stacklevel=2)
        auroc = ap = float("nan")
        operating = {f"{t:g}": float("nan") for t in FPR_TARGETS}

    def mean(x: Tensor) -> float:
        return float(x.mean()) if x.numel() else float("nan")

    return {
        "image_auroc": auroc,
        "image_pr_auc": ap,
        "mean_score_normal": mean(normal),
        "mean_score_anomalous": mean(anomalous),
        "tpr_at_fpr": operating,
        "threshold": threshold,
        "confusion": confusion_at(scores, labels, threshold),
        "n_normal": int(normal.numel()),
        "n_anomalous": int(anomalous.numel()),
    }



def f1_max(scores: Tensor, labels: Tensor) -> tuple[float, float]:
    """Best F1 over all thresholds ``score >= t`` and that threshold (an oracle: it uses
    the labels). Returns ``(nan, nan)`` without positives."""
    scores, labels = scores.double().flatten(), labels.long().flatten()
    positives = int(labels.sum())
    if positives == 0:
        return float("nan"), float("nan")
    order = torch.argsort(scores, descending=True)
    sorted_scores, sorted_labels = scores[order], labels[order]
    tp = torch.cumsum(sorted_labels, 0).double()
    fp = torch.cumsum(1 - sorted_labels, 0).double()
    last_of_tie = torch.ones_like(sorted_scores, dtype=torch.bool)
    last_of_tie[:-1] = sorted_scores[1:] != sorted_scores[:-1]
    tp, fp, thresholds = tp[last_of_tie], fp[last_of_tie], sorted_scores[last_of_tie]
    f1 = 2 * tp / (tp + fp + positives)
    best = int(torch.argmax(f1))
    return float(f1[best]), float(thresholds[best])


def per_defect_auroc(scores: Tensor, labels: Tensor, defect_types: list[str]) -> dict[str, float]:
    """Image AUROC of the normal images against each defect type alone."""
    normal = labels == 0
    result: dict[str, float] = {}
    if not normal.any():
        return result
    for defect in sorted({d for d, y in zip(defect_types, labels.tolist(), strict=True) if y}):
        chosen = normal | torch.tensor([d == defect for d in defect_types])
        result[defect] = float(binary_auroc(dense_ranks(scores[chosen]), labels[chosen]))
    return result


def pixel_auroc(maps: Tensor, masks: Tensor) -> float:
    """AUROC over every pixel of every image (NaN if the masks hold a single class)."""
    values, truth = maps.double().flatten(), masks.flatten() > 0.5
    if truth.all() or not truth.any():
        return float("nan")
    return float(binary_auroc(dense_ranks(values), truth.long()))


def connected_regions(masks: Tensor) -> Tensor:
    """Connected-component ids (8-connectivity, 0 = background), unique across images."""
    from scipy import ndimage  # a scikit-learn dependency; imported where it is needed

    ids = torch.zeros(masks.shape, dtype=torch.long)
    offset = 0
    for i, mask in enumerate(masks.cpu().numpy() > 0.5):
        labelled, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=int))
        ids[i] = torch.from_numpy(labelled).long() + offset * torch.from_numpy(labelled > 0)
        offset += count
    return ids


def aupro(maps: Tensor, masks: Tensor, fpr_limit: float = 0.3) -> float:
    """Area under the per-region-overlap curve up to ``fpr_limit``, divided by it.

    The MVTec AD reference algorithm: sort pixels by score; the FPR grows by 1/#normal
    pixels per normal pixel, the PRO by 1/(#regions x region size) per defect pixel;
    integrate PRO over FPR (trapezoids) up to the limit, interpolating the last step.
    Maps and masks are (N, H, W) or (N, 1, H, W). NaN without regions or normal pixels.
    """
    maps, masks = maps.reshape(-1, *maps.shape[-2:]), masks.reshape(-1, *masks.shape[-2:])
    regions = connected_regions(masks).flatten()
    n_regions = int(regions.max())
    normal = regions == 0
    if n_regions == 0 or not normal.any():
        return float("nan")
    sizes = torch.bincount(regions, minlength=n_regions + 1).double()
    fpr_step = normal.double() / int(normal.sum())
    pro_step = torch.where(normal, torch.zeros((), dtype=torch.float64),
                           1.0 / (n_regions * sizes[regions]))
    scores = maps.double().flatten().cpu()
    order = torch.argsort(scores, descending=True)
    scores = scores[order]
    fpr, pro = torch.cumsum(fpr_step[order], 0), torch.cumsum(pro_step[order], 0)
    keep = torch.ones_like(scores, dtype=torch.bool)
    keep[:-1] = scores[1:] != scores[:-1]  # one point per distinct threshold
    zero = torch.zeros(1, dtype=torch.float64)
    fpr = torch.cat([zero, fpr[keep]]).clamp(max=1.0)
    pro = torch.cat([zero, pro[keep]]).clamp(max=1.0)
    inside = int(torch.searchsorted(fpr, torch.tensor([fpr_limit], dtype=torch.float64),
                                    right=True))
    x, y = fpr[:inside], pro[:inside]
    if inside < len(fpr) and x[-1] < fpr_limit:  # interpolate where the curve crosses
        x0, x1, y0, y1 = fpr[inside - 1], fpr[inside], pro[inside - 1], pro[inside]
        y_limit = y0 + (y1 - y0) * (fpr_limit - x0) / (x1 - x0)
        x = torch.cat([x, torch.tensor([fpr_limit], dtype=torch.float64)])
        y = torch.cat([y, y_limit.reshape(1)])
    return float(torch.trapezoid(y, x) / fpr_limit)
