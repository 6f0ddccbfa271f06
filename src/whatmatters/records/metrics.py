"""Derived numbers with their spread: paired accuracy differences, the interval of a measured ratio, the
ideal speedup, the SDR.

Arithmetic on measured numbers, no model in sight: tables, plots and notebooks may import it. A speedup is
the median of paired per-repeat ratios time(original) / time(pruned) with a bootstrap 95% interval; a
number derived from it (SDR, realized over ideal) carries that interval or says why it has none.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from whatmatters.records.eval_result import ACCURACY_METRICS
from whatmatters.records.store import EvalResult

LEVEL = 0.95  # every interval here is a 95% interval
RESAMPLES = 9999


@dataclass(frozen=True)
class Estimate:
    """A median of paired ratios and its 95% interval, with every ratio it came from."""

    median: float
    low: float
    high: float
    ratios: tuple[float, ...]

    @property
    def half_width(self) -> float:
        """Half the interval's width relative to the median (0.02 = +-2%): how precise the job is."""
        return (self.high - self.low) / 2 / self.median

    def includes(self, value: float) -> bool:
        return self.low <= value <= self.high

    def to_dict(self) -> dict:
        """The record layout: {"median", "low", "high", "ratios"}."""
        return {"median": self.median, "low": self.low, "high": self.high, "ratios": list(self.ratios)}


