"""Is attention the cheap cut? KL to the original of one-shot Attention / MLP / Block drops at equal n.

    .venv/bin/python benchmarks/kl_ordering.py                       # embedded default, float32, n = 4, 8, 11

The cheap half of the drop-curve grid (make reproduce-figures): no lm-eval and no timing, only the fidelity
each run records (`analysis.fidelity` on the held-out sequences of conf/run.yaml's `fidelity` group) and
the paired differences of the ordering table (`metrics.fidelity_difference`). Scores: cosine, one pass on
the default calibration (lee 16 x 2048), as the run app computes them.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import time

from whatmatters import data, models
from whatmatters.measure.clock import machine_name
from whatmatters.method import analysis
from whatmatters.method.drop import one_shot_drop
from whatmatters.method.plans import MethodSpec
from whatmatters.method.scores import compute_scores
from whatmatters.records import metrics
from whatmatters.report.ordering import verdict


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, nargs="+", default=[4, 8, 11])
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    args = parser.parse_args()
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes")
    load = os.getloadavg()[0]
    print(f"# {now}, load average {load:.1f} on {os.cpu_count()} CPUs (timings mean little above ~1)")
    start = time.perf_counter()
    model, tokenizer = models.load("embedded:smollm2-135m", "float32", "cpu")
    ids = data.calibration_ids(tokenizer, "lee", 16, 2048)
    scores = compute_scores(model, ids, batch_size=4, progress=False)
    held = data.heldout_ids(tokenizer, args.sequences, args.seq_len)
    print(
        f"smollm2-135m float32 on {machine_name('cpu')}; cosine scores on lee 16 x 2048; fidelity on "
        f"{args.sequences} x {args.seq_len} held-out Wikipedia tokens; 95% bootstrap intervals over sequences"
    )
    for n in args.n:
        fid = {}
        for target in ("attn", "mlp", "block"):
            pruned = one_shot_drop(copy.deepcopy(model), scores, MethodSpec(target, n=n)).plan
            per_seq = analysis.fidelity(model, _apply(model, pruned), held)
            fid[target] = per_seq
            s = metrics.fidelity_summary(per_seq)
            print(
                f"n={n:2d} {target:5s} KL {_fmt(s['kl'])}  top-1 {_fmt(s['top1'], '.1f')}%  "
                f"ppl {_fmt(s['ppl'], '.2f')} (original {s['ppl_original']['value']:.2f})  {_layers(pruned)}"
            )
        for other in ("mlp", "block"):
            d = metrics.fidelity_difference(fid["attn"], fid[other], "kl")
            said = verdict(d["low"], d["high"], False, "attn", other)
            print(f"n={n:2d} attn - {other:5s} KL {_fmt(d)}: {said}")
    print(f"wall {time.perf_counter() - start:.0f} s")


def _apply(model, plan):
    from whatmatters.method.surgery import apply_plan

    return apply_plan(copy.deepcopy(model), plan)


def _fmt(est: dict, spec: str = ".4f") -> str:
    return f"{est['value']:{spec}} [{est['low']:{spec}}, {est['high']:{spec}}]"


def _layers(plan) -> str:
    return " ".join(
        f"{k} {list(v)}" for k, v in (("attn", plan.attn), ("mlp", plan.mlp), ("blocks", plan.blocks)) if v
    )


if __name__ == "__main__":
    main()
