"""Train, validate and test a model from the Hydra config: ``python -m anomalib_lite.train``.

Returns the value of ``optimized_metric`` (a validation metric) for Hydra sweepers.

A run stopped by Ctrl-C (SIGINT) or SIGTERM (a scheduler, a pre-emption) writes
``results.json`` with ``run.status: interrupted``, its last checkpoint and the command that
resumes it, and exits with 128 + the signal's number. Resuming (``ckpt_path=<run>/
checkpoints/last.ckpt`` into the same ``hydra.run.dir``) continues the run's metrics CSV,
training curves and fit wall time.
"""

from __future__ import annotations

import logging
import math
import shlex
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

import hydra
import lightning.pytorch as pl
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint, ProgressBar
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from torch import nn

from anomalib_lite.callbacks.resume_state import ResumeState
from anomalib_lite.cli import (
    CONFIG_DIR,
    exit_on_message_error,
    exit_with_message,
    message_error,
    run_app,
    set_torch_threads,
    start_run,
)
from anomalib_lite.data.preprocess import Preprocessing, format_size
from anomalib_lite.deploy.checkpoint import CheckpointError, load_model
from anomalib_lite.results import (
    build_results,
    failure_results,
    headline,
    interruption_results,
    print_summary,
    results_config,
    write_results,
    write_scores_csv,
)
from anomalib_lite.utils.checks import ConfigError
from anomalib_lite.utils.instantiate import allow_packages
from anomalib_lite.utils.logs import silence_known_noise

__all__ = ["CONFIG_DIR", "RunInterrupted", "main", "train"]
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


def check_input_size(model: pl.LightningModule, datamodule: pl.LightningDataModule) -> None:
    """Run the model's network once on a zero batch of the data's image size and channels,
    so that a size it cannot take fails now, naming the network and the size, instead of
    after the dataset is loaded. Models without a ``network`` take any size."""
    preprocessing = getattr(datamodule, "preprocessing", None)
    network = getattr(getattr(model, "net", None), "network", None)
    if not isinstance(preprocessing, Preprocessing):
        return
    p = preprocessing
    crop = getattr(model, "train_crop", None)
    if crop is not None and (crop[0] > p.height or crop[1] > p.width):
        raise ConfigError(f"model.train_crop={list(crop)} is larger than the images "
                          f"(data.image_size={format_size(p.image_size)}): set a smaller "
                          "crop or a larger data.image_size")
    if not isinstance(network, nn.Module):
        return
    sizes = {"data.image_size": (p.height, p.width)}
    if crop is not None:
        sizes["model.train_crop"] = tuple(crop)
    was_training = network.training
    network.eval()
    try:
        for key, (height, width) in sizes.items():
            zeros = torch.zeros(1, p.channels, height, width)
            try:
                with torch.no_grad():
                    reconstruction = network(zeros)
                    if callable(getattr(network, "segment", None)):
                        network.segment(zeros, reconstruction)
            except (ValueError, RuntimeError) as error:
                whole = key == "data.image_size"
                size = format_size(p.image_size) if whole else list(crop)
                what = "the data's images" if whole else "the training crops"
                raise ConfigError(
                    f"the model's network {type(network).__name__} cannot take {what} "
                    f"({key}={size}: {p.channels} x {height} x {width}): {error}") from None
    finally:
        network.train(was_training)


def check_validation_schedule(cfg: DictConfig) -> None:
    """Refuse a schedule under which validation never runs while a validation metric is
    monitored (the best checkpoint, early stopping and the sweep's metric need it)."""
    trainer = cfg.get("trainer") or {}
    every, epochs = trainer.get("check_val_every_n_epoch"), trainer.get("max_epochs")
    metric = OmegaConf.select(cfg, "model.monitor.metric", default=None)
    if not (isinstance(every, int) and isinstance(epochs, int) and 0 < epochs < every):
        return
    if metric is None or not str(metric).startswith("val/"):
        return
    raise ConfigError(
        f"trainer.check_val_every_n_epoch={every} > trainer.max_epochs={epochs}: validation "
        f"never runs, so the monitored {metric!r} is never logged. Set "
        f"trainer.check_val_every_n_epoch={epochs} (or fewer) or raise trainer.max_epochs")


