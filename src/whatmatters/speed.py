"""Original vs pruned on one generation job: the speedup record, and the speed app (experiments/speed.py).

`PairTiming` turns the two models' timings into what a run record stores: per phase the median of the
paired ratios time(original) / time(pruned) with its 95% interval, the ideal speedup of what the plan
really removes, a flag when the realized speedup exceeds it beyond the interval, and the KV-cache ratio.
The app is the caller that builds models and applies plans; `timing` only measures the models it is given.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

import pandas as pd
import torch
import transformers
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm
from transformers import PreTrainedModel

from whatmatters import clock, memory, models, shapes
from whatmatters.adapters import adapter_for
from whatmatters.io import atomic_write_text
from whatmatters.metrics import (
    Estimate,
    Profile,
    exceeds_ideal,
    ideal_speedup,
    median_interval,
    paired_ratios,
)
from whatmatters.plans import Plan
from whatmatters.surgery import apply_plan
from whatmatters.timing import PHASES, Job, Timing, alternate, measure, no_progress, pair_fits, profile


@dataclass
class PairTiming:
    """The original and a pruned model on one job: alternated (paired repeats), or in separate blocks when
    the two did not fit in memory together (then a repeat's pair is minutes apart and load can bias it)."""

    original: Timing
    pruned: Timing
    alternated: bool

    def __post_init__(self) -> None:
        if self.original.job != self.pruned.job:
            raise ValueError(f"Timings of different jobs: {self.original.job} vs {self.pruned.job}")

    def speedups(self) -> dict[str, Estimate | None]:
        """Per phase, the median of the paired ratios time(original) / time(pruned) and its 95% interval
        (None for decode when G = 1)."""
        out: dict[str, Estimate | None] = {}
        for phase in PHASES:
            base, new = self.original.runs(phase), self.pruned.runs(phase)
            ratios = None if base is None or new is None else paired_ratios(base, new)
            out[phase] = None if ratios is None else median_interval(ratios, self.original.job.seed)
        return out

    def record(self, prof: Profile, plan: Plan) -> dict:
        """The run record's `speed`: per-phase speedups with intervals, the ideal speedup of what `plan`
        really removes, whether the realized speedup exceeds it beyond the interval, KV ratio, the job and
        every repeat of both models."""
        speedups = self.speedups()
        ideal = ideal_speedup(prof, plan)
        kv = (
            self.pruned.kv_cache_bytes / self.original.kv_cache_bytes
            if self.original.kv_cache_bytes
            else None
        )
        return {
            "speedup": {phase: None if est is None else est.to_dict() for phase, est in speedups.items()},
            "ideal_speedup": ideal,
            "exceeds_ideal": exceeds_ideal(speedups["generate"], ideal),
            "alternated": self.alternated,
            "kv_ratio": kv,
            "job": asdict(self.original.job),
            "profile_shares": prof.shares(),
            "original": self.original.to_dict(),
            "pruned": self.pruned.to_dict(),
        }


def baseline_record(original: Timing) -> dict:
    """A baseline's `speed` in the record layout: the original against itself is 1 by definition (not a
    measured ratio, so no ratios), beside its own times."""
    one = {"median": 1.0, "low": 1.0, "high": 1.0, "ratios": []}
    return {
        "speedup": {phase: None if original.runs(phase) is None else one for phase in PHASES},
        "ideal_speedup": 1.0,
        "exceeds_ideal": False,
        "kv_ratio": 1.0,
        "job": asdict(original.job),
        "original": original.to_dict(),
    }


def timing_plan(label: str, num_layers: int) -> Plan:
    """`none` or `kind-n` (kind: attn, mlp, block) -> a plan dropping the deepest n modules of that kind.

    For speed only the count matters (every layer costs the same), except in models mixing sliding and
    full attention, where the cache saved depends on which kind goes. The deepest layers are the paper's
    usual choice (its scores find deep attention most redundant), so these plans time like its plans.
    """
    if label == "none":
        return Plan(num_layers, meta={"label": label})
    match = re.fullmatch(r"(attn|mlp|block)-(\d+)", label)
    if match is None:
        raise ValueError(f"Unknown plan {label!r}; use none or kind-n with kind attn, mlp or block (attn-8)")
    kind, n = match.group(1), int(match.group(2))
    if n > num_layers:
        raise ValueError(f"Plan {label} drops {n} {kind} modules of a {num_layers}-layer model")
    deepest = range(num_layers - n, num_layers)
    field_name = "blocks" if kind == "block" else kind
    return Plan(num_layers, **{field_name: deepest}, meta={"label": label})


@dataclass
class Comparison:
    """Each plan's pruned model timed against the original on one job, and the original's profile."""

    job: Job
    profile: Profile
    plans: dict[str, Plan]
    pairs: dict[str, PairTiming]

    def table(self) -> pd.DataFrame:
        """One row per plan: median times, speedups with their 95% interval, ideal, KV cache, memory."""
        rows = []
        for label, pair in self.pairs.items():
            speed = pair.record(self.profile, self.plans[label])
            pruned, gen = pair.pruned, speed["speedup"]["generate"]
            row = {
                "plan": label,
                "alternated": pair.alternated,
                "original_generate_s": pair.original.generate_s,
                "generate_s": pruned.generate_s,
            }
            for phase, est in speed["speedup"].items():
                row |= {f"speedup_{phase}": None, f"low_{phase}": None, f"high_{phase}": None}
                if est is not None:
                    row |= {
                        f"speedup_{phase}": est["median"],
                        f"low_{phase}": est["low"],
                        f"high_{phase}": est["high"],
                    }
            peak = pruned.peak_memory_bytes
            rows.append(
                row
                | {
                    "ideal_speedup": speed["ideal_speedup"],
                    "realized_over_ideal": gen["median"] / speed["ideal_speedup"],
                    "exceeds_ideal": speed["exceeds_ideal"],
                    "kv_cache_mib": pruned.kv_cache_bytes / 2**20,
                    "kv_analytic_mib": pruned.kv_analytic_bytes / 2**20,
                    "kv_ratio": speed["kv_ratio"],
                    "kv_layers": pruned.kv_cache_layers,
                    "peak_memory_mib": None if peak is None else peak / 2**20,
                    "params_m": pruned.params / 1e6,
                }
            )
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        """Everything measured, raw (every repeat of both models), for the JSON output."""
        return {
            "job": asdict(self.job),
            "plans": {label: plan.to_dict() for label, plan in self.plans.items()},
            "profile": asdict(self.profile) | {"shares": self.profile.shares()},
            "pairs": {
                label: pair.record(self.profile, self.plans[label]) for label, pair in self.pairs.items()
            },
        }


def compare(
    build: Callable[[], PreTrainedModel],
    labels: Sequence[str],
    job: Job,
    tick: Callable[[], None] = no_progress,
) -> Comparison:
    """Time each plan of `labels` against the original on `job`; `build()` makes a fresh original model.

    The original is profiled once, then stays loaded while each pruned model, cut from a fresh build (never
    a copy), is timed alternately with it. When the two do not fit together, the original is timed alone
    once and each pruned model after it, in blocks (flagged `alternated: false`).
    """
    original = build()
    layers = len(adapter_for(original).layers(original))
    plans = {label: timing_plan(label, layers) for label in labels}
    prof = profile(original, job)
    # A pruned model is never larger than the original: if two originals fit, every pair does.
    together = pair_fits(original, memory.weight_bytes(original), job)
    alone = None if together else measure(original, job, "none", tick)
    if not together:
        del original
        memory.release(job.device)
    pairs: dict[str, PairTiming] = {}
    for label, plan in plans.items():
        pruned = apply_plan(build(), plan)
        if together:
            pairs[label] = PairTiming(*alternate(original, pruned, job, tick), alternated=True)
        else:
            pairs[label] = PairTiming(alone, measure(pruned, job, label, tick), alternated=False)
        del pruned
        memory.release(job.device)
    return Comparison(job, prof, plans, pairs)


def run(cfg: DictConfig, out_dir: Path) -> pd.DataFrame:
    """Compare the configured plans on the configured job; write speed.csv and speed.json into `out_dir`."""
    device = models.device_for(cfg.device)
    job = Job(**OmegaConf.to_container(cfg.speed, resolve=True), device=device, seed=cfg.seed)
    labels = [label for label in cfg.plans if label != "none"]  # the original is timed beside each plan
    if not labels:
        raise ValueError(
            f"plans={list(cfg.plans)} has nothing to compare: list kind-n plans, e.g. plans=[attn-8]"
        )
    if cfg.shape:
        # Check on a weightless copy first: building a shape that cannot fit would fail only after minutes.
        memory.ensure_fits(memory.estimate_memory(shapes.build(cfg.shape, "meta", job.dtype), job), device)
        name, build = cfg.shape, partial(shapes.build, cfg.shape, device, job.dtype)
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
