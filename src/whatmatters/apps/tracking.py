"""wandb logging of one finished run: config, heatmap, per-layer scores, plan, accuracy, speed, SDR.

Offline by default (no account needed; `wandb sync <run dir>` uploads later). `mode=disabled`
turns it off. The results store, not wandb, is the source of truth for tables and figures.
"""

from __future__ import annotations

import os
from pathlib import Path

import wandb

from whatmatters.records.store import RunRecord

MODES = ("offline", "online", "disabled")


def log_run(record: RunRecord, mode: str, project: str, entity: str | None, out_dir: Path) -> str | None:
    """Log `record` as one wandb run under `out_dir`; returns the wandb run dir (None when disabled)."""
    if mode not in MODES:
        raise ValueError(f"Unknown wandb mode {mode!r}; choose one of {MODES}")
    if mode == "disabled":
        return None
    os.environ.setdefault("WANDB_SILENT", "true")
    out_dir.mkdir(parents=True, exist_ok=True)
    run = wandb.init(
        mode=mode,
        project=project,
        entity=entity,
        dir=str(out_dir),
        name=record.name,
        config=record.config,
        job_type=record.method.target,
        reinit="finish_previous",
    )
    with run:
        heatmap = out_dir / "heatmap.png"
        if heatmap.exists():
            run.log({"heatmap": wandb.Image(str(heatmap))})
        if scores := record.scores:
            rows = [
                [i, *(scores[k][i] for k in ("block", "attn", "mlp"))] for i in range(len(scores["block"]))
            ]
            run.log({"scores": wandb.Table(columns=["layer", "block", "attn", "mlp"], data=rows)})
        plan = record.plan or {}
        tasks = record.eval.tasks
        speed = record.speed
        speedups = {f"speedup/{phase}": iv.median for phase, iv in (speed.speedup if speed else {}).items()}
        run.summary.update(
            {
                "plan/attn": plan.get("attn", []),
                "plan/mlp": plan.get("mlp", []),
                "plan/blocks": plan.get("blocks", []),
                "avg": record.eval.avg,
                **{f"acc/{task}": r.value for task, r in tasks.items()},
                **{f"stderr/{task}": r.stderr for task, r in tasks.items()},
                **speedups,
                "speedup": speedups.get("speedup/generate"),
                "kv_ratio": speed.kv_ratio if speed else None,
                "sdr": record.sdr.value if record.sdr else None,
            }
        )
        return run.dir
