"""Non-square images (tall surface scans): data.image_size=[height, width] through training,
predict, overlays and ONNX export; the size a model cannot take is refused up front."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from PIL import Image

from anomalib_lite.deploy import load_model
from anomalib_lite.export import export
from anomalib_lite.predict import predict
from anomalib_lite.train import train
from anomalib_lite.utils.checks import ConfigError

HEIGHT, WIDTH = 160, 64  # tall, like line-scan images of a surface


def write_tall(path: Path, seed: int, crack: bool = False) -> None:
    """A tall grey image with vertical texture; ``crack`` adds a thin dark line."""
    rng = np.random.default_rng(seed)
    column = rng.integers(90, 160, (1, WIDTH, 1))
    pixels = np.clip(column + rng.integers(-10, 10, (HEIGHT, WIDTH, 1)), 0, 255)
    pixels = np.repeat(pixels, 3, axis=2).astype(np.uint8)
    if crack:
        pixels[40:120, 30:33] = 20
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def make_tall_split(root: Path) -> Path:
    """A split layout of tall images: train/good, test/good, test/crack + ground_truth."""
    for i in range(8):
        write_tall(root / "train" / "good" / f"{i:03d}.png", i)
    for i in range(3):
        write_tall(root / "test" / "good" / f"{i:03d}.png", 100 + i)
        write_tall(root / "test" / "crack" / f"{i:03d}.png", 200 + i, crack=True)
        mask = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        mask[40:120, 30:33] = 255
        (root / "ground_truth" / "crack").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(root / "ground_truth" / "crack" / f"{i:03d}_mask.png")
    return root


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_tall_images_train_predict_and_export(fast_cfg, compose_cfg, tmp_path):
    root = make_tall_split(tmp_path / "tall")
    (root / "train" / "good" / "broken.png").write_bytes(b"\x89PNG truncated")
    run = tmp_path / "run"
    _, results = train(fast_cfg("data=folder", f"data.root={root}",
                                f"data.image_size=[{HEIGHT},{WIDTH}]", "data.val_fraction=0.25",
                                "data.skip_unreadable=true", output_dir=run))
    assert results["config"]["data"]["image_size"] == [HEIGHT, WIDTH]
    (skipped,) = results["data"]["skipped_unreadable"]
    assert skipped["split"] in ("train", "val") and skipped["path"].endswith("broken.png")
    assert json.loads((run / "results.json").read_text())["data"] == results["data"]
    assert results["scores"]["l2_mean"]["n_anomalous"] == 3
    assert results["pixel"]["ssim_s4"]["pixel_auroc"] is not None  # tall masks, scored
    model = load_model(run / "model.ckpt")
    assert model.preprocessing == {"image_size": [HEIGHT, WIDTH], "channels": 3}

    out = tmp_path / "predict"
    summary = predict(compose_cfg(f"ckpt={run / 'model.ckpt'}", f"input={root / 'test'}",
                                  config_name="predict", output_dir=out))
    assert summary["ok"] == summary["total"] == 6
    expected = {Path(r["path"]).resolve(): r for r in read_csv(run / "scores.csv")}
    for row in read_csv(out / "predictions.csv"):  # the test stage's scores, image by image
        reference = expected[Path(row["path"]).resolve()]
        assert float(row["l2_mean"]) == pytest.approx(float(reference["l2_mean"]), rel=1e-5)
        with Image.open(out / row["overlay"]) as overlay:
            width, height = overlay.size
        assert height > 1.5 * width  # the overlay keeps the tall shape

    exported = export(compose_cfg(f"ckpt={run / 'model.ckpt'}", f"verify_input={root / 'test'}",
                                  config_name="export", output_dir=tmp_path / "export"))
    graph = onnx.load(exported["path"])
    dims = graph.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims[1:]] == [3, HEIGHT, WIDTH]
    meta = {p.key: json.loads(p.value) for p in graph.metadata_props}
    assert (meta["height"], meta["width"], meta["image_size"]) == (HEIGHT, WIDTH, [HEIGHT, WIDTH])
    assert exported["verified_on"]["images"] == 6
    assert exported["max_abs_diff"]["anomaly_map"] < 1e-4


def test_a_size_the_network_cannot_take_is_refused_before_training(fast_cfg, tmp_path):
    root = make_tall_split(tmp_path / "tall")
    with pytest.raises(ConfigError) as caught:
        train(fast_cfg("model=baseline", "data=folder", f"data.root={root}",
                       "data.image_size=[64,100]"))
    message = str(caught.value)
    assert message.startswith("the model's network BaselineAE cannot take the data's images "
                              "(data.image_size=[64, 100]: 3 x 64 x 100): BaselineAE needs the "
                              "height and the width divisible by 8; got height 64, width 100: "
                              "width 100 is not")
    assert not (tmp_path / "checkpoints").exists()  # nothing was trained
    with pytest.raises(ConfigError, match=r"SpriteAE needs .* divisible by 4; got height 62"):
        train(fast_cfg("data.image_size=62"))
