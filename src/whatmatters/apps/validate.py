"""Check a config before anything heavy happens: no model weights load, nothing is scored or written.

The apps (experiments/score.py, drop.py, run.py) call `check` first. Everything that can be known from
the config, the model's config.json (`AutoConfig`, no weights) and the machine is checked here, so a bad
value fails in seconds with a message naming the field, the value, the valid range and the fix, instead
of after minutes of loading and scoring. What only the run itself can find out (a truncated weights
file, a benchmark download that breaks half-way) still fails where it happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig
from transformers import PreTrainedConfig

from whatmatters import models
from whatmatters.apps.config_checks import (
    ConfigError,
    angular_bytes,
    check_common,
    check_data,
    check_fidelity,
    check_heal,
    check_memory,
    check_repair,
    fail,
    stream_cache_bytes,
)
from whatmatters.apps.job_checks import check_launcher, check_speed, check_writable
from whatmatters.apps.method_checks import check_method
from whatmatters.method.criteria import MODEL_CRITERIA
from whatmatters.method.scores import ANGULAR_TOKENS

__all__ = ["APPS", "Checked", "ConfigError", "angular_bytes", "check", "stream_cache_bytes"]

APPS = ("score", "drop", "run")


@dataclass(frozen=True)
class Checked:
    """What the checks learned without loading the model: its layers, and how many modules the run drops."""

    num_layers: int | None  # None where the model's config could not be read (a Hub id offline)
    count: int | None = None  # modules the method drops (drop and run apps)


def check(cfg: DictConfig, app: str) -> Checked:
    """Every check that needs no weights, for the `score`, `drop` or `run` app; raises ConfigError."""
    if app not in APPS:
        raise ValueError(f"Unknown app {app!r}; choose one of {APPS}")
    check_common(cfg)
    config = models.model_config(cfg.model.name_or_path, cfg.model.get("revision"), shape=cfg.model.name)
    check_data(cfg, config)
    if app == "score":
        if cfg.angular is not None and cfg.angular not in ANGULAR_TOKENS:
            fail("angular", cfg.angular, f"one of {ANGULAR_TOKENS} or null", "angular=mean")
        check_memory(cfg, config, iterative=False, angular=cfg.angular is not None)
        return Checked(_layers(config))
    count = check_method(cfg, config)
    if app == "drop" and cfg.get("scores_path"):
        if cfg.mode == "iterative":
            fail(
                "scores_path",
                cfg.scores_path,
                "null in iterative mode (it re-scores the pruned model)",
                "drop scores_path or use mode=one_shot",
            )
        if not Path(cfg.scores_path).is_file():
            fail(
                "scores_path",
                cfg.scores_path,
                "an existing scores.json",
                "give the path experiments/score.py wrote",
            )
    if app == "run":
        from whatmatters.eval import evaluate  # imports lm-eval (seconds): only the run app evaluates

        evaluate.check_suite(cfg.eval)  # unknown tasks, or the paper suite offline: fails before any load
        check_heal(cfg)
        check_repair(cfg, config)
        check_fidelity(cfg)
        if cfg.speed.dtype != cfg.model.dtype:  # the timed models are the evaluated ones, in their dtype
            fail(
                "speed.dtype",
                cfg.speed.dtype,
                f"the model's dtype, model.dtype={cfg.model.dtype}",
                f"speed.dtype={cfg.model.dtype} (or model.dtype={cfg.speed.dtype})",
            )
        check_speed(cfg)
        check_launcher(cfg, config)
        check_writable("results_dir", cfg.results_dir)
    # The loss criterion caches every layer's input like an iterative drop does, one-shot too.
    cached = cfg.mode == "iterative" or cfg.criterion in MODEL_CRITERIA
    check_memory(cfg, config, iterative=cached, angular=cfg.method.consecutive)
    return Checked(_layers(config), count)


def _layers(config: PreTrainedConfig | None) -> int | None:
    return None if config is None else config.num_hidden_layers
