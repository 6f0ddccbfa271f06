"""Integration: the drop app on the embedded SmolLM2-135M default writes a pruned model that reloads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import whatmatters.method.surgery  # noqa: F401  (registers the pruned model classes)

ROOT = Path(__file__).parents[1]
ATTN_PARAMS = 2 * 576 * 576 + 2 * 576 * 192 + 576  # q, o (9 heads) + k, v (3 KV heads) + input norm


def run_drop(out: Path, *overrides: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "experiments/drop.py", "data.n=2", "data.seq_len=64", f"hydra.run.dir={out}"]
    return subprocess.run([*cmd, *overrides], cwd=ROOT, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_attn8_drop_app_saves_a_smaller_model_that_reloads_with_22_kv_layers(tmp_path):
    proc = run_drop(tmp_path, "method=attn", "method.n=8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["plan"]["attn"]) == 8
    assert summary["params_before"] - summary["params_after"] == 8 * ATTN_PARAMS
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "model")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    assert model.num_parameters() == summary["params_after"]
    inputs = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=5, do_sample=False, return_dict_in_generate=True)
    assert len(out.past_key_values.layers) == 22
    assert tokenizer.decode(out.sequences[0, inputs["input_ids"].shape[1] :]).strip()
    assert json.loads((tmp_path / "plan.json").read_text())["attn"] == summary["plan"]["attn"]
    assert "attention dropped" in proc.stdout


@pytest.mark.slow
def test_iterative_joint_drop_app_records_its_steps(tmp_path):
    proc = run_drop(tmp_path, "method=joint", "method.n=3", "mode=iterative")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert len(summary["steps"]) == 3
    assert 1.0 < summary["forward_equivalents"] < 3.0
