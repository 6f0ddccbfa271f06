"""Importance scores + heatmap for one model (config: conf/score.yaml).

python experiments/score.py
python experiments/score.py model.name_or_path=/some/dir data=tokens data.path=ids.pt
"""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from whatmatters.apps import score


@hydra.main(config_path="../conf", config_name="score", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    scores = score.score(cfg, out_dir)
    print(score.score_summary(scores))
    print(f"wrote {out_dir / 'scores.json'} and {out_dir / 'heatmap.png'} in {scores.meta['wall_s']} s")


if __name__ == "__main__":
    main()
