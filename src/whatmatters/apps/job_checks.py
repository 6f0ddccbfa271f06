"""Checks a run needs before its minutes of work, beyond the method and data fields: the timing job will run
(it comes last, after scoring and evaluation) and every output location can be written (a record that
cannot be stored loses the run). Each failure raises `ConfigError` naming the field, the value, the valid
range and the fix.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from omegaconf import DictConfig

from whatmatters.apps.config_checks import fail

# The least value of each count of the `speed` group (measure.job.Job rejects less, but only when built,
# after the model is loaded, scored and evaluated).
SPEED_LEAST = {"batch_size": 1, "prompt_len": 1, "new_tokens": 1, "repeats": 1, "warmup": 0}


def check_speed(cfg: DictConfig) -> None:
    """The `speed` group's sizes: whole numbers, at least one prompt, token and timed repeat."""
    for name, least in SPEED_LEAST.items():
        value = cfg.speed.get(name)
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
