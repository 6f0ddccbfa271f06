"""Slurm job shapes for the paper's models, sized from their shapes (whatmatters.shapes) without weights,
and the Hydra launcher configs written from them (conf/hydra/launcher/slurm_<model>.yaml, written by
`make launcher-configs`).

One job is one run of a table's grid (one-shot, as the tables are). The sizes, per model:

- GPUs: `measure.memory.estimate_memory` of one model on the paper's timing job (conf/speed/gpu.yaml: weights,
  the KV cache of P + G tokens, the prefill's activations), plus 10% for the CUDA context and allocator,
  over 80 GB GPUs (A100/H100 80GB). The run times original and pruned side by side only where both fit, else
  one after the other, so one model is the least it needs.
- Host memory: a full copy of the weights (a checkpoint that is not memory-mapped, or layers that
  device_map=auto offloads) plus 32 GB for Python, lm-eval's datasets and the calibration set.
- Time: not measured (no paper-size run has been timed here): 4 h per started 15 B parameters, a limit to
  correct from the `wall_s` of the first records.
"""

from __future__ import annotations

import math
from pathlib import Path

from omegaconf import DictConfig

from whatmatters import models, shapes
from whatmatters.files import atomic_write_text
from whatmatters.measure import memory
from whatmatters.measure.job import job_from_config

GPU_BYTES = 80e9
GPU_HEADROOM = 1.1
HOST_EXTRA_GB = 32
HOURS_PER_15B = 4


def job_shape(model: str, speed: DictConfig, dtype: str = "bfloat16") -> dict:
    """The Slurm resources of one run of `model` (a whatmatters.shapes name) with the timing job `speed`."""
    meta = models.build_shape(model, "meta", dtype)
    need = memory.estimate_memory(meta, job_from_config(speed, "cuda", 0))
    params = meta.num_parameters()
    return {
        "gpus_per_node": math.ceil(need.total * GPU_HEADROOM / GPU_BYTES),
        "mem_gb": math.ceil(need.weights / 1e9 + HOST_EXTRA_GB),
        "timeout_min": 60 * HOURS_PER_15B * math.ceil(params / 15e9),
        "params_b": round(params / 1e9, 1),
        "need_gb": round(need.total / 1e9, 1),
    }


def launcher_yaml(model: str, shape: dict) -> str:
    """The Hydra launcher config of `model`'s jobs: submitit_slurm with the shape's resources."""
    return (
        f"# @package hydra.launcher\n"
        f"#   python experiments/run.py -m experiment=<table> model={model} hydra/launcher=slurm_{model} \\\n"
        f"#     hydra.launcher.partition=<yours>\n"
        f"# Slurm jobs for {model} ({shape['params_b']} B parameters; one run needs ~{shape['need_gb']} GB\n"
        f"# of GPU memory with the paper's timing job): written by `make launcher-configs`\n"
        f"# (apps/cluster.py says how each size is derived).\n"
        f"defaults:\n"
        f"  - submitit_slurm\n"
        f"\n"
        f"partition: null  # your cluster's GPU partition\n"
        f"nodes: 1\n"
        f"tasks_per_node: 1\n"
        f"cpus_per_task: 8\n"
        f"gpus_per_node: {shape['gpus_per_node']}\n"
        f"mem_gb: {shape['mem_gb']}\n"
        f"timeout_min: {shape['timeout_min']}  # an estimate, not measured: check wall_s in the records\n"
    )


def write_launcher_configs(cfg: DictConfig, conf_dir: Path) -> list[Path]:
    """conf/hydra/launcher/slurm_<model>.yaml for every paper model in whatmatters.shapes."""
    paths = []
    for model in shapes.SHAPES:
        path = conf_dir / "hydra" / "launcher" / f"slurm_{model}.yaml"
        atomic_write_text(path, launcher_yaml(model, job_shape(model, cfg.speed, cfg.dtype)))
        paths.append(path)
    return paths
