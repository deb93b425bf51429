"""Synthetic anomalies and the models trained on them (issue 8): generator, networks,
synthetic validation metrics, configs."""

from __future__ import annotations

import json

import pytest
import torch

from anomalib_lite.benchmark.select_score import synthetic_selection
from anomalib_lite.benchmark.targets import meets, table
from anomalib_lite.data.synthetic import SyntheticAnomalies, perlin_masks, perlin_noise
from anomalib_lite.losses import FocalLoss
from anomalib_lite.models import AnomalyModule
from anomalib_lite.models.components import DraemLite, UNetAE
from anomalib_lite.scoring import Scorer
from anomalib_lite.train import train
from anomalib_lite.utils.checks import ConfigError


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_perlin_noise_is_smooth_and_bounded():
    field = perlin_noise(32, 32, (2, 2), _gen())
    assert field.shape == (32, 32) and field.abs().max() <= 1.5
    assert (field[1:] - field[:-1]).abs().max() < 0.3  # neighbouring pixels stay close


def test_masks_are_binary_and_never_empty():
    masks = perlin_masks(12, 32, 40, min_fraction=0.01, generator=_gen())
    assert masks.shape == (12, 1, 32, 40)
    assert set(masks.unique().tolist()) <= {0.0, 1.0}
    assert (masks.flatten(1).mean(1) >= 0.01 - 1e-6).all()


@pytest.mark.parametrize("source", ["self", "batch", "texture", "noise"])
def test_content_changes_only_inside_the_mask(source):
    images = torch.rand(6, 3, 32, 32)
    synth = SyntheticAnomalies(probability=1.0, sources={source: 1.0}, beta=(0.0, 0.0))
    corrupted, masks = synth(images, _gen())
    assert corrupted.shape == images.shape and masks.shape == (6, 1, 32, 32)
    assert corrupted.dtype == images.dtype and corrupted.min() >= 0 and corrupted.max() <= 1
    outside = (corrupted - images).abs() * (1 - masks)
    assert outside.max() == 0
    assert ((corrupted - images).abs() * masks).sum() > 0  # and something did change inside


