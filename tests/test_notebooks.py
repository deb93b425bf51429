"""The notebooks execute top to bottom on small settings (real kernel, real training)."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
MVTEC = Path(__file__).resolve().parents[2] / "shared" / "data" / "mvtec"


def run_notebook(name: str, tmp_path: Path, monkeypatch, **env: str) -> nbformat.NotebookNode:
    monkeypatch.setenv("ANOMALIB_LITE_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("ANOMALIB_LITE_NOTEBOOK_OUT", str(tmp_path))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code"), \
        f"{name} has stored outputs: strip them before committing"
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return notebook


def test_sprites_notebook_runs(tmp_path, monkeypatch):
    notebook = run_notebook("01_sprites_seed003.ipynb", tmp_path, monkeypatch)
    text = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert "l2_mean: AUROC" in text and "latent_kde AUROC" in text
    assert (tmp_path / "sprites" / "results.json").exists()


@pytest.mark.skipif(not (MVTEC / "bottle").is_dir(), reason="no MVTec AD copy beside the repo")
def test_mvtec_notebook_runs(tmp_path, monkeypatch):
    notebook = run_notebook("02_mvtec_seed000.ipynb", tmp_path, monkeypatch,
                            MVTEC_ROOT=str(MVTEC))
    images = [o for c in notebook.cells for o in c.get("outputs", [])
              if "image/png" in o.get("data", {})]
    assert len(images) == 3
    assert (tmp_path / "bottle" / "gallery.png").exists()
    assert os.path.getsize(tmp_path / "bottle" / "results.json") > 0
