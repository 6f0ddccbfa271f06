"""Regenerate the README's result blocks from the committed tables and figure CSVs (conf/readme.yaml).

    python experiments/readme.py               # rewrite README.md's blocks (make readme)
    python experiments/readme.py check=true    # fail when README.md and the files disagree

Logic in whatmatters.report.readme; this file only starts Hydra.
"""

import hydra
from omegaconf import DictConfig

from whatmatters.apps.readme import readme


@hydra.main(config_path="../conf", config_name="readme", version_base="1.3")
def main(cfg: DictConfig) -> None:
    changed = readme(cfg)
    print(f"{cfg.readme}: {'result blocks regenerated' if changed else 'up to date'}")


if __name__ == "__main__":
    main()
