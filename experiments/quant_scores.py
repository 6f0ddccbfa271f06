"""Do importance scores survive quantization? Score the model in full precision and quantized, compare.

    python experiments/quant_scores.py quant=int4                  # embedded default, lee 16 x 2048
    python experiments/quant_scores.py quant=int8 data.n=4 data.seq_len=512
Writes figures/quant_scores_<model>_<scheme>.md and .json (config: conf/run.yaml's model, data, quant,
criterion, batch_size, seed). The Attn-n plans compared are 4, 8, 11 and 15 of 30 layers scaled to the model.
"""

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from whatmatters.apps import common
from whatmatters.files import atomic_write_text
from whatmatters.method import quant

ROOT = Path(__file__).parents[1]
FRACTIONS = (0.125, 0.25, 0.375, 0.5)  # of the attention layers: the paper's Attn-4/8/12/16 of 32


@hydra.main(config_path="../conf", config_name="run", version_base="1.3")
def main(cfg: DictConfig) -> None:
    spec = quant.QuantSpec.from_config(cfg)
    if not spec.enabled:
        raise SystemExit("quant=none: choose a scheme to compare with full precision, e.g. quant=int4")
    model, _, ids = common.load_with_data(cfg)
    layers = model.config.num_hidden_layers
    attn_n = [round(f * layers) for f in FRACTIONS]
    result = quant.score_stability(
        model, ids, spec, attn_n, batch_size=cfg.batch_size, criterion=cfg.criterion, seed=cfg.seed
    )
    setting = (
        f"{cfg.model.name}, {spec.scheme} (group {spec.group_size}), {cfg.data.source} {list(ids.shape)}"
    )
    stem = ROOT / "figures" / f"quant_scores_{cfg.model.name}_{spec.scheme}"
    text = quant.stability_markdown(result, f"Scores under quantization: {setting}")
    atomic_write_text(stem.with_suffix(".md"), text)
    atomic_write_text(stem.with_suffix(".json"), json.dumps(result | {"setting": setting}, indent=1))
    print(text)


if __name__ == "__main__":
    main()
