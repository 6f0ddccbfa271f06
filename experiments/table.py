"""Build one of the paper's tables from the results store (no model is run) and print it (conf/table.yaml).

    python experiments/table.py table=table2              # embedded default, embedded suite
    python experiments/table.py table=table2 model=llama3-8b eval=paper_table2
    python experiments/table.py table=table2 'where={eval.limit:50,speed.prompt_len:512}'   # pick one setting
Writes figures/<table>_<model>_<suite>.{md,csv,tex} and the paired table beside it. Logic in
whatmatters.apps.table; this file only starts Hydra.
"""

import hydra
from omegaconf import DictConfig

from whatmatters.apps.table import table


@hydra.main(config_path="../conf", config_name="table", version_base="1.3")
def main(cfg: DictConfig) -> None:
    print(table(cfg).read_text())


if __name__ == "__main__":
    main()
