"""Build one of the paper's tables from the results store (no model is run) and print it (conf/table.yaml).

    python experiments/table.py table=table2              # embedded default, embedded suite
    python experiments/table.py table=table2 model=llama3-8b eval=paper_table2
    python experiments/table.py table=table2 'where={eval.limit:50,speed.prompt_len:512}'   # pick one setting
Writes figures/<table>.md, .csv and .tex (figures/<table>_<model>_<suite>.* for other models/suites). The
records of a table must share one setting; when they do not, the error lists the fields that differ.
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from whatmatters.results import ResultsStore
from whatmatters.table_files import where_filters, write_experiment_table
from whatmatters.tables import TableError


@hydra.main(config_path="../conf", config_name="table", version_base="1.3")
def main(cfg: DictConfig) -> None:
    if not isinstance(cfg.eval.suite, str):
        raise SystemExit(f"eval.suite={cfg.eval.suite} is not valid: one suite name. Fix: eval=paper_table2")
    records = ResultsStore(cfg.results_dir).records()
    try:
        where = where_filters(OmegaConf.to_container(cfg.where) if cfg.where is not None else None)
        md = write_experiment_table(
            records, cfg.table, cfg.model.name, cfg.eval.suite, where, Path(cfg.out_dir)
        )
    except TableError as err:
        raise SystemExit(f"{cfg.table}: {err} (results store: {cfg.results_dir})") from None
    print(md.read_text())


if __name__ == "__main__":
    main()
