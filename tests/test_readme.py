"""The README's commands, run as a newcomer pastes them (on tiny data, a few steps).

Every ``python -m anomalib_lite.*`` line of the README's bash blocks is run through the CLI
in a subprocess, in order, from a scratch folder holding the README's example folders
(``good/``, ``crack/``, ``my_dataset/``) and with ``MVTEC_ROOT`` pointing at a tiny MVTec
layout. Training commands get ``debug=fast`` and tiny sizes appended (later overrides win).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT, TINY_SPRITES, make_folder_dataset, make_mvtec


def readme_commands() -> list[str]:
    """The README's ``python -m anomalib_lite`` commands (continuation lines joined)."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("python -m anomalib_lite."):
                commands.append(line)
    return commands


def test_the_readme_shows_the_main_commands():
    commands = readme_commands()
    assert "python -m anomalib_lite.train" in commands  # the main job, as is
    for app in ("train -m", "predict", "export"):
        assert any(c.startswith(f"python -m anomalib_lite.{app}") for c in commands), app


def test_every_readme_command_runs(tmp_path: Path):
    work = tmp_path / "work"
    work.mkdir()
    dirs = make_folder_dataset(work / "own")
    (work / "own" / dirs["normal"].name).rename(work / "good")
    (work / "own" / dirs["scratch"].name).rename(work / "crack")
    split = make_mvtec(work, "my_dataset")  # train/good, test/good, test/crack, ground_truth
    assert (split / "my_dataset" / "train" / "good").is_dir()
    mvtec = make_mvtec(tmp_path / "mvtec")
    make_mvtec(mvtec, "pill")
    env = {**os.environ, "MVTEC_ROOT": str(mvtec), "PYTHONUNBUFFERED": "1"}
    for i, command in enumerate(readme_commands()):
        argv = shlex.split(command.replace("$MVTEC_ROOT", str(mvtec)))
        if argv[2] == "anomalib_lite.train":
            argv += ["debug=fast", "data.image_size=32", "logger=none"]
            if "experiment=mvtec_best" in argv:
                argv += ["model.train_crop=16"]  # its 128 px crops of the tiny images
            if not any(a.startswith("data=") for a in argv):
                argv += TINY_SPRITES  # the generated default
            elif "data=folder" in argv and not any(a.startswith("data.root") for a in argv):
                argv += ["data.val_fraction=0.2", "data.test_fraction=0.2"]
        if "-m" in argv:
            argv += [f"hydra.sweep.dir={tmp_path / 'sweep'}"]
        elif not any(a.startswith("hydra.run.dir=") for a in argv):
            argv += [f"hydra.run.dir={tmp_path / 'runs' / str(i)}"]
        proc = subprocess.run([sys.executable, *argv[1:]], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (command, proc.stdout[-2000:], proc.stderr[-3000:])
    assert (work / "outputs" / "quickstart" / "export" / "model.onnx").is_file()
    assert (work / "outputs" / "quickstart" / "predict" / "predictions.csv").is_file()


@pytest.mark.parametrize("path", ["README.md"])
def test_the_readme_names_no_machine_paths_and_stays_short(path):
    text = (REPO_ROOT / path).read_text(encoding="utf-8")
    assert not re.search(r"/work/|/tmp/|/root/", text)
    assert len(text.splitlines()) <= 250
    for link in re.findall(r"\]\(((?:docs|notebooks)/[^)#]+)", text):
        assert (REPO_ROOT / link).exists(), link
