"""Checks a run needs before its minutes of work, beyond the method and data fields: the timing job will run
(it comes last, after scoring and evaluation), every output location can be written (a record that cannot
be stored loses the run), and a submitit job has the time and host memory to load its model. Each failure
raises `ConfigError` naming the field, the value, the valid range and the fix.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig
from transformers import AutoModelForCausalLM, PreTrainedConfig

from whatmatters import models
from whatmatters.apps.config_checks import fail
from whatmatters.measure.memory import weight_bytes

# The least value of each count of the `speed` group (measure.job.Job rejects less, but only when built,
# after the model is loaded, scored and evaluated).
SPEED_LEAST = {"batch_size": 1, "prompt_len": 1, "new_tokens": 1, "repeats": 1, "warmup": 0, "blocks": 1}
OPTIONAL = {"blocks": 1}  # a speed group without it times one block


def check_speed(cfg: DictConfig) -> None:
    """The `speed` group's sizes: whole numbers, at least one prompt, token and timed repeat."""
    for name, least in SPEED_LEAST.items():
        value = cfg.speed.get(name, OPTIONAL.get(name))
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            fail(
                f"speed.{name}", value, f"a whole number >= {least}", f"speed.{name}={max(least, 1)} or more"
            )


def check_writable(field: str, value: str | Path) -> None:
    """`value` must be a folder this process can create files in, or one it can create: probed now with a
    temporary file in it (or in its nearest existing parent), which is removed at once."""
    path = Path(value).expanduser().absolute()
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        fail(
            field,
            str(value),
            f"a folder path ({existing} is a file)",
            f"{field}=<a folder>, e.g. {field}=results",
        )
    try:
        fd, probe = tempfile.mkstemp(prefix=".whatmatters-write-check-", dir=existing)
    except OSError as err:
        fail(
            field,
            str(value),
            f"a folder this process can write ({existing} refuses new files: {err.strerror})",
            f"{field}=<a writable folder>, e.g. {field}=results",
        )
    os.close(fd)
    os.unlink(probe)


def check_launcher(cfg: DictConfig, config: PreTrainedConfig | None) -> None:
    """Under a submitit launcher (Hydra multirun on Slurm, or local processes): a time limit of a minute or
    more, and host memory for a copy of the model's weights (a smaller job dies in the load, after its wait
    in the queue). The model's size comes from its config on the `meta` device: nothing is allocated."""
    launcher = HydraConfig.get().get("launcher") if HydraConfig.initialized() else None
    if launcher is None or "submitit" not in str(launcher.get("_target_", "")):
        return
    fix = f"hydra/launcher=slurm_{cfg.model.name} (conf/hydra/launcher/)"
    timeout = launcher.get("timeout_min")
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 1:
        fail("hydra.launcher.timeout_min", timeout, "a whole number of minutes >= 1", fix)
    mem = launcher.get("mem_gb")
    if config is None or mem is None:
        return
    with torch.device("meta"):
        meta = AutoModelForCausalLM.from_config(config, dtype=models.DTYPES[cfg.model.dtype])
    need = math.ceil(weight_bytes(meta) / 1e9)
    if mem < need:
        fail(
            "hydra.launcher.mem_gb",
            mem,
            f">= {need} GB, a copy of {cfg.model.name}'s {cfg.model.dtype} weights",
            f"{fix} or hydra.launcher.mem_gb={need + 32}",
        )
