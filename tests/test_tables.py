"""Tables from fixture records: one setting per table, each cell from one record, paired differences,
speed intervals and labels that say which numbers are the paper's."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import record, with_docs
from whatmatters.paper import paper_row
from whatmatters.records.metrics import UnpairedError, paired_difference
from whatmatters.records.store import Docs, Interval, Sdr, Speed, TaskResult
from whatmatters.report.labels import method_label
from whatmatters.report.table_files import (
    display,
    table_stem,
    where_filters,
    write_experiment_table,
    write_table,
)
from whatmatters.report.tables import TableError, build_paired_table, build_table

ROOT = Path(__file__).parents[1]


def test_table2_rows_are_baseline_then_each_drop_with_the_papers_numbers_beside():
    records = [record("attn", 15, 40.0), record("none", 0, 50.0, experiment=None), record("attn", 8, 48.0)]
    records.append(record("attn", 8, 10.0, experiment="table7", key="t7"))  # another experiment's run
    frame = build_table(records, "table2", "smollm2-135m", "embedded")
    assert list(frame["method"]) == ["Baseline", "Attn-8", "Attn-15"]
    assert list(frame["key"]) == ["none0", "attn8", "attn15"]
    assert list(frame["Avg"]) == [50.0, 48.0, 40.0]
    assert list(frame["paper row"]) == ["Llama-3-8B: Baseline", "Llama-3-8B: Attn-8", "Llama-3-8B: Attn-16"]
    assert list(frame["paper Avg"]) == [67.6, 67.4, 55.4]
    assert frame["SDR"].iloc[2] == pytest.approx(10 / 15)
    assert frame["wm_cloze ±"].iloc[0] == 1.0


def test_other_models_and_suites_are_left_out():
    records = [record("none", 0, 50.0), record("attn", 8, 48.0, model="other"), record("attn", 4, 1.0)]
    records[2].eval.suite = "paper_table2"
    assert list(build_table(records, "table2", "smollm2-135m", "embedded")["method"]) == ["Baseline"]


def test_labels_name_every_variant():
    assert method_label(record("attn", 8, 1.0, mode="iterative")) == "Attn-8 iterative"
    assert method_label(record("attn", 12, 1.0, criterion="random")) == "Attn-12 [random]"
    rec = record("attn", 4, 1.0)
    rec.method.remove_residual = True
    assert method_label(rec) == "Attn-4 no-residual"


def test_paper_rows_match_by_fraction_or_own_model():
    assert paper_row("table1", "mistral-7b", "mlp", 8, 32).sdr == 2.82
    assert paper_row("table2", "smollm2-135m", "attn", 3, 30) is None  # no paper row near 3/30
    # 4 of 30 is 5.3 of Llama-2-13B's 40 layers (too far) but 4.3 of Mistral-7B's 32: the next model serves.
    assert paper_row("table1", "smollm2-135m", "block", 4, 30).model == "Mistral-7B"
    records = [record("none", 0, 50.0), record("block", 4, 45.0, experiment="table1")]
    frame = build_table(records, "table1", "smollm2-135m", "embedded")
    # One paper model for the whole table, the baseline included.
    assert list(frame["paper row"]) == ["Mistral-7B: Baseline", "Mistral-7B: Block-4"]


def test_paper_columns_name_the_papers_model_and_setup():
    seventy = record("attn", 16, 40.0, experiment="table3", model="llama2-70b", num_layers=80)
    three = build_table([seventy], "table3", "llama2-70b", "embedded")
    assert list(three["paper row"]) == ["Llama-2-70B 4-bit: Attn-16"]  # Table 3 is a 4-bit model
    assert any("quantized to 4 bits" in n for n in three.attrs["notes"])
    residual = record("attn", 3, 30.0, experiment="table6")
    residual.method.remove_residual = True
    magnitude = record("attn", 11, 40.0, experiment="table7", criterion="magnitude")
    six = build_table([record("none", 0, 50.0), residual], "table6", "smollm2-135m", "embedded")
    seven = build_table([magnitude], "table7", "smollm2-135m", "embedded")
    assert six["paper row"].isna()[0]  # the paper gives no baseline for its ablations
    assert six["paper row"][1] == "model not named in the paper: Attn-4 no-residual"
    assert list(six["paper Avg"])[1] == 39.4
    assert list(seven["paper row"]) == ["model not named in the paper: Attn-12 magnitude"]
    assert list(seven["paper Avg"]) == [62.3]
    # The measured Avg and the paper's Avg are separate columns, the paper's labelled as such.
    assert "Avg" in seven and "paper Avg" in seven


def test_written_files_carry_notes_keys_and_folded_cells(tmp_path):
    base, pruned = record("none", 0, 50.0), record("attn", 8, 48.0)
    base.eval.tasks["wm_cloze"].chance = 25.0
    base.eval.protocol = "all docs, 0-shot"
    pruned.eval.protocol = "all docs, 0-shot"
    frame = build_table([base, pruned], "table2", "smollm2-135m", "embedded")
    md, csv, tex = write_table(frame, tmp_path / "table2", "Table 2")
    text = md.read_text()
    assert (
        "published numbers" in text and "wm_cloze 25%" in text and "Eval protocol: all docs, 0-shot" in text
    )
    assert "| 48.0 ± 1.0 " in text  # the score with its stderr in one cell
    assert "Avg = mean of wm_cloze in %, measured here on the embedded suite" in text
    assert "ΔAvg = the row minus the Baseline row (none0) on the same docs" in text
    assert pd.read_csv(csv)["key"].tolist() == ["none0", "attn8"]
    assert "\\begin{tabular}" in tex.read_text()


def test_two_records_for_one_cell_are_an_error_naming_both(tmp_path):
    old, new = record("attn", 8, 40.0, key="old"), record("attn", 8, 45.0, key="new")
    old.source, new.source = tmp_path / "old.json", tmp_path / "new.json"
    with pytest.raises(TableError, match=r"Attn-8.*old\.json.*new\.json"):
        build_table([old, new, record("none", 0, 50.0)], "table2", "smollm2-135m", "embedded")


def test_runs_of_another_setting_are_an_error_naming_the_field_and_where_picks_one():
    full = record("attn", 8, 45.0, key="full", config={"eval": {"limit": None}, "seed": 0})
    quick = record("attn", 15, 30.0, key="quick", config={"eval": {"limit": 50}, "seed": 0})
    base = record("none", 0, 50.0, config={"eval": {"limit": None}, "seed": 0})
    with pytest.raises(TableError, match=r"eval\.limit: .*50 \(1 records\)"):
        build_table([full, quick, base], "table2", "smollm2-135m", "embedded")
    frame = build_table([full, quick, base], "table2", "smollm2-135m", "embedded", where={"eval.limit": 50})
    assert list(frame["key"]) == ["quick"]  # the baseline of the full eval is not this table's baseline
    frame = build_table([full, quick, base], "table2", "smollm2-135m", "embedded", where={"eval.limit": None})
    assert list(frame["key"]) == ["none0", "full"]


def test_paired_difference_matches_docs_by_id_and_its_se_is_the_per_doc_one():
    base = with_docs(record("none", 0, 0.0), [1, 1, 0, 1, 0, 1], ids=list("abcdef"))
    # Same docs in another order: pruned gets "b" and "d" wrong.
    pruned = with_docs(record("attn", 8, 0.0), [1, 0, 0, 0, 0, 1], ids=list("fedcba"))
    delta, se, per_task = paired_difference(base.eval, pruned.eval)
    d = [0, -100, 0, -100, 0, 0]  # a..f, in points
    mean = sum(d) / 6
    assert se == pytest.approx(math.sqrt(sum((x - mean) ** 2 for x in d) / 5 / 6))
    assert delta == pytest.approx(mean) and per_task == {"wm_cloze": (pytest.approx(mean), pytest.approx(se))}
    frame = build_table([base, pruned], "table2", "smollm2-135m", "embedded")
    assert frame["ΔAvg"].iloc[1] == pytest.approx(mean) and frame["ΔAvg ±"].iloc[1] == pytest.approx(se)
    assert display(frame)["ΔAvg"].iloc[1] == f"{mean:+.1f} ± {se:.1f}"


def test_paired_table_gives_each_task_its_own_paired_difference_and_names_unpaired_rows(tmp_path):
    def two_tasks(rec, cloze: list[float], choice: list[float]):
        rec = with_docs(rec, cloze)
        rec.eval.tasks["wm_choice"] = TaskResult(
            value=100.0 * sum(choice) / 4,
            metric="acc",
            chance=25.0,
            docs=Docs(ids=list("abcd"), values=choice),
        )
        return rec

    base = two_tasks(record("none", 0, 0.0), [1, 1, 0, 0], [0, 0, 0, 0])
    # The cut loses two cloze docs and gains three choice docs: the Avg barely moves, the tasks do.
    pruned = two_tasks(record("attn", 8, 0.0), [0, 0, 0, 0], [1, 1, 1, 0])
    unpaired = record("attn", 15, 40.0)
    unpaired.eval.tasks["wm_choice"] = TaskResult(value=30.0, metric="acc")
    frame = build_paired_table([base, pruned, unpaired], "table2", "smollm2-135m", "embedded")
    assert list(frame["method"]) == ["Attn-8"]  # the baseline is the reference, not a row
    row = frame.iloc[0]
    assert row["Δ wm_cloze"] == -50.0 and row["Δ wm_choice"] == 75.0 and row["ΔAvg"] == 12.5
    assert row["Δ wm_cloze ±"] == pytest.approx(math.sqrt(100**2 / 3 / 4))  # per-doc d = -100,-100,0,0
    assert row["ΔAvg ±"] == pytest.approx(math.hypot(row["Δ wm_cloze ±"], row["Δ wm_choice ±"]) / 2)
    notes = " ".join(frame.attrs["notes"])
    assert "wm_choice 0.0 (25)" in notes and "Left out, no per-doc values: Attn-15 (attn15)" in notes
    # A one-pass iterator, as ResultsStore.records() gives the table app: both tables see every record.
    write_experiment_table(iter([base, pruned]), "table2", "smollm2-135m", "embedded", {}, tmp_path)
    assert "| Attn-8   | -50.0 ± 28.9" in (tmp_path / "table2_paired.md").read_text()
    assert build_paired_table([pruned], "table2", "smollm2-135m", "embedded").empty  # no baseline, no table


def test_paired_difference_refuses_other_docs_and_records_without_docs():
    base = with_docs(record("none", 0, 0.0), [1, 0, 1])
    with pytest.raises(ValueError, match="not comparable"):
        paired_difference(base.eval, with_docs(record("attn", 8, 0.0), [1, 0, 1], ids=["0", "1", "9"]).eval)
    with pytest.raises(UnpairedError, match="no per-doc values"):
        paired_difference(base.eval, record("attn", 8, 40.0).eval)
    # In a table, a record without docs gets the plain difference, marked unpaired.
    frame = build_table(
        [record("none", 0, 50.0), record("attn", 8, 40.0)], "table2", "smollm2-135m", "embedded"
    )
    assert display(frame)["ΔAvg"].iloc[1] == "-10.0 unpaired"


def test_speedup_shows_its_interval_and_a_speedup_above_ideal_is_flagged():
    fast = record("attn", 8, 45.0, key="fast")
    fast.speed = Speed(
        speedup={"generate": Interval(1.25, 1.20, 1.30), "prefill": Interval(1.1, 1.0, 1.2)},
        ideal_speedup=1.11,
        exceeds_ideal=True,  # the timing code's flag (ideal.exceeds_ideal), shown as it is
    )
    fast.sdr = Sdr(value=None, reason="the speedup interval includes 1")
    fine = record("attn", 15, 40.0, key="fine")
    fine.speed = Speed(
        speedup={"generate": Interval(1.05, 1.02, 1.08)}, ideal_speedup=1.11, exceeds_ideal=False
    )
    fine.sdr = Sdr(value=2.0, low=1.5, high=3.0)
    shown = display(build_table([fast, fine], "table2", "smollm2-135m", "embedded"))
    assert list(shown["speedup"]) == ["1.25x [1.20, 1.30] > ideal 1.11", "1.05x [1.02, 1.08]"]
    assert list(shown["prefill speedup"]) == ["1.10x [1.00, 1.20]", "--"]
    assert list(shown["SDR"]) == ["undefined: the speedup interval includes 1", "2 [1.5, 3]"]
    old = display(build_table([record("attn", 8, 45.0)], "table2", "smollm2-135m", "embedded"))
    assert list(old["speedup"]) == ["1.08x"]  # a schema-1 record: its one number, no interval
    untimed = record("attn", 8, 45.0)
    untimed.speed = Speed.from_dict({"speedup": {"generate": None}, "not_timed": "no int4 kernel on cpu"})
    shown = display(build_table([untimed], "table2", "smollm2-135m", "embedded"))
    assert list(shown["speedup"]) == ["not timed: no kernel"]  # the notes say why


def test_table_app_config_takes_the_run_apps_model_and_eval_groups_and_a_where_dict():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "table",
            overrides=[
                "table=table2",
                "model=llama3-8b",
                "eval=paper_table2",
                "where={eval.limit:50,seed:0}",
            ],
        )
    assert (cfg.table, cfg.model.name, cfg.eval.suite) == ("table2", "llama3-8b", "paper_table2")
    assert OmegaConf.to_container(cfg.where) == {"eval.limit": 50, "seed": 0}


def test_experiment_table_is_named_by_model_and_suite_unless_the_default_and_filters_by_where(tmp_path):
    full = record("attn", 8, 45.0, key="full", config={"eval": {"limit": None}, "seed": 0})
    quick = record("attn", 15, 30.0, key="quick", config={"eval": {"limit": 50}, "seed": 0})
    records = [full, quick, record("none", 0, 50.0, config={"eval": {"limit": None}, "seed": 0})]
    md = write_experiment_table(records, "table2", "smollm2-135m", "embedded", {"eval.limit": 50}, tmp_path)
    assert md == tmp_path / "table2.md" and "quick" in md.read_text() and "full" not in md.read_text()
    assert (
        table_stem(tmp_path, "table2", "llama3-8b", "paper_table2")
        == tmp_path / "table2_llama3-8b_paper_table2"
    )
    with pytest.raises(TableError, match="no records of table2 for model=llama3-8b, suite=embedded, seed=1"):
        write_experiment_table(records, "table2", "llama3-8b", "embedded", {"seed": 1}, tmp_path)


def test_table_app_where_takes_a_field_value_dict_and_names_the_fix_for_a_list():
    assert where_filters(None) == {} and where_filters({"eval.limit": 50}) == {"eval.limit": 50}
    with pytest.raises(
        TableError, match=r"where=\['eval.limit=50'\] is not valid.*Fix: 'where=\{eval.limit:50\}'"
    ):
        where_filters(["eval.limit=50"])


def test_anchor_rows_are_told_apart_by_repair_and_heal_and_show_percent_of_baseline_and_fidelity():
    base = with_docs(record("none", 0, 0.0, experiment=None), [1, 1, 1, 1], ids=list("abcd"))
    runs = []
    for key, repair, heal, values in (
        ("cut", None, None, [1, 0, 0, 1]),
        ("linear", {"kind": "linear"}, None, [1, 1, 0, 1]),
        ("linear-ll", {"kind": "linear"}, {"enabled": True, "kind": "last_layers"}, [1, 1, 1, 1]),
    ):
        run = with_docs(record("block", 8, 0.0, experiment="anchors", key=key), values, ids=list("abcd"))
        run.method.extra = {k: v for k, v in (("repair", repair), ("heal", heal)) if v}
        run.fidelity = {
            "kl": {"value": 0.5, "low": 0.4, "high": 0.6},
            "ppl": {"value": 30, "low": 28, "high": 33},
        }
        runs.append(run)
    frame = build_table([base, *runs], "anchors", "smollm2-135m", "embedded")
    assert list(frame["method"]) == [
        "Baseline",
        "Block-8",
        "Block-8 linear-repair",
        "Block-8 linear-repair last-layers",
    ]
    assert list(frame["% of baseline"].iloc[1:]) == [50.0, 75.0, 100.0]  # Avg / baseline Avg, in %
    assert frame["% of baseline ±"].iloc[1] == pytest.approx(frame["ΔAvg ±"].iloc[1])  # baseline Avg is 100
    assert display(frame)["KL"].iloc[1] == "0.5 [0.4, 0.6]"
    notes = " ".join(frame.attrs["notes"])
    assert "published: ReplaceMe, lstsq" in notes and "% of baseline = 100 x Avg" in notes


def test_a_table_row_names_the_layers_its_plan_dropped_its_scoring_cost_and_wall_time():
    run = record("attn", 4, 45.0, experiment="table2", key="a4")
    run.plan = {"num_layers": 30, "attn": [4, 5, 6, 9], "mlp": [13], "blocks": []}
    run.forward_equivalents, run.wall_s = 2.1, 300.5
    base = record("none", 0, 50.0, experiment=None, key="base")
    frame = build_table([run, base], "table2", "smollm2-135m", "embedded")
    row = frame.set_index("key").loc["a4"]
    got = (row["dropped layers"], row["scoring passes"], row["wall s"])
    assert got == ("attn 4-6, 9; mlp 13", 2.1, 300.5)
