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
from whatmatters.report.labels import difference_words, method_label, setting_caption, setting_words
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
    savefig(fig, path)
    plt.close(fig)
    return path


# The setting fields the importance scores depend on (not the eval, the speed job or the method).
SCORE_FIELDS = ("model", "model.", "data.", "seed", "quant.", "criterion")


def heatmap_runs(records: Iterable[RunRecord]) -> list[tuple[str, str, RunRecord]]:
    """(file stem, title, record) per scoring setting: the original model's one-shot scores, drawn from one
    named run. Runs of one scoring setting hold the same (cached) scores; if two disagree, that is an
    error naming both."""
    groups: dict[str, list[RunRecord]] = {}
    scorings: dict[str, dict[str, Any]] = {}
    for r in records:
        setting = r.setting()
        if r.scores and r.mode == "one_shot":  # the original model's scores (an ablation drops by them too)
            scoring = {k: v for k, v in setting.items() if k.startswith(SCORE_FIELDS)}
            groups.setdefault(config_key(scoring), []).append(r)
            scorings[config_key(scoring)] = scoring
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
    stems = []  # one name, two scoring settings (dtype, data): the fields that differ say which
    for name, _, _, key in out:
        same = [scorings[k] for n, _, _, k in out if n == name and k != key]
        stems.append("_".join([name, *difference_words(scorings[key], same)]) if same else name)
    return [(stem, title, r) for stem, (_, title, r, _) in zip(stems, out, strict=True)]


@dataclass
class FigureSet:
    """The records of one figure: one setting (less its swept fields) and that setting's baseline."""

    name: str  # file-name stem: model, suite, variant, and the differing fields where names would collide
    title: str  # two lines: model, dtype, eval setting, variant; the timing job
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
        sets.append(FigureSet(name, "", setting, runs, bases[0] if bases else None))
    names = [s.name for s in sets]
    for s, name in zip(sets, names, strict=True):  # one name, two settings (limit, data, dtype): say which
        words = setting_words(s.setting, varying)
        if names.count(name) > 1:
            same = [t.setting for t, other in zip(sets, names, strict=True) if t is not s and other == name]
            words += difference_words(s.setting, same)
            s.name = "_".join([s.runs[0].model, s.runs[0].eval.suite, *words])
        head, job = setting_caption(s.setting).split("\n")
        s.title = "\n".join([" ".join([head, *words]), job])
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
                "chance Avg": chance_avg(r),
                **_fidelity_columns(r),
                "wall s": r.wall_s,  # the whole run as its record timed it: score, drop, eval, timing
            }
        )
    return pd.DataFrame(rows)


def _fidelity_columns(record: RunRecord) -> dict[str, float | None]:
    """KL to the original, top-1 agreement and perplexity with their 95% intervals (None: not recorded)."""
    f = record.fidelity or {}
    out: dict[str, float | None] = {}
    for key, name in (("kl", "KL"), ("top1", "top-1 %"), ("ppl", "ppl")):
        est = f.get(key) or {}
        out |= {name: est.get("value"), f"{name} low": est.get("low"), f"{name} high": est.get("high")}
    return out


def chance_avg(record: RunRecord) -> float | None:
    """The Avg a model guessing at random would score: the mean of its tasks' chance levels (None where a
    task records none, e.g. a perplexity task)."""
    chances = [t.chance for t in record.eval.tasks.values()]
    return None if not chances or None in chances else sum(chances) / len(chances)


def savefig(fig: plt.Figure, path: Path) -> None:
    """Save byte-reproducibly: the same records give the same file (CI diffs the committed figures), so a
    PDF carries no creation date (PNG has none)."""
    fig.savefig(path, dpi=150, metadata={"CreationDate": None} if path.suffix == ".pdf" else None)


def save_figure(fig: plt.Figure, stem: Path, data: pd.DataFrame) -> list[Path]:
    """Every figure's files: PNG, PDF and the CSV of exactly the numbers drawn, with each point's key."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        savefig(fig, path)
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


def _draw_curves(ax: plt.Axes, frame: pd.DataFrame, y: str, err: str | tuple[str, str]) -> None:
    """One line per (target, mode), each target in its colour, iterative dashed, and each point's error bar
    in its line's colour. Targets are offset a little along x so bars at one n sit side by side."""
    targets = sorted(frame.target.unique())
    colours = dict(zip(targets, sns.color_palette(n_colors=len(targets)), strict=True))
    dodge = {t: 0.12 * (i - (len(targets) - 1) / 2) for i, t in enumerate(targets)}
    modes = frame["mode"].nunique()
    for (target, mode), part in frame.groupby(["target", "mode"], sort=True):
        x = part.n + dodge[target]
        label = f"{target} {mode}" if modes > 1 else target
        style = "--" if mode == "iterative" else "-"
        ax.plot(x, part[y], marker="o", ls=style, color=colours[target], label=label)
        errs = [err] if isinstance(err, str) else list(err)  # symmetric, or (below, above)
        bars = part[y].notna() & part[errs].notna().all(axis=1)
        yerr = [part[e][bars] for e in errs] if len(errs) == 2 else part[errs[0]][bars]
        ax.errorbar(x[bars], part[y][bars], yerr=yerr, fmt="none", ecolor=colours[target], capsize=2)


