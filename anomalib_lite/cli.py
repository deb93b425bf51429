"""What the command-line apps (train, predict, export) share: where the configs are, how
errors are shown, the run's log and console.

- :data:`CONFIG_DIR`: the Hydra configs. In a source checkout they are the repository's
  ``conf/``; an installed package (wheel, ``pip install .``) carries them as
  ``anomalib_lite/conf`` (see ``[tool.setuptools]`` in pyproject.toml).
- Errors of the user's input (:data:`MESSAGE_ERRORS`: a config value, the dataset's files,
  a checkpoint) are printed as their message alone and exit with status 2; so is a config
  key that does not exist (``trainer.max_epoch=1``), with the close keys it may have meant.
  Any other error prints its traceback and exits with 1. ``HYDRA_FULL_ERROR=1`` shows
  tracebacks for all of them.
- :func:`start_run`: the job's first step; prints the run directory and sends Lightning's
  log and warnings to ``<run dir>/<app>.log`` too (:mod:`anomalib_lite.utils.logs`).
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import torch
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf

from anomalib_lite.data.file_datamodule import DatasetLayoutError
from anomalib_lite.data.image_io import ImageLoadError
from anomalib_lite.deploy.checkpoint import CheckpointError
from anomalib_lite.utils.checks import ConfigError
from anomalib_lite.utils.logs import capture_run_log, silence_known_noise, to_log_files

log = logging.getLogger(__name__)

USAGE_EXIT = 2  # a config value, the data or a checkpoint given to the app is wrong
MESSAGE_ERRORS = (ConfigError, DatasetLayoutError, CheckpointError, ImageLoadError)
FULL_ERROR_ENV = "HYDRA_FULL_ERROR"


def _config_dir() -> str:
    """``<package>/conf`` when installed, else the checkout's ``conf/`` beside the package."""
    package = Path(__file__).resolve().parent
    candidates = (package / "conf", package.parent / "conf")
    for candidate in candidates:
        if (candidate / "train.yaml").is_file():
            return str(candidate)
    raise RuntimeError(f"anomalib_lite's configs are missing: no train.yaml in "
                       f"{' or '.join(map(str, candidates))} (a broken install: reinstall it)")


CONFIG_DIR = _config_dir()


# ------------------------------------------------------------------ errors
def message_error(error: BaseException | None) -> BaseException | None:
    """``error`` or the cause it wraps (Hydra wraps constructor errors) if it is one of
    :data:`MESSAGE_ERRORS`, whose message says what is wrong and how to fix it."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, MESSAGE_ERRORS):
            return error
        seen.add(id(error))
        error = error.__cause__
    return None


_user_full_errors: bool | None = None  # the user's HYDRA_FULL_ERROR while run_app runs


def full_errors_requested() -> bool:
    """Whether the user asked for tracebacks (``HYDRA_FULL_ERROR=1``)."""
    if _user_full_errors is not None:
        return _user_full_errors
    return os.environ.get(FULL_ERROR_ENV, "").lower() in ("1", "true", "yes")


def exit_with_message(message: str, code: int = USAGE_EXIT, prefix: str = "Error") -> NoReturn:
    """Print ``<prefix>: message`` on stderr (and into the run's log); exit with ``code``."""
    to_log_files(f"{prefix}: {message}", logging.ERROR)
    sys.stderr.write(f"{prefix}: {message}\n")
    sys.stderr.flush()
    raise SystemExit(code)


def exit_on_message_error(error: BaseException) -> None:
    """Exit with the message of ``error`` (status 2) if it is an input error; else return."""
    shown = message_error(error)
    if shown is not None and not full_errors_requested():
        exit_with_message(str(shown))


# ------------------------------------------------------------------ unknown keys
_OVERRIDE_KEY = re.compile(r"Could not override '([^']+)'")
_MIRROR = re.compile(r"\$\{([\w.]+)\}")


def _group_choices(argv: list[str]) -> list[str]:
    """The ``group=option`` overrides of ``argv`` (first option of a sweep)."""
    choices = []
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq or "." in key or key.startswith(("+", "~", "hydra")) or "(" in value:
            continue
        if (Path(CONFIG_DIR) / key).is_dir():
            choices.append(f"{key}={value.split(',')[0]}")
    return choices


def key_hint(tree: Any, key: str) -> str | None:
    """Why ``key`` is not in the config ``tree`` (plain containers, interpolations kept as
    strings) and what was meant, or None if ``key`` is there."""
    parts = key.lstrip("+~").split(".")
    node = tree
    for i, part in enumerate(parts):
        here = ".".join(parts[:i])
        if isinstance(node, str) and (mirror := _MIRROR.fullmatch(node)):
            target = ".".join([mirror.group(1), *parts[i:]])
            return (f"{here} is {node}: it repeats {mirror.group(1)}, so it cannot be set on "
                    f"its own; set {target}=... instead")
        if not isinstance(node, dict):
            return f"{here} is a value ({node!r}), it has no key '{part}'"
        if part in node:
            node = node[part]
            continue
        keys = [str(k) for k in node]
        last = i == len(parts) - 1  # else the key holds more keys: only nodes can be meant
        candidates = [k for k in keys if last or isinstance(node[k], dict)
                      or (isinstance(node[k], str) and _MIRROR.fullmatch(node[k]))]
        close = difflib.get_close_matches(part, candidates, n=3, cutoff=0.6)
        where = here or "the config"
        if close:
            meant = " or ".join(".".join([*parts[:i], c, *parts[i + 1:]]) for c in close)
            return f"{where} has no key '{part}'. Did you mean {meant}?"
        listed = sorted(k for k in keys if not k.startswith("_"))
        return f"{where} has no key '{part}'; its keys are {', '.join(listed)}"
    return None


def unknown_key_message(error: BaseException, config_name: str, argv: list[str]) -> str | None:
    """A message for an override of a key the composed config does not have."""
    match = _OVERRIDE_KEY.search(str(error))
    if match is None:
        return None
    key = match.group(1)
    try:
        from hydra import compose, initialize_config_dir

        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name, overrides=_group_choices(argv))
        tree = OmegaConf.to_container(cfg, resolve=False)
    except Exception:  # a hint is best effort: Hydra's own message stays
        return None
    hint = key_hint(tree, key)
    return None if hint is None else f"cannot override {key}: {hint}"


