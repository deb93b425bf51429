"""Image-level metrics from gathered scores and labels (torchmetrics' functional API)."""

from __future__ import annotations

import math
import warnings

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

