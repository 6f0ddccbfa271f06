"""The paper's tables rebuilt from the results store: measured columns, then the paper's, labelled.

Only reads records (results.py); never runs a model. A table holds the runs of one experiment that share
one setting (`RunRecord.setting`: model, eval suite/limit/protocol, calibration data, dtype, seed,
quantization, speed job, hardware) and the baseline of that setting; its rows differ only by method, n
and variant (mode, criterion, residual ablation). Runs of several settings, or two records claiming one
row, are an error naming them, never a silent pick. Every row carries its record key. How a table reads
and is written (cells, .md/.csv/.tex) is `table_files.py`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd

from whatmatters.eval.suites import ACCURACY_METRICS
from whatmatters.paper import TABLES, PaperRow, paper_row
from whatmatters.published import NOTES as PUBLISHED_NOTES
from whatmatters.records.metrics import UnpairedError, paired_difference
from whatmatters.records.store import PHASES, RunRecord, base_setting, matches, without
from whatmatters.report.labels import method_label, variant

# Setting fields that tell the rows of one table apart (they are in the row label), not the table.
VARIANTS = ("criterion", "mode", "method.")


class TableError(ValueError):
    """Records that cannot make one table: several settings, or two records for one cell."""


def shared_setting(record: RunRecord, drop: tuple[str, ...] = VARIANTS) -> dict[str, Any]:
    """The record's setting without the fields in `drop` (prefixes ending in "." drop a whole group)."""
    return without(record.setting(), drop)


def one_setting(records: list[RunRecord], what: str, drop: tuple[str, ...] = VARIANTS) -> dict[str, Any]:
    """The setting `records` share; TableError naming each differing field, its values and the fix if not."""
    settings = [shared_setting(r, drop) for r in records]
    if all(s == settings[0] for s in settings):
        return settings[0]
    fields = sorted({k for s in settings for k in s if any(s.get(k) != t.get(k) for t in settings)})
    lines = [
        f"  {name}: "
        + ", ".join(f"{v} ({n} records)" for v, n in Counter(str(s.get(name)) for s in settings).items())
        for name in fields
    ]
    raise TableError(
        f"{what} mixes records of {len({str(sorted(s.items())) for s in settings})} settings that differ in\n"
        + "\n".join(lines)
        + f"\nPick one with where={{FIELD:VALUE}} (e.g. 'where={{{fields[0]}:...}}')."
    )


def unique_cells(records: Iterable[RunRecord], cell: Any, what: str) -> dict[Any, RunRecord]:
    """`records` by cell (`cell(record)`); TableError naming both records when two claim one cell."""
    cells: dict[Any, RunRecord] = {}
    for r in records:
        key = cell(r)
        if key in cells:
            raise TableError(
                f"{what}: two records claim the cell {key}: {cells[key].where} and {r.where}. Their settings "
                "agree, so something outside them differs: delete the stale record or re-run both."
            )
        cells[key] = r
    return cells


def select(
    records: Iterable[RunRecord], experiment: str, model: str, suite: str, where: Mapping[str, Any] = {}
) -> list[RunRecord]:
    """The records of one table: the experiment's runs of one setting and that setting's baseline."""
    what = f"{experiment} for {model} on the {suite} suite"
    pool = [r for r in records if r.model == model and r.eval.suite == suite and matches(r, where)]
    runs = [r for r in pool if not r.is_baseline and experiment in r.experiments]
    drop = VARIANTS + TABLES.get(experiment, {}).get("varies", ())  # Table 11's rows vary quantization too
    if runs:
        shared = base_setting(one_setting(runs, what, drop))
        bases = [r for r in pool if r.is_baseline and without(r.setting(), drop) == shared]
    else:
        bases = [r for r in pool if r.is_baseline]
        if bases:
            one_setting(bases, what, drop)
    chosen = list(unique_cells(bases + runs, method_label, what).values())
    return sorted(chosen, key=lambda r: (not r.is_baseline, r.method.target, r.dropped, method_label(r)))


