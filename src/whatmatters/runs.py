"""What the Hydra apps in experiments/ do, as plain functions of a config (importable, testable)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
from omegaconf import DictConfig

from whatmatters import data, models
from whatmatters.plots import importance_heatmap
from whatmatters.scores import Scores, compute_scores


def device_for(name: str) -> str:
    """`auto` picks the GPU when there is one; anything else is passed to torch as given."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def score(cfg: DictConfig, out_dir: Path) -> Scores:
    """Load model and calibration data, score every layer, write scores.json and heatmap.png."""
    start = time.perf_counter()
    model, tokenizer = models.load(cfg.model.name_or_path, cfg.model.dtype, device_for(cfg.device))
    ids = data.calibration_ids(tokenizer, cfg.data.source, cfg.data.n, cfg.data.seq_len, cfg.data.path)
    scores = compute_scores(
        model, ids, batch_size=cfg.batch_size, criterion=cfg.criterion, angular=cfg.angular, seed=cfg.seed
    )
    scores.meta |= {
        "model": cfg.model.name,
        "name_or_path": cfg.model.name_or_path,
        "data": cfg.data.source,
        "data_path": cfg.data.path,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    scores.save(out_dir / "scores.json")
    importance_heatmap(scores, out_dir / "heatmap.png", title=f"{cfg.model.name}: importance per layer")
    return scores


def summary(scores: Scores, k: int = 8) -> str:
    """A one-screen summary: the k least important layers of each kind."""
    meta = scores.meta
    lines = [f"{meta.get('model', '?')}: {scores.num_layers} layers, {meta.get('tokens')} calibration tokens"]
    for kind in ("block", "attn", "mlp"):
        values = getattr(scores, kind)
        order = sorted((i for i, v in enumerate(values) if v == v), key=values.__getitem__)[:k]
        lines.append(f"  lowest {kind:5s}: " + ", ".join(f"{i}:{values[i]:.3f}" for i in order))
    return "\n".join(lines)
