"""Core cost/benefit ratios, measured side by side in one run on the embedded default (a script, not a test).

    .venv/bin/python benchmarks/bench_core.py

Ratios, not absolute times, so rows stay comparable across machines; still run it on an idle machine.
Each row is one small function of the shared baseline: to add a row, append a function to ROWS.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from functools import partial

import torch
import transformers
from transformers import PreTrainedModel

from whatmatters import data, models
from whatmatters.drop import iterative_drop
from whatmatters.plans import make_plan
from whatmatters.scores import compute_scores
from whatmatters.speed import Job, measure, speedup, timing_plan
from whatmatters.surgery import apply_plan

MODEL = "embedded:smollm2-135m"
JOB = Job(batch_size=1, prompt_len=128, new_tokens=32, dtype="float32", device="cpu", repeats=5, warmup=2)


def load() -> PreTrainedModel:
    return models.load(MODEL, JOB.dtype, JOB.device)[0]


def pruned_vs_original(label: str) -> None:
    """Speedup of plan `label` (prefill, decode, whole generate) and its KV cache relative to the original.

    The original is timed again right before each pruned model, so slow drift of the machine (clock,
    other load) between rows does not leak into the ratios.
    """
    baseline = measure(load(), JOB)
    model = load()
    pruned = measure(apply_plan(model, timing_plan(label, model.config.num_hidden_layers)), JOB, label)
    ratios = speedup(baseline, pruned)
    kv = pruned.kv_cache_bytes / baseline.kv_cache_bytes
    print(
        f"{label:<24} speedup generate {ratios['generate_s']:.3f}  prefill {ratios['prefill_s']:.3f}  "
        f"decode {ratios['decode_s']:.3f}  KV ratio {kv:.3f}"
    )


SPEED_ROWS: list[Callable[[], None]] = [
    partial(pruned_vs_original, "attn-8"),
    partial(pruned_vs_original, "mlp-8"),
    partial(pruned_vs_original, "block-8"),
]

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
    print(f"{MODEL}, {JOB}, calibration {CALIBRATION}")
    for row in [*SPEED_ROWS, *COST_ROWS]:
        row()


if __name__ == "__main__":
    main()
