"""Buffers whose shapes are only known once a model is fitted (memory banks, projections)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn


def take_fitted_shapes(module: nn.Module, state_dict: Mapping[str, Any], prefix: str,
                       names: Iterable[str]) -> None:
    """Give ``module``'s buffers ``names`` the shapes they have in ``state_dict`` (call from
    ``_load_from_state_dict`` before the default loading), so a fitted model loads into a
    freshly built, unfitted one."""
    for name in names:
        if prefix + name in state_dict:
            setattr(module, name, torch.empty_like(state_dict[prefix + name]))
