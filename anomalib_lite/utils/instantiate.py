"""Instantiate objects from plain config dicts, allowing only known classes.

Model checkpoints carry their model, loss, optimizer and scheduler as config dicts; a
guarded instantiate keeps a tampered checkpoint from naming arbitrary callables. A target
must be ``<module>.<Class>`` where the module is an importable submodule of an allowed
package, and the class itself an ``nn.Module``, optimizer or LR scheduler defined there.
Attribute chains (``anomalib_lite.utils.io.os.system``), functions and Hydra's control
keys (``_args_``, ``_partial_``, ...) are refused. Nested configs with a target are
checked the same way but never instantiated here: the outer class builds them itself with
:func:`build` (so every object is built under the allow-list).

The allowed packages are ``anomalib_lite``, ``torch.optim`` and ``torch.nn``, plus those
given to :func:`allow_packages` (the apps' ``allowed_packages`` config key: a user's own
model package, or ``torchvision.models``).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from torch import nn, optim

from anomalib_lite.utils.checks import ConfigError

DEFAULT_PACKAGES = ("anomalib_lite", "torch.optim", "torch.nn")
_PACKAGE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_extra_packages: list[str] = []
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


def allow_packages(packages: Iterable[str], key: str = "allowed_packages") -> None:
    """Also allow the classes of ``packages`` (dotted module names) as targets."""
    if isinstance(packages, str):
        packages = [packages]
    for package in packages:
        if not (isinstance(package, str) and _PACKAGE_NAME.fullmatch(package)):
            raise ValueError(f"{key}: {package!r} is not a package name (e.g. my_models or "
                             "torchvision.models)")
        if package not in _extra_packages:
            _extra_packages.append(package)


def allowed_packages() -> tuple[str, ...]:
    return (*DEFAULT_PACKAGES, *_extra_packages)


def _in_allowed_package(name: str) -> bool:
    return any(name == p or name.startswith(p + ".") for p in allowed_packages())


def resolve_target(target: Any, key: str) -> type:
    """Import ``target`` if it names an allowed class; raise ``ValueError`` otherwise."""
    refusal = (f"{key}._target_={target!r} is not allowed: targets must name an nn.Module, "
               f"optimizer or LR scheduler class in one of {allowed_packages()} (allow a "
               "package of your own with allowed_packages=[...])")
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


def check_targets(cfg: Any, key: str) -> None:
    """Validate ``cfg``: every target (nested ones too) allowed, no control keys."""
    if isinstance(cfg, Mapping):
        for forbidden in FORBIDDEN_KEYS:
            if forbidden in cfg:
                raise ValueError(f"{key}.{forbidden} is not allowed in a stored config")
        if "_target_" in cfg:
            resolve_target(cfg["_target_"], key)
        for k, v in cfg.items():
            if k != "_target_":
                check_targets(v, f"{key}.{k}")
    elif isinstance(cfg, (list, tuple)):
        for i, v in enumerate(cfg):
            check_targets(v, f"{key}[{i}]")


def build(cfg: Mapping, key: str, **kwargs: Any) -> Any:
    """Instantiate ``cfg`` (a dict with ``_target_``) after :func:`check_targets`; nested
    configs reach the constructor as plain dicts."""
    if not isinstance(cfg, Mapping) or "_target_" not in cfg:
        raise ValueError(f"{key} must be a config with a _target_, got {cfg!r}")
    check_targets(cfg, key)
    try:
        return instantiate(dict(cfg), _convert_="all", _recursive_=False, **kwargs)
    except InstantiationException as err:
        if isinstance(err.__cause__, ConfigError):  # the message names the key: show it alone
            raise err.__cause__ from None
        raise
