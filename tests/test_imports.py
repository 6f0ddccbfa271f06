"""Readers of the results store (tables, figures, the Pareto plot) run on any machine: no torch import."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).parents[1] / "src" / "whatmatters"
READERS = "results run_record tables table_files plots pareto io paper score_data plans metrics eval_suites"
HEAVY = ("torch", "transformers", "lm_eval", "accelerate", "peft", "torchao")
TORCH_SIDE = (
    "scores surgery models adapters timing clock memory quant heal data drop budget speed experiment apps"
)

# The package's __init__ registers the pruned model classes with transformers, so it is bypassed here: a
# bare package object stands in for it and only the readers' own imports run.
PROBE = f"""
import importlib, json, sys, types
package = types.ModuleType("whatmatters")
package.__path__ = [{str(SRC)!r}]
sys.modules["whatmatters"] = package
for name in {READERS.split()!r}:
    importlib.import_module("whatmatters." + name)
print(json.dumps(sorted(sys.modules)))
"""


def test_results_tables_plots_and_pareto_import_neither_torch_nor_a_torch_side_module():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = set(json.loads(out.stdout.splitlines()[-1]))
    assert {f"whatmatters.{name}" for name in READERS.split()} <= loaded
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    assert not loaded & {f"whatmatters.{name}" for name in TORCH_SIDE.split()}
