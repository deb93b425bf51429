"""Anomaly maps, image-score reductions, thresholds and image metrics."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from anomalib_lite.metrics import confusion_at, image_metrics
from anomalib_lite.scoring import Scorer, anomaly_map, fit_threshold, reduce_map, smooth_map
from anomalib_lite.scoring.post_processor import PostProcessor
from anomalib_lite.utils.checks import ConfigError


def test_maps_match_their_definitions():
    x, r = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    assert torch.allclose(anomaly_map(x, r, "l1"), (x - r).abs().mean(1, keepdim=True))
    assert torch.allclose(anomaly_map(x, r, "l2"), ((x - r) ** 2).mean(1, keepdim=True))
    ssim = anomaly_map(x, r, "ssim", ssim_window=5)
    assert ssim.shape == (2, 1, 16, 16)
    assert torch.allclose(anomaly_map(x, x, "ssim"), torch.zeros(2, 1, 16, 16), atol=1e-4)
    with pytest.raises(ValueError, match="unknown anomaly map"):
        anomaly_map(x, r, "l3")


def test_reductions():
    amap = torch.zeros(1, 1, 10, 10)
    amap[0, 0, 0, :5] = 1.0  # 5 hot pixels of 100
    assert reduce_map(amap, "mean").item() == pytest.approx(0.05)
    assert reduce_map(amap, "max").item() == 1.0
    assert reduce_map(amap, "topk", k=0.05).item() == pytest.approx(1.0)
    assert reduce_map(amap, "topk", k=0.10).item() == pytest.approx(0.5)
    with pytest.raises(ValueError):
        reduce_map(amap, "median")


def test_scorer_validates_its_config():
    with pytest.raises(ConfigError, match=r"score\.primary"):
        Scorer({"a": {"map": "l1", "reduce": "mean"}}, primary="b")
    with pytest.raises(ConfigError, match=r"score\.scores\.a\.map"):
        Scorer({"a": {"map": "", "reduce": "mean"}}, primary="a")
    scorer = Scorer({"a": {"map": "l1", "reduce": "mean"}, "b": {"map": "l1", "reduce": "max"}},
                    primary="b")
    maps, scores = scorer({"l1": torch.rand(3, 1, 8, 8), "other": torch.rand(3, 1, 8, 8)})
    assert set(maps) == {"l1"} and set(scores) == {"a", "b"} and scores["a"].shape == (3,)
    with pytest.raises(ValueError, match=r"\['l1'\].*\['other'\]"):  # a map the model lacks
        scorer({"other": torch.rand(3, 1, 8, 8)})


def test_thresholds():
    scores = torch.arange(101, dtype=torch.float32)
    assert fit_threshold(scores, "quantile", quantile=0.99) == pytest.approx(99.0)
    assert fit_threshold(scores, "mean_std", k=2.0) == pytest.approx(50 + 2 * scores.std().item())
    assert math.isnan(fit_threshold(torch.empty(0)))
    with pytest.raises(ValueError, match="method"):
        fit_threshold(scores, "otsu")


@pytest.mark.parametrize("seed", range(5))
def test_image_metrics_agree_with_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    labels[:2] = [0, 1]
    scores = rng.normal(size=300) + labels * rng.uniform(0, 2)
    if seed % 2:  # heavy ties
        scores = np.round(scores, 1)
    m = image_metrics(torch.tensor(scores), torch.tensor(labels), threshold=0.5)
    assert m["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
    assert m["image_pr_auc"] == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
    fpr, tpr, _ = roc_curve(labels, scores)
    for target, value in m["tpr_at_fpr"].items():
        assert value == pytest.approx(tpr[fpr <= float(target)].max(), abs=1e-6)
    pred = scores > 0.5
    c = m["confusion"]
    assert c["tp"] == int((pred & (labels == 1)).sum())
    assert c["fp"] == int((pred & (labels == 0)).sum())
    assert c["tn"] + c["fp"] == int((labels == 0).sum()) and c["tp"] + c["fn"] == int(labels.sum())


def test_all_equal_scores_give_chance_auroc():
    m = image_metrics(torch.ones(10), torch.tensor([0, 1] * 5), threshold=1.0)
    assert m["image_auroc"] == pytest.approx(0.5)
    assert m["confusion"]["tp"] == 0 and m["confusion"]["tn"] == 5


def test_single_class_warns_and_gives_nan():
    with pytest.warns(UserWarning, match="single class"):
        m = image_metrics(torch.rand(10), torch.zeros(10, dtype=torch.long), threshold=0.5)
    assert math.isnan(m["image_auroc"]) and math.isnan(m["mean_score_anomalous"])


def test_confusion_without_threshold_is_nan():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        c = confusion_at(torch.rand(4), torch.tensor([0, 1, 0, 1]), float("nan"))
    assert all(math.isnan(v) for v in c.values())


def test_smoothing_spreads_an_impulse_and_keeps_constants():
    impulse = torch.zeros(1, 1, 21, 21)
    impulse[0, 0, 10, 10] = 1.0
    smoothed = smooth_map(impulse, sigma=2.0)
    assert smoothed.sum().item() == pytest.approx(1.0, rel=1e-4)
    assert smoothed.max() < 0.1 and smoothed[0, 0, 10, 10] == smoothed.max()
    flat = smooth_map(torch.full((1, 1, 21, 21), 0.3), 1.5)
    assert torch.allclose(flat[..., 5:-5, 5:-5], torch.tensor(0.3))  # interior unchanged
    assert flat[0, 0, 0, 0] < 0.3 / 2  # zero padding damps the corners
    assert smooth_map(torch.rand(1, 1, 8, 8), 8.0).shape == (1, 1, 8, 8)  # any sigma
    assert smooth_map(impulse, 0.0) is impulse


def test_scorer_keys_smoothed_maps_and_uses_them():
    scorer = Scorer({"raw": {"map": "l1", "reduce": "max"},
                     "smooth": {"map": "l1", "reduce": "max", "sigma": 2}}, primary="smooth")
    x, r = torch.zeros(1, 3, 21, 21), torch.zeros(1, 3, 21, 21)
    r[0, :, 10, 10] = 1.0
    maps, scores = scorer({"l1": anomaly_map(x, r, "l1")})
    assert set(maps) == {"l1", "l1_s2"} and scorer.primary_map == "l1_s2"
    assert scores["raw"].item() == pytest.approx(1.0)
    assert scores["smooth"].item() == pytest.approx(maps["l1_s2"].max().item())
    assert scores["smooth"].item() < 0.1
    with pytest.raises(ConfigError, match=r"score\.scores\.s"):
        Scorer({"s": {"map": "l1", "reduce": "max", "blur": 2}}, primary="s")


def test_close_scores_outside_unit_range_keep_their_order():
    """torchmetrics would squash scores > 1 with a sigmoid; ranks keep them apart."""
    base = 30.0
    scores = torch.tensor([base, base + 1e-4, base + 2e-4, base + 3e-4], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1])
    m = image_metrics(scores, labels, threshold=base + 1.5e-4)
    assert m["image_auroc"] == pytest.approx(1.0) and m["image_pr_auc"] == pytest.approx(1.0)


def test_non_finite_scores_warn_and_give_nan():
    with pytest.warns(UserWarning, match="NaN or infinite"):
        m = image_metrics(torch.tensor([0.1, float("nan"), 0.3, 0.4]),
                          torch.tensor([0, 0, 1, 1]), threshold=0.2)
    assert math.isnan(m["image_auroc"])


def test_normalization_puts_the_threshold_at_one_half():
    post = PostProcessor(["a", "b"], {"method": "quantile", "quantile": 0.5})
    post.fit("a", torch.tensor([0.1, 0.3, 0.5]))  # median 0.3, range [0.1, 0.5]
    values = torch.tensor([0.3, 0.4, 0.1, 10.0, -5.0])
    normalized, decisions = post({"a": values})
    assert normalized["a"].tolist() == pytest.approx([0.5, 0.75, 0.0, 1.0, 0.0])
    assert decisions["a"].tolist() == [False, True, False, True, False]
    assert post.threshold_of("a") == pytest.approx(0.3) and math.isnan(post.threshold_of("b"))
    post.fit_pixels(torch.arange(101.0))
    assert float(post.pixel_threshold) == pytest.approx(50.0)
    with pytest.raises(ConfigError, match=r"score\.threshold\.method"):
        PostProcessor(["a"], {"method": "otsu"})


def test_weighted_map_combination():
    scorer = Scorer({"mix": {"map": {"l1": 0.25, "l2": 2.0}, "reduce": "mean", "sigma": 1},
                     "l1": {"map": "l1", "reduce": "mean"}}, primary="mix")
    x, r = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    maps, scores = scorer({kind: anomaly_map(x, r, kind) for kind in ("l1", "l2")})
    expected = smooth_map(0.25 * anomaly_map(x, r, "l1") + 2.0 * anomaly_map(x, r, "l2"), 1)
    assert scorer.primary_map == "0.25*l1+2*l2_s1"
    assert torch.allclose(maps["0.25*l1+2*l2_s1"], expected)
    assert torch.allclose(scores["mix"], expected.mean(dim=(1, 2, 3)))
    with pytest.raises(ConfigError, match=r"score\.scores\.bad\.map"):
        Scorer({"bad": {"map": {"l1": -1.0}, "reduce": "mean"}}, primary="bad")
