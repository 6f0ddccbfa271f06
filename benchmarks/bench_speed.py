"""Is the speedup repeatable? The whole speed comparison run twice on the default job (a script, not a test).

    .venv/bin/python benchmarks/bench_speed.py                          # ~6-7 min on 2 quiet CPU cores
    .venv/bin/python benchmarks/bench_speed.py speed.repeats=20 plans=[attn-8]

Takes the speed app's config (conf/speed_bench.yaml, default job conf/speed/cpu.yaml) and its override
syntax. For each plan and run: the median speedup per phase with its 95% interval half-width, the ideal
speedup and whether the realized one exceeds it; then, per plan, the run-to-run difference of the medians
and whether the two intervals overlap. The job is sized for a half-width <= 2% on a quiet machine: run it
on one, the intervals mean nothing while other work competes for the cores.
"""

from __future__ import annotations

import os
import platform
import sys
from functools import partial
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from whatmatters import models
from whatmatters.measure.job import PHASES, Job
from whatmatters.measure.speed import Comparison, compare

ROOT = Path(__file__).parents[1]
RUNS = 2


def _line(label: str, run: int, comparison: Comparison) -> str:
    row = comparison.table().set_index("plan").loc[label]
    phases = []
    for phase in PHASES:
        median, low, high = row[f"speedup_{phase}"], row[f"low_{phase}"], row[f"high_{phase}"]
        phases.append(f"{phase} {median:.3f} +-{(high - low) / 2 / median:.1%}")
    flag = "  EXCEEDS IDEAL" if row["exceeds_ideal"] else ""
    return f"{label:<8} run {run}  " + "  ".join(phases) + f"  ideal {row['ideal_speedup']:.3f}{flag}"


def main(overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("speed_bench", overrides=overrides)
    device = models.device_for(cfg.device)
    job = Job(**OmegaConf.to_container(cfg.speed, resolve=True), device=device, seed=cfg.seed)
    labels = [label for label in cfg.plans if label != "none"]
    cpu = platform.processor() or platform.machine()
    print(f"{cpu}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads; torch {torch.__version__}")
    print(f"{cfg.model.name_or_path}, {job}")
    build = partial(models.load, cfg.model.name_or_path, job.dtype, device)
    runs = [compare(lambda: build()[0], labels, job) for _ in range(RUNS)]
    for label in labels:
        for i, comparison in enumerate(runs, 1):
            print(_line(label, i, comparison))
        first, second = (c.pairs[label].speedups()["generate"] for c in runs)
        overlap = first.low <= second.high and second.low <= first.high
        diff = abs(first.median - second.median) / ((first.median + second.median) / 2)
        print(f"{label:<8} run-to-run generate difference {diff:.1%}, intervals overlap: {overlap}")


if __name__ == "__main__":
    main(sys.argv[1:])
