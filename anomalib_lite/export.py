"""Export a trained model: ``python -m anomalib_lite.export ckpt=<run>/model.ckpt format=onnx``.

Writes ``model.onnx`` into the run directory (see :mod:`anomalib_lite.deploy.onnx_export`
for its inputs, outputs and metadata), checks it with onnxruntime against PyTorch, and
writes ``export.json`` (file, size, the largest differences, the images compared on: how
many, and which files of ``verify_input`` could not be read and were skipped).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from rich.console import Console

from anomalib_lite.cli import (
    CONFIG_DIR,
    exit_on_message_error,
    run_app,
    set_torch_threads,
    start_run,
)
from anomalib_lite.data.image_io import ImageLoadError
from anomalib_lite.data.preprocess import Preprocessing
from anomalib_lite.deploy.checkpoint import load_model, preprocessing_of
from anomalib_lite.deploy.onnx_export import export_onnx, onnx_max_abs_diff
from anomalib_lite.deploy.report import collect_inputs
from anomalib_lite.utils.checks import ConfigError, one_of
from anomalib_lite.utils.instantiate import allow_packages
from anomalib_lite.utils.io import write_json
from anomalib_lite.utils.logs import to_log_files

FORMATS = ("onnx",)
EXAMPLE = "python -m anomalib_lite.export ckpt=outputs/train/runs/<run>/model.ckpt format=onnx"


RANDOM_IMAGES = 4


def verification_images(value: str | None, preprocessing: Preprocessing
                        ) -> tuple[torch.Tensor, dict[str, Any]]:
    """uint8 images of ``verify_input`` (unreadable files skipped), else 4 seeded random ones;
    and what they are: ``{source, images, skipped: [{path, error}]}``."""
    if not value:
        images = torch.randint(0, 256, (RANDOM_IMAGES, preprocessing.channels,
                                        preprocessing.height, preprocessing.width),
                               dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
        return images, {"source": f"{RANDOM_IMAGES} seeded random images",
                        "images": RANDOM_IMAGES, "skipped": []}
    files, _ = collect_inputs(value, "verify_input")
    loaded, skipped = [], []
    for file in files:
        try:
            loaded.append(preprocessing.load(file))
        except ImageLoadError as error:
            skipped.append({"path": str(file), "error": str(error)})
    if not loaded:
        raise ConfigError(f"verify_input={value!r}: none of its {len(files)} file(s) can be read "
                          f"as an image (e.g. {skipped[0]['error']}); pass images, or "
                          "verify_input=null to compare on random images")
    return torch.stack(loaded), {"source": str(value), "images": len(loaded),
                                 "skipped": skipped}


def export(cfg: DictConfig) -> dict[str, Any]:
    """Export ``cfg.ckpt`` as ``cfg.format``; returns the file and the parity check."""
    set_torch_threads(cfg)
    allow_packages(cfg.get("allowed_packages") or [])
    model = load_model(cfg.get("ckpt"), example=EXAMPLE)
    one_of("format", cfg.get("format"), FORMATS)
    preprocessing = preprocessing_of(model, cfg.get("image_size"), cfg.ckpt)
    if cfg.verify:  # read (and check) the verification images before exporting
        images, verified_on = verification_images(cfg.get("verify_input"), preprocessing)
    path = export_onnx(model, preprocessing, Path(cfg.paths.output_dir) / "model.onnx",
                       opset=cfg.opset)
    result: dict[str, Any] = {"path": str(path), "bytes": path.stat().st_size}
    console = Console(record=True)
    console.width = max(console.width, 120)
    console.print(f"exported {cfg.ckpt} to {path} ({result['bytes']:,} bytes)")
    if cfg.verify:
        result["max_abs_diff"] = onnx_max_abs_diff(path, model, images)
        result["verified_on"] = verified_on
        skipped = verified_on["skipped"]
        on = f"{verified_on['images']} images of {verified_on['source']}" \
            if cfg.get("verify_input") else verified_on["source"]
        diffs = ", ".join(f"{k} {v:.3g}" for k, v in result["max_abs_diff"].items())
        console.print(f"onnxruntime vs PyTorch on {on}, max abs difference: {diffs}",
                      highlight=False)
        if skipped:
            console.print(f"{len(skipped)} file(s) of verify_input could not be read and were "
                          "skipped:\n" + "\n".join(f"  {s['error']}" for s in skipped),
                          highlight=False)
    write_json(Path(cfg.paths.output_dir) / "export.json", result)
    to_log_files(console.export_text())
    return result


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    start_run(cfg)
    try:
        export(cfg)
    except Exception as error:
        exit_on_message_error(error)
        raise


if __name__ == "__main__":
    run_app(main, "export")
