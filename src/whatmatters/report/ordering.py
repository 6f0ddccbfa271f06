"""Which cut is cheaper at the same n: attention vs MLP and attention vs whole blocks, paired.

The paper's claim is an ordering (dropping attention costs less than dropping MLPs or blocks). At each n the
two runs answered the same eval docs and saw the same held-out sequences, so both differences are paired:
accuracy through the per-doc differences (`metrics.paired_difference` of one run against the other), KL
through the per-sequence differences (`metrics.fidelity_difference`). An ordering is resolved only where its
95% interval excludes 0; otherwise the table says "not resolved".
"""

from __future__ import annotations

import pandas as pd

from whatmatters.records.metrics import UnpairedError, fidelity_difference, paired_difference
from whatmatters.records.store import RunRecord

PAIRS = (("attn", "mlp"), ("attn", "block"))
Z = 1.96  # a paired SE -> the half-width of a 95% normal interval


def _accuracy(a: RunRecord, b: RunRecord) -> tuple[float, float, float] | None:
    """Avg of `a` minus Avg of `b` on the same docs, with its 95% interval (None: not pairable)."""
    try:
        delta, se, _ = paired_difference(b.eval, a.eval)
    except UnpairedError:
        return None
    return delta, delta - Z * se, delta + Z * se


def _kl(a: RunRecord, b: RunRecord) -> tuple[float, float, float] | None:
    """KL of `a` minus KL of `b` on the same held-out sequences, with its 95% interval."""
    if not (a.fidelity and b.fidelity):
        return None
    try:
        d = fidelity_difference(a.fidelity["per_seq"], b.fidelity["per_seq"], "kl")
    except UnpairedError:
        return None
    return d["value"], d["low"], d["high"]


def verdict(low: float, high: float, cheaper_if_positive: bool, first: str, second: str) -> str:
    """Which cut the interval says is cheaper, or "not resolved" where it includes 0."""
    if low <= 0 <= high:
        return "not resolved"
    first_cheaper = (low > 0) == cheaper_if_positive
    return f"{first} cheaper" if first_cheaper else f"{second} cheaper"


def _columns(
    name: str, diff: tuple[float, float, float] | None, cheaper_if_positive: bool, first: str, second: str
) -> dict[str, object]:
    if diff is None:
        return {name: None, f"{name} low": None, f"{name} high": None, f"{name} verdict": "no data"}
    value, low, high = diff
    return {
        name: value,
        f"{name} low": low,
        f"{name} high": high,
        f"{name} verdict": verdict(low, high, cheaper_if_positive, first, second),
    }


def ordering_table(runs: list[RunRecord]) -> pd.DataFrame:
    """One row per (mode, n, pair) where both targets ran: the accuracy and KL differences (first minus
    second), their 95% intervals, and the verdict of each. Higher accuracy and lower KL mean cheaper."""
    by_cell = {(r.mode or "one_shot", r.dropped, r.method.target): r for r in runs}
    rows = []
    for mode, n in sorted({(m, n) for m, n, _ in by_cell}):
        for first, second in PAIRS:
            a, b = by_cell.get((mode, n, first)), by_cell.get((mode, n, second))
            if a is None or b is None:
                continue
            row = {"mode": mode, "n": n, "pair": f"{first} - {second}", "keys": f"{a.key} - {b.key}"}
            row |= _columns("ΔAvg", _accuracy(a, b), True, first, second)
            row |= _columns("ΔKL", _kl(a, b), False, first, second)
            rows.append(row)
    return pd.DataFrame(rows)
