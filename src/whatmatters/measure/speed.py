"""Original vs pruned on one generation job: the speedup record, and several plans timed against one original.

`PairTiming` turns the two models' timings into what a run record stores: per phase the median of the
paired ratios time(original) / time(pruned) with its 95% interval, the ideal speedup of what the plan
really removes, a flag when the realized speedup exceeds it beyond the interval, and the KV-cache ratio.
`compare` times kind-n plans against one original (the speed app, `apps.speed`); `timing` measures models.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import pandas as pd
from transformers import PreTrainedModel

from whatmatters.adapters import adapter_for
from whatmatters.measure import memory
from whatmatters.measure.ideal import Profile, exceeds_ideal, ideal_interval, ideal_speedup
from whatmatters.measure.job import PHASES, Job
from whatmatters.measure.timing import Timing, alternate, measure, no_progress, pair_fits, profile
from whatmatters.method.plans import Plan, parse_label
from whatmatters.method.surgery import apply_plan
from whatmatters.records.metrics import Estimate, blocked_median_interval, paired_ratios

if TYPE_CHECKING:
    from whatmatters.method.quant import QuantSpec


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
            job = self.original.job
            interval = None if ratios is None else blocked_median_interval(ratios, job.block_sizes, job.seed)
            out[phase] = interval
        return out

    def record(self, prof: Profile, plan: Plan) -> dict:
        """The run record's `speed`: per-phase speedups with intervals, the ideal speedup of what `plan`
        really removes, whether the realized speedup exceeds it beyond the interval, KV ratio, the job and
        every repeat of both models."""
        speedups = self.speedups()
        ideal = ideal_speedup(prof, plan)
        ideal_low, ideal_high = ideal_interval(prof, plan)
        kv = (
            self.pruned.kv_cache_bytes / self.original.kv_cache_bytes
            if self.original.kv_cache_bytes
            else None
        )
        return {
            "speedup": {phase: None if est is None else est.to_dict() for phase, est in speedups.items()},
            "ideal_speedup": ideal,
            "ideal_low": ideal_low,
            "ideal_high": ideal_high,
            "exceeds_ideal": exceeds_ideal(speedups["generate"], ideal_high),
            "alternated": self.alternated,
            "kv_ratio": kv,
            "job": asdict(self.original.job),
            "profile_shares": prof.shares(),
            "original": self.original.to_dict(),
            "pruned": self.pruned.to_dict(),
        }


def untimed(speed_record: dict, spec: QuantSpec, device: str) -> dict:
    """A speed record with the times taken out, for a scheme with no kernel on `device`: KV cache only."""
    kept = {k: speed_record[k] for k in ("kv_ratio", "job") if k in speed_record}
    sides = {
        side: {k: v for k, v in speed_record[side].items() if k.startswith("kv_")}
        for side in ("original", "pruned")
        if speed_record.get(side)  # a baseline record times one side only
    }
    reason = (
        f"torchao {spec.scheme} has no quantized kernel on {device}: its linear dequantizes the weight on "
        "every call, so a time would measure that fallback, not the scheme"
    )
    return kept | sides | {"speedup": {}, "not_timed": reason}


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
    kind, n, _ = parse_label(label)
    if kind == "joint" or n is None:
        raise ValueError(f"Unknown plan {label!r}; use none or kind-n with kind attn, mlp or block (attn-8)")
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
