"""Post-processing: decision thresholds and score normalization, fitted on normal images.

One ``nn.Module`` whose buffers (thresholds, normal score range, pixel threshold) travel in
the checkpoint; the test stage, ``predict`` and the exported ONNX graph all decide and
normalize through it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from anomalib_lite.scoring.threshold import THRESHOLD_METHODS, fit_threshold
from anomalib_lite.utils import checks

DEFAULT_RULE = {"method": "quantile", "quantile": 0.99}


def check_rule(rule: Mapping | None) -> dict:
    """Validate a threshold rule ``{method, quantile, k}`` (``score.threshold``)."""
    rule = dict(rule or DEFAULT_RULE)
    checks.one_of("score.threshold.method", rule.get("method"), THRESHOLD_METHODS)
    checks.in_range("score.threshold.quantile", rule.get("quantile", 0.99), 1e-9, 1.0)
    unknown = set(rule) - {"method", "quantile", "k"}
    checks.require(not unknown, "score.threshold", sorted(unknown),
                   "keys among ['k', 'method', 'quantile']")
    return rule


class PostProcessor(nn.Module):
    """Per-score thresholds and min-max normalization, plus the primary map's pixel threshold.

    ``fit`` takes the scores of normal validation images; ``forward(scores)`` returns
    ``(normalized scores in [0, 1] with the threshold at 0.5, decisions)``.
    """

    def __init__(self, score_names: Sequence[str], rule: Mapping | None = None) -> None:
        super().__init__()
        self.score_names = list(score_names)
        self.rule = check_rule(rule)
        n = len(self.score_names)
        self.register_buffer("thresholds", torch.full((n,), float("nan")))
        self.register_buffer("score_min", torch.full((n,), float("nan")))
        self.register_buffer("score_max", torch.full((n,), float("nan")))
        self.register_buffer("pixel_threshold", torch.tensor(float("nan")))

    def fit(self, name: str, normal_scores: Tensor) -> None:
        """Threshold and normal range of one score from its normal validation values."""
        i = self.score_names.index(name)
        self.thresholds[i] = fit_threshold(normal_scores, **self.rule)
        if normal_scores.numel():
            self.score_min[i], self.score_max[i] = normal_scores.min(), normal_scores.max()

    def fit_pixels(self, normal_pixels: Tensor) -> None:
        self.pixel_threshold.fill_(fit_threshold(normal_pixels, **self.rule))

    def threshold_of(self, name: str) -> float:
        return float(self.thresholds[self.score_names.index(name)])

    def normalize(self, scores: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Scores → [0, 1] with the threshold at 0.5, scaled by the spread of the normal
        validation scores (anomalib's min-max normalization)."""
        normalized = {}
        for name, values in scores.items():
            i = self.score_names.index(name)
            span = (self.score_max[i] - self.score_min[i]).clamp_min(1e-12)
            normalized[name] = ((values - self.thresholds[i]) / span + 0.5).clamp(0.0, 1.0)
        return normalized

    def decide(self, scores: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Each score above its threshold."""
        return {name: values > self.thresholds[self.score_names.index(name)]
                for name, values in scores.items()}

    def forward(self, scores: Mapping[str, Tensor]) -> tuple[dict[str, Tensor],
                                                             dict[str, Tensor]]:
        return self.normalize(scores), self.decide(scores)
