"""The README's result blocks, generated from the committed tables and figure CSVs (make readme).

A block is two HTML comments (invisible on GitHub) around generated text:

    <!-- results: figures/table2_smollm2-135m_table2_sample.md | method; hellaswag; Avg; ΔAvg; speedup -->
    ...
    <!-- end results -->

A `.md` source is a table file the table app wrote: its Markdown table, cells as written, with the listed
columns (all when none are listed). A `.csv` source is a figure's data: its rows, with the listed columns,
numbers to 3 significant digits. Each block ends with a link to its source file, and says so when the
file's records were lost (its stem in results_committed/v1/legacy.txt). A reader then never meets a typed
table, and a test fails when the README and the files disagree.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

BLOCK = re.compile(
    r"(?P<open><!-- results: (?P<source>[^|>]+?)(?: \| (?P<columns>[^>]*?))? -->\n)(?P<body>.*?)"
    r"(?P<close><!-- end results -->)",
    re.S,
)


class ReadmeError(ValueError):
    """A result block names a file or a column that is not there."""


def _markdown_rows(path: Path) -> list[list[str]]:
    """The rows of the Markdown table in a table app's .md (header first, the separator dropped)."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("|")]
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return [row for i, row in enumerate(rows) if i != 1]


def _csv_rows(path: Path) -> list[list[str]]:
    """A figure CSV's rows, numbers to 3 significant digits (the CSV keeps every digit)."""

    def cell(text: str) -> str:
        try:
            value = float(text)
        except ValueError:
            return text
        return text if text.lstrip("-").isdigit() else f"{value:.3g}"

    with path.open(newline="") as f:
        rows = list(csv.reader(f))
    return rows[:1] + [[cell(c) for c in row] for row in rows[1:]]


def render_block(root: Path, source: str, columns: list[str], legacy: set[str]) -> str:
    """The generated text of one block: the chosen columns as a Markdown table, then its source link."""
    path = root / source
    if not path.exists():
        raise ReadmeError(
            f"README block names {source}, which does not exist. Fix: the path of a file in figures/"
        )
    rows = _markdown_rows(path) if path.suffix == ".md" else _csv_rows(path)
    header = rows[0]
    columns = columns or header
    if unknown := [c for c in columns if c not in header]:
        raise ReadmeError(f"README block on {source}: no column {unknown}; it has {header}")
    picked = [[row[header.index(c)] for c in columns] for row in rows]
    table = ["| " + " | ".join(picked[0]) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    table += ["| " + " | ".join(row) + " |" for row in picked[1:]]
    note = f"From [`{source}`]({source}) by `make readme`"
    if path.stem in legacy:
        note += (
            "; a legacy file: its run records were lost, so no command regenerates it "
            "([legacy.txt](results_committed/v1/legacy.txt))"
        )
    return "\n".join(table) + f"\n\n{note}.\n"


def render(text: str, root: Path, legacy: set[str]) -> str:
    """`text` with every result block's body regenerated from the file it names (paths relative to `root`)."""

    def body(m: re.Match) -> str:
        columns = [c.strip() for c in (m["columns"] or "").split(";") if c.strip()]
        return m["open"] + render_block(root, m["source"].strip(), columns, legacy) + m["close"]

    return BLOCK.sub(body, text)
