"""The run record and the results store: typed round trips, older records still read, unknown fields kept,
unreadable records named and skipped (never deleted), queries by setting field."""

from __future__ import annotations

import json
import math

import pytest

from conftest import record, record_dict, with_docs
from whatmatters.records.eval_result import EvalResult
from whatmatters.records.store import SCHEMA, RecordError, ResultsStore, RunRecord, config_key, read_record


def test_config_key_is_stable_and_order_independent():
    a = config_key({"model": "m", "method": {"target": "attn", "n": 8}})
    b = config_key({"method": {"n": 8, "target": "attn"}, "model": "m"})
    assert a == b and len(a) == 16
    assert config_key({"model": "m", "method": {"target": "attn", "n": 4}}) != a


def test_put_then_get_round_trips_the_typed_record(tmp_path):
    store = ResultsStore(tmp_path)
    rec = with_docs(record("attn", 8, 0.0), [1, 0, 1, 1])
    path = store.put(rec)
    got = store.get("attn8")
    assert got == rec and got.source == path
    assert got.eval.tasks["wm_cloze"].docs.ids == ["0", "1", "2", "3"] and got.eval.avg == 75.0
    assert json.loads(path.read_text())["schema"] == SCHEMA
    assert store.get("missing") is None
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_a_schema_1_record_reads_with_its_scalar_speedups_and_sdr():
    old = record_dict("attn", 8, 48.0, schema=1)
    old["speed"] |= {"speedup_prefill": 1.3, "speedup_decode": 1.05, "ideal_speedup": 1.2}
    rec = RunRecord.from_dict(old)
    assert rec.speed.speedup["generate"].median == 1.08 and not rec.speed.speedup["generate"].has_interval
    assert rec.speed.speedup["prefill"].median == 1.3 and rec.speed.speedup["decode"].median == 1.05
    assert rec.sdr.value == pytest.approx(0.25) and rec.sdr.reason is None


def test_the_new_speed_and_sdr_formats_and_unknown_fields_survive_a_rewrite(tmp_path):
    new = record_dict("attn", 8, 48.0, quant={"scheme": "int8", "order": "drop_then_quant"}, future={"a": 1})
    new["speed"] = {
        "speedup": {"generate": {"median": 1.2, "low": 1.1, "high": 1.3, "ratios": [1.1, 1.2, 1.3]}},
        "times": {"original": [2.0, 2.1]},
    }
    new["sdr"] = {"value": None, "low": None, "high": None, "reason": "interval includes 1"}
    new["eval"]["tasks"]["wm_cloze"]["new_field"] = 3
    rec = RunRecord.from_dict(new)
    assert rec.speed.speedup["generate"].high == 1.3 and rec.sdr.reason == "interval includes 1"
    assert rec.speed.extra == {"times": {"original": [2.0, 2.1]}} and rec.extra == {"future": {"a": 1}}
    back = json.loads(ResultsStore(tmp_path).put(rec).read_text())
    assert back["future"] == {"a": 1} and back["speed"]["times"] == {"original": [2.0, 2.1]}
    assert back["eval"]["tasks"]["wm_cloze"]["new_field"] == 3 and back["quant"]["scheme"] == "int8"
    assert rec.setting()["quant.scheme"] == "int8"


def test_corrupt_and_other_schema_records_name_their_file_and_are_skipped_and_kept(tmp_path):
    store = ResultsStore(tmp_path)
    store.put(record("attn", 8, 1.0))
    (tmp_path / "corrupt.json").write_text('{"key": "corrupt", "avg"')
    (tmp_path / "old.json").write_text(json.dumps(record_dict("attn", 4, 1.0, schema=0)))
    (tmp_path / "broken.json").write_text(json.dumps({"key": "broken", "schema": SCHEMA}))
    with pytest.raises(RecordError, match=r"old\.json: record schema 0"):
        read_record(tmp_path / "old.json")
    with pytest.raises(RecordError, match=r"broken\.json: not a valid run record"):
        read_record(tmp_path / "broken.json")
    with pytest.warns(UserWarning) as caught:
        keys = [r.key for r in store.records()]
    assert keys == ["attn8"]
    messages = " ".join(str(w.message) for w in caught)
    assert all(name in messages for name in ("corrupt.json", "old.json", "broken.json"))
    assert all((tmp_path / name).exists() for name in ("corrupt.json", "old.json", "broken.json"))


def test_query_selects_by_setting_fields_and_experiment(tmp_path):
    store = ResultsStore(tmp_path)
    store.put(record("attn", 8, 1.0, config={"eval": {"limit": 50}, "seed": 0}))
    store.put(record("attn", 4, 1.0, mode="iterative", experiment="figures"))
    store.put(record("none", 0, 1.0, experiment=None))
    assert [r.key for r in store.query(mode="iterative")] == ["attn4"]
    assert [r.key for r in store.query(**{"eval.limit": 50})] == ["attn8"]
    assert [r.key for r in store.query(experiment="table2")] == ["attn8"]
    assert [r.key for r in store.query(target="none")] == ["none0"]


def test_a_task_without_lm_eval_stderr_gets_the_stderr_of_its_per_doc_values_and_so_does_the_avg():
    docs = {"ids": ["a:0", "b:0", "c:0", "d:0"], "values": [1.0, 0.0, 0.0, 1.0]}  # one doc per subject
    ev = EvalResult.from_dict(
        {
            "suite": "s",
            "avg": 50.0,
            "avg_stderr": float("nan"),
            "tasks": {
                "mmlu": {"value": 50.0, "stderr": float("nan"), "docs": docs},
                "piqa": {"value": 50.0, "stderr": 10.0, "docs": docs},
            },
        }
    )
    assert ev.tasks["mmlu"].stderr == pytest.approx(100 * 0.57735 / 2, rel=1e-4)  # sample std 0.577, n = 4
    assert ev.avg_stderr == pytest.approx(math.sqrt(ev.tasks["mmlu"].stderr ** 2 + 100) / 2)
    assert ev.tasks["piqa"].stderr == 10.0  # lm-eval's own value is kept
    # A perplexity task (no per-doc values, not in the Avg) leaves the Avg's stderr to the accuracy tasks.
    with_ppl = ev.to_dict()
    with_ppl["tasks"]["mmlu"]["stderr"] = with_ppl["avg_stderr"] = float("nan")
    with_ppl["tasks"]["ppl"] = {"value": 30.0, "stderr": float("nan"), "metric": "word_perplexity"}
    again = EvalResult.from_dict(with_ppl)
    assert again.avg_stderr == pytest.approx(ev.avg_stderr) and math.isnan(again.tasks["ppl"].stderr)
