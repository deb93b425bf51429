"""predict: parity with the test stage, the Python API, bad input, safe loading, atomic CSV."""

from __future__ import annotations

import builtins
import csv
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, write_image
from PIL import Image

from anomalib_lite.deploy import (
    CheckpointError,
    Predictor,
    UnsafeCheckpointError,
    load_model,
)
from anomalib_lite.predict import predict
from anomalib_lite.utils.checks import ConfigError


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def predict_cfg(compose_cfg, trained_run):
    def _cfg(*overrides: str, output_dir: Path | None = None):
        return compose_cfg(f"ckpt={trained_run / 'model.ckpt'}", *overrides,
                           config_name="predict", output_dir=output_dir)
    return _cfg


def test_predict_on_the_test_images_equals_the_test_stage(predict_cfg, trained_run, tmp_path):
    test_dir = trained_run.parent / "mvtec" / "bottle" / "test"
    summary = predict(predict_cfg(f"input={test_dir}", "batch_size=3"))
    expected = {Path(r["path"]).resolve(): r for r in read_csv(trained_run / "scores.csv")}
    rows = read_csv(tmp_path / "predictions.csv")
    assert summary["total"] == summary["ok"] == len(rows) == len(expected) == 8
    scores = [k for k in expected[next(iter(expected))] if k not in
              ("path", "label", "defect_type", "anomalous")]
    assert "latent_kde" in scores and len(scores) == 5  # the KDE travelled in model.ckpt
    for row in rows:
        reference = expected[Path(row["path"]).resolve()]
        for name in scores:
            assert float(row[name]) == pytest.approx(float(reference[name]), rel=1e-5,
                                                     abs=1e-7), (row["path"], name)
        assert row["anomalous"] == reference["anomalous"]
        assert row["status"] == "ok" and row["error"] == ""
        assert (tmp_path / row["overlay"]).is_file()
    assert summary["anomalous"] == sum(int(r["anomalous"]) for r in expected.values())
    assert json.loads((tmp_path / "summary.json").read_text())["ok"] == 8


def test_python_api_scores_paths_arrays_and_pil_images_alike(trained_run):
    predictor = Predictor.from_checkpoint(trained_run / "model.ckpt", batch_size=2)
    path = trained_run.parent / "mvtec" / "bottle" / "test" / "crack" / "000.png"
    pixels = np.asarray(Image.open(path).convert("RGB"))
    results = predictor.predict([path, pixels, Image.open(path), pixels / 255.0])
    assert [r.ok for r in results] == [True] * 4
    assert results[1].source == "<image 1>" and results[0].source == str(path)
    for other in results[1:]:
        for name, value in results[0].scores.items():
            assert other.scores[name] == pytest.approx(value, rel=1e-6), name
    first = results[0]
    primary = predictor.primary
    assert set(first.scores) == set(predictor.score_names) == set(first.normalized)
    assert 0.0 <= first.normalized[primary] <= 1.0
    threshold = predictor.model.threshold_of(primary)
    assert first.anomalous[primary] == (first.scores[primary] > threshold)
    assert first.anomaly_map.shape == (32, 32) and first.image.dtype == torch.uint8
    # any size in: resized like the datamodules do
    (big,) = predictor.predict(np.zeros((50, 70, 3), dtype=np.uint8))
    assert big.ok and big.image.shape == (3, 32, 32)
    gray = np.asarray(Image.open(path).convert("L"))
    as_8bit, as_16bit = predictor.predict([gray, gray.astype(np.uint16) * 257])
    assert as_16bit.ok and torch.equal(as_16bit.image, as_8bit.image)  # 16-bit scaled down
    (bad,) = predictor.predict(np.full((8, 8), 3.0))
    assert not bad.ok and "[0, 1]" in bad.error
    (bad,) = predictor.predict(np.zeros((8, 8, 2), dtype=np.uint8))
    assert not bad.ok and "shape (8, 8, 2)" in bad.error


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data)))


