"""Faults through the real CLI: Ctrl-C and SIGTERM mid-training are recorded, and a run killed
with SIGKILL resumes into its own directory with its whole history."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO_ROOT, TINY_SPRITES

# an open-ended fit of tiny epochs, so that a signal lands mid-training
ENDLESS = ("debug=fast", *TINY_SPRITES, "trainer.max_epochs=1000", "trainer.limit_val_batches=1",
           "callbacks.early_stopping=null", "callbacks.visual_outputs=null")


def start(run_dir: Path, *overrides: str) -> subprocess.Popen:
    """The train CLI in the background; SIGINT raises KeyboardInterrupt in it even when this
    test runs with SIGINT ignored (a background job of a non-interactive shell)."""
    cmd = [sys.executable, "-m", "anomalib_lite.train", *overrides, f"hydra.run.dir={run_dir}"]
    return subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def wait_for_checkpoint(proc: subprocess.Popen, run_dir: Path, timeout: float = 180) -> Path:
    """``last.ckpt`` once the first epoch has ended (the process still training)."""
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + timeout
    while not last.is_file():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"no checkpoint while training (rc {proc.returncode}):\n{out[-2000:]}"
                        f"\n{err[-3000:]}")
        time.sleep(0.05)
    time.sleep(0.3)  # into a later epoch
    assert proc.poll() is None, "the fit ended before the signal"
    return last


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_training_is_recorded_with_the_resume_command(tmp_path, sig):
    run_dir = tmp_path / "run"
    proc = start(run_dir, *ENDLESS)
    last = wait_for_checkpoint(proc, run_dir)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, (proc.returncode, err[-3000:])
    results = json.loads((run_dir / "results.json").read_text())
    assert results["run"]["status"] == "interrupted"
    record = results["interrupted"]
    assert record["signal"] == sig.name
    assert Path(record["last_checkpoint"]) == last and last.is_file()
    assert f"ckpt_path={last}" in record["resume"] and f"hydra.run.dir={run_dir}" in \
        record["resume"]
    assert "trainer.max_epochs=1000" in record["resume"]
    assert results["config"]["trainer"]["max_epochs"] == 1000
    assert f"Interrupted: interrupted by {sig.name}" in err and record["resume"] in err
    assert "Traceback" not in err
    assert f"interrupted by {sig.name}" in (run_dir / "train.log").read_text()


def csv_epochs(run_dir: Path, column: str) -> list[int]:
    with (run_dir / "csv" / "metrics.csv").open(newline="") as handle:
        return sorted(int(float(r["epoch"])) for r in csv.DictReader(handle) if r.get(column))


def test_a_killed_run_resumes_into_its_directory_with_its_whole_history(tmp_path):
    run_dir = tmp_path / "run"
    proc = start(run_dir, *ENDLESS)
    wait_for_checkpoint(proc, run_dir)
    proc.kill()  # SIGKILL: nothing of the process runs after it
    proc.communicate(timeout=60)
    assert not (run_dir / "results.json").exists()
    before = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    killed_at, state = before["epoch"], before["callbacks"]["ResumeState"]
    assert killed_at >= 0 and [e["epoch"] for e in state["history"]] == \
        list(range(killed_at + 1))
    assert set(csv_epochs(run_dir, "val/loss")) >= set(range(killed_at + 1))

    epochs = killed_at + 3
    overrides = [o for o in ENDLESS if not o.startswith("trainer.max_epochs")]
    resumed = start(run_dir, *overrides, f"trainer.max_epochs={epochs}",
                    f"ckpt_path={run_dir}/checkpoints/last.ckpt")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    # every epoch once in the CSV: those before the kill kept, the resumed ones appended
    assert csv_epochs(run_dir, "val/loss") == list(range(epochs))
    assert csv_epochs(run_dir, "train/loss_epoch") == list(range(epochs))
    after = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    # the module's history (training_curves.png draws it) holds the epochs before the kill
    history = after["callbacks"]["ResumeState"]["history"]
    assert [e["epoch"] for e in history] == list(range(epochs))
    results = json.loads((run_dir / "results.json").read_text())
    assert results["run"]["status"] == "completed" and results["train"]["epochs"] == epochs
    assert results["train"]["resumed_from"] == f"{run_dir}/checkpoints/last.ckpt"
    assert results["train"]["wall_time_s"] > state["fit_wall_time_s"] > 0
