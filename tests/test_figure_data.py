"""What the speed bars and the importance heatmap draw is the records' own numbers (the drop curves, SDR,
one-shot-vs-iterative and Pareto plots are checked the same way in test_figures.py and test_pareto.py)."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import record
from whatmatters.records.store import Interval, Speed
from whatmatters.report import plots


def test_speed_bars_draw_each_runs_speedup_interval_ideal_and_kv_ratio(tmp_path, saved_axes):
    runs = [record("none", 0, 50.0, key="base")]
    for n, (speedup, ideal, kv) in {4: (1.05, 1.06, 0.87), 8: (1.12, 1.1, 0.73)}.items():
        r = record("attn", n, 45.0, key=f"a{n}")
        r.speed = Speed(
            speedup={"generate": Interval(speedup, speedup - 0.01, speedup + 0.02)},
            ideal_speedup=ideal,
            exceeds_ideal=n == 8,
            kv_ratio=kv,
        )
        runs.append(r)
    (fs,) = plots.figure_sets(runs)
    plots.speed_bars(fs, tmp_path / "speed")
    ax = saved_axes["speed"]
    heights = [round(p.get_height(), 6) for p in ax.patches]
    assert heights == [1.05, 1.12, 0.87, 0.73]  # speedup bars, then KV-ratio bars, one per run
    ((bars,),) = [c.lines[2] for c in ax.containers if getattr(c, "lines", None) and c.lines[2]]
    ends = [y for seg in bars.get_segments() for y in seg[:, 1]]
    assert ends == pytest.approx([1.04, 1.07, 1.11, 1.14])  # each run's 95% interval
    (ideal,) = [c for c in ax.collections if c.get_label() == "ideal speedup"]
    assert ideal.get_offsets()[:, 1].tolist() == pytest.approx([1.06, 1.1])
    assert [t.get_text() for t in ax.texts] == ["> ideal"]  # only the flagged run
    assert [t.get_text() for t in ax.get_xticklabels()] == ["Attn-4", "Attn-8"]


def test_importance_heatmap_draws_each_score_at_its_layer_and_kind(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(
        plots, "savefig", lambda fig, path: drawn.setdefault("mesh", fig.axes[0].collections[0])
    )
    scores = {"block": [0.9, 0.2, 0.06], "attn": [0.3, 0.1, None], "mlp": [0.9, 0.1, 0.05]}
    plots.importance_heatmap(scores, tmp_path / "h.png", title="t")
    values = np.ma.filled(drawn["mesh"].get_array(), np.nan).reshape(3, 3)
    expected = [[0.9, 0.2, 0.06], [0.3, 0.1, np.nan], [0.9, 0.1, 0.05]]  # rows Block, Attention, MLP
    np.testing.assert_allclose(values, expected)  # a dropped module (None) is left blank
