"""wandb logging: an offline run dir is created with the run's summary; disabled logs nothing."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from conftest import record
from whatmatters.apps.tracking import log_run


def test_offline_run_logs_the_summary_and_the_scores_table(tmp_path):
    rec = record("attn", 8, 48.0, name="attn-8", config={"method": "attn"}, plan={"attn": [1, 2]})
    rec.scores = {"attn": [0.1, 0.2], "mlp": [0.3, 0.4], "block": [0.5, 0.6]}
    run_dir = log_run(rec, "offline", "whatmatters-test", None, tmp_path)
    assert run_dir is not None and "offline-run" in run_dir
    run_root = Path(run_dir).parent
    assert run_root.parent == tmp_path / "wandb"
    # The offline log `wandb sync` uploads holds the summary: each key, then its JSON value (protobuf: a
    # tag of two bytes and a length byte between them). wandb-core writes it asynchronously: wait for it.
    expected = {"plan/attn": b"[1,2]", "avg": b"48.0", "speedup/generate": b"1.08"}
    patterns = [re.escape(k.encode()) + b".{3}" + re.escape(v) for k, v in expected.items()]
    deadline = time.monotonic() + 60
    while not all(re.search(p, log := next(run_root.glob("*.wandb")).read_bytes(), re.S) for p in patterns):
        assert time.monotonic() < deadline, f"summary {expected} not in the offline log: {log[:200]!r}"
        time.sleep(0.2)
    (table,) = (Path(run_dir) / "media" / "table").glob("scores_*.table.json")
    assert json.loads(table.read_text())["data"] == [[0, 0.5, 0.1, 0.3], [1, 0.6, 0.2, 0.4]]


def test_disabled_logs_nothing(tmp_path):
    assert log_run(record("attn", 8, 48.0, name="x", config={}), "disabled", "p", None, tmp_path) is None
    assert not any(tmp_path.iterdir())


def test_unknown_mode_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="Unknown wandb mode"):
        log_run(record("attn", 8, 48.0, name="x", config={}), "cloud", "p", None, tmp_path)
