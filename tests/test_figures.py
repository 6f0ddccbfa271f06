"""Figures are drawn from fixture records alone (no model), one file per figure and format."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from conftest import record
from whatmatters import plots
from whatmatters.results import ResultsStore
from whatmatters.scores import Scores

SCRIPT = Path(__file__).parents[1] / "figures" / "make_figures.py"


def load_script():
    spec = importlib.util.spec_from_file_location("make_figures", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_figures_draws_every_figure_from_records(tmp_path):
    store = ResultsStore(tmp_path / "results")
    scores = {"attn": [0.3, 0.1, 0.01], "mlp": [0.9, 0.1, 0.05], "block": [0.9, 0.2, 0.06]}
    for target in ("attn", "mlp", "block", "joint"):
        for n in (4, 8):
            for mode in ("one_shot", "iterative"):
                store.put(record(target, n, 50.0 - n, mode=mode, key=f"{target}{n}{mode}", scores=scores))
    store.put(record("none", 0, 50.0, experiment=None, key="base"))
    written = load_script().main(tmp_path / "results", tmp_path / "figs")
    names = sorted(p.name for p in written)
    assert "heatmap_smollm2-135m.png" in names
    for fig in ("drop_curves", "one_shot_vs_iterative", "speed", "sdr"):
        for ext in ("png", "pdf"):
            assert f"{fig}_smollm2-135m_embedded.{ext}" in names
    assert all(p.stat().st_size > 1000 for p in written)


def test_redundancy_across_training_plots_each_checkpoint_and_refuses_mixed_models(tmp_path):
    spec = importlib.util.spec_from_file_location("training", SCRIPT.with_name("training.py"))
    training = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(training)
    paths = []
    for i, meta in enumerate(({"random_init": True}, {"revision": "step-1000"}, {})):
        scores = Scores(
            attn=[0.3, 0.1 / (i + 1)], mlp=[0.9, 0.1], block=[0.9, 0.2], meta={"model": "m"} | meta
        )
        scores.save(tmp_path / f"{i}.json")
        paths.append(tmp_path / f"{i}.json")
    written = training.main(paths, tmp_path / "figs")
    assert sorted(p.name for p in written) == ["redundancy_training_m.pdf", "redundancy_training_m.png"]
    assert [plots.checkpoint_label(Scores.load(p)) for p in paths] == [
        "random init",
        "step-1000",
        "trained (final)",
    ]
    Scores(attn=[0.1], mlp=[0.1], block=[0.1], meta={"model": "other"}).save(tmp_path / "other.json")
    with pytest.raises(SystemExit, match="one model only"):
        training.main([*paths, tmp_path / "other.json"], tmp_path / "figs")
