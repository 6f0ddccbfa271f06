"""Score, plan, drop and save a pruned model (config: conf/drop.yaml).

python experiments/drop.py method=attn method.n=8 mode=one_shot
python experiments/drop.py method=joint method.n=8 mode=iterative
"""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from whatmatters.apps import drop


@hydra.main(config_path="../conf", config_name="drop", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    print(drop.drop_summary(drop.drop(cfg, out_dir)))
    print(f"wrote the pruned model, plan.json, scores.json and summary.json to {out_dir}")


if __name__ == "__main__":
    main()
