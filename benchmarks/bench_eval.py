"""Stock lm-eval HFLM vs whatmatters' PrefixSharingLM, side by side on the same offline real tasks.

    .venv/bin/python benchmarks/bench_eval.py                      # ~5 min on 2 quiet CPU cores
    .venv/bin/python benchmarks/bench_eval.py --repeats 3 --out benchmarks/results_eval_cpu.txt

For HellaSwag 10-shot, MMLU 5-shot and ARC-Challenge 25-shot (offline data, `whatmatters.eval.tasks.offline`)
it runs `lm_eval.simple_evaluate` with each evaluator in turn, ABAB over `--repeats`, and prints docs/s,
the token positions each ran through the model per doc, the paired per-repeat speedups (stock time /
prefix-sharing time, median and range), and the check that both give the same answers: the largest
|delta log-likelihood| over every request, is_greedy mismatches and the task metric. HellaSwag runs under
both few-shot protocols (`sampled`: lm-eval draws shots per doc; `fixed`: one shot set per task, as
`eval.fewshot=fixed`); MMLU (dev shots, first_n) and ARC-C (shots from validation) are the same under both.
A script, not a test: speeds depend on the machine, so run it on a quiet one.

The ideal speedup from sharing alone is the ratio of positions run (`position ratio`). The time ratio can
exceed it, by design: stock HFLM projects every position onto the vocabulary and log-softmaxes it (SmolLM2:
49,152 ids, ~20% of a position's compute), PrefixSharingLM only the scored positions (`logits_to_keep`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import lm_eval
import torch
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from whatmatters.eval.fastlm import PrefixSharingLM
from whatmatters.eval.tasks import offline
from whatmatters.models import load

# (label, lm-eval task names, shots, metric, protocol)
# MMLU shares a subject's 5 dev shots across its docs, so its gain grows with docs per subject (--mmlu-docs).
MMLU_SUBJECTS = ("mmlu_astronomy", "mmlu_marketing")
JOBS = (
    ("HellaSwag 10-shot", ("hellaswag",), 10, "acc_norm", "sampled"),
    ("HellaSwag 10-shot", ("hellaswag",), 10, "acc_norm", "fixed"),
    ("MMLU 5-shot (2 subjects)", MMLU_SUBJECTS, 5, "acc", "first_n (stock)"),
    ("ARC-C 25-shot", ("arc_challenge",), 25, "acc_norm", "sampled"),
)


class CountingHFLM(HFLM):
    """Stock HFLM that counts the positions it runs through the model (padding included), nothing else."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.positions = 0

    def _model_call(self, inps: torch.Tensor, attn_mask=None, labels=None) -> torch.Tensor:
        self.positions += inps.numel()
        return super()._model_call(inps, attn_mask, labels)


def positions(lm: HFLM) -> int:
    return lm.positions if isinstance(lm, CountingHFLM) else lm.tokens_computed + lm.tokens_padded


def run(lm: HFLM, tasks: list[Any], manager: TaskManager, shots: int, limit: int) -> tuple[float, int, dict]:
    """Seconds, positions computed and lm-eval's output for one evaluation (same seeds every time)."""
    before = positions(lm)
    start = time.perf_counter()
    out = lm_eval.simple_evaluate(
        model=lm, tasks=tasks, num_fewshot=shots, limit=limit, task_manager=manager, log_samples=True
    )
    return time.perf_counter() - start, positions(lm) - before, out


def answers(out: dict) -> tuple[list[tuple[float, bool]], dict[str, list[float]]]:
    """Every request's (loglik, is_greedy) and every doc's metric values, in a fixed (task, doc) order."""
    responses, per_doc = [], {}
    for task in sorted(out["samples"]):
        for sample in sorted(out["samples"][task], key=lambda s: s["doc_id"]):
            responses += [tuple(r[0]) for r in sample["resps"]]
            for metric in ("acc", "acc_norm"):
                if metric in sample:
                    per_doc.setdefault(metric, []).append(float(sample[metric]))
    return responses, per_doc


def compare(stock: dict, fast: dict) -> tuple[float, int, bool]:
    """Max |delta loglik|, is_greedy mismatches, and whether every doc's metrics agree."""
    (a, docs_a), (b, docs_b) = answers(stock), answers(fast)
    if len(a) != len(b):
        raise RuntimeError(f"the evaluators answered {len(a)} and {len(b)} requests: not the same requests")
    worst = max(abs(x[0] - y[0]) for x, y in zip(a, b, strict=True))
    return worst, sum(x[1] != y[1] for x, y in zip(a, b, strict=True)), docs_a == docs_b


