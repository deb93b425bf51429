"""The run's ``results.json``, ``scores.csv`` and the console summary.

``results.json`` schema (version 3)::

    schema_version: 3
    run:            {status: completed|failed|interrupted, choices: {group: option} (Hydra),
                     overrides, job_num, world_size, rank (the process that wrote the file)}
    primary_score:  name of the headline score (e.g. "l2_mean")
    primary_map:    key of the primary score's anomaly map (e.g. "ssim_s4")
    threshold_rule: how thresholds were fitted ({method, quantile, k}) on normal val images
    scores:         {score name: {
                       image_auroc, image_pr_auc, mean_score_normal, mean_score_anomalous,
                       tpr_at_fpr: {fpr target: best TPR}, per_defect_auroc: {type: AUROC},
                       threshold (fitted on normal validation images), n_normal, n_anomalous,
                       confusion: {tp, fn, tn, fp, precision, recall, f1, fpr} at threshold,
                       oracle: {f1_max, threshold, note}  # chosen on test labels: not a result
                     }}
    pixel:          {map key: {pixel_auroc, aupro}}   (null where masks hold one class)
    pixel_threshold: primary-map threshold for predicted masks (normal validation pixels)
    aupro_fpr_limit: 0.3
    train:          {epochs, global_step, val_loss_best, best_checkpoint, wall_time_s (of the
                     fit, the parts before a resume included), resumed_from (ckpt_path)}
    data:           {skipped_unreadable: [{split, path, error}]} (data.skip_unreadable=true)
    test_wall_time_s, config (the resolved Hydra config; nodes that only repeat another
                     node are written as that reference: model.scoring: ${score},
                     model.net.loss: ${loss}: set score.* and loss.*, not those)

A failed run writes ``{schema_version, run: {status: failed, ...}, error: {type, message,
traceback}, config}`` instead, so that a sweep records it and goes on. An interrupted run
(Ctrl-C, SIGTERM) writes ``{schema_version, run: {status: interrupted, ...}, interrupted:
{signal, last_checkpoint, resume (the command that resumes it)}, config}``.

NaN (undefined metrics) is written as null. ``scores.csv`` holds one row per test image:
``path, label, defect_type, <one column per score>, anomalous`` (primary score above its
threshold). Both are written atomically.
"""

from __future__ import annotations

import csv
import math
import re
import traceback
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from anomalib_lite.utils.io import atomic_open, write_json
from anomalib_lite.utils.logs import to_log_files

SCHEMA_VERSION = 3


_REFERENCE = re.compile(r"\$\{[\w.]+\}")


def results_config(cfg: DictConfig, resolve: bool = True) -> dict[str, Any]:
    """The run's config for ``results.json`` and the loggers: resolved, except nodes that
    only repeat another node (``model.scoring: ${score}``, ``model.net.loss: ${loss}``),
    which are written as that reference, so that they do not read as settable on their own.
    """
    raw = OmegaConf.to_container(cfg, resolve=False)
    if not resolve:
        return raw  # type: ignore[return-value]
    resolved = OmegaConf.to_container(cfg, resolve=True)

    def keep_references(raw_node: Any, node: Any) -> Any:
        if isinstance(raw_node, str) and _REFERENCE.fullmatch(raw_node) \
                and isinstance(node, (dict, list)):
            return raw_node
        if isinstance(raw_node, dict) and isinstance(node, dict):
            return {k: keep_references(raw_node.get(k), v) for k, v in node.items()}
        if isinstance(raw_node, list) and isinstance(node, list) and len(raw_node) == len(node):
            return [keep_references(r, v) for r, v in zip(raw_node, node, strict=True)]
        return node

    return keep_references(raw, resolved)


def build_results(test_results: dict[str, Any], train_info: dict[str, Any],
                  test_wall_time_s: float, config: dict[str, Any],
                  run: dict[str, Any] | None = None,
                  data: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "run": run or {"status": "completed"},
            **test_results, "train": train_info, **({"data": data} if data else {}),
            "test_wall_time_s": test_wall_time_s, "config": config}


def headline(results: dict[str, Any]) -> dict[str, Any]:
    """The primary score's image AUROC and its map's pixel AUROC and AUPRO (None if absent)."""
    pixel = (results.get("pixel") or {}).get(results.get("primary_map")) or {}
    return {"primary_score": results["primary_score"],
            "image_auroc": results["scores"][results["primary_score"]]["image_auroc"],
            "pixel_auroc": pixel.get("pixel_auroc"), "aupro": pixel.get("aupro")}


def failure_results(error: BaseException, config: dict[str, Any],
                    run: dict[str, Any]) -> dict[str, Any]:
    """The ``results.json`` of a run that raised ``error``."""
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    cause = error
    while cause.__cause__ is not None:  # e.g. Hydra's InstantiationException wraps the cause
        cause = cause.__cause__
    return {"schema_version": SCHEMA_VERSION, "run": {**run, "status": "failed"},
            "error": {"type": type(cause).__name__, "message": str(cause),
                      "raised_as": type(error).__name__, "traceback": trace},
            "config": config}


def interruption_results(interruption: dict[str, Any], config: dict[str, Any],
                         run: dict[str, Any]) -> dict[str, Any]:
    """The ``results.json`` of a run stopped by a signal: which, and how to resume it."""
    return {"schema_version": SCHEMA_VERSION, "run": {**run, "status": "interrupted"},
            "interrupted": interruption, "config": config}


def write_results(path: str | Path, results: dict[str, Any]) -> Path:
    """Write ``results.json`` atomically."""
    return write_json(path, results)


def write_scores_csv(path: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write one row per image atomically (columns from the first row)."""
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def summary_table(results: dict[str, Any]) -> Table:
    """One row per image score: ranking metrics, class means, threshold and confusion."""
    table = Table(title=f"Test results (primary score: {results['primary_score']})")
    for column in ("score", "AUROC", "PR-AUC", "mean normal", "mean anomalous", "threshold",
                   "TP", "FN", "TN", "FP"):
        table.add_column(column, justify="left" if column == "score" else "right",
                         no_wrap=column == "score")
    for name, m in results["scores"].items():
        c = m["confusion"]
        table.add_row(name, _fmt(m["image_auroc"]), _fmt(m["image_pr_auc"]),
                      _fmt(m["mean_score_normal"]), _fmt(m["mean_score_anomalous"]),
                      _fmt(m["threshold"]), *(_fmt(c[k]) for k in ("tp", "fn", "tn", "fp")))
    return table


def pixel_table(results: dict[str, Any]) -> Table:
    """Pixel AUROC and AUPRO per anomaly map."""
    table = Table(title=f"Pixel metrics (primary map: {results.get('primary_map')})")
    for column in ("map", "pixel AUROC", f"AUPRO (FPR <= {results.get('aupro_fpr_limit')})"):
        table.add_column(column, justify="left" if column == "map" else "right")
    for key, m in results.get("pixel", {}).items():
        table.add_row(key, _fmt(m["pixel_auroc"]), _fmt(m["aupro"]))
    return table


def print_summary(results: dict[str, Any], path: str | Path | None = None) -> None:
    """The tables on the console, and into the run's log file."""
    console = Console(record=True)
    console.width = max(console.width, 120)  # logs default to 80 columns: keep rows whole
    console.print(summary_table(results))
    if results.get("pixel"):
        console.print(pixel_table(results))
    if path is not None:
        console.print(f"results written to {path}")
    to_log_files(console.export_text())
