"""Do the seam repairs bring a cut model back towards the original? Fidelity only, no eval suite.

    .venv/bin/python benchmarks/bench_repair.py            # make bench-repair: Block-8 and Attn-15 of SmolLM2

For each cut (cosine scores on lee 2 x 256 tokens, one-shot, bfloat16, as `make anchors` plans it) and each
repair (none, linear, magnitude; conf/repair/*.yaml fitted on 8 x 256 lee tokens, as `make anchors`), the
cut model's KL(original || cut) and perplexity on 32 held-out Wikipedia sequences of 128 tokens, with 95%
bootstrap intervals over sequences (`analysis.fidelity`, `metrics.fidelity_summary`: the run records'
`fidelity` block), and each repair's KL minus the unrepaired cut's, paired over the same sequences. Writes
benchmarks/results_repair_cpu.txt. The accuracy side is `make anchors` (figures/anchors.md).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

from whatmatters import data, models
from whatmatters.files import atomic_write_text
from whatmatters.method import analysis
from whatmatters.method.plans import make_plan
from whatmatters.method.repair import RepairSpec, repair
from whatmatters.method.scores import compute_scores
from whatmatters.method.surgery import apply_plan
from whatmatters.records import metrics

CUTS = (("block", 8), ("attn", 15))
OUT = Path(__file__).with_name("results_repair_cpu.txt")


def _interval(est: dict) -> str:
    return f"{est['value']:.4g} [{est['low']:.4g}, {est['high']:.4g}]"


def main() -> None:
    start = time.perf_counter()
    original, tokenizer = models.load(models.resolve("embedded:smollm2-135m"), "bfloat16", "cpu")
    scoring = data.calibration_ids(tokenizer, "lee", 2, 256, None)
    fit = data.calibration_ids(tokenizer, "lee", 8, 256, None)
    heldout = data.heldout_ids(tokenizer, 32, 128)
    scores = compute_scores(original, scoring, angular=False, progress=False)
    lines = [
        "# benchmarks/bench_repair.py: fidelity of a cut SmolLM2-135M (bfloat16, CPU) to the original,",
        "# without and with each seam repair; KL(original || cut) in nats, perplexity on 32 x 128 held-out",
        "# Wikipedia tokens, value [95% bootstrap interval over sequences]; dKL = repair minus none, paired.",
        "# original perplexity: {ppl_original}",
    ]
    ppl_original = None
    for target, n in CUTS:
        plan = make_plan(scores, target, n=n)
        none_seq = None
        for kind in ("none", "linear", "magnitude"):
            cut = apply_plan(copy.deepcopy(original), plan)
            gaps = ""
            if kind != "none":
                found, summary = repair(cut, original, fit, RepairSpec(kind=kind, n=8))
                gaps = f"  gaps {len(found)}"
                if kind == "linear":
                    fitted = [
                        g["residual_fit"] / g["residual_cut"] for g in summary["gaps"] if "residual_fit" in g
                    ]
                    gaps += f", fit residual / cut residual {min(fitted):.3f}-{max(fitted):.3f}"
                else:
                    gaps += ", alpha " + " ".join(f"{g['alpha']:.3f}" for g in summary["gaps"])
            per_seq = analysis.fidelity(original, cut, heldout, batch_size=8)
            s = metrics.fidelity_summary(per_seq)
            ppl_original = ppl_original or _interval(s["ppl_original"])
            delta = ""
            if none_seq is None:
                none_seq = per_seq
            else:
                delta = f"  dKL {_interval(metrics.fidelity_difference(per_seq, none_seq, 'kl'))}"
            label = f"{target.capitalize() if target != 'attn' else 'Attn'}-{n} {kind}"
            lines.append(f"{label:18s} KL {_interval(s['kl'])}  ppl {_interval(s['ppl'])}{delta}{gaps}")
            print(lines[-1], flush=True)
    lines[3] = lines[3].format(ppl_original=ppl_original)
    lines.append(f"# plans: {', '.join(f'{t}-{n}' for t, n in CUTS)}; {time.perf_counter() - start:.0f} s")
    atomic_write_text(OUT, "\n".join(lines) + "\n")
    print(OUT.read_text())


if __name__ == "__main__":
    main()