def drop_curves(fs: FigureSet, stem: Path) -> list[Path]:
    """The paper's drop curves, one line per target: average accuracy vs number dropped (left; a bar is the
    95% interval of the paired difference to the baseline, +-1.96 paired SE, and the dotted line the suite's
    chance Avg) and KL(original || pruned) on held-out text (right; 95% bootstrap interval over sequences),
    which measures the same cut without eval-doc noise."""
    frame = _curves(points(fs))
    frame["ΔAvg 95%"] = 1.96 * frame["ΔAvg paired SE"]
    fig, (acc, kl) = plt.subplots(1, 2, figsize=(10, 4))
    _draw_curves(acc, frame, "Avg", "ΔAvg 95%")
    chance = frame["chance Avg"].dropna().unique()
    if len(chance) == 1:  # one suite, one chance level (several would mean mixed suites: draw none)
        acc.axhline(chance[0], color="grey", ls=":", lw=1, label=f"chance ({chance[0]:.1f})")
    acc.set(xlabel="modules dropped", ylabel="average accuracy (%), bars: 95% paired vs baseline")
    acc.legend(fontsize=8)
    if frame["KL"].notna().any():
        frame["KL err low"], frame["KL err high"] = (
            frame["KL"] - frame["KL low"],
            frame["KL high"] - frame["KL"],
        )
        _draw_curves(kl, frame, "KL", ("KL err low", "KL err high"))
        kl.set_yscale("symlog", linthresh=0.01)
    else:
        kl.text(0.5, 0.5, "no fidelity in these records", ha="center", va="center", transform=kl.transAxes)
    kl.set(xlabel="modules dropped", ylabel="KL(original || pruned), nats/token, 95% interval")
    fig.suptitle(fs.title, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, stem, frame)


def one_shot_vs_iterative(fs: FigureSet, stem: Path) -> list[Path]:
    """Iterative minus one-shot Avg vs number dropped, per target: each iterative run against the one-shot
    run of the same target and n on the same docs, with the paired SE (0 where both chose one plan). The CSV
    keeps every run's Avg beside its `Δ vs one-shot`."""
    one_shot = {(r.method.target, r.dropped): r for r in fs.runs if r.mode != "iterative"}
    versus = {
        r.key: avg_difference(one_shot[(r.method.target, r.dropped)], r)
        for r in fs.runs
        if r.mode == "iterative" and (r.method.target, r.dropped) in one_shot
    }
    frame = _curves(points(fs))
    pairs = [versus.get(key, (None, None)) for key in frame.key]  # one-shot and baseline rows: none
    frame["Δ vs one-shot"], frame["Δ vs one-shot paired SE"] = zip(*pairs, strict=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    _draw_curves(ax, frame[frame["Δ vs one-shot"].notna()], "Δ vs one-shot", "Δ vs one-shot paired SE")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set(xlabel="modules dropped", ylabel="iterative - one-shot Avg (points, ± paired SE)")
    ax.set_title(fs.title, fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, stem, frame)


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
    ax.set_title(fs.title, fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, stem, frame)


def sdr_vs_speedup(fs: FigureSet, stem: Path) -> list[Path]:
    """SDR against speedup, with intervals: lower SDR = less accuracy lost per point of speedup. Runs
    whose SDR is undefined are in the CSV with the reason, not on the plot. The y axis is symlog (linear
    within the smallest |SDR| drawn): one run near 1x can reach SDR 20+ and would flatten every other point
    on a linear axis. Each point is labelled with its method."""
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
    for _, row in shown.iterrows():
        ax.annotate(row.method, (row.speedup, row.SDR), fontsize=6, xytext=(3, 3), textcoords="offset points")
    if (size := shown.SDR.abs()[shown.SDR != 0]).any():
        ax.set_yscale("symlog", linthresh=float(size.min()))
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set(xlabel="speedup (x)", ylabel="SDR (points lost per point of speedup, symlog)")
    ax.set_title(fs.title, fontsize=8)
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
