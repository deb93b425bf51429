"""The validation stage's bookkeeping: normal scores for the thresholds, synthetic AUROCs.

Scores and (subsampled) maps of the normal validation images fit the post-processor; with
synthetic validation anomalies their scores and maps give ``val/synthetic_*`` AUROCs, the
metrics settings are chosen on, never the test split. Values are gathered from every
process (torchmetrics ``CatMetric``), so thresholds equal a single-process run's.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torchmetrics import CatMetric

from anomalib_lite.metrics import pixel_auroc
from anomalib_lite.scoring.post_processor import PostProcessor

PIXELS_PER_IMAGE = 1024  # pixels per validation image kept for the pixel threshold and AUROC


def _cat() -> CatMetric:
    return CatMetric(nan_strategy="disable")


def gathered(metric: CatMetric) -> Tensor:
    """All values gathered across processes (empty if nothing was added).

    ``compute`` is called on every rank, updated or not, so that the collective matches.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*compute.*before.*update.*")
        value = metric.compute()
    if isinstance(value, Tensor):
        return value.reshape(-1)
    return torch.cat([v.reshape(-1) for v in value]) if len(value) else torch.empty(0)


def subsample(maps: Tensor) -> Tensor:
    """About ``PIXELS_PER_IMAGE`` evenly strided pixels of each (N, 1, H, W) map, flat."""
    pixels = maps.flatten(1)
    return pixels[:, ::max(1, pixels.shape[1] // PIXELS_PER_IMAGE)].reshape(-1).float()


class ValidationScores(nn.Module):
    """Per epoch: normal scores and pixels, and the synthetic anomalies' scores, maps, masks.

    Scores are keyed by index (``score<i>``), so any score name is valid.
    """

    def __init__(self, score_names: list[str]) -> None:
        super().__init__()
        self.score_names = list(score_names)
        keys = [f"score{i}" for i in range(len(score_names))]
        self.normal = nn.ModuleDict({k: _cat() for k in (*keys, "pixels")})
        self.synthetic = nn.ModuleDict({k: _cat() for k in (*keys, "maps", "masks")})
        self.has_synthetic = False

    def update_normal(self, scores: Mapping[str, Tensor], primary_map: Tensor) -> None:
        for i, name in enumerate(self.score_names):
            self.normal[f"score{i}"].update(scores[name].float())
        self.normal["pixels"].update(subsample(primary_map))

    def update_synthetic(self, scores: Mapping[str, Tensor], primary_map: Tensor,
                         masks: Tensor) -> None:
        self.has_synthetic = True
        for i, name in enumerate(self.score_names):
            self.synthetic[f"score{i}"].update(scores[name].float())
        self.synthetic["maps"].update(subsample(primary_map))
        self.synthetic["masks"].update(subsample(masks))

    def synthetic_aurocs(self) -> dict[str, float]:
        """Image AUROC of normal vs synthetic images per score, and the primary map's pixel
        AUROC on the synthetic images (``pixel``)."""
        aurocs = {}
        for i, name in enumerate(self.score_names):
            normal = gathered(self.normal[f"score{i}"])
            synthetic = gathered(self.synthetic[f"score{i}"])
            labels = torch.cat([torch.zeros_like(normal), torch.ones_like(synthetic)])
            aurocs[name] = pixel_auroc(torch.cat([normal, synthetic]), labels)
        aurocs["pixel"] = pixel_auroc(gathered(self.synthetic["maps"]),
                                      gathered(self.synthetic["masks"]))
        return aurocs

    def fit(self, post: PostProcessor) -> None:
        """Fit ``post``'s thresholds on the normal scores and pixels."""
        for i, name in enumerate(self.score_names):
            post.fit(name, gathered(self.normal[f"score{i}"]))
        post.fit_pixels(gathered(self.normal["pixels"]))

    def reset(self) -> None:
        for metric in (*self.normal.values(), *self.synthetic.values()):
            metric.reset()
        self.has_synthetic = False
