"""The speed benchmark runs end to end on tiny settings and reports every figure."""

from __future__ import annotations

import json

import pytest
from conftest import TINY_SPRITES

from anomalib_lite.benchmark.speed import main


def test_benchmark_measures_each_model_and_writes_json(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out is relative to the caller, not the repo
    report = main(["--models", "sprite_ae", "--image-size", "32", "--batch-size", "4",
                   "--steps", "2", "--warmup", "1", "--iterations", "2", "--e2e", "sprites",
                   "--e2e-overrides", "debug=fast", *TINY_SPRITES, "callbacks=none",
                   "--out", "bench"])
    (row,) = report["rows"]
    assert row["model"] == "sprite_ae" and row["parameters"] > 0
    for key in ("train_images_per_s", "latency_batch1_ms", "images_per_s_batch32",
                "train_peak_memory_mb", "inference_peak_memory_mb"):
        assert row[key] > 0, key
    e2e = row["e2e_sprites"]
    assert e2e["status"] == "completed", e2e.get("error")
    assert 0.0 <= e2e["image_auroc"] <= 1.0 and e2e["wall_time_s"] > 0
    on_disk = json.loads((tmp_path / "bench" / "benchmark_32px_32-true_cpu.json").read_text())
    assert on_disk["rows"][0]["train_images_per_s"] == pytest.approx(row["train_images_per_s"])
    assert "anomalib_lite benchmark" in capsys.readouterr().out


def test_benchmark_refuses_unknown_models_and_missing_data_root():
    with pytest.raises(SystemExit):
        main(["--models", "no_such_model"])
    with pytest.raises(SystemExit):
        main(["--e2e", "mvtec", "--mvtec-root", ""])


def test_profile_splits_the_step_and_compares_with_the_measured_peak(tmp_path, capsys,
                                                                     monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = main(["--models", "denoising_ae,pca", "--image-size", "32", "--batch-size", "4",
                   "--steps", "2", "--warmup", "1", "--iterations", "2", "--profile",
                   "--overrides", "model.channels_last=false", "--out", "bench"])
    peaks = report["machine"]["peak_flops"]
    assert peaks["float32"] > 1e8 and peaks["bfloat16"] > 1e8
    trained, fitted = report["rows"]
    phases = trained["train_phases_ms"]
    assert phases["synthesis"] > 0 and phases["forward"] > 0 and phases["backward"] > 0
    assert sum(phases[k] for k in ("data", "synthesis", "forward", "backward", "optimizer")) \
        <= 1.5 * phases["step_wall"]
    assert 0 < trained["train_fraction_of_peak"] < 1
    assert 0 < trained["inference_fraction_of_peak"] < 1
    assert fitted["train_images_per_s"] is None and fitted["fit_images_per_s"] > 0
    assert fitted["inference_phases_ms_b32"]["anomaly_maps"] > 0
    assert "where the time goes" in capsys.readouterr().out
