"""Lenient parsing of record parts: a key a part does not declare is kept in its `extra` and written back
unchanged, so a field a newer version added survives a rewrite by an older one."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any


class RecordError(ValueError):
    """A record file that cannot be read as a RunRecord; the message names the file and the fix."""


def parse_fields(cls: type, data: Mapping[str, Any], **parsed: Any) -> Any:
    """`cls` from the keys of `data` it declares (those in `parsed` given already parsed); the other keys go
    to its `extra`, so a field another version added survives a rewrite."""
    names = {f.name for f in fields(cls)} - {"extra"}
    known = {k: v for k, v in data.items() if k in names}
    return cls(**known | parsed, extra={k: v for k, v in data.items() if k not in names})


UNSTORED = ("extra", "source")  # merged back at its level / where a record was read from


def plain(value: Any) -> Any:
    """A record part as JSON-ready data: dataclasses flattened, `extra` merged back at its level."""
    if is_dataclass(value):
        out = {f.name: plain(getattr(value, f.name)) for f in fields(value) if f.name not in UNSTORED}
        return out | getattr(value, "extra", {})
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value
