"""The steps every app shares: load the configured model and calibration data, expand a table cell, name the
experiment, score and drop the configured method, save scores with their heatmap."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf, open_dict
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from whatmatters import data, models
from whatmatters.apps.validate import ConfigError
from whatmatters.method.drop import DropResult, iterative_drop, one_shot_drop
from whatmatters.method.plans import MethodSpec, parse_label, target_kinds
from whatmatters.method.scores import Scores, compute_scores
from whatmatters.report.plots import importance_heatmap


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
    spec = MethodSpec.from_config(cfg.method)
    if cfg.mode == "iterative":
        return iterative_drop(
            model, ids, spec.target, **spec.amount(), criterion=cfg.criterion, batch_size=cfg.batch_size
        )
    if scores is None:
        scores = method_scores(cfg, model, ids)
    return one_shot_drop(model, scores, spec)


def apply_cell(cfg: DictConfig) -> DictConfig:
    """The config with its paper-table cell (`cell=attn-16`: n, `cell=attn-0.25`: a fraction) as its method.

    The experiment sweeps (conf/experiment/table*.yaml) sweep cells rather than method x n, because the
    paper's tables are not grids: Llama-2-13B has Attn-16 but no Block-16.
    """
    cell = cfg.get("cell")
    if cell is None:
        return cfg
    try:
        target, n, ratio = parse_label(cell)
    except ValueError as err:
        raise ConfigError(
            f"cell={cell!r} is not valid: {err}. Fix: correct the cell or the model's `grids`"
        ) from None
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.method.target = target
        cfg.method.n, cfg.method.ratio = n, ratio
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
