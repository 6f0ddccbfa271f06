"""The paper's own numbers (arXiv 2406.15786 v6), to print beside ours, always labelled as the paper's.

Nothing here is measured: these are the published Avg / speedup / SDR values of Tables 1-3, 6, 7,
as listed in shared/PAPER.md. A measured row is matched to the paper's row of the same method at
the same *fraction* of that model's modules, so a 30-layer model's Attn-8 sits beside the 32-layer
Attn-8 it corresponds to.
"""

from __future__ import annotations

from dataclasses import dataclass

TARGET_LABELS = {"none": "Baseline", "attn": "Attn", "mlp": "MLP", "block": "Block", "joint": "Joint"}


UNNAMED = "model not named in the paper"


@dataclass(frozen=True)
class PaperRow:
    model: str
    layers: int
    target: str  # none | attn | mlp | block
    n: int
    avg: float
    speedup: float | None = None
    sdr: float | None = None
    variant: str = ""  # ablations: "no-residual" (Table 6) or a criterion other than cosine (Table 7)

    @property
    def label(self) -> str:
        label = TARGET_LABELS[self.target] + ("" if self.target == "none" else f"-{self.n}")
        return f"{label} {self.variant}" if self.variant else label


def _rows(model: str, layers: int, baseline: float | None, entries: list[tuple]) -> list[PaperRow]:
    rows = [] if baseline is None else [PaperRow(model, layers, "none", 0, baseline, 1.0)]
    return rows + [PaperRow(model, layers, *entry) for entry in entries]


EIGHT_TASKS = "Avg of 8 tasks (ARC-C, BoolQ, HellaSwag, MMLU, OBQA, PIQA, RTE, WinoGrande)"

# Per table: the tasks averaged, the setup its numbers were measured in (what the table notes print),
# and the rows (target, n, avg, speedup, sdr); None = not given. `precision` qualifies every paper row.
TABLES: dict[str, dict] = {
    "table1": {
        "setup": f"Llama-2-13B and Mistral-7B; {EIGHT_TASKS}",
        "tasks": ["arc_challenge", "boolq", "hellaswag", "mmlu", "openbookqa", "piqa", "rte", "winogrande"],
        "rows": _rows(
            "Llama-2-13B", 40, 68.2,
            [("block", 4, 65.8, 1.11, 0.22), ("block", 8, 60.7, 1.24, 0.31), ("mlp", 4, 66.9, 1.04, 0.32),
             ("mlp", 8, 61.9, 1.08, 0.79), ("attn", 4, 68.5, 1.05, -0.05), ("attn", 8, 68.1, 1.13, 0.01),
             ("attn", 16, 66.1, 1.29, None), ("attn", 20, 64.9, 1.40, 0.08)],
        )
        + _rows(
            "Mistral-7B", 32, 70.3,
            [("block", 4, 67.1, 1.14, None), ("block", 8, 58.6, 1.32, 0.37), ("mlp", 4, 66.9, 1.03, 1.13),
             ("mlp", 8, 53.4, 1.06, 2.82), ("attn", 4, 69.9, 1.10, None), ("attn", 8, 69.8, 1.23, 0.02),
             ("attn", 12, 67.3, 1.40, 0.08)],
        ),
    },
    "table2": {
        "setup": "Llama-3-8B and Llama-3-70B; Avg of HellaSwag, MMLU, OBQA, WinoGrande",
        "tasks": ["hellaswag", "mmlu", "openbookqa", "winogrande"],
        "rows": _rows(
            "Llama-3-8B", 32, 67.6,
            [("attn", 8, 67.4, 1.16, None), ("attn", 12, 65.8, 1.26, None), ("attn", 16, 55.4, 1.38, 0.32),
             ("attn", 20, 38.6, 1.52, None)],
        )
        + _rows(
            "Llama-3-70B", 80, 75.1,
            [("attn", 16, 75.0, 1.17, None), ("attn", 32, 75.2, 1.35, None), ("attn", 40, 73.3, 1.43, None),
             ("attn", 48, 71.0, 1.55, 0.07)],
        ),
    },
    "table3": {
        "setup": f"Llama-2-70B quantized to 4 bits; {EIGHT_TASKS}",
        "precision": "4-bit",
        "tasks": ["arc_challenge", "boolq", "hellaswag", "mmlu", "openbookqa", "piqa", "rte", "winogrande"],
        "rows": _rows(
            "Llama-2-70B", 80, 73.9,
            [("block", 8, 67.7, 1.14, None), ("block", 32, 49.3, 1.67, None), ("mlp", 16, 65.9, 1.08, 1.00),
             ("mlp", 32, 55.7, 1.17, None), ("attn", 16, 73.8, 1.21, None), ("attn", 32, 73.8, 1.35, 0.00),
             ("attn", 40, 71.5, 1.48, 0.05), ("attn", 48, 66.9, 1.62, 0.11)],
        ),
    },
    # The ablations: PAPER.md names neither model nor baseline. Table 6's n = 4 and 20 are read as of 40
    # layers (Attn-20 is a Llama-2-13B row of Table 1), as conf/experiment/table6.yaml does; Table 7's
    # Attn-12 as of 32. Only Avg is given.
    "table6": {
        "setup": "model not named in the paper (n read as of 40 layers); Avg only, its tasks not stated",
        "tasks": [],
        "rows": _rows(
            UNNAMED, 40, None,
            [("attn", 4, 65.0, None, None), ("attn", 4, 39.4, None, None, "no-residual"),
             ("attn", 20, 62.9, None, None), ("attn", 20, 32.0, None, None, "no-residual")],
        ),
    },
    "table7": {
        "setup": "model not named in the paper (Attn-12 read as of 32 layers); Avg only, tasks not stated",
        "tasks": [],
        "rows": _rows(
            UNNAMED, 32, None,
            [("attn", 12, 64.8, None, None), ("attn", 12, 62.3, None, None, "magnitude"),
             ("attn", 12, 61.5, None, None, "reverse"), ("attn", 12, 39.4, None, None, "random")],
        ),
    },
    # Table 11: attention drop, then AWQ 4-bit weight quantization (variant "4-bit"); Avg only.
    "table11": {
        "setup": "Llama-2-13B and Mistral-7B, full precision and AWQ 4-bit; Avg of ARC-C, HellaSwag, OBQA, "
        "WinoGrande",
        "tasks": ["arc_challenge", "hellaswag", "openbookqa", "winogrande"],
        # Its rows differ by quantization too (a table is otherwise one setting); a measured int4 row sits
        # beside the paper's AWQ 4-bit row.
        "varies": ("quant.",),
        "quant_variants": {"int4": "4-bit"},
        "rows": [
            PaperRow(model, layers, target, n, avg, variant=variant)
            for model, layers, cells in (
                ("Llama-2-13B", 40, ((0, 66.2, 66.0), (4, 66.1, 65.5), (8, 66.2, 65.9))),
                ("Mistral-7B", 32, ((0, 66.8, 66.1), (4, 66.6, 66.3), (8, 66.4, 65.9))),
            )
            for n, full, quantized in cells
            for target in ("none" if n == 0 else "attn",)
            for avg, variant in ((full, ""), (quantized, "4-bit"))
        ],
    },
}  # fmt: skip

