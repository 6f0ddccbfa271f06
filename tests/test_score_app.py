"""Integration: the scoring app on the embedded SmolLM2-135M default, offline."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import matplotlib.pyplot as plt
import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_score_app_writes_scores_and_heatmap_for_the_embedded_default(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "experiments/score.py", "data.n=2", "data.seq_len=64", f"hydra.run.dir={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = json.loads((out / "scores.json").read_text())
    assert [len(scores[k]) for k in ("attn", "mlp", "block")] == [30, 30, 30]
    assert all(0.0 <= v <= 2.0 for k in ("attn", "mlp", "block") for v in scores[k])
    assert scores["meta"] | {"model": "smollm2-135m", "num_samples": 2, "seq_len": 64} == scores["meta"]
    assert scores["meta"]["tokens"] == 128 and scores["meta"]["dtype"] == "float32"
    heatmap = plt.imread(out / "heatmap.png")  # (H, W, RGBA): a drawn figure, not a blank canvas
    assert heatmap.ndim == 3 and min(heatmap.shape[:2]) > 200 and heatmap[..., :3].std() > 0.05
    assert "lowest attn" in proc.stdout


@pytest.mark.slow
def test_score_app_rejects_too_short_calibration_text(tmp_path):
    text = tmp_path / "short.txt"
    text.write_text("Only a few words here.")
    cmd = [sys.executable, "experiments/score.py", "data=text", f"data.path={text}"]
    cmd.append(f"hydra.run.dir={tmp_path}")
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "too short" in proc.stderr or "tokens" in proc.stderr
    assert not (tmp_path / "scores.json").exists()
