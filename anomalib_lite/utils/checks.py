"""Up-front validation of configuration values, with messages that name the key and the fix."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and how to fix it."""


def require(condition: bool, key: str, value: Any, expected: str) -> None:
    """Raise :class:`ConfigError` naming ``key`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(
            f"{key}={value!r} is invalid: expected {expected} (override it, e.g. {key}=...)"
        )


def positive_int(key: str, value: Any) -> int:
    require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
            key, value, "a positive integer")
    return int(value)


def non_negative_int(key: str, value: Any) -> int:
    require(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
            key, value, "an integer >= 0")
    return int(value)


def in_range(key: str, value: Any, low: float, high: float) -> float:
    require(isinstance(value, (int, float)) and low <= value <= high,
            key, value, f"a number in [{low}, {high}]")
    return float(value)


def one_of(key: str, value: Any, choices: Iterable[str]) -> str:
    choices = list(choices)
    require(value in choices, key, value, f"one of {choices}")
    return value
