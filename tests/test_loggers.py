"""Loggers for real: a W&B offline run is read back from disk; CSV metrics too."""

from __future__ import annotations

import csv
import json
import logging

import pytest
from conftest import read_wandb_records

from anomalib_lite.train import train


def items(record, kind: str) -> dict[str, object]:
    updates = record.history.item if kind == "history" else (
        record.summary.update if kind == "summary" else record.config.update)
    return {(u.key or "/".join(u.nested_key)): json.loads(u.value_json) for u in updates}


def test_wandb_offline_run_holds_config_and_metrics(fast_cfg, tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no netrc: no credentials
    monkeypatch.setenv("WANDB_SILENT", "true")
    with caplog.at_level(logging.WARNING, logger="anomalib_lite.loggers"):
        _, results = train(fast_cfg("logger=wandb", "trainer.max_epochs=2"))
    assert sum("logging offline" in r.message for r in caplog.records) <= 1

    records = read_wandb_records(tmp_path / "wandb")
    history: dict[str, list] = {}
    for record in records:
        if record.WhichOneof("record_type") == "history":
            for key, value in items(record, "history").items():
                history.setdefault(key, []).append(value)
    primary = results["scores"][results["primary_score"]]
    assert history["test/image_auroc"] == [pytest.approx(primary["image_auroc"])]
    assert len(history["val/loss"]) == 2 and "train/loss_epoch" in history

    config = {}
    for record in records:
        if record.WhichOneof("record_type") == "config":
            config.update(items(record, "config"))
    assert config["run"]["data"]["image_size"] == 32
    assert config["net"]["network"]["_target_"].endswith("SpriteAE")  # the model's own hparams

    summary = {}
    for record in records:
        if record.WhichOneof("record_type") == "summary":
            summary.update(items(record, "summary"))
    assert summary["image_auroc"] == pytest.approx(primary["image_auroc"])
    assert summary["primary_score"] == results["primary_score"]

    # the run's pictures went to W&B as images, with the files in the offline run
    images = [items(r, "history") for r in records if r.WhichOneof("record_type") == "history"
              and "test/figures/_type" in items(r, "history")]
    assert len(images) == 1 and images[0]["test/figures/count"] == 5
    (run_dir,) = (tmp_path / "wandb").glob("offline-run-*")
    assert len(list((run_dir / "files" / "media" / "images").rglob("*.png"))) == 5


def test_csv_logger_writes_train_val_and_test_metrics(fast_cfg, tmp_path):
    _, results = train(fast_cfg("logger=csv"))
    with open(tmp_path / "csv" / "metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = set(rows[0])
    assert {"train/loss_epoch", "val/loss", "val/loss_best", "test/image_auroc"} <= columns
    logged = [float(r["test/image_auroc"]) for r in rows if r["test/image_auroc"]]
    assert logged == [pytest.approx(results["scores"][results["primary_score"]]["image_auroc"])]


def test_tensorboard_logger_writes_event_files(fast_cfg, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, results = train(fast_cfg("logger=tensorboard"))
    scalars: dict[str, list[float]] = {}
    for events in sorted((tmp_path / "tensorboard").glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend(e.value for e in accumulator.Scalars(tag))
    assert {"val/loss", "test/image_auroc"} <= set(scalars)
    logged = scalars["test/image_auroc"][-1]
    assert logged == pytest.approx(results["scores"][results["primary_score"]]["image_auroc"])


def test_rich_progress_bar_is_used_unless_bars_are_off(compose_cfg):
    import hydra
    from lightning.pytorch.callbacks import RichProgressBar

    cfg = compose_cfg()
    names = [hydra.utils.get_class(c._target_) for c in cfg.callbacks.values()]
    assert RichProgressBar in names
    _, results = train(compose_cfg("debug=fast", "data.n_train=40", "data.n_val=20",
                                   "data.n_test_normal=20", "data.n_test_anomalous=20"))
    assert results is not None  # enable_progress_bar=false with the callback listed: no clash
