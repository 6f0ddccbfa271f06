"""Claims on store keys: many workers share one results store, one key is computed by one worker at a time,
and a worker that dies cannot hold its key forever.

A claim is a file `<target>.claim` beside what it guards (a record, a cached score file). It is born whole:
its JSON (host, pid, the process's start time, the Slurm job/task and restart count) is written to a
temporary file that is then hard-linked to the claim's name, an atomic create-if-absent on local disks and
on NFS (the link count is checked where NFS reports a lost reply as an error). While held, a thread touches
the file every `HEARTBEAT_S` seconds. Another worker judges a claim stale, and takes it over, when:

- its owner ran on this host and that process is gone (or its pid now names a younger process), or
- its owner is an earlier run of the taker's own Slurm task (submitit requeued the job after preemption), or
- its heartbeat (the file's mtime) is older than `STALE_AFTER_S` (a dead node, a frozen process).

Breakers take turns: a worker removes a stale claim only while it holds `<claim>.break` (made the same
way, held for milliseconds) and only if the claim file is still the one it judged (same token), so of
many workers breaking one stale claim, one removes it and the first to create a new claim wins. (A frozen
owner that wakes after its claim was taken over is told by its heartbeat; its run may then be duplicated,
never lost: records are written whole under the same key.)
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import threading
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import psutil

HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0  # ten missed heartbeats: tolerates a loaded node and clocks that differ by a minute
POLL_S = 2.0  # how often a waiting worker looks again


def claim_path(target: Path) -> Path:
    """The claim file that guards `target`."""
    return target.with_name(f"{target.name}.claim")


def _me() -> dict[str, Any]:
    slurm = os.environ.get("SLURM_JOB_ID")
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": psutil.Process().create_time(),
        "slurm": f"{slurm}.{os.environ.get('SLURM_PROCID', '0')}" if slurm else None,
        "restart": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
        "claimed": time.time(),
        "token": uuid.uuid4().hex,  # this claim's identity: an inode number is reused as soon as it is freed
    }


def describe(owner: dict[str, Any] | None) -> str:
    """`host:pid` of a claim's owner, for messages."""
    return "an unknown worker" if owner is None else f"{owner.get('host')}:{owner.get('pid')}"


def stale_reason(
    owner: dict[str, Any] | None, mtime: float, stale_after_s: float = STALE_AFTER_S
) -> str | None:
    """Why the claim of `owner` (heartbeat at `mtime`) no longer holds, or None while it does."""
    me = _me()
    if owner is None:  # unreadable: only a hand-edited file; judged by its age alone
        return (
            f"unreadable claim, heartbeat {time.time() - mtime:.0f} s ago"
            if _expired(mtime, stale_after_s)
            else None
        )
    if owner.get("host") == me["host"] and not _alive(owner.get("pid"), owner.get("started")):
        return f"process {owner.get('pid')} on this host has ended"
    if me["slurm"] and owner.get("slurm") == me["slurm"] and owner.get("restart", 0) < me["restart"]:
        return f"an earlier run of this Slurm task ({me['slurm']}), requeued"
    if _expired(mtime, stale_after_s):
        return f"no heartbeat for {time.time() - mtime:.0f} s (> {stale_after_s:.0f} s)"
    return None


def _expired(mtime: float, stale_after_s: float) -> bool:
    return time.time() - mtime > stale_after_s


def _alive(pid: Any, started: Any) -> bool:
    try:
        process = psutil.Process(int(pid))
        return process.status() != psutil.STATUS_ZOMBIE and abs(process.create_time() - float(started)) < 0.5
    except (psutil.Error, TypeError, ValueError):
        return False


def _read(path: Path) -> tuple[dict[str, Any] | None, os.stat_result] | None:
    """The claim's owner (None if unreadable) and stat, or None when there is no claim file."""
    try:
        with open(path) as f:
            st = os.fstat(f.fileno())
            text = f.read()
    except FileNotFoundError:
        return None
    try:
        owner = json.loads(text)
    except json.JSONDecodeError:
        owner = None
    return (owner if isinstance(owner, dict) else None), st


def holder(target: Path) -> dict[str, Any] | None:
    """The owner of the claim on `target`, or None when it is unclaimed (or the claim is unreadable)."""
    found = _read(claim_path(target))
    return None if found is None else found[0]


