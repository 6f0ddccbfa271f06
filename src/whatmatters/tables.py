"""The paper's tables rebuilt from the results store: measured columns, then the paper's, labelled.

Only reads records (see results.py); never runs a model. One row per run, the unpruned baseline
first, then by method and number dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from whatmatters.paper import TABLES, TARGET_LABELS, paper_row
from whatmatters.scores import atomic_write_text


def method_label(record: dict) -> str:
    """E.g. `Attn-8`, `Attn-8 no-residual`, `Joint-8 iterative`, `Attn-12 [magnitude]`."""
    method = record["method"]
    if method["target"] == "none":
        return "Baseline"
    label = f"{TARGET_LABELS[method['target']]}-{record['dropped']}"
    if method.get("consecutive"):
        label += " span"
    if method.get("remove_residual"):
        label += " no-residual"
    if record.get("mode") == "iterative":
        label += " iterative"
    if record.get("criterion", "cosine") != "cosine":
        label += f" [{record['criterion']}]"
    return label


def variant(record: dict) -> str:
    """The ablation a run belongs to, as the paper's rows name it: "no-residual", a criterion, or ""."""
    if record["method"].get("remove_residual"):
        return "no-residual"
    criterion = record.get("criterion", "cosine")
    return "" if criterion == "cosine" else criterion


def build_table(records: Iterable[dict], experiment: str, model: str, suite: str) -> pd.DataFrame:
    """Rows of `experiment` for one model and eval suite, with the shared baseline on top.

    A setting run again under another config (say, a longer speed job) leaves two records with one
    label; the newest is shown. Columns with no value at all (perplexity has no stderr) are left out.
    """
    latest: dict[str, dict] = {}
    for r in sorted(records, key=lambda r: r.get("created", "")):
        if (
            r["model"] == model
            and r["eval"]["suite"] == suite
            and (r["method"]["target"] == "none" or experiment in r.get("experiments", ()))
        ):
            latest[method_label(r)] = r
    chosen = list(latest.values())
    chosen.sort(key=lambda r: (r["method"]["target"] != "none", r["method"]["target"], r["dropped"]))
    paper_table = experiment if experiment in TABLES else None
    refs = {}
    if paper_table:
        for r in chosen:
            target, n, layers = r["method"]["target"], r["dropped"], r["num_layers"]
            refs[r["key"]] = paper_row(paper_table, model, target, n, layers, variant(r))
    # The baseline sits beside the baseline of the paper model that most drop rows are matched to.
    matched = Counter(ref.model for ref in refs.values() if ref and ref.target != "none")
    if matched:
        main = matched.most_common(1)[0][0]
        base = next((p for p in TABLES[paper_table]["rows"] if p.target == "none" and p.model == main), None)
        refs |= {r["key"]: base for r in chosen if r["method"]["target"] == "none"}
    rows = []
    for r in chosen:
        row = {"model": model, "method": method_label(r)}
        for task, result in r["eval"]["tasks"].items():
            row[task] = result["value"]
            row[f"{task} ±"] = result["stderr"]
        row["Avg"] = r["eval"]["avg"]
        speed = r.get("speed") or {}
        row["speedup"] = speed.get("speedup")
        row["KV ratio"] = speed.get("kv_ratio")
        row["SDR"] = r.get("sdr")
        if paper_table:
            ref = refs[r["key"]]
            row |= {
                "paper row": f"{ref.model} {ref.label}" if ref else None,
                "paper Avg": ref.avg if ref else None,
                "paper speedup": ref.speedup if ref else None,
                "paper SDR": ref.sdr if ref else None,
            }
        rows.append(row)
    return pd.DataFrame(rows).dropna(axis="columns", how="all")


def write_table(frame: pd.DataFrame, stem: str | Path, title: str) -> list[Path]:
    """`stem`.md, .csv and .tex; the markdown opens with what is measured and what is the paper's."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    note = (
        f"# {title}\n\nMeasured by this repo unless the column says `paper`: the `paper ...` columns are "
        "the published numbers (arXiv 2406.15786 v6), not reruns. `±` = lm-eval standard error. "
        "Avg = mean of the accuracy tasks (%); perplexity columns (lower is better) are not in it. "
        "Measured speedup = t_original / t_pruned of one `generate` job, timed side by side in one run; "
        "SDR swings wildly where that speedup is within timing noise of 1.\n\n"
    )
    paths = [stem.with_suffix(ext) for ext in (".md", ".csv", ".tex")]
    shown = frame.astype(object).where(frame.notna(), None)  # tabulate prints None as missingval, NaN as nan
    atomic_write_text(paths[0], note + shown.to_markdown(index=False, floatfmt=".3g", missingval="--") + "\n")
    atomic_write_text(paths[1], frame.to_csv(index=False))
    atomic_write_text(paths[2], frame.to_latex(index=False, float_format="%.3g", na_rep="--"))
    return paths
