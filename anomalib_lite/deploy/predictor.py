"""Score new images with a trained model: the test stage's pre- and post-processing.

Every image goes through :class:`~anomalib_lite.data.preprocess.Preprocessing` (the
datamodules' decoding and resize) and ``AnomalyModule.predict_step`` (the one inference
path, ``predict_batch``, plus normalization and decisions at the stored thresholds). An
image that cannot be read is reported (``ok=False`` with the reason) and never stops the
others.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path

import torch
from torch import Tensor

from anomalib_lite.data.image_io import ImageLoadError
from anomalib_lite.data.preprocess import ImageSource, Preprocessing, to_model_input
from anomalib_lite.deploy.checkpoint import load_model, preprocessing_of
from anomalib_lite.models.module import AnomalyModule
from anomalib_lite.utils.checks import ConfigError


@dataclass
class Prediction:
    """One image's result; ``ok=False`` with ``error`` when it could not be read."""

    source: str
    ok: bool
    error: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    normalized: dict[str, float] = field(default_factory=dict)
    anomalous: dict[str, bool] = field(default_factory=dict)
    image: Tensor | None = None  # uint8 (C, S, S): the model's input
    anomaly_map: Tensor | None = None  # (S, S): the primary map


def _name(source: ImageSource, index: int) -> str:
    return str(source) if isinstance(source, (str, Path)) else f"<image {index}>"


class Predictor:
    """Scores images, arrays or files with a model (see :meth:`from_checkpoint`)."""

    def __init__(self, model: AnomalyModule, preprocessing: Preprocessing,
                 batch_size: int = 32, device: str | torch.device = "cpu") -> None:
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} is invalid: expected a positive "
                              "integer (override it, e.g. batch_size=32)")
        self.model = model.eval().to(device)
        self.preprocessing, self.batch_size, self.device = preprocessing, batch_size, device

    @classmethod
    def from_checkpoint(cls, path: str | Path, image_size: int | None = None,
                        **kwargs: object) -> Predictor:
        """Load ``path`` weights-only; ``image_size`` only for checkpoints lacking it."""
        model = load_model(path)
        return cls(model, preprocessing_of(model, image_size, path), **kwargs)

    @property
    def primary(self) -> str:
        return self.model.scorer.primary

    @property
    def score_names(self) -> list[str]:
        return self.model.available_scores

    @torch.no_grad()
    def score_tensor(self, images: Tensor) -> dict[str, object]:
        """uint8 (N, C, S, S) at the training size → ``AnomalyModule.predict_step`` output."""
        batch = {"image": to_model_input(images).to(self.device), "path": []}
        return self.model.predict_step(batch, 0)

    def predict(self, sources: Sequence[ImageSource] | ImageSource) -> list[Prediction]:
        """Score paths, arrays ((H, W[, C]) uint8/uint16, or float in [0, 1]) or PIL images."""
        if not isinstance(sources, (list, tuple)):
            sources = [sources]
        return list(self.iter_predict(sources))

    def iter_predict(self, sources: Iterable[ImageSource]) -> Iterator[Prediction]:
        """:meth:`predict` lazily, ``batch_size`` images decoded at a time."""
        numbered = enumerate(sources)
        while chunk := list(islice(numbered, self.batch_size)):
            yield from self._predict_chunk(chunk)

    def _predict_chunk(self, chunk: list[tuple[int, ImageSource]]) -> list[Prediction]:
        results, loaded = [], []
        for index, source in chunk:
            name = _name(source, index)
            try:
                loaded.append((len(results), self.preprocessing.load(source, name)))
                results.append(Prediction(name, ok=True))
            except ImageLoadError as err:
                results.append(Prediction(name, ok=False, error=str(err)))
            except Exception as err:  # any other decoder failure: reported, never fatal
                results.append(Prediction(name, ok=False, error=f"cannot read image {name}: "
                                          f"{type(err).__name__}: {err}"))
        if not loaded:
            return results
        images = torch.stack([image for _, image in loaded])
        out = self.score_tensor(images)
        for row, ((i, image), amap) in enumerate(zip(loaded, out["anomaly_map"], strict=True)):
            result = results[i]
            result.scores = {k: float(v[row]) for k, v in out["scores"].items()}
            result.normalized = {k: float(v[row]) for k, v in out["normalized_scores"].items()}
            result.anomalous = {k: bool(v[row]) for k, v in out["anomalous"].items()}
            result.image, result.anomaly_map = image, amap[0].cpu()
        return results
