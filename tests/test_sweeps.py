"""Hydra multiruns through the real CLI: sweeps, a failing job, the aggregated tables, Optuna,
the joblib launcher, and the experiment and launcher configs."""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO_ROOT, TINY_SPRITES, make_mvtec
from PIL import Image

from anomalib_lite.aggregate import aggregate, find_jobs, main

FAST = ("debug=fast", "logger=none", "callbacks=none")


def run_cli(*args: str, env: dict[str, str] | None = None,
            timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "anomalib_lite.train", *args]
    base = {k: v for k, v in os.environ.items() if k != "MVTEC_ROOT"}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**base, "PYTHONUNBUFFERED": "1", **(env or {})})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def results_of(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text())
            for p in sweep.glob("*/results.json")}


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def mvtec_two(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mvtec")
    for category in ("bottle", "pill"):
        make_mvtec(root, category)
    return root


@pytest.fixture(scope="module")
def sweep_2x2x2(mvtec_two, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """The README's sweep, ``-m model=baseline,unet data=bottle,pill data.root=<root>``, with
    a loss sweep and fast settings: the root reaches the datasets that the base config does
    not compose (it starts from data=sprites), without MVTEC_ROOT."""
    sweep = tmp_path_factory.mktemp("sweep") / "multirun"
    proc = run_cli("-m", "model=baseline,unet", "data=bottle,pill", f"data.root={mvtec_two}",
                   "loss=l1,ssim", *FAST, f"hydra.sweep.dir={sweep}")
    return sweep, proc


def test_sweep_runs_every_combination_with_its_own_results(sweep_2x2x2, mvtec_two):
    sweep, _ = sweep_2x2x2
    results = results_of(sweep)
    assert len(results) == 8
    combos = {(r["run"]["choices"]["model"], r["run"]["choices"]["data"],
               r["run"]["choices"]["loss"]) for r in results.values()}
    assert combos == set(itertools.product(("baseline", "unet"), ("bottle", "pill"),
                                           ("l1", "ssim")))
    for r in results.values():
        assert r["run"]["status"] == "completed"
        assert r["config"]["data"]["category"] == r["run"]["choices"]["data"]
        assert r["config"]["data"]["root"] == str(mvtec_two)
        assert r["config"]["loss"][r["run"]["choices"]["loss"]] == 1.0
        assert r["scores"]["l1_mean"]["n_anomalous"] == 2


def test_sweep_tables_hold_the_jobs_metrics(sweep_2x2x2):
    sweep, proc = sweep_2x2x2
    out = sweep / "aggregate"
    results = results_of(sweep)
    per_category = [r for r in read_csv(out / "per_category.csv") if r["score"] == "l1_mean"]
    assert len(per_category) == 8
    for row in per_category:  # each cell is the job's own AUROC
        model, loss = (part.split("=")[1] for part in row["variant"].split())
        (job,) = [r for r in results.values() if r["run"]["choices"]["model"] == model
                  and r["run"]["choices"]["loss"] == loss
                  and r["run"]["choices"]["data"] == row["category"]]
        assert float(row["image_auroc"]) == pytest.approx(
            job["scores"]["l1_mean"]["image_auroc"])
    overall = {(r["variant"], r["score"]): r for r in read_csv(out / "overall.csv")}
    mean = sum(r["scores"]["l1_top1"]["image_pr_auc"] for r in results.values()
               if r["run"]["choices"]["model"] == "unet"
               and r["run"]["choices"]["loss"] == "ssim") / 2
    assert float(overall[("model=unet loss=ssim", "l1_top1")]["image_pr_auc"]) == \
        pytest.approx(mean)
    summary = (out / "summary.md").read_text()
    assert "| category | model=baseline loss=l1 | model=baseline loss=ssim | model=unet loss=l1 " \
           "| model=unet loss=ssim |" in summary
    assert "8 jobs: 8 completed" in summary
    assert "## Per-category image AUROC (l1_mean)" in proc.stdout  # printed at the end
    with Image.open(out / "comparison.png") as image:
        assert image.size[0] >= 600 and len(set(image.convert("L").getdata())) > 10
    assert len(read_csv(out / "results.csv")) == 8 * len(results["0"]["scores"])


def test_a_failing_job_is_recorded_and_the_sweep_goes_on(mvtec_two, tmp_path):
    sweep = tmp_path / "multirun"  # hazelnut is not on disk: its job fails first
    proc = run_cli("-m", "model=baseline", "data=hazelnut,bottle", *FAST,
                   f"hydra.sweep.dir={sweep}", env={"MVTEC_ROOT": str(mvtec_two)})
    results = results_of(sweep)
    failed, done = results["0"], results["1"]
    assert failed["run"]["status"] == "failed"
    assert failed["error"]["type"] == "DatasetLayoutError"
    assert "hazelnut" in failed["error"]["message"] and "Traceback" in \
        failed["error"]["traceback"]
    assert done["run"]["status"] == "completed" and done["scores"]["l1_mean"]["image_auroc"] \
        is not None
    summary = (sweep / "aggregate" / "summary.md").read_text()
    assert "2 jobs: 1 completed, 1 not completed" in summary
    assert "| hazelnut | failed | DatasetLayoutError: category folder" in summary
    assert "job failed" in proc.stderr + proc.stdout


def test_aggregator_reports_killed_and_unreadable_jobs(sweep_2x2x2, tmp_path, capsys):
    sweep, _ = sweep_2x2x2
    copy = tmp_path / "sweep"
    for job in ("0", "1", "2"):
        (copy / job / ".hydra").mkdir(parents=True)
        for name in ("config.yaml", "hydra.yaml"):
            (copy / job / ".hydra" / name).write_text(
                (sweep / job / ".hydra" / name).read_text())
    (copy / "0" / "results.json").write_text((sweep / "0" / "results.json").read_text())
    (copy / "2" / "results.json").write_text('{"truncated": ')
    jobs = {job.path.name: job for job in find_jobs(copy)}
    assert [jobs[n].status for n in ("0", "1", "2")] == ["completed", "missing", "unreadable"]
    assert jobs["1"].choices["model"] == "baseline"  # from .hydra/hydra.yaml
    assert "killed" in jobs["1"].error and "2/results.json" in jobs["2"].error
    summary = aggregate(copy)
    assert "3 jobs: 1 completed, 2 not completed" in summary["markdown"]
    main([str(copy), "--out", str(tmp_path / "tables"), "--score", "l1_top1"])
    assert "## Per-category image AUROC (l1_top1)" in capsys.readouterr().out
    assert (tmp_path / "tables" / "comparison.png").is_file()
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nowhere")])


def test_optuna_search_returns_the_validation_metric_of_each_trial(tmp_path):
    sweep = tmp_path / "optuna"
    run_cli("hparams_search=lr_optuna", "hydra.sweeper.n_trials=3",
            "hydra.sweeper.sampler.n_startup_trials=2", *FAST, *TINY_SPRITES,
            f"hydra.sweep.dir={sweep}")
    results = results_of(sweep)
    assert len(results) == 3
    lrs = {r["config"]["model"]["optimizer"]["lr"] for r in results.values()}
    assert len(lrs) == 3 and all(1e-4 <= lr <= 1e-2 for lr in lrs)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    losses = [r["train"]["val_loss_best"] for r in results.values()]
    assert best["best_value"] == pytest.approx(min(losses), rel=1e-6)


def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path):
    sweep = tmp_path / "joblib"
    run_cli("-m", "launcher=joblib", "loss=mse,l1", *FAST, *TINY_SPRITES,
            f"hydra.sweep.dir={sweep}")
    results = results_of(sweep)
    assert {r["run"]["choices"]["loss"] for r in results.values()} == {"mse", "l1"}
    assert all(r["config"]["torch_threads"] == 1 for r in results.values())
    assert (sweep / "aggregate" / "summary.md").is_file()


def test_experiment_configs_reproduce_the_seeds(compose_cfg):
    seed000 = compose_cfg("experiment=seed000")
    assert seed000.model.net.network._target_.endswith("BaselineAE")
    assert seed000.data.category == "bottle" and seed000.data.image_size == 128
    assert seed000.loss.l1 == 1.0 and seed000.score.primary == "l1_mean"
    assert seed000.trainer.precision == "bf16-mixed" and seed000.task_name == "seed000"
    unet = compose_cfg("experiment=seed000", "model=unet")
    assert unet.model.net.network._target_.endswith("UNetAE")
    seed003 = compose_cfg("experiment=seed003")
    assert seed003.model.net.network._target_.endswith("SpriteAE")
    assert seed003.score.primary == "l2_mean" and seed003.score.kde.enabled


def test_sweep_launcher_and_trainer_configs_compose():
    from hydra import compose, initialize_config_dir

    from anomalib_lite.train import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        seed000 = compose("train", ["experiment=seed000"], return_hydra_config=True)
        slurm = compose("train", ["launcher=slurm", "trainer=ddp"], return_hydra_config=True)
        optuna = compose("train", ["hparams_search=lr_optuna"], return_hydra_config=True)
        ddp_cpu = compose("train", ["trainer=ddp_cpu"])
    assert seed000.hydra.sweeper.params == {"model": "baseline,unet",
                                            "data": "bottle,hazelnut,cable,tile"}
    assert slurm.hydra.launcher._target_.endswith("SlurmLauncher")
    assert slurm.trainer.strategy == "ddp" and slurm.trainer.sync_batchnorm
    assert optuna.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert optuna.optimized_metric.startswith("val/")
    assert ddp_cpu.trainer.accelerator == "cpu" and not ddp_cpu.trainer.sync_batchnorm


def test_a_sweep_over_data_category_is_a_sweep_over_datasets(tmp_path):
    scores = {"l1_mean": {"image_auroc": 0.75, "image_pr_auc": 0.5}}
    for i, (model, category) in enumerate(itertools.product(("baseline", "unet"),
                                                              ("bottle", "cable"))):
        run = {"status": "completed", "choices": {"model": model, "data": "mvtec"},
               "overrides": [f"model={model}", f"data.category={category}"]}
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "results.json").write_text(json.dumps(
            {"run": run, "primary_score": "l1_mean", "scores": scores,
             "config": {"data": {"category": category}}}))
    summary = aggregate(tmp_path)
    assert summary["variants"] == ["model=baseline", "model=unet"]
    overall = {r["variant"]: r for r in summary["overall"]}
    assert overall["model=unet"]["n_categories"] == 2


def test_an_interrupted_job_is_named_as_such(tmp_path):
    (tmp_path / "0").mkdir()
    record = {"schema_version": 3, "run": {"status": "interrupted", "choices": {"data": "pill"}},
              "interrupted": {"signal": "SIGTERM", "last_checkpoint": None, "resume": None},
              "config": {"data": {"category": "pill"}}}
    (tmp_path / "0" / "results.json").write_text(json.dumps(record))
    (job,) = find_jobs(tmp_path)
    assert (job.status, job.error, job.scores) == ("interrupted", "interrupted by SIGTERM", {})
    assert "1 jobs: 0 completed, 1 not completed" in aggregate(tmp_path)["markdown"]
