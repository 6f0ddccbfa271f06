"""One model's lm-eval accuracy as a record holds it: each task's score, chance level and per-doc values,
and the suite's average. Evaluation writes it (eval.evaluate), metrics pair it, tables read it."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from whatmatters.records.parsing import parse_fields, plain

# Task metrics that are accuracies (0-100, count toward the Avg); the rest (perplexity) are shown apart.
ACCURACY_METRICS = ("acc", "acc_norm", "exact_match")


def _missing(value: float | None) -> bool:
    return value is None or math.isnan(value)


def mean_stderr(values: Sequence[float]) -> float:
    """Standard error of the mean of per-doc 0/1 values in percent (lm-eval's: sample std / sqrt(n))."""
    return 100.0 * statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan


def combined_stderr(stderrs: Sequence[float]) -> float:
    """Standard error of an average over independent tasks: their variances add, sqrt(sum se^2) / T."""
    return math.sqrt(sum(se**2 for se in stderrs)) / len(stderrs) if stderrs else math.nan


@dataclass
class Docs:
    """Per-document metric values (0/1 for accuracies, not x100), keyed by a stable doc id."""

    ids: list[str]
    values: list[float]

    def __post_init__(self) -> None:
        if len(self.ids) != len(self.values):
            raise ValueError(f"docs: {len(self.ids)} ids but {len(self.values)} values")


@dataclass
class TaskResult:
    """One task's score: value and stderr in percent (perplexity as is), its chance level, its docs."""

    value: float
    stderr: float | None = None
    metric: str | None = None
    n: int | None = None
    chance: float | None = None
    docs: Docs | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskResult:
        return parse_fields(cls, data, docs=Docs(**data["docs"]) if data.get("docs") else None)


@dataclass
class EvalResult:
    """lm-eval accuracy of one model: the suite, the doc sample and protocol, each task, the average."""

    suite: str
    tasks: dict[str, TaskResult]
    avg: float
    avg_stderr: float | None = None
    limit: float | None = None
    protocol: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # lm-eval gives a group no stderr when each subset has one doc (MMLU with one doc per subject): such a
        # task's stderr, and the Avg's, come from its per-doc values instead. The one place this rule lives:
        # new records pass through here before they are stored (experiment._accuracy), old ones when read.
        accuracy = [t for t in self.tasks.values() if t.metric in ACCURACY_METRICS or t.docs is not None]
        filled = [t for t in accuracy if _missing(t.stderr) and t.docs is not None]
        for task in filled:
            task.stderr = mean_stderr(task.docs.values)
        if filled and not any(_missing(t.stderr) for t in accuracy):
            self.avg_stderr = combined_stderr([t.stderr for t in accuracy])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalResult:
        return parse_fields(
            cls, data, tasks={name: TaskResult.from_dict(t) for name, t in data["tasks"].items()}
        )

    def to_dict(self) -> dict[str, Any]:
        return plain(self)