def test_probability_zero_leaves_images_alone_and_seed_repeats():
    images = torch.rand(4, 3, 32, 32)
    corrupted, masks = SyntheticAnomalies(probability=0.0)(images, _gen())
    assert torch.equal(corrupted, images) and masks.sum() == 0
    synth = SyntheticAnomalies()
    a, b = synth(images, _gen(3)), synth(images, _gen(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = synth(images, _gen(4))
    assert not torch.equal(a[1], c[1])


@pytest.mark.parametrize(("kwargs", "key"), [
    ({"probability": 1.5}, "synthesis.probability"),
    ({"beta": (0.5, 0.2)}, "synthesis.beta"),
    ({"sources": {"dtd": 1.0}}, "synthesis.sources"),
    ({"sources": {"self": 0.0}}, "synthesis.sources"),
])
def test_bad_settings_name_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        SyntheticAnomalies(**kwargs)


@pytest.mark.parametrize("bad", [torch.rand(3, 32, 32), torch.zeros(1, 3, 8, 8, dtype=torch.uint8)])
def test_rejects_bad_images(bad):
    with pytest.raises(ValueError, match=r"float images \(N, C, H, W\)"):
        SyntheticAnomalies()(bad)


@pytest.mark.parametrize("downsample", [1, 2])
def test_draem_lite_shapes(downsample):
    net = DraemLite(recon_widths=(8, 16, 32, 64), seg_widths=(8, 16, 32, 64),
                    downsample=downsample).eval()
    x = torch.rand(2, 3, 32, 32)
    recon = net(x)
    assert recon.shape == x.shape and recon.min() >= 0 and recon.max() <= 1
    assert net.segment(x, recon).shape == (2, 1, 32, 32)


def test_skip_noise_and_dropout_act_in_training_only():
    torch.manual_seed(0)
    plain = UNetAE(widths=(8, 16, 32, 64))
    noisy = UNetAE(widths=(8, 16, 32, 64), skip_dropout=0.5, skip_noise=1.0)
    noisy.load_state_dict(plain.state_dict())
    x = torch.rand(4, 3, 32, 32)
    plain.eval(), noisy.eval()
    assert torch.equal(plain(x), noisy(x))
    plain.train(), noisy.train()
    assert not torch.allclose(plain(x), noisy(x))


def test_focal_loss_prefers_the_right_mask():
    masks = (torch.rand(2, 1, 16, 16) > 0.8).float()
    loss = FocalLoss(gamma=2.0, dice=1.0)
    assert loss(masks * 20 - 10, masks) < loss(10 - masks * 20, masks)


def test_seg_scores_need_a_segmentation_head(compose_cfg):
    cfg = compose_cfg("model=denoising_ae", "score=draem")  # no head: no seg map
    with pytest.raises(ConfigError, match=r"map\(s\) \['seg'\].*BaselineAE|ReconstructionModel"):
        AnomalyModule(**{k: v for k, v in cfg.model.items() if k != "_target_"})
    scorer = Scorer({"seg_max": {"map": "seg", "reduce": "max"}}, primary="seg_max")
    _, scores = scorer({"seg": torch.rand(2, 1, 16, 16)})
    assert scores["seg_max"].shape == (2,)


def test_a_head_without_synthesis_is_refused(compose_cfg):
    cfg = compose_cfg("model=draem_lite", "model.net.synthesis=null")
    with pytest.raises(ConfigError, match=r"model\.net\.synthesis"):
        AnomalyModule(**{k: v for k, v in cfg.model.items() if k != "_target_"})


TINY_NETS = ("model.net.network.recon_widths=[8,16,32,64]",
             "model.net.network.seg_widths=[8,16,32,64]")


def test_draem_lite_trains_logs_synthetic_metrics_and_reloads(fast_cfg, tmp_path):
    cfg = fast_cfg("model=draem_lite", *TINY_NETS)
    fit_metrics, _ = train(cfg)
    for key in ("val/synthetic_image_auroc", "val/synthetic_pixel_auroc", "train/seg_loss"):
        assert key in fit_metrics, sorted(fit_metrics)
    assert 0.0 <= fit_metrics["val/synthetic_pixel_auroc"] <= 1.0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["primary_score"] == "seg_s4_max" and "seg_s4" in results["pixel"]
    model = AnomalyModule.load_from_checkpoint(tmp_path / "model.ckpt", weights_only=True)
    assert isinstance(model.net.network, DraemLite) and model.net.synthesizes
    out = model.eval().predict_batch(torch.rand(2, 3, 32, 32))
    assert out["maps"]["seg_s4"].shape == (2, 1, 32, 32)
    # the score choice on synthetic validation anomalies reads the val split only
    selection = synthetic_selection(tmp_path, repeats=1, data_cfg=cfg.data)
    assert selection["chosen"] in cfg.score.scores and len(selection["rows"]) == len(
        cfg.score.scores)


def test_targets_table_marks_the_misses():
    rows = [{"category": "bottle", "image_auroc": 0.96, "pixel_auroc": 0.97, "aupro": 0.9,
             "run_minutes": 9.0, "fit_minutes": 8.5, "epochs": 56, "image_size": 128},
            {"category": "pill", "image_auroc": 0.86, "pixel_auroc": 0.96, "aupro": 0.8,
             "run_minutes": 16.0, "fit_minutes": 15.5, "epochs": 56, "image_size": 128}]
    assert all(meets(rows[0]).values())
    assert meets(rows[1]) == {"image_auroc": False, "pixel_auroc": True, "fit_minutes": False}
    text = table(rows)
    assert "| all |" in text and "image_auroc, fit_minutes missed" in text
    assert "0.992 / 0.991" in text  # DRAEM's published bottle numbers


@pytest.mark.parametrize("model", ["denoising_ae", "unet_noisy_skips"])
def test_denoising_models_train(fast_cfg, model):
    cfg = fast_cfg(f"model={model}", "model.net.network.widths=[8,16,32,64]", "test=false")
    fit_metrics, _ = train(cfg)
    assert "val/synthetic_image_auroc" in fit_metrics and "train/seg_loss" not in fit_metrics


@pytest.mark.parametrize("data", ["bottle", "pill"])
def test_mvtec_best_experiment_composes(compose_cfg, data):
    cfg = compose_cfg("experiment=mvtec_best", f"data={data}")
    assert cfg.model.net.network._target_.endswith("DraemLite")
    assert cfg.trainer.precision == "bf16-mixed" and cfg.trainer.max_epochs > 0
    assert cfg.score.primary.startswith("seg") and cfg.data.category == data


def test_mvtec_best_trains_on_a_tiny_layout(fast_cfg, mvtec_root, tmp_path):
    cfg = fast_cfg("experiment=mvtec_best", "data=bottle", f"data.root={mvtec_root}",
                   "data.image_size=32", *TINY_NETS, "trainer.max_epochs=1",
                   "trainer.precision=32-true")
    train(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["pixel"][results["primary_map"]]["pixel_auroc"] >= 0.0
