"""The batch every datamodule yields and every model consumes."""

from __future__ import annotations

from typing import TypedDict

from torch import Tensor

NORMAL_DEFECT = "good"


class Sample(TypedDict):
    """One image: float (C, H, W) in [0, 1]; label 0 normal / 1 anomalous; mask (1, H, W)."""

    image: Tensor
    label: Tensor
    mask: Tensor
    path: str
    defect_type: str


class Batch(TypedDict):
    """A collated batch of :class:`Sample` (paths and defect types are lists)."""

    image: Tensor
    label: Tensor
    mask: Tensor
    path: list[str]
    defect_type: list[str]
