"""Core cost ratios, measured side by side in one run on the embedded default (a script, not a test).

Speedups of pruned models, with their intervals and run-to-run spread, are benchmarks/bench_speed.py.

    .venv/bin/python benchmarks/bench_core.py

Ratios, not absolute times, so rows stay comparable across machines; still run it on an idle machine.
Each row is one small function of the shared baseline: to add a row, append a function to COST_ROWS.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable

import torch
import transformers
from transformers import PreTrainedModel

from whatmatters import data, models
from whatmatters.method.drop import iterative_drop
from whatmatters.method.plans import make_plan
from whatmatters.method.scores import compute_scores

MODEL = "embedded:smollm2-135m"


def load() -> PreTrainedModel:
    return models.load(MODEL, "float32", "cpu")[0]


# Calibration for the cost rows: small enough for minutes on 2 CPU cores, same text as the default.
CALIBRATION = dict(source="lee", n=8, seq_len=512)


def _calibration() -> torch.Tensor:
    return data.calibration_ids(models.load(MODEL)[1], **CALIBRATION)


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@torch.no_grad()
def scoring_overhead() -> None:
    """One-pass scoring (hooks: all three kinds, with and without angular distances) vs a plain forward."""
    model, ids = load(), _calibration()

    def plain() -> None:
        for row in ids:
            model(input_ids=row[None], use_cache=False)

    plain()  # warm-up
    base = _seconds(plain)
    hooked = _seconds(lambda: compute_scores(model, ids, angular=False, progress=False))
    angular = _seconds(lambda: compute_scores(model, ids, angular=True, progress=False))
    print(f"{'scoring vs forward':<24} overhead {hooked / base:.3f}  with angular {angular / base:.3f}")


def iterative_cost() -> None:
    """Planning attn-8: iterative (reusing unchanged layers, and re-scoring fully) vs one-shot."""
    ids = _calibration()
    one_shot = _seconds(
        lambda: make_plan(compute_scores(load(), ids, angular=False, progress=False), "attn", 8)
    )
    runs = {}
    for reuse in (True, False):
        start = time.perf_counter()
        result = iterative_drop(load(), ids, "attn", n=8, reuse=reuse, progress=False)
        runs[reuse] = (time.perf_counter() - start, result.forward_equivalents)
    (t_reuse, f_reuse), (t_full, f_full) = runs[True], runs[False]
    print(
        f"{'iterative vs one-shot':<24} time {t_reuse / one_shot:.2f}x "
        f"(full re-scoring {t_full / one_shot:.2f}x)  forward passes {f_reuse:.2f} vs {f_full:.0f} vs 1"
    )


COST_ROWS = [scoring_overhead, iterative_cost]


def main() -> None:
    cpu = platform.processor() or platform.machine()
    print(f"{cpu}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads; torch {torch.__version__}")
    print(f"transformers {transformers.__version__}, {platform.platform()}")
    print(f"{MODEL}, calibration {CALIBRATION}")
    for row in COST_ROWS:
        row()


if __name__ == "__main__":
    main()
