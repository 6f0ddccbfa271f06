"""Paper presets sweep the paper's grid: a paper model's n per table, the embedded default its fractions."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from whatmatters.apps import run as run_app
from whatmatters.apps.common import apply_cell
from whatmatters.apps.validate import ConfigError
from whatmatters.paper import PAPER_MODELS, TABLES

ROOT = Path(__file__).parents[1]
CONF_NAME = {paper: conf for conf, paper in PAPER_MODELS.items()}  # "Llama-3-70B" -> "llama3-70b"
PAPER_CELLS = [  # every (table, paper model) the paper reports
    (table, model) for table in ("table1", "table2", "table3") for model in dict.fromkeys(
        row.model for row in TABLES[table]["rows"]
    )
]  # fmt: skip


def sweep(table: str, model: str) -> list[tuple[str, int | None, float | None]]:
    """The (target, n, ratio) of every run `-m experiment=<table> model=<model>` launches."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("run", overrides=[f"experiment={table}", f"model={model}"], return_hydra_config=True)
    cells = str(cfg.hydra.sweeper.params.cell).split(",")
    out = []
    for cell in cells:
        method = apply_cell(OmegaConf.merge(cfg, {"cell": cell})).method
        out.append((method.target, method.n, method.ratio))
    return out


@pytest.mark.parametrize(("table", "paper_model"), PAPER_CELLS)
def test_each_paper_model_sweeps_exactly_the_papers_rows_of_each_table(table, paper_model):
    want = {(r.target, r.n) for r in TABLES[table]["rows"] if r.model == paper_model and r.target != "none"}
    got = sweep(table, CONF_NAME[paper_model])
    assert all(ratio is None for _, _, ratio in got)  # counts of that model's layers, not fractions
    assert sorted((target, n) for target, n, _ in got) == sorted(want)


def test_llama3_70b_table2_is_16_32_40_48_not_fractions_of_the_embedded_default():
    assert sweep("table2", "llama3-70b") == [("attn", n, None) for n in (16, 32, 40, 48)]


@pytest.mark.parametrize(
    ("table", "fractions", "targets"),
    [
        ("table1", (0.125, 0.25, 0.375), ("block", "mlp", "attn")),
        ("table2", (0.25, 0.375, 0.5, 0.625), ("attn",)),
        ("table3", (0.1, 0.2, 0.4, 0.5, 0.6), ("block", "mlp", "attn")),
    ],
)
def test_the_embedded_default_keeps_its_fractions(table, fractions, targets):
    got = sweep(table, "smollm2-135m")
    assert got == [(t, None, f) for t in targets for f in fractions]


def test_a_malformed_cell_is_refused_naming_the_format():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("run", overrides=["cell=heads-4"])
    with pytest.raises(ConfigError, match="cell='heads-4'.*attn-16"):
        apply_cell(cfg)


@pytest.mark.slow
def test_dry_run_prints_one_line_per_planned_run_and_writes_no_record(tmp_path):
    cmd = [
        sys.executable, "experiments/run.py", "-m", "experiment=table2", "model=llama3-70b", "dry_run=true",
        f"results_dir={tmp_path / 'results'}", f"hydra.sweep.dir={tmp_path / 'multirun'}",
    ]  # fmt: skip
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [line for line in out.stdout.splitlines() if line.startswith("[dry run]")]
    assert [line.split()[2:6] for line in lines] == [
        ["llama3-70b", "attn", f"n={n}", "one_shot"] for n in (16, 32, 40, 48)
    ]
    assert all("cosine" in line and "of 80 layers" in line for line in lines)
    assert not (tmp_path / "results").exists()
    assert time.perf_counter() - start < 240


def test_dry_run_line_names_the_quantization_and_its_order():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        plain = compose("run", overrides=["method=attn", "method.n=4"])
        int4 = compose("run", overrides=["method=attn", "method.n=4", "quant=int4"])
    assert "quant=" not in run_app.dry_run(plain)
    assert run_app.dry_run(int4).endswith("quant=int4 (drop_then_quant)")