# ------------------------------------------------------------------ running an app
def run_app(hydra_main: Callable[[], Any], config_name: str,
            argv: list[str] | None = None) -> Any:
    """Run a ``@hydra.main`` app; composition errors (unknown keys, options or groups) are
    shown as messages with exit status 2 (see the module docstring)."""
    global _user_full_errors
    silence_known_noise()
    argv = sys.argv[1:] if argv is None else argv
    user_setting = os.environ.get(FULL_ERROR_ENV)
    _user_full_errors = full_errors_requested()
    os.environ[FULL_ERROR_ENV] = "1"  # Hydra then raises instead of printing and exiting
    try:
        return hydra_main()
    except CompactHydraException as error:
        _restore_env(user_setting)
        if full_errors_requested():
            raise
        message = unknown_key_message(error, config_name, argv)
        if message is None:
            cause = error.__cause__
            detail = f"\n{cause}" if cause is not None and str(cause) not in str(error) else ""
            message = f"{error}{detail}"
        exit_with_message(message)
    except Exception as error:
        _restore_env(user_setting)
        if full_errors_requested():
            raise
        traceback.print_exception(error)
        sys.stderr.write(f"\nSet the environment variable {FULL_ERROR_ENV}=1 for Hydra's "
                         "complete stack trace.\n")
        raise SystemExit(1) from None
    finally:
        _restore_env(user_setting)
        _user_full_errors = None


def _restore_env(value: str | None) -> None:
    if value is None:
        os.environ.pop(FULL_ERROR_ENV, None)
    else:
        os.environ[FULL_ERROR_ENV] = value


def set_torch_threads(cfg: DictConfig) -> None:
    """``torch_threads``: CPU threads for torch (null: torch's default, all cores)."""
    threads = cfg.get("torch_threads")
    if threads is None:
        return
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        raise ConfigError(f"torch_threads={threads!r} is invalid: expected a positive integer "
                          "or null (torch's default: all cores)")
    torch.set_num_threads(threads)


def start_run(cfg: DictConfig) -> Path:
    """A job's first step: quiet known noise, log to the run's file, print the run directory."""
    silence_known_noise()
    capture_run_log()
    output_dir = Path(cfg.paths.output_dir)
    if HydraConfig.initialized():
        log.info("run directory: %s", output_dir)
    return output_dir
