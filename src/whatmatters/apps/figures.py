"""The figure apps (experiments/figures.py): figures and tables from the results store and the committed
records (records.committed), or figures from saved scores, never from a model run. Each figure writes PNG +
PDF + the CSV of what it draws."""

from __future__ import annotations

import glob
import re
import warnings
from pathlib import Path

from whatmatters.files import atomic_write_text
from whatmatters.method.score_data import Scores
from whatmatters.paper import TABLES
from whatmatters.records.committed import all_records
from whatmatters.records.store import RunRecord
from whatmatters.report import ordering, pareto, plots
from whatmatters.report.table_files import write_experiment_table
from whatmatters.report.tables import TableError

# The files under figures/ that `everything` writes from records (table4 and the notebooks' and scores'
# figures come from elsewhere): what the committed records must regenerate.
FROM_RECORDS = re.compile(
    r"(table(?!4[._])\d+|drop_curves|speed|sdr|one_shot_vs_iterative|ordering|pareto|healing|heatmap)[_.]"
)


def figures(
    results_dir: str | Path, out_dir: str | Path, committed_dir: str | Path | None = None
) -> list[Path]:
    """Every figure the records allow (`figure_files`); SystemExit when there is none."""
    written = figure_files(all_records(results_dir, committed_dir), Path(out_dir))
    if not written:
        raise SystemExit(
            f"No readable records under {results_dir} or {committed_dir}: run experiments/run.py "
            "(or make reproduce-figures)"
        )
    return written


def figure_files(records: list[RunRecord], out: Path) -> list[Path]:
    """Every figure of `records`, one set per setting (model, suite, eval limit and protocol, data,
    dtype, seed, quantization, speed job, criterion, residual ablation, mode): drop curves, speedup / KV
    bars, SDR vs speedup; one-shot vs iterative where both modes ran; an importance heatmap per scoring
    setting, titled with the run it draws. Each CSV lists the record key of every point."""
    written = [
        plots.importance_heatmap(r.scores, out / f"{stem}.png", title, criterion=r.criterion)
        for stem, title, r in plots.heatmap_runs(records)
    ]
    for fs in plots.figure_sets(records):
        written += plots.drop_curves(fs, out / f"drop_curves_{fs.name}")
        written += plots.speed_bars(fs, out / f"speed_{fs.name}")
        written += plots.sdr_vs_speedup(fs, out / f"sdr_{fs.name}")
        written += _ordering(fs, out / f"ordering_{fs.name}")
    for fs in plots.figure_sets(records, swept=("mode",)):
        if len({r.mode for r in fs.runs}) > 1:
            written += plots.one_shot_vs_iterative(fs, out / f"one_shot_vs_iterative_{fs.name}")
    return written


def _ordering(fs: plots.FigureSet, stem: Path) -> list[Path]:
    """Attention minus MLP and minus Block at each n, on accuracy and KL, paired (`report.ordering`)."""
    table = ordering.ordering_table(fs.runs)
    if table.empty:
        return []
    atomic_write_text(stem.with_suffix(".csv"), table.to_csv(index=False))
    md = f"{fs.title}\n\n" + table.to_markdown(index=False, floatfmt=".3f") + "\n"
    atomic_write_text(stem.with_suffix(".md"), md)
    return [stem.with_suffix(".csv"), stem.with_suffix(".md")]


def speed_accuracy(
    results_dir: str | Path, out_dir: str | Path, committed_dir: str | Path | None = None
) -> list[Path]:
    """The speed-accuracy plots and the healing tables of the store and the committed records."""
    return speed_accuracy_files(all_records(results_dir, committed_dir), Path(out_dir))


