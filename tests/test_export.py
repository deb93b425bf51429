"""ONNX export: parity with PyTorch under onnxruntime on real images, metadata, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import onnxruntime
import pytest
import torch
from conftest import REPO_ROOT

from anomalib_lite.deploy import Predictor
from anomalib_lite.deploy.onnx_export import OUTPUTS, ExportModel
from anomalib_lite.export import export
from anomalib_lite.utils.checks import ConfigError


@pytest.fixture(scope="module")
def exported(trained_run, tmp_path_factory):
    """The tiny model exported once through the app's function (verified on its test set)."""
    from hydra import compose, initialize_config_dir

    from anomalib_lite.train import CONFIG_DIR

    out = tmp_path_factory.mktemp("export")
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="export", overrides=[
            f"paths.output_dir={out}", f"ckpt={trained_run / 'model.ckpt'}",
            f"verify_input={trained_run.parent / 'mvtec' / 'bottle' / 'test'}"])
    return export(cfg)


def test_onnx_outputs_match_pytorch_on_real_images(exported, trained_run):
    predictor = Predictor.from_checkpoint(trained_run / "model.ckpt")
    files = sorted((trained_run.parent / "mvtec" / "bottle").rglob("*.png"))
    images = torch.stack([p.image for p in predictor.predict(files)])  # 18 images, masks too
    session = onnxruntime.InferenceSession(exported["path"])
    names = predictor.model.available_scores
    with torch.no_grad():
        expected = ExportModel(predictor.model, names)(images)
    # the combined score sums the primary and KDE scores divided by their spread on normal
    # validation images; that division multiplies float32 differences (1/std is ~1,700 on
    # this tiny model, whose two validation images score almost alike)
    _, sd_primary, _, sd_kde = predictor.model.kde.stats.tolist()
    amplification = {predictor.model.kde.names[1]: max(1.0, 1 / sd_primary, 1 / sd_kde)}
    post = predictor.model.post_processor
    spans = [float(post.score_max[post.score_names.index(n)] - post.score_min[
        post.score_names.index(n)]) for n in names]
    for batch in (images[:1], images):  # the batch dimension is dynamic
        got = session.run(list(OUTPUTS), {"image": batch.numpy()})
        reference = [e[: len(batch)] for e in expected]
        amap, scores, normalized, anomalous = (torch.from_numpy(g) for g in got)
        assert amap.shape == (len(batch), 1, 32, 32)
        torch.testing.assert_close(amap, reference[0], atol=1e-4, rtol=0)
        assert torch.equal(anomalous, reference[3])
        for i, name in enumerate(names):
            error = (scores[:, i] - reference[1][:, i]).abs()
            assert float(error.max()) <= 1e-4 * amplification.get(name, 1.0), (name, error)
            # normalization divides by the normal scores' spread: its error is the score's
            # error over that spread (tiny on this tiny model), never more
            normalized_error = (normalized[:, i] - reference[2][:, i]).abs()
            assert (normalized_error <= error / spans[i] + 1e-5).all(), name
    # the reported check of the export app, on the 8 test images
    diffs = exported["max_abs_diff"]
    assert diffs["anomaly_map"] < 1e-4 and diffs["anomalous"] == 0
    assert all(diffs[f"scores/{n}"] < 1e-4 * amplification.get(n, 1.0) for n in names)


def test_onnx_metadata_carries_thresholds_and_preprocessing(exported, trained_run):
    predictor = Predictor.from_checkpoint(trained_run / "model.ckpt")
    graph = onnx.load(exported["path"])
    meta = {p.key: json.loads(p.value) for p in graph.metadata_props}
    model = predictor.model
    assert meta["score_names"] == model.available_scores == predictor.score_names
    assert meta["primary_score"] == model.scorer.primary
    for name, threshold in meta["thresholds"].items():
        assert threshold == pytest.approx(model.threshold_of(name), rel=1e-7)
    assert meta["image_size"] == 32 and meta["channels"] == 3
    assert meta["input_scale"] == pytest.approx(1 / 255)
    (graph_input,) = graph.graph.input
    assert graph_input.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 32, 32]


def test_export_refuses_unknown_formats_and_a_missing_ckpt(compose_cfg, trained_run):
    with pytest.raises(ConfigError, match="format='tflite'"):
        export(compose_cfg(f"ckpt={trained_run / 'model.ckpt'}", "format=tflite",
                           config_name="export"))
    with pytest.raises(ConfigError, match=r"(?s)ckpt is not set.*anomalib_lite.export ckpt="):
        export(compose_cfg(config_name="export"))


def test_export_cli_writes_into_the_run_directory(trained_run, tmp_path):
    cmd = [sys.executable, "-m", "anomalib_lite.export", f"ckpt={trained_run / 'model.ckpt'}",
           "format=onnx", f"hydra.run.dir={tmp_path}/run"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "model.onnx").is_file()
    report = json.loads((tmp_path / "run" / "export.json").read_text())
    assert report["max_abs_diff"]["anomaly_map"] < 1e-4
    assert "onnxruntime vs PyTorch" in proc.stdout
    assert "onnxruntime vs PyTorch on 4 seeded random images" in \
        (tmp_path / "run" / "export.log").read_text()


def test_verification_says_how_many_images_it_compared_on(compose_cfg, trained_run, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    good = trained_run.parent / "mvtec" / "bottle" / "test" / "good"
    for name in ("000.png", "001.png", "002.png"):
        (images / name).write_bytes((good / name).read_bytes())
    (images / "broken.png").write_bytes(b"not an image")
    (images / "notes.txt").write_text("not an image either")
    threads = torch.get_num_threads()
    try:
        report = export(compose_cfg(f"ckpt={trained_run / 'model.ckpt'}",
                                    f"verify_input={images}", "torch_threads=1",
                                    config_name="export"))
        assert torch.get_num_threads() == 1  # export takes torch_threads like train
    finally:
        torch.set_num_threads(threads)
    verified = report["verified_on"]
    assert verified["source"] == str(images) and verified["images"] == 3
    assert sorted(Path(s["path"]).name for s in verified["skipped"]) == ["broken.png",
                                                                         "notes.txt"]
    on_disk = json.loads((tmp_path / "export.json").read_text())
    assert on_disk["verified_on"] == verified and on_disk["max_abs_diff"]["anomalous"] == 0
    for name in ("000.png", "001.png", "002.png"):
        (images / name).unlink()
    with pytest.raises(ConfigError, match=r"verify_input=.*none of its 2 file\(s\) can be read"):
        export(compose_cfg(f"ckpt={trained_run / 'model.ckpt'}", f"verify_input={images}",
                           config_name="export", output_dir=tmp_path / "again"))
    assert not (tmp_path / "again" / "model.onnx").exists()  # refused before exporting
