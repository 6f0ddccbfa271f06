"""Why can a measured speedup beat its ideal? Where does a pruned model save time, and does it save more?

    .venv/bin/python benchmarks/bench_kept_modules.py model.dtype=bfloat16  # attn/mlp/block-8, ~4 min
    .venv/bin/python benchmarks/bench_kept_modules.py model.dtype=bfloat16 speed.repeats=20 plans=[mlp-11]

The ideal speedup (`ideal.ideal_speedup`) assumes a pruned model spends the original's time in every
module it keeps and nothing in what it cut. This script checks both: it times the same generate job on the
original and the pruned model alternately (A B A B ...), with the branch hooks of `timing.profile` on both,
splits each call into three parts and reports each part's ratio original / pruned per paired call (median,
95% interval):

* kept: the attention and MLP branches both models run (the same modules);
* cut: in the original, the branches and blocks the plan removes; in the pruned model, their stand-ins;
* rest: everything else (embeddings, residual adds, final norm, head, generate's Python loop);

then the total ratio (the realized speedup of hooked calls) beside the ideal from the same original calls,
total / (total - cut). kept or rest > 1 beyond its interval: the pruned model runs what it kept faster than
the original did (smaller working set, fewer cache slots), which the ideal does not count. Takes the speed
app's config (conf/speed_bench.yaml) and override syntax; run it on a quiet machine.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from transformers import PreTrainedModel

from whatmatters import models
from whatmatters.adapters import KINDS, adapter_for
from whatmatters.measure import clock
from whatmatters.measure.job import Job
from whatmatters.measure.speed import timing_plan
from whatmatters.method.plans import Plan
from whatmatters.method.surgery import apply_plan
from whatmatters.records.metrics import median_interval, paired_ratios

ROOT = Path(__file__).parents[1]
Span = tuple[torch.nn.Module, torch.nn.Module]


def _branches(model: PreTrainedModel, plan: Plan) -> dict[str, list[Span]]:
    """The (first, last) modules of every kept and every cut branch or block of `model` under `plan`; in a
    pruned model, the cut branches are the stand-ins surgery left (cut blocks are gone)."""
    adapter = adapter_for(model)
    pruned = hasattr(model.config, "drop_plan")
    indices = [i for i in range(plan.num_layers) if not (pruned and i in plan.blocks)]
    parts: dict[str, list[Span]] = {"kept": [], "cut": []}
    for i, layer in zip(indices, adapter.layers(model), strict=True):
        if i in plan.blocks:
            parts["cut"].append((layer, layer))
            continue
        for kind in KINDS:
            branch = adapter.branch(kind)
            span = (layer.get_submodule(branch.norm), layer.get_submodule(branch.output))
            parts["cut" if i in getattr(plan, kind) else "kept"].append(span)
    return parts


def _timed_call(model: PreTrainedModel, plan: Plan, job: Job) -> dict[str, float]:
    """Seconds of one hooked generate call: total, kept, cut and rest."""
    device = torch.device(job.device)
    ids = clock.random_prompt(model, job)
    with contextlib.ExitStack() as stack:
        spans = {
            part: [stack.enter_context(clock.spans(a, b, device)) for a, b in pairs]
            for part, pairs in _branches(model, plan).items()
        }
        start = clock.now(device)
        clock.generate_exactly(model, ids, job)
        total = clock.now(device) - start
    out = {part: sum(sum(t) for t in times) for part, times in spans.items()}
    return out | {"total": total, "rest": total - out["kept"] - out["cut"]}


def main(overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("speed_bench", overrides=overrides)
    device = models.device_for(cfg.device)
    job = Job(**OmegaConf.to_container(cfg.speed, resolve=True), device=device, seed=cfg.seed)
    cpu = platform.processor() or platform.machine()
    print(f"{cpu}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads; torch {torch.__version__}")
    print(f"{cfg.model.name_or_path}, {job}")
    original = models.load(cfg.model.name_or_path, job.dtype, device)[0]
    layers = len(adapter_for(original).layers(original))
    for label in [p for p in cfg.plans if p != "none"]:
        plan = timing_plan(label, layers)
        pruned = apply_plan(models.load(cfg.model.name_or_path, job.dtype, device)[0], plan)
        for model in (original, pruned) * job.warmup:  # the speed job's warm-up
            _timed_call(model, plan, job)
        calls = [
            (_timed_call(original, plan, job), _timed_call(pruned, plan, job)) for _ in range(job.repeats)
        ]
        ideal = statistics.median(o["total"] / (o["total"] - o["cut"]) for o, _ in calls)
        print(f"{label}: original / pruned, {job.repeats} alternated hooked calls (median [95% interval])")
        for part in ("kept", "cut", "rest", "total"):
            original_s, pruned_s = ([c[side][part] for c in calls] for side in (0, 1))
            share = statistics.median(o[part] / o["total"] for o, _ in calls)
            if min(pruned_s) == 0.0:  # cut blocks: nothing left in the pruned model to time
                print(f"  {part:<6} removed entirely           original's share {share:.3f}")
                continue
            est = median_interval(paired_ratios(original_s, pruned_s), cfg.seed)
            tail = f"ideal {ideal:.3f}" if part == "total" else f"original's share {share:.3f}"
            print(f"  {part:<6} {est.median:.3f} [{est.low:.3f}, {est.high:.3f}]  {tail}")
        del pruned


if __name__ == "__main__":
    main(sys.argv[1:])
