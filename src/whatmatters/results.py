"""The local results store: one JSON record per finished run, keyed by the config that matters.

Runs write records; tables, figures and notebooks only read them. A record is written atomically
(temporary file + rename), so a killed sweep leaves either a whole record or none, and re-running
the sweep skips every key already stored. Records that cannot be read (corrupt, or from an older
schema) are skipped with a warning naming the file, and never deleted.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from whatmatters.scores import atomic_write_text

SCHEMA = 1


def config_key(spec: Mapping[str, Any]) -> str:
    """A stable hash of what determines a run's numbers (not where it writes or how it logs)."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


class ResultsStore:
    """A folder of `<key>.json` records."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str) -> dict | None:
        """The stored record for `key`, or None when the run has not finished (or its file is unreadable)."""
        path = self.path(key)
        return _read(path) if path.exists() else None

    def put(self, record: dict) -> Path:
        """Store a finished run's record (must carry its `key`), atomically."""
        path = self.path(record["key"])
        atomic_write_text(path, json.dumps({"schema": SCHEMA, **record}, indent=1, default=str))
        return path

    def records(self) -> Iterator[dict]:
        """Every readable record, in file-name order; unreadable ones are skipped with a warning."""
        for path in sorted(self.root.glob("*.json")):
            record = _read(path)
            if record is not None:
                yield record


def _read(path: Path) -> dict | None:
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        warnings.warn(f"Skipping unreadable results record {path}: {err}", stacklevel=3)
        return None
    if not isinstance(record, dict) or record.get("schema") != SCHEMA or "key" not in record:
        found = record.get("schema") if isinstance(record, dict) else type(record).__name__
        warnings.warn(
            f"Skipping results record {path}: schema {found!r}, expected {SCHEMA}; re-run that config "
            "to refresh it (the file is left in place)",
            stacklevel=3,
        )
        return None
    return record
