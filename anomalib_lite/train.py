"""Train, validate and test a model from the Hydra config: ``python -m anomalib_lite.train``.

Returns the value of ``optimized_metric`` (a validation metric) for Hydra sweepers.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, ProgressBar
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from anomalib_lite.deploy.checkpoint import load_model
from anomalib_lite.results import (
    build_results,
    failure_results,
    headline,
    print_summary,
    write_results,
    write_scores_csv,
)
from anomalib_lite.utils.checks import ConfigError
from anomalib_lite.utils.instantiate import allow_packages

CONFIG_DIR = str(Path(__file__).resolve().parents[1] / "conf")
log = logging.getLogger(__name__)


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group of named objects (callbacks, loggers)."""
    if not group:
        return []
    return [hydra.utils.instantiate(c) for c in group.values() if c and "_target_" in c]


def build_callbacks(cfg: DictConfig) -> list[Any]:
    """The configured callbacks; early stopping only where the model monitors a metric."""
    callbacks = []
    for name, c in (cfg.get("callbacks") or {}).items():
        if not c or "_target_" not in c:
            continue
        if c.get("monitor", "") is None and hydra.utils.get_class(c._target_) is EarlyStopping:
            log.info("callbacks.%s left out: the model monitors no metric (model.monitor)", name)
            continue
        callbacks.append(hydra.utils.instantiate(c))
    if not cfg.trainer.get("enable_progress_bar", True):  # Lightning refuses both at once
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    return callbacks


def build_model(cfg: DictConfig) -> pl.LightningModule:
    """A new model from ``cfg.model``, or with ``train=false`` the one in ``ckpt_path``.

    A checkpoint is rebuilt from its own hyper-parameters, so its scores and thresholds
    are the ones it was validated with, whatever the current config says.
    """
    if cfg.get("train", True):
        return hydra.utils.instantiate(cfg.model, _recursive_=False)
    if not cfg.get("ckpt_path"):
        raise ConfigError("train=false tests a trained model: set ckpt_path=<path to .ckpt>")
    return load_model(cfg.ckpt_path, hydra.utils.get_class(cfg.model._target_), "ckpt_path")


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Fit and test as configured. Returns ``(metrics after fit, results or None)``."""
    if cfg.get("torch_threads"):
        torch.set_num_threads(int(cfg.torch_threads))
    allow_packages(cfg.get("allowed_packages") or [])
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    # plain containers: datamodule hyper-parameters go into checkpoints (weights_only)
    datamodule: pl.LightningDataModule = hydra.utils.instantiate(cfg.data, _convert_="all")
    model = build_model(cfg)
    callbacks = build_callbacks(cfg)
    loggers = _instantiate_all(cfg.get("logger"))
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks,
                                                  logger=loggers or False)
    run_config = OmegaConf.to_container(cfg, resolve=True)
    for logger in loggers:  # the whole resolved run config, beside the model's hparams
        logger.log_hyperparams({"run": run_config})

    training = cfg.get("train", True)
    start = time.perf_counter()
    if training:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"),
                    weights_only=True)
    fit_time = time.perf_counter() - start
    fit_metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}

    if not cfg.get("test", True):
        return fit_metrics, None
    if training:  # test the best checkpoint (the final weights without checkpointing)
        checkpoint = trainer.checkpoint_callback
        best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
        test_ckpt = best or None
    else:  # build_model already loaded ckpt_path
        best, test_ckpt = str(cfg.ckpt_path), None
    start = time.perf_counter()
    trainer.test(model, datamodule=datamodule, ckpt_path=test_ckpt, weights_only=True)
    test_time = time.perf_counter() - start
    train_info = {"epochs": trainer.current_epoch, "global_step": trainer.global_step,
                  "val_loss_best": fit_metrics.get("val/loss_best"),
                  "best_checkpoint": best or None, "wall_time_s": fit_time}
    results = build_results(model.test_results, train_info, test_time, run_config,
                            run_info(trainer))
    # the deployable model: best weights, thresholds, normalization and fitted KDE
    trainer.save_checkpoint(output_dir / "model.ckpt", weights_only=True)
    path = None
    if trainer.is_global_zero:
        write_scores_csv(output_dir / "scores.csv", model.test_rows)
        path = write_results(output_dir / "results.json", results)
    try:
        if path is not None:
            print_summary(results, path)
        finish_loggers(loggers, results)
    except Exception as error:  # the results on disk are complete: never mark them failed
        raise ReportingError(f"the run's results are complete in {output_dir}, but reporting "
                             f"them failed: {error}", fit_metrics) from error
    return fit_metrics, results


class ReportingError(RuntimeError):
    """Printing or logging failed after ``results.json`` was written (it stays completed)."""

    def __init__(self, message: str, fit_metrics: dict[str, Any]) -> None:
        super().__init__(message)
        self.fit_metrics = fit_metrics


def finish_loggers(loggers: list[Any], results: dict[str, Any]) -> None:
    """Put the headline results in W&B's run summary and close the run (flushes offline)."""
    wandb_loggers = [lg for lg in loggers if isinstance(lg, WandbLogger)]
    top = headline(results)
    for logger in wandb_loggers:
        logger.experiment.summary.update({
            "primary_score": top["primary_score"], "image_auroc": top["image_auroc"],
            **{f"pixel/{k}": top[k] for k in ("pixel_auroc", "aupro")}})
    if wandb_loggers:
        import wandb

        wandb.finish()


def run_info(trainer: pl.Trainer | None = None) -> dict[str, Any]:
    """Which Hydra choices and overrides made this run, and the process that wrote it."""
    info: dict[str, Any] = {"status": "completed"}
    if HydraConfig.initialized():
        hydra_cfg = HydraConfig.get()
        info["choices"] = {k: v for k, v in hydra_cfg.runtime.choices.items()
                           if not k.startswith("hydra")}
        info["overrides"] = list(hydra_cfg.overrides.task)
        info["job_num"] = hydra_cfg.job.get("num")
    if trainer is not None:
        info["world_size"], info["rank"] = trainer.world_size, trainer.global_rank
    return info


def _in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def record_failure(cfg: DictConfig, error: BaseException) -> Path | None:
    """Write ``results.json`` with ``run.status: failed``, the error and its traceback
    (on rank 0 only; other ranks return None)."""
    if rank_zero_only.rank != 0:
        return None
    try:
        output_dir = Path(cfg.paths.output_dir)
    except Exception:  # the path itself may be what failed to resolve
        if not HydraConfig.initialized():
            return None
        output_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception:
        config = OmegaConf.to_container(cfg, resolve=False)
    info = {**run_info(), "status": "failed"}
    return write_results(output_dir / "results.json", failure_results(error, config, info))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train and test; return ``optimized_metric`` to a sweeper.

    A failing job writes ``results.json`` with status ``failed``; in a multirun it then
    returns NaN (a failed trial) so that the other jobs still run, else it re-raises.
    """
    try:
        fit_metrics, _ = train(cfg)
    except ReportingError as error:
        if not _in_multirun():
            raise
        log.exception("job completed, but reporting failed; the sweep goes on")
        fit_metrics = error.fit_metrics
    except Exception as error:
        path = record_failure(cfg, error)
        if not _in_multirun():
            raise
        log.exception("job failed (recorded in %s); the sweep goes on", path)
        return math.nan
    metric = cfg.get("optimized_metric")
    if metric is None or not cfg.get("train", True):
        return None
    if metric not in fit_metrics:
        raise KeyError(f"optimized_metric={metric!r} was not logged; logged metrics: "
                       f"{sorted(fit_metrics)}")
    return fit_metrics[metric]


if __name__ == "__main__":
    main()
