"""Instantiate objects from plain config dicts, allowing only known classes.

Model checkpoints carry their network, loss, optimizer and scheduler as config dicts; a
guarded instantiate keeps a tampered checkpoint from naming arbitrary callables. A target
must be ``<module>.<Class>`` where the module is an importable submodule of an allowed
package, and the class itself an ``nn.Module``, optimizer or LR scheduler defined there.
Attribute chains (``anomalib_lite.utils.io.os.system``), functions and Hydra's control
keys (``_args_``, ``_partial_``, ...) are refused, and no target may be nested.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn, optim

ALLOWED_PACKAGES = ("anomalib_lite", "torch.optim", "torch.nn")
ALLOWED_BASES = (nn.Module, optim.Optimizer, optim.lr_scheduler.LRScheduler,
                 optim.lr_scheduler.ReduceLROnPlateau)
FORBIDDEN_KEYS = ("_args_", "_partial_", "_recursive_", "_convert_")


def to_plain(cfg: Any) -> Any:
    """OmegaConf containers → resolved plain dicts/lists (safe to store in checkpoints)."""
    if isinstance(cfg, (DictConfig, ListConfig)):
        return OmegaConf.to_container(cfg, resolve=True)
    if isinstance(cfg, Mapping):
        return {k: to_plain(v) for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return [to_plain(v) for v in cfg]
    return cfg


def _in_allowed_package(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in ALLOWED_PACKAGES)


def resolve_target(target: Any, key: str) -> type:
    """Import ``target`` if it names an allowed class; raise ``ValueError`` otherwise."""
    refusal = (f"{key}._target_={target!r} is not allowed: targets must name an nn.Module, "
               f"optimizer or LR scheduler class in one of {ALLOWED_PACKAGES}")
    if not isinstance(target, str) or "." not in target:
        raise ValueError(refusal)
    module_name, _, attr = target.rpartition(".")
    if not _in_allowed_package(module_name):
        raise ValueError(refusal)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"{refusal} ({module_name!r} is not an importable module)") from err
    obj = getattr(module, attr, None)
    if not (isinstance(obj, type) and issubclass(obj, ALLOWED_BASES)
            and _in_allowed_package(obj.__module__)):
        raise ValueError(refusal)
    return obj


def check_targets(cfg: Any, key: str, top: bool = True) -> None:
    """Validate ``cfg``: one allowed top-level target, no control keys, no nested targets."""
    if isinstance(cfg, Mapping):
        for forbidden in FORBIDDEN_KEYS:
            if forbidden in cfg:
                raise ValueError(f"{key}.{forbidden} is not allowed in a stored config")
        if "_target_" in cfg:
            if not top:
                raise ValueError(f"{key}._target_: nested targets are not allowed")
            resolve_target(cfg["_target_"], key)
        for k, v in cfg.items():
            if k != "_target_":
                check_targets(v, f"{key}.{k}", top=False)
    elif isinstance(cfg, (list, tuple)):
        for i, v in enumerate(cfg):
            check_targets(v, f"{key}[{i}]", top=False)


def build(cfg: Mapping, key: str, **kwargs: Any) -> Any:
    """Instantiate ``cfg`` (a dict with ``_target_``) after :func:`check_targets`."""
    if not isinstance(cfg, Mapping) or "_target_" not in cfg:
        raise ValueError(f"{key} must be a config with a _target_, got {cfg!r}")
    check_targets(cfg, key)
    return instantiate(dict(cfg), _convert_="all", **kwargs)
