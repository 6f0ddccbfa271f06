"""The results store: atomic records, stable keys, and unreadable records skipped, never deleted."""

from __future__ import annotations

import json

import pytest

from whatmatters.results import SCHEMA, ResultsStore, config_key


def test_config_key_is_stable_and_order_independent():
    a = config_key({"model": "m", "method": {"target": "attn", "n": 8}})
    b = config_key({"method": {"n": 8, "target": "attn"}, "model": "m"})
    assert a == b and len(a) == 16
    assert config_key({"model": "m", "method": {"target": "attn", "n": 4}}) != a


def test_put_then_get_round_trips(tmp_path):
    store = ResultsStore(tmp_path)
    store.put({"key": "abc", "avg": 61.5})
    assert store.get("abc") == {"schema": SCHEMA, "key": "abc", "avg": 61.5}
    assert store.get("missing") is None
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


def test_corrupt_and_old_schema_records_are_skipped_with_a_warning_and_kept(tmp_path):
    store = ResultsStore(tmp_path)
    store.put({"key": "good", "avg": 1.0})
    (tmp_path / "corrupt.json").write_text('{"key": "corrupt", "avg"')
    (tmp_path / "old.json").write_text(json.dumps({"schema": 0, "key": "old"}))
    with pytest.warns(UserWarning) as caught:
        keys = [r["key"] for r in store.records()]
    assert keys == ["good"]
    messages = " ".join(str(w.message) for w in caught)
    assert "corrupt.json" in messages and "old.json" in messages and "schema 0" in messages
    assert (tmp_path / "corrupt.json").exists() and (tmp_path / "old.json").exists()
