"""Redundancy across training: the scores of several checkpoints of one model, side by side.

    python figures/training.py outputs/training/*/scores.json          # what `make redundancy-training` runs

Each scores.json comes from experiments/score.py; its legend label is read from its metadata
(`model.random_init=true` -> "random init", `model.revision=<checkpoint>` -> that revision).
Writes figures/redundancy_training_<model>.png and .pdf.
"""

import argparse
from pathlib import Path

from whatmatters import plots
from whatmatters.scores import Scores

HERE = Path(__file__).parent


def main(paths: list[Path], out: Path = HERE) -> list[Path]:
    runs = [Scores.load(p) for p in paths]
    models = {s.meta.get("model", "model") for s in runs}
    if len(models) != 1:
        raise SystemExit(f"Scores of one model only, got {sorted(models)}: run once per model")
    (model,) = models
    runs.sort(key=lambda s: (not s.meta.get("random_init"), s.meta.get("revision") or "~"))
    return plots.redundancy_across_training(runs, out / f"redundancy_training_{model}", model)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("scores", type=Path, nargs="+", help="scores.json files of one model")
    for path in main(parser.parse_args().scores):
        print(path)
