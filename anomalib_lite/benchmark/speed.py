"""Speed benchmark: ``python -m anomalib_lite.benchmark`` (a measurement, not a test).

For each model recipe (``conf/model/<name>.yaml``) at one image size it measures:

- training throughput (images/s): a real Lightning ``Trainer.fit`` on random images,
  timed per step after warm-up, at the chosen precision;
- inference latency (batch 1, ms) and throughput (batch 32, images/s) of the one inference
  path (``predict_batch``: reconstruction, maps, scores; always float32);
- peak memory: resident set size on the CPU (Linux ``VmHWM``, reset before each phase) or
  allocated CUDA memory;
- optionally (``--e2e sprites,mvtec``) the wall time of the full train command to its final
  metric, and that metric (image and pixel AUROC from ``results.json``).

It prints a table and writes JSON (atomically) with the machine, versions and settings.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import re
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from rich.console import Console
from rich.table import Table

from anomalib_lite.benchmark.profile import (
    inference_breakdown,
    inference_flops_per_image,
    peak_flops,
    train_flops_per_image,
    training_breakdown,
)
from anomalib_lite.data.base import InMemoryDataModule
from anomalib_lite.data.tensor_dataset import InMemoryAnomalyDataset
from anomalib_lite.results import headline
from anomalib_lite.train import CONFIG_DIR
from anomalib_lite.utils.io import write_json

REPO_ROOT = Path(CONFIG_DIR).parent
STATUS = Path("/proc/self/status")


# ---------------------------------------------------------------- memory
def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    elif STATUS.exists():
        with contextlib.suppress(OSError):  # "5" resets VmHWM to the current RSS
            Path("/proc/self/clear_refs").write_text("5")


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak CUDA allocation, or the peak resident set size of this process, in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if STATUS.exists():
        match = re.search(r"VmHWM:\s+(\d+) kB", STATUS.read_text())
        return int(match.group(1)) / 1024 if match else None
    return None


# ---------------------------------------------------------------- measurements
class StepTimer(pl.Callback):
    """Wall time of each training step (forward, backward, optimizer)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.times, self._start = device, [], 0.0

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def on_train_batch_start(self, *args: Any) -> None:
        self._sync()
        self._start = time.perf_counter()

    def on_train_batch_end(self, *args: Any) -> None:
        self._sync()
        self.times.append(time.perf_counter() - self._start)


def build_module(model: str, overrides: Sequence[str] = ()) -> pl.LightningModule:
    """The model recipe's LightningModule, from the real Hydra config."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", [f"model={model}", "model.scheduler=null", *overrides])
    return instantiate(cfg.model, _recursive_=False)


def random_dataset(n: int, size: int, seed: int = 0) -> InMemoryAnomalyDataset:
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)
    return InMemoryAnomalyDataset(images, torch.zeros(n), torch.zeros(n, 1, size, size),
                                  [f"random/{i}" for i in range(n)], ["good"] * n)


def random_datamodule(n: int, size: int, batch: int) -> InMemoryDataModule:
    """A datamodule whose train and val splits are ``n`` random images."""
    datamodule = InMemoryDataModule(batch, batch, 0)
    dataset = random_dataset(n, size)
    datamodule.datasets = {"train": dataset, "val": dataset}
    datamodule.image_size = size
    return datamodule


def train_throughput(module: pl.LightningModule, size: int, batch: int, steps: int,
                     warmup: int, precision: str, device: torch.device) -> dict[str, float]:
    """Images/s of the training steps (after the model's one-pass fit, if it has one); a
    fit-only model reports its fit instead (images/s over one pass)."""
    timer = StepTimer(device)
    datamodule = random_datamodule(batch * (steps + warmup), size, batch)
    trainer = pl.Trainer(accelerator=device.type, devices=1, precision=precision,
                         max_steps=steps + warmup, limit_val_batches=0, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, callbacks=[timer],
                         num_sanity_val_steps=0)
    reset_peak_memory(device)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, datamodule=datamodule)
    peak = peak_memory_mb(device)
    if not module.net.trainable:
        wall = time.perf_counter() - start
        return {"fit_images_per_s": len(datamodule.datasets["train"]) / wall,
                "train_images_per_s": None, "train_step_ms": None, "train_peak_memory_mb": peak}
    step = statistics.median(timer.times[warmup:])
    return {"train_images_per_s": batch / step, "train_step_ms": 1000 * step,
            "train_peak_memory_mb": peak}


@torch.no_grad()
def inference(module: pl.LightningModule, size: int, batch: int, iterations: int,
              device: torch.device) -> tuple[float, float | None]:
    """Median seconds per ``predict_batch`` call, and the peak memory."""
    module = module.to(device).eval()
    images = torch.rand(batch, 3, size, size, device=device)
    for _ in range(2):  # warm-up
        module.predict_batch(images)
    times = []
    reset_peak_memory(device)
    for _ in range(iterations):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        module.predict_batch(images)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), peak_memory_mb(device)


def end_to_end(model: str, data: str, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Wall time of the train command (fit, test, files) and its final metrics."""
    run_dir = out / "e2e" / f"{model}_{data}"
    overrides = [f"model={model}", "logger=none", f"hydra.run.dir={run_dir}",
                 f"trainer.precision={args.precision}", "trainer.enable_progress_bar=false"]
    if data == "mvtec":
        overrides += [f"data={args.category}", f"data.root={args.mvtec_root}",
                      f"data.image_size={args.image_size}"]
    if args.e2e_epochs:
        overrides.append(f"trainer.max_epochs={args.e2e_epochs}")
    overrides += args.e2e_overrides
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "anomalib_lite.train", *overrides],
                          cwd=REPO_ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        return {"status": "failed", "wall_time_s": wall, "error": proc.stderr[-2000:]}
    results = json.loads((run_dir / "results.json").read_text())
    return {"status": "completed", "wall_time_s": wall, "overrides": overrides,
            "epochs": results["train"]["epochs"], **headline(results)}


