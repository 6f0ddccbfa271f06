"""Copy the records behind the committed tables and figures into results_committed/ (conf/promote.yaml).

    python experiments/promote.py                                # every record a figures/*.csv names
    python experiments/promote.py 'experiments=[table2,beyond]'   # and every record of these experiments

Logic in whatmatters.records.committed; this file only starts Hydra.
"""

import hydra
from omegaconf import DictConfig

from whatmatters.apps.promote import promote


@hydra.main(config_path="../conf", config_name="promote", version_base="1.3")
def main(cfg: DictConfig) -> None:
    written = promote(cfg)
    for path in written:
        print(path)
    print(f"{len(written)} file(s) written under {cfg.committed_dir}")


if __name__ == "__main__":
    main()
