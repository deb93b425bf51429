"""End to end: a real Trainer fit + test on tiny sprites, results.json, checkpoints, CLI."""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import hydra
import pytest
import torch
from conftest import TINY_SPRITES, make_folder_dataset
from lightning.pytorch import Trainer
from sklearn.metrics import roc_auc_score

from anomalib_lite.models import AnomalyModule
from anomalib_lite.train import train
from anomalib_lite.utils.checks import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]

RESULT_KEYS = {"image_auroc", "image_pr_auc", "mean_score_normal", "mean_score_anomalous",
               "tpr_at_fpr", "per_defect_auroc", "oracle", "threshold", "confusion",
               "n_normal", "n_anomalous"}


def test_short_run_writes_complete_results(fast_cfg, tmp_path):
    cfg = fast_cfg()
    fit_metrics, _ = train(cfg)
    assert "val/loss_best" in fit_metrics and fit_metrics["val/loss_best"] > 0

    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["schema_version"] == 3 and on_disk["primary_score"] == cfg.score.primary
    assert set(cfg.score.scores) == {"l2_mean", "l1_mean", "ssim_s4_top5"}
    assert set(on_disk["scores"]) == {*cfg.score.scores, "latent_kde",
                                      f"{cfg.score.primary}+latent_kde"}
    for metrics in on_disk["scores"].values():
        assert set(metrics) == RESULT_KEYS
        assert 0.0 <= metrics["image_auroc"] <= 1.0
        assert metrics["n_normal"] == 20 and metrics["n_anomalous"] == 20
        c = metrics["confusion"]
        assert c["tp"] + c["fn"] == 20 and c["tn"] + c["fp"] == 20
        assert metrics["threshold"] > 0
    assert on_disk["config"]["data"]["image_size"] == 32
    # the model reads the score and loss groups by reference: written as the reference
    assert on_disk["config"]["model"]["scoring"] == "${score}"
    assert on_disk["config"]["model"]["net"]["loss"] == "${loss}"
    assert on_disk["config"]["score"]["primary"] == cfg.score.primary
    assert set(on_disk["pixel"]) == {"l2", "l1", "ssim_s4"}
    kde_scores = {"latent_kde", f"{cfg.score.primary}+latent_kde"}
    assert kde_scores <= set(on_disk["scores"])
    for pixel in on_disk["pixel"].values():
        assert 0.0 <= pixel["pixel_auroc"] <= 1.0 and 0.0 <= pixel["aupro"] <= 1.0
    assert set(on_disk["scores"]["l2_mean"]["per_defect_auroc"]) == {"ellipse"}
    # per-image scores: one row per test image, consistent with the summary metrics
    with open(tmp_path / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 40
    assert set(rows[0]) == {"path", "label", "defect_type", *on_disk["scores"], "anomalous"}
    labels = [int(r["label"]) for r in rows]
    primary = [float(r[cfg.score.primary]) for r in rows]
    assert roc_auc_score(labels, primary) == pytest.approx(
        on_disk["scores"][cfg.score.primary]["image_auroc"], abs=1e-6)
    c = on_disk["scores"][cfg.score.primary]["confusion"]
    assert sum(int(r["anomalous"]) for r in rows) == c["tp"] + c["fp"]
    assert on_disk["train"]["global_step"] == 3  # limit_train_batches=3, one epoch

    model = AnomalyModule.load_from_checkpoint(on_disk["train"]["best_checkpoint"],
                                               weights_only=True)
    assert model.threshold_of("l2_mean") == pytest.approx(on_disk["scores"]["l2_mean"]["threshold"])


def test_best_checkpoint_holds_the_threshold_of_its_own_weights(fast_cfg):
    """Thresholds are fitted on that epoch's validation pass, before the checkpoint is saved."""
    cfg = fast_cfg("trainer.max_epochs=3", "trainer.limit_val_batches=1.0", "test=false")
    train(cfg)
    best = sorted((Path(cfg.paths.output_dir) / "checkpoints").glob("epoch_*.ckpt"))[-1]
    model = AnomalyModule.load_from_checkpoint(best, weights_only=True).eval()
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("validate")
    images = datamodule.datasets["val"].images.float() / 255
    with torch.no_grad():
        scores = model.predict_batch(images)["scores"]
    for name in model.scorer.names:
        expected = torch.quantile(scores[name].double(), 0.99).item()
        assert model.threshold_of(name) == pytest.approx(expected, rel=1e-5), name
    with torch.no_grad():
        pixels = model.predict_batch(images)["maps"][model.scorer.primary_map].flatten(1)
    stride = max(1, pixels.shape[1] // 1024)
    expected = torch.quantile(pixels[:, ::stride].reshape(-1).double(), 0.99).item()
    assert float(model.post_processor.pixel_threshold) == pytest.approx(expected, rel=1e-5)


def test_threshold_is_the_quantile_of_normal_validation_scores(fast_cfg):
    cfg = fast_cfg("score.threshold.quantile=0.9")
    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model, _recursive_=False)
    datamodule.setup("test")
    # validate on a loader that mixes normal and anomalous images: only normals may count
    loader = datamodule.test_dataloader()
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False,
                      enable_checkpointing=False, enable_model_summary=False)
    trainer.validate(model, dataloaders=loader)
    test_set = datamodule.datasets["test"]
    images = test_set.images.float() / 255
    with torch.no_grad():
        scores = (model.net.reconstruct(images) - images).square().mean(dim=(1, 2, 3))
    normal = scores[test_set.labels == 0].double()
    assert model.threshold_of("l2_mean") == pytest.approx(torch.quantile(normal, 0.9).item(),
                                                          rel=1e-5)
    mixed = torch.quantile(scores.double(), 0.9).item()
    assert model.threshold_of("l2_mean") != pytest.approx(mixed, rel=1e-5)


