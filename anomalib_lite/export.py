"""Export a trained model: ``python -m anomalib_lite.export ckpt=<run>/model.ckpt format=onnx``.

Writes ``model.onnx`` into the run directory (see :mod:`anomalib_lite.deploy.onnx_export`
for its inputs, outputs and metadata), checks it with onnxruntime against PyTorch, and
writes ``export.json`` (file, size, the largest differences).
"""

from __future__ import annotations

from contextlib import suppress
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from rich.console import Console

from anomalib_lite.data.image_io import ImageLoadError
from anomalib_lite.data.preprocess import Preprocessing
from anomalib_lite.deploy.checkpoint import load_model, preprocessing_of
from anomalib_lite.deploy.onnx_export import export_onnx, onnx_max_abs_diff
from anomalib_lite.deploy.report import collect_inputs
from anomalib_lite.train import CONFIG_DIR
from anomalib_lite.utils.checks import one_of
from anomalib_lite.utils.instantiate import allow_packages
from anomalib_lite.utils.io import write_json

FORMATS = ("onnx",)
EXAMPLE = "python -m anomalib_lite.export ckpt=outputs/train/runs/<run>/model.ckpt format=onnx"


def verification_images(value: str | None, preprocessing: Preprocessing) -> torch.Tensor:
    """uint8 images of ``verify_input`` (unreadable files skipped), else 4 seeded random ones."""
    if value:
        files, _ = collect_inputs(value, "verify_input")
        images = []
        for file in files:
            with suppress(ImageLoadError):
                images.append(preprocessing.load(file))
        if images:
            return torch.stack(images)
    size, channels = preprocessing.image_size, preprocessing.channels
    return torch.randint(0, 256, (4, channels, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(0))


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export ``cfg.ckpt`` as ``cfg.format``; returns the file and the parity check."""
    allow_packages(cfg.get("allowed_packages") or [])
    model = load_model(cfg.get("ckpt"), example=EXAMPLE)
    one_of("format", cfg.get("format"), FORMATS)
    preprocessing = preprocessing_of(model, cfg.get("image_size"), cfg.ckpt)
    path = export_onnx(model, preprocessing, Path(cfg.paths.output_dir) / "model.onnx",
                       opset=cfg.opset)
    result: dict[str, Any] = {"path": str(path), "bytes": path.stat().st_size}
    console = Console()
    console.width = max(console.width, 120)
    console.print(f"exported {cfg.ckpt} to {path} ({result['bytes']:,} bytes)")
    if cfg.verify:
        images = verification_images(cfg.get("verify_input"), preprocessing)
        result["max_abs_diff"] = onnx_max_abs_diff(path, model, images)
        result["verified_on"] = cfg.get("verify_input") or "4 seeded random images"
        console.print(f"onnxruntime vs PyTorch on {len(images)} images, max abs difference: "
                      + ", ".join(f"{k} {v:.3g}" for k, v in result["max_abs_diff"].items()),
                      highlight=False)
    write_json(Path(cfg.paths.output_dir) / "export.json", result)
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    export(cfg)


if __name__ == "__main__":
    main()
