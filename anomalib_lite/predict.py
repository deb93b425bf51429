"""Score new images with a trained model: ``python -m anomalib_lite.predict ckpt=... input=...``.

Writes into the run directory ``predictions.csv`` (one row per file, failures included),
``overlays/<relative path>.png`` (the primary anomaly map over the image) and
``summary.json``, and prints the counts. The CSV is written through a temporary file and
renamed at the end, so an interrupted run never leaves a partial one. A run directory that
holds predictions already is refused unless ``overwrite=true`` (two runs would mix their
overlays). The command exits with status 1 when no input could be scored, 2 for an error
in the config, the checkpoint or the input path.
"""

from __future__ import annotations

import csv
import math
import shutil
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from anomalib_lite.cli import (
    CONFIG_DIR,
    exit_on_message_error,
    exit_with_message,
    run_app,
    set_torch_threads,
    start_run,
)
from anomalib_lite.data.preprocess import to_model_input
from anomalib_lite.deploy.checkpoint import load_model, preprocessing_of
from anomalib_lite.deploy.predictor import Prediction, Predictor
from anomalib_lite.deploy.report import (
    EXAMPLE,
    collect_inputs,
    csv_columns,
    overlay_name,
    prediction_row,
    print_summary,
    summarize,
)
from anomalib_lite.utils.checks import ConfigError
from anomalib_lite.utils.instantiate import allow_packages
from anomalib_lite.utils.io import atomic_open, write_json
from anomalib_lite.viz import overlay_figure, save_figure


def overlay_scale(predictor: Predictor) -> float | None:
    """Colour-scale top shared by all overlays: twice the pixel threshold (which then sits
    mid-scale), or ``None`` (each image's own maximum) without a fitted pixel threshold."""
    pixel = float(predictor.model.post_processor.pixel_threshold)
    return 2 * pixel if math.isfinite(pixel) and pixel > 0 else None


def write_overlay(prediction: Prediction, path: Path, primary: str,
                  vmax: float | None) -> None:
    """The primary map over the model's input image, titled with score and decision."""
    assert prediction.image is not None and prediction.anomaly_map is not None
    decision = "ANOMALOUS" if prediction.anomalous[primary] else "normal"
    source = Path(prediction.source)
    title = (f"{source.parent.name}/{source.name}\n{primary} {prediction.scores[primary]:.4g} "
             f"({prediction.normalized[primary]:.2f}): {decision}")
    top = vmax or float(prediction.anomaly_map.max()) or 1.0
    save_figure(overlay_figure(to_model_input(prediction.image), prediction.anomaly_map, top,
                               title), path)


OUTPUTS = ("predictions.csv", "summary.json", "overlays")


def claim_output_dir(output_dir: Path, overwrite: bool) -> None:
    """Refuse a directory holding an earlier run's predictions, unless ``overwrite`` (the
    earlier overlays are then removed; the CSV and summary are replaced at the end)."""
    earlier = [name for name in OUTPUTS if (output_dir / name).exists()]
    if not earlier:
        return
    if not overwrite:
        raise ConfigError(f"{output_dir} holds the predictions of an earlier run "
                          f"({', '.join(earlier)}): give this run its own directory "
                          "(hydra.run.dir=...), or set overwrite=true to replace them")
    shutil.rmtree(output_dir / "overlays", ignore_errors=True)


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Score ``cfg.input`` with ``cfg.ckpt``; write the outputs; return the summary."""
    set_torch_threads(cfg)
    allow_packages(cfg.get("allowed_packages") or [])
    model = load_model(cfg.get("ckpt"), example=EXAMPLE)
    files, root = collect_inputs(cfg.get("input"))
    predictor = Predictor(model, preprocessing_of(model, cfg.get("image_size"), cfg.ckpt),
                          batch_size=cfg.batch_size, device=cfg.device)
    output_dir = Path(cfg.paths.output_dir)
    claim_output_dir(output_dir, bool(cfg.get("overwrite", False)))
    primary, names = predictor.primary, predictor.score_names
    vmax, taken, rows = overlay_scale(predictor), set(), []
    start = time.perf_counter()
    csv_path = output_dir / "predictions.csv"
    with atomic_open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=csv_columns(names))
        writer.writeheader()
        for prediction, source in zip(predictor.iter_predict(files), files, strict=True):
            overlay = ""
            if prediction.ok and cfg.overlays:
                overlay = str(Path("overlays") / overlay_name(source, root, taken))
                write_overlay(prediction, output_dir / overlay, primary, vmax)
            rows.append(prediction_row(prediction, primary, names, overlay))
            writer.writerow(rows[-1])
    summary = summarize(rows, primary, model.threshold_of(primary))
    summary["wall_time_s"] = time.perf_counter() - start
    write_json(output_dir / "summary.json", summary)
    print_summary(summary, csv_path)
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="predict")
def main(cfg: DictConfig) -> None:
    start_run(cfg)
    try:
        summary = predict(cfg)
    except Exception as error:
        exit_on_message_error(error)
        raise
    if summary["total"] and not summary["ok"]:
        exit_with_message(f"none of the {summary['total']} input file(s) could be scored "
                          f"(each one's reason is above and in {cfg.paths.output_dir}/"
                          "predictions.csv)", code=1)


if __name__ == "__main__":
    run_app(main, "predict")