class Claim:
    """A held claim on one target; release it (or leave its `with` block) when the work is stored."""

    def __init__(self, path: Path, owner: dict[str, Any], heartbeat_s: float) -> None:
        self.path, self.owner = path, owner
        self._stop = threading.Event()
        self._beat = threading.Thread(target=self._heartbeat, args=(heartbeat_s,), daemon=True)
        self._beat.start()

    @classmethod
    def take(
        cls, target: Path, stale_after_s: float = STALE_AFTER_S, heartbeat_s: float = HEARTBEAT_S
    ) -> Claim | None:
        """Claim `target`, breaking a stale claim first; None while a live worker holds it."""
        path = claim_path(target)
        path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            owner = _me()
            if _create(path, owner):
                return cls(path, owner, heartbeat_s)
            found = _read(path)
            if found is None:
                continue  # released between our attempt and the read: try again
            reason = stale_reason(found[0], found[1].st_mtime, stale_after_s)
            if reason is None:
                return None
            if _break(path, _identity(found), stale_after_s):
                warnings.warn(
                    f"Took over the stale claim {path} of {describe(found[0])}: {reason}", stacklevel=2
                )

    @classmethod
    def wait(
        cls,
        target: Path,
        stale_after_s: float = STALE_AFTER_S,
        heartbeat_s: float = HEARTBEAT_S,
        poll_s: float = POLL_S,
    ) -> Claim:
        """Claim `target`, waiting while a live worker holds it (a stale claim is taken over)."""
        told = False
        while (claim := cls.take(target, stale_after_s, heartbeat_s)) is None:
            if not told:
                print(f"[wait] {target.name} is being computed by {describe(holder(target))}")
                told = True
            time.sleep(poll_s)
        return claim

    def held(self) -> bool:
        """Whether the claim file is still this claim (not broken by a worker that judged it stale)."""
        return _identity(_read(self.path)) == self.owner["token"]

    def release(self) -> None:
        """Stop the heartbeat and remove the claim file, unless another worker has taken it over."""
        self._stop.set()
        self._beat.join()
        if self.held():
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _heartbeat(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            if not self.held():
                warnings.warn(f"Claim {self.path} was taken over by another worker", stacklevel=1)
                return
            os.utime(self.path)


def _identity(found: tuple[dict[str, Any] | None, os.stat_result] | None) -> object:
    """What tells one claim file from another: its token (a file without one: its inode and mtime); None
    when there is no file."""
    if found is None:
        return None
    owner, st = found
    return (owner or {}).get("token") or (st.st_ino, st.st_mtime_ns)


def _create(path: Path, owner: dict[str, Any]) -> bool:
    """Create the claim file whole (write, then link, which fails if it exists); whether this worker did."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(owner, f)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:
            if os.stat(tmp).st_nlink != 2:  # NFS: a retried link reports an error but may have worked
                raise
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def _break(path: Path, judged: object, stale_after_s: float) -> bool:
    """Remove the stale claim judged (by identity) while holding `<claim>.break`, so breakers take turns
    and none can remove a fresh claim another breaker made; whether this worker removed it."""
    lock = path.with_name(f"{path.name}.break")
    me = _me()
    if not _create(lock, me):  # another worker is breaking it (milliseconds), unless it died doing so
        found = _read(lock)
        if found is not None and stale_reason(found[0], found[1].st_mtime, stale_after_s) is not None:
            _remove_if(lock, _identity(found))
        time.sleep(0.01)
        return False
    try:
        if _identity(_read(path)) != judged:
            return False  # already broken, and maybe claimed afresh
        path.unlink()  # its owner is gone, and every other breaker waits for the lock we hold
        return True
    finally:
        _remove_if(lock, me["token"])


def _remove_if(path: Path, identity: object) -> None:
    """Remove `path` if it is still the file `identity` names; a newer file moved by mistake is put back."""
    tomb = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex}")
    try:
        os.rename(path, tomb)
    except FileNotFoundError:
        return  # removed already
    try:
        if _identity(_read(tomb)) != identity:
            # A third claim may exist already: then the moved one's heartbeat reports it lost.
            with contextlib.suppress(FileExistsError):
                os.link(tomb, path)
    finally:
        tomb.unlink(missing_ok=True)
