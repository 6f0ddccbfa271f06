"""How a run is named, in one place: table rows, figure names and titles, the speed-accuracy plot and the
run's own record name all spell an ablation the same way (`no-residual`, `span`, `iterative`, `[criterion]`,
a quantization scheme, a repair, healing)."""

from __future__ import annotations

import re
from typing import Any

from whatmatters.paper import TABLES, TARGET_LABELS
from whatmatters.records.store import RunRecord


def method_label(record: RunRecord) -> str:
    """E.g. `Attn-8`, `Attn-8 no-residual`, `Joint-8 iterative`, `Attn-12 [magnitude]`, `Attn-8 int4`."""
    method = record.method
    if record.is_baseline:
        return "Baseline" + _quant_label(record)
    label = f"{TARGET_LABELS[method.target]}-{record.dropped}"
    if method.consecutive:
        label += " span"
    if method.remove_residual:
        label += " no-residual"
    if record.mode == "iterative":
        label += " iterative"
    if (record.criterion or "cosine") != "cosine":
        label += f" [{record.criterion}]"
    return label + _quant_label(record) + _change_label(record)


def _change_label(record: RunRecord) -> str:
    """What changed the pruned model's weights after the cut: ` linear-repair`, ` magnitude-repair`, then
    ` healed` (LoRA) or ` last-layers` (heal.kind=last_layers); "" for a model evaluated as cut."""
    extra = record.method.extra
    words = []
    if (kind := extra.get("repair", {}).get("kind", "none")) != "none":
        words.append(f"{kind}-repair")
    if (heal := extra.get("heal", {})).get("enabled"):
        words.append("last-layers" if heal.get("kind") == "last_layers" else "healed")
    return "".join(f" {w}" for w in words)


def _scheme(record: RunRecord) -> str:
    return (record.quant or {}).get("scheme", "none")


def _quant_label(record: RunRecord) -> str:
    """` int4` for a quantized run (` int4 quant-first` when it was scored quantized), "" unquantized."""
    if _scheme(record) == "none":
        return ""
    first = (record.quant or {}).get("order") == "quant_then_drop"
    return f" {_scheme(record)}" + (" quant-first" if first else "")


def variant(record: RunRecord, table: str | None = None) -> str:
    """The ablation a run belongs to, as the paper's rows name it: "no-residual", a criterion, a quantization
    where `table`'s rows vary it (int4 -> "4-bit" in Table 11), or ""."""
    quant_variants = TABLES.get(table, {}).get("quant_variants")
    if quant_variants and _scheme(record) != "none":
        return quant_variants.get(_scheme(record), _scheme(record))
    if record.method.remove_residual:
        return "no-residual"
    criterion = record.criterion or "cosine"
    return "" if criterion == "cosine" else criterion


def run_label(record: RunRecord) -> str:
    """The table label plus what the tables do not name: a budget (the speed-accuracy plot)."""
    words = [method_label(record)]
    if budget := record.method.extra.get("budget"):
        words.append(f"budget {budget['kind']} {budget['target']}")
    return " ".join(words)


def run_name(record: RunRecord) -> str:
    """The record's name (wandb run, logs): model and `run_label` as one file-name-safe slug, e.g.
    `smollm2-135m-attn-8-no-residual-iterative-magnitude-int4`."""
    return "-".join(re.findall(r"[a-z0-9.]+", f"{record.model} {run_label(record)}".lower()))


def setting_words(setting: dict[str, Any], varying: set[str]) -> list[str]:
    """How a setting reads in names: its ablations (criterion, no-residual, span), iterative, and any other
    method field where the figure sets differ in it (a field every run shares names nothing). A method
    sub-config is one word, so names stay file names: `heal` for a switched-on one (its settings are in the
    records; two such sets get figure_sets' hash), else its values (`budget-speedup-1.1`)."""
    words = [] if setting.get("criterion", "cosine") == "cosine" else [setting["criterion"]]
    groups: dict[str, dict[str, Any]] = {}
    for name, value in setting.items():
        if name == "method.remove_residual":
            words.append("no-residual")
        elif name == "method.consecutive":
            words.append("span")
        elif name.startswith("method.") and name in varying:
            field, _, sub = name.removeprefix("method.").partition(".")
            if sub:
                groups.setdefault(field, {})[sub] = value
            else:
                words.append(f"{field}-{value}")
    for field, values in groups.items():
        if "enabled" not in values:
            words.append("-".join([field, *map(str, values.values())]))
        elif values["enabled"]:
            words.append(field)
    return words + ([setting["mode"]] if setting.get("mode", "one_shot") != "one_shot" else [])


def timing_job(setting: dict[str, Any]) -> str:
    """The speed job a figure's speedups come from, e.g. `timing: cpu bfloat16, B=4 x (128 + 16) tokens,
    12 repeats`: a speedup means nothing without the job it was measured on."""
    if "speed.batch_size" not in setting:
        return "speed not timed"
    where = " ".join(str(setting[k]) for k in ("hardware", "speed.dtype") if k in setting)
    return (
        f"timing: {where}, B={setting['speed.batch_size']} x ({setting.get('speed.prompt_len')} + "
        f"{setting.get('speed.new_tokens')}) tokens, {setting.get('speed.repeats')} repeats"
    )


def setting_caption(setting: dict[str, Any]) -> str:
    """A figure's two-line caption: model and dtype, eval suite (and limit); then the timing job."""
    model = " ".join(str(setting[k]) for k in ("model", "model.dtype") if k in setting)
    limit = f" limit {setting['eval.limit']}" if "eval.limit" in setting else ""
    return f"{model}, eval {setting.get('eval.suite')}{limit}\n{timing_job(setting)}"


def difference_words(setting: dict[str, Any], others: list[dict[str, Any]]) -> list[str]:
    """File-name-safe words for the fields where `setting` differs from one of `others` (`eval.limit-20`,
    `model.dtype-float32`): what tells apart figures of one model, suite and method, instead of a bare hash.
    Two different settings always get different words (each holds a field value the other lacks)."""
    differ = [k for k, v in setting.items() if any(o.get(k) != v for o in others)]
    return [re.sub(r"[^A-Za-z0-9.+-]+", "-", f"{k}-{setting[k]}") for k in differ]