def resume_epoch(path: Any, key: str = "ckpt_path") -> int:
    """The epoch a full training checkpoint was saved at; raises naming ``key``."""
    file = Path(str(path)).expanduser()
    example = f"{key}=outputs/train/runs/<run>/checkpoints/last.ckpt"
    if not file.is_file():
        raise CheckpointError(f"{key}={str(path)!r}: checkpoint file not found (to resume a "
                              f"run, pass one of its checkpoints, e.g. {example})")
    try:
        checkpoint = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as error:
        raise CheckpointError(f"{key}={str(path)!r}: cannot read the checkpoint "
                              f"({type(error).__name__}: {error})") from None
    if not isinstance(checkpoint, dict) or "epoch" not in checkpoint \
            or "optimizer_states" not in checkpoint:
        raise CheckpointError(f"{key}={str(path)!r} is not a training checkpoint (a model.ckpt "
                              f"holds the weights only): resume from {example}, or test it "
                              f"with train=false {key}={path}")
    return int(checkpoint["epoch"])


class RunInterrupted(BaseException):
    """The run was stopped by a signal: SIGINT (Ctrl-C) or SIGTERM."""

    def __init__(self, signal_name: str, last_checkpoint: str | None) -> None:
        self.signal_name, self.last_checkpoint = signal_name, last_checkpoint
        super().__init__(f"interrupted by {signal_name}")

    @property
    def exit_code(self) -> int:
        return 128 + int(getattr(signal, self.signal_name, signal.SIGTERM))


