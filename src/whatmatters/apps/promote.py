"""The promote app (experiments/promote.py): copy the records behind the committed tables and figures from the
local results store into the committed set (records.committed), so a fresh clone regenerates them."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from whatmatters.records.committed import all_records
from whatmatters.records.committed import promote as promote_records
from whatmatters.records.parsing import RecordError
from whatmatters.report.plots import heatmap_runs


def promote(cfg: DictConfig) -> list[Path]:
    """Promote every record a figures/*.csv names, the run each committed heatmap draws, and every record of
    `cfg.experiments`; returns the files written. SystemExit naming the CSVs when a named record is in
    neither the store nor the committed set."""
    records = all_records(cfg.results_dir, cfg.committed_dir)
    figures = Path(cfg.figures_dir)
    heatmaps = [r.key for stem, _, r in heatmap_runs(records) if (figures / f"{stem}.png").exists()]
    try:
        return promote_records(
            cfg.results_dir, cfg.committed_dir, figures, list(cfg.experiments), keys=heatmaps
        )
    except RecordError as err:
        raise SystemExit(str(err)) from None
