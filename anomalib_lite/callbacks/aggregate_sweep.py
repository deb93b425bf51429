"""Hydra callback: aggregate a multirun's results when its last job has ended."""

from __future__ import annotations

import logging
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)


class AggregateSweep(Callback):
    """Write ``<sweep dir>/aggregate/`` (see :mod:`anomalib_lite.aggregate`) at multirun end.

    A failure here is logged, not raised: the jobs' own results are already on disk and
    ``python -m anomalib_lite.aggregate <sweep dir>`` can be re-run by hand.
    """

    def __init__(self, score: str | None = None) -> None:
        self.score = score

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        from anomalib_lite.aggregate import aggregate

        sweep_dir = config.hydra.sweep.dir
        try:
            summary = aggregate(sweep_dir, score=self.score)
        except Exception:
            log.exception("could not aggregate %s; run python -m anomalib_lite.aggregate %s",
                          sweep_dir, sweep_dir)
            return
        print(summary["markdown"])
        log.info("sweep tables written to %s", summary["files"]["summary"].parent)