# Hydra model config name -> the paper's model name, for runs on the paper's own models.
PAPER_MODELS = {
    "llama2-13b": "Llama-2-13B",
    "mistral-7b": "Mistral-7B",
    "llama3-8b": "Llama-3-8B",
    "llama3-70b": "Llama-3-70B",
    "llama2-70b": "Llama-2-70B",
}


def paper_row(
    table: str, model: str, target: str, n: int, num_layers: int, variant: str = ""
) -> PaperRow | None:
    """The paper's row for a run: the same model and n if the paper ran it, else the row of the table's
    first model (in the paper's order) at the nearest fraction n / layers, within one of that model's
    layers; None where no model of the table has such a row."""
    rows = [r for r in TABLES[table]["rows"] if r.target == target and r.variant == variant]
    own = [r for r in rows if r.model == PAPER_MODELS.get(model)]
    if own:
        return next((r for r in own if r.n == n), None)
    for reference in dict.fromkeys(r.model for r in rows):
        best = min(
            (r for r in rows if r.model == reference), key=lambda r: abs(r.n / r.layers - n / num_layers)
        )
        if abs(best.n - n * best.layers / num_layers) <= 1.0:
            return best
    return None


# Table 4: (model, batch size, attention layers original -> kept, KV cache GB original -> pruned), fp16,
# 2048 tokens. The paper states the kept layer count for three models only; None where it does not.
TABLE4 = (
    ("mistral-7b", 64, 32, 20, 16, 10),
    ("llama2-13b", 32, 40, 20, 52, 26),
    ("llama2-70b", 32, 80, 40, 20, 10),
    ("llama3-8b", 64, 32, None, 16, 10),
    ("llama3-70b", 32, 80, None, 20, 10),
)
