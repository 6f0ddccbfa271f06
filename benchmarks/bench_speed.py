"""Do the speed intervals hold across runs? The speed comparison run twice (a script, not a test).

    .venv/bin/python benchmarks/bench_speed.py                          # 11 plans, twice (make bench-speed)
    .venv/bin/python benchmarks/bench_speed.py speed.repeats=20 'plans=[attn-8]'

Takes the speed app's config (conf/speed_bench.yaml, default job conf/speed/cpu.yaml) and its override
syntax. For each plan and run: the median speedup per phase with its 95% interval half-width, the ideal
speedup and whether the realized one exceeds it. Then the coverage: how often one run's `generate` median
lies inside the other run's interval (goal >= 90%), for the blocked interval the records use (blocks of
re-warmed repeats, resampled at both levels: `metrics.blocked_median_interval`) and, beside it, for a flat
bootstrap of the same ratios, which ignores the drift between blocks. Writes the same figures, one row per
plan and run, to benchmarks/results_speed_cpu.csv (the README's speed table reads it).
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
import time
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from whatmatters import models
from whatmatters.files import atomic_write_text
from whatmatters.measure.job import PHASES, Job
from whatmatters.measure.speed import compare
from whatmatters.records.metrics import Estimate, median_interval

ROOT = Path(__file__).parents[1]
RUNS = 2
CSV = ROOT / "benchmarks" / "results_speed_cpu.csv"


def _line(label: str, run: int, row: pd.Series) -> str:
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
    start = time.perf_counter()
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes")
    load = os.getloadavg()[0]
    print(f"# {now}, load average {load:.1f} on {os.cpu_count()} CPUs (timings mean little above ~1)")
    cpu = platform.processor() or platform.machine()
    print(f"{cpu}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads; torch {torch.__version__}")
    print(f"{cfg.model.name_or_path}, {job}")
    build = partial(models.load, cfg.model.name_or_path, job.dtype, device)
    runs = [compare(lambda: build()[0], labels, job) for _ in range(RUNS)]
    # Each table bootstraps every plan's intervals (seconds a plan): built once per run, not once per line.
    tables = [comparison.table().set_index("plan") for comparison in runs]
    blocked: list[tuple[Estimate, Estimate]] = []
    flat: list[tuple[Estimate, Estimate]] = []
    rows = []
    for label in labels:
        for i, table in enumerate(tables, 1):
            print(_line(label, i, table.loc[label]))
        pair = [c.pairs[label].speedups()["generate"] for c in runs]
        blocked.append((pair[0], pair[1]))
        flat.append((median_interval(pair[0].ratios, job.seed), median_interval(pair[1].ratios, job.seed)))
        diff = abs(pair[0].median - pair[1].median) / ((pair[0].median + pair[1].median) / 2)
        print(f"{label:<8} run-to-run generate difference {diff:.1%}")
        rows += _rows(label, tables, blocked[-1], flat[-1])
    for name, estimates in (("blocked (records)", blocked), ("flat (one level)", flat)):
        print(_coverage(name, estimates))
    print(f"wall {time.perf_counter() - start:.0f} s")
    atomic_write_text(CSV, pd.DataFrame(rows).to_csv(index=False))


def _rows(
    label: str,
    tables: list[pd.DataFrame],
    blocked: tuple[Estimate, Estimate],
    flat: tuple[Estimate, Estimate],
) -> list[dict]:
    """One CSV row per run of `label`: its generate interval (blocked, as records hold it, and flat), the
    ideal, and whether the other run's median lies inside each interval."""
    rows = []
    for i, run_table in enumerate(tables):
        other = blocked[1 - i].median
        table = run_table.loc[label]
        rows.append(
            {
                "plan": label,
                "run": i + 1,
                "generate": blocked[i].median,
                "low": blocked[i].low,
                "high": blocked[i].high,
                "half-width %": 100 * blocked[i].half_width,
                "other run inside": blocked[i].includes(other),
                "flat half-width %": 100 * flat[i].half_width,
                "other run inside flat": flat[i].includes(other),
                "ideal": table["ideal_speedup"],
                "exceeds ideal": bool(table["exceeds_ideal"]),
            }
        )
    return rows


def _coverage(name: str, estimates: list[tuple[Estimate, Estimate]]) -> str:
    """How often each run's median lies inside the other run's interval, and the intervals' half-widths."""
    inside = [b.includes(a.median) for a, b in estimates] + [a.includes(b.median) for a, b in estimates]
    widths = sorted(e.half_width for pair in estimates for e in pair)
    return (
        f"coverage {name}: {sum(inside)}/{len(inside)} = {sum(inside) / len(inside):.0%} of medians inside "
        f"the other run's interval; half-widths {widths[0]:.1%} .. median {widths[len(widths) // 2]:.1%} .. "
        f"{widths[-1]:.1%}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
