"""Image scores from an anomaly map: mean, mean of the top-k fraction of pixels, max."""

from __future__ import annotations

import math

from torch import Tensor

REDUCTIONS = ("mean", "topk", "max")


def reduce_map(amap: Tensor, reduction: str, k: float = 0.01) -> Tensor:
    """Reduce maps (N, 1, H, W) to scores (N,). ``topk`` averages the top ``k`` fraction."""
    flat = amap.flatten(1)
    if reduction == "mean":
        return flat.mean(dim=1)
    if reduction == "max":
        return flat.amax(dim=1)
    if reduction == "topk":
        if not 0 < k <= 1:
            raise ValueError(f"top-k fraction must be in (0, 1], got {k}")
        count = max(1, math.ceil(k * flat.shape[1]))
        return flat.topk(count, dim=1).values.mean(dim=1)
    raise ValueError(f"unknown reduction {reduction!r}; choose one of {REDUCTIONS}")