class _Signalled(BaseException):
    """A SIGTERM outside Lightning's trainer calls."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class InterruptGuard:
    """Turns SIGINT and SIGTERM into :class:`RunInterrupted`.

    Inside a trainer call Lightning handles both: Ctrl-C stops at once (its handler then
    exits), SIGTERM at the end of the current batch (``SIGTERMException``). Outside them a
    SIGTERM raises here; Python raises ``KeyboardInterrupt`` for SIGINT.
    """

    def __init__(self) -> None:
        self.received: str | None = None
        self.in_trainer = False
        self.trainer: pl.Trainer | None = None

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum).name
        if not self.in_trainer:
            raise _Signalled(self.received)

    @contextmanager
    def installed(self) -> Iterator[InterruptGuard]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGTERM, self._handler)
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)

    def call(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A trainer call (fit, test); a signal that arrived on its last batch stops after."""
        self.in_trainer = True
        try:
            result = function(*args, **kwargs)
        finally:
            self.in_trainer = False
        if self.received:
            raise _Signalled(self.received)
        return result

    def signal_of(self, error: BaseException) -> str | None:
        """The signal that ``error`` stands for, or None if it is no interruption."""
        if isinstance(error, _Signalled):
            return error.name
        if isinstance(error, SIGTERMException):
            return "SIGTERM"
        if isinstance(error, KeyboardInterrupt):
            return "SIGINT"
        if isinstance(error, SystemExit):  # Lightning exits after handling Ctrl-C
            if self.received:
                return self.received
            if isinstance(error.__context__, KeyboardInterrupt):
                return "SIGINT"
        return None

    def last_checkpoint(self) -> str | None:
        """The newest full checkpoint to resume from (``last.ckpt``), if one was written."""
        callback = self.trainer.checkpoint_callback if self.trainer is not None else None
        candidates = []
        if isinstance(callback, ModelCheckpoint):
            candidates.append(callback.last_model_path)
            if callback.dirpath:
                candidates.append(str(Path(callback.dirpath) / "last.ckpt"))
        return next((c for c in candidates if c and Path(c).is_file()), None)


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Fit and test as configured. Returns ``(metrics after fit, results or None)``.

    Raises :class:`RunInterrupted` when SIGINT (Ctrl-C) or SIGTERM stops the run.
    """
    guard = InterruptGuard()
    with guard.installed():
        try:
            return _train(cfg, guard)
        except BaseException as error:
            name = guard.signal_of(error)
            if name is None:
                raise
            raise RunInterrupted(name, guard.last_checkpoint()) from error


def _train(cfg: DictConfig, guard: InterruptGuard
           ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    silence_known_noise()
    set_torch_threads(cfg)
    allow_packages(cfg.get("allowed_packages") or [])
    if cfg.get("seed") is not None:
        pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir)
    training = cfg.get("train", True)
    resuming = training and cfg.get("ckpt_path") is not None
    if training:
        check_validation_schedule(cfg)
    resumed_epoch = resume_epoch(cfg.ckpt_path) if resuming else None
    # plain containers: datamodule hyper-parameters go into checkpoints (weights_only)
    datamodule: pl.LightningDataModule = hydra.utils.instantiate(cfg.data, _convert_="all")
    model = build_model(cfg)
    check_input_size(model, datamodule)
    callbacks = build_callbacks(cfg)
    resume_state = ResumeState()
    if training:
        callbacks.append(resume_state)
    loggers = _instantiate_all(cfg.get("logger"))
    for logger in loggers:
        if resumed_epoch is not None and hasattr(logger, "resume_at_epoch"):
            logger.resume_at_epoch(resumed_epoch)  # append to the run's metrics
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks,
                                                  logger=loggers or False)
    guard.trainer = trainer
    run_config = results_config(cfg)
    for logger in loggers:  # the whole resolved run config, beside the model's hparams
        logger.log_hyperparams({"run": run_config})

    start = time.perf_counter()
    if training:
        guard.call(trainer.fit, model, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"),
                   weights_only=True)
    # the fit's wall time, resumed runs included (read now: testing a checkpoint restores
    # the callback state saved with it)
    fit_time = resume_state.previous_wall_time_s + time.perf_counter() - start
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
    # verbose=False: the project prints its own tables (print_summary), not Lightning's
    guard.call(trainer.test, model, datamodule=datamodule, ckpt_path=test_ckpt,
               weights_only=True, verbose=False)
    test_time = time.perf_counter() - start
    train_info = {"epochs": trainer.current_epoch, "global_step": trainer.global_step,
                  "val_loss_best": fit_metrics.get("val/loss_best"),
                  "best_checkpoint": best or None,
                  "wall_time_s": fit_time,
                  "resumed_from": str(cfg.ckpt_path) if resuming else None}
    skipped = getattr(datamodule, "skipped", None)
    results = build_results(model.test_results, train_info, test_time, run_config,
                            run_info(trainer),
                            data={"skipped_unreadable": skipped} if skipped else None)
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
        config = results_config(cfg)
    except Exception:
        config = results_config(cfg, resolve=False)
    info = {**run_info(), "status": "failed"}
    return write_results(output_dir / "results.json", failure_results(error, config, info))


def resume_command(cfg: DictConfig, checkpoint: str) -> str:
    """The command that resumes this run from ``checkpoint`` into its own directory."""
    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    kept = [o for o in overrides if not o.lstrip("+~").startswith(("ckpt_path=", "hydra."))]
    return shlex.join(["python", "-m", "anomalib_lite.train", *kept, f"ckpt_path={checkpoint}",
                       f"hydra.run.dir={cfg.paths.output_dir}"])


def record_interruption(cfg: DictConfig, interrupted: RunInterrupted) -> tuple[Path | None, str]:
    """Write ``results.json`` with ``run.status: interrupted`` (rank 0); returns the path and
    the message to show (what stopped the run, how to resume it)."""
    last = interrupted.last_checkpoint
    resume = resume_command(cfg, last) if last else None
    message = f"{interrupted}. " + (f"Resume from the last checkpoint with:\n  {resume}"
                                   if resume else "No checkpoint was saved yet: run it again.")
    if rank_zero_only.rank != 0:
        return None, message
    try:
        config = results_config(cfg)
    except Exception:
        config = results_config(cfg, resolve=False)
    record = {"signal": interrupted.signal_name, "last_checkpoint": last, "resume": resume}
    path = write_results(Path(cfg.paths.output_dir) / "results.json",
                         interruption_results(record, config, run_info()))
    return path, f"{message}\nRecorded in {path}"


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Train and test; return ``optimized_metric`` to a sweeper.

    A failing job writes ``results.json`` with status ``failed``; in a multirun it then
    returns NaN (a failed trial) so that the other jobs still run, else it exits: with the
    message alone and status 2 for an error in the config, the data or a checkpoint. An
    interrupted job writes status ``interrupted`` and exits with 128 + the signal.
    """
    start_run(cfg)
    try:
        fit_metrics, _ = train(cfg)
    except ReportingError as error:
        if not _in_multirun():
            raise
        log.exception("job completed, but reporting failed; the sweep goes on")
        fit_metrics = error.fit_metrics
    except RunInterrupted as interrupted:
        _, message = record_interruption(cfg, interrupted)
        exit_with_message(message, interrupted.exit_code, prefix="Interrupted")
    except Exception as error:
        path = record_failure(cfg, error)
        if not _in_multirun():
            exit_on_message_error(error)
            raise
        shown = message_error(error)
        if shown is None:
            log.exception("job failed (recorded in %s); the sweep goes on", path)
        else:
            log.error("job failed (recorded in %s); the sweep goes on: %s", path, shown)
        return math.nan
    metric = cfg.get("optimized_metric")
    if metric is None or not cfg.get("train", True):
        return None
    if metric not in fit_metrics:
        raise KeyError(f"optimized_metric={metric!r} was not logged; logged metrics: "
                       f"{sorted(fit_metrics)}")
    return fit_metrics[metric]


if __name__ == "__main__":
    run_app(main, "train")
