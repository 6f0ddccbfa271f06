"""One experiment run, or a Hydra multirun sweep of them (config: conf/run.yaml).

python experiments/run.py method=attn method.n=8
python experiments/run.py -m method=attn,mlp,block,joint method.n=4,8,12 mode=one_shot,iterative
python experiments/run.py -m experiment=table2
python experiments/run.py -m experiment=table2 model=llama3-70b dry_run=true   # list the runs, load nothing
"""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from whatmatters.apps import run as run_app


@hydra.main(config_path="../conf", config_name="run", version_base="1.3")
def main(cfg: DictConfig) -> None:
    if cfg.dry_run:
        print(run_app.dry_run(cfg))
        return
    record = run_app.run(cfg, Path(HydraConfig.get().runtime.output_dir))
    if record is not None:  # None: another worker holds this key
        print(run_app.summary(record))


if __name__ == "__main__":
    main()