def benchmark_model(model: str, args: argparse.Namespace, device: torch.device,
                    out: Path, peaks: dict[str, float]) -> dict[str, Any]:
    module = build_module(model, args.overrides)
    row: dict[str, Any] = {"model": model, "image_size": args.image_size,
                           "precision": args.precision,
                           "parameters": sum(p.numel() for p in module.parameters())}
    row.update(train_throughput(module, args.image_size, args.batch_size, args.steps,
                                args.warmup, args.precision, device))
    latency, _ = inference(module, args.image_size, 1, args.iterations, device)
    batch_time, peak = inference(module, args.image_size, 32, max(3, args.iterations // 4),
                                 device)
    row.update({"latency_batch1_ms": 1000 * latency, "images_per_s_batch1": 1 / latency,
                "images_per_s_batch32": 32 / batch_time, "inference_peak_memory_mb": peak})
    if args.profile:
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (args.batch_size, 3, args.image_size, args.image_size),
                               dtype=torch.uint8, generator=generator)
        if module.net.trainable:
            row["train_phases_ms"] = training_breakdown(module, images, args.precision, device)
            row["train_flops_per_image"] = train_flops_per_image(module, images,
                                                                 args.precision, device)
            peak_train = peaks["bfloat16" if args.precision.startswith("bf16") else "float32"]
            row["train_fraction_of_peak"] = (row["train_flops_per_image"]
                                             * row["train_images_per_s"] / peak_train)
        batch32 = torch.randint(0, 256, (32, 3, args.image_size, args.image_size),
                                dtype=torch.uint8, generator=generator).to(device)
        row["inference_phases_ms_b32"] = inference_breakdown(module, batch32)
        row["inference_flops_per_image"] = inference_flops_per_image(module, batch32)
        row["inference_fraction_of_peak"] = (row["inference_flops_per_image"]
                                             * row["images_per_s_batch32"] / peaks["float32"])
    for data in args.e2e:
        row[f"e2e_{data}"] = end_to_end(model, data, out, args)
    return row


