"""Figures drawn from saved results (never from a live model), each with the data behind it as CSV.

A figure holds records that agree on everything but its swept axis (`RunRecord.setting`): the drop
curves of one setting sweep target and n; one-shot vs iterative also sweeps the mode. Ablations
(another criterion, no residual, a span) and other settings (eval limit, data, dtype, seed, ...) get
figures of their own, never a point of the main curve. Every point's record key is in the CSV.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm

from whatmatters.files import atomic_write_text
from whatmatters.method.score_data import Scores
from whatmatters.records.store import RunRecord, base_setting, config_key, without
from whatmatters.report.labels import method_label, setting_words
from whatmatters.report.tables import avg_difference, unique_cells


def importance_heatmap(
    scores: Scores | Mapping[str, list], path: str | Path, title: str = "", criterion: str | None = None
) -> Path:
    """Layer x {block, attn, mlp} heatmap of importance (the paper's redundancy figure), from a Scores or
    a record's `scores`.

    Lighter = lower score = more redundant; dropped modules (NaN) are left blank. Log colour scale:
    layer 0 scores ~100x the middle layers and would otherwise wash out every other difference.
    """
    kinds = (
        scores if isinstance(scores, Mapping) else {k: getattr(scores, k) for k in ("block", "attn", "mlp")}
    )
    criterion = criterion or getattr(scores, "meta", {}).get("criterion", "cosine")
    table = pd.DataFrame(
        {name: kinds[k] for name, k in (("Block", "block"), ("Attention", "attn"), ("MLP", "mlp"))},
        index=pd.RangeIndex(len(kinds["block"]), name="layer"),
        dtype=float,
    ).T
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * table.shape[1]), 2.6))
    sns.heatmap(table, cmap="Blues", norm=LogNorm(), ax=ax, cbar_kws={"label": f"importance ({criterion})"})
    ax.set_xlabel("layer")
    ax.set_ylabel("")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


# The setting fields the importance scores depend on (not the eval, the speed job or the method).
SCORE_FIELDS = ("model", "model.", "data.", "seed", "quant.", "criterion")


def heatmap_runs(records: Iterable[RunRecord]) -> list[tuple[str, str, RunRecord]]:
    """(file stem, title, record) per scoring setting: the original model's one-shot scores, drawn from one
    named run. Runs of one scoring setting hold the same (cached) scores; if two disagree, that is an
    error naming both."""
    groups: dict[str, list[RunRecord]] = {}
    for r in records:
        setting = r.setting()
        if r.scores and r.mode == "one_shot":  # the original model's scores (an ablation drops by them too)
            scoring = {k: v for k, v in setting.items() if k.startswith(SCORE_FIELDS)}
            groups.setdefault(config_key(scoring), []).append(r)
    out = []
    for group_key, runs in groups.items():
        runs.sort(key=lambda r: r.key)
        if other := next((r for r in runs if r.scores != runs[0].scores), None):
            raise ValueError(f"One scoring setting, two sets of scores: {runs[0].where} and {other.where}")
        r = runs[0]
        data = r.config.get("data") or {}
        criterion = r.criterion or "cosine"
        name = f"heatmap_{r.model}" + ("" if criterion == "cosine" else f"_{criterion}")
        dtype = (r.config.get("model") or {}).get("dtype")  # runs in two dtypes score apart: say which
        title = (
            f"{' '.join(filter(None, (r.model, dtype)))}: {criterion} importance, data {data.get('source')} "
            f"{data.get('n')} x {data.get('seq_len')} (run {r.key})"
        )
        out.append([name, title, r, group_key])
    names = [o[0] for o in out]
    return [(n if names.count(n) == 1 else f"{n}_{k[:6]}", t, r) for n, t, r, k in out]


@dataclass
class FigureSet:
    """The records of one figure: one setting (less its swept fields) and that setting's baseline."""

    name: str  # file-name stem part: model, suite, variant, and a setting hash where names would collide
    title: str
    setting: dict[str, Any]
    runs: list[RunRecord]
    baseline: RunRecord | None


def figure_sets(records: Iterable[RunRecord], swept: tuple[str, ...] = ()) -> list[FigureSet]:
    """Pruned runs grouped by setting (less `swept`), each with its baseline; a cell (target, n and the
    swept fields) claimed by two records is an error naming both."""
    records = list(records)
    groups: dict[str, list[RunRecord]] = {}
    for r in records:
        if not r.is_baseline:
            groups.setdefault(config_key(without(r.setting(), swept)), []).append(r)
    settings = [without(runs[0].setting(), swept) for runs in groups.values()]
    varying = {k for s in settings for k in s if any(t.get(k) != s[k] for t in settings)}
    sets = []
    for runs, setting in zip(groups.values(), settings, strict=True):
        shared = base_setting(setting)
        bases = [r for r in records if r.is_baseline and r.setting() == shared]
        what = f"figure of {setting}"
        unique_cells(bases, method_label, what)
        unique_cells(runs, lambda r: (method_label(r), *(r.setting().get(s) for s in swept)), what)
        name = "_".join([runs[0].model, runs[0].eval.suite, *setting_words(setting, varying)])
        title = " ".join([f"{runs[0].model} ({runs[0].eval.suite} suite)", *setting_words(setting, varying)])
        sets.append(FigureSet(name, title, setting, runs, bases[0] if bases else None))
    names = [s.name for s in sets]
    for s in sets:  # same model, suite and variant but another setting (limit, data, dtype...): say which
        if names.count(s.name) > 1:
            s.name += f"_{config_key(s.setting)[:6]}"
            s.title += f" [setting {config_key(s.setting)[:6]}]"
    return sorted(sets, key=lambda s: s.name)


def points(fs: FigureSet) -> pd.DataFrame:
    """One row per record of a figure set, the baseline (n = 0) first: what the figures plot."""
    rows = []
    for r in ([fs.baseline] if fs.baseline else []) + sorted(
        fs.runs, key=lambda r: (r.method.target, r.dropped)
    ):
        speed = r.speed
        generate = speed.speedup.get("generate") if speed else None
        delta, se = avg_difference(fs.baseline, r) if fs.baseline and r is not fs.baseline else (None, None)
        rows.append(
            {
                "key": r.key,
                "method": method_label(r),
                "target": r.method.target,
                "n": r.dropped,
                "mode": r.mode or "one_shot",
                "Avg": r.eval.avg,
                "Avg stderr": r.eval.avg_stderr,
                "ΔAvg": delta,  # vs the baseline on the same docs, its paired SE (None: a record is unpaired)
                "ΔAvg paired SE": se,
                "speedup": generate.median if generate else None,
                "speedup low": generate.low if generate else None,
                "speedup high": generate.high if generate else None,
                "ideal speedup": speed.ideal_speedup if speed else None,
                "exceeds ideal": speed.exceeds_ideal if speed else None,
                "KV ratio": speed.kv_ratio if speed else None,
                "SDR": r.sdr.value if r.sdr else None,
                "SDR low": r.sdr.low if r.sdr else None,
                "SDR high": r.sdr.high if r.sdr else None,
                "SDR undefined": r.sdr.reason if r.sdr and r.sdr.value is None else None,
            }
        )
    return pd.DataFrame(rows)


def save_figure(fig: plt.Figure, stem: Path, data: pd.DataFrame) -> list[Path]:
    """Every figure's files: PNG, PDF and the CSV of exactly the numbers drawn, with each point's key."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    atomic_write_text(stem.with_suffix(".csv"), data.to_csv(index=False))
    return [*paths, stem.with_suffix(".csv")]


def _curves(frame: pd.DataFrame) -> pd.DataFrame:
    """Every curve (target, mode) starts at the unpruned baseline (n = 0), the same record for each."""
    base = frame[frame.target == "none"]
    runs = frame[frame.target != "none"]
    curves = [runs] + [
        base.assign(target=t, mode=m) for t, m in runs[["target", "mode"]].drop_duplicates().values
    ]
    return pd.concat(curves, ignore_index=True).sort_values(["target", "mode", "n"], ignore_index=True)


def _lines(frame: pd.DataFrame, stem: Path, title: str, style: str | None) -> list[Path]:
    fig, ax = plt.subplots(figsize=(6, 4))
    # estimator=None: each cell is one record (figure_sets guarantees it), drawn as is, never averaged.
    sns.lineplot(frame, x="n", y="Avg", hue="target", style=style, marker="o", estimator=None, ax=ax)
    # A point's bar is the paired SE of its difference to the baseline (the Avg's own stderr, ~3 points on a
    # sample suite, would hide what the paired comparison resolves); the baseline has none.
    paired = frame[frame["ΔAvg paired SE"].notna()]
    ax.errorbar(paired.n, paired.Avg, yerr=paired["ΔAvg paired SE"], fmt="none", ecolor="grey", capsize=2)
    ax.set(xlabel="modules dropped", ylabel="average accuracy (%), bars: paired SE vs baseline")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, stem, frame)


def drop_curves(fs: FigureSet, stem: Path) -> list[Path]:
    """Average accuracy vs number dropped, one line per target: the paper's drop curves."""
    return _lines(_curves(points(fs)), stem, fs.title, style=None)


def one_shot_vs_iterative(fs: FigureSet, stem: Path) -> list[Path]:
    """Average accuracy vs number dropped, one-shot (solid) vs iterative (dashed), per target. The CSV adds,
    on each iterative row, its difference to the one-shot run of the same target and n on the same docs,
    with the paired SE: the comparison the figure is for."""
    one_shot = {(r.method.target, r.dropped): r for r in fs.runs if r.mode != "iterative"}
    versus = {
        r.key: avg_difference(one_shot[(r.method.target, r.dropped)], r)
        for r in fs.runs
        if r.mode == "iterative" and (r.method.target, r.dropped) in one_shot
    }
    frame = _curves(points(fs))
    pairs = [versus.get(key, (None, None)) for key in frame.key]  # one-shot and baseline rows: none
    frame["Δ vs one-shot"], frame["Δ vs one-shot paired SE"] = zip(*pairs, strict=True)
    return _lines(frame, stem, fs.title, style="mode")


def speed_bars(fs: FigureSet, stem: Path) -> list[Path]:
    """Speedup (with its 95% interval where measured, the ideal as a tick) and KV-cache ratio per method."""
    frame = points(fs)
    frame = frame[(frame.target != "none") & frame.speedup.notna()].reset_index(drop=True)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(frame)), 4))
    x = range(len(frame))
    err = [
        (frame.speedup - frame["speedup low"]).fillna(0),
        (frame["speedup high"] - frame.speedup).fillna(0),
    ]
    ax.bar([i - 0.2 for i in x], frame.speedup, width=0.4, yerr=err, capsize=3, label="speedup")
    ax.bar([i + 0.2 for i in x], frame["KV ratio"], width=0.4, label="KV ratio")
    ax.scatter(
        [i - 0.2 for i in x], frame["ideal speedup"], marker="_", s=200, color="k", label="ideal speedup"
    )
    # The timing code's flag: faster than the plan allows beyond the interval, a timing fault.
    for i in frame.index[frame["exceeds ideal"].eq(True)]:
        top = frame.at[i, "speedup high"] if pd.notna(frame.at[i, "speedup high"]) else frame.at[i, "speedup"]
        ax.annotate("> ideal", (i - 0.2, top), ha="center", va="bottom", color="red")
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xticks(list(x), frame.method, rotation=45, ha="right")
    ax.set(ylabel="x original")
    ax.set_title(fs.title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, stem, frame)


