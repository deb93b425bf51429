"""Instantiate objects from plain config dicts, allowing only known import paths.

Model checkpoints carry their network, loss and optimizer as config dicts; a guarded
instantiate keeps a tampered checkpoint from naming arbitrary callables (``os.system``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf

ALLOWED_PREFIXES = ("anomalib_lite.", "torch.optim.", "torch.nn.")


def to_plain(cfg: Any) -> Any:
    """OmegaConf containers → resolved plain dicts/lists (safe to store in checkpoints)."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    if isinstance(cfg, Mapping):
        return {k: to_plain(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_plain(v) for v in cfg]
    return cfg


def check_targets(cfg: Any, key: str) -> None:
    """Raise if any ``_target_`` in ``cfg`` lies outside :data:`ALLOWED_PREFIXES`."""
    if isinstance(cfg, Mapping):
        target = cfg.get("_target_")
        if target is not None and not str(target).startswith(ALLOWED_PREFIXES):
            raise ValueError(f"{key}._target_={target!r} is not allowed: targets must start with "
                             f"one of {ALLOWED_PREFIXES}")
        for k, v in cfg.items():
            check_targets(v, f"{key}.{k}")
    elif isinstance(cfg, (list, tuple)):
        for i, v in enumerate(cfg):
            check_targets(v, f"{key}[{i}]")


def build(cfg: Mapping, key: str, **kwargs: Any) -> Any:
    """Instantiate ``cfg`` (a dict with ``_target_``) after checking every target in it."""
    if not isinstance(cfg, Mapping) or "_target_" not in cfg:
        raise ValueError(f"{key} must be a config with a _target_, got {cfg!r}")
    check_targets(cfg, key)
    return instantiate(dict(cfg), _convert_="all", **kwargs)
