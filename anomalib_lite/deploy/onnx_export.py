"""Export a trained model to ONNX: pre-processing, reconstruction, anomaly map and scores.

The graph takes ``image``: uint8 RGB, NCHW, at the training size (``height`` and ``width``
in the metadata; ``image_size`` is the config's value, one number or [height, width];
resize first, as :class:`~anomalib_lite.data.preprocess.Preprocessing` does, because PIL's
antialiased bicubic resize has no exact ONNX equivalent). It returns

- ``anomaly_map`` (N, 1, H, W): the primary score's map,
- ``scores`` (N, K): every image score, in the order of the ``score_names`` metadata,
- ``normalized_scores`` (N, K): in [0, 1] with the threshold at 0.5,
- ``anomalous`` (N, K): each score above its stored threshold.

The batch dimension is dynamic. Thresholds, score names, image size and the input scaling
travel as ``metadata_props`` (JSON values).
"""

from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from anomalib_lite.data.preprocess import MAX_VALUE, Preprocessing, to_model_input
from anomalib_lite.models.module import AnomalyModule
from anomalib_lite.utils.io import atomic_open

OUTPUTS = ("anomaly_map", "scores", "normalized_scores", "anomalous")
OPSET = 17


class ExportModel(nn.Module):
    """uint8 images → (anomaly_map, scores, normalized_scores, anomalous) through
    ``AnomalyModule.predict_step``, the test stage's inference path."""

    def __init__(self, model: AnomalyModule, score_names: list[str]) -> None:
        super().__init__()
        self.model, self.score_names = model.eval(), score_names

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        out = self.model.predict_step({"image": to_model_input(images), "path": []}, 0)
        stack = [torch.stack([out[key][n] for n in self.score_names], dim=1)
                 for key in ("scores", "normalized_scores", "anomalous")]
        return out["anomaly_map"], *stack


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def export_metadata(model: AnomalyModule, preprocessing: Preprocessing,
                    score_names: list[str]) -> dict[str, str]:
    """``metadata_props``: everything a deployment needs beside the graph (JSON values)."""
    values: dict[str, Any] = {
        "producer": "anomalib_lite",
        "input": f"image: uint8 RGB NCHW, {preprocessing.channels}x{preprocessing.height}"
                 f"x{preprocessing.width}; the graph divides by {MAX_VALUE:g}",
        "image_size": preprocessing.to_dict()["image_size"], "height": preprocessing.height,
        "width": preprocessing.width, "channels": preprocessing.channels,
        "input_scale": 1.0 / MAX_VALUE, "outputs": list(OUTPUTS),
        "score_names": score_names, "primary_score": model.scorer.primary,
        "primary_map": model.scorer.primary_map,
        "thresholds": {n: _finite(model.threshold_of(n)) for n in score_names},
        "pixel_threshold": _finite(float(model.post_processor.pixel_threshold)),
        "threshold_rule": model.post_processor.rule,
    }
    return {key: json.dumps(value) for key, value in values.items()}


def export_onnx(model: AnomalyModule, preprocessing: Preprocessing, path: str | Path,
                opset: int = OPSET) -> Path:
    """Write the model as ONNX (TorchScript-based exporter) with metadata, atomically."""
    import onnx

    names = model.available_scores
    wrapper = ExportModel(model.cpu(), names)
    example = torch.zeros(2, preprocessing.channels, preprocessing.height, preprocessing.width,
                          dtype=torch.uint8)
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # tracing bakes shapes, thresholds and the score set in as constants: as intended
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*[Cc]onstant folding.*")
        torch.onnx.export(wrapper, (example,), buffer, input_names=["image"],
                          output_names=list(OUTPUTS), opset_version=opset, dynamo=False,
                          dynamic_axes={k: {0: "batch"} for k in ("image", *OUTPUTS)})
    graph = onnx.load_from_string(buffer.getvalue())
    for key, value in export_metadata(model, preprocessing, names).items():
        graph.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(graph)
    with atomic_open(path, "wb") as handle:
        handle.write(graph.SerializeToString())
    return Path(path)


def onnx_max_abs_diff(path: str | Path, model: AnomalyModule, images: Tensor) -> dict[str, float]:
    """onnxruntime vs PyTorch on uint8 ``images``: the largest absolute difference of the map,
    of each score (``scores/<name>``) and of the normalized scores, and the number of
    decisions that differ (``anomalous``)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = [torch.from_numpy(a) for a in session.run(list(OUTPUTS), {"image": images.numpy()})]
    names = model.available_scores
    with torch.no_grad():
        expected = ExportModel(model, names)(images)
    diff = [(ours.double() - theirs.double()).abs() for ours, theirs in zip(expected, got,
                                                                             strict=True)]
    return {"anomaly_map": float(diff[0].max()),
            **{f"scores/{n}": float(diff[1][:, i].max()) for i, n in enumerate(names)},
            "normalized_scores": float(diff[2].max()), "anomalous": float(diff[3].sum())}
