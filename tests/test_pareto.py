"""The speed-accuracy plot: one point per record, only records of one shared setting, the front marked."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import record_dict
from whatmatters.apps import figures
from whatmatters.records.store import RunRecord
from whatmatters.report import labels, pareto


def _rec(target: str, n: int, avg: float, speedup: float, **method) -> RunRecord:
    d = record_dict(target, n, avg, experiment=None)
    d["key"] = f"{target}{n}{sorted(method.items())}"
    d["method"] |= method
    d["eval"]["avg_stderr"] = 1.0
    d["speed"] = {
        "speedup": {
            "generate": {"median": speedup, "low": speedup - 0.02, "high": speedup + 0.02, "ratios": []}
        },
        "kv_ratio": 1.0,
    }
    return RunRecord.from_dict(d)


def test_front_is_every_undominated_point_and_variants_are_separate_points(tmp_path):
    records = [
        _rec("none", 0, 60.0, 1.0),
        _rec("attn", 4, 59.0, 1.05),
        _rec("attn", 4, 59.5, 1.05, heal={"enabled": True, "rank": 8}),  # dominates the unhealed Attn-4
        _rec("mlp", 4, 50.0, 1.04),  # dominated by Attn-4
        _rec("block", 8, 40.0, 1.3),
        _rec("joint", 5, 55.0, 1.1, budget={"kind": "speedup", "target": 1.1}),
    ]
    ((name, frame),) = pareto.frames(records).items()
    assert name == "smollm2-135m_embedded" and len(frame) == 6 and frame.key.is_unique
    front = set(frame[frame.pareto].label)
    assert front == {"Baseline", "Attn-4 healed", "Joint-5 budget speedup 1.1", "Block-8"}
    paths = pareto.speed_accuracy_plots(records, tmp_path)
    assert sorted(p.suffix for p in paths) == [".csv", ".pdf", ".png"]
    csv = pd.read_csv(tmp_path / "pareto_smollm2-135m_embedded.csv")
    assert set(csv.key) == {r.key for r in records} and csv.pareto.sum() == 4


def test_records_of_another_eval_limit_get_their_own_plot():
    a = [_rec("none", 0, 60.0, 1.0), _rec("attn", 4, 59.0, 1.05)]
    other = _rec("attn", 8, 55.0, 1.1)
    other.config = {"eval": {"limit": 50}}
    base = _rec("none", 0, 61.0, 1.0)
    base.config = {"eval": {"limit": 50}}
    got = pareto.frames([*a, other, base])
    assert len(got) == 2 and sorted(len(f) for f in got.values()) == [2, 2]


def test_pareto_mask_keeps_ties_and_drops_dominated():
    frame = pd.DataFrame({"speedup": [1.0, 1.1, 1.1, 1.05], "Avg": [60.0, 50.0, 50.0, 49.0]})
    assert pareto.pareto_mask(frame).tolist() == [True, True, True, False]


@pytest.mark.parametrize("healed", [True, False])
def test_label_names_healing(healed):
    rec = _rec("attn", 4, 59.0, 1.05, heal={"enabled": healed})
    assert labels.run_label(rec) == ("Attn-4 healed" if healed else "Attn-4")


def test_main_writes_the_plot_and_a_paired_healing_table_from_the_store(tmp_path):
    from conftest import with_docs
    from whatmatters.records.store import ResultsStore

    healed = with_docs(_rec("attn", 4, 0.0, 1.05, heal={"enabled": True}), [1, 1, 1, 0])  # 75 after
    before = with_docs(_rec("attn", 4, 0.0, 1.05), [1, 0, 1, 0])  # 50 before, on the same docs
    healed.extra["heal"] = {
        "eval_before": before.to_dict()["eval"],  # as a run stores it: plain JSON
        "loss_before": 3.0,
        "loss_after": 2.5,
        "rank": 8,
        "steps": 40,
    }
    store = ResultsStore(tmp_path / "results")
    for r in (_rec("none", 0, 60.0, 1.0), healed, _rec("mlp", 4, 50.0, 1.04)):
        store.put(r)
    paths = figures.speed_accuracy(tmp_path / "results", tmp_path / "fig")
    assert {p.name for p in paths} >= {"pareto_smollm2-135m_embedded.png", "healing_smollm2-135m_embedded.md"}
    table = pd.read_csv(tmp_path / "fig" / "healing_smollm2-135m_embedded.csv")
    assert table["method"].tolist() == ["Attn-4 healed"] and table["Avg before"][0] == pytest.approx(50.0)
    assert table["delta"][0] == pytest.approx(25.0)
    # paired: per-doc differences (0, 100, 0, 0) points, sample variance 2500, SE = sqrt(2500 / 4)
    assert table["paired SE"][0] == pytest.approx(25.0)


def test_every_point_is_labelled_and_ablations_are_drawn_apart_off_the_front(tmp_path, monkeypatch):
    records = [
        _rec("none", 0, 60.0, 1.0),
        _rec("attn", 4, 59.0, 1.05),
        _rec("attn", 4, 59.9, 1.2, remove_residual=True),  # would dominate Attn-4 if it joined the front
        _rec("attn", 8, 58.0, 1.1),
    ]
    records[2].criterion = "cosine"
    random = _rec("attn", 8, 59.5, 1.3)
    random.criterion = "random"
    records.append(random)
    axes = {}
    monkeypatch.setattr(pareto, "save_figure", lambda fig, stem, data: [axes.setdefault("ax", fig.axes[0])])
    ((name, frame),) = pareto.frames(records).items()
    assert frame.set_index("label").ablation.fillna("").to_dict() == {
        "Baseline": "",
        "Attn-4": "",
        "Attn-4 no-residual": "no-residual",
        "Attn-8": "",
        "Attn-8 [random]": "random",
    }
    assert set(frame[frame.pareto].label) == {"Baseline", "Attn-4", "Attn-8"}
    pareto.speed_accuracy(frame, tmp_path / "p", frame.attrs["title"])
    ax = axes["ax"]
    assert sorted(t.get_text() for t in ax.texts) == sorted(frame.label)  # every point, the baseline too
    drawn = {c.get_label(): c.lines[0].get_xydata().tolist() for c in ax.containers}
    assert drawn["ablation (criterion or no-residual; off the front)"] == [[1.2, 59.9], [1.3, 59.5]]
    assert drawn["baseline (unpruned)"] == [[1.0, 60.0]]
    (front,) = [line for line in ax.lines if line.get_label().startswith("Pareto front")]
    assert front.get_xydata().tolist() == [[1.0, 60.0], [1.05, 59.0], [1.1, 58.0]]
    assert "speed vs accuracy: smollm2-135m, eval embedded" in frame.attrs["title"]


def test_plots_of_one_model_and_suite_are_named_by_the_field_that_differs_not_a_hash():
    a = [_rec("none", 0, 60.0, 1.0), _rec("attn", 4, 59.0, 1.05)]
    other = _rec("attn", 8, 55.0, 1.1)
    other.config = {"eval": {"limit": 50}}
    assert sorted(pareto.frames([*a, other])) == [
        "smollm2-135m_embedded",
        "smollm2-135m_embedded_eval.limit-50",
    ]
