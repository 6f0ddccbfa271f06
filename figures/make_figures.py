"""Every figure from the results store (no model is run): PNG + PDF into figures/.

    python figures/make_figures.py                 # reads results/
    python figures/make_figures.py --results other_results_dir

Per model and eval suite: importance heatmap, drop curves (Avg vs n per target), one-shot vs
iterative curves, speedup / KV bars, SDR vs speedup.
"""

from __future__ import annotations

import argparse
from itertools import groupby
from pathlib import Path

from whatmatters import plots
from whatmatters.results import ResultsStore
from whatmatters.scores import Scores

HERE = Path(__file__).parent


def main(results: Path, out: Path = HERE) -> list[Path]:
    records = sorted(ResultsStore(results).records(), key=lambda r: (r["model"], r["eval"]["suite"]))
    written = []
    for (model, suite), group in groupby(records, key=lambda r: (r["model"], r["eval"]["suite"])):
        group = list(group)
        scored = next((r for r in group if r.get("scores")), None)
        if scored:
            scores = Scores(**scored["scores"], meta={"criterion": scored.get("criterion", "cosine")})
            written.append(plots.importance_heatmap(scores, out / f"heatmap_{model}.png", title=model))
        name = f"{model}_{suite}"
        title = f"{model} ({suite} suite)"
        written += plots.drop_curves(group, out / f"drop_curves_{name}", title)
        written += plots.one_shot_vs_iterative(group, out / f"one_shot_vs_iterative_{name}", title)
        written += plots.speed_bars(group, out / f"speed_{name}", title)
        written += plots.sdr_vs_speedup(group, out / f"sdr_{name}", title)
    if not written:
        raise SystemExit(
            f"No readable records under {results}: run experiments/run.py (or make reproduce-table2)"
        )
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=HERE.parent / "results")
    for path in main(parser.parse_args().results):
        print(path)
