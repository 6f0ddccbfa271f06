"""Every figure from the results store (no model is run): PNG + PDF + the data CSV into figures/.

    python figures/make_figures.py                 # reads results/
    python figures/make_figures.py --results other_results_dir

One set of figures per setting (model, suite, eval limit and protocol, data, dtype, seed, quantization,
speed job, criterion, residual ablation, mode): drop curves (Avg vs n per target), speedup / KV bars,
SDR vs speedup; one-shot vs iterative where both modes ran; an importance heatmap per scoring setting,
titled with the run it draws. Each CSV lists the record key of every point.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from whatmatters import plots
from whatmatters.results import ResultsStore

HERE = Path(__file__).parent


def main(results: Path, out: Path = HERE) -> list[Path]:
    records = list(ResultsStore(results).records())
    written = [
        plots.importance_heatmap(r.scores, out / f"{stem}.png", title, criterion=r.criterion)
        for stem, title, r in plots.heatmap_runs(records)
    ]
    for fs in plots.figure_sets(records):
        written += plots.drop_curves(fs, out / f"drop_curves_{fs.name}")
        written += plots.speed_bars(fs, out / f"speed_{fs.name}")
        written += plots.sdr_vs_speedup(fs, out / f"sdr_{fs.name}")
    for fs in plots.figure_sets(records, swept=("mode",)):
        if len({r.mode for r in fs.runs}) > 1:
            written += plots.one_shot_vs_iterative(fs, out / f"one_shot_vs_iterative_{fs.name}")
    if not written:
        raise SystemExit(
            f"No readable records under {results}: run experiments/run.py (or make reproduce-figures)"
        )
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=Path, default=HERE.parent / "results")
    for path in main(parser.parse_args().results):
        print(path)
