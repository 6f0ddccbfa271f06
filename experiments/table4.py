"""Table 4: KV-cache size with and without half the attention layers (config: conf/table4.yaml).

    python experiments/table4.py            # analytic rows of the paper's models + a measured embedded row
    python experiments/table4.py model=gemma3-270m job.batch_size=8

The paper's models: analytic bytes (kept layers x 2 x B x KV heads x head dim x 2048 x fp16) from their
configs, beside the paper's own GB. The measured model: the cache `generate` really allocates, original vs
half its attention layers dropped, next to the analytic figure. Writes figures/table4.*.
"""

from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig

from whatmatters import models
from whatmatters.memory import table4
from whatmatters.speed import timing_plan
from whatmatters.surgery import apply_plan
from whatmatters.table_files import write_table
from whatmatters.timing import Job, measure

SHORT = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}


def measured_row(name: str, name_or_path: str, job: Job) -> dict:
    """One model's real cache after `generate`, original vs attn-(L/2)."""
    model = models.load(name_or_path, job.dtype, job.device)[0]
    layers = model.config.num_hidden_layers
    original = measure(model, job)
    pruned = measure(apply_plan(model, timing_plan(f"attn-{layers // 2}", layers)), job)
    gib = 2**30
    return {
        "model": f"{name} (measured, B={job.batch_size}, {job.cached_tokens} tokens, {SHORT[job.dtype]})",
        "batch_size": job.batch_size,
        "seq_len": job.cached_tokens,
        "layers": original.kv_cache_layers,
        "analytic_gib": original.kv_analytic_bytes / gib,
        "measured_gib": original.kv_cache_bytes / gib,
        "half_layers": pruned.kv_cache_layers,
        "analytic_half_gib": pruned.kv_analytic_bytes / gib,
        "measured_half_gib": pruned.kv_cache_bytes / gib,
    }


@hydra.main(config_path="../conf", config_name="table4", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # Job checks its fields (naming the bad one) before the model loads; a cache size needs one call.
    job = Job(**cfg.job, dtype="float32", device="cpu", repeats=1, warmup=0)
    row = measured_row(cfg.model.name, cfg.model.name_or_path, job)
    title = "Table 4: KV cache, original vs half the attention"
    md, *_ = write_table(pd.DataFrame([*table4(), row]), Path(cfg.out_dir) / "table4", title)
    print(md.read_text())


if __name__ == "__main__":
    main()
