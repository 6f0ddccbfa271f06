"""The keys of the results store: a hash of exactly what determines a run's numbers, and nothing else.

A run, its unpruned baseline and its one-shot scores each have a key; a stored record or cached score is
reused only under the same key. Output paths, logging and the experiment a run is tagged with never enter.
"""

from __future__ import annotations

from dataclasses import asdict
from importlib.metadata import version

import torch
from omegaconf import DictConfig, OmegaConf

from whatmatters import models
from whatmatters.eval.suites import task_specs
from whatmatters.method import heal, quant, repair
from whatmatters.method.criteria import MODEL_CRITERIA
from whatmatters.method.plans import target_kinds
from whatmatters.records.store import config_key

MODEL_KEYS = ("name_or_path", "dtype", "revision", "random_init", "device_map")


def key_spec(cfg: DictConfig, *parts: str) -> dict:
    """The parts of the config that determine a run's numbers (never paths of outputs or logging).

    Beyond the config groups: which weights (config hash, weight files, Hub commit), the device type, the
    eval tasks' shots and metrics as the code defines them, and the package version, so a record made
    with other weights, hardware or code is never reused for this run.
    """
    spec = {part: OmegaConf.to_container(cfg[part], resolve=True) for part in parts}
    if "model" in spec:  # a checkpoint revision, random init or device map only enters the key when set
        model = spec["model"]
        spec["model"] = {k: model.get(k) for k in MODEL_KEYS if k in MODEL_KEYS[:2] or model.get(k)}
        spec["weights"] = models.fingerprint(cfg.model.name_or_path, cfg.model.get("revision"))
        spec["device_type"] = torch.device(models.device_for(cfg.device)).type
    if "data" in spec:  # everything else the scores depend on
        method = cfg.get("method") or {}
        angular = method.get("angular", "mean") if method.get("consecutive") else None
        spec["scoring"] = {"batch_size": cfg.batch_size, "angular": angular}
    if "eval" in spec:
        spec["eval_tasks"] = [asdict(task) for task in task_specs(cfg.eval.suite)]
        if cfg.get("fidelity") is not None:  # held-out text the run is compared to its original on
            spec["fidelity"] = OmegaConf.to_container(cfg.fidelity, resolve=True)
    return spec | {"seed": cfg.seed, "version": version("whatmatters")}


def quant_part(cfg: DictConfig) -> dict:
    """The quant group as a key part; empty when unquantized, so unquantized runs keep the keys they had."""
    if not quant.QuantSpec.from_config(cfg).enabled:
        return {}
    return {"quant": OmegaConf.to_container(cfg.quant, resolve=True)}


def heal_part(cfg: DictConfig) -> dict:
    """The heal group as a key part; empty when off, so unhealed runs keep the keys they had."""
    spec = heal.HealSpec.from_config(cfg)
    return {"heal": spec.to_dict()} if spec.enabled else {}


def repair_part(cfg: DictConfig) -> dict:
    """The repair group as a key part; empty when off, so unrepaired runs keep the keys they had."""
    spec = repair.RepairSpec.from_config(cfg)
    return {"repair": spec.to_dict()} if spec.enabled else {}


def baseline_key(cfg: DictConfig) -> str:
    """The unpruned model's record: one per (model, eval suite, speed job, quantization)."""
    return config_key(key_spec(cfg, "model", "eval", "speed") | {"method": "none"} | quant_part(cfg))


def _unhealed_spec(cfg: DictConfig) -> dict:
    spec = key_spec(cfg, "model", "data", "method", "eval", "speed")
    return spec | {"mode": cfg.mode, "criterion": cfg.criterion} | quant_part(cfg) | repair_part(cfg)


def run_key(cfg: DictConfig) -> str:
    """One grid point: model, calibration data, method, mode, criterion, eval, speed job, quant, repair,
    healing."""
    return config_key(_unhealed_spec(cfg) | heal_part(cfg))


def unhealed_key(cfg: DictConfig) -> str:
    """The same grid point without healing (= its heal=none run's key): the model a heal run starts from
    (repaired, where the run repairs)."""
    return config_key(_unhealed_spec(cfg))


def scores_key(cfg: DictConfig) -> str:
    """One-shot scores of the original model: per (model, data, criterion), and quantization where it comes
    first (the scores of a model quantized before dropping are the quantized model's own); a removal
    criterion (loss) measures only the kinds its target chooses among, so those are in its key."""
    quantized = quant_part(cfg) if quant.QuantSpec.from_config(cfg).before_drop else {}
    measured = {"kinds": list(target_kinds(cfg.method.target))} if cfg.criterion in MODEL_CRITERIA else {}
    return config_key(key_spec(cfg, "model", "data") | {"c": cfg.criterion} | quantized | measured)
