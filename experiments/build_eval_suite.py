"""Rebuild the embedded eval suite's JSONL (src/whatmatters/tasks/*.jsonl) from gensim's Wikipedia articles.

python experiments/build_eval_suite.py            # rewrites the committed files; the same bytes every time
python experiments/build_eval_suite.py /tmp/suite # or builds elsewhere, e.g. to diff against them
"""

import sys

from whatmatters.eval.tasks import TASKS_DIR
from whatmatters.eval.tasks.build import build

if __name__ == "__main__":
    for task, path in build(sys.argv[1] if len(sys.argv) > 1 else TASKS_DIR).items():
        print(f"{task}: {sum(1 for _ in path.open())} items, {path.stat().st_size / 1e3:.0f} kB -> {path}")
