"""Importance heatmaps (layer x {block, attention, MLP}) from saved scores, as PNG and PDF in figures/.

python figures/heatmap.py outputs/score/smollm2-135m/<run>/scores.json [more scores.json ...]

Each title names what it draws: model, criterion, calibration data and the scores file (the run).
"""

from __future__ import annotations

import sys
from pathlib import Path

from whatmatters.plots import importance_heatmap
from whatmatters.scores import Scores

HERE = Path(__file__).parent


def title(scores: Scores, path: Path) -> str:
    """E.g. `smollm2-135m: cosine importance, data lee 16 x 2048 (outputs/score/.../scores.json)`."""
    meta = scores.meta
    data = f"data {meta.get('data', '?')} {meta.get('num_samples', '?')} x {meta.get('seq_len', '?')}"
    model = meta.get("model", path.parent.name)
    return f"{model}: {meta.get('criterion', 'cosine')} importance, {data} ({path})"


def main(paths: list[str]) -> list[Path]:
    written = []
    for path in map(Path, paths):
        scores = Scores.load(path)
        name = scores.meta.get("model", path.parent.name)
        for ext in ("png", "pdf"):
            written.append(
                importance_heatmap(scores, HERE / f"heatmap_{name}.{ext}", title=title(scores, path))
            )
            print(written[-1])
    return written


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
