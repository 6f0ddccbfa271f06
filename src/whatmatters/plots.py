"""Figures drawn from saved results (never from a live model)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm

from whatmatters.scores import Scores
from whatmatters.tables import method_label


def importance_heatmap(scores: Scores, path: str | Path, title: str = "") -> Path:
    """Layer x {block, attn, mlp} heatmap of importance (the paper's redundancy figure).

    Lighter = lower score = more redundant; dropped modules (NaN) are left blank. Log colour scale:
    layer 0 scores ~100x the middle layers and would otherwise wash out every other difference.
    """
    table = pd.DataFrame(
        {"Block": scores.block, "Attention": scores.attn, "MLP": scores.mlp},
        index=pd.RangeIndex(scores.num_layers, name="layer"),
    ).T
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * scores.num_layers), 2.6))
    label = f"importance ({scores.meta.get('criterion', 'cosine')})"
    sns.heatmap(table, cmap="Blues", norm=LogNorm(), ax=ax, cbar_kws={"label": label})
    ax.set_xlabel("layer")
    ax.set_ylabel("")
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def _records_frame(records: list[dict]) -> pd.DataFrame:
    """One row per record: what the curves and bars plot."""
    rows = []
    for r in records:
        speed = r.get("speed") or {}
        rows.append(
            {
                "method": method_label(r),
                "target": r["method"]["target"],
                "n": r["dropped"],
                "mode": r.get("mode", "one_shot"),
                "Avg": r["eval"]["avg"],
                "speedup": speed.get("speedup"),
                "KV ratio": speed.get("kv_ratio"),
                "SDR": r.get("sdr"),
            }
        )
    return pd.DataFrame(rows)


def _save(fig: plt.Figure, stem: Path) -> list[Path]:
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=150)
    plt.close(fig)
    return paths


def _with_baseline(frame: pd.DataFrame) -> pd.DataFrame:
    """Every curve starts at the unpruned baseline (n = 0)."""
    base = frame[frame.target == "none"]
    curves = [frame[frame.target != "none"]]
    for target in frame.target.unique():
        if target != "none":
            for mode in frame[frame.target == target]["mode"].unique():
                curves.append(base.assign(target=target, mode=mode))
    return pd.concat(curves, ignore_index=True).sort_values("n")


def drop_curves(records: list[dict], stem: Path, title: str) -> list[Path]:
    """Average accuracy vs number dropped, one line per target (one-shot): the paper's drop curves."""
    frame = _with_baseline(_records_frame(records))
    frame = frame[frame["mode"] == "one_shot"]
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(frame, x="n", y="Avg", hue="target", marker="o", ax=ax)
    ax.set(xlabel="modules dropped", ylabel="average accuracy", title=title)
    fig.tight_layout()
    return _save(fig, stem)


def one_shot_vs_iterative(records: list[dict], stem: Path, title: str) -> list[Path]:
    """Average accuracy vs number dropped, one-shot (solid) vs iterative (dashed), per target."""
    frame = _with_baseline(_records_frame(records))
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(frame, x="n", y="Avg", hue="target", style="mode", marker="o", ax=ax)
    ax.set(xlabel="modules dropped", ylabel="average accuracy", title=title)
    fig.tight_layout()
    return _save(fig, stem)


def speed_bars(records: list[dict], stem: Path, title: str) -> list[Path]:
    """Speedup and KV-cache ratio per method: what each drop buys."""
    frame = _records_frame(records)
    frame = frame[(frame.target != "none") & frame.speedup.notna()].sort_values(["target", "mode", "n"])
    long = frame.melt(id_vars="method", value_vars=["speedup", "KV ratio"], var_name="measure")
    fig, ax = plt.subplots(figsize=(max(6.0, 0.5 * len(frame)), 4))
    sns.barplot(long, x="method", y="value", hue="measure", ax=ax)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set(xlabel="", ylabel="x original", title=title)
    ax.tick_params(axis="x", rotation=45)
    fig.tight_layout()
    return _save(fig, stem)


def sdr_vs_speedup(records: list[dict], stem: Path, title: str) -> list[Path]:
    """SDR against speedup: lower SDR = less accuracy lost per point of speedup."""
    frame = _records_frame(records).dropna(subset=["SDR", "speedup"])
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.scatterplot(frame, x="speedup", y="SDR", hue="target", style="mode", s=60, ax=ax)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set(xlabel="speedup (x)", ylabel="SDR (points lost per point of speedup)", title=title)
    fig.tight_layout()
    return _save(fig, stem)


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
    grid = sns.relplot(
        pd.DataFrame(rows),
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
    return _save(grid.figure, stem)
