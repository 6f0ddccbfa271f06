"""Published numbers of the 2025-26 layer-pruning repairs that `make anchors` is compared with: reported by
their papers on other models and tasks, never rerun here. The anchors table prints them in its notes, so
the README quotes them from a file a make target writes, labelled as published."""

from __future__ import annotations

# (method, what it does, model and cut, retained % of the dense model's average, tasks, source)
ANCHORS: tuple[tuple[str, str, str, float, str, str], ...] = (
    (
        "ReplaceMe, lstsq",
        "one least-squares linear map per span, fused, no training",
        "Llama-2-7B, 25% of blocks",
        91.9,
        "BoolQ, HellaSwag, PIQA, MMLU",
        "ReplaceMe README table (arXiv 2505.02819)",
    ),
    (
        "ReplaceMe, cosine",
        "the same map fitted for cosine distance (numerical solver)",
        "Llama-2-7B, 25% of blocks",
        93.1,
        "BoolQ, HellaSwag, PIQA, MMLU",
        "ReplaceMe README table (arXiv 2505.02819)",
    ),
    (
        "LinearPatch",
        "Hadamard transform + channel scaling at the seam, one fused matrix, no training",
        "Llama-3-8B, 5 of 32 layers",
        94.15,
        "question answering",
        "LinearPatch abstract (NeurIPS 2025)",
    ),
    (
        "LinearPatch + distillation",
        "the patch matrix distilled, 30 min on 5K samples",
        "Llama-3-8B, 5 of 32 layers",
        95.16,
        "question answering",
        "LinearPatch abstract (NeurIPS 2025)",
    ),
    (
        "Prune&Comp",
        "magnitude compensation, iterative prune-and-compensate, block influence metric",
        "Llama-3-8B, 5 of 32 layers",
        93.19,
        "question answering",
        "Prune&Comp abstract (arXiv 2507.18212, AAAI 2026)",
    ),
)

NOTES: dict[str, list[str]] = {
    "anchors": [
        "Published, other models and tasks, not reruns (% of the dense model's average retained):",
        *(
            f"published: {m} ({what}; {model}; {tasks}): {pct}% [{src}]"
            for m, what, model, pct, tasks, src in ANCHORS
        ),
        "published: 'Reassessing Layer Pruning' (Lu et al., ICLR 2026): a reverse-order drop + fine-tuning "
        "only the last layers and lm_head beats LoRA healing and elaborate criteria (no one retained %).",
    ],
}
