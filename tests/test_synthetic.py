"""Synthetic anomalies and the models trained on them: generator, networks, synthetic
validation metrics, configs."""

from __future__ import annotations

import json

import pytest
import torch

from anomalib_lite.benchmark.select_score import synthetic_selection
from anomalib_lite.benchmark.targets import meets, table
from anomalib_lite.data.synthetic import (
    SyntheticAnomalies,
    displace,
    perlin_fields,
    perlin_masks,
    perlin_noise,
)
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
    # validation on another family: other anomalies, so other AUROCs
    other = synthetic_selection(tmp_path, repeats=1, data_cfg=cfg.data, family="realistic")
    assert other["family"] == "realistic" and selection["family"] == "own"
    assert [r["pixel_auroc"] for r in other["rows"]] != [r["pixel_auroc"]
                                                          for r in selection["rows"]]
    with pytest.raises(ConfigError, match=r"--family 'perlinn'.*\['perlin', 'realistic'\]"):
        synthetic_selection(tmp_path, repeats=1, data_cfg=cfg.data, family="perlinn")


def test_synthesis_families_are_chosen_as_config_groups(compose_cfg):
    cfg = compose_cfg("experiment=mvtec_best", "synthesis@model.net.synthesis=realistic",
                      "+synthesis@model.val_synthesis=perlin")
    trained, validated = cfg.model.net.synthesis, cfg.model.val_synthesis
    assert dict(trained.sources) == {"natural": 1.0, "patch": 1.0}  # replaced, not merged
    assert trained.blend == "poisson" and trained.foreground and trained.probability == 0.7
    assert validated.blend == "alpha" and "self" in validated.sources
    default = compose_cfg("experiment=mvtec_best").model.net.synthesis
    assert set(default.sources) == {"self", "batch", "texture", "noise"}


def test_targets_table_marks_the_misses():
    rows = [{"category": "bottle", "image_auroc": 0.98, "pixel_auroc": 0.97, "aupro": 0.9,
             "run_minutes": 9.0, "fit_minutes": 8.5, "epochs": 56, "image_size": 128},
            {"category": "pill", "image_auroc": 0.86, "pixel_auroc": 0.96, "aupro": 0.8,
             "run_minutes": 16.0, "fit_minutes": 15.5, "epochs": 56, "image_size": 128}]
    assert all(meets(rows[0]).values())
    assert meets(rows[1]) == {"image_auroc": False, "pixel_auroc": True, "fit_minutes": False}
    # the targets are per category: 0.96 misses bottle's 0.98 and meets pill's 0.95
    assert not meets({**rows[0], "image_auroc": 0.96})["image_auroc"]
    assert meets({**rows[1], "image_auroc": 0.96})["image_auroc"]
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
    assert cfg.data.image_size == 256 and cfg.model.train_crop == 128  # crops of 256 px


def test_mvtec_best_trains_on_a_tiny_layout(fast_cfg, mvtec_root, tmp_path):
    cfg = fast_cfg("experiment=mvtec_best", "data=bottle", f"data.root={mvtec_root}",
                   "data.image_size=32", "model.train_crop=16", *TINY_NETS,
                   "trainer.max_epochs=1",
                   "trainer.precision=32-true")
    train(cfg)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["pixel"][results["primary_map"]]["pixel_auroc"] >= 0.0


# ------------------------------------------------------------ the batched generator vs loops
def loop_perlin(height: int, width: int, res: tuple[int, int], angles: torch.Tensor):
    """Perlin noise by the definition, pixel grid at once but one field: the reference."""
    import math

    ry, rx = res
    grads = torch.stack([angles.cos(), angles.sin()], dim=-1)
    y = torch.arange(height, dtype=torch.float64) * ry / height
    x = torch.arange(width, dtype=torch.float64) * rx / width
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    y0, x0 = yy.floor().long(), xx.floor().long()
    fy, fx = yy - y0, xx - x0

    def corner(dy, dx):
        g = grads[y0 + dy, x0 + dx].double()
        return g[..., 0] * (fy - dy) + g[..., 1] * (fx - dx)

    def fade(t):
        return t * t * t * (t * (t * 6 - 15) + 10)

    uy, ux = fade(fy), fade(fx)
    top = corner(0, 0) + ux * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + ux * (corner(1, 1) - corner(1, 0))
    return math.sqrt(2) * (top + uy * (bottom - top))


def test_batched_perlin_fields_equal_the_definition_per_image():
    res = torch.tensor([[1, 1], [2, 8], [32, 4], [16, 16]])
    angles = torch.rand(4, 33, 17, generator=_gen(1)) * 6.2832
    fields = perlin_fields(angles, res, 40, 56)
    for i, (ry, rx) in enumerate(res.tolist()):
        expected = loop_perlin(40, 56, (ry, rx), angles[i, :ry + 1, :rx + 1])
        torch.testing.assert_close(fields[i].double(), expected, atol=2e-6, rtol=0)


