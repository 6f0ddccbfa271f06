"""The score app (experiments/score.py): importance scores of every layer, saved with their heatmap."""

from __future__ import annotations

import time
from pathlib import Path

from omegaconf import DictConfig

from whatmatters.apps import validate
from whatmatters.apps.common import load_with_data, save_scores
from whatmatters.method.scores import Scores, compute_scores


def score(cfg: DictConfig, out_dir: Path) -> Scores:
    """Load model and calibration data, score every layer, write scores.json and heatmap.png."""
    validate.check(cfg, "score")
    start = time.perf_counter()
    model, _, ids = load_with_data(cfg)
    scores = compute_scores(
        model,
        ids,
        batch_size=cfg.batch_size,
        criterion=cfg.criterion,
        angular=cfg.angular is not None,
        angular_tokens=cfg.angular or "mean",
        seed=cfg.seed,
    )
    scores.meta["wall_s"] = round(time.perf_counter() - start, 1)
    save_scores(cfg, scores, out_dir)
    return scores


def score_summary(scores: Scores, k: int = 8) -> str:
    """A one-screen summary: the k least important layers of each kind."""
    meta = scores.meta
    lines = [f"{meta.get('model', '?')}: {scores.num_layers} layers, {meta.get('tokens')} calibration tokens"]
    for kind in ("block", "attn", "mlp"):
        values = getattr(scores, kind)
        order = sorted((i for i, v in enumerate(values) if v == v), key=values.__getitem__)[:k]
        lines.append(f"  lowest {kind:5s}: " + ", ".join(f"{i}:{values[i]:.3f}" for i in order))
    return "\n".join(lines)
