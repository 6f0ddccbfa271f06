"""Core cost/benefit ratios, measured side by side in one run on the embedded default (a script, not a test).

    .venv/bin/python benchmarks/bench_core.py

Ratios, not absolute times, so rows stay comparable across machines; still run it on an idle machine.
Each row is one small function of the shared baseline: to add a row, append a function to ROWS.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from transformers import PreTrainedModel

from whatmatters import models
from whatmatters.speed import Job, Timing, measure, speedup, timing_plan
from whatmatters.surgery import apply_plan

MODEL = "embedded:smollm2-135m"
JOB = Job(batch_size=1, prompt_len=128, new_tokens=32, dtype="float32", device="cpu", repeats=5, warmup=2)


def load() -> PreTrainedModel:
    return models.load(MODEL, JOB.dtype, JOB.device)[0]


def pruned_vs_original(label: str, baseline: Timing) -> None:
    """Speedup of plan `label` (prefill, decode, whole generate) and its KV cache relative to the original."""
    model = load()
    pruned = measure(apply_plan(model, timing_plan(label, model.config.num_hidden_layers)), JOB, label)
    ratios = speedup(baseline, pruned)
    kv = pruned.kv_cache_bytes / baseline.kv_cache_bytes
    print(
        f"{label:<24} speedup generate {ratios['generate_s']:.3f}  prefill {ratios['prefill_s']:.3f}  "
        f"decode {ratios['decode_s']:.3f}  KV ratio {kv:.3f}"
    )


ROWS: list[Callable[[Timing], None]] = [
    partial(pruned_vs_original, "attn-8"),
    partial(pruned_vs_original, "mlp-8"),
    partial(pruned_vs_original, "block-8"),
]


def main() -> None:
    print(f"{MODEL}, {JOB}")
    baseline = measure(load(), JOB)
    for row in ROWS:
        row(baseline)


if __name__ == "__main__":
    main()