def median_interval(values: Sequence[float], seed: int = 0) -> Estimate:
    """Median of `values` with a seeded percentile-bootstrap 95% interval (scipy.stats.bootstrap).

    Percentile rather than BCa: BCa's jackknife degenerates on the median of a few tied values, and the
    median of paired ratios is what resists one repeat hit by load elsewhere on the machine. One value
    has no spread to resample: its interval is the value itself (a job with repeats=1 measures no spread).
    """
    if len(values) == 0:
        raise ValueError("median_interval needs at least one value; the job ran no repeats")
    median = statistics.median(values)
    if len(values) == 1 or len(set(values)) == 1:
        return Estimate(median, median, median, tuple(values))
    result = stats.bootstrap(
        (np.asarray(values, dtype=float),),
        np.median,
        n_resamples=RESAMPLES,
        confidence_level=LEVEL,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return Estimate(median, float(ci.low), float(ci.high), tuple(values))


def _bootstrap(data: tuple[np.ndarray, ...], statistic: Any, seed: int) -> dict[str, float]:
    """`statistic` of paired per-sequence arrays with a seeded percentile-bootstrap 95% interval: sequences
    are resampled as units, the same ones for every array (scipy.stats.bootstrap, paired)."""
    value = float(statistic(*data, axis=-1))
    if len(data[0]) < 2 or all(np.ptp(d) == 0 for d in data):
        return {"value": value, "low": value, "high": value}
    result = stats.bootstrap(
        data,
        statistic,
        paired=True,
        vectorized=True,
        n_resamples=RESAMPLES,
        confidence_level=LEVEL,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    ci = result.confidence_interval
    return {"value": value, "low": float(ci.low), "high": float(ci.high)}


def _perplexity(nll: np.ndarray, tokens: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.exp(nll.sum(axis) / tokens.sum(axis))


def _perplexity_delta(nll: np.ndarray, base: np.ndarray, tokens: np.ndarray, axis: int = -1) -> np.ndarray:
    return _perplexity(nll, tokens, axis) - _perplexity(base, tokens, axis)


def _mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    return values.mean(axis)


FIDELITY_KEYS = ("nll", "nll_original", "tokens", "kl", "top1")


def fidelity_summary(per_seq: Mapping[str, Sequence[float]], seed: int = 0) -> dict[str, dict[str, float]]:
    """Perplexity of the pruned and of the original model, their paired difference, the mean next-token
    KL(original || pruned) in nats and the top-1 agreement (percent), each with its 95% interval over
    held-out sequences (`analysis.fidelity` measures them per sequence)."""
    nll, base, tokens, kl, top1 = (np.asarray(per_seq[k], dtype=float) for k in FIDELITY_KEYS)
    return {
        "ppl": _bootstrap((nll, tokens), _perplexity, seed),
        "ppl_original": _bootstrap((base, tokens), _perplexity, seed),
        "ppl_delta": _bootstrap(
            (nll, base, tokens),
            lambda a, b, t, axis=-1: _perplexity(a, t, axis) - _perplexity(b, t, axis),
            seed,
        ),
        "kl": _bootstrap((kl,), _mean, seed),
        "top1": _bootstrap((100 * top1,), _mean, seed),
    }


def fidelity_difference(
    a: Mapping[str, Sequence[float]], b: Mapping[str, Sequence[float]], key: str, seed: int = 0
) -> dict[str, float]:
    """Run `a` minus run `b` on one fidelity measure (`kl` or `top1`, per sequence), paired over the same
    held-out sequences, with its 95% interval: how two cuts compare without any eval-doc noise."""
    x, y = np.asarray(a[key], dtype=float), np.asarray(b[key], dtype=float)
    if len(x) != len(y) or list(a["tokens"]) != list(b["tokens"]):
        raise UnpairedError(
            f"fidelity of different held-out sequences ({len(x)} vs {len(y)}): cannot pair them"
        )
    scale = 100.0 if key == "top1" else 1.0
    return _bootstrap((scale * x, scale * y), lambda u, v, axis=-1: (u - v).mean(axis), seed)


def paired_ratios(original: Sequence[float], pruned: Sequence[float]) -> list[float]:
    """time(original) / time(pruned) of each repeat pair (the i-th call of each, timed back to back)."""
    if len(original) != len(pruned):
        raise ValueError(
            f"Paired ratios need as many repeats of each model: {len(original)} vs {len(pruned)}"
        )
    return [o / p for o, p in zip(original, pruned, strict=True)]


def blocked_median_interval(values: Sequence[float], sizes: Sequence[int], seed: int = 0) -> Estimate:
    """Median of `values`, timed in consecutive blocks of `sizes`, with a two-level percentile-bootstrap 95%
    interval: resample blocks, then values within each drawn block. A one-level bootstrap treats every repeat
    as independent, so its interval misses the drift between blocks that separates two runs; this one is as
    wide as that drift. Hand-rolled: scipy.stats.bootstrap has no nested resampling."""
    if sum(sizes) != len(values):
        raise ValueError(f"{len(values)} values do not split into blocks of {list(sizes)}")
    if len(sizes) <= 1:
        return median_interval(values, seed)
    edges = np.cumsum([0, *sizes])
    blocks = [np.asarray(values[lo:hi], dtype=float) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    rng = np.random.default_rng(seed)
    medians = np.empty(RESAMPLES)
    for r, chosen in enumerate(rng.integers(0, len(blocks), (RESAMPLES, len(blocks)))):
        medians[r] = np.median(np.concatenate([rng.choice(blocks[b], len(blocks[b])) for b in chosen]))
    low, high = np.percentile(medians, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return Estimate(statistics.median(values), float(low), float(high), tuple(values))


def sdr(baseline_avg: float, pruned_avg: float, speedup: float) -> float:
    """gamma = delta-Avg / delta-Speedup: accuracy points lost per percent of speedup (lower is better).

    delta-Avg = baseline - pruned average score in absolute points; delta-Speedup = (speedup - 1) x 100.
    """
    gained = (speedup - 1.0) * 100.0
    if gained == 0.0:
        raise ValueError("SDR is undefined at speedup 1.0: the plan gained no speed to trade accuracy for")
    return (baseline_avg - pruned_avg) / gained


def sdr_estimate(
    baseline_avg: float, pruned_avg: float, speedup: Estimate, delta_se: float | None = None
) -> dict:
    """SDR at the median speedup, with the range it spans over both the speedup's 95% interval and the
    accuracy difference's (+- 1.96 paired SEs; `delta_se` None: the difference taken as measured).

    The record layout {"value", "low", "high", "reason"}: value None with the reason when the speedup's
    interval includes 1 (or lies below it), where SDR divides by noise, or when the accuracy difference's
    interval includes 0, where SDR is a ratio of noise: "within noise", not a number.
    """
    if speedup.low <= 1.0:
        where = "includes 1" if speedup.high >= 1.0 else "lies below 1"
        reason = (
            f"speedup interval [{speedup.low:.3f}, {speedup.high:.3f}] {where}: no measured speed gain to "
            "trade accuracy for"
        )
        return {"value": None, "low": None, "high": None, "reason": reason}
    lost = baseline_avg - pruned_avg
    margin = 0.0 if delta_se is None or math.isnan(delta_se) else 1.96 * delta_se
    if margin and abs(lost) <= margin:
        reason = f"within noise: the accuracy change {-lost:+.2f} +- {margin:.2f} (95%) includes 0"
        return {"value": None, "low": None, "high": None, "reason": reason}
    ends = [
        (lost + sign * margin) / ((s - 1.0) * 100.0) for sign in (-1, 1) for s in (speedup.low, speedup.high)
    ]
    return {
        "value": sdr(baseline_avg, pruned_avg, speedup.median),
        "low": min(ends),
        "high": max(ends),
        "reason": None,
    }


# ---------------------------------------------------------------------------------------------
# Paired accuracy differences
# ---------------------------------------------------------------------------------------------
class UnpairedError(ValueError):
    """A record without per-doc values: its difference to the baseline cannot be paired."""


def paired_difference(
    baseline_eval: EvalResult | Mapping[str, Any], pruned_eval: EvalResult | Mapping[str, Any]
) -> tuple[float, float, dict[str, tuple[float, float]]]:
    """Pruned minus baseline accuracy on the same docs, in points: (delta Avg, its paired SE, per task
    {task: (delta, paired SE)}).

    Both models answer the same questions, so their per-doc results are correlated: the standard error of
    the difference comes from the per-doc differences d_i (var(d) / n per task), far smaller than the two
    unpaired stderrs combined. The Avg is a mean over tasks, independent samples, so the task variances
    add: SE(delta Avg) = sqrt(sum_t var_t) / T. Raises UnpairedError when a record lacks per-doc values,
    ValueError when the two evaluated different docs (then they are not comparable).
    """
    base, pruned = (
        e if isinstance(e, EvalResult) else EvalResult.from_dict(e) for e in (baseline_eval, pruned_eval)
    )
    tasks = [t for t, r in base.tasks.items() if r.metric in ACCURACY_METRICS]
    pruned_tasks = [t for t, r in pruned.tasks.items() if r.metric in ACCURACY_METRICS]
    if sorted(tasks) != sorted(pruned_tasks):
        raise ValueError(f"Accuracy tasks differ: baseline {sorted(tasks)}, pruned {sorted(pruned_tasks)}")
    if not tasks:
        raise ValueError("No accuracy task to compare (perplexity is not in the Avg)")
    per_task, variances = {}, []
    for task in tasks:
        b, p = base.tasks[task].docs, pruned.tasks[task].docs
        if b is None or p is None:
            raise UnpairedError(
                f"{task}: no per-doc values in the {'baseline' if b is None else 'pruned'} record"
            )
        if set(b.ids) != set(p.ids) or len(b.ids) != len(p.ids):
            raise ValueError(
                f"{task}: baseline scored {len(b.ids)} docs, pruned {len(p.ids)}, "
                f"{len(set(b.ids) ^ set(p.ids))} ids in one only: not comparable (same eval limit, protocol?)"
            )
        before = dict(zip(b.ids, b.values, strict=True))
        diff = [100.0 * (v - before[i]) for i, v in zip(p.ids, p.values, strict=True)]
        n = len(diff)
        mean = sum(diff) / n
        variances.append(sum((d - mean) ** 2 for d in diff) / (n - 1) / n if n > 1 else math.nan)
        per_task[task] = (mean, math.sqrt(variances[-1]))
    delta_avg = sum(delta for delta, _ in per_task.values()) / len(tasks)
    return delta_avg, math.sqrt(sum(variances)) / len(tasks), per_task
