"""Reconstruction models: an autoencoder scored by how badly it restores an image.

``network`` maps images to a reconstruction (``components``: ``SpriteAE``, ``BaselineAE``,
``UNetAE``, ``DraemLite``) and exposes ``encode`` (its latent, for the KDE). Its maps are
``l1``, ``l2`` and ``ssim`` (1 - SSIM, kornia) between the image and its reconstruction.

With ``synthesis`` (a :class:`~anomalib_lite.data.synthetic.SyntheticAnomalies` config)
training corrupts each normal batch with synthetic anomalies and the network learns to
restore the clean image (denoising reconstruction); a network with a segmentation head
(``segment(images, reconstruction)`` → logits, e.g. ``DraemLite``) also learns to segment
the synthetic masks with ``seg_loss``, and adds the map ``seg`` (the head's sigmoid).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from anomalib_lite.data.batch import Batch
from anomalib_lite.models.protocol import AnomalyModel, as_module, float32
from anomalib_lite.scoring.maps import MAP_KINDS, anomaly_map
from anomalib_lite.utils import checks
from anomalib_lite.utils.checks import ConfigError


class ReconstructionModel(AnomalyModel):
    """An autoencoder ``network`` trained on ``loss`` (optionally on synthetic anomalies)."""

    def __init__(self, network: nn.Module | Mapping, loss: nn.Module | Mapping,
                 synthesis: nn.Module | Mapping | None = None,
                 seg_loss: nn.Module | Mapping | None = None, ssim_window: int = 11) -> None:
        super().__init__()
        checks.require(isinstance(ssim_window, int) and ssim_window >= 3 and ssim_window % 2,
                       "model.net.ssim_window", ssim_window, "an odd integer >= 3")
        self.network = as_module(network, "model.net.network")
        self.loss = as_module(loss, "model.net.loss")
        self.synthesis = as_module(synthesis, "model.net.synthesis") if synthesis else None
        self.ssim_window = ssim_window
        self.has_head = callable(getattr(self.network, "segment", None))
        self.seg_loss: nn.Module | None = None
        if self.has_head:
            if not (synthesis and seg_loss):
                raise ConfigError(f"{type(self.network).__name__} has a segmentation head: it "
                                  "needs model.net.synthesis (anomalies to segment) and "
                                  "model.net.seg_loss (e.g. model=draem_lite)")
            self.seg_loss = as_module(seg_loss, "model.net.seg_loss")
        self.map_names = (*MAP_KINDS, "seg") if self.has_head else MAP_KINDS
        self.synthesizes = self.synthesis is not None

    # ------------------------------------------------------------- inference
    def reconstruct(self, images: Tensor) -> Tensor:
        """The network's reconstruction as float32 (the network may run under autocast)."""
        return self.network(images).float()

    def anomaly_maps(self, images: Tensor, names: Iterable[str] | None = None
                     ) -> dict[str, Tensor]:
        names = set(self.map_names if names is None else names)
        reconstruction = self.reconstruct(images)
        maps = {kind: anomaly_map(images, reconstruction, kind, self.ssim_window)
                for kind in MAP_KINDS if kind in names}
        if "seg" in names and self.has_head:
            maps["seg"] = self.network.segment(images, reconstruction).float().sigmoid()
        return maps

    def embedding(self, images: Tensor) -> Tensor:
        return self.network.encode(images)

    # ------------------------------------------------------------- training
    def _objective(self, corrupted: Tensor, images: Tensor, masks: Tensor | None
                   ) -> tuple[Tensor, dict[str, Tensor]]:
        """Restore ``images`` from ``corrupted`` (+ segment ``masks`` with a head)."""
        reconstruction = self.reconstruct(corrupted)
        with float32(images.device):
            parts = {"recon_loss": self.loss(reconstruction.float(), images.float())}
        if self.has_head:
            assert self.seg_loss is not None and masks is not None
            logits = self.network.segment(corrupted, reconstruction)
            with float32(images.device):
                parts["seg_loss"] = self.seg_loss(logits.float(), masks.float())
        return sum(parts.values()), parts

    def synthesize(self, images: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        if self.synthesis is None:
            raise RuntimeError("this model has no model.net.synthesis")
        return self.synthesis(images, generator=generator, probability=1.0)

    def training_objective(self, batch: Batch, generator: torch.Generator
                           ) -> tuple[Tensor, dict[str, Tensor]]:
        images = batch["image"]
        if self.synthesis is None:
            return self._objective(images, images, None)
        with record_function("synthesis"):
            corrupted, masks = self.synthesis(images, generator=generator)
        return self._objective(corrupted, images, masks)

    def validation_objective(self, batch: Batch, generator: torch.Generator
                             ) -> tuple[Tensor, dict[str, Tensor]]:
        """Without synthesis the reconstruction loss; with it, the training objective on
        synthetic anomalies (``synthesize``) of the normal images."""
        if self.synthesis is None:
            return self.training_objective(batch, generator)
        images = batch["image"][batch["label"] == 0].float()
        corrupted, masks = self.synthesize(images, generator)
        return self._objective(corrupted.float(), images, masks)