def sdr_vs_speedup(fs: FigureSet, stem: Path) -> list[Path]:
    """SDR against speedup, with intervals: lower SDR = less accuracy lost per point of speedup. Runs
    whose SDR is undefined are in the CSV with the reason, not on the plot."""
    frame = points(fs)
    frame = frame[frame.target != "none"].reset_index(drop=True)
    shown = frame.dropna(subset=["SDR", "speedup"])
    fig, ax = plt.subplots(figsize=(6, 4))
    for (target, mode), part in shown.groupby(["target", "mode"]):
        xerr = [
            (part.speedup - part["speedup low"]).fillna(0),
            (part["speedup high"] - part.speedup).fillna(0),
        ]
        yerr = [(part.SDR - part["SDR low"]).fillna(0), (part["SDR high"] - part.SDR).fillna(0)]
        ax.errorbar(
            part.speedup, part.SDR, xerr=xerr, yerr=yerr, fmt="o", capsize=3, label=f"{target} {mode}"
        )
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set(xlabel="speedup (x)", ylabel="SDR (points lost per point of speedup)")
    ax.set_title(fs.title, fontsize=9)
    if len(shown):
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, stem, frame)


def checkpoint_label(scores: Scores) -> str:
    """How a scored checkpoint is named in the legend: random init, a revision, or the final weights."""
    if scores.meta.get("random_init"):
        return "random init"
    return scores.meta.get("revision") or "trained (final)"


def redundancy_across_training(runs: list[Scores], stem: Path, title: str) -> list[Path]:
    """Scores per layer of each checkpoint, one panel per kind: is redundancy learned, and when?

    The paper's figure follows attention scores along pre-training; a randomly initialised model is the
    reference where nothing has been learned yet.
    """
    rows = [
        {"checkpoint": checkpoint_label(s), "kind": kind, "layer": layer, "score": value}
        for s in runs
        for kind in ("attn", "mlp", "block")
        for layer, value in enumerate(getattr(s, kind))
    ]
    data = pd.DataFrame(rows)
    grid = sns.relplot(
        data,
        x="layer",
        y="score",
        hue="checkpoint",
        col="kind",
        kind="line",
        marker="o",
        height=3,
        aspect=1.2,
        facet_kws={"sharey": False},
    )
    grid.set(yscale="log", ylabel="1 - cos(X, Y)")
    grid.figure.suptitle(title)
    grid.figure.tight_layout()
    return save_figure(grid.figure, stem, data)
