"""The speed app (experiments/speed.py): the configured kind-n plans timed against the original on one job,
written as speed.csv (one row a plan) and speed.json (every repeat, the profile, the machine)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pandas as pd
import torch
import transformers
from omegaconf import DictConfig
from tqdm import tqdm
from transformers import PreTrainedModel

from whatmatters import models
from whatmatters.files import atomic_write_text
from whatmatters.measure import clock, memory
from whatmatters.measure.job import job_from_config
from whatmatters.measure.speed import compare


def run(cfg: DictConfig, out_dir: Path) -> pd.DataFrame:
    """Compare the configured plans on the configured job; write speed.csv and speed.json into `out_dir`."""
    device = models.device_for(cfg.device)
    job = job_from_config(cfg.speed, device, cfg.seed)
    labels = [label for label in cfg.plans if label != "none"]  # the original is timed beside each plan
    if not labels:
        raise ValueError(
            f"plans={list(cfg.plans)} has nothing to compare: list kind-n plans, e.g. plans=[attn-8]"
        )
    if cfg.shape:
        # Check on a weightless copy first: building a shape that cannot fit would fail only after minutes.
        memory.ensure_fits(
            memory.estimate_memory(models.build_shape(cfg.shape, "meta", job.dtype), job), device
        )
        name, build = cfg.shape, partial(models.build_shape, cfg.shape, device, job.dtype)
    else:
        name = cfg.model.name

        def build() -> PreTrainedModel:
            return models.load(cfg.model.name_or_path, job.dtype, device)[0]

    calls = 1 + len(labels) * 2 * (job.warmup + job.repeats)  # the profile, then each pair
    with tqdm(total=calls, desc=f"speed {name}", unit="generate") as bar:
        bar.update()
        comparison = compare(build, labels, job, tick=bar.update)
    table = comparison.table()
    atomic_write_text(out_dir / "speed.csv", table.to_csv(index=False))
    record = {
        "model": name,
        "weights": "random" if cfg.shape else cfg.model.name_or_path,
        # Times mean little without the machine and stack that produced them.
        "machine": clock.machine_name(device),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        **comparison.to_dict(),
    }
    atomic_write_text(out_dir / "speed.json", json.dumps(record, indent=2))
    return table
