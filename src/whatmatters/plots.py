"""Figures drawn from saved results (never from a live model)."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from matplotlib.colors import LogNorm

from whatmatters.scores import Scores


def importance_heatmap(scores: Scores, path: str | Path, title: str = "") -> Path:
    """Layer x {block, attn, mlp} heatmap of importance (the paper's redundancy figure).

    Lighter = lower score = more redundant; dropped modules (NaN) are left blank. Log colour scale:
    layer 0 scores ~100x the middle layers and would otherwise wash out every other difference.
    """
    table = pd.DataFrame(
        {"Block": scores.block, "Attention": scores.attn, "MLP": scores.mlp},
        index=pd.RangeIndex(scores.num_layers, name="layer"),
    ).T
    fig, ax = plt.subplots(figsize=(max(6.0, 0.32 * scores.num_layers), 2.6))
    label = f"importance ({scores.meta.get('criterion', 'cosine')})"
    sns.heatmap(table, cmap="Blues", norm=LogNorm(), ax=ax, cbar_kws={"label": label})
    ax.set_xlabel("layer")
    ax.set_ylabel("")
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path
