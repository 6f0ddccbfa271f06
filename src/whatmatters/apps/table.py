"""The table app (experiments/table.py): one of the paper's tables from the results store (no model runs)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from whatmatters.records.committed import all_records
from whatmatters.report.table_files import where_filters, write_experiment_table
from whatmatters.report.tables import TableError


def table(cfg: DictConfig) -> Path:
    """Write `cfg.table`'s table for `cfg.model` on `cfg.eval` as .md/.csv/.tex; returns the Markdown file.
    The records of a table must share one setting; if not, the error lists the fields that differ."""
    if not isinstance(cfg.eval.suite, str):
        raise SystemExit(f"eval.suite={cfg.eval.suite} is not valid: one suite name. Fix: eval=paper_table2")
    records = all_records(cfg.results_dir, cfg.committed_dir)
    try:
        where = where_filters(OmegaConf.to_container(cfg.where) if cfg.where is not None else None)
        return write_experiment_table(
            records, cfg.table, cfg.model.name, cfg.eval.suite, where, Path(cfg.out_dir)
        )
    except TableError as err:
        raise SystemExit(f"{cfg.table}: {err} (results store: {cfg.results_dir})") from None
