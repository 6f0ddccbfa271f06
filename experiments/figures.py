"""Tables and figures from the results store and committed records, or from saved scores (conf/figures.yaml).

    python experiments/figures.py                  # every table and figure the records allow (make figures)
    python experiments/figures.py kind=pareto              # speed-accuracy plots + healing tables
    python experiments/figures.py kind=training scores='outputs/training/*/scores.json'

Logic in whatmatters.apps.figures; this file only starts Hydra.
"""

import hydra
from omegaconf import DictConfig

from whatmatters.apps import figures

KINDS = {
    "all": figures.everything,
    "records": figures.figures,
    "pareto": figures.speed_accuracy,
    "tables": figures.tables,
}
FROM_SCORES = {"training": figures.training, "heatmap": figures.heatmaps}


@hydra.main(config_path="../conf", config_name="figures", version_base="1.3")
def main(cfg: DictConfig) -> None:
    if cfg.kind in KINDS:
        written = KINDS[cfg.kind](cfg.results_dir, cfg.out_dir, cfg.committed_dir)
    elif cfg.kind in FROM_SCORES and cfg.scores:
        written = FROM_SCORES[cfg.kind](cfg.scores, cfg.out_dir)
    else:
        raise SystemExit(
            f"kind={cfg.kind!r} scores={cfg.scores!r} is not valid: kind one of "
            f"{[*KINDS, *FROM_SCORES]}, and scores=GLOB with training or heatmap. "
            "Fix: kind=records, or kind=training scores='outputs/training/*/scores.json'"
        )
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
