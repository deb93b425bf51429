"""Experiment loggers built from config. W&B works with no account: without an API key it
runs offline (``wandb sync <run dir>`` uploads it later) and says so once."""

from __future__ import annotations

import logging
import netrc
import os
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.loggers import WandbLogger

log = logging.getLogger(__name__)
_told_offline = False


def wandb_api_key_available() -> bool:
    """True if W&B could authenticate: ``WANDB_API_KEY`` or a netrc entry for its host."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logger(save_dir: str | Path, project: str = "anomalib_lite", name: str | None = None,
                 group: str | None = None, tags: Sequence[str] = (),
                 offline: bool | None = None) -> WandbLogger:
    """Lightning's W&B logger; ``offline=None`` means offline exactly when no key is set."""
    global _told_offline
    if offline is None:
        offline = not wandb_api_key_available() or os.environ.get("WANDB_MODE") == "offline"
    if offline and not _told_offline:
        log.warning("W&B: no API key found, logging offline to %s/wandb; upload later with "
                    "`wandb sync <that folder>/offline-run-*`", save_dir)
        _told_offline = True
    Path(save_dir).mkdir(parents=True, exist_ok=True)
    return WandbLogger(save_dir=str(save_dir), project=project, name=name or None,
                       group=group or None, tags=list(tags), offline=offline)
