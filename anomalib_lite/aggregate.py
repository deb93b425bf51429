"""Collect a sweep's ``results.json`` files into tables and a model-comparison plot.

``python -m anomalib_lite.aggregate <sweep dir> [--out DIR] [--score NAME]``, or
automatically at the end of every multirun (``anomalib_lite.callbacks.AggregateSweep``).

Writes into ``<sweep dir>/aggregate/`` (atomically):

- ``results.csv``: one row per job and image score (long form, every metric).
- ``overall.csv`` / ``per_category.csv``: the two tables of the first seed document, per
  model variant and score: mean over categories, and AUROC per category (with pixel AUROC
  and AUPRO of the primary map).
- ``summary.md``: those tables in Markdown, plus every job's status and error.
- ``comparison.png``: image AUROC per category and variant for one score.

A *variant* is the combination of the Hydra choices that vary across the sweep, other than
the dataset (e.g. ``model=unet loss=ssim``). Failed jobs (``run.status: failed``), job
folders without a ``results.json`` (killed) and unreadable files are listed, never dropped.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from statistics import fmean
from typing import Any

import yaml

from anomalib_lite.utils.io import atomic_open

RESULTS_FILE = "results.json"
OUTPUT_DIR = "aggregate"
DATA_KEY = "data"
CATEGORY_KEY = "data.category"  # sweeping data=mvtec data.category=a,b is sweeping data
KEY_ORDER = ("experiment", "model", "loss", "score")  # how variant names read


@dataclass
class Job:
    """One job of a sweep: where it ran, what it was, and how it ended."""

    path: Path
    status: str  # completed | failed | interrupted | missing | unreadable
    choices: dict[str, str] = field(default_factory=dict)
    results: dict[str, Any] | None = None
    error: str = ""

    @property
    def category(self) -> str:
        data = ((self.results or {}).get("config") or {}).get("data") or {}
        return str(data.get("category") or self.choices.get(CATEGORY_KEY)
                   or self.choices.get(DATA_KEY, "?"))

    @property
    def scores(self) -> dict[str, Any]:
        return (self.results or {}).get("scores") or {} if self.status == "completed" else {}

    @property
    def pixel(self) -> dict[str, Any]:
        results = self.results or {}
        return (results.get("pixel") or {}).get(results.get("primary_map")) or {}


def _hydra_choices(job_dir: Path) -> dict[str, str]:
    """The job's Hydra choices from ``.hydra/hydra.yaml`` (for jobs without results)."""
    path = job_dir / ".hydra" / "hydra.yaml"
    if not path.is_file():
        return {}
    choices = (yaml.safe_load(path.read_text()) or {}).get("hydra", {}).get("runtime", {})
    return {k: str(v) for k, v in (choices.get("choices") or {}).items()
            if not k.startswith("hydra") and v is not None}


def load_job(job_dir: Path) -> Job:
    """Read one job folder; a missing or unreadable ``results.json`` is reported as such."""
    choices = _hydra_choices(job_dir)
    path = job_dir / RESULTS_FILE
    if not path.is_file():
        return Job(job_dir, "missing", choices,
                   error=f"no {RESULTS_FILE}: the job was killed or is still running")
    try:
        results = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        return Job(job_dir, "unreadable", choices, error=f"{path}: {error}")
    run = results.get("run") or {"status": "completed"}  # schema 2 had no run record
    choices = {k: str(v) for k, v in (run.get("choices") or choices).items()
               if v is not None and not k.startswith("hydra")}
    for override in run.get("overrides") or []:  # swept values, e.g. by Optuna
        key, _, value = override.lstrip("+~").partition("=")
        choices.setdefault(key, value)
    error = (results.get("error") or {})
    message = f"{error.get('type', '')}: {error.get('message', '')}" if error else ""
    if results.get("interrupted"):  # stopped by a signal; its record says how to resume
        message = f"interrupted by {results['interrupted'].get('signal')}"
    return Job(job_dir, run.get("status", "completed"), choices, results, message)


def find_jobs(sweep_dir: str | Path) -> list[Job]:
    """Every job under ``sweep_dir``: folders with a ``results.json`` or a ``.hydra``."""
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"sweep directory {root} does not exist")
    dirs = {p.parent for p in root.rglob(RESULTS_FILE)}
    dirs |= {p.parent.parent for p in root.rglob(".hydra/config.yaml")}
    dirs = {d for d in dirs if OUTPUT_DIR not in d.relative_to(root).parts}
    if root in dirs and len(dirs) > 1:
        dirs.discard(root)  # the multirun's own .hydra folder is not a job
    return [load_job(d) for d in sorted(dirs, key=_job_order(root))]


