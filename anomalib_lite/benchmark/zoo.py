"""The model zoo benchmark: every recipe on every dataset, timed, beside published numbers.

    python -m anomalib_lite.benchmark.zoo --mvtec-root <MVTec AD root> \\
        --kolektor-root <KolektorSDD folder> [--recipes pca,patch_knn,feature_ae] \\
        [--datasets bottle,pill,kolektorsdd,sprites] [--out DIR] [--jobs N] [-- overrides]

Each (recipe, dataset) pair is one run of the train CLI (a subprocess) in
``<out>/<recipe>_<dataset>``: fit on the normal training images, thresholds on the normal
validation images, metrics on the test split. The table (image and pixel AUROC of the
recipe's primary score, the synthetic validation AUROC, wall time of the whole command and
of the fit) is printed and written atomically to ``<out>/zoo.json`` and ``<out>/zoo.md``.
A failed run is a row with its error, never dropped.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from anomalib_lite.benchmark.targets import DRAEM_PUBLISHED
from anomalib_lite.results import headline
from anomalib_lite.utils.io import atomic_open, write_json

# the command line of each recipe (CLI overrides; the dataset's come after and win)
RECIPES: dict[str, list[str]] = {
    "pca": ["model=pca", "data.image_size=256"],
    "patch_knn": ["model=patch_knn", "data.image_size=256"],
    "feature_ae": ["experiment=mvtec_pretrained"],
    "mvtec_best": ["experiment=mvtec_best"],
}
# published image / pixel AUROC (not measured here)
PUBLISHED = {
    "DRAEM": DRAEM_PUBLISHED,
    "NSA": {"bottle": {"image_auroc": 0.977, "pixel_auroc": 0.983},
            "pill": {"image_auroc": 0.992, "pixel_auroc": 0.985}},
    "RD4AD": {"bottle": {"image_auroc": 1.000, "pixel_auroc": 0.987},
              "pill": {"image_auroc": 0.966, "pixel_auroc": 0.982}},
}


def dataset_overrides(dataset: str, args: argparse.Namespace) -> list[str]:
    """The CLI overrides that select ``dataset``."""
    if dataset in ("bottle", "pill"):
        if not args.mvtec_root:
            raise SystemExit(f"--datasets {dataset} needs --mvtec-root")
        return [f"data={dataset}", f"data.root={args.mvtec_root}"]
    if dataset == "kolektorsdd":
        if not args.kolektor_root:
            raise SystemExit("--datasets kolektorsdd needs --kolektor-root")
        root = Path(args.kolektor_root)
        return ["data=folder", f"data.normal_dir={root / 'good'}",  # tall images, as they are
                f"data.abnormal_dirs=[{root / 'defect'}]", f"data.mask_dir={root / 'masks'}",
                "data.image_size=[640,256]"]
    if dataset == "sprites":  # 2,000 generated training images at 128 px
        return ["data=sprites", "data.n_train=2000", "data.image_size=128"]
    raise SystemExit(f"unknown dataset {dataset!r}: bottle, pill, kolektorsdd or sprites")


def last_logged(run_dir: Path, key: str) -> float | None:
    """The last value of ``key`` in the run's ``csv/metrics.csv`` (None if never logged)."""
    path = run_dir / "csv" / "metrics.csv"
    if not path.exists():
        return None
    with path.open(newline="", encoding="utf-8") as handle:
        values = [row[key] for row in csv.DictReader(handle) if row.get(key)]
    return float(values[-1]) if values else None


def run_one(recipe: str, dataset: str, args: argparse.Namespace) -> dict[str, Any]:
    """Train and test one recipe on one dataset; its row of the table."""
    run_dir = Path(args.out) / f"{recipe}_{dataset}"
    command = [sys.executable, "-m", "anomalib_lite.train", *RECIPES[recipe],
               *dataset_overrides(dataset, args), f"hydra.run.dir={run_dir}", "logger=csv",
               "trainer.enable_progress_bar=false", f"torch_threads={args.threads}",
               *args.overrides]
    start = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - start
    row: dict[str, Any] = {"recipe": recipe, "dataset": dataset, "run_dir": str(run_dir),
                           "command": " ".join(command[1:]), "wall_s": wall}
    results_file = run_dir / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else None
    if proc.returncode != 0 or results is None or results["run"]["status"] != "completed":
        error = (results or {}).get("error", {}).get("message") or proc.stderr[-500:]
        return {**row, "status": "failed", "error": error}
    return {**row, "status": "completed", **headline(results),
            "fit_s": results["train"]["wall_time_s"],
            "val_synthetic_image_auroc": last_logged(run_dir, "val/synthetic_image_auroc"),
            "val_synthetic_pixel_auroc": last_logged(run_dir, "val/synthetic_pixel_auroc"),
            "image_size": results["config"]["data"]["image_size"]}


def _fmt(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one row per run, then the published numbers for the MVTec categories."""
    lines = ["| recipe | dataset | image AUROC | pixel AUROC | AUPRO | synthetic val img / px "
             "| px | run s (fit s) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r["status"] != "completed":
            lines.append(f"| {r['recipe']} | {r['dataset']} | failed: {r['error'][:80]} "
                         "| | | | | |")
            continue
        lines.append(
            f"| {r['recipe']} | {r['dataset']} | {_fmt(r['image_auroc'])} "
            f"| {_fmt(r['pixel_auroc'])} | {_fmt(r['aupro'])} "
            f"| {_fmt(r['val_synthetic_image_auroc'])} / "
            f"{_fmt(r['val_synthetic_pixel_auroc'])} | {r['image_size']} "
            f"| {r['wall_s']:.0f} ({r['fit_s']:.0f}) |")
    for name, numbers in PUBLISHED.items():
        for dataset, m in numbers.items():
            lines.append(f"| {name} (published) | {dataset} | {m['image_auroc']:.3f} "
                         f"| {m['pixel_auroc']:.3f} | | | | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipes", default="pca,patch_knn,feature_ae")
    parser.add_argument("--datasets", default="bottle,pill,kolektorsdd,sprites")
    parser.add_argument("--mvtec-root", help="MVTec AD root holding <category>/")
    parser.add_argument("--kolektor-root", help="folder holding good/, defect/, masks/")
    parser.add_argument("--out", default="outputs/benchmark/zoo")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run (after --)")
    args = parser.parse_args(argv)
    args.out = str(Path(args.out).resolve())
    for key in ("mvtec_root", "kolektor_root"):
        if getattr(args, key):
            setattr(args, key, str(Path(getattr(args, key)).resolve()))
    recipes = [r for r in args.recipes.split(",") if r]
    unknown = sorted(set(recipes) - set(RECIPES))
    if unknown:
        parser.error(f"unknown recipes {unknown}; choose from {sorted(RECIPES)}")
    pairs = [(r, d) for d in args.datasets.split(",") if d for r in recipes]
    for _, dataset in pairs:
        dataset_overrides(dataset, args)  # fail before any run
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        rows = list(pool.map(lambda pair: run_one(*pair, args), pairs))
    text = table(rows)
    print(text)
    out = Path(args.out)
    write_json(out / "zoo.json", {"rows": rows, "published": PUBLISHED, "table": text})
    with atomic_open(out / "zoo.md", "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
    return 0 if all(r["status"] == "completed" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