def speed_accuracy_files(records: list[RunRecord], out: Path) -> list[Path]:
    """The speed-accuracy plots and the healing tables (`healing_<model>_<suite>.{md,csv}`) of `records`."""
    paths = pareto.speed_accuracy_plots(records, out)
    by_suite: dict[str, list[RunRecord]] = {}
    for r in records:
        by_suite.setdefault(f"{r.model}_{r.eval.suite}", []).append(r)
    for name, runs in sorted(by_suite.items()):
        table = pareto.healing_table(runs)
        if table.empty:
            continue
        stem = out / f"healing_{name}"
        atomic_write_text(stem.with_suffix(".csv"), table.to_csv(index=False))
        atomic_write_text(stem.with_suffix(".md"), table.to_markdown(index=False, floatfmt=".3g") + "\n")
        paths += [stem.with_suffix(".csv"), stem.with_suffix(".md")]
    return paths


def table_files(records: list[RunRecord], out: Path) -> list[Path]:
    """Every paper table `records` hold (`figures/<table>_<model>_<suite>.{md,csv,tex}` and its `_paired`
    table), each written as `make reproduce-tableN` writes it (no `where` filter)."""
    cells = sorted({(e, r.model, r.eval.suite) for r in records for e in r.experiments if e in TABLES})
    written = []
    for table, model, suite in cells:
        try:
            written.append(write_experiment_table(records, table, model, suite, {}, out))
        except TableError as err:  # records of two settings: the table app's where= picks one; draw the rest
            warnings.warn(
                f"{table} not written: {err}. Fix: python experiments/table.py table={table} "
                f"model={model} eval={suite} 'where={{FIELD:VALUE}}'",
                stacklevel=2,
            )
    return written


def tables(
    results_dir: str | Path, out_dir: str | Path, committed_dir: str | Path | None = None
) -> list[Path]:
    """Every paper table of the store and the committed records (`table_files`)."""
    return table_files(all_records(results_dir, committed_dir), Path(out_dir))


def everything(
    results_dir: str | Path, out_dir: str | Path, committed_dir: str | Path | None = None
) -> list[Path]:
    """What `make figures` writes: every table, figure, speed-accuracy plot and healing table the local store
    and the committed records allow (CI regenerates the committed ones from the committed records alone)."""
    records, out = all_records(results_dir, committed_dir), Path(out_dir)
    written = table_files(records, out) + figure_files(records, out) + speed_accuracy_files(records, out)
    if not written:
        raise SystemExit(f"No readable records under {results_dir} or {committed_dir}: nothing to draw")
    return written


def _scores_files(pattern: str) -> list[Path]:
    paths = sorted(Path(p) for p in glob.glob(pattern))
    if not paths:
        raise SystemExit(f"scores={pattern!r} matches no scores.json: run experiments/score.py first")
    return paths


def training(pattern: str, out_dir: str | Path) -> list[Path]:
    """Redundancy across training: the scores of several checkpoints of one model side by side. Each legend
    label comes from the scores' metadata (`model.random_init=true` -> "random init", a revision: itself)."""
    runs = [Scores.load(p) for p in _scores_files(pattern)]
    models = {s.meta.get("model", "model") for s in runs}
    if len(models) != 1:
        raise SystemExit(f"Scores of one model only, got {sorted(models)}: run once per model")
    (model,) = models
    runs.sort(key=lambda s: (not s.meta.get("random_init"), s.meta.get("revision") or "~"))
    return plots.redundancy_across_training(runs, Path(out_dir) / f"redundancy_training_{model}", model)


def title(scores: Scores, path: Path) -> str:
    """E.g. `smollm2-135m: cosine importance, data lee 16 x 2048 (outputs/score/.../scores.json)`."""
    meta = scores.meta
    data = f"data {meta.get('data', '?')} {meta.get('num_samples', '?')} x {meta.get('seq_len', '?')}"
    model = meta.get("model", path.parent.name)
    return f"{model}: {meta.get('criterion', 'cosine')} importance, {data} ({path})"


def heatmaps(pattern: str, out_dir: str | Path) -> list[Path]:
    """An importance heatmap (layer x {block, attention, MLP}) per scores file, PNG and PDF."""
    written = []
    for path in _scores_files(pattern):
        scores = Scores.load(path)
        name = scores.meta.get("model", path.parent.name)
        for ext in ("png", "pdf"):
            stem = Path(out_dir) / f"heatmap_{name}.{ext}"
            written.append(plots.importance_heatmap(scores, stem, title=title(scores, path)))
    return written