# ---------------------------------------------------------------- report
def machine() -> dict[str, Any]:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "lightning": pl.__version__, "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_at_start": os.getloadavg() if hasattr(os, "getloadavg") else None}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        match = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        info["cpu"] = match.group(1).strip() if match else None
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _fmt(value: Any, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def table(rows: Sequence[dict[str, Any]], e2e: Sequence[str]) -> Table:
    out = Table(title="anomalib_lite benchmark")
    columns = ["model", "params", "size", "precision", "train img/s", "latency b1 (ms)",
               "infer img/s b1", "infer img/s b32", "peak MB train/infer",
               "% of peak train/infer"]
    columns += [f"{d}: wall s / epochs / AUROC img, px" for d in e2e]
    for column in columns:
        out.add_column(column, justify="left" if column == "model" else "right")
    for r in rows:
        train = r["train_images_per_s"]
        fractions = (f"{_percent(r.get('train_fraction_of_peak'))} / "
                     f"{_percent(r.get('inference_fraction_of_peak'))}")
        cells = [r["model"], f"{r['parameters'] / 1e6:.2f}M", str(r["image_size"]),
                 r["precision"],
                 _fmt(train) if train is not None else f"fit {_fmt(r['fit_images_per_s'])}",
                 _fmt(r["latency_batch1_ms"]), _fmt(r["images_per_s_batch1"]),
                 _fmt(r["images_per_s_batch32"]),
                 f"{_fmt(r['train_peak_memory_mb'], 0)} / "
                 f"{_fmt(r['inference_peak_memory_mb'], 0)}", fractions]
        for d in e2e:
            e = r[f"e2e_{d}"]
            cells.append("failed" if e["status"] != "completed" else
                         f"{e['wall_time_s']:.0f} / {e['epochs']} / {_fmt(e['image_auroc'], 3)},"
                         f" {_fmt(e['pixel_auroc'], 3)}")
        out.add_row(*cells)
    return out


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def phase_table(rows: Sequence[dict[str, Any]]) -> Table:
    """Milliseconds per training step (batch of --batch-size) and per inference call
    (batch 32) in each phase, from torch.profiler."""
    out = Table(title="where the time goes (ms; training step | inference, batch 32)")
    columns = ["model", "data", "synthesis", "forward", "backward", "optimizer", "step wall",
               "maps", "scoring"]
    for column in columns:
        out.add_column(column, justify="left" if column == "model" else "right")
    for r in rows:
        t = r.get("train_phases_ms") or {}
        i = r.get("inference_phases_ms_b32") or {}
        out.add_row(r["model"], *(_fmt(t.get(k)) for k in ("data", "synthesis", "forward",
                                                          "backward", "optimizer",
                                                          "step_wall")),
                    _fmt(i.get("anomaly_maps")), _fmt(i.get("scoring")))
    return out


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m anomalib_lite.benchmark",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="sprite_ae,baseline,unet",
                        help="comma-separated model configs (conf/model/<name>.yaml)")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--precision", default="32-true",
                        help="training precision: 32-true, bf16-mixed, 16-mixed")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-size", type=int, default=16, help="training batch size")
    parser.add_argument("--steps", type=int, default=10, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed training steps")
    parser.add_argument("--iterations", type=int, default=20, help="timed batch-1 calls")
    parser.add_argument("--e2e", default="", help="also run the train command on: sprites, "
                        "mvtec (comma-separated); the wall time includes test and files")
    parser.add_argument("--e2e-epochs", type=int, help="cap the recipe's max_epochs in e2e")
    parser.add_argument("--e2e-overrides", nargs="*", default=[],
                        help="extra Hydra overrides for the e2e runs (e.g. data.n_train=5000)")
    parser.add_argument("--mvtec-root", default=os.environ.get("MVTEC_ROOT"))
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--out", default="outputs/benchmark", help="folder for JSON and runs")
    parser.add_argument("--profile", action="store_true",
                        help="also: time per phase (torch.profiler), FLOPs per image and the "
                        "fraction of the machine's measured peak FLOP/s")
    parser.add_argument("--overrides", nargs="*", default=[],
                        help="Hydra overrides for every model (e.g. model.channels_last=false)")
    args = parser.parse_args(argv)
    args.out = str(Path(args.out).resolve())  # the train subprocess runs in the repo root
    if args.mvtec_root:
        args.mvtec_root = str(Path(args.mvtec_root).expanduser().resolve())
    args.models = [m for m in args.models.split(",") if m]
    args.e2e = [d for d in args.e2e.split(",") if d]
    unknown = [m for m in args.models if not (Path(CONFIG_DIR) / "model" / f"{m}.yaml").is_file()]
    if unknown:
        parser.error(f"--models: no config for {unknown} in {CONFIG_DIR}/model/")
    if set(args.e2e) - {"sprites", "mvtec"}:
        parser.error("--e2e takes sprites and/or mvtec")
    if "mvtec" in args.e2e and not args.mvtec_root:
        parser.error("--e2e mvtec needs --mvtec-root <folder holding the categories> "
                     "(or MVTEC_ROOT)")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # no per-fit banners
    device = torch.device(args.device)
    out = Path(args.out)
    peaks = peak_flops(device) if args.profile else {}
    rows = [benchmark_model(model, args, device, out, peaks) for model in args.models]
    report = {"machine": {**machine(), "peak_flops": peaks},
              "settings": {k: v for k, v in vars(args).items()}, "rows": rows}
    name = f"benchmark_{args.image_size}px_{args.precision}_{device.type}.json"
    path = write_json(out / name, report)
    console = Console()
    console.width = max(console.width, 140)
    console.print(table(rows, args.e2e))
    if args.profile:
        console.print(f"measured peak: {peaks['float32'] / 1e9:.1f} GFLOP/s float32, "
                      f"{peaks['bfloat16'] / 1e9:.1f} GFLOP/s bfloat16 (2048^3 matmul)")
        console.print(phase_table(rows))
    console.print(f"written to {path}")
    return report