def _speed_columns(r: RunRecord) -> dict[str, Any]:
    """Speedup per phase as median and 95% interval (a schema-1 record has the median only), flagged when
    it beats what the plan can gain at most beyond its interval: a timing fault, not a result."""
    row: dict[str, Any] = {}
    speed = r.speed
    if speed is None:
        return row
    for phase in PHASES:
        if (iv := speed.speedup.get(phase)) is None:
            continue
        col = "speedup" if phase == "generate" else f"{phase} speedup"
        row |= {col: iv.median, f"{col} low": iv.low, f"{col} high": iv.high}
    ideal, generate = speed.ideal_speedup, speed.speedup.get("generate")
    if ideal is not None and generate is not None:
        # Schema-1 records carry no flag and no interval: their one number is compared as it is.
        exceeds = speed.exceeds_ideal if speed.exceeds_ideal is not None else generate.median > ideal
        row |= {"ideal speedup": ideal, "speedup flag": f"> ideal {ideal:.2f}" if exceeds else None}
    if speed.extra.get("not_timed"):  # a quantization scheme without a kernel on that device (quant.untimed)
        row |= {"speedup": None, "speedup flag": "not timed: no kernel"}
    row["KV ratio"] = speed.kv_ratio
    measured = speed.pruned or speed.original or {}  # a baseline record times the original only
    row["KV MiB"] = measured.get("kv_cache_bytes", math.nan) / 2**20
    return row


def _weight_columns(r: RunRecord) -> dict[str, Any]:
    """Weight bytes as stored (quantized runs: also packed at their bits), where the record has them."""
    params = r.params or {}
    return {
        name: params[field] / 2**20
        for name, field in (("weights MiB", "weight_bytes"), ("packed MiB", "packed_weight_bytes"))
        if field in params
    }


def _sdr_columns(r: RunRecord) -> dict[str, Any]:
    if r.sdr is None:
        return {}
    reason = r.sdr.reason or "not computed"
    return {
        "SDR": r.sdr.value,
        "SDR low": r.sdr.low,
        "SDR high": r.sdr.high,
        "SDR flag": None if r.sdr.value is not None else f"undefined: {reason}",
    }


def _paper_columns(ref: PaperRow | None, table: str) -> dict[str, Any]:
    precision = TABLES[table].get("precision")
    name = f"{ref.model} {precision}" if ref and precision else ref.model if ref else None
    return {
        "paper row": f"{name}: {ref.label}" if ref else None,
        "paper Avg": ref.avg if ref else None,
        "paper speedup": ref.speedup if ref else None,
        "paper SDR": ref.sdr if ref else None,
    }


def _paper_refs(chosen: list[RunRecord], table: str, model: str) -> dict[str, PaperRow | None]:
    """The paper's row beside each run; the baseline beside the baseline of the paper model most drop
    rows are matched to, so one paper model serves the whole table."""
    refs = {
        r.key: paper_row(table, model, r.method.target, r.dropped, r.num_layers, variant(r, table))
        for r in chosen
    }
    matched = Counter(ref.model for ref in refs.values() if ref and ref.target != "none")
    if matched:
        main = matched.most_common(1)[0][0]
        bases = {p.variant: p for p in TABLES[table]["rows"] if p.target == "none" and p.model == main}
        refs |= {r.key: bases.get(variant(r, table)) for r in chosen if r.is_baseline}
    return refs


def _retained_columns(base: RunRecord, r: RunRecord, se: float | None) -> dict[str, Any]:
    """The row's Avg as a percentage of the baseline's, as the repair papers report retained performance."""
    scale = 100 / base.eval.avg
    return {"% of baseline": r.eval.avg * scale, "% of baseline ±": se * scale if se is not None else None}


def _fidelity_columns(r: RunRecord) -> dict[str, Any]:
    """KL(original || run) and the run's perplexity on held-out text, each with its 95% interval, where the
    record measured them (`fidelity`)."""
    fidelity = r.fidelity or {}
    row: dict[str, Any] = {}
    for key, col in (("kl", "KL"), ("ppl", "ppl")):
        if (est := fidelity.get(key)) is not None:
            row |= {col: est["value"], f"{col} low": est["low"], f"{col} high": est["high"]}
    return row


def _layers(indices: list[int]) -> str:
    """Layer indices as ranges: [4, 5, 6, 9] -> `4-6, 9`."""
    runs: list[list[int]] = []
    for i in sorted(indices):
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs)


def _run_columns(r: RunRecord) -> dict[str, Any]:
    """What the record says about the run itself, so prose can quote it: the layers its plan dropped
    (`attn 4-9, 12; mlp 13`), its scoring cost in forward-pass equivalents (one-shot cosine: 1), wall time."""
    plan = r.plan or {}
    kinds = [(k, plan.get(k) or []) for k in ("blocks", "attn", "mlp")]
    dropped = "; ".join(f"{k.removesuffix('s')} {_layers(idx)}" for k, idx in kinds if idx)
    return {"dropped layers": dropped or None, "scoring passes": r.forward_equivalents, "wall s": r.wall_s}


