"""The LightningModule that trains any reconstruction network and evaluates it.

With ``synthesis`` (a :class:`~anomalib_lite.data.synthetic.SyntheticAnomalies` config)
training corrupts each normal batch with synthetic anomalies and the network learns to
restore the clean image (denoising reconstruction); a network with a segmentation head
(``segment``, e.g. ``DraemLite``) also learns to segment the synthetic masks with
``seg_loss``. Validation then also scores fixed-seed synthetic anomalies on the normal
validation images (``val/synthetic_image_auroc``, ``val/synthetic_pixel_auroc``): the
metrics settings are chosen on, never the test split.

Network, loss, optimizer, scheduler and scoring are stored as plain config dicts in the
hyper-parameters and built here, so a checkpoint is self-describing and loads with
``weights_only=True``. Decision thresholds are buffers: they travel inside the checkpoint.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor, nn
from torchmetrics import CatMetric

from anomalib_lite.data.batch import Batch
from anomalib_lite.evaluation import batch_record, evaluate, gather_records, score_rows
from anomalib_lite.metrics import pixel_auroc
from anomalib_lite.scoring import Scorer, fit_threshold
from anomalib_lite.scoring.kde import LatentKDE
from anomalib_lite.utils.checks import ConfigError
from anomalib_lite.utils.instantiate import build, to_plain

KDE_SCORE = "latent_kde"
PREPROCESSING_KEY = "preprocessing"  # checkpoint key: {image_size, channels}
PIXELS_PER_IMAGE = 1024  # pixels per normal validation image kept to fit the pixel threshold
DEFAULT_SCORING: dict[str, Any] = {
    "scores": {"l2_mean": {"map": "l2", "reduce": "mean"},
               "l1_mean": {"map": "l1", "reduce": "mean"}},
    "primary": "l2_mean",
    "threshold": {"method": "quantile", "quantile": 0.99},
}


def _cat() -> CatMetric:
    return CatMetric(nan_strategy="disable")


def _gathered(metric: CatMetric) -> Tensor:
    """All values gathered across processes (empty if nothing was added).

    ``compute`` is called on every rank, updated or not, so that the collective matches.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
        value = metric.compute()
    if isinstance(value, Tensor):
        return value.reshape(-1)
    return torch.cat([v.reshape(-1) for v in value]) if len(value) else torch.empty(0)


