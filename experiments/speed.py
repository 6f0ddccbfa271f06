"""Original vs pruned speed, KV cache and memory on one generation job (config: conf/speed_bench.yaml).

python experiments/speed.py
python experiments/speed.py speed=gpu shape=mistral-7b device=cuda speed.batch_size=64

Logic in whatmatters.apps.speed (`run`), measurement in whatmatters.measure; this file only starts Hydra.
"""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from whatmatters.apps import speed


@hydra.main(config_path="../conf", config_name="speed_bench", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    table = speed.run(cfg, out_dir)
    print(table.T.to_string(float_format="{:.4g}".format))
    print(f"wrote {out_dir / 'speed.csv'} and {out_dir / 'speed.json'}")


if __name__ == "__main__":
    main()
