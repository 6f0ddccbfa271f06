"""Speed and KV cache of pruned exports in llama.cpp, where users run them (`make bench-llamacpp`; needs
`make setup-serve`).

    .venv/bin/python benchmarks/bench_llamacpp.py --out benchmarks/results_llamacpp_cpu.txt
    .venv/bin/python benchmarks/bench_llamacpp.py --repeats 5 --plans attn-8 block-8

The embedded default is scored once (cosine, a small Lee calibration sample), cut to each plan, exported as
f16 GGUF (every model the same type: llama.cpp's f16 kernels) and timed against the original f16 export,
alternated A B A B with a warm-up pair first. One repeat = prompt processing of `--prompt` tokens, then
`--gen` single-token decode steps fed fixed tokens (teacher-forced, so both models do the same work
whatever they predict). Speedups are medians of the paired ratios with a bootstrap 95% interval
(`records.metrics`), every ratio printed. One thread (`n_threads=1`): the machine is shared, and one thread
is what a noisy neighbour disturbs least; the interval shows what it still did.

KV cache: llama.cpp's own report at context creation (flash attention on, so an attention-free layer holds
none) against kept/total attention layers, exactly. Ideal speedup: the plan's share of the work, counted as
FLOPs of every matmul (the output head included) plus attention over the phase's mean context; realized over
ideal near 1 means llama.cpp turns the removed work into time.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from statistics import median

import llama_cpp

from whatmatters import data, models
from whatmatters.export import gguf_export, llamacpp
from whatmatters.export.layers import export_layers
from whatmatters.files import atomic_write_text
from whatmatters.measure.clock import machine_name
from whatmatters.measure.ideal import exceeds_ideal
from whatmatters.method.plans import Plan, make_plan, parse_label
from whatmatters.method.scores import compute_scores
from whatmatters.method.surgery import apply_plan
from whatmatters.records.metrics import median_interval, paired_ratios

MODEL = "embedded:smollm2-135m"
PLANS = ("attn-8", "attn-15", "joint-8", "block-8")
N_CTX = 512


@dataclass
class Times:
    """Seconds of each repeat: prompt processing and the decode steps."""

    pp: list[float]
    tg: list[float]


def run_once(llm, prompt: list[int], gen: list[int]) -> tuple[float, float]:
    llm.reset()
    start = time.perf_counter()
    llm.eval(prompt)
    mid = time.perf_counter()
    for token in gen:
        llm.eval([token])
    return mid - start, time.perf_counter() - mid


def alternate(original, pruned, prompt: list[int], gen: list[int], repeats: int) -> tuple[Times, Times]:
    """A B A B ...: a warm-up pair (dropped), then `repeats` pairs, every one kept."""
    run_once(original, prompt, gen), run_once(pruned, prompt, gen)
    a, b = Times([], []), Times([], [])
    for _ in range(repeats):
        for llm, times in ((original, a), (pruned, b)):
            pp, tg = run_once(llm, prompt, gen)
            times.pp.append(pp)
            times.tg.append(tg)
    return a, b


def flops(config, plan: Plan, tokens: int, context: float) -> float:
    """Forward FLOPs of `tokens` tokens at mean context `context`: 2 per weight of every matmul (the output
    head included), plus QK^T and AV of each kept attention."""
    h, hd = config.hidden_size, config.head_dim
    q, kv, ffn = config.num_attention_heads * hd, config.num_key_value_heads * hd, config.intermediate_size
    attn_weights = h * q * 2 + h * kv * 2
    attn_scores = 2 * 2 * config.num_attention_heads * hd * context
    per_token = 2 * h * config.vocab_size
    for layer in export_layers(plan):
        per_token += (2 * attn_weights + attn_scores) * layer.attn + 2 * 3 * h * ffn * layer.mlp
    return per_token * tokens


def speedup(original: list[float], pruned: list[float], ideal: float) -> str:
    """The median paired speedup with its interval, over the ideal, flagged where the whole interval beats
    the ideal: then the FLOP count undercounts what the removed layers cost (their non-matmul ops) or load
    hit the original's calls."""
    est = median_interval(paired_ratios(original, pruned), seed=0)
    flag = "  EXCEEDS IDEAL" if exceeds_ideal(est, ideal) else ""
    return (
        f"speedup {est.median:.3f} [{est.low:.3f}, {est.high:.3f}]  ideal {ideal:.3f}  "
        f"realized/ideal {est.median / ideal:.3f}{flag}"
    )


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plans", nargs="+", default=list(PLANS))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--prompt", type=int, default=128, help="prompt tokens processed in one batch")
    parser.add_argument("--gen", type=int, default=64, help="single-token decode steps after the prompt")
    parser.add_argument("--calib", type=int, nargs=2, default=(4, 256), metavar=("N", "SEQ_LEN"))
    parser.add_argument("--out", type=Path, default=None, help="also write the report here (atomically)")
    args = parser.parse_args(argv)
    for label in args.plans:
        parse_label(label)  # a bad label fails now, not after the scoring
    lines: list[str] = []

    def say(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    say("# llama.cpp speed and KV cache of pruned exports (benchmarks/bench_llamacpp.py)")
    say(f"date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    say(f"command: .venv/bin/python benchmarks/bench_llamacpp.py {' '.join(argv)}".rstrip())
    say(f"cpu: {machine_name('cpu')}, {os.cpu_count()} cores; python {platform.python_version()}")
    say(f"llama-cpp-python {llama_cpp.__version__}; n_threads=1 (a shared, noisy machine)")
    say(f"load average at start (1/5/15 min): {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    say(
        f"job: {args.prompt}-token prompt, then {args.gen} decode steps (teacher-forced); f16 weights, f16 "
        f"KV, flash attention, n_ctx {N_CTX}; {args.repeats} repeats + 1 warm-up, original and pruned in turn"
    )
    model, tokenizer = models.load(MODEL)
    config = model.config
    ids = data.calibration_ids(tokenizer, "lee", *args.calib)
    scores = compute_scores(model, ids, kinds=("attn", "mlp", "block"))
    say(f"plans: cosine scores of {MODEL} on Lee, {args.calib[0]} x {args.calib[1]} tokens")
    text = " ".join(tokenizer.decode(ids[0]).split())
    prompt = tokenizer(text)["input_ids"][: args.prompt]
    gen = tokenizer(text)["input_ids"][args.prompt : args.prompt + args.gen]
    log = llamacpp.LlamaLog()
    with tempfile.TemporaryDirectory() as folder:
        llms, kv, plans, fidelity = {}, {}, {"none": Plan(config.num_hidden_layers)}, {}
        for label in ["none", *args.plans]:
            if label != "none":
                target, n, ratio = parse_label(label)
                plans[label] = make_plan(scores, target, n, ratio)
            pruned = apply_plan(models.load(MODEL)[0], plans[label])
            path = Path(folder) / f"{label}.gguf"
            gguf_export.write_gguf(pruned, tokenizer, path, "f16", tokenizer_pre="smollm")
            check = llamacpp.load(path, n_ctx=N_CTX, n_threads=1, logits_all=True)
            fidelity[label] = llamacpp.agreement(check, pruned, tokenizer)
            del check, pruned
            llms[label] = llamacpp.load(path, n_ctx=N_CTX, n_threads=1, logits_all=False)
            kv[label] = log.kv_cache_mib()
        say()
        say("## KV cache (llama.cpp's report) and what the plan keeps")
        for label, plan in plans.items():
            kept = sum(layer.attn for layer in export_layers(plan))
            ratio = Fraction(kept, config.num_hidden_layers)
            measured = kv[label] / kv["none"]
            exact = abs(kv[label] - kv["none"] * float(ratio)) <= 0.005  # the report's 0.01 MiB resolution
            say(
                f"{label:<8} {kv[label]:6.2f} MiB  ratio {measured:.4f}  kept attention {kept}/"
                f"{config.num_hidden_layers} = {float(ratio):.4f}  equal to the report's 0.01 MiB: {exact}"
            )
        say()
        say("## F16 export vs the pruned transformers model in float32 (8 prompts, whole vocabulary)")
        for label, (worst, agree) in fidelity.items():
            say(f"{label:<8} max |d log p| {worst:.4f}  top-1 agreement {agree:.4f}")
        say()
        say("## Speed: tokens/s (median), speedup = median paired time ratio [95% bootstrap interval]")
        base_pp = flops(config, plans["none"], args.prompt, args.prompt / 2)
        base_tg = flops(config, plans["none"], args.gen, args.prompt + args.gen / 2)
        for label in args.plans:
            a, b = alternate(llms["none"], llms[label], prompt, gen, args.repeats)
            plan = plans[label]
            ideal_pp = base_pp / flops(config, plan, args.prompt, args.prompt / 2)
            ideal_tg = base_tg / flops(config, plan, args.gen, args.prompt + args.gen / 2)
            say(f"{label:<8} drops attn {list(plan.attn)} mlp {list(plan.mlp)} blocks {list(plan.blocks)}")
            say(
                f"  prompt   {args.prompt / median(a.pp):7.1f} -> {args.prompt / median(b.pp):7.1f} tok/s  "
                + speedup(a.pp, b.pp, ideal_pp)
            )
            say(
                f"  generate {args.gen / median(a.tg):7.1f} -> {args.gen / median(b.tg):7.1f} tok/s  "
                + speedup(a.tg, b.tg, ideal_tg)
            )
            for phase, x, y in (("prompt", a.pp, b.pp), ("generate", a.tg, b.tg)):
                ratios = " ".join(f"{r:.3f}" for r in paired_ratios(x, y))
                say(f"  {phase} ratios, every repeat: {ratios}")
    say(f"load average at end (1/5/15 min): {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    if args.out:
        atomic_write_text(args.out, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
