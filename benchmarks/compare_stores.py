"""Did two runs of the same sweep agree? Reads two results stores, prints each run's speedups side by side.

    make reproduce-table2                                                       # run 1 -> results/
    .venv/bin/python experiments/run.py -m experiment=table2 eval=table2_sample results_dir=results_run2
    .venv/bin/python benchmarks/compare_stores.py results results_run2 --out benchmarks/table2_twice.txt

Records are paired by key (the key hashes the setting, not the store), so the same config in both stores is
one row: per timed phase the median speedup and its 95% interval in each run, the half-width, the run-to-run
difference of the medians and whether the intervals overlap; the ideal speedup and whether a run exceeds
it; and whether the evaluation gave the same Avg (it is deterministic: a difference is a bug).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from whatmatters.records.record import Interval, RunRecord
from whatmatters.records.store import ResultsStore


def _interval(i: Interval) -> str:
    half = 100 * (i.high - i.low) / 2 / i.median if i.low is not None and i.high is not None else float("nan")
    return f"{i.median:.3f} [{i.low:.3f}, {i.high:.3f}] +-{half:.1f}%"


def compare(first: RunRecord, second: RunRecord) -> list[str]:
    """The lines for one config measured in both stores."""
    lines = [
        f"{first.name}  Avg {first.eval.avg:.2f} vs {second.eval.avg:.2f}"
        f"  (same: {abs(first.eval.avg - second.eval.avg) < 1e-9})"
    ]
    if first.speed is None or second.speed is None or not first.speed.speedup:
        return lines
    for phase, a in first.speed.speedup.items():
        b = second.speed.speedup.get(phase)
        if b is None or a.low is None or b.low is None:
            continue
        overlap = a.low <= b.high and b.low <= a.high
        diff = 100 * abs(a.median - b.median) / a.median
        lines.append(
            f"  {phase:<8} run 1 {_interval(a)}  run 2 {_interval(b)}  diff {diff:.1f}%  overlap {overlap}"
        )
    lines.append(
        f"  ideal {first.speed.ideal_speedup:.3f} / {second.speed.ideal_speedup:.3f}"
        f"  exceeds ideal: {first.speed.exceeds_ideal} / {second.speed.exceeds_ideal}"
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--out", type=Path, help="also write the lines to this file")
    args = parser.parse_args()
    second = {r.key: r for r in ResultsStore(args.second).records()}
    lines = [f"# {args.first} vs {args.second}"]
    for record in ResultsStore(args.first).records():
        if record.key in second and record.speed is not None and record.dropped:
            lines += compare(record, second[record.key])
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
