"""Export a pruned model as GGUF (llama.cpp) and a nemotron-nas folder (vLLM, SGLang); conf/export.yaml.

python experiments/export.py
python experiments/export.py source=joint-8 gguf.dtype=f16 formats=[gguf]

Logic in whatmatters.apps.export (`export`), formats in whatmatters.export; this file only starts Hydra.
"""

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from whatmatters.apps import export


@hydra.main(config_path="../conf", config_name="export", version_base="1.3")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    print(export.export_summary(export.export(cfg, out_dir)))
    print(f"wrote summary.json beside them in {out_dir}")


if __name__ == "__main__":
    main()
