"""The Table 4 app (experiments/table4.py): KV-cache size with and without half the attention layers.

The paper's models: analytic bytes (kept layers x 2 x B x KV heads x head dim x 2048 x fp16) from their
configs, beside the paper's own GB. The measured model: the cache `generate` really allocates, original vs
half its attention layers dropped, next to the analytic figure.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from omegaconf import DictConfig

from whatmatters import models
from whatmatters.measure.job import Job
from whatmatters.measure.memory import table4 as paper_rows
from whatmatters.measure.speed import timing_plan
from whatmatters.measure.timing import measure
from whatmatters.method.surgery import apply_plan
from whatmatters.report.table_files import write_table

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


def table4(cfg: DictConfig) -> Path:
    """The paper's analytic rows and one measured row of `cfg.model`; returns the Markdown file."""
    # Job checks its fields (naming the bad one) before the model loads; a cache size needs one call.
    job = Job(**cfg.job, dtype="float32", device="cpu", repeats=1, warmup=0)
    row = measured_row(cfg.model.name, cfg.model.name_or_path, job)
    title = "Table 4: KV cache, original vs half the attention"
    md, *_ = write_table(pd.DataFrame([*paper_rows(), row]), Path(cfg.out_dir) / "table4", title)
    return md
