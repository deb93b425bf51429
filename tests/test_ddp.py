"""DDP for real on this CPU: two processes over gloo, through the CLI (Lightning re-launches
the command for rank 1). The test metrics must equal a single-process run on the same data
and weights, and only rank 0 writes the run's files."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_SPRITES
from test_sweeps import run_cli

DDP_LOG = "train_ddp_process_1.log"  # Hydra's (empty) log of the re-launched rank-1 process


def run_files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*")
            if p.is_file() and ".hydra" not in p.parts}


def test_ddp_two_cpu_processes_match_a_single_process_run(tmp_path):
    tiny = ("debug=fast", *TINY_SPRITES, "data.n_test_normal=21", "model=baseline",
            "data.image_size=32", "logger=csv")  # 41 test images: the sampler pads a repeat
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    proc = run_cli(*tiny, "trainer=ddp_cpu", f"hydra.run.dir={ddp}")
    assert "distributed_backend=gloo" in proc.stdout + proc.stderr
    assert "Starting with 2 processes" in proc.stdout + proc.stderr
    # the same weights, thresholds and KDE, tested by one process
    run_cli(*tiny, "train=false", f"ckpt_path={ddp / 'model.ckpt'}", f"hydra.run.dir={single}")

    a = json.loads((ddp / "results.json").read_text())
    b = json.loads((single / "results.json").read_text())
    assert a["run"]["world_size"] == 2 and a["run"]["rank"] == 0
    assert b["run"]["world_size"] == 1
    assert a["scores"].keys() == b["scores"].keys()
    for name, metrics in a["scores"].items():
        other = b["scores"][name]
        assert metrics["n_normal"] == other["n_normal"] == 21  # padding repeats removed
        for key in ("image_auroc", "image_pr_auc", "threshold", "mean_score_normal"):
            assert metrics[key] == pytest.approx(other[key], rel=1e-6, abs=1e-9), (name, key)
        assert metrics["confusion"] == other["confusion"]
    for key, pixel in a["pixel"].items():
        assert pixel == pytest.approx(b["pixel"][key], rel=1e-6), key
    # one row per image in the same order with the same labels and decisions; the scores
    # equal up to float32 rounding (the two runs use different thread counts, so oneDNN
    # may sum in another order)
    rows_a, rows_b = (list(csv.DictReader((run / "scores.csv").open())) for run in (ddp, single))
    assert len(rows_a) == len(rows_b) == 41
    for ra, rb in zip(rows_a, rows_b, strict=True):
        assert {k: ra[k] for k in ("path", "label", "defect_type", "anomalous")} == \
            {k: rb[k] for k in ("path", "label", "defect_type", "anomalous")}
        for name in a["scores"]:
            assert float(ra[name]) == pytest.approx(float(rb[name]), rel=1e-4, abs=1e-4), name

    # rank 0 wrote everything; rank 1 left only Hydra's log of its own process
    files = run_files(ddp)
    assert {"results.json", "scores.csv", "model.ckpt", "gallery.png", "csv/metrics.csv",
            "checkpoints/last.ckpt"} <= files
    assert files - {DDP_LOG} == run_files(single) | {"training_curves.png", "csv/metrics.csv",
                                                     "checkpoints/last.ckpt",
                                                     "checkpoints/epoch_000.ckpt"}
    ckpt = torch.load(ddp / "model.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["state_dict"]["post_processor.thresholds"].isfinite().all()
