"""The readme app (experiments/readme.py): regenerate the README's result blocks from the committed files."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from whatmatters.files import atomic_write_text
from whatmatters.records.committed import legacy_stems
from whatmatters.report.readme import ReadmeError, render


def readme(cfg: DictConfig) -> bool:
    """Rewrite `cfg.readme`'s result blocks from the files they name; returns whether anything changed.
    With `cfg.check`, change nothing and SystemExit when the README disagrees with its files."""
    path = Path(cfg.readme)
    text = path.read_text()
    try:
        new = render(text, path.parent, set(legacy_stems(cfg.committed_dir)))
    except ReadmeError as err:
        raise SystemExit(str(err)) from None
    if new != text and cfg.check:
        raise SystemExit(f"{path}'s result blocks differ from the files they name. Fix: make readme")
    if new != text:
        atomic_write_text(path, new)
    return new != text