def test_cli_runs_with_overrides(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "anomalib_lite.train", "debug=fast", *TINY_SPRITES, "loss=l1",
           "score.primary=l1_mean", f"hydra.run.dir={tmp_path}/run"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["primary_score"] == "l1_mean"
    assert results["config"]["loss"]["l1"] == 1.0
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").exists()
    # the console: the run directory first, the project's tables once (not Lightning's),
    # no third-party advertisement or deprecation of code that is not ours
    assert proc.stdout.index(f"run directory: {tmp_path}/run") < proc.stdout.index("Test results")
    assert proc.stdout.count("Test results") == 1 and "Test metric" not in proc.stdout
    assert "litlogger" not in proc.stdout + proc.stderr
    assert "LeafSpec" not in proc.stderr
    # the run's log holds what the console showed: Lightning's messages, warnings, tables
    log = (tmp_path / "run" / "train.log").read_text()
    for shown in ("run directory:", "`Trainer.fit` stopped", "smaller than the logging interval",
                  "Test results (primary score: l1_mean)", "results written to"):
        assert shown in log, shown


def test_cli_unknown_model_lists_the_options(tmp_path):
    cmd = [sys.executable, "-m", "anomalib_lite.train", "model=nonexistent",
           f"hydra.run.dir={tmp_path}/run"]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Could not find 'model/nonexistent'" in proc.stderr
    assert "sprite_ae" in proc.stderr  # Hydra lists the available options


def test_resume_from_last_checkpoint_reaches_the_same_final_epoch(fast_cfg, tmp_path):
    def last(run: Path) -> dict:
        return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)

    train(fast_cfg("trainer.max_epochs=3", "test=false", output_dir=tmp_path / "full"))
    stopped = tmp_path / "stopped"
    train(fast_cfg("trainer.max_epochs=1", "test=false", output_dir=stopped))
    assert last(stopped)["epoch"] == 0
    resumed = fast_cfg("trainer.max_epochs=3", f"ckpt_path={stopped}/checkpoints/last.ckpt",
                       output_dir=stopped)
    _, results = train(resumed)
    full, done = last(tmp_path / "full"), last(stopped)
    assert (done["epoch"], done["global_step"]) == (full["epoch"], full["global_step"]) == (2, 9)
    assert results is not None and results["train"]["global_step"] == 9


