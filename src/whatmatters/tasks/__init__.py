"""The embedded offline evaluation suite: lm-eval task YAMLs over JSONL built from held-out Wikipedia.

`TASKS_DIR` is what `lm_eval.tasks.TaskManager(include_path=...)` indexes; `build` writes the JSONL.
"""

from pathlib import Path

TASKS_DIR = Path(__file__).parent
