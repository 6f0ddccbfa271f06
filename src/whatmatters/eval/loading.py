"""lm-eval tasks for a suite: the task index, each task's datasets loaded up front, and where each came from.

Offline (`eval.source=offline`) the index holds only our own task files, so it is quick and never reaches the
hub; `eval.source=hub` indexes lm-eval's stock tasks and first checks that the Hub answers at all.
"""

from __future__ import annotations

import functools
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from whatmatters.eval.suites import EvalError, TaskSpec
from whatmatters.eval.tasks import TASKS_DIR, offline

if TYPE_CHECKING:
    from lm_eval.tasks import TaskManager

OFFLINE = "eval.source=hub needs network access or a local HF datasets cache; use eval.source=offline"


def task_manager(specs: list[TaskSpec], source: str, fixed_shots: bool) -> TaskManager:
    """A TaskManager that knows every spec; lm-eval's own 14k tasks are indexed (~7 s) only for the hub."""
    import lm_eval

    real = [s for s in specs if not s.proxy]
    if source == "hub" and real:
        require_hub()
        manager = _indexed((str(TASKS_DIR),), include_defaults=True)
    else:
        paths = (str(TASKS_DIR), str(offline.task_dir(fixed_shots))) if real else (str(TASKS_DIR),)
        manager = _indexed(paths, include_defaults=False)
    missing = [s.name for s in specs if s.name not in manager.all_tasks]
    if missing:
        raise EvalError(
            f"lm-eval {lm_eval.__version__} has no task named {missing} (eval.source={source}): list valid "
            f"names with `lm-eval ls tasks --include_path {TASKS_DIR}` and fix whatmatters.eval.suites.TASKS"
        )
    return manager


@functools.cache
def _indexed(paths: tuple[str, ...], include_defaults: bool) -> TaskManager:
    """The task index, built once per process: a sweep evaluates many models on the same tasks."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=list(paths), include_defaults=include_defaults)


def require_hub() -> None:
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


def load_tasks(manager: TaskManager, specs: list[TaskSpec], source: str, fixed_shots: bool) -> dict[str, Any]:
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


def leaves(task: Any, name: str) -> dict[str, Any]:
    """A task's scored lm-eval Tasks by name: itself, or every subtask of a group (MMLU's 57 subjects)."""
    from lm_eval.api.group import Group

    if not isinstance(task, Group):
        return {name: task}
    return {leaf.task_name: leaf for leaf in task.get_all_tasks()}
