"""Every notebook runs top to bottom in a real Jupyter kernel on the embedded default model.

The kernel is this venv's ipykernel: a kernelspec naming this interpreter (`sys.executable`) is written
to a temporary JUPYTER_PATH (searched first), so neither a `python` on PATH nor a user-level kernelspec
can swap in another interpreter. Figures go to a temporary folder, never over the committed ones.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from ipykernel.kernelspec import write_kernel_spec
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


@pytest.fixture
def venv_kernel(tmp_path, monkeypatch) -> str:
    name = "whatmatters-test"
    write_kernel_spec(tmp_path / "jupyter" / "kernels" / name)  # its argv starts with sys.executable
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return name


def test_every_notebook_is_collected():
    assert {p.name for p in NOTEBOOKS} >= {
        "redundancy.ipynb",
        "why_attention.ipynb",
        "calibration.ipynb",
        "architectures.ipynb",
    }


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_in_a_jupyter_kernel(path, venv_kernel, tmp_path, monkeypatch):
    figures = tmp_path / "figures"
    monkeypatch.setenv("WHATMATTERS_FIGURES", str(figures))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    # A cell that raises stops the run with CellExecutionError, failing the test with the traceback.
    client = NotebookClient(
        notebook, kernel_name=venv_kernel, timeout=900, resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
    )
    client.execute()
    assert sorted(figures.glob("*.png")), f"{path.name} saved no figure"
