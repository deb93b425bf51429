"""The run's log file (Hydra's ``<run dir>/<app>.log``) and known third-party console noise.

Hydra configures logging when a job starts: the root logger writes to the console and to
``<run dir>/<app>.log``. Lightning's loggers do not propagate to the root (Lightning gives
them their own console handler when it is imported first), and the rich tables and
warnings go straight to the terminal; :func:`capture_run_log` sends all of them to the log
file too, leaving the console as it was. :func:`silence_known_noise` drops a short list of
named third-party messages (advertisements, deprecations inside other libraries); nothing
else is filtered.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

# logger names whose records do not reach the root logger's handlers
NON_PROPAGATING = ("lightning.pytorch", "lightning.fabric")
# (logger, message fragment) of third-party log records that are advertisements
NOISY_RECORDS = (
    ("lightning.pytorch.utilities.rank_zero", "try installing [litlogger]"),
)
# (message regex, category) of third-party warnings about code that is not ours
NOISY_WARNINGS: tuple[tuple[str, type[Warning]], ...] = (
    # torch deprecated its LeafSpec; Lightning's own pytree helper still uses it
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning),
)

_attached: list[tuple[logging.Logger, logging.Handler]] = []
_original_showwarning: Callable[..., Any] | None = None


class _DropMessages(logging.Filter):
    def __init__(self, fragment: str) -> None:
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


def silence_known_noise() -> None:
    """Drop the named third-party advertisements and deprecation warnings (idempotent)."""
    for name, fragment in NOISY_RECORDS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and f.fragment == fragment
                   for f in logger.filters):
            logger.addFilter(_DropMessages(fragment))
    for message, category in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)


def log_files() -> list[logging.FileHandler]:
    """The root logger's file handlers: Hydra's ``<run dir>/<app>.log`` in an app run."""
    return [h for h in logging.getLogger().handlers if isinstance(h, logging.FileHandler)]


def to_log_files(text: str, level: int = logging.INFO, name: str = "anomalib_lite") -> None:
    """Write ``text`` to the run's log file only (it was already shown on the console)."""
    if not text.strip():
        return
    text = text.rstrip("\n")
    if "\n" in text:  # a table or a listing: start it on its own line
        text = "\n" + text
    record = logging.LogRecord(name, level, __file__, 0, text, None, None)
    for handler in log_files():
        if record.levelno >= handler.level:
            handler.handle(record)


def _showwarning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
    assert _original_showwarning is not None
    _original_showwarning(message, category, filename, lineno, file, line)
    to_log_files(warnings.formatwarning(message, category, filename, lineno, line),
                 logging.WARNING, "py.warnings")


def capture_run_log() -> None:
    """Also send Lightning's log records and every shown warning to the run's log file.

    Called at the start of each job: a multirun's next job gets its own file.
    """
    global _original_showwarning
    for logger, handler in _attached:
        logger.removeHandler(handler)
    _attached.clear()
    for name in NON_PROPAGATING:
        logger = logging.getLogger(name)
        if logger.propagate:
            continue
        for handler in log_files():
            logger.addHandler(handler)
            _attached.append((logger, handler))
    if _original_showwarning is None:
        _original_showwarning = warnings.showwarning
        warnings.showwarning = _showwarning
