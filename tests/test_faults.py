"""Faults a cluster brings, on the results store and the score cache: a worker killed mid-write, a truncated
or hand-edited file, a full disk. Nothing half-written is ever read as a result, and each failure names the
file and the fix."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import record_dict
from whatmatters import files
from whatmatters.apps import run as run_app
from whatmatters.method.score_data import Scores
from whatmatters.records.claims import Claim, claim_path
from whatmatters.records.store import ResultsStore, StoreError
from whatmatters.report.table_files import write_experiment_table

FORK = multiprocessing.get_context("fork")
SCORES = Scores(attn=[0.1, 0.2], mlp=[0.3, 0.4], block=[0.5, 0.6], meta={"criterion": "cosine"})


def _write_and_hang(write, ready) -> None:
    """Run `write` with fsync (between the temporary file's data and the rename) stopped, then wait to die."""

    def hang(fd: int) -> None:
        ready.set()
        time.sleep(60)

    files.os.fsync = hang
    write()


def _kill_during(write) -> None:
    ready = FORK.Event()
    child = FORK.Process(target=_write_and_hang, args=(write, ready))
    child.start()
    assert ready.wait(10)
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    assert child.exitcode == -signal.SIGKILL


def test_sigkill_during_a_record_write_keeps_the_stored_record_whole(tmp_path):
    store = ResultsStore(tmp_path)
    store.put(record_dict("attn", 4, 60.0, experiment="table1"))
    _kill_during(lambda: store.put(record_dict("attn", 4, 60.0, experiment="table2")))
    assert [r.experiments for r in store.records()] == [["table1"]]  # the old record, whole
    _kill_during(lambda: store.put(record_dict("attn", 8, 55.0)))
    assert store.get("attn8") is None  # a new key: no record rather than a partial one
    store.put(record_dict("attn", 8, 55.0))  # the re-run stores it
    assert store.get("attn8").eval.avg == 55.0


def _claim_and_cache(path: Path) -> None:
    Claim.take(path)
    SCORES.save(path)


def test_sigkill_during_a_score_cache_write_leaves_no_cache_and_a_claim_taken_over_at_once(tmp_path):
    path = tmp_path / "scores" / "k.json"
    _kill_during(lambda: _claim_and_cache(path))
    assert not path.exists() and claim_path(path).exists()  # the dead worker's claim is left behind
    with pytest.warns(UserWarning, match="on this host has ended"):
        claim = Claim.take(path)  # ... and is stale at once: its process is gone
    assert claim is not None
    claim.release()


@pytest.mark.parametrize("damage", ["truncated", "hand-edited"])
def test_a_damaged_score_cache_is_named_and_recomputed_once(tmp_path, monkeypatch, damage):
    store = ResultsStore(tmp_path)
    monkeypatch.setattr(run_app.run_keys, "scores_key", lambda cfg: "k")
    path = tmp_path / "scores" / "k.json"
    SCORES.save(path)
    text = path.read_text()
    path.write_text(text[: len(text) // 2] if damage == "truncated" else text.replace('"block"', '"blocks"'))
    computed = []
    monkeypatch.setattr(run_app, "method_scores", lambda cfg, model, ids: computed.append(1) or SCORES)
    with pytest.warns(UserWarning, match=r"Recomputing the score cache: .*scores/k.json is not a valid"):
        assert run_app._one_shot_scores(None, store, None, None).block == SCORES.block
    assert computed == [1] and Scores.load(path).attn == SCORES.attn  # rewritten whole
    assert run_app._one_shot_scores(None, store, None, None).mlp == SCORES.mlp and computed == [1]


def test_a_truncated_record_is_named_skipped_and_the_rest_still_read(tmp_path):
    store = ResultsStore(tmp_path)
    store.put(record_dict("attn", 4, 60.0))
    store.put(record_dict("attn", 8, 55.0))
    text = store.path("attn8").read_text()
    store.path("attn8").write_text(text[:100])
    with pytest.warns(UserWarning, match=r"attn8.json: unreadable results record .*delete it and re-run"):
        assert [r.key for r in store.records()] == ["attn4"]
    with pytest.warns(UserWarning, match="attn8.json"):
        assert store.get("attn8") is None  # not finished: the sweep re-runs it and replaces the file


def test_a_full_disk_fails_the_record_write_naming_the_file_and_the_fix(tmp_path, monkeypatch):
    store = ResultsStore(tmp_path)
    store.put(record_dict("attn", 4, 60.0, experiment="table1"))

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files.os, "fsync", full)
    with pytest.raises(
        StoreError, match=r"attn4.json: results record not written \(No space left.*Fix: free space"
    ):
        store.put(record_dict("attn", 4, 60.0, experiment="table2"))
    with pytest.raises(StoreError, match=r"attn8.json: results record not written"):
        store.put(record_dict("attn", 8, 55.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attn4.json"]  # no temporary file left
    assert store.get("attn4").experiments == ["table1"]


FULL_DISK = """
import json, sys
from whatmatters.records.store import ResultsStore, StoreError
from whatmatters.report.table_files import write_experiment_table
try:
    ResultsStore(sys.argv[1]).put(json.loads(open(sys.argv[2]).read()))
except StoreError as err:
    print(err)
    sys.exit(3)
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux) for a private tmpfs")
def test_a_really_full_tmpfs_fails_the_record_write_and_leaves_nothing(tmp_path):
    disk, record = tmp_path / "disk", tmp_path / "record.json"
    disk.mkdir()
    record.write_text(json.dumps(record_dict("attn", 4, 60.0)))
    script = (
        f"mount -t tmpfs -o size=16k none {disk} || exit 99; "
        f"cat /dev/zero > {disk}/filler 2>/dev/null; "
        f"{sys.executable} -c '{FULL_DISK}' {disk} {record}; echo rc=$?; ls -A {disk}"
    )
    out = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    if out.returncode == 99:
        pytest.skip(f"no private tmpfs here (user namespaces off?): {out.stderr[-300:]}")
    assert "attn4.json: results record not written (No space left on device)" in out.stdout, out
    assert "rc=3" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "filler"  # no record, no temporary file


def test_a_table_from_a_store_with_a_corrupt_record_is_written_from_the_others(tmp_path):
    store = ResultsStore(tmp_path / "results")
    for target, n, avg in (("none", 0, 50.0), ("attn", 4, 49.0), ("attn", 8, 45.0)):
        store.put(record_dict(target, n, avg))
    store.path("attn8").write_text(store.path("attn8").read_text()[:50])  # a node died in a non-atomic copy
    with pytest.warns(UserWarning, match=r"attn8.json: unreadable results record"):
        md = write_experiment_table(
            store.records(), "table2", "smollm2-135m", "embedded", {}, tmp_path / "fig"
        )
    assert "Attn-4" in md.read_text() and "Attn-8" not in md.read_text()
