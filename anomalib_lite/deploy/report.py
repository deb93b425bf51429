"""Predict's outputs: the input list, ``predictions.csv`` rows, overlays and the summary."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from anomalib_lite.deploy.predictor import Prediction
from anomalib_lite.utils.checks import ConfigError
from anomalib_lite.utils.logs import to_log_files

EXAMPLE = "python -m anomalib_lite.predict ckpt=outputs/train/runs/<run>/model.ckpt input=images/"
MAX_FAILURES_SHOWN = 20


def collect_inputs(value: str | Path | None, key: str = "input") -> tuple[list[Path], Path]:
    """The files to score and the folder overlay names are relative to.

    A file is scored as it is; a folder contributes every non-hidden file below it (sorted,
    recursively), whatever its extension: a file that is not an image is reported, not
    skipped silently.
    """
    if value is None or str(value) == "":
        raise ConfigError(f"{key} is not set: pass an image or a folder of images, e.g.\n  "
                          f"{EXAMPLE}")
    path = Path(str(value)).expanduser()
    if path.is_file():
        return [path], path.parent
    if not path.is_dir():
        raise ConfigError(f"{key}={str(value)!r}: no such file or folder (e.g. {key}=images/)")
    files = sorted(p for p in path.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise ConfigError(f"{key}={str(value)!r}: the folder holds no files")
    return files, path


def overlay_name(source: Path, root: Path, taken: set[Path]) -> Path:
    """``<relative path>.png`` (suffix replaced); ``<stem>_<ext>.png`` if that is taken."""
    relative = source.relative_to(root) if source.is_relative_to(root) else Path(source.name)
    name = relative.with_suffix(".png")
    if name in taken:
        name = relative.with_name(f"{relative.stem}_{relative.suffix.lstrip('.')}.png")
    taken.add(name)
    return name


def csv_columns(score_names: list[str]) -> list[str]:
    """``predictions.csv`` columns: the primary score's result, then every score."""
    return ["path", "status", "error", "score", "normalized_score", "anomalous",
            *score_names, "overlay"]


def prediction_row(prediction: Prediction, primary: str, score_names: list[str],
                   overlay: str = "") -> dict[str, Any]:
    """One CSV row; a failed image has its reason and empty score columns."""
    row: dict[str, Any] = {"path": prediction.source,
                           "status": "ok" if prediction.ok else "failed",
                           "error": prediction.error, "overlay": overlay}
    if prediction.ok:
        row.update(score=prediction.scores[primary],
                   normalized_score=prediction.normalized[primary],
                   anomalous=int(prediction.anomalous[primary]))
        row.update({name: prediction.scores.get(name, "") for name in score_names})
    return {column: row.get(column, "") for column in csv_columns(score_names)}


def summarize(rows: list[dict[str, Any]], primary: str, threshold: float) -> dict[str, Any]:
    """Counts (total, ok, failed, anomalous, normal) and each failure's path and reason."""
    ok = [r for r in rows if r["status"] == "ok"]
    anomalous = sum(int(r["anomalous"]) for r in ok)
    return {"total": len(rows), "ok": len(ok), "failed": len(rows) - len(ok),
            "anomalous": anomalous, "normal": len(ok) - anomalous, "primary_score": primary,
            "threshold": threshold if math.isfinite(threshold) else None,
            "failures": [{"path": r["path"], "error": r["error"]}
                         for r in rows if r["status"] != "ok"]}


def print_summary(summary: dict[str, Any], csv_path: Path) -> None:
    """The counts as a rich table, then the failures (path and reason)."""
    console = Console(record=True)
    console.width = max(console.width, 120)
    threshold = summary["threshold"]
    table = Table(title=f"Predictions ({summary['primary_score']} > "
                        f"{'n/a' if threshold is None else f'{threshold:.4g}'}: anomalous)")
    for column in ("images", "scored", "failed", "anomalous", "normal"):
        table.add_column(column, justify="right")
    table.add_row(*(str(summary[k]) for k in ("total", "ok", "failed", "anomalous", "normal")))
    console.print(table)
    for failure in summary["failures"][:MAX_FAILURES_SHOWN]:
        console.print(Text.assemble(("failed ", "red"), failure["error"]))
    if summary["failed"] > MAX_FAILURES_SHOWN:
        console.print(f"... and {summary['failed'] - MAX_FAILURES_SHOWN} more failures")
    if summary["failed"]:
        console.print(f"{summary['failed']} of {summary['total']} images failed; "
                      "the others were scored.")
    console.print(f"predictions written to {csv_path}")
    to_log_files(console.export_text())
