"""Unsupervised decision thresholds fitted on the scores of normal validation images."""

from __future__ import annotations

import torch
from torch import Tensor

THRESHOLD_METHODS = ("quantile", "mean_std")


def fit_threshold(normal_scores: Tensor, method: str = "quantile", quantile: float = 0.99,
                  k: float = 3.0) -> float:
    """``quantile``: that quantile of the normal scores; ``mean_std``: mean + k * std.

    Returns NaN when there are no normal scores (no decision can be made).
    """
    scores = normal_scores.detach().double().flatten()
    if scores.numel() == 0:
        return float("nan")
    if method == "quantile":
        if not 0 < quantile <= 1:
            raise ValueError(f"score.threshold.quantile must be in (0, 1], got {quantile}")
        return float(torch.quantile(scores, quantile))
    if method == "mean_std":
        std = scores.std() if scores.numel() > 1 else scores.new_zeros(())
        return float(scores.mean() + k * std)
    raise ValueError(f"score.threshold.method={method!r} is unknown; choose one of "
                     f"{THRESHOLD_METHODS}")