def test_bf16_mixed_precision_trains_and_evaluates_in_float32(fast_cfg):
    cfg = fast_cfg("model=unet", "trainer.precision=bf16-mixed", "callbacks=none")
    _, results = train(cfg)
    for metrics in results["scores"].values():
        assert 0.0 <= metrics["image_auroc"] <= 1.0 and metrics["threshold"] > 0
    model = hydra.utils.instantiate(cfg.model, _recursive_=False).eval()
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        reference = model.predict_batch(images)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed = model.predict_batch(images)
            quantised = model.net.reconstruct(images)
        exact = model.net.reconstruct(images)
    for key, amap in reference["maps"].items():
        assert torch.equal(mixed["maps"][key], amap), key
    assert not torch.equal(quantised, exact)  # bf16 would differ
    for name, scores in reference["scores"].items():
        assert torch.equal(mixed["scores"][name], scores)


@pytest.mark.parametrize("model", ["baseline", "unet"])
def test_mvtec_layout_trains_and_reports_seed000_scores(fast_cfg, mvtec_root, tmp_path, model):
    cfg = fast_cfg(f"model={model}", "data=bottle", f"data.root={mvtec_root}",
                   "data.val_fraction=0.34")
    _, results = train(cfg)
    on_disk = json.loads((tmp_path / "results.json").read_text())
    assert on_disk["primary_score"] == "l1_mean" == results["primary_score"]
    assert set(on_disk["scores"]) == {"l1_mean", "l1_top1", "latent_kde", "l1_mean+latent_kde"}
    for metrics in on_disk["scores"].values():
        assert (metrics["n_normal"], metrics["n_anomalous"]) == (2, 2)
        assert 0.0 <= metrics["image_auroc"] <= 1.0
    assert on_disk["config"]["model"]["net"]["network"]["_target_"].endswith(
        "UNetAE" if model == "unet" else "BaselineAE")


def test_folder_dataset_trains_and_its_checkpoint_loads_weights_only(fast_cfg, tmp_path):
    dirs = make_folder_dataset(tmp_path / "own")
    cfg = fast_cfg("data=folder", f"data.normal_dir={dirs['normal']}",
                   f"data.abnormal_dirs=[{dirs['scratch']}]", f"data.mask_dir={dirs['masks']}",
                   "data.val_fraction=0.2", "data.test_fraction=0.2")
    _, results = train(cfg)
    metrics = results["scores"]["l2_mean"]
    assert metrics["n_anomalous"] == 3 and metrics["n_normal"] >= 1
    ckpt = torch.load(results["train"]["best_checkpoint"], weights_only=True)
    assert ckpt["datamodule_hyper_parameters"]["abnormal_dirs"] == [str(dirs["scratch"])]


def test_train_false_tests_the_checkpoint_with_its_own_config(fast_cfg, tmp_path):
    _, trained = train(fast_cfg(output_dir=tmp_path / "a"))
    ckpt = trained["train"]["best_checkpoint"]
    # the current config names another score set: the checkpoint's own one must be used
    cfg = fast_cfg("train=false", f"ckpt_path={ckpt}", "score=seed000", output_dir=tmp_path / "b")
    _, tested = train(cfg)
    assert tested["scores"] == trained["scores"]  # same weights, thresholds and score set
    assert tested["train"]["best_checkpoint"] == ckpt
    with pytest.raises(ConfigError, match="ckpt_path"):
        train(fast_cfg("train=false", output_dir=tmp_path / "c"))


def test_resume_into_a_new_directory_keeps_the_best_validation_loss(fast_cfg, tmp_path):
    first = fast_cfg("trainer.max_epochs=2", "test=false", output_dir=tmp_path / "first")
    fit_first, _ = train(first)
    resumed = fast_cfg("trainer.max_epochs=3", "test=false",
                       f"ckpt_path={tmp_path}/first/checkpoints/last.ckpt",
                       output_dir=tmp_path / "second")
    fit_resumed, _ = train(resumed)
    assert fit_resumed["val/loss_best"] <= fit_first["val/loss_best"] + 1e-9


