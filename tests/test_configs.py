"""Every config in conf/ composes, and every model preset names a model and a dtype we can load."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from whatmatters.models import DTYPES

CONF = Path(__file__).parents[1] / "conf"
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
DATA = sorted(p.stem for p in (CONF / "data").glob("*.yaml"))


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("data", DATA)
def test_score_config_composes_for_every_model_and_data(model, data):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("score", overrides=[f"model={model}", f"data={data}"])
    assert cfg.model.name == model and cfg.model.dtype in DTYPES
    assert cfg.data.source == data and cfg.data.n > 0 and cfg.data.seq_len > 0


METHODS = sorted(p.stem for p in (CONF / "method").glob("[!_]*.yaml"))  # _spec: what they share


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", ["one_shot", "iterative"])
def test_drop_config_composes_for_every_method_and_mode(method, mode):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("drop", overrides=[f"method={method}", f"mode={mode}"])
    assert cfg.method.target == method and (cfg.method.n is None) != (cfg.method.ratio is None)


def test_every_config_file_opens_with_the_command_that_runs_it():
    for path in CONF.rglob("*.yaml"):
        head = path.read_text().splitlines()[:4]
        assert any("python experiments/" in line for line in head), path
