"""The command-line apps' errors through real subprocesses: a wrong config key, value, data
path or checkpoint prints its message alone (no traceback, no Python repr) and exits with 2;
a predict that scores nothing exits with 1. The processes run side by side. The hints for
unknown keys are checked directly (key_hint)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, make_mvtec

from anomalib_lite.cli import key_hint

CASES = {
    # name: (app, arguments, expected exit status, fragments of stderr)
    "typo": ("train", ["trainer.max_epoch=1"], 2,
             ["Error: cannot override trainer.max_epoch: trainer has no key 'max_epoch'. "
              "Did you mean trainer.max_epochs"]),
    "no_root": ("train", ["data=bottle"], 2,
                ["Error: data.root is not set (it is null).\nExpected the MVTec AD layout:",
                 "data.root=<path>"]),
    "no_category": ("train", ["data=pill", "data.root={mvtec}"], 2,
                    ["Error: category folder", "pill not found (categories present in",
                     "['bottle']"]),
    "resume_from_nothing": ("train", ["ckpt_path={tmp}/missing.ckpt"], 2,
                            ["Error: ckpt_path='", "missing.ckpt': checkpoint file not found",
                             "checkpoints/last.ckpt"]),
    "predict_no_ckpt": ("predict", ["ckpt={tmp}/nothing.ckpt", "input={tmp}"], 2,
                        ["Error: ckpt='", "nothing.ckpt': checkpoint file not found"]),
    "predict_nothing_readable": ("predict", ["ckpt={ckpt}", "input={junk}"], 1,
                                 ["Error: none of the 2 input file(s) could be scored"]),
}


@pytest.fixture(scope="module")
def finished(trained_run, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Every case run once, all processes at the same time; ``{name: (result, run dir)}``."""
    tmp = tmp_path_factory.mktemp("cli")
    mvtec = make_mvtec(tmp / "mvtec")
    junk = tmp / "junk"
    junk.mkdir()
    (junk / "a.png").write_bytes(b"not an image")
    (junk / "notes.txt").write_text("not an image either")
    values = {"tmp": tmp, "mvtec": mvtec, "junk": junk, "ckpt": trained_run / "model.ckpt"}
    env = {k: v for k, v in os.environ.items() if k not in ("MVTEC_ROOT", "HYDRA_FULL_ERROR")}
    running = {}
    for name, (app, args, _, _) in CASES.items():
        run_dir = tmp / name
        cmd = [sys.executable, "-m", f"anomalib_lite.{app}",
               *(a.format(**values) for a in args), "debug=fast" if app == "train" else "",
               f"hydra.run.dir={run_dir}"]
        running[name] = (subprocess.Popen([c for c in cmd if c], cwd=REPO_ROOT, env=env,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                          text=True), run_dir)
    done = {}
    for name, (proc, run_dir) in running.items():
        out, err = proc.communicate(timeout=300)
        done[name] = (subprocess.CompletedProcess(proc.args, proc.returncode, out, err), run_dir)
    return done


@pytest.mark.parametrize("name", list(CASES))
def test_errors_read_as_messages(finished, name):
    proc, _ = finished[name]
    _, _, status, fragments = CASES[name]
    assert proc.returncode == status, proc.stderr[-3000:]
    for fragment in fragments:
        assert fragment in proc.stderr, (fragment, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr and "\\n" not in proc.stderr  # no Python repr
    assert "Error in call to target" not in proc.stderr  # Hydra's wrapper is left out
    assert "To append to your config use +" not in proc.stderr  # advice that then fails


def test_a_predict_that_scores_nothing_lists_why(finished):
    proc, run_dir = finished["predict_nothing_readable"]
    assert proc.stdout.count("failed cannot read image") == 2
    assert (run_dir / "predictions.csv").read_text().count(",failed,") == 2


def test_an_error_inside_a_run_is_in_its_log_and_results(finished):
    _, run_dir = finished["no_category"]
    assert "category folder" in (run_dir / "train.log").read_text()
    assert '"status": "failed"' in (run_dir / "results.json").read_text()


@pytest.mark.parametrize(("key", "hint"), [
    ("trainer.max_epoch", "trainer has no key 'max_epoch'. Did you mean trainer.max_epochs or "
                          "trainer.min_epochs?"),
    ("trainr.max_epochs", "the config has no key 'trainr'. Did you mean trainer.max_epochs?"),
    ("data.nothing_like_it", "data has no key 'nothing_like_it'; its keys are a, batch_size"),
    ("model.optimizer.weight_decy", "model.optimizer has no key 'weight_decy'. Did you mean "
                                    "model.optimizer.weight_decay?"),
    ("model.net.loss.l1", "model.net.loss is ${loss}: it repeats loss, so it cannot be set on "
                          "its own; set loss.l1=... instead"),
    ("trainer.max_epochs", None),
])
def test_key_hints(key, hint):
    tree = {"trainer": {"max_epochs": 1, "min_epochs": 1}, "train": True,
            "data": {"a": 1, "batch_size": 2}, "loss": {"l1": 1.0},
            "model": {"net": {"loss": "${loss}"}, "optimizer": {"_target_": "torch.optim.Adam",
                                                                "lr": 0.1, "weight_decay": 0}}}
    assert key_hint(tree, key) == hint