def bomb_png(path: Path, side: int = 100_000) -> None:
    """A 1 KB PNG whose header claims side x side pixels (a decompression bomb's shape)."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1000)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
                     + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))


def make_bad_inputs(folder: Path) -> dict[str, str]:
    """Every bad-input kind beside good images; returns failing file → expected reason."""
    write_image(folder / "rgb.png", 1)
    write_image(folder / "gray.png", 2, mode="L")
    write_image(folder / "rgba.png", 3, mode="RGBA")
    write_image(folder / "palette.png", 4, mode="P")
    sixteen = (np.random.default_rng(5).integers(0, 65536, (40, 40))).astype(np.uint16)
    Image.fromarray(sixteen).save(folder / "sixteen.png")
    assert Image.open(folder / "sixteen.png").mode.startswith("I")
    valid = (folder / "rgb.png").read_bytes()
    (folder / "truncated.png").write_bytes(valid[: len(valid) // 2])
    corrupt = bytearray(valid)
    corrupt[60:200] = bytes(range(140))
    (folder / "corrupt.png").write_bytes(bytes(corrupt))
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("not an image\n")
    bomb_png(folder / "bomb.png")
    (folder / ".hidden.png").write_bytes(b"")  # hidden files are not inputs
    return {"truncated.png": "truncated", "corrupt.png": "", "empty.png": "cannot identify",
            "notes.txt": "cannot identify", "bomb.png": "decompression-bomb"}


def test_bad_inputs_are_reported_by_name_and_the_rest_scored(predict_cfg, tmp_path, capsys):
    failing = make_bad_inputs(tmp_path / "in")
    summary = predict(predict_cfg(f"input={tmp_path / 'in'}", "batch_size=4",
                                  output_dir=tmp_path / "out"))
    rows = {Path(r["path"]).name: r for r in read_csv(tmp_path / "out" / "predictions.csv")}
    assert len(rows) == 10
    assert (summary["total"], summary["ok"], summary["failed"]) == (10, 5, 5)
    for name in ("rgb.png", "gray.png", "rgba.png", "palette.png", "sixteen.png"):
        assert rows[name]["status"] == "ok" and float(rows[name]["score"]) > 0, name
        assert (tmp_path / "out" / rows[name]["overlay"]).is_file()
    for name, reason in failing.items():
        row = rows[name]
        assert row["status"] == "failed" and row["score"] == "" and row["overlay"] == ""
        assert name in row["error"] and reason in row["error"], row["error"]
    assert {Path(f["path"]).name for f in summary["failures"]} == set(failing)
    out = capsys.readouterr().out
    assert "5 of 10 images failed" in out and "bomb.png" in out


def test_a_checkpoint_carrying_pickled_code_is_refused_and_nothing_runs(trained_run, tmp_path,
                                                                          predict_cfg):
    marker = tmp_path / "payload_ran"

    class Payload:
        def __reduce__(self):
            return builtins.open, (str(marker), "w")

    checkpoint = torch.load(trained_run / "model.ckpt", weights_only=True)
    evil = tmp_path / "evil.ckpt"
    torch.save({**checkpoint, "callbacks": Payload()}, evil)
    with pytest.raises(UnsafeCheckpointError, match="nothing from it was executed") as err:
        load_model(evil)
    assert str(evil) in str(err.value) and "open" in str(err.value)
    with pytest.raises(UnsafeCheckpointError):
        predict(predict_cfg(f"ckpt={evil}", f"input={trained_run}"))
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the payload is live: unsafe loading runs it
    assert marker.exists()


def test_unusable_checkpoints_and_missing_keys_fail_clearly(predict_cfg, trained_run, tmp_path):
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"text\.ckpt"):
        load_model(tmp_path / "text.ckpt")
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "missing.ckpt")
    assert load_model(trained_run).preprocessing["image_size"] == 32  # a run directory
    with pytest.raises(ConfigError, match=r"(?s)ckpt is not set.*anomalib_lite.predict ckpt="):
        predict(predict_cfg("ckpt=null", f"input={trained_run}"))
    with pytest.raises(ConfigError, match="input is not set"):
        predict(predict_cfg())
    with pytest.raises(ConfigError, match="input='/nonexistent'"):
        predict(predict_cfg("input=/nonexistent"))


def test_old_checkpoint_without_image_size_needs_the_override(predict_cfg, trained_run,
                                                              tmp_path):
    checkpoint = torch.load(trained_run / "model.ckpt", weights_only=True)
    assert checkpoint["preprocessing"] == {"image_size": 32, "channels": 3}
    del checkpoint["preprocessing"]
    old = tmp_path / "old.ckpt"
    torch.save(checkpoint, old)
    image = trained_run.parent / "mvtec" / "bottle" / "test" / "good" / "000.png"
    with pytest.raises(ConfigError, match="image_size="):
        predict(predict_cfg(f"ckpt={old}", f"input={image}"))
    summary = predict(predict_cfg(f"ckpt={old}", f"input={image}", "image_size=32"))
    assert summary["ok"] == 1


def test_an_interrupted_predict_leaves_no_partial_csv(predict_cfg, trained_run, tmp_path,
                                                      monkeypatch):
    import anomalib_lite.predict as app

    out = tmp_path / "out"
    out.mkdir()
    (out / "predictions.csv").write_text("previous run\n")
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
    monkeypatch.setattr(app, "write_overlay", interrupted)
    with pytest.raises(KeyboardInterrupt):
        predict(predict_cfg(f"input={trained_run.parent / 'mvtec'}", "batch_size=2",
                            "overwrite=true", output_dir=out))
    assert (out / "predictions.csv").read_text() == "previous run\n"
    assert sorted(p.name for p in out.iterdir()) == ["predictions.csv"]  # no temp file left


def test_predict_cli_writes_into_the_run_directory(trained_run, tmp_path):
    image = trained_run.parent / "mvtec" / "bottle" / "test" / "crack" / "001.png"
    cmd = [sys.executable, "-m", "anomalib_lite.predict", f"ckpt={trained_run / 'model.ckpt'}",
           f"input={image}", f"hydra.run.dir={tmp_path}/run"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = read_csv(tmp_path / "run" / "predictions.csv")
    assert row["status"] == "ok" and (tmp_path / "run" / "overlays" / "001.png").is_file()
    assert (tmp_path / "run" / ".hydra" / "overrides.yaml").is_file()
    assert "Predictions" in proc.stdout
    log = (tmp_path / "run" / "predict.log").read_text()
    assert "run directory:" in log and "Predictions" in log and "predictions written" in log


def test_a_run_directory_with_predictions_is_refused_unless_overwritten(predict_cfg, trained_run,
                                                                         tmp_path):
    import torch

    test_dir = trained_run.parent / "mvtec" / "bottle" / "test"
    threads = torch.get_num_threads()
    try:
        first = predict(predict_cfg(f"input={test_dir / 'good'}", "torch_threads=1"))
        assert torch.get_num_threads() == 1  # predict takes torch_threads like train
    finally:
        torch.set_num_threads(threads)
    assert first["total"] == 6
    with pytest.raises(ConfigError, match=r"holds the predictions of an earlier run "
                                          r"\(predictions.csv, summary.json, overlays\).*"
                                          r"overwrite=true"):
        predict(predict_cfg(f"input={test_dir / 'crack'}"))
    assert len(read_csv(tmp_path / "predictions.csv")) == 6  # untouched
    second = predict(predict_cfg(f"input={test_dir / 'crack'}", "overwrite=true"))
    rows = read_csv(tmp_path / "predictions.csv")
    assert second["total"] == len(rows) == 2 and all("crack" in r["path"] for r in rows)
    overlays = sorted(p.name for p in (tmp_path / "overlays").rglob("*.png"))
    assert overlays == ["000.png", "001.png"]  # the earlier run's six are gone, not mixed in
