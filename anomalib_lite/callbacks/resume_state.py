"""What a resumed fit carries on from the run it resumes: the fit's wall time so far and the
per-epoch history (losses, learning rate) that ``training_curves.png`` draws.

Both travel in every full checkpoint (``last.ckpt``) as this callback's state; resuming
from one (``ckpt_path=``) restores them, so the figure shows every epoch and
``train.wall_time_s`` counts the time before the checkpoint too (the time spent after it
by the interrupted run is redone, not counted).
"""

from __future__ import annotations

import time
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer


class ResumeState(Callback):
    """Saves and restores the fit's wall time and the module's ``history``."""

    def __init__(self) -> None:
        self.previous_wall_time_s = 0.0  # of the runs before this one (restored)
        self._start: float | None = None
        self._module: LightningModule | None = None
        self._restored_history: list[dict[str, float]] = []

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._module = pl_module
        if stage == "fit" and self._start is None:
            self._start = time.perf_counter()

    @property
    def fit_wall_time_s(self) -> float:
        """Wall time of the fit so far, the resumed runs' included."""
        now = 0.0 if self._start is None else time.perf_counter() - self._start
        return self.previous_wall_time_s + now

    def state_dict(self) -> dict[str, Any]:
        history = getattr(self._module, "history", None) or []
        return {"fit_wall_time_s": self.fit_wall_time_s,
                "history": [dict(entry) for entry in history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.previous_wall_time_s = float(state_dict.get("fit_wall_time_s", 0.0))
        self._restored_history = [dict(e) for e in state_dict.get("history", [])]

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        history = getattr(pl_module, "history", None)
        if self._restored_history and isinstance(history, list):
            first = trainer.current_epoch  # the epoch this fit starts at
            history[:0] = [e for e in self._restored_history if e.get("epoch", 0) < first]
        self._restored_history = []
