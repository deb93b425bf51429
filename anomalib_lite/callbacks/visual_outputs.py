"""Writes the test run's pictures (PNG, atomically) and sends them to W&B when it is used.

``gallery.png``: input | reconstruction | anomaly map | overlay | ground truth | predicted
mask, worst false positives and false negatives first (then the highest-scored true
positives). The predicted mask is the primary map above the pixel threshold (fitted on
the pixels of normal validation images).
``histogram.png``: primary scores of normal vs anomalous images with the threshold.
``roc_pr.png``: ROC and precision-recall curves of every score.
``kde_density.png``: the latent KDE score of normal vs anomalous images (when enabled).
``training_curves.png``: train/val loss and learning rate per epoch (after a fit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import WandbLogger

from anomalib_lite.viz import gallery, roc_pr_curves, save_figure, score_histogram
from anomalib_lite.viz import training_curves as training_figure


def pick_gallery_rows(rows: list[dict[str, Any]], score: str, threshold: float,
                      count: int) -> list[dict[str, Any]]:
    """False positives (highest first), false negatives (lowest first), then true positives
    (highest first), up to ``count`` rows."""
    above = [r[score] > threshold for r in rows]
    fp = sorted((r for r, a in zip(rows, above, strict=True) if a and not r["label"]),
                key=lambda r: -r[score])
    fn = sorted((r for r, a in zip(rows, above, strict=True) if not a and r["label"]),
                key=lambda r: r[score])
    tp = sorted((r for r, a in zip(rows, above, strict=True) if a and r["label"]),
                key=lambda r: -r[score])
    return (fp + fn + tp)[:count]


class VisualOutputs(Callback):
    """Pictures of every test run in ``output_dir``; also logged as ``wandb.Image``."""

    def __init__(self, output_dir: str | Path, gallery_rows: int = 8) -> None:
        self.output_dir = Path(output_dir)
        self.gallery_rows = gallery_rows
        self.written: dict[str, Path] = {}

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not trainer.is_global_zero or not getattr(pl_module, "test_rows", None):
            return
        rows = pl_module.test_rows
        labels = torch.tensor([r["label"] for r in rows])
        scores = {name: torch.tensor([r[name] for r in rows]) for name in pl_module.score_names}
        primary = pl_module.scorer.primary
        threshold = pl_module.threshold_of(primary)
        figures = {
            "histogram": score_histogram(scores[primary], labels, threshold, primary),
            "roc_pr": roc_pr_curves(scores, labels),
        }
        if "latent_kde" in scores:
            figures["kde_density"] = score_histogram(
                scores["latent_kde"], labels, pl_module.threshold_of("latent_kde"),
                "latent_kde (-log density)")
        if pl_module.history:
            figures["training_curves"] = training_figure(pl_module.history)
        gallery_figure = self._gallery(trainer, pl_module, rows, primary, threshold)
        if gallery_figure is not None:
            figures["gallery"] = gallery_figure
        self.written = {name: save_figure(fig, self.output_dir / f"{name}.png")
                        for name, fig in figures.items()}
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.log_image("test/figures", [str(p) for p in self.written.values()],
                                 caption=list(self.written))

    def _gallery(self, trainer: Trainer, pl_module: LightningModule, rows: list[dict[str, Any]],
                 primary: str, threshold: float) -> Any:
        datamodule = trainer.datamodule
        dataset = getattr(datamodule, "datasets", {}).get("test") if datamodule else None
        if dataset is None:
            return None
        chosen = pick_gallery_rows(rows, primary, threshold, self.gallery_rows)
        if not chosen:
            return None
        index = {path: i for i, path in enumerate(dataset.paths)}
        samples = [dataset[index[r["path"]]] for r in chosen]
        images = torch.stack([s["image"] for s in samples]).to(pl_module.device)
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            out = pl_module.predict_batch(images)
            reconstructions = pl_module.net.reconstruct(images).cpu() \
                if pl_module.net.has_reconstruction else [None] * len(images)
        pl_module.train(was_training)
        amap = out["maps"][pl_module.scorer.primary_map][:, 0].cpu()
        pixel_threshold = float(pl_module.post_processor.pixel_threshold)
        entries = []
        for i, (row, sample) in enumerate(zip(chosen, samples, strict=True)):
            kind = ("FP" if not row["label"] else "TP") if row[primary] > threshold else (
                "FN" if row["label"] else "TN")
            entries.append({"image": sample["image"], "reconstruction": reconstructions[i],
                            "map": amap[i], "mask": sample["mask"][0],
                            "predicted_mask": (amap[i] > pixel_threshold).float(),
                            "title": f"{kind} {row['defect_type']}\n{primary}={row[primary]:.3g}"})
        return gallery(entries, pl_module.scorer.primary_map)
