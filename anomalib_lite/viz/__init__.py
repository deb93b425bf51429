"""Figures of a test run: gallery, score histograms, ROC/PR curves, training curves."""

from anomalib_lite.viz.figures import (
    gallery,
    model_comparison,
    overlay_figure,
    roc_pr_curves,
    save_figure,
    score_histogram,
    training_curves,
)

__all__ = ["gallery", "model_comparison", "overlay_figure", "roc_pr_curves", "save_figure",
           "score_histogram", "training_curves"]