def _measure_notes(frame: pd.DataFrame) -> list[str]:
    """What the retained and fidelity columns mean, where the table has them."""
    notes = []
    if "% of baseline" in frame:
        notes.append(
            "% of baseline = 100 x Avg / the baseline's Avg (the repair papers' retained performance, a "
            "ratio of the averages), ± = the ΔAvg paired SE on the same scale."
        )
    if "dropped layers" in frame:
        notes.append(
            "dropped layers = the plan's original layer indices; scoring passes = the scoring cost in "
            "forward-pass equivalents (one-shot cosine: 1); wall s = the run's wall time in seconds (record)."
        )
    if "KL" in frame:
        notes.append(
            "KL = mean next-token KL(original || row) in nats, ppl = the row's perplexity, both on the run's "
            "held-out Wikipedia sequences (`fidelity` in the record), [95% bootstrap interval, sequences]."
        )
    return notes


def avg_difference(base: RunRecord, run: RunRecord) -> tuple[float, float | None]:
    """`run`'s Avg minus `base`'s with its paired SE, or the plain difference and None where a record has
    no per-doc values (then the difference cannot be paired, and callers say so)."""
    try:
        delta, se, _ = paired_difference(base.eval, run.eval)
    except UnpairedError:
        return run.eval.avg - base.eval.avg, None
    return delta, se


def build_table(
    records: Iterable[RunRecord], experiment: str, model: str, suite: str, where: Mapping[str, Any] = {}
) -> pd.DataFrame:
    """Rows of `experiment` for one model, suite and setting, the baseline on top; `frame.attrs["notes"]`
    says what every column is (write_table prints it). Columns with no value at all are left out."""
    chosen = select(records, experiment, model, suite, where)
    base = next((r for r in chosen if r.is_baseline), None)
    paper_table = experiment if experiment in TABLES else None
    refs = _paper_refs(chosen, paper_table, model) if paper_table else {}
    rows = []
    for r in chosen:
        row: dict[str, Any] = {"model": model, "method": method_label(r)}
        for task, result in r.eval.tasks.items():
            row |= {task: result.value, f"{task} ±": result.stderr}
        row |= {"Avg": r.eval.avg, "Avg ±": r.eval.avg_stderr}
        if base is not None and not r.is_baseline:
            delta, se = avg_difference(base, r)
            row |= {"ΔAvg": delta, "ΔAvg ±": se, "ΔAvg flag": None if se is not None else "unpaired"}
            row |= _retained_columns(base, r, se)
        row |= (
            _fidelity_columns(r) | _weight_columns(r) | _speed_columns(r) | _sdr_columns(r) | _run_columns(r)
        )
        if paper_table:
            row |= _paper_columns(refs[r.key], paper_table)
        rows.append(row | {"key": r.key})
    frame = pd.DataFrame(rows)
    frame = frame[sorted(frame.columns, key=_column_rank)]
    # A column with no value at all goes, unless its flag says why (SDR undefined in every row).
    empty = [c for c in frame if frame[c].isna().all() and frame.get(f"{c} flag", frame[c]).isna().all()]
    frame = frame.drop(columns=empty)
    notes = _notes(chosen, paper_table) + _measure_notes(frame)
    frame.attrs["notes"] = notes + PUBLISHED_NOTES.get(experiment, [])
    return frame


def build_paired_table(
    records: Iterable[RunRecord], experiment: str, model: str, suite: str, where: Mapping[str, Any] = {}
) -> pd.DataFrame:
    """Per task, each row minus the baseline on the same docs, ± its paired SE: the per-task view the Avg
    hides (a cut that breaks one task's answer bias lifts the Avg while another task falls). Same records
    as `build_table`; rows without per-doc values are left out and named in the notes. Empty without a
    baseline."""
    chosen = select(records, experiment, model, suite, where)
    base = next((r for r in chosen if r.is_baseline), None)
    if base is None:
        return pd.DataFrame()
    rows, unpaired = [], []
    for r in chosen:
        if r.is_baseline:
            continue
        try:
            delta, se, per_task = paired_difference(base.eval, r.eval)
        except UnpairedError:
            unpaired.append(f"{method_label(r)} ({r.key})")
            continue
        row: dict[str, Any] = {"model": model, "method": method_label(r)}
        for task, (task_delta, task_se) in per_task.items():
            row |= {f"Δ {task}": task_delta, f"Δ {task} ±": task_se}
        rows.append(row | {"ΔAvg": delta, "ΔAvg ±": se, "key": r.key})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame = frame[sorted(frame.columns, key=_column_rank)]
    accuracy = [t for t, res in base.eval.tasks.items() if res.metric in ACCURACY_METRICS]
    frame.attrs["notes"] = [
        f"Each cell: the row minus the {_baseline_name(chosen)} on the same docs, in points, ± the paired "
        "standard error of the per-doc differences; ΔAvg as in the main table. A difference within about "
        "two SEs of zero is not distinguishable from no change at this eval size.",
        "Baseline per task (chance): " + ", ".join(f"{t} {_task_score(base, t)}" for t in accuracy) + ".",
        _setting_note(chosen, experiment if experiment in TABLES else None),
        *([f"Left out, no per-doc values: {', '.join(unpaired)}."] if unpaired else []),
    ]
    return frame


