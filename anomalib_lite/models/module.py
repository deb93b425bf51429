"""The LightningModule that trains, validates and scores any anomaly model.

``net`` is an :class:`~anomalib_lite.models.protocol.AnomalyModel`: the module runs its
one-pass ``fit``, steps an optimizer on its ``training_objective`` (when it has one), and
scores it through one inference path, :meth:`AnomalyModule.predict_batch` (the model's
maps → the :class:`~anomalib_lite.scoring.Scorer`'s scores, + the latent KDE). Validation
fits the :class:`~anomalib_lite.scoring.post_processor.PostProcessor` (thresholds and
normalization) on normal images and, for models that make synthetic anomalies, logs
``val/synthetic_*`` AUROCs; the :class:`~anomalib_lite.evaluation.Evaluator` turns the
test stage into results. Nothing here depends on the kind of model.

Every part is stored as a plain config dict in the hyper-parameters and built here under
the allow-list, so a checkpoint is self-describing and loads with ``weights_only=True``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor
from torch.profiler import record_function

from anomalib_lite.data.batch import Batch
from anomalib_lite.data.preprocess import image_size_hw, random_crops
from anomalib_lite.evaluation import Evaluator, ValidationScores
from anomalib_lite.models.backbones import deferred_weights
from anomalib_lite.models.protocol import AnomalyModel, check_model, check_monitor, float32
from anomalib_lite.scoring import Scorer
from anomalib_lite.scoring.kde import KDEScores
from anomalib_lite.scoring.post_processor import PostProcessor
from anomalib_lite.utils.checks import ConfigError
from anomalib_lite.utils.instantiate import build, to_plain

PREPROCESSING_KEY = "preprocessing"  # checkpoint key: {image_size, channels}
FORMAT_KEY = "anomalib_lite_format"  # checkpoint key: the layout of the state dict
FORMAT = 2
SCORING_KEYS = ("scores", "primary", "threshold", "kde")
DEFAULT_SCORING: dict[str, Any] = {
    "scores": {"l2_mean": {"map": "l2", "reduce": "mean"},
               "l1_mean": {"map": "l1", "reduce": "mean"}},
    "primary": "l2_mean",
    "threshold": {"method": "quantile", "quantile": 0.99},
}


class CheckpointLayoutError(ValueError):
    """The checkpoint's state-dict layout is not the one this version reads."""


