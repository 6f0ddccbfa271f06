"""Table 4: KV-cache size with and without half the attention layers (config: conf/table4.yaml).

    python experiments/table4.py            # analytic rows of the paper's models + a measured embedded row
    python experiments/table4.py model=gemma3-270m job.batch_size=8

Writes figures/table4.*. Logic in whatmatters.apps.table4; this file only starts Hydra.
"""

import hydra
from omegaconf import DictConfig

from whatmatters.apps.table4 import table4


@hydra.main(config_path="../conf", config_name="table4", version_base="1.3")
def main(cfg: DictConfig) -> None:
    print(table4(cfg).read_text())


if __name__ == "__main__":
    main()
