"""An exponential moving average (EMA) of the model's trained weights.

After every optimizer step the average moves towards the current weights,
``ema = d * ema + (1 - d) * w`` with ``d = min(decay, (1 + step) / (10 + step))`` (a short
warm-up, so that early averages are not dominated by the initial weights). Validation,
every checkpoint and the final model use the average; training steps use the raw weights,
which a checkpoint also carries (``ema_raw_weights``) so that a resumed fit goes on from
them. Only the network's trained parameters and its floating-point buffers (batch-norm
statistics) are averaged: frozen backbones and the fitted thresholds are left alone.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor

from anomalib_lite.utils.checks import ConfigError

RAW_KEY = "ema_raw_weights"


def ema_decay(decay: float, step: int) -> float:
    """The decay used after optimizer step ``step`` (0-based): warm-up, then ``decay``."""
    return min(decay, (1.0 + step) / (10.0 + step))


class EMA(pl.Callback):
    """Validate, checkpoint and finish with an EMA of the weights; ``decay=None``: off."""

    def __init__(self, decay: float | None = None) -> None:
        if decay is not None and not 0.0 < decay < 1.0:
            raise ConfigError(f"callbacks.ema.decay={decay!r}: a number in (0, 1), e.g. 0.999, "
                             "or null to train without an average")
        self.decay = decay
        self._names: list[str] = []
        self._shadow: list[Tensor] = []
        self._tensors: list[Tensor] = []  # the model's tensors, in self._names order
        self._raw: dict[str, Tensor] | None = None
        self._swapped = False
        self._last_step = 0

    # the averaged tensors: "net.*" trained parameters and floating-point buffers
    @staticmethod
    def _tracked(pl_module: pl.LightningModule) -> dict[str, Tensor]:
        net = pl_module.net
        tensors = {f"net.{n}": p for n, p in net.named_parameters() if p.requires_grad}
        tensors.update({f"net.{n}": b for n, b in net.named_buffers()
                        if b.is_floating_point()})
        return tensors

    def _current(self, pl_module: pl.LightningModule) -> list[Tensor]:
        if not self._tensors:  # found once per fit; loading weights copies into them
            tracked = self._tracked(pl_module)
            self._tensors = [tracked[n].data for n in self._names]
        return self._tensors

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.decay is None:
            return
        tracked = self._tracked(pl_module)
        self._names = list(tracked)
        self._tensors = []
        # a resumed fit: the model holds the average (the checkpoint's weights), the raw
        # weights come from the checkpoint's own entry
        self._shadow = [t.detach().clone() for t in tracked.values()]
        if self._raw is not None:
            for name, tensor in tracked.items():
                tensor.data.copy_(self._raw[name])
            self._raw = None
        self._last_step = trainer.global_step
        self._swapped = False

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.decay is None or trainer.global_step <= self._last_step:
            return
        weight = 1.0 - ema_decay(self.decay, trainer.global_step - 1)
        with torch.no_grad():
            torch._foreach_lerp_(self._shadow, self._current(pl_module), weight)
        self._last_step = trainer.global_step

    def _swap(self, pl_module: pl.LightningModule) -> None:
        with torch.no_grad():
            for average, current in zip(self._shadow, self._current(pl_module), strict=True):
                kept = current.clone()
                current.copy_(average)
                average.copy_(kept)
        self._swapped = not self._swapped

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        fitting = trainer.state.fn == TrainerFn.FITTING  # validation inside fit
        if self.decay is not None and fitting and not trainer.sanity_checking \
                and not self._swapped and self._shadow:
            self._swap(pl_module)  # stays until the next training step (checkpoints saved)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        if self._swapped:
            self._swap(pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.decay is not None and self._shadow and not self._swapped:
            self._swap(pl_module)  # the fitted model is the average

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if self.decay is None or not self._shadow:
            return
        state = checkpoint["state_dict"]
        current = self._current(pl_module)
        average, raw = (current, self._shadow) if self._swapped else (self._shadow, current)
        for name, avg, weights in zip(self._names, average, raw, strict=True):
            state[name] = avg.detach().clone()
            checkpoint.setdefault(RAW_KEY, {})[name] = weights.detach().clone()

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if self.decay is not None:
            self._raw = checkpoint.get(RAW_KEY)