class AnomalyModule(LightningModule):
    """Trains and scores the anomaly model ``net``; thresholds live in ``post_processor``.

    ``optimizer`` and ``scheduler`` (configs) are needed by trainable models only;
    ``monitor`` (``{metric, mode}``) is the validation metric that picks the best
    checkpoint, by default the model's own (``val/loss`` for trainable models, none for
    fit-only ones); ``generator_seed`` seeds the random generator handed to the model's
    objectives (synthetic anomalies). ``val_synthesis`` (a ``SyntheticAnomalies`` config)
    makes the synthetic validation anomalies for any model; without it, models that
    synthesize anomalies themselves are validated on their own (``synthesize``).
    ``channels_last``: images and convolution weights in NHWC memory layout, which the
    CPU (oneDNN) and GPU convolution kernels run faster on. ``train_crop`` (a size, or
    ``[height, width]``): train on one random crop of each training image, validate and
    score whole images (a fully convolutional network sees the full resolution at the
    cost of a crop-sized step).
    """

    def __init__(self, net: Mapping, optimizer: Mapping | None = None,
                 scheduler: Mapping | None = None, scoring: Mapping | None = None,
                 monitor: Mapping | None = None, generator_seed: int = 0,
                 val_synthesis: Mapping | None = None, channels_last: bool = True,
                 train_crop: int | Sequence[int] | None = None) -> None:
        super().__init__()
        scoring = to_plain(scoring) if scoring is not None else DEFAULT_SCORING
        unknown = set(scoring) - set(SCORING_KEYS)
        if unknown:
            raise ConfigError(f"score has unknown key(s) {sorted(unknown)}; the keys are "
                              f"{list(SCORING_KEYS)}")
        self.save_hyperparameters({"net": to_plain(net), "optimizer": to_plain(optimizer),
                                   "scheduler": to_plain(scheduler), "scoring": scoring,
                                   "monitor": to_plain(monitor),
                                   "generator_seed": int(generator_seed),
                                   "val_synthesis": to_plain(val_synthesis),
                                   "channels_last": bool(channels_last),
                                   "train_crop": to_plain(train_crop)})
        self.train_crop = image_size_hw(to_plain(train_crop), "model.train_crop") \
            if train_crop is not None else None
        self.net: AnomalyModel = build(self.hparams.net, "model.net")
        self.val_synthesis = build(self.hparams.val_synthesis, "model.val_synthesis") \
            if val_synthesis else None
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)
        self.scorer = Scorer(scoring["scores"], scoring["primary"])
        kde_cfg = dict(scoring.get("kde") or {})
        kde_enabled = bool(kde_cfg.pop("enabled", False))
        check_model(self.net, "model.net", self.scorer.map_names, kde_enabled)
        if self.net.trainable and not optimizer:
            raise ConfigError(f"model.optimizer is not set: {type(self.net).__name__} is trained "
                              "by gradient steps (e.g. model.optimizer={_target_: "
                              "torch.optim.Adam, lr: 1e-3})")
        if optimizer:
            build(self.hparams.optimizer, "model.optimizer", _partial_=True)  # typos fail now
        self.kde = KDEScores(self.scorer.primary, **kde_cfg) if kde_enabled else None
        self.score_names = self.scorer.names + (self.kde.names if self.kde else [])
        self.post_processor = PostProcessor(self.score_names, scoring.get("threshold"))
        self.monitor = check_monitor(monitor, self.net) if monitor is not None \
            else self.net.default_monitor()
        # a buffer, so the best monitored value survives checkpoint and resume
        worst = float("-inf") if self.monitor and self.monitor["mode"] == "max" else float("inf")
        self.register_buffer("monitor_best", torch.tensor(worst))
        self.validation_scores = ValidationScores(self.scorer.names)
        self.evaluator = Evaluator()
        self.test_results: dict[str, Any] | None = None
        self.test_rows: list[dict[str, Any]] = []
        self.history: list[dict[str, float]] = []  # per epoch: losses and learning rate
        self._train_generator: torch.Generator | None = None
        # how input images are made (image size, channels): from the datamodule at fit/test,
        # saved as checkpoint["preprocessing"] so that predict and export can rebuild it
        self.preprocessing: dict[str, Any] | None = None

    @classmethod
    def load_from_checkpoint(cls, *args: Any, **kwargs: Any) -> AnomalyModule:  # type: ignore[override]
        """Lightning's loader; pretrained backbones take their weights from the file."""
        with deferred_weights():
            return super().load_from_checkpoint(*args, **kwargs)

    # ----------------------------------------------------------------- checkpoint
    def setup(self, stage: str) -> None:
        datamodule = self.trainer.datamodule
        if datamodule is not None and hasattr(datamodule, "preprocessing"):
            self.preprocessing = datamodule.preprocessing.to_dict()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[FORMAT_KEY] = FORMAT
        if self.preprocessing is not None:
            checkpoint[PREPROCESSING_KEY] = dict(self.preprocessing)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if checkpoint.get(FORMAT_KEY) != FORMAT:
            raise CheckpointLayoutError(
                f"the checkpoint has layout {checkpoint.get(FORMAT_KEY)!r}, this anomalib_lite "
                f"reads layout {FORMAT} (older checkpoints predate the model protocol): retrain "
                "the model with this version")
        # a resumed fit restores after setup(): keep the datamodule's if the file has none
        self.preprocessing = checkpoint.get(PREPROCESSING_KEY, self.preprocessing)

    # ----------------------------------------------------------------- inference path
    def predict_batch(self, images: Tensor) -> dict[str, dict[str, Tensor]]:
        """The one inference path (validation, test, predict, export): the model's maps, the
        configured maps and scores (+ the latent KDE's once fitted), float32, autocast off.

        Mixed precision speeds up training only: a bf16 reconstruction (8-bit mantissa)
        is quantised as coarsely as the errors it is scored by.
        """
        with float32(images.device):
            images = self._layout(images.float())
            with record_function("anomaly_maps"):
                model_maps = self.net.anomaly_maps(images, self.scorer.map_names)
            with record_function("scoring"):
                maps, scores = self.scorer(model_maps)
                if self.kde is not None and self.kde.fitted:
                    scores.update(self.kde(self.net.embedding(images),
                                           scores[self.scorer.primary]))
        return {"maps": maps, "scores": scores}

    def _layout(self, images: Tensor) -> Tensor:
        return images.contiguous(memory_format=self.memory_format) if images.ndim == 4 \
            else images

    @property
    def available_scores(self) -> list[str]:
        """The scores ``predict_batch`` produces: the KDE ones only once the KDE is fitted."""
        fitted = self.kde is not None and self.kde.fitted
        return [n for n in self.score_names if fitted or n in self.scorer.names]

    def threshold_of(self, score: str) -> float:
        return self.post_processor.threshold_of(score)

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        """Scores, normalized scores, decisions at the stored thresholds and the primary map."""
        out = self.predict_batch(batch["image"])
        normalized, decisions = self.post_processor(out["scores"])
        return {"path": batch["path"], "scores": out["scores"], "normalized_scores": normalized,
                "anomalous": decisions, "anomaly_map": out["maps"][self.scorer.primary_map]}

    # ----------------------------------------------------------------- fitting
    def _datamodule_loader(self, split: str, purpose: str) -> Iterator[Batch]:
        """The datamodule's unshuffled ``split`` batches, images on this module's device."""
        datamodule = self.trainer.datamodule
        if datamodule is None or not hasattr(datamodule, "eval_loader"):
            raise RuntimeError(f"{purpose} needs the run's datamodule (its {split} split)")
        if split not in datamodule.datasets:
            datamodule.setup("fit")
        for batch in datamodule.eval_loader(split):
            yield {**batch, "image": batch["image"].to(self.device).float()}

    @torch.no_grad()
    def _fit_net(self) -> None:
        """The model's one-pass fit on the normal training images (eval mode, float32)."""
        was_training = self.training
        self.eval()
        with float32(self.device):
            self.net.fit(self._datamodule_loader("train", f"{type(self.net).__name__}.fit"))
        self.train(was_training)

    @torch.no_grad()
    def _fit_kde(self) -> None:
        """Fit the latent KDE on the normal training images, then its scores' thresholds and
        statistics on the normal validation images."""
        assert self.kde is not None
        was_training = self.training
        self.eval()
        with float32(self.device):
            train = torch.cat([self.net.embedding(b["image"])
                               for b in self._datamodule_loader("train", "latent KDE")])
            latents, primary = [], []
            for batch in self._datamodule_loader("val", "latent KDE"):
                images = batch["image"][batch["label"] == 0]
                if len(images):
                    latents.append(self.net.embedding(images))
                    primary.append(self.predict_batch(images)["scores"][self.scorer.primary])
            values = self.kde.fit(train, torch.cat(latents), torch.cat(primary))
        self.train(was_training)
        for name, normal_scores in values.items():
            self.post_processor.fit(name, normal_scores)

    # ----------------------------------------------------------------- training
    def on_fit_start(self) -> None:
        # each DDP rank draws its own anomalies (rank 0 keeps the single-process stream)
        self._train_generator = torch.Generator().manual_seed(
            self.hparams.generator_seed + 7919 * self.global_rank)
        if self.net.fittable:
            self._fit_net()

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor | None:
        if not self.net.trainable:
            return None  # fitted in on_fit_start; nothing to step
        assert self._train_generator is not None
        batch = self._crop({**batch, "image": self._layout(batch["image"])})
        loss, parts = self.net.training_objective(batch, self._train_generator)
        size = batch["image"].shape[0]
        for name, value in parts.items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=size)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True,
                 batch_size=size)
        return loss

    def _crop(self, batch: Batch) -> Batch:
        """``train_crop``: the same random crop of each image and its mask."""
        if self.train_crop is None:
            return batch
        images = batch["image"]  # the crop fits: checked before training (train.py)
        keys = [k for k in ("image", "mask") if isinstance(batch.get(k), Tensor)
                and batch[k].ndim == 4 and batch[k].shape[-2:] == images.shape[-2:]]
        joined = torch.cat([batch[k].to(images.dtype) for k in keys], dim=1)
        crops = random_crops(joined, self.train_crop, self._train_generator)
        parts = crops.split([batch[k].shape[1] for k in keys], dim=1)
        return {**batch, **{k: self._layout(part.to(batch[k].dtype))
                            for k, part in zip(keys, parts, strict=True)}}

    def on_train_epoch_end(self) -> None:
        metrics = self.trainer.callback_metrics
        entry = {"epoch": float(self.current_epoch)}
        if self.hparams.optimizer:
            entry["lr"] = float(self.trainer.optimizers[0].param_groups[0]["lr"])
        for key, name in (("train/loss_epoch", "train/loss"), ("val/loss", "val/loss")):
            if key in metrics:
                entry[name] = float(metrics[key])
        self.history.append(entry)

    def _val_generator(self, batch_idx: int) -> torch.Generator:
        return torch.Generator().manual_seed(self.hparams.generator_seed + 1 + batch_idx)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        images = batch["image"]
        normal = batch["label"] == 0
        out = self.predict_batch(images)
        primary_map = self.scorer.primary_map
        self.validation_scores.update_normal({n: out["scores"][n][normal]
                                              for n in self.scorer.names},
                                             out["maps"][primary_map][normal])
        if self.net.trainable:
            with float32(images.device):
                loss, _ = self.net.validation_objective({**batch, "image": self._layout(
                                                            images.float())},
                                                        self._val_generator(batch_idx))
            self.log("val/loss", loss, on_epoch=True, prog_bar=True, sync_dist=True,
                     batch_size=images.shape[0])
        if self.val_synthesis is not None or self.net.synthesizes:
            # fixed-seed synthetic anomalies, one per normal image
            generator = self._val_generator(batch_idx)
            corrupted, masks = self.net.synthesize(images[normal], generator) \
                if self.val_synthesis is None else \
                self.val_synthesis(images[normal], generator=generator, probability=1.0)
            synthetic = self.predict_batch(corrupted)
            self.validation_scores.update_synthetic(synthetic["scores"],
                                                    synthetic["maps"][primary_map], masks)

    def on_validation_epoch_end(self) -> None:
        """Fit the post-processor on the normal validation images; log the synthetic
        AUROCs and the best value of the monitored metric."""
        if self.validation_scores.has_synthetic:
            aurocs = self.validation_scores.synthetic_aurocs()
            for name in self.scorer.names:
                self.log(f"val/synthetic/{name}/image_auroc", aurocs[name])
            self.log("val/synthetic_image_auroc", aurocs[self.scorer.primary])
            self.log("val/synthetic_pixel_auroc", aurocs["pixel"])
        self.validation_scores.fit(self.post_processor)
        self.validation_scores.reset()
        metrics = self.trainer.callback_metrics
        if self.monitor and not self.trainer.sanity_checking and \
                self.monitor["metric"] in metrics:
            value = metrics[self.monitor["metric"]].to(self.monitor_best)
            better = torch.minimum if self.monitor["mode"] == "min" else torch.maximum
            self.monitor_best = better(self.monitor_best, value)
            self.log(f"{self.monitor['metric']}_best", self.monitor_best)

    # ----------------------------------------------------------------- evaluation
    def on_test_start(self) -> None:
        if self.kde is not None and not self.kde.fitted:
            self._fit_kde()

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        out = self.predict_batch(batch["image"])
        self.evaluator.update(batch, out["scores"], out["maps"])

    def on_test_epoch_end(self) -> None:
        self.test_results, self.test_rows = self.evaluator.compute(self.scorer,
                                                                   self.post_processor)
        for name, metrics in self.test_results["scores"].items():
            for key in ("image_auroc", "image_pr_auc"):
                self.log(f"test/{name}/{key}", metrics[key], sync_dist=True)
        primary = self.test_results["scores"][self.scorer.primary]
        self.log("test/image_auroc", primary["image_auroc"], sync_dist=True)
        self.log("test/image_pr_auc", primary["image_pr_auc"], sync_dist=True)
        for key, value in self.test_results["pixel"][self.scorer.primary_map].items():
            self.log(f"test/{key}", value, sync_dist=True)

    # ----------------------------------------------------------------- optimisation
    def configure_optimizers(self) -> Any:
        if not self.hparams.optimizer:
            return None  # a fit-only model: Lightning runs the epoch without an optimizer
        optimizer = build(self.hparams.optimizer, "model.optimizer",
                          params=[p for p in self.parameters() if p.requires_grad])
        if not self.hparams.scheduler:
            return optimizer
        scheduler_cfg = dict(self.hparams.scheduler)
        monitor = scheduler_cfg.pop("monitor", self.monitor and self.monitor["metric"])
        scheduler = build(scheduler_cfg, "model.scheduler", optimizer=optimizer)
        config: dict[str, Any] = {"scheduler": scheduler, "interval": "epoch", "frequency": 1}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            # step only on epochs that validate, so the monitored value exists and is fresh
            every = self.trainer.check_val_every_n_epoch if self._trainer is not None else 1
            config.update(monitor=monitor, frequency=every or 1)
        return {"optimizer": optimizer, "lr_scheduler": config}
