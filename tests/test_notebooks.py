"""Every notebook runs top to bottom on fixture results (its code cells executed in order)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pytest

from whatmatters.scores import Scores

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))


@pytest.fixture
def fixture_scores(tmp_path, monkeypatch) -> Path:
    n = 6
    angular = [[abs(i - j) / n for j in range(n + 1)] for i in range(n + 1)]
    scores = Scores(
        attn=[0.3, 0.1, 0.02, 0.01, float("nan"), 0.02],
        mlp=[0.9, 0.1, 0.05, 0.04, 0.05, 0.2],
        block=[0.95, 0.2, 0.06, 0.05, 0.05, 0.3],
        angular=angular,
        meta={"model": "fixture"},
    )
    path = tmp_path / "scores.json"
    scores.save(path)
    monkeypatch.setenv("WHATMATTERS_SCORES", str(path))
    return path


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_on_fixture_scores(notebook, fixture_scores):
    matplotlib.use("Agg")
    namespace: dict = {}
    for cell in json.loads(notebook.read_text())["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), f"{notebook.name}", "exec"), namespace)
    assert fixture_scores.with_name("heatmap_notebook.png").exists()