def _job_order(root: Path):
    def key(path: Path) -> tuple:
        parts = path.relative_to(root).parts
        return tuple((0, int(p)) if p.isdigit() else (1, p) for p in parts)
    return key


def varying_keys(jobs: Sequence[Job]) -> list[str]:
    """Hydra choices that differ between jobs, other than the dataset."""
    keys = sorted({k for job in jobs for k in job.choices} - {DATA_KEY, CATEGORY_KEY},
                  key=lambda k: (KEY_ORDER.index(k) if k in KEY_ORDER else len(KEY_ORDER), k))
    varying = [k for k in keys if len({job.choices.get(k) for job in jobs}) > 1]
    return varying or (["model"] if any("model" in job.choices for job in jobs) else [])


def variant(job: Job, keys: Sequence[str]) -> str:
    return " ".join(f"{k}={job.choices.get(k, '?')}" for k in keys) or "run"


def _metric(values: Iterable[Any]) -> float:
    numbers = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return fmean(numbers) if numbers else math.nan


def result_rows(jobs: Sequence[Job], keys: Sequence[str]) -> list[dict[str, Any]]:
    """One row per job and image score; a job without scores gets one row with its error."""
    rows = []
    for job in jobs:
        base = {"job": str(job.path), "status": job.status, "variant": variant(job, keys),
                **{k: job.choices.get(k, "") for k in (*keys, DATA_KEY)},
                "category": job.category}
        train = (job.results or {}).get("train") or {}
        extra = {"pixel_auroc": job.pixel.get("pixel_auroc"), "aupro": job.pixel.get("aupro"),
                 "fit_time_s": train.get("wall_time_s"), "epochs": train.get("epochs"),
                 "error": job.error}
        if not job.scores:
            rows.append({**base, "score": "", "primary": "", **extra})
        for name, m in job.scores.items():
            rows.append({**base, "score": name,
                         "primary": name == (job.results or {}).get("primary_score"),
                         "image_auroc": m.get("image_auroc"),
                         "image_pr_auc": m.get("image_pr_auc"),
                         "mean_score_normal": m.get("mean_score_normal"),
                         "mean_score_anomalous": m.get("mean_score_anomalous"), **extra})
    return rows