def bench(args: argparse.Namespace) -> str:
    model, tok = load("embedded:smollm2-135m")
    kwargs = dict(pretrained=model, tokenizer=tok, batch_size=args.batch_size)
    stock, fast = CountingHFLM(**kwargs), PrefixSharingLM(**kwargs)
    lines = [
        f"SmolLM2-135M fp32, {torch.get_num_threads()} threads, torch {torch.__version__}, batch_size "
        f"{args.batch_size}, {args.docs} docs per task, {args.mmlu_docs} per MMLU subject, "
        f"{args.repeats} ABAB repeats",
        "",
        "| task | shots protocol | docs | stock docs/s | fast docs/s | speedup median [min, max] | "
        "stock positions/doc | fast positions/doc | position ratio | max abs delta loglik | greedy diffs | "
        "same metric |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for label, names, shots, metric, protocol in JOBS:
        if not set(args.tasks) & {names[0].split("_")[0], names[0]}:
            continue
        manager = TaskManager(include_path=str(offline.task_dir(protocol == "fixed")), include_defaults=False)
        loaded = manager.load(list(names))["tasks"]
        tasks = [loaded[name] for name in names]
        times: dict[str, list[float]] = {"stock": [], "fast": []}
        cost, outs = {}, {}
        worst, greedy_diffs, same_docs = 0.0, 0, True
        for _ in range(args.repeats):
            for name, lm in (("stock", stock), ("fast", fast)):
                limit = args.mmlu_docs if names is MMLU_SUBJECTS else args.docs
                seconds, cost[name], outs[name] = run(lm, tasks, manager, shots, limit)
                times[name].append(seconds)
            delta, diffs, same = compare(outs["stock"], outs["fast"])
            worst, greedy_diffs, same_docs = max(worst, delta), greedy_diffs + diffs, same_docs and same
        docs = sum(len(s) for s in outs["stock"]["samples"].values())
        ratios = [s / f for s, f in zip(times["stock"], times["fast"], strict=True)]
        value = {k: statistics.mean(answers(o)[1][metric]) for k, o in outs.items()}
        lines.append(
            f"| {label} | {protocol} | {docs} | {docs / statistics.median(times['stock']):.3f} | "
            f"{docs / statistics.median(times['fast']):.3f} | {statistics.median(ratios):.2f}x "
            f"[{min(ratios):.2f}, {max(ratios):.2f}] | {cost['stock'] / docs:.0f} | "
            f"{cost['fast'] / docs:.0f} | {cost['stock'] / cost['fast']:.2f} | "
            f"{worst:.2e} | {greedy_diffs} | {same_docs} ({metric} {100 * value['stock']:.1f} vs "
            f"{100 * value['fast']:.1f}) |"
        )
        lines.append(
            f"<!-- {label} {protocol}: stock s {[round(t, 2) for t in times['stock']]}, "
            f"fast s {[round(t, 2) for t in times['fast']]} -->"
        )
        print(lines[-2], flush=True)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=4, help="docs per task (lm-eval's limit: the first N)")
    parser.add_argument("--mmlu-docs", type=int, default=15, help="docs per MMLU subject")
    parser.add_argument("--repeats", type=int, default=2, help="ABAB repeats (stock, fast) per task")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per forward, both evaluators")
    parser.add_argument("--out", type=Path, help="also write the table here (atomically)")
    parser.add_argument(
        "--tasks", default="hellaswag,mmlu,arc_challenge", help="comma-separated subset of the default"
    )
    args = parser.parse_args()
    args.tasks = args.tasks.split(",")
    unknown = set(args.tasks) - {"hellaswag", "mmlu", "arc_challenge"}
    if unknown:
        parser.error(f"--tasks {sorted(unknown)} unknown; choose from hellaswag, mmlu, arc_challenge")
    if args.out and not args.out.parent.is_dir():
        parser.error(f"--out {args.out}: folder {args.out.parent} does not exist; create it or pick another")
    for flag in ("docs", "mmlu_docs", "repeats", "batch_size"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} is {getattr(args, flag)}; it must be >= 1")
    table = bench(args)
    print(table)
    if args.out:
        with tempfile.NamedTemporaryFile("w", dir=args.out.parent, delete=False, suffix=".tmp") as tmp:
            tmp.write(table)
        os.replace(tmp.name, args.out)


if __name__ == "__main__":
    main()
