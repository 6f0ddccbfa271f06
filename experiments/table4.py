"""Table 4: KV-cache size with and without half the attention layers (no Hub access needed).

    python experiments/table4.py            # analytic rows of the paper's models + a measured embedded row

The paper's models: analytic bytes (kept layers x 2 x B x KV heads x head dim x 2048 x fp16) from their
configs, beside the paper's own GB. The embedded default: the cache `generate` really allocates,
original vs half its attention layers dropped, next to the analytic figure. Writes figures/table4.*.
"""

from pathlib import Path

import pandas as pd

from whatmatters import models
from whatmatters.memory import table4
from whatmatters.speed import timing_plan
from whatmatters.surgery import apply_plan
from whatmatters.table_files import write_table
from whatmatters.timing import Job, measure

ROOT = Path(__file__).parents[1]
JOB = Job(batch_size=4, prompt_len=512, new_tokens=8, dtype="float32", device="cpu", repeats=1, warmup=0)


def measured_row() -> dict:
    """The embedded default's real cache after `generate`, original vs attn-(L/2)."""
    model = models.load("embedded:smollm2-135m", JOB.dtype, JOB.device)[0]
    layers = model.config.num_hidden_layers
    original = measure(model, JOB)
    pruned = measure(apply_plan(model, timing_plan(f"attn-{layers // 2}", layers)), JOB)
    gib = 2**30
    return {
        "model": f"smollm2-135m (measured, B={JOB.batch_size}, {JOB.cached_tokens} tokens, fp32)",
        "batch_size": JOB.batch_size,
        "seq_len": JOB.cached_tokens,
        "layers": original.kv_cache_layers,
        "analytic_gib": original.kv_analytic_bytes / gib,
        "measured_gib": original.kv_cache_bytes / gib,
        "half_layers": pruned.kv_cache_layers,
        "analytic_half_gib": pruned.kv_analytic_bytes / gib,
        "measured_half_gib": pruned.kv_cache_bytes / gib,
    }


def main() -> None:
    frame = pd.DataFrame([*table4(), measured_row()])
    md, *_ = write_table(
        frame, ROOT / "figures" / "table4", "Table 4: KV cache, original vs half the attention"
    )
    print(md.read_text())


if __name__ == "__main__":
    main()
