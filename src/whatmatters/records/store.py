"""The local results store: one typed JSON record (`run_record.RunRecord`) per finished run, by config key.

A record is written atomically (temporary file + fsync + rename): a killed sweep leaves either a whole
record or none, and re-running the sweep skips every key already stored. Many workers may share one store:
a worker claims a key before computing it (`claim`, `hold`; records.claims says how a dead worker's claim
is detected and taken over). The record types are re-exported here, so `whatmatters.records.store` is the
one import a writer or reader needs.
"""

from __future__ import annotations

import errno
import hashlib
import json
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from whatmatters.files import atomic_write_text
from whatmatters.records.claims import Claim
from whatmatters.records.eval_result import Docs, EvalResult, TaskResult
from whatmatters.records.parsing import RecordError
from whatmatters.records.record import (
    PHASES,
    READABLE_SCHEMAS,
    RUN_ONLY,
    SCHEMA,
    Interval,
    Method,
    RunRecord,
    Sdr,
    Speed,
)

__all__ = [
    "PHASES",
    "READABLE_SCHEMAS",
    "RUN_ONLY",
    "SCHEMA",
    "Docs",
    "EvalResult",
    "Interval",
    "Method",
    "RecordError",
    "ResultsStore",
    "StoreError",
    "RunRecord",
    "Sdr",
    "Speed",
    "TaskResult",
    "base_setting",
    "config_key",
    "matches",
    "read_record",
    "without",
]


def config_key(spec: Mapping[str, Any]) -> str:
    """A stable hash of what determines a run's numbers (not where it writes or how it logs)."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def without(setting: Mapping[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """`setting` less the fields `names` (a name ending in "." drops that whole group: "data.")."""
    return {
        k: v
        for k, v in setting.items()
        if not any(k == n or (n.endswith(".") and k.startswith(n)) for n in names)
    }


def base_setting(setting: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a setting that a pruned run shares with its baseline."""
    return without(setting, RUN_ONLY)


def matches(record: RunRecord, where: Mapping[str, Any]) -> bool:
    """Whether `record` has every `field=value` of `where` (setting fields, `experiment`, `target`);
    values compare as text, so command-line filters (`speed.prompt_len=512`) work unchanged."""
    facts = record.setting() | {"target": record.method.target, "dropped": record.dropped}
    for name, want in where.items():
        if name == "experiment":
            if str(want) not in record.experiments:
                return False
        elif str(facts.get(name)) != str(want):
            return False
    return True


def read_record(path: Path) -> RunRecord:
    """The record stored at `path`; RecordError naming the file when it is corrupt or of another schema."""
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RecordError(
            f"{path}: unreadable results record ({err}); delete it and re-run that config"
        ) from err
    return RunRecord.from_dict(data, source=path)


class StoreError(OSError):
    """A record could not be written (a full disk, a lost mount); nothing was written for it."""


class ResultsStore:
    """A folder of `<key>.json` records: put, get by key, query by setting fields."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> RunRecord | None:
        """The stored record for `key`, or None when the run has not finished.

        A corrupt or old record counts as not finished (with a warning naming its file): the sweep
        re-runs that config and the fresh record replaces it.
        """
        path = self.path(key)
        return self._read_or_warn(path) if path.exists() else None

    def put(self, record: RunRecord | Mapping[str, Any]) -> Path:
        """Store a finished run's record atomically; a plain dict is checked by parsing it first."""
        if not isinstance(record, RunRecord):
            record = RunRecord.from_dict(record)
        path = self.path(record.key)
        try:
            atomic_write_text(path, json.dumps(record.to_dict(), indent=1, default=str))
        except OSError as err:
            full = err.errno in (errno.ENOSPC, errno.EDQUOT)
            fix = (
                f"free space on {self.root} (or set results_dir= to another disk)"
                if full
                else "check the disk and its mount"
            )
            raise StoreError(
                err.errno,
                f"{path}: results record not written ({err.strerror}); nothing half-written is left. "
                f"Fix: {fix} and re-run the sweep: stored keys are skipped",
            ) from err
        return path

    def claim(self, key: str) -> Claim | None:
        """Claim `key` before computing it; None while another live worker holds it (records.claims)."""
        return Claim.take(self.path(key))

    def hold(self, key: str) -> Claim:
        """Claim `key`, waiting while another live worker holds it (for a shared input, like a baseline)."""
        return Claim.wait(self.path(key))

    def records(self) -> Iterator[RunRecord]:
        """Every readable record, in file-name order; unreadable ones are skipped with a warning naming
        the file (never deleted), so one bad file does not hide the rest."""
        for path in sorted(self.root.glob("*.json")):
            record = self._read_or_warn(path)
            if record is not None:
                yield record

    def query(self, **where: Any) -> list[RunRecord]:
        """Records whose setting fields equal `where` (see `matches`): query(model="m", mode="iterative")."""
        return [r for r in self.records() if matches(r, where)]

    @staticmethod
    def _read_or_warn(path: Path) -> RunRecord | None:
        try:
            return read_record(path)
        except RecordError as err:
            warnings.warn(f"Skipping results record: {err}", stacklevel=3)
            return None
