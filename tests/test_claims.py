"""Claims on store keys, with real processes: one worker per key at a time, a dead worker's claim is taken
over (at once on its host, after the heartbeat timeout elsewhere), and a racing takeover has one winner."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from whatmatters.files import atomic_write_text
from whatmatters.records import claims
from whatmatters.records.claims import Claim, claim_path

FORK = multiprocessing.get_context("fork")  # fast children; they touch no torch


def _worker(root: str, keys: list[str], log: str) -> None:
    """Compute every key that is not stored yet, the way the run app does: claim, re-check, compute, store."""
    for key in keys:
        target = Path(root) / f"{key}.json"
        if target.exists():
            continue
        with Claim.wait(target, poll_s=0.01):
            if target.exists():
                continue
            with open(log, "a") as f:
                f.write(f"start {key} {os.getpid()} {time.time()}\n")
            time.sleep(0.05)
            with open(log, "a") as f:
                f.write(f"end {key} {os.getpid()} {time.time()}\n")
            atomic_write_text(target, json.dumps({"key": key, "pid": os.getpid()}))


def test_six_processes_on_five_shared_keys_compute_each_key_once(tmp_path):
    keys = [f"k{i}" for i in range(5)]
    log = tmp_path / "log.txt"
    procs = [
        FORK.Process(target=_worker, args=(str(tmp_path), keys[i % 2 :] + keys[: i % 2], str(log)))
        for i in range(6)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0] * 6
    starts = [line.split() for line in log.read_text().splitlines() if line.startswith("start")]
    assert sorted(s[1] for s in starts) == keys  # each key computed exactly once
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{k}.json" for k in keys] + ["log.txt"])
    assert all(json.loads((tmp_path / f"{k}.json").read_text())["key"] == k for k in keys)


def _hold_then_signal(target: str, ready) -> None:
    claim = Claim.take(Path(target))
    assert claim is not None
    ready.set()
    time.sleep(60)


def test_a_claim_of_a_killed_process_on_this_host_is_taken_over_at_once(tmp_path):
    target = tmp_path / "k.json"
    ready = FORK.Event()
    child = FORK.Process(target=_hold_then_signal, args=(str(target), ready))
    child.start()
    assert ready.wait(10)
    assert Claim.take(target) is None  # its owner is alive: the key is busy
    assert claims.holder(target)["pid"] == child.pid
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    with pytest.warns(UserWarning, match=rf"stale claim .*k.json.claim .*process {child.pid} on this host"):
        claim = Claim.take(target)
    assert claim is not None and claims.holder(target)["pid"] == os.getpid()
    claim.release()
    assert not claim_path(target).exists()


def _foreign_claim(target: Path, age_s: float, **owner) -> None:
    """A claim written by a worker on another node, its last heartbeat `age_s` seconds ago."""
    path = claim_path(target)
    path.write_text(json.dumps({"host": "node-elsewhere", "pid": 4242, "started": 0.0, **owner}))
    os.utime(path, (time.time() - age_s, time.time() - age_s))


def test_a_claim_from_another_node_holds_while_its_heartbeat_is_fresh_and_is_stale_after_the_timeout(
    tmp_path,
):
    target = tmp_path / "k.json"
    _foreign_claim(target, age_s=5)
    assert Claim.take(target, stale_after_s=60) is None
    _foreign_claim(target, age_s=120)
    with pytest.warns(UserWarning, match=r"node-elsewhere:4242: no heartbeat for 12\d s \(> 60 s\)"):
        claim = Claim.take(target, stale_after_s=60)
    assert claim is not None
    claim.release()


def test_the_heartbeat_keeps_a_held_claim_fresh(tmp_path):
    target = tmp_path / "k.json"
    claim = Claim.take(target, heartbeat_s=0.05)
    os.utime(claim.path, (time.time() - 1000, time.time() - 1000))
    time.sleep(0.3)
    assert time.time() - claim.path.stat().st_mtime < 5
    claim.release()


def test_a_requeued_slurm_task_takes_over_its_own_claim_and_no_other(tmp_path, monkeypatch):
    target = tmp_path / "k.json"
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    _foreign_claim(target, age_s=1, slurm="78.0", restart=0)  # another task: busy
    assert Claim.take(target) is None
    _foreign_claim(target, age_s=1, slurm="77.0", restart=0)  # this task before its requeue: stale
    with pytest.warns(UserWarning, match=r"earlier run of this Slurm task \(77.0\)"):
        claim = Claim.take(target)
    assert claim is not None
    claim.release()


def _race(target: str, go, wins) -> None:
    go.wait(10)
    claim = Claim.take(Path(target))
    if claim is not None:
        start = time.monotonic()
        time.sleep(0.5)  # hold it while the others look
        wins.put((start, time.monotonic()))
        claim.release()


def test_processes_racing_to_break_one_stale_claim_never_hold_it_at_once(tmp_path):
    target = tmp_path / "k.json"
    _foreign_claim(target, age_s=10_000)
    go, wins = FORK.Event(), FORK.Queue()
    procs = [FORK.Process(target=_race, args=(str(target), go, wins)) for _ in range(6)]
    for p in procs:
        p.start()
    go.set()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0] * 6
    winners = []
    while not wins.empty():
        winners.append(wins.get())
    winners.sort()
    assert winners  # one took it over; a process scheduled late may take it after the release, never during
    assert all(later[0] >= earlier[1] for earlier, later in zip(winners, winners[1:], strict=False)), winners
    assert not claim_path(target).exists()
    assert not [p for p in tmp_path.iterdir() if "stale" in p.name or p.name.startswith(".k.json.claim.")]
