"""The model protocol: what an anomaly model is, stated explicitly and checked when built.

An anomaly model is a plain ``nn.Module`` subclassing :class:`AnomalyModel`. It overrides

- ``anomaly_maps(images, names)`` → ``{name: (N, 1, H, W) map}`` (every model), and
  declares the names it can make in ``map_names``;
- ``training_objective(batch, generator)`` → ``(loss, parts)`` if an optimizer trains it;
- ``fit(dataloader)`` if it is fitted in one pass over the normal training images (a
  memory bank, PCA, a feature cache); a model may have both (``fit`` runs first);
- optionally ``validation_objective`` (default: the training objective), ``embedding``
  (the latent KDE), ``synthesize`` (synthetic validation anomalies, with
  ``synthesizes = True``) and ``reconstruct`` (pictures).

:class:`~anomalib_lite.models.module.AnomalyModule` trains, validates and scores any such
model without knowing its kind.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from anomalib_lite.data.batch import Batch
from anomalib_lite.utils.checks import ConfigError
from anomalib_lite.utils.instantiate import build


class AnomalyModel(nn.Module):
    """Base class of the anomaly models; see the module docstring for the protocol."""

    #: names of the maps :meth:`anomaly_maps` can make (the scores may use any of them)
    map_names: tuple[str, ...] = ()
    #: whether :meth:`synthesize` makes synthetic anomalies (for synthetic validation)
    synthesizes: bool = False

    def anomaly_maps(self, images: Tensor, names: Iterable[str] | None = None
                     ) -> dict[str, Tensor]:
        """Anomaly maps (N, 1, h, w) of float images (N, C, H, W) in [0, 1], in float32.

        ``names``: the maps needed (None: all of ``map_names``); others may be skipped.
        """
        raise NotImplementedError

    def training_objective(self, batch: Batch, generator: torch.Generator
                           ) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss of a training batch and its named parts (logged as ``train/<part>``)."""
        raise NotImplementedError

    def validation_objective(self, batch: Batch, generator: torch.Generator
                             ) -> tuple[Tensor, dict[str, Tensor]]:
        """The validation loss (``val/loss``); ``generator`` is seeded per batch."""
        return self.training_objective(batch, generator)

    def fit(self, dataloader: Iterable[Batch]) -> None:
        """Fit on the normal training images in one pass (before any gradient step)."""
        raise NotImplementedError

    def embedding(self, images: Tensor) -> Tensor:
        """A latent code per image, (N, D) or (N, C, h, w), for the latent KDE."""
        raise NotImplementedError

    def synthesize(self, images: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Synthetic anomalies on normal images: ``(corrupted, masks (N, 1, H, W))``."""
        raise NotImplementedError

    def reconstruct(self, images: Tensor) -> Tensor:
        """An image-space reconstruction of ``images`` (shown in pictures), if the model has one."""
        raise NotImplementedError

    # ------------------------------------------------------------- capabilities
    def _overrides(self, method: str) -> bool:
        return getattr(type(self), method) is not getattr(AnomalyModel, method)

    @property
    def trainable(self) -> bool:
        """Trained by gradient steps (it overrides ``training_objective``)."""
        return self._overrides("training_objective")

    @property
    def fittable(self) -> bool:
        """Fitted in one pass over the training images (it overrides ``fit``)."""
        return self._overrides("fit")

    @property
    def has_embedding(self) -> bool:
        return self._overrides("embedding")

    @property
    def has_reconstruction(self) -> bool:
        return self._overrides("reconstruct")

    def default_monitor(self) -> dict[str, str] | None:
        """The validation metric that picks the best checkpoint (None: keep the last)."""
        return {"metric": "val/loss", "mode": "min"} if self.trainable else None


def check_model(net: Any, key: str, maps_needed: Iterable[str], needs_embedding: bool) -> None:
    """Raise :class:`ConfigError` naming what ``net`` lacks for the configured run."""
    name = type(net).__name__
    if not isinstance(net, AnomalyModel):
        raise ConfigError(f"{key}: {name} is not an anomaly model: subclass "
                          "anomalib_lite.models.AnomalyModel and implement anomaly_maps() and "
                          "training_objective() or fit()")
    if not net._overrides("anomaly_maps"):
        raise ConfigError(f"{key}: {name} does not implement anomaly_maps(images, names)")
    if not (net.trainable or net.fittable):
        raise ConfigError(f"{key}: {name} implements neither training_objective() (trained "
                          "by an optimizer) nor fit() (fitted in one pass)")
    missing = sorted(set(maps_needed) - set(net.map_names))
    if missing:
        raise ConfigError(f"score.scores use the map(s) {missing}, which {name} does not make; "
                          f"its maps are {list(net.map_names)} (edit score.scores or choose "
                          "another model)")
    if needs_embedding and not net.has_embedding:
        raise ConfigError(f"score.kde.enabled=true needs a latent code, but {name} has no "
                          "embedding(): set score.kde.enabled=false")


def check_monitor(monitor: Mapping | None, net: AnomalyModel) -> dict[str, str] | None:
    """Validate ``model.monitor`` (``{metric, mode}`` or None) for ``net``."""
    if monitor is None:
        return None
    monitor = dict(monitor)
    if set(monitor) != {"metric", "mode"} or monitor["mode"] not in ("min", "max"):
        raise ConfigError(f"model.monitor={monitor!r} is invalid: expected {{metric: <validation "
                          "metric>, mode: min|max}, or null to keep the last checkpoint")
    if monitor["metric"] == "val/loss" and not net.trainable:
        raise ConfigError(f"model.monitor.metric=val/loss, but {type(net).__name__} has no "
                          "training objective and logs no val/loss: set model.monitor=null")
    return monitor


def float32(device: torch.device) -> torch.autocast:
    """A context with autocast off: maps, losses and scores are computed in float32."""
    return torch.autocast(device_type=device.type, enabled=False)


def as_module(value: nn.Module | Mapping, key: str, **kwargs: Any) -> nn.Module:
    """A sub-module given as a module or as a config dict (built under the allow-list)."""
    if isinstance(value, nn.Module):
        return value
    return build(value, key, **kwargs)
