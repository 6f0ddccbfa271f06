"""A table as a reader sees it and as files: cells folded with their stderr, interval or flag; .md/.csv/.tex.

`tables.build_table` makes the numbers (one column per quantity, helpers such as ` ±` beside them); this
module only formats and writes them, so a table rebuilt from the same records is byte-identical.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from whatmatters.files import atomic_write_text
from whatmatters.records.store import RunRecord
from whatmatters.report.tables import HELPERS, TableError, build_paired_table, build_table


def _cell(frame: pd.DataFrame, row: int, col: str) -> str:
    """One display cell: value ± stderr, value [low, high], value plus its flag, or `--`."""

    def helper(suffix: str) -> Any:
        return frame.at[row, col + suffix] if col + suffix in frame else None

    value, flag = frame.at[row, col], helper(" flag")
    flag = flag if isinstance(flag, str) else None
    if _nan(value):
        return flag or "--"
    if not pd.api.types.is_number(value) or pd.api.types.is_integer(value):
        return str(value)  # a count (batch size, layers, tokens) reads exactly, not as 2.05e+03
    sign = "+" if col.startswith("Δ") else ""
    ratio = col.endswith("speedup")  # speedups read as 1.25x [1.20, 1.30]
    if not _nan(se := helper(" ±")):
        text = f"{value:{sign}.1f} ± {se:.1f}"
    elif not _nan(low := helper(" low")):
        high = helper(" high")
        text = f"{value:.2f}x [{low:.2f}, {high:.2f}]" if ratio else f"{value:.3g} [{low:.3g}, {high:.3g}]"
    else:
        text = f"{value:+.1f}" if sign else f"{value:.2f}x" if ratio else f"{value:.3g}"
    return f"{text} {flag}" if flag else text


def _nan(value: Any) -> bool:
    return value is None or (pd.api.types.is_number(value) and math.isnan(value))


def display(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame as a reader sees it: stderrs, intervals and flags folded into the cell they qualify."""
    shown = [c for c in frame.columns if not c.endswith(HELPERS)]
    frame = frame.reset_index(drop=True)
    return pd.DataFrame({c: [_cell(frame, i, c) for i in range(len(frame))] for c in shown})


def write_table(frame: pd.DataFrame, stem: str | Path, title: str) -> list[Path]:
    """`stem`.md (notes, then the table), .csv (every number, each row's record key) and .tex."""
    stem = Path(stem)
    notes = frame.attrs.get("notes") or [
        "Measured by this repo unless the column says `paper`: `paper ...` columns are published numbers "
        "(arXiv 2406.15786 v6), not reruns."
    ]
    paths = [stem.with_suffix(ext) for ext in (".md", ".csv", ".tex")]
    shown = display(frame)
    body = shown.to_markdown(index=False, disable_numparse=True)
    atomic_write_text(paths[0], f"# {title}\n\n" + "\n".join(f"- {n}" for n in notes) + f"\n\n{body}\n")
    atomic_write_text(paths[1], frame.to_csv(index=False))
    atomic_write_text(paths[2], shown.to_latex(index=False))
    return paths


def table_stem(out_dir: Path, table: str, model: str, suite: str) -> Path:
    """figures/<table> for the embedded default on its suite (the committed tables), else a name that says
    the model and suite, so tables of other settings never overwrite them."""
    default = (model, suite) == ("smollm2-135m", "embedded")
    return out_dir / (table if default else f"{table}_{model}_{suite}")


def write_experiment_table(
    records: Iterable[RunRecord],
    table: str,
    model: str,
    suite: str,
    where: Mapping[str, Any],
    out_dir: Path,
) -> Path:
    """`table` (an experiment name) for one model and suite from `records`, written as .md/.csv/.tex, and
    beside it `<stem>_paired.*`, the per-task paired differences, when the table has a baseline; returns the
    main .md. TableError when no record matches or the records mix settings (tables.select)."""
    records = list(records)  # read twice (table, paired table); the store hands a one-pass generator
    frame = build_table(records, table, model, suite, where)
    if frame.empty:
        filters = "".join(f", {k}={v}" for k, v in where.items())
        raise TableError(f"no records of {table} for model={model}, suite={suite}{filters}")
    stem, title = table_stem(out_dir, table, model, suite), f"{table}: {model}, {suite} suite"
    md, *_ = write_table(frame, stem, title)
    paired = build_paired_table(records, table, model, suite, where)
    if not paired.empty:
        write_table(paired, stem.with_name(stem.name + "_paired"), f"{title}, per-task paired differences")
    return md


def where_filters(where: Any) -> dict[str, Any]:
    """The table app's `where` as {field: value}; TableError naming the value and the fix for any other shape
    (a list such as `where=[eval.limit=50]` is the old --where habit)."""
    if where is None:
        return {}
    if not isinstance(where, Mapping):
        raise TableError(
            f"where={where!r} is not valid: it takes {{FIELD:VALUE,...}}. Fix: 'where={{eval.limit:50}}'"
        )
    return dict(where)
