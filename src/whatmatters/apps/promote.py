"""The promote app (experiments/promote.py): copy the records behind the committed tables and figures from the
local results store into the committed set (records.committed), so a fresh clone regenerates them."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from whatmatters.records.committed import promote as promote_records
from whatmatters.records.record import RecordError


def promote(cfg: DictConfig) -> list[Path]:
    """Promote every record a figures/*.csv names, and every record of `cfg.experiments`; returns the files
    written. SystemExit naming the CSVs when a named record is in neither the store nor the committed set."""
    try:
        return promote_records(cfg.results_dir, cfg.committed_dir, cfg.figures_dir, list(cfg.experiments))
    except RecordError as err:
        raise SystemExit(str(err)) from None
