"""A non-editable install: the wheel carries the configs, and the main job runs from it in a
fresh virtual environment, from a directory outside the checkout."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import REPO_ROOT, TINY_SPRITES


def test_every_package_is_in_the_wheel_list():
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    listed = set(tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
                 ["packages"])
    found = {".".join(p.parent.relative_to(REPO_ROOT).parts)
             for p in (REPO_ROOT / "anomalib_lite").rglob("__init__.py")}
    assert found | {"anomalib_lite.conf"} == listed


def copy_sources(destination: Path) -> Path:
    """What the wheel is built from: pyproject.toml, the README, the package and conf/."""
    destination.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, destination / name)
    for name in ("anomalib_lite", "conf"):
        shutil.copytree(REPO_ROOT / name, destination / name,
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return destination


def test_the_main_job_runs_from_a_wheel_outside_the_checkout(tmp_path):
    source = copy_sources(tmp_path / "source")
    dist = tmp_path / "dist"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(dist), str(source)],
                           capture_output=True, text=True, timeout=300)
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = dist.glob("anomalib_lite-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "anomalib_lite/conf/train.yaml" in names
    assert "anomalib_lite/conf/model/recipes/seed000.yaml" in names

    # a fresh venv whose own site-packages get the wheel; torch and the other dependencies
    # come from this environment's site-packages, listed after it (no downloads), without
    # running its .pth files (an editable install of the checkout would hook in there)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig."
                                   "get_paths()['purelib'])"], capture_output=True, text=True,
                                  check=True).stdout.strip())
    ours = [p for p in {*site.getsitepackages(), sysconfig.get_paths()["purelib"]}
            if Path(p).is_dir()]
    (purelib / "dependencies.pth").write_text("\n".join(ours) + "\n")
    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install",
                              "--no-deps", "--no-index", "-q", str(wheel)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PROJECT_ROOT")}
    where = subprocess.run([str(python), "-c", "import anomalib_lite; print(anomalib_lite."
                            "__file__)"], cwd=elsewhere, env=env, capture_output=True,
                           text=True, check=True).stdout.strip()
    assert Path(where).is_relative_to(purelib), where
    run = subprocess.run([str(python), "-m", "anomalib_lite.train", "debug=fast", *TINY_SPRITES,
                          "logger=none", "callbacks=none"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    (results,) = (elsewhere / "outputs" / "train" / "runs").glob("*/results.json")
    assert '"status": "completed"' in results.read_text()
    assert "Test results" in run.stdout
