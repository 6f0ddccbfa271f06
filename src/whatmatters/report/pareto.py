"""One speed-accuracy plot per setting: every method, criterion, budget and healing variant as a point.

A point is one record: measured `generate` speedup (median, 95% interval) against Avg (± its stderr).
Points share a plot only when their records agree on everything a run shares with its baseline
(`results.base_setting`: model, eval suite, limit and protocol, speed job, hardware, seed, quantization);
the method fields (target, n, criterion, mode, budget, heal, calibration data) are what varies between
points, and each is spelled out in the label and the CSV. The unpruned baseline is the point (1, Avg).

Pareto front (stated rule): a point is on it when no other point has a speedup and an Avg at least as
high, one of them strictly (medians and means, not intervals: the intervals are drawn so the reader sees
which front points are distinguishable). Ablations (another criterion, the residual removed: the
`ablation` column) are drawn apart and never join the front, which is the paper's method and its
extensions (budgets, healing) only. Every point is labelled. Points whose speed was not measured
(quantized without a kernel) are in the CSV, not on the plot.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from whatmatters.records.metrics import paired_difference
from whatmatters.records.store import RunRecord, base_setting, config_key
from whatmatters.report.labels import difference_words, method_label, run_label, setting_caption, variant
from whatmatters.report.plots import save_figure


def _row(r: RunRecord) -> dict:
    generate = r.speed.speedup.get("generate") if r.speed else None
    extra = r.method.extra
    return {
        "key": r.key,
        "label": run_label(r),
        "target": r.method.target,
        "n": r.dropped,
        "criterion": r.criterion or ("none" if r.is_baseline else "cosine"),
        "mode": r.mode or ("none" if r.is_baseline else "one_shot"),
        "budget": str(extra["budget"]) if extra.get("budget") else None,
        "healed": bool(extra.get("heal", {}).get("enabled")),
        "ablation": variant(r) or None,
        "speedup": generate.median if generate else None,
        "speedup low": generate.low if generate else None,
        "speedup high": generate.high if generate else None,
        "Avg": r.eval.avg,
        "Avg stderr": r.eval.avg_stderr,
        **{k: v for k, v in r.setting().items() if k.startswith("data.")},
    }


def pareto_mask(frame: pd.DataFrame) -> pd.Series:
    """True where no other row is at least as fast and as accurate, and strictly better in one."""
    speed, avg = frame["speedup"], frame["Avg"]
    return pd.Series(
        [
            not ((speed >= s) & (avg >= a) & ((speed > s) | (avg > a))).any()
            for s, a in zip(speed, avg, strict=True)
        ],
        index=frame.index,
    )


def frames(records: Iterable[RunRecord]) -> dict[str, pd.DataFrame]:
    """One frame per shared setting, named `<model>_<suite>` (+ the fields that differ where two would
    collide: `eval.limit-50`); `frame.attrs["title"]` names the setting, its timing job and experiments."""
    groups: dict[str, list[RunRecord]] = {}
    for r in records:
        groups.setdefault(config_key(base_setting(r.setting())), []).append(r)
    groups = {k: runs for k, runs in sorted(groups.items()) if not all(r.is_baseline for r in runs)}
    settings = {k: base_setting(runs[0].setting()) for k, runs in groups.items()}
    names = {k: f"{runs[0].model}_{runs[0].eval.suite}" for k, runs in groups.items()}
    out: dict[str, pd.DataFrame] = {}
    for key, runs in groups.items():
        frame = pd.DataFrame(
            [_row(r) for r in sorted(runs, key=lambda r: (r.method.target, r.dropped, r.key))]
        )
        main = frame["speedup"].notna() & frame["ablation"].isna()
        frame["pareto"] = False
        frame.loc[main, "pareto"] = pareto_mask(frame[main])
        same = [settings[k] for k in groups if k != key and names[k] == names[key]]
        name = "_".join([names[key], *(difference_words(settings[key], same) if same else [])])
        experiments = sorted({e for r in runs for e in r.experiments})
        head, job = setting_caption(settings[key]).split("\n")
        runs_of = ", ".join(experiments) or "no experiment"
        frame.attrs["title"] = f"speed vs accuracy: {head}, runs of {runs_of}\n{job}"
        out[name] = frame
    return out


def speed_accuracy(frame: pd.DataFrame, stem: Path, title: str) -> list[Path]:
    """The plot: every timed point with both intervals and its label, the Pareto front of the main points
    joined, the baseline a star, ablations grey crosses apart from the front."""
    shown = frame[frame["speedup"].notna()]
    fig, ax = plt.subplots(figsize=(7, 5))
    groups = shown.assign(
        kind=shown.ablation.notna().map({True: "ablation", False: ""})
        + shown.target.eq("none").map({True: "baseline", False: ""})
        + shown.healed.map({True: "healed (LoRA)", False: ""})
    )
    styles = {
        "": ("o", None, "cosine drop"),
        "baseline": ("*", "k", "baseline (unpruned)"),
        "healed (LoRA)": ("s", None, "healed (LoRA)"),
        "ablation": ("x", "grey", "ablation (criterion or no-residual; off the front)"),
    }
    for kind, part in groups.groupby("kind"):
        marker, colour, label = styles.get(kind, ("x", "grey", kind))
        xerr = [
            (part.speedup - part["speedup low"]).fillna(0),
            (part["speedup high"] - part.speedup).fillna(0),
        ]
        ax.errorbar(
            part.speedup,
            part.Avg,
            xerr=xerr,
            yerr=part["Avg stderr"].fillna(0),
            fmt=marker,
            color=colour,
            capsize=2,
            alpha=0.8,
            label=label,
        )
    front = shown[shown["pareto"]].sort_values("speedup")
    ax.plot(front.speedup, front.Avg, "k--", lw=1, label="Pareto front (main points)")
    for _, row in shown.iterrows():
        ax.annotate(
            row["label"], (row.speedup, row.Avg), fontsize=6, xytext=(3, 3), textcoords="offset points"
        )
    ax.set(xlabel="measured generate speedup (x, 95% interval)", ylabel="Avg accuracy (%, ± stderr)")
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, stem, frame)


def speed_accuracy_plots(records: Iterable[RunRecord], out_dir: Path) -> list[Path]:
    """Every speed-accuracy plot the records allow: `pareto_<model>_<suite>.{png,pdf,csv}` in `out_dir`."""
    paths = []
    for name, frame in frames(records).items():
        paths += speed_accuracy(frame, Path(out_dir) / f"pareto_{name}", frame.attrs["title"])
    return paths


def healing_table(records: Iterable[RunRecord]) -> pd.DataFrame:
    """One row per healed run: Avg of the same pruned model before and after healing, the paired difference.

    Both evaluations are of one run on the same docs, so the difference's standard error is paired
    (`metrics.paired_difference`); chance levels are the tasks' own (`chance` per task in the record).
    """
    rows = []
    for r in records:
        info = r.extra.get("heal")
        if not info:
            continue
        delta, se, _ = paired_difference(info["eval_before"], r.eval)
        chance = {t: v.chance for t, v in r.eval.tasks.items() if v.chance is not None}
        rows.append(
            {
                "key": r.key,
                "method": method_label(r),
                "Avg before": info["eval_before"]["avg"],
                "Avg healed": r.eval.avg,
                "delta": delta,
                "paired SE": se,
                "NLL before": info["loss_before"],
                "NLL healed": info["loss_after"],
                "rank": info.get("rank"),  # LoRA's; heal=last_layers trains whole layers
                "steps": info["steps"],
                "heal s": info.get("wall_s"),
                "chance": ", ".join(f"{t} {c:g}" for t, c in sorted(chance.items())),
            }
        )
    return pd.DataFrame(rows).sort_values(["method"], ignore_index=True) if rows else pd.DataFrame(rows)