def _task_score(record: RunRecord, task: str) -> str:
    result = record.eval.tasks[task]
    chance = f"{result.chance:.3g}" if result.chance is not None else "not recorded"
    return f"{result.value:.1f} ({chance})"


HELPERS = (" ±", " low", " high", " flag")  # columns that qualify the one they follow
COLUMN_ORDER = ("model", "method", "", "Avg", "ΔAvg", "% of baseline", "KL", "ppl", "speedup")
COLUMN_ORDER += ("prefill speedup", "decode speedup")
COLUMN_ORDER += (
    "ideal speedup",
    "KV ratio",
    "SDR",
    "paper row",
    "paper Avg",
    "paper speedup",
    "paper SDR",
    "dropped layers",
    "scoring passes",
    "wall s",
    "key",
)


def _column_rank(column: str) -> int:
    """Fixed column order (task columns where "" stands), each helper right after its column."""
    base = next((column.removesuffix(h) for h in HELPERS if column.endswith(h)), column)
    return COLUMN_ORDER.index(base) if base in COLUMN_ORDER else COLUMN_ORDER.index("")


def _baseline_name(chosen: list[RunRecord]) -> str:
    """The row every ΔAvg is taken against (build_table: the first baseline row), by label and key."""
    base = next((r for r in chosen if r.is_baseline), None)
    return f"{method_label(base)} row ({base.key})" if base else "baseline (none in this table)"


def _setting_note(chosen: list[RunRecord], paper_table: str | None) -> str:
    """What every row of a table shares (its rows differ only by method, n and variant)."""
    drop = VARIANTS + TABLES.get(paper_table, {}).get("varies", ())
    setting = base_setting(shared_setting(chosen[-1], drop))
    return "Setting of every row: " + ", ".join(f"{k}={v}" for k, v in setting.items()) + "."


def _notes(chosen: list[RunRecord], paper_table: str | None) -> list[str]:
    """What the table's columns mean, read from its records: setting, protocol, chance levels, speed job."""
    if not chosen:
        return []
    notes = [_setting_note(chosen, paper_table)]
    if protocol := chosen[0].eval.protocol:
        notes.append(f"Eval protocol: {protocol}.")
    chance = {t: res.chance for r in chosen for t, res in r.eval.tasks.items() if res.chance is not None}
    tasks = dict.fromkeys(t for r in chosen for t in r.eval.tasks)
    notes.append(
        "Chance level per task: "
        + ", ".join(f"{t} {chance[t]:.3g}%" if t in chance else f"{t} not recorded" for t in tasks)
        + " (perplexity has none and is not in Avg)."
    )
    accuracy = {t for r in chosen for t, res in r.eval.tasks.items() if res.metric in ACCURACY_METRICS}
    averaged = ", ".join(t for t in tasks if t in accuracy)
    notes += [
        f"`±` after a score = lm-eval standard error. Avg = mean of {averaged} in %, measured here on the "
        f"{chosen[0].eval.suite} suite: not the paper's tasks or models.",
        f"ΔAvg = the row minus the {_baseline_name(chosen)} on the same docs, ± its paired standard error "
        "(per-doc differences; tasks combined in quadrature); `unpaired` = a record without per-doc values, "
        "plain difference, no SE.",
        "Speedup = t_original / t_pruned of the same job (speed.* above), median [95% interval] of the "
        "paired repeats where the record has them; `> ideal` flags a speedup whose interval lies above "
        "what the plan can gain at most (a timing fault). SDR = ΔAvg / ((speedup - 1) x 100), with its "
        "interval, or undefined with the reason.",
    ]
    if any(r.quant for r in chosen):
        notes.append(
            "weights MiB = parameter bytes as stored (quantized: integer data and scales; packed MiB = the "
            "same with each value at the scheme's bits); KV MiB = the speed job's measured KV cache; `not "
            "timed: no kernel` = a scheme whose torchao linear dequantizes on this device, so a time would "
            "measure that fallback, not the scheme."
        )
    if paper_table:
        notes.append(
            f"`paper ...` columns: published numbers of arXiv 2406.15786 v6 {paper_table} "
            f"({TABLES[paper_table]['setup']}), not reruns; a row sits beside the paper's row at the same "
            "fraction of layers. They are a reference for the trend, not a like-for-like comparison."
        )
    return notes
