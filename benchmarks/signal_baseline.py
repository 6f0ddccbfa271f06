"""Choose the signal suite from the unpruned model alone: accuracy, chance and cost of each candidate task.

    python benchmarks/signal_baseline.py                  # the embedded default, float32, 200 docs a task

For each candidate (eval.suites.SUITES["signal_candidates"]) on a seeded sample of docs: the baseline's
accuracy with its stderr, the task's chance level, the room above chance, and seconds per doc. The rule that
picks the suite from these numbers (no pruned model is run here) is written in conf/eval/signal.yaml.
"""

from __future__ import annotations

import argparse
import datetime
import os
import time

from whatmatters import models
from whatmatters.eval import evaluate
from whatmatters.eval.suites import SUITES
from whatmatters.measure.clock import machine_name


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="embedded:smollm2-135m")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--tasks", nargs="+", default=list(SUITES["signal_candidates"]))
    args = parser.parse_args()
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes")
    load = os.getloadavg()[0]
    print(f"# {now}, load average {load:.1f} on {os.cpu_count()} CPUs (timings mean little above ~1)")
    model, tokenizer = models.load(args.model, args.dtype, "cpu")
    print(
        f"{args.model} {args.dtype} on {machine_name('cpu')}, {args.docs} seeded docs a task (sample_seed 0)"
    )
    print(f"{'task':16s} {'metric':9s} {'acc':>6s} {'±':>5s} {'chance':>6s} {'room':>6s} {'s/doc':>6s}")
    for task in args.tasks:
        start = time.perf_counter()
        result = evaluate.evaluate(model, tokenizer, [task], sample=args.docs, fewshot="fixed", batch_size=16)
        seconds = (time.perf_counter() - start) / args.docs
        r = result.tasks[task]
        print(
            f"{task:16s} {r.metric:9s} {r.value:6.1f} {r.stderr:5.1f} {r.chance:6.1f} "
            f"{r.value - r.chance:6.1f} {seconds:6.3f}"
        )


if __name__ == "__main__":
    main()
