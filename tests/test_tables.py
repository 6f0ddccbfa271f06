"""Tables from fixture records: expected rows, measured beside the paper's labelled numbers."""

from __future__ import annotations

import pandas as pd
import pytest

from conftest import record
from whatmatters.paper import paper_row
from whatmatters.tables import build_table, method_label, write_table


def test_table2_rows_are_baseline_then_each_drop_with_the_papers_numbers_beside():
    records = [record("attn", 15, 40.0), record("none", 0, 50.0, experiment=None), record("attn", 8, 48.0)]
    records.append(record("attn", 8, 10.0, experiment="table7"))  # another experiment: not in this table
    frame = build_table(records, "table2", "smollm2-135m", "embedded")
    assert list(frame["method"]) == ["Baseline", "Attn-8", "Attn-15"]
    assert list(frame["Avg"]) == [50.0, 48.0, 40.0]
    assert list(frame["paper row"]) == ["Llama-3-8B Baseline", "Llama-3-8B Attn-8", "Llama-3-8B Attn-16"]
    assert list(frame["paper Avg"]) == [67.6, 67.4, 55.4]
    assert frame["SDR"].iloc[2] == pytest.approx(10 / 15)
    assert frame["wm_cloze ±"].iloc[0] == 1.0


def test_other_models_and_suites_are_left_out():
    records = [record("none", 0, 50.0), record("attn", 8, 48.0, model="other"), record("attn", 4, 1.0)]
    records[2]["eval"]["suite"] = "paper_table2"
    assert list(build_table(records, "table2", "smollm2-135m", "embedded")["method"]) == ["Baseline"]


def test_labels_name_every_variant():
    assert method_label(record("attn", 8, 1.0, mode="iterative")) == "Attn-8 iterative"
    assert method_label(record("attn", 12, 1.0, criterion="random")) == "Attn-12 [random]"
    rec = record("attn", 4, 1.0)
    rec["method"]["remove_residual"] = True
    assert method_label(rec) == "Attn-4 no-residual"


def test_paper_rows_match_by_fraction_or_own_model():
    assert paper_row("table1", "mistral-7b", "mlp", 8, 32).sdr == 2.82
    assert paper_row("table2", "smollm2-135m", "attn", 3, 30) is None  # no paper row near 3/30
    # 4 of 30 is 5.3 of Llama-2-13B's 40 layers (too far) but 4.3 of Mistral-7B's 32: the next model serves.
    assert paper_row("table1", "smollm2-135m", "block", 4, 30).model == "Mistral-7B"
    records = [record("none", 0, 50.0), record("block", 4, 45.0, experiment="table1")]
    frame = build_table(records, "table1", "smollm2-135m", "embedded")
    # One paper model for the whole table, the baseline included.
    assert list(frame["paper row"]) == ["Mistral-7B Baseline", "Mistral-7B Block-4"]


def test_written_table_files_say_which_numbers_are_the_papers(tmp_path):
    frame = build_table(
        [record("none", 0, 50.0), record("attn", 8, 48.0)], "table2", "smollm2-135m", "embedded"
    )
    md, csv, tex = write_table(frame, tmp_path / "table2", "Table 2")
    assert "published numbers" in md.read_text() and "paper Avg" in md.read_text()
    assert pd.read_csv(csv)["method"].tolist() == ["Baseline", "Attn-8"]
    assert "\\begin{tabular}" in tex.read_text()


def test_a_setting_run_twice_shows_its_newest_record_and_empty_columns_drop_out():
    old, new = record("attn", 8, 40.0, created="2026-01-01"), record("attn", 8, 45.0, created="2026-02-01")
    for r in (old, new):
        r["eval"]["tasks"]["wm_ppl"] = {"value": 100.0, "stderr": float("nan")}
    frame = build_table([new, old, record("none", 0, 50.0)], "table2", "smollm2-135m", "embedded")
    assert list(frame["method"]) == ["Baseline", "Attn-8"] and frame["Avg"].iloc[1] == 45.0
    assert "wm_ppl" in frame and "wm_ppl ±" not in frame


def test_ablation_rows_sit_beside_the_papers_row_of_the_same_variant():
    residual = record("attn", 3, 30.0, experiment="table6")
    residual["method"]["remove_residual"] = True
    magnitude = record("attn", 11, 40.0, experiment="table7", criterion="magnitude")
    six = build_table([record("none", 0, 50.0), residual], "table6", "smollm2-135m", "embedded")
    seven = build_table([magnitude], "table7", "smollm2-135m", "embedded")
    assert six["paper row"].isna()[0]  # the paper gives no baseline for its ablations
    assert six["paper row"][1] == "Table 6 model Attn-4 no-residual"
    assert list(six["paper Avg"])[1] == 39.4
    assert list(seven["paper row"]) == ["Table 7 model Attn-12 magnitude"]
    assert list(seven["paper Avg"]) == [62.3]