def _subsample(maps: Tensor) -> Tensor:
    """About ``PIXELS_PER_IMAGE`` evenly strided pixels of each (N, 1, H, W) map, flat."""
    pixels = maps.flatten(1)
    return pixels[:, ::max(1, pixels.shape[1] // PIXELS_PER_IMAGE)].reshape(-1).float()


class AnomalyModule(LightningModule):
    """Trains ``net`` on reconstruction ``loss``; scores, thresholds and evaluates it."""

    def __init__(self, net: Mapping, loss: Mapping, optimizer: Mapping,
                 scheduler: Mapping | None = None, scoring: Mapping | None = None,
                 synthesis: Mapping | None = None, seg_loss: Mapping | None = None,
                 synthesis_seed: int = 0) -> None:
        super().__init__()
        scoring = to_plain(scoring) if scoring is not None else DEFAULT_SCORING
        self.save_hyperparameters({"net": to_plain(net), "loss": to_plain(loss),
                                   "optimizer": to_plain(optimizer),
                                   "scheduler": to_plain(scheduler), "scoring": scoring,
                                   "synthesis": to_plain(synthesis),
                                   "seg_loss": to_plain(seg_loss),
                                   "synthesis_seed": int(synthesis_seed)})
        self.net: nn.Module = build(self.hparams.net, "model.net")
        self.loss_fn: nn.Module = build(self.hparams.loss, "loss")
        self.synth: nn.Module | None = (build(self.hparams.synthesis, "model.synthesis")
                                        if synthesis else None)
        self.has_head = callable(getattr(self.net, "segment", None))
        self.seg_loss_fn: nn.Module | None = None
        if self.has_head:
            if not (synthesis and seg_loss):
                raise ConfigError(f"{type(self.net).__name__} has a segmentation head: it "
                                  "needs model.synthesis (anomalies to segment) and "
                                  "model.seg_loss (e.g. model=draem_lite)")
            self.seg_loss_fn = build(self.hparams.seg_loss, "model.seg_loss")
        self._train_generator: torch.Generator | None = None
        build(self.hparams.optimizer, "model.optimizer", _partial_=True)  # fail early on typos
        kde_cfg = dict(scoring.get("kde") or {})
        self.scorer = Scorer(**{k: v for k, v in scoring.items() if k != "kde"})
        self.kde = LatentKDE(**{k: v for k, v in kde_cfg.items() if k != "enabled"}) \
            if kde_cfg.get("enabled") else None
        self.score_names = list(self.scorer.names)
        if self.kde is not None:
            self.score_names += [KDE_SCORE, self.combined_score]
            # mean and std of the primary and the KDE scores on normal validation images
            self.register_buffer("kde_stats", torch.full((4,), float("nan"),
                                                         dtype=torch.float64))
        n_scores = len(self.score_names)
        # fitted on normal validation scores; they travel inside the checkpoint
        self.register_buffer("thresholds", torch.full((n_scores,), float("nan")))
        self.register_buffer("score_min", torch.full((n_scores,), float("nan")))
        self.register_buffer("score_max", torch.full((n_scores,), float("nan")))
        # the primary map's pixel threshold (predicted masks), fitted like the image ones
        self.register_buffer("pixel_threshold", torch.tensor(float("nan")))
        self.val_scores = nn.ModuleDict({name: _cat() for name in self.scorer.names})
        self.val_pixels = _cat()
        # fixed-seed synthetic anomalies on the normal validation images (with synthesis)
        # (scores by index in scorer.names, so any score name is a valid key)
        self.val_synthetic = nn.ModuleDict({k: _cat() for k in (
            "maps", "masks", *(f"score{i}" for i in range(len(self.scorer.names))))})
        # a buffer, so the best validation loss survives checkpoint and resume
        self.register_buffer("val_loss_best", torch.tensor(float("inf")))
        self.test_results: dict[str, Any] | None = None
        self.test_rows: list[dict[str, Any]] = []
        self.history: list[dict[str, float]] = []  # per epoch: losses and learning rate
        # how input images are made (image size, channels): from the datamodule at fit/test,
        # saved as checkpoint["preprocessing"] so that predict and export can rebuild it
        self.preprocessing: dict[str, Any] | None = None

    # ----------------------------------------------------------------- checkpoint
    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "preprocessing"):
            self.preprocessing = datamodule.preprocessing.to_dict()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.preprocessing is not None:
            checkpoint[PREPROCESSING_KEY] = dict(self.preprocessing)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # a resumed fit restores after setup(): keep the datamodule's if the file has none
        self.preprocessing = checkpoint.get(PREPROCESSING_KEY, self.preprocessing)

    # ----------------------------------------------------------------- inference path
    def forward(self, images: Tensor) -> Tensor:
        return self.net(images)

    def reconstruct(self, images: Tensor) -> Tensor:
        """The network's reconstruction as float32 (the net may run under autocast)."""
        return self.net(images).float()

    def net_maps(self, images: Tensor, reconstruction: Tensor) -> dict[str, Tensor]:
        """The network-made anomaly maps (``seg``: sigmoid of the segmentation head)."""
        if not self.has_head or "seg" not in self.scorer.net_map_kinds:
            return {}
        return {"seg": self.net.segment(images, reconstruction).float().sigmoid()}

    def maps_and_scores(self, images: Tensor, reconstruction: Tensor) -> tuple[
            dict[str, Tensor], dict[str, Tensor]]:
        return self.scorer(images, reconstruction, self.net_maps(images, reconstruction))

    def predict_batch(self, images: Tensor) -> dict[str, Any]:
        """The one inference path (validation, test, predict, export): reconstruction, maps
        and scores, always in float32 with autocast off.

        Mixed precision speeds up training only: a bf16 reconstruction (8-bit mantissa)
        is quantised as coarsely as the errors it is scored by.
        """
        with torch.autocast(device_type=images.device.type, enabled=False):
            images = images.float()
            reconstruction = self.reconstruct(images)
            maps, scores = self.maps_and_scores(images, reconstruction)
            if self.kde is not None and self.kde.fitted:
                scores.update(self._kde_scores(self.net.encode(images),
                                               scores[self.scorer.primary]))
        return {"reconstruction": reconstruction, "maps": maps, "scores": scores}

    def _kde_scores(self, latent: Tensor, primary: Tensor) -> dict[str, Tensor]:
        """-log density of the latent, and its z-score sum with the primary score."""
        assert self.kde is not None
        kde = self.kde(latent).to(primary.device)
        return {KDE_SCORE: kde, self.combined_score: self._combine(primary, kde)}

    def _combine(self, primary: Tensor, kde: Tensor) -> Tensor:
        """Sum of the primary and KDE scores, each z-normalized by ``kde_stats``."""
        mu_p, sd_p, mu_k, sd_k = self.kde_stats.to(primary.device, primary.dtype)
        return (primary - mu_p) / sd_p.clamp_min(1e-12) + (kde - mu_k) / sd_k.clamp_min(1e-12)

    @torch.no_grad()
    def fit_latent_kde(self) -> None:
        """Fit the latent KDE on the normal training images, then its threshold and the
        combined score's statistics on the normal validation images."""
        assert self.kde is not None
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "eval_loader"):
            raise RuntimeError("latent KDE needs the run's datamodule (train and val splits)")
        if not {"train", "val"} <= set(datamodule.datasets):
            datamodule.setup("fit")
        was_training = self.training
        self.eval()
        with torch.autocast(device_type=self.device.type, enabled=False):
            latents = [self.net.encode(b["image"].to(self.device).float())
                       for b in datamodule.eval_loader("train")]
            self.kde.fit(torch.cat(latents))
            primary, density = [], []
            for batch in datamodule.eval_loader("val"):
                normal = batch["label"] == 0
                images = batch["image"][normal].to(self.device).float()
                if len(images):
                    _, scores = self.maps_and_scores(images, self.reconstruct(images))
                    primary.append(scores[self.scorer.primary].double())
                    density.append(self.kde(self.net.encode(images)).double().to(self.device))
        self.train(was_training)
        p, k = torch.cat(primary), torch.cat(density)
        self.kde_stats = torch.stack([p.mean(), p.std(), k.mean(), k.std()]).to(self.kde_stats)
        for name, values in ((KDE_SCORE, k), (self.combined_score, self._combine(p, k))):
            i = self.score_names.index(name)
            self.thresholds[i] = fit_threshold(values, **self.scorer.threshold)
            self.score_min[i], self.score_max[i] = values.min(), values.max()

    def reconstruction_loss(self, reconstruction: Tensor, images: Tensor) -> Tensor:
        with torch.autocast(device_type=images.device.type, enabled=False):
            return self.loss_fn(reconstruction.float(), images.float())

    @property
    def combined_score(self) -> str:
        return f"{self.scorer.primary}+{KDE_SCORE}"

    @property
    def available_scores(self) -> list[str]:
        """The scores ``predict_batch`` produces: the KDE ones only once the KDE is fitted."""
        fitted = self.kde is not None and self.kde.fitted
        return [n for n in self.score_names if fitted or n in self.scorer.names]

    def threshold_of(self, score: str) -> float:
        return float(self.thresholds[self.score_names.index(score)])

    def normalize(self, scores: dict[str, Tensor]) -> dict[str, Tensor]:
        """Scores → [0, 1] with the threshold at 0.5, scaled by the spread of the normal
        validation scores (anomalib's min-max normalization)."""
        normalized = {}
        for name, values in scores.items():
            i = self.score_names.index(name)
            span = (self.score_max[i] - self.score_min[i]).clamp_min(1e-12)
            normalized[name] = ((values - self.thresholds[i]) / span + 0.5).clamp(0.0, 1.0)
        return normalized

    # ----------------------------------------------------------------- training
    def synthetic_objective(self, corrupted: Tensor, images: Tensor,
                            masks: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Restore ``images`` from ``corrupted`` (+ segment ``masks`` with a head).

        Returns the total loss and its parts (``recon_loss``, ``seg_loss``).
        """
        reconstruction = self.reconstruct(corrupted)
        parts = {"recon_loss": self.reconstruction_loss(reconstruction, images)}
        if self.has_head:
            assert self.seg_loss_fn is not None
            logits = self.net.segment(corrupted, reconstruction)
            with torch.autocast(device_type=images.device.type, enabled=False):
                parts["seg_loss"] = self.seg_loss_fn(logits.float(), masks.float())
        return sum(parts.values()), parts

    def on_fit_start(self) -> None:
        # each DDP rank draws its own anomalies (rank 0 keeps the single-process stream)
        self._train_generator = torch.Generator().manual_seed(
            self.hparams.synthesis_seed + 7919 * self.global_rank)

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        images = batch["image"]
        if self.synth is None:
            loss = self.reconstruction_loss(self.reconstruct(images), images)
        else:
            corrupted, masks = self.synth(images, generator=self._train_generator)
            loss, parts = self.synthetic_objective(corrupted, images, masks)
            for name, value in parts.items():
                self.log(f"train/{name}", value, on_step=False, on_epoch=True,
                         batch_size=images.shape[0])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True,
                 batch_size=images.shape[0])
        return loss

    def on_train_epoch_end(self) -> None:
        metrics = self.trainer.callback_metrics
        entry = {"epoch": float(self.current_epoch),
                 "lr": float(self.trainer.optimizers[0].param_groups[0]["lr"])}
        for key, name in (("train/loss_epoch", "train/loss"), ("val/loss", "val/loss")):
            if key in metrics:
                entry[name] = float(metrics[key])
        self.history.append(entry)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        images = batch["image"]
        out = self.predict_batch(images)
        normal = batch["label"] == 0
        if self.synth is None:
            loss = self.reconstruction_loss(out["reconstruction"], images)
        else:
            loss = self._synthetic_validation(images[normal], batch_idx)
        self.log("val/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True,
                 batch_size=images.shape[0])
        for name, scores in out["scores"].items():
            self.val_scores[name].update(scores[normal].float())
        self.val_pixels.update(_subsample(out["maps"][self.scorer.primary_map][normal]))

    def _synthetic_validation(self, images: Tensor, batch_idx: int) -> Tensor:
        """Fixed-seed synthetic anomalies (one per normal validation image): keeps their
        scores and (subsampled) primary maps and masks; returns the training objective on
        them, the validation loss of a synthesis run."""
        assert self.synth is not None
        generator = torch.Generator().manual_seed(self.hparams.synthesis_seed + 1 + batch_idx)
        corrupted, masks = self.synth(images, generator=generator, probability=1.0)
        with torch.autocast(device_type=images.device.type, enabled=False):
            loss, _ = self.synthetic_objective(corrupted.float(), images.float(), masks)
        out = self.predict_batch(corrupted)
        for i, name in enumerate(self.scorer.names):
            self.val_synthetic[f"score{i}"].update(out["scores"][name].float())
        self.val_synthetic["maps"].update(_subsample(out["maps"][self.scorer.primary_map]))
        self.val_synthetic["masks"].update(_subsample(masks))
        return loss

    def on_validation_epoch_end(self) -> None:
        """Fit each score's threshold on the normal validation images (and, with synthesis,
        log the synthetic-anomaly AUROCs)."""
        if self.synth is not None:
            for i, name in enumerate(self.scorer.names):
                normal = _gathered(self.val_scores[name])
                synthetic = _gathered(self.val_synthetic[f"score{i}"])
                labels = torch.cat([torch.zeros_like(normal), torch.ones_like(synthetic)])
                auroc = pixel_auroc(torch.cat([normal, synthetic]), labels)
                self.log(f"val/synthetic/{name}/image_auroc", auroc)
                if name == self.scorer.primary:
                    self.log("val/synthetic_image_auroc", auroc)
            self.log("val/synthetic_pixel_auroc",
                     pixel_auroc(_gathered(self.val_synthetic["maps"]),
                                 _gathered(self.val_synthetic["masks"])))
            for metric in self.val_synthetic.values():
                metric.reset()
        for i, name in enumerate(self.scorer.names):
            normal_scores = _gathered(self.val_scores[name])
            self.thresholds[i] = fit_threshold(normal_scores, **self.scorer.threshold)
            if normal_scores.numel():
                self.score_min[i], self.score_max[i] = normal_scores.min(), normal_scores.max()
            self.val_scores[name].reset()
        self.pixel_threshold = torch.tensor(
            fit_threshold(_gathered(self.val_pixels), **self.scorer.threshold),
            device=self.pixel_threshold.device)
        self.val_pixels.reset()
        if not self.trainer.sanity_checking and "val/loss" in self.trainer.callback_metrics:
            loss = self.trainer.callback_metrics["val/loss"].to(self.val_loss_best)
            self.val_loss_best = torch.minimum(self.val_loss_best, loss)
            self.log("val/loss_best", self.val_loss_best)

    # ----------------------------------------------------------------- evaluation
    def on_test_start(self) -> None:
        if self.kde is not None and not self.kde.fitted:
            self.fit_latent_kde()

    def on_test_epoch_start(self) -> None:
        self._test_batches: list[dict[str, Any]] = []

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        out = self.predict_batch(batch["image"])
        self._test_batches.append(batch_record(batch, out["scores"], out["maps"]))

    def on_test_epoch_end(self) -> None:
        records = gather_records(self._test_batches)
        self._test_batches = []
        thresholds = {name: self.threshold_of(name) for name in self.score_names}
        self.test_results = evaluate(records, self.scorer, thresholds,
                                     float(self.pixel_threshold))
        self.test_rows = score_rows(records, self.scorer, thresholds)
        for name, metrics in self.test_results["scores"].items():
            for key in ("image_auroc", "image_pr_auc"):
                self.log(f"test/{name}/{key}", metrics[key], sync_dist=True)
        primary = self.test_results["scores"][self.scorer.primary]
        self.log("test/image_auroc", primary["image_auroc"], sync_dist=True)
        self.log("test/image_pr_auc", primary["image_pr_auc"], sync_dist=True)
        for key, value in self.test_results["pixel"][self.scorer.primary_map].items():
            self.log(f"test/{key}", value, sync_dist=True)

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        """Scores, decisions at the stored thresholds and the primary map, per image."""
        out = self.predict_batch(batch["image"])
        decisions = {name: scores > self.threshold_of(name)
                     for name, scores in out["scores"].items()}
        return {"path": batch["path"], "scores": out["scores"],
                "normalized_scores": self.normalize(out["scores"]), "anomalous": decisions,
                "anomaly_map": out["maps"][self.scorer.primary_map]}

    # ----------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> Any:
        optimizer = build(self.hparams.optimizer, "model.optimizer",
                          params=list(self.parameters()))
        if not self.hparams.scheduler:
            return optimizer
        scheduler_cfg = dict(self.hparams.scheduler)
        monitor = scheduler_cfg.pop("monitor", "val/loss")
        scheduler = build(scheduler_cfg, "model.scheduler", optimizer=optimizer)
        # step only on epochs that validate, so the monitored value exists and is fresh
        every = self.trainer.check_val_every_n_epoch if self._trainer is not None else 1
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": monitor, "interval": "epoch",
                                 "frequency": every or 1}}
