"""The drop app (experiments/drop.py): score (or reuse scores), plan, drop and save a pruned model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from omegaconf import DictConfig
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from whatmatters.apps import validate
from whatmatters.apps.common import apply_method, load_with_data, save_scores
from whatmatters.files import atomic_write_text
from whatmatters.method.scores import Scores


def drop(cfg: DictConfig, out_dir: Path) -> dict:
    """Score (or reuse scores.json), plan, drop, save the pruned model; returns the run's summary."""
    start = time.perf_counter()
    method = cfg.method
    validate.check(cfg, "drop")
    model, tokenizer, ids = load_with_data(cfg)
    params_before = model.num_parameters()
    scores = Scores.load(cfg.scores_path) if cfg.scores_path else None
    result = apply_method(cfg, model, ids, scores)
    save_scores(cfg, result.scores, out_dir)
    result.plan.save(out_dir / "plan.json")
    model.save_pretrained(out_dir / "model")
    tokenizer.save_pretrained(out_dir / "model")
    out = {
        "model": cfg.model.name,
        "target": method.target,
        "mode": cfg.mode,
        "plan": result.plan.to_dict(),
        "steps": result.steps,
        "forward_equivalents": result.forward_equivalents,
        "params_before": params_before,
        "params_after": model.num_parameters(),
        "sample": _sample(model, tokenizer, cfg.prompt),
        "wall_s": round(time.perf_counter() - start, 1),
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(out, indent=1))
    return out


def _sample(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, prompt: str, tokens: int = 20) -> str:
    """A short greedy continuation: the quickest sign that a pruned model still speaks."""
    inputs = tokenizer(prompt, return_tensors="pt").to(model.device)
    with torch.no_grad():
        out = model.generate(
            **inputs, max_new_tokens=tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id
        )
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def drop_summary(out: dict) -> str:
    """One screen: what was dropped, what it saved, what the pruned model says."""
    plan = out["plan"]
    saved = out["params_before"] - out["params_after"]
    lines = [
        f"{out['model']}: {out['target']} drop, {out['mode']}, n={plan['meta'].get('n')}",
        f"  attention dropped: {plan['attn']}",
        f"  MLP dropped:       {plan['mlp']}",
        f"  blocks dropped:    {plan['blocks']}",
        f"  parameters: {out['params_before']:,} -> {out['params_after']:,} (-{saved:,}, "
        f"{100 * saved / out['params_before']:.1f}%)",
        f"  scoring cost: {out['forward_equivalents']:.2f} forward passes",
        f"  sample: {out['sample']!r}",
    ]
    return "\n".join(lines)
