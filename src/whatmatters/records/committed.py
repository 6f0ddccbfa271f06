"""The committed records: the run records behind the committed tables and figures, versioned in git.

The local store (`results/`, git-ignored) is where runs write. What a committed table or figure draws
must be regenerable on a fresh clone without a model run, so its records are copied ("promoted") into
`results_committed/v1/<key>.json`, byte for byte: the folder is a read-only results store a reader can open
on GitHub (plain JSON: git compresses it in its packs as well as gzip would, and a cell's record stays one
click away). Readers take both: the local store's record wins for a key in both (a re-run not yet
promoted). `legacy.txt` beside the records lists the stems of committed figure files whose records were
lost before records were committed; they are reported, never regenerated, and leave the list when their
CSV's records are promoted.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from pathlib import Path

from whatmatters.files import atomic_write_text
from whatmatters.records.parsing import RecordError
from whatmatters.records.record import RunRecord
from whatmatters.records.store import ResultsStore, base_setting

COMMITTED_DIR = Path("results_committed/v1")
LEGACY = "legacy.txt"


def all_records(results_dir: str | Path, committed_dir: str | Path | None) -> list[RunRecord]:
    """The local store's records, then the committed ones whose key the store lacks."""
    local = list(ResultsStore(results_dir).records())
    seen = {r.key for r in local}
    committed = ResultsStore(committed_dir).records() if committed_dir else ()
    return local + [r for r in committed if r.key not in seen]


def csv_keys(path: Path) -> set[str]:
    """The record keys a table's or figure's CSV names (its `key` column; none if it has no such column)."""
    with path.open(newline="") as f:
        return {row["key"] for row in csv.DictReader(f) if row.get("key")}


def legacy_stems(committed_dir: str | Path) -> list[str]:
    """The figure stems (`figures/<stem>.*`) listed as legacy: committed before their records were."""
    path = Path(committed_dir) / LEGACY
    if not path.exists():
        return []
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def keys_behind(figures_dir: str | Path, skip: Iterable[str] = ()) -> dict[str, set[str]]:
    """{CSV name: record keys it names} for every CSV under `figures_dir` with a `key` column, less the
    stems in `skip`."""
    skip = set(skip)
    out = {}
    for path in sorted(Path(figures_dir).glob("*.csv")):
        if path.stem not in skip and (keys := csv_keys(path)):
            out[path.name] = keys
    return out


def promote(
    results_dir: str | Path,
    committed_dir: str | Path,
    figures_dir: str | Path,
    experiments: Iterable[str] = (),
    keys: Iterable[str] = (),
) -> list[Path]:
    """Copy into the committed set the local records behind every figures/*.csv (its `key` column) and every
    record of `experiments` with the baselines of their settings, and `keys` (a figure that names its run
    elsewhere than a CSV: a heatmap's title); returns the files written or changed.
    The store's file is copied byte for byte, so promoting twice changes nothing.

    A key a CSV names that neither the store nor the committed set holds is an error naming the CSV (re-run
    it, or list its stem in legacy.txt); legacy stems whose CSV's keys are now all committed leave legacy.txt.
    """
    committed_dir, store, target = Path(committed_dir), ResultsStore(results_dir), ResultsStore(committed_dir)
    local = {r.key: r for r in store.records()}
    legacy = legacy_stems(committed_dir)
    behind = keys_behind(figures_dir, skip=legacy)
    wanted = {k for keys in behind.values() for k in keys}
    named = [r for r in local.values() if set(experiments) & set(r.experiments)]
    settings = [base_setting(r.setting()) for r in named]
    bases = [r for r in local.values() if r.is_baseline and r.setting() in settings]
    wanted |= {r.key for r in named + bases} | set(keys)
    # A legacy figure redrawn from new runs names keys the store holds: they come along, and the stem leaves
    # the list below once all its keys are committed. Its lost keys are no error.
    wanted |= {k for keys in keys_behind(figures_dir).values() for k in keys if k in local}
    committed = {p.stem for p in committed_dir.glob("*.json")}
    if missing := sorted(wanted - set(local) - committed):
        csvs = [name for name, keys in behind.items() if keys & set(missing)]
        raise RecordError(
            f"{len(missing)} record(s) named by {csvs} are in neither {results_dir} nor {committed_dir}: "
            f"{missing[:5]}. Fix: re-run those runs (then make figures), or list the file's stem in "
            f"{committed_dir / LEGACY} if its records are lost"
        )
    written = []
    for key in sorted(wanted & set(local)):
        text, path = store.path(key).read_text(), target.path(key)
        if not path.exists() or path.read_text() != text:
            atomic_write_text(path, text)
            written.append(path)
    written += _drop_recovered_legacy(committed_dir, figures_dir, legacy)
    return written


def _drop_recovered_legacy(committed_dir: Path, figures_dir: str | Path, legacy: list[str]) -> list[Path]:
    """Rewrite legacy.txt without the stems whose CSV's keys are now all committed (or that are gone)."""
    committed = {p.stem for p in committed_dir.glob("*.json")}
    keep = []
    for stem in legacy:
        csv_path = Path(figures_dir) / f"{stem}.csv"
        if any(Path(figures_dir).glob(f"{stem}.*")) and not (
            csv_path.exists() and csv_keys(csv_path) <= committed
        ):
            keep.append(stem)
    if keep == legacy:
        return []
    path = committed_dir / LEGACY
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    atomic_write_text(path, "\n".join(header + keep) + "\n")
    return [path]
