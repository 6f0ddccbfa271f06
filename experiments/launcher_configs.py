"""Write conf/hydra/launcher/slurm_<model>.yaml, the Slurm job shape of each paper model (config:
conf/launcher_configs.yaml).

python experiments/launcher_configs.py
"""

from pathlib import Path

import hydra
from omegaconf import DictConfig

from whatmatters.apps import cluster

CONF = Path(__file__).parents[1] / "conf"


@hydra.main(config_path="../conf", config_name="launcher_configs", version_base="1.3")
def main(cfg: DictConfig) -> None:
    for path in cluster.write_launcher_configs(cfg, CONF):
        print(path)


if __name__ == "__main__":
    main()