def overall_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per variant and score: the mean over categories (the seed's "overall" table)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        if row["score"]:
            groups.setdefault((row["variant"], row["score"]), []).append(row)
    return [{"variant": v, "score": s, "n_categories": len({r["category"] for r in group}),
             **{k: _metric(r[k] for r in group)
                for k in ("image_auroc", "image_pr_auc", "mean_score_normal",
                          "mean_score_anomalous", "pixel_auroc", "aupro")}}
            for (v, s), group in groups.items()]


def per_category_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per score, category and variant: image AUROC and the primary map's pixel metrics."""
    return [{k: row[k] for k in ("score", "category", "variant", "image_auroc", "pixel_auroc",
                                 "aupro")} for row in rows if row["score"]]


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown_table(header: Sequence[str], body: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in body]
    return "\n".join(lines)


def category_matrix(rows: Sequence[dict[str, Any]], score: str, metric: str,
                    variants: Sequence[str]) -> tuple[list[str], dict[str, dict[str, float]]]:
    """``{category: {variant: metric}}`` for one score, with the categories in order."""
    matrix: dict[str, dict[str, float]] = {}
    for row in rows:
        if row["score"] == score:
            matrix.setdefault(row["category"], {})[row["variant"]] = row[metric]
    categories = list(matrix)
    matrix["mean"] = {v: _metric(matrix[c].get(v) for c in categories) for v in variants}
    return categories, matrix


def default_score(jobs: Sequence[Job]) -> str | None:
    """The primary score most jobs share."""
    primaries = Counter(job.results.get("primary_score") for job in jobs
                        if job.status == "completed" and job.results)
    return primaries.most_common(1)[0][0] if primaries else None


def summary_markdown(jobs: Sequence[Job], rows: Sequence[dict[str, Any]],
                     overall: Sequence[dict[str, Any]], variants: Sequence[str],
                     score: str | None) -> str:
    done = sum(job.status == "completed" for job in jobs)
    parts = [f"# Sweep summary\n\n{len(jobs)} jobs: {done} completed, "
             f"{len(jobs) - done} not completed.\n"]
    parts.append("## Overall performance (mean over categories)\n\n" + markdown_table(
        ("variant", "score", "categories", "AUROC", "PR-AUC", "normal mean score",
         "anomaly mean score", "pixel AUROC", "AUPRO"),
        ((r["variant"], r["score"], r["n_categories"], r["image_auroc"], r["image_pr_auc"],
          r["mean_score_normal"], r["mean_score_anomalous"], r["pixel_auroc"], r["aupro"])
         for r in overall)))
    scores = list(dict.fromkeys(r["score"] for r in rows if r["score"]))
    if score in scores:  # the headline score first
        scores.remove(score)
        scores.insert(0, score)
    for name in scores:
        categories, matrix = category_matrix(rows, name, "image_auroc", variants)
        parts.append(f"## Per-category image AUROC ({name})\n\n" + markdown_table(
            ("category", *variants),
            ((c, *(matrix[c].get(v) for v in variants)) for c in [*categories, "mean"])))
    for metric, title in (("pixel_auroc", "pixel AUROC"), ("aupro", "AUPRO")):
        if score is None:
            break
        categories, matrix = category_matrix(rows, score, metric, variants)
        parts.append(f"## Per-category {title} (primary map)\n\n" + markdown_table(
            ("category", *variants),
            ((c, *(matrix[c].get(v) for v in variants)) for c in [*categories, "mean"])))
    keys = varying_keys(jobs)
    parts.append("## Jobs\n\n" + markdown_table(
        ("job", "variant", "category", "status", "error"),
        ((job.path.name, variant(job, keys), job.category, job.status,
          job.error.splitlines()[0][:200] if job.error else "") for job in jobs)))
    return "\n\n".join(parts) + "\n"


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def aggregate(sweep_dir: str | Path, out_dir: str | Path | None = None,
              score: str | None = None) -> dict[str, Any]:
    """Aggregate every job under ``sweep_dir``; return the tables and the files written."""
    from anomalib_lite.viz.figures import model_comparison, save_figure

    jobs = find_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"no jobs (folders with {RESULTS_FILE} or .hydra/) "
                                f"under {sweep_dir}")
    out = Path(out_dir) if out_dir else Path(sweep_dir) / OUTPUT_DIR
    keys = varying_keys(jobs)
    variants = list(dict.fromkeys(variant(job, keys) for job in jobs))
    rows = result_rows(jobs, keys)
    overall = overall_rows(rows)
    score = score or default_score(jobs)
    files = {"results": out / "results.csv", "overall": out / "overall.csv",
             "per_category": out / "per_category.csv", "summary": out / "summary.md"}
    write_csv(files["results"], rows)
    write_csv(files["overall"], overall or [{"variant": "", "score": ""}])
    write_csv(files["per_category"], per_category_rows(rows) or [{"score": ""}])
    markdown = summary_markdown(jobs, rows, overall, variants, score)
    with atomic_open(files["summary"], "w", encoding="utf-8") as handle:
        handle.write(markdown)
    if score is not None:
        categories, matrix = category_matrix(rows, score, "image_auroc", variants)
        files["comparison"] = save_figure(
            model_comparison({c: matrix[c] for c in [*categories, "mean"]}, variants,
                             f"Image AUROC ({score})"), out / "comparison.png")
    return {"jobs": jobs, "variants": variants, "score": score, "rows": rows,
            "overall": overall, "markdown": markdown, "files": files}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m anomalib_lite.aggregate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", help="a multirun folder (outputs/<task>/multiruns/...)")
    parser.add_argument("--out", help=f"output folder (default <sweep_dir>/{OUTPUT_DIR})")
    parser.add_argument("--score", help="score of the plot and the pixel tables "
                        "(default: the primary score most jobs share)")
    args = parser.parse_args(argv)
    try:
        summary = aggregate(args.sweep_dir, args.out, args.score)
    except FileNotFoundError as error:
        parser.error(str(error))
    print(summary["markdown"])
    print("written:", *(str(p) for p in summary["files"].values()), sep="\n  ")


if __name__ == "__main__":
    main()
