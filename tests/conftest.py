"""Shared fixtures: real Hydra composition of the project's configs on tiny settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from anomalib_lite.train import CONFIG_DIR

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def compose_cfg(tmp_path: Path) -> Callable[..., DictConfig]:
    """Compose ``conf/train.yaml`` with overrides; outputs go to a temporary directory."""

    def _compose(*overrides: str, config_name: str = "train",
                 output_dir: Path | None = None) -> DictConfig:
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            return compose(config_name=config_name,
                           overrides=[f"paths.output_dir={output_dir or tmp_path}", *overrides])

    return _compose


TINY_SPRITES = ("data.n_train=40", "data.n_val=20", "data.n_test_normal=20",
                "data.n_test_anomalous=20")


@pytest.fixture
def fast_cfg(compose_cfg: Callable[..., DictConfig]) -> Callable[..., DictConfig]:
    """``debug=fast`` (tiny images, a few steps) plus overrides; tiny splits for the sprites."""

    def _fast(*overrides: str, output_dir: Path | None = None) -> DictConfig:
        other_data = any(o.startswith("data=") for o in overrides)
        sizes = () if other_data else TINY_SPRITES
        return compose_cfg("debug=fast", *sizes, *overrides, output_dir=output_dir)

    return _fast
