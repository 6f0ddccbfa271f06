"""Benchmark accuracy of an in-memory (possibly pruned) model with lm-eval 0.4, on suites registered by name.

    embedded      wm_cloze, wm_nextsent, wm_ppl: offline proxies built from held-out Wikipedia (tasks/)
    paper         the paper's 9 benchmarks with its shots and metrics (needs HF datasets)
    paper_table1  the 8 tasks averaged in Table 1; paper_table2: the 4 of Table 2

`evaluate` returns {task: {"metric", "value", "stderr"}} with accuracies in percent, "avg" and
"avg_stderr" (the mean accuracy over the suite's accuracy tasks: perplexity is reported, never averaged
in) and "lm_eval" (lm-eval's raw results, every metric of every task and subtask). The app calls
`check_suite` before loading any model and `run_suite` with the `eval` config group (conf/eval/).
"""

from __future__ import annotations

import functools
import math
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from whatmatters.tasks import TASKS_DIR

if TYPE_CHECKING:
    from lm_eval.tasks import TaskManager
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

ACCURACY_METRICS = ("acc", "acc_norm", "exact_match")
OFFLINE = "the paper suite needs network access or a local HF datasets cache; use eval=embedded offline"


@dataclass(frozen=True)
class TaskSpec:
    """One lm-eval task (or group) as the paper runs it: shots, and which metric it reports."""

    name: str
    shots: int
    metric: str
    filter: str = "none"  # lm-eval reports every metric once per filter pipeline

    @property
    def accuracy(self) -> bool:
        return self.metric in ACCURACY_METRICS


TASKS = {
    spec.name: spec
    for spec in (
        TaskSpec("wm_cloze", 0, "acc"),
        TaskSpec("wm_nextsent", 0, "acc_norm"),
        TaskSpec("wm_ppl", 0, "word_perplexity"),
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
    "embedded": ("wm_cloze", "wm_nextsent", "wm_ppl"),
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
}


class EvalError(ValueError):
    """The evaluation cannot run as asked; the message says what to change."""


def evaluate(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    suite: str | Sequence[str] = "embedded",
    *,
    limit: int | float | None = None,
    batch_size: int | str = 16,
    seed: int = 0,
) -> dict[str, Any]:
    """Scores of `model` on a suite name or a list of task names from `TASKS`; deterministic for a seed.

    Every task and its dataset is checked and loaded before the first forward pass, so a bad name or a
    missing dataset fails in seconds, not after hours of evaluation. `limit` caps the items per task
    (lm-eval's meaning: a count, or a fraction below 1); use it for smoke tests only. `batch_size` may
    be "auto" on a GPU (lm-eval finds the largest that fits).
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM

    specs = task_specs(suite)
    manager = _task_manager(specs)
    built = _load_tasks(manager, specs)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    raw: dict[str, dict] = {}
    # One lm-eval run per shot count: simple_evaluate takes a single num_fewshot.
    for shots in sorted({s.shots for s in specs}):
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=[built[s.name] for s in specs if s.shots == shots],
            num_fewshot=shots,
            limit=limit,
            task_manager=manager,
            log_samples=False,
            random_seed=seed,
            numpy_random_seed=seed,
            torch_random_seed=seed,
            fewshot_random_seed=seed,
        )
        raw |= out["results"]
    scores: dict[str, Any] = {s.name: _score(s, raw[s.name]) for s in specs}
    accuracies = [scores[s.name] for s in specs if s.accuracy]
    n = len(accuracies)
    scores["avg"] = sum(a["value"] for a in accuracies) / n if n else math.nan
    # Tasks are independent samples, so their standard errors add in quadrature.
    scores["avg_stderr"] = math.sqrt(sum(a["stderr"] ** 2 for a in accuracies)) / n if n else math.nan
    scores["lm_eval"] = raw
    return scores


def check_suite(cfg: Mapping[str, Any]) -> None:
    """Fail now, before any model loads, if the `eval` config names unknown tasks or unreachable datasets."""
    specs = task_specs(cfg["suite"])
    _load_tasks(_task_manager(specs), specs)


def run_suite(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, cfg: Mapping[str, Any], seed: int = 0
) -> dict[str, Any]:
    """`evaluate` as configured by an `eval` config group (suite, limit, batch_size)."""
    suite = cfg["suite"]
    suite = suite if isinstance(suite, str) else list(suite)  # a Hydra ListConfig of task names
    return evaluate(model, tokenizer, suite, limit=cfg["limit"], batch_size=cfg["batch_size"], seed=seed)


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


def _task_manager(specs: list[TaskSpec]) -> TaskManager:
    """A TaskManager that knows every spec; lm-eval's own 14k tasks are indexed (~7 s) only when needed."""
    import lm_eval

    manager = _indexed(include_defaults=False)
    if any(s.name not in manager.all_tasks for s in specs):
        _require_hub()
        manager = _indexed(include_defaults=True)
    missing = [s.name for s in specs if s.name not in manager.all_tasks]
    if missing:
        raise EvalError(
            f"lm-eval {lm_eval.__version__} has no task named {missing}: list valid names with "
            f"`lm-eval ls tasks --include_path {TASKS_DIR}` and fix whatmatters.evaluate.TASKS"
        )
    return manager


@functools.cache
def _indexed(include_defaults: bool) -> TaskManager:
    """The task index, built once per process: a sweep evaluates many models on the same tasks."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS_DIR), include_defaults=include_defaults)


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


def _load_tasks(manager: TaskManager, specs: list[TaskSpec]) -> dict[str, Any]:
    """Each spec's lm-eval Task or Group, datasets loaded, before anything is evaluated."""
    built = {}
    for spec in specs:
        try:
            loaded = manager.load([spec.name])
        except (ConnectionError, FileNotFoundError) as err:  # offline with no cache: not found / offline mode
            raise EvalError(f"{OFFLINE} ({spec.name}: {err.__class__.__name__}: {err})") from err
        groups = loaded.get("groups", {})
        built[spec.name] = groups[spec.name] if spec.name in groups else loaded["tasks"][spec.name]
    return built


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
