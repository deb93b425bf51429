"""Matplotlib figures (Agg backend, no display needed); each function returns a Figure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from torch import Tensor
from torchmetrics.functional.classification import (
    binary_precision_recall_curve,
    binary_roc,
)

from anomalib_lite.metrics import dense_ranks
from anomalib_lite.utils.io import atomic_open

DPI = 100


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as PNG atomically and close it."""
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=DPI)
    plt.close(fig)
    return Path(path)


def _hwc(image: Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] → (H, W, C) or (H, W) for display."""
    array = image.detach().float().clamp(0, 1).cpu().numpy()
    return array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)


def draw_overlay(ax: plt.Axes, image: np.ndarray, heat: np.ndarray, vmax: float) -> None:
    """The image with the anomaly map on top, opaque where the map is high."""
    ax.imshow(image, cmap="gray" if image.ndim == 2 else None)
    ax.imshow(heat, cmap="jet", vmin=0, vmax=vmax, alpha=np.clip(heat / vmax, 0.0, 1.0) * 0.8)


def overlay_figure(image: Tensor, amap: Tensor, vmax: float, title: str) -> Figure:
    """One image (C, H, W) in [0, 1] with its anomaly map (H, W) overlaid (colour scale
    0..``vmax``), titled ``title``: predict's per-image heatmap."""
    height, width = image.shape[-2:]
    aspect = min(max(height / width, 0.25), 4.0)  # tall and wide images keep their shape
    side = 3.2  # inches of the image's longer side; the title takes 0.4 more
    size = (max(side / aspect, 1.6), side + 0.4) if aspect > 1 else (side, side * aspect + 0.4)
    fig, ax = plt.subplots(figsize=size)
    draw_overlay(ax, _hwc(image), amap.detach().float().cpu().numpy(), vmax)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return fig


def gallery(rows: Sequence[Mapping[str, object]], map_name: str) -> Figure:
    """One row per image: input | reconstruction | anomaly map | overlay | masks.

    Each row holds ``image``, ``reconstruction`` (C, H, W, or None for models without
    one: the column is then left out), ``map`` (H, W), ``mask`` and ``predicted_mask``
    (H, W) tensors and a ``title``.
    """
    with_reconstruction = all(row.get("reconstruction") is not None for row in rows)
    columns = ["input", "reconstruction", f"anomaly map ({map_name})", "overlay",
               "ground truth", "predicted mask"]
    if not with_reconstruction:
        columns.remove("reconstruction")
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(2 * len(columns), 2 * len(rows)),
                             squeeze=False)
    vmax = max(float(row["map"].max()) for row in rows) or 1.0
    for r, row in enumerate(rows):
        image = _hwc(row["image"])
        amap = row["map"].cpu().numpy()
        panels = {"input": image, "ground truth": row["mask"].cpu().numpy(),
                  "predicted mask": row["predicted_mask"].cpu().numpy()}
        if with_reconstruction:
            panels["reconstruction"] = _hwc(row["reconstruction"])
        for c, column in enumerate(columns):
            ax = axes[r, c]
            if column.startswith("anomaly map"):
                ax.imshow(amap, cmap="inferno", vmin=0, vmax=vmax)
            elif column == "overlay":
                draw_overlay(ax, image, amap, vmax)
            elif column in ("ground truth", "predicted mask"):
                ax.imshow(panels[column], cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(panels[column], cmap="gray" if panels[column].ndim == 2 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(column, fontsize=8)
        axes[r, 0].set_ylabel(str(row["title"]), fontsize=7)
    fig.tight_layout()
    return fig


def score_histogram(scores: Tensor, labels: Tensor, threshold: float, name: str) -> Figure:
    """Histograms of normal and anomalous scores with the decision threshold."""
    scores, labels = scores.double().cpu(), labels.cpu()
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.histogram_bin_edges(scores.numpy(), bins=40)
    ax.hist(scores[labels == 0].numpy(), bins=bins, alpha=0.6, label="normal", color="tab:blue")
    ax.hist(scores[labels == 1].numpy(), bins=bins, alpha=0.6, label="anomalous",
            color="tab:red")
    if np.isfinite(threshold):
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.4g}")
    ax.set_xlabel(f"score: {name}")
    ax.set_ylabel("images")
    ax.legend()
    fig.tight_layout()
    return fig


def roc_pr_curves(scores: Mapping[str, Tensor], labels: Tensor) -> Figure:
    """ROC (left) and precision-recall (right) curves, one line per score."""
    fig, (roc_ax, pr_ax) = plt.subplots(1, 2, figsize=(10, 4.5))
    labels = labels.long().cpu()
    for name, values in scores.items():
        ranks = dense_ranks(values.double().cpu())
        fpr, tpr, _ = binary_roc(ranks, labels)
        precision, recall, _ = binary_precision_recall_curve(ranks, labels)
        roc_ax.plot(fpr.numpy(), tpr.numpy(), label=name)
        pr_ax.plot(recall.numpy(), precision.numpy(), label=name)
    roc_ax.plot([0, 1], [0, 1], color="gray", linestyle=":")
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    pr_ax.set(xlabel="recall", ylabel="precision", title="precision-recall")
    for ax in (roc_ax, pr_ax):
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def training_curves(history: Sequence[Mapping[str, float]]) -> Figure:
    """Train and validation loss (log scale) and the learning rate, per epoch."""
    epochs = [h["epoch"] for h in history]
    fig, (loss_ax, lr_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for key in ("train/loss", "val/loss"):
        values = [h.get(key, float("nan")) for h in history]
        loss_ax.plot(epochs, values, marker="o", markersize=3, label=key)
    loss_ax.set(xlabel="epoch", ylabel="loss", yscale="log", title="losses")
    loss_ax.legend()
    lr_ax.plot(epochs, [h.get("lr", float("nan")) for h in history], marker="o", markersize=3)
    lr_ax.set(xlabel="epoch", ylabel="learning rate", yscale="log", title="learning rate")
    fig.tight_layout()
    return fig


def model_comparison(matrix: Mapping[str, Mapping[str, float | None]],
                     variants: Sequence[str], ylabel: str) -> Figure:
    """Grouped bars: one group per category (row of ``matrix``), one bar per variant."""
    groups = list(matrix)
    width = 0.8 / max(1, len(variants))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(groups) * max(1, len(variants)) / 2),
                                    4.5))
    x = np.arange(len(groups))
    for i, name in enumerate(variants):
        values = [matrix[g].get(name) for g in groups]
        heights = [np.nan if v is None else float(v) for v in values]
        ax.bar(x + (i - (len(variants) - 1) / 2) * width, heights, width, label=name)
    ax.axhline(0.5, color="gray", linestyle=":", linewidth=1)  # chance
    ax.set_xticks(x, groups)
    ax.set(ylabel=ylabel, ylim=(0.0, 1.0))
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


__all__ = ["draw_overlay", "gallery", "model_comparison", "overlay_figure", "roc_pr_curves",
           "save_figure", "score_histogram", "training_curves"]
