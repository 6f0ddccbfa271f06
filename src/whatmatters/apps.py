"""The score and drop apps (experiments/score.py, drop.py) as plain functions of a config, and the steps
every app shares: load the configured model and calibration data, expand a table cell, name the experiment,
drop the configured method, save scores with their heatmap. The run app is `experiment.run`, the speed app
`speed.run`; tests call all of them without Hydra."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from whatmatters import data, models, validate
from whatmatters.drop import DropResult, iterative_drop, one_shot_drop
from whatmatters.io import atomic_write_text
from whatmatters.plans import TARGETS, target_kinds
from whatmatters.plots import importance_heatmap
from whatmatters.scores import Scores, compute_scores
from whatmatters.validate import ConfigError


def load_model(cfg: DictConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The `model` config group's model on the configured device (a checkpoint revision, or random init)."""
    m = cfg.model
    device = models.device_for(cfg.device)
    extra = {"revision": m.get("revision"), "random_init": m.get("random_init", False), "seed": cfg.seed}
    device_map = m.get("device_map")
    if isinstance(device_map, DictConfig):  # an explicit accelerate map, module name -> device
        device_map = OmegaConf.to_container(device_map)
    return models.load(m.name_or_path, m.dtype, device, device_map=device_map, **extra)


def load_with_data(cfg: DictConfig) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, torch.Tensor]:
    model, tokenizer = load_model(cfg)
    ids = data.calibration_ids(tokenizer, cfg.data.source, cfg.data.n, cfg.data.seq_len, cfg.data.path)
    return model, tokenizer, ids


def save_scores(cfg: DictConfig, scores: Scores, out_dir: Path) -> None:
    scores.meta |= {
        "model": cfg.model.name,
        "name_or_path": cfg.model.name_or_path,
        "revision": cfg.model.get("revision"),
        "random_init": cfg.model.get("random_init", False),
        "data": cfg.data.source,
        "data_path": cfg.data.path,
    }
    scores.save(out_dir / "scores.json")
    importance_heatmap(scores, out_dir / "heatmap.png", title=f"{cfg.model.name}: importance per layer")


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


def method_scores(cfg: DictConfig, model: PreTrainedModel, ids: torch.Tensor) -> Scores:
    """One-shot scores for `cfg.method`: its criterion, and angular distances only where it drops a span."""
    method = cfg.method
    return compute_scores(
        model,
        ids,
        batch_size=cfg.batch_size,
        criterion=cfg.criterion,
        angular=method.consecutive,
        angular_tokens=method.angular,
        seed=cfg.seed,
        kinds=target_kinds(method.target),
    )


def apply_method(
    cfg: DictConfig, model: PreTrainedModel, ids: torch.Tensor, scores: Scores | None
) -> DropResult:
    """Drop `cfg.method` from `model` in place: iteratively, or one-shot from `scores` (None: score now)."""
    method = cfg.method
    amount = dict(n=method.n, ratio=method.ratio, remove_residual=method.remove_residual)
    if cfg.mode == "iterative":
        return iterative_drop(
            model, ids, method.target, **amount, criterion=cfg.criterion, batch_size=cfg.batch_size
        )
    if scores is None:
        scores = method_scores(cfg, model, ids)
    return one_shot_drop(model, scores, method.target, **amount, consecutive=method.consecutive)


def apply_cell(cfg: DictConfig) -> DictConfig:
    """The config with its paper-table cell (`cell=attn-16`: n, `cell=attn-0.25`: a fraction) as its method.

    The experiment sweeps (conf/experiment/table*.yaml) sweep cells rather than method x n, because the
    paper's tables are not grids: Llama-2-13B has Attn-16 but no Block-16.
    """
    cell = cfg.get("cell")
    if cell is None:
        return cfg
    target, _, amount = str(cell).rpartition("-")
    try:
        value = float(amount) if "." in amount else int(amount)
    except ValueError:
        value = None
    if target not in TARGETS or value is None:
        raise ConfigError(
            f"cell={cell!r} is not a table cell: expected <target>-<n> or <target>-<fraction> with target "
            f"one of {TARGETS}, e.g. attn-16 or attn-0.25. Fix: correct the cell or the model's `grids`"
        )
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.method.target = target
        cfg.method.n, cfg.method.ratio = (value, None) if isinstance(value, int) else (None, value)
    return cfg


def with_experiment_name(cfg: DictConfig) -> DictConfig:
    """The config with `experiment_name` set to the experiment chosen on the command line (`experiment=table2`
    picks conf/experiment/table2.yaml), which tags the run's record for that table; nothing to type per file.

    An explicit `experiment_name=...` wins, and a config composed without a Hydra app (tests, notebooks)
    keeps the one it has: `${hydra:runtime.choices.experiment}` in conf/run.yaml would not resolve there.
    """
    if cfg.get("experiment_name") or not HydraConfig.initialized():
        return cfg
    chosen = HydraConfig.get().runtime.choices.get("experiment")
    if not chosen:
        return cfg
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.experiment_name = chosen
    return cfg


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


def score_summary(scores: Scores, k: int = 8) -> str:
    """A one-screen summary: the k least important layers of each kind."""
    meta = scores.meta
    lines = [f"{meta.get('model', '?')}: {scores.num_layers} layers, {meta.get('tokens')} calibration tokens"]
    for kind in ("block", "attn", "mlp"):
        values = getattr(scores, kind)
        order = sorted((i for i, v in enumerate(values) if v == v), key=values.__getitem__)[:k]
        lines.append(f"  lowest {kind:5s}: " + ", ".join(f"{i}:{values[i]:.3f}" for i in order))
    return "\n".join(lines)
