"""Experiment loggers built from config. W&B works with no account: without an API key it
runs offline (``wandb sync <run dir>`` uploads it later) and says so once. The CSV logger
keeps a resumed run's history (:class:`CSVLogger`)."""

from __future__ import annotations

import csv
import logging
import netrc
import os
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

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


class _ResumableWriter(ExperimentWriter):
    """Lightning's CSV writer, except that a resumed run keeps the rows it already wrote up
    to the checkpoint's epoch (Lightning deletes ``metrics.csv`` when it starts)."""

    def __init__(self, log_dir: str, keep_until_epoch: int | None) -> None:
        self._keep_until_epoch = keep_until_epoch
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        if self._keep_until_epoch is None or not self._fs.isfile(self.metrics_file_path):
            super()._check_log_dir_exists()
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
            reader = csv.DictReader(handle)
            rows, keys = list(reader), list(reader.fieldnames or [])
        kept = [row for row in rows if _epoch(row) is None
                or _epoch(row) <= self._keep_until_epoch]  # type: ignore[operator]
        with self._fs.open(self.metrics_file_path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(kept)
        self.metrics_keys = sorted(keys)  # new rows line up under the same header
        log.info("resumed run: kept %d of %d rows of %s (epochs <= %d)", len(kept), len(rows),
                 self.metrics_file_path, self._keep_until_epoch)


def _epoch(row: dict[str, str]) -> float | None:
    value = row.get("epoch") or ""
    try:
        return float(value)
    except ValueError:
        return None


class CSVLogger(LightningCSVLogger):
    """Lightning's CSV logger (``<save_dir>/<name>/<version>/metrics.csv``) that flushes
    every row by default (a killed run keeps what it logged) and, when a fit resumes from
    a checkpoint into the same run directory (:meth:`resume_at_epoch`), appends to the
    history instead of starting it again: rows after the checkpoint's epoch are dropped,
    since the resumed fit logs those epochs anew."""

    def __init__(self, save_dir: str | Path, name: str | None = "csv", version: str | int = "",
                 prefix: str = "", flush_logs_every_n_steps: int = 1) -> None:
        super().__init__(save_dir, name=name, version=version, prefix=prefix,
                         flush_logs_every_n_steps=flush_logs_every_n_steps)
        self._keep_until_epoch: int | None = None

    def resume_at_epoch(self, epoch: int) -> None:
        """Keep the rows of epochs ``<= epoch`` (the checkpoint's) of an existing file."""
        if self._experiment is not None:
            raise RuntimeError("resume_at_epoch() must come before the first log call")
        self._keep_until_epoch = int(epoch)

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ResumableWriter(self.log_dir, self._keep_until_epoch)
        return self._experiment
