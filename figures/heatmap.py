"""Importance heatmaps (layer x {block, attention, MLP}) from saved scores, as PNG and PDF in figures/.

python figures/heatmap.py outputs/score/smollm2-135m/<run>/scores.json [more scores.json ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

from whatmatters.plots import importance_heatmap
from whatmatters.scores import Scores

HERE = Path(__file__).parent


def main(paths: list[str]) -> None:
    for path in paths:
        scores = Scores.load(path)
        name = scores.meta.get("model", Path(path).parent.name)
        for ext in ("png", "pdf"):
            print(importance_heatmap(scores, HERE / f"heatmap_{name}.{ext}", title=name))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