def test_saved_model_carries_the_fitted_kde_and_thresholds(fast_cfg, tmp_path):
    cfg = fast_cfg()
    _, results = train(cfg)
    model = AnomalyModule.load_from_checkpoint(tmp_path / "model.ckpt", weights_only=True)
    assert model.kde is not None and model.kde.fitted
    assert model.preprocessing == {"image_size": 32, "channels": 3}  # for predict and export
    for name, metrics in results["scores"].items():
        assert model.threshold_of(name) == pytest.approx(metrics["threshold"], rel=1e-6), name
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("test")
    with open(tmp_path / "scores.csv", newline="") as handle:
        rows = {row["path"]: row for row in csv.DictReader(handle)}
    test_set = datamodule.datasets["test"]
    images = test_set.images[:5].float() / 255
    with torch.no_grad():
        scores = model.eval().predict_batch(images)["scores"]
    for name, values in scores.items():  # the saved model reproduces the test scores
        expected = [float(rows[path][name]) for path in test_set.paths[:5]]
        assert values.tolist() == pytest.approx(expected, rel=1e-4, abs=1e-6), name


def test_a_reporting_failure_after_the_results_keeps_them_completed(fast_cfg, tmp_path,
                                                                    monkeypatch):
    import anomalib_lite.train as train_module

    def broken(*args, **kwargs):
        raise ConnectionError("W&B is unreachable")

    monkeypatch.setattr(train_module, "finish_loggers", broken)
    with pytest.raises(train_module.ReportingError, match="results are complete") as caught:
        train(fast_cfg())
    assert "val/loss_best" in caught.value.fit_metrics
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["run"]["status"] == "completed" and results["scores"]


def test_cosine_schedule_steps_every_epoch_when_validating_less_often(fast_cfg):
    """Only a plateau scheduler waits for validation epochs; a cosine one decays each epoch."""
    cfg = fast_cfg("model=denoising_ae", "model.net.network.widths=[8,16,32,64]",
                   "trainer.max_epochs=4", "callbacks=none")
    datamodule = hydra.utils.instantiate(cfg.data)
    model = hydra.utils.instantiate(cfg.model, _recursive_=False)
    trainer = Trainer(accelerator="cpu", max_epochs=4, limit_train_batches=2,
                      check_val_every_n_epoch=2, logger=False, enable_progress_bar=False,
                      enable_checkpointing=False, enable_model_summary=False)
    trainer.fit(model, datamodule=datamodule)
    rates = [entry["lr"] for entry in model.history]
    assert len(rates) == 4 and all(a > b for a, b in itertools.pairwise(rates)), rates


def test_channels_last_layout_scores_like_the_contiguous_one(compose_cfg):
    cfg = compose_cfg("model=draem_lite", "model.net.network.recon_widths=[8,16,32,64]",
                      "model.net.network.seg_widths=[8,16,32,64]")
    kwargs = {k: v for k, v in cfg.model.items() if k not in ("_target_", "channels_last")}
    nhwc = AnomalyModule(**kwargs, channels_last=True).eval()
    nchw = AnomalyModule(**kwargs, channels_last=False).eval()
    nchw.load_state_dict(nhwc.state_dict())
    conv = nhwc.net.network.reconstructive.encoder[0][0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = nhwc.predict_batch(images), nchw.predict_batch(images)
    for name in a["scores"]:
        torch.testing.assert_close(a["scores"][name], b["scores"][name], atol=1e-4, rtol=1e-4)


def test_fit_wall_time_is_counted_once(fast_cfg):
    """Testing the best checkpoint restores the callback state saved with it: that must
    not add the fit time again."""
    start = time.perf_counter()
    _, results = train(fast_cfg("trainer.max_epochs=3", "trainer.limit_train_batches=25",
                                "data.n_train=200", "data.image_size=64"))
    total = time.perf_counter() - start
    assert 0 < results["train"]["wall_time_s"] < total - results["test_wall_time_s"]