def test_displacement_is_a_roll_then_a_rotation_per_image():
    x = torch.rand(5, 3, 12, 12, generator=_gen(2))
    shifts_y, shifts_x = torch.tensor([0, 3, 11, 5, 7]), torch.tensor([1, 0, 4, 9, 2])
    turns = torch.tensor([0, 1, 2, 3, 1])
    expected = torch.stack([x[i].roll((int(shifts_y[i]), int(shifts_x[i])), dims=(1, 2))
                            .rot90(int(turns[i]), dims=(1, 2)) for i in range(5)])
    assert torch.equal(displace(x, shifts_y, shifts_x, turns), expected)
    tall = torch.rand(2, 3, 16, 8)
    rolled = displace(tall, torch.tensor([4, 0]), torch.tensor([1, 7]), torch.zeros(2).long())
    assert torch.equal(rolled[0], tall[0].roll((4, 1), dims=(1, 2)))


def _loop_masks(n, size, generator, min_scale=0, max_scale=5, threshold=0.5,
                min_fraction=0.005):
    """The per-image mask recipe, as the generator drew it before it was batched."""
    masks = torch.zeros(n, 1, size, size)
    scales = torch.randint(min_scale, max_scale + 1, (n, 2), generator=generator)
    flips = torch.randint(0, 2, (n, 2), generator=generator)
    for i in range(n):
        res = (2 ** int(scales[i, 0]), 2 ** int(scales[i, 1]))
        field = perlin_noise(size, size, res, generator)
        field = field.flip(0) if flips[i, 0] else field
        field = field.flip(1) if flips[i, 1] else field
        cut = min(threshold, float(torch.quantile(field.flatten(), 1.0 - min_fraction)))
        masks[i, 0] = (field >= cut).float()
    return masks


def test_batched_masks_have_the_per_image_recipes_coverage():
    batched = perlin_masks(400, 64, 64, generator=_gen(5)).flatten(1).mean(1)
    looped = _loop_masks(400, 64, _gen(6)).flatten(1).mean(1)
    assert abs(batched.mean() - looped.mean()) < 0.03, (batched.mean(), looped.mean())
    assert abs(batched.std() - looped.std()) < 0.03
    assert (batched >= 0.005 - 1e-6).all()  # never empty


@pytest.mark.parametrize("source", ["self", "batch", "texture", "noise"])
def test_each_source_keeps_its_statistics(source):
    """Statistics of the pasted content (inside the masks) for a fixed set of images: the
    mean, spread and change of the corrupted pixels stay those of each source's recipe."""
    images = torch.rand(1, 3, 48, 48, generator=_gen(7)).repeat(64, 1, 1, 1) * 0.5 + 0.25
    synth = SyntheticAnomalies(probability=1.0, sources={source: 1.0}, beta=(0.0, 0.0))
    corrupted, masks = synth(images, _gen(8))
    inside = masks.expand_as(images).bool()
    pasted, change = corrupted[inside], (corrupted - images)[inside].abs()
    # (mean, std, mean change) of the pasted pixels, measured on the per-image generator
    # this one replaced (the mean of seeds 8-13; seed-to-seed spread <= 0.014, 0.006, 0.004)
    expected = {"self": (0.502, 0.189, 0.194), "batch": (0.502, 0.189, 0.194),
                "texture": (0.500, 0.179, 0.188), "noise": (0.501, 0.290, 0.272)}[source]
    got = (pasted.mean(), pasted.std(), change.mean())
    for value, want, tolerance in zip(got, expected, (0.04, 0.02, 0.015), strict=True):
        assert abs(float(value) - want) < tolerance, (source, float(value), want)


def test_anomalies_are_made_on_the_images_device_and_dtype():
    images = torch.rand(3, 3, 32, 32).to(torch.bfloat16)
    corrupted, masks = SyntheticAnomalies(probability=1.0)(images, _gen(9))
    assert corrupted.dtype == masks.dtype == torch.bfloat16
    assert corrupted.device == images.device


def test_mixed_precision_training_gets_the_float32_anomalies():
    """Under bf16 autocast (training_step) the generator still computes in float32."""
    images = torch.rand(8, 3, 32, 32, generator=_gen(10))
    synth = SyntheticAnomalies(probability=1.0)  # every source, Perlin textures included
    reference = synth(images, _gen(11))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = synth(images, _gen(11))
    assert torch.equal(mixed[0], reference[0]) and torch.equal(mixed[1], reference[1])
