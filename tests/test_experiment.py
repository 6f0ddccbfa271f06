"""The experiment app: sweeps write one record per config, skip finished ones, resume after a crash."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from whatmatters.apps import common, run_keys
from whatmatters.apps import run as run_app
from whatmatters.eval import evaluate
from whatmatters.records.store import ResultsStore

ROOT = Path(__file__).parents[1]
# A tiny model, tiny calibration, one quick task, a tiny speed job: seconds per run.
TINY_RUN = [
    "data=tokens",
    "data.n=2",
    "data.seq_len=16",
    "eval.suite=[wm_cloze]",
    "eval.limit=4",
    "eval.batch_size=4",
    "speed.batch_size=1",
    "speed.prompt_len=8",
    "speed.new_tokens=3",
    "speed.repeats=1",
    "speed.warmup=0",
    "device=cpu",
    "wandb.mode=disabled",
    "fidelity.sequences=3",
    "fidelity.seq_len=8",
]


@pytest.fixture
def tiny_run(tmp_path, tiny_llama_dir) -> list[str]:
    ids = tmp_path / "ids.pt"
    torch.save(torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(0)), ids)
    return [
        f"model.name_or_path={tiny_llama_dir}",
        "model.name=tiny-llama",
        f"data.path={ids}",
        f"results_dir={tmp_path / 'results'}",
        *TINY_RUN,
    ]


def keys(root: Path) -> list[str]:
    return sorted(p.stem for p in root.glob("*.json"))


@pytest.mark.slow
def test_two_point_multirun_writes_two_records_and_a_rerun_skips_both(tmp_path, tiny_run):
    cmd = [sys.executable, "experiments/run.py", "-m", "method.n=1,2", *tiny_run]
    cmd.append(f"hydra.sweep.dir={tmp_path / 'multirun'}")
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    store = ResultsStore(tmp_path / "results")
    records = list(store.records())
    assert sorted(r.method.target for r in records) == ["attn", "attn", "none"]  # 2 runs + 1 baseline
    assert sorted(r.dropped for r in records) == [0, 1, 2]
    run = next(r for r in records if r.dropped == 2)
    assert run.baseline_avg == next(r for r in records if r.dropped == 0).eval.avg
    assert run.speed.kv_ratio == pytest.approx(2 / 4)  # 2 of 4 attention layers keep a cache
    stamps = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "results").glob("*.json")}
    second = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.count("[skip]") == 2
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "results").glob("*.json")} == stamps


@pytest.mark.slow
def test_a_sweep_killed_mid_way_resumes_without_duplicates(tmp_path, tiny_run, monkeypatch):
    def config(n: int, *extra: str):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return compose("run", overrides=[*tiny_run, f"method.n={n}", *extra])

    real = evaluate.run_suite
    calls = {"n": 0}

    def crash_on_third(*args, **kwargs):  # baseline, run 1, then run 2 dies
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "run_suite", crash_on_third)
    run_app.run(config(1), tmp_path / "out1")
    with pytest.raises(KeyboardInterrupt):
        run_app.run(config(2), tmp_path / "out2")
    store_root = tmp_path / "results"
    assert len(keys(store_root)) == 2  # baseline + run 1; nothing half-written for run 2
    assert not [p for p in store_root.iterdir() if p.name.startswith(".")]
    monkeypatch.setattr(evaluate, "run_suite", real)
    again = run_app.run(config(1), tmp_path / "out1b")  # skipped: already stored
    run_app.run(config(2), tmp_path / "out2b")
    assert len(keys(store_root)) == 3
    assert again.dropped == 1
    assert json.loads((store_root / f"{again.key}.json").read_text())["created"] == again.created
    # The same setting in another experiment's grid is not run again: it joins that experiment's table.
    joined = run_app.run(config(1, "experiment_name=table9"), tmp_path / "out1c")
    assert joined.experiments == ["table9"] and len(keys(store_root)) == 3
    assert ResultsStore(store_root).get(joined.key).experiments == ["table9"]


def test_hub_data_without_network_fails_before_loading_any_model(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "run",
            overrides=[
                "eval=paper_table2",
                "eval.source=hub",
                f"results_dir={tmp_path}",
                "wandb.mode=disabled",
            ],
        )
    loaded = []
    monkeypatch.setattr("whatmatters.models.load", lambda *a, **k: loaded.append(a))
    with pytest.raises(evaluate.EvalError, match="network"):
        run_app.run(cfg, tmp_path / "out")
    assert not loaded


def test_a_checkpoint_revision_or_random_init_changes_the_run_key_and_defaults_do_not(tiny_run):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        default = compose("run", overrides=tiny_run)
        explicit = compose("run", overrides=[*tiny_run, "model.revision=null", "model.random_init=false"])
        fresh = compose("run", overrides=[*tiny_run, "model.random_init=true"])
        step = compose("run", overrides=[*tiny_run, "model.revision=step-1000"])
    assert run_keys.run_key(default) == run_keys.run_key(explicit)
    assert len({run_keys.run_key(c) for c in (default, fresh, step)}) == 3
    # Records written before these options existed keep their keys: the defaults add nothing.
    assert set(run_keys.key_spec(default, "model")["model"]) == {"name_or_path", "dtype"}


@pytest.fixture
def hydra_app_config():
    """Sets Hydra's runtime config as a Hydra app does for each job of a sweep; yields a compose function."""
    instance = HydraConfig.instance()
    saved = instance.cfg

    def as_app(*overrides: str):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("run", overrides=list(overrides), return_hydra_config=True)
        instance.set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]  # the app sees its config without the hydra node
        return cfg

    yield as_app
    instance.cfg = saved


def test_the_experiment_name_is_the_chosen_experiment_and_an_explicit_one_wins(hydra_app_config):
    assert common.with_experiment_name(hydra_app_config("experiment=table2")).experiment_name == "table2"
    assert common.with_experiment_name(hydra_app_config("experiment=table7")).experiment_name == "table7"
    assert common.with_experiment_name(hydra_app_config()).experiment_name is None
    explicit = hydra_app_config("experiment=table2", "experiment_name=mine")
    assert common.with_experiment_name(explicit).experiment_name == "mine"


def test_without_a_hydra_app_the_config_keeps_its_experiment_name():
    assert not HydraConfig.initialized()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        plain = compose("run", overrides=["experiment=table2"])
        tagged = compose("run", overrides=["experiment=table2", "experiment_name=table9"])
    assert common.with_experiment_name(plain).experiment_name is None
    assert common.with_experiment_name(tagged).experiment_name == "table9"


@pytest.mark.parametrize("path", sorted((ROOT / "conf" / "experiment").glob("*.yaml")), ids=lambda p: p.stem)
def test_no_experiment_file_types_its_own_name(path):
    assert "experiment_name" not in OmegaConf.load(path)


def test_every_run_records_its_fidelity_on_held_out_text_and_the_baseline_is_its_own_original(
    tmp_path, tiny_run
):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("run", overrides=[*tiny_run, "method.n=2"])
    record = run_app.run(cfg, tmp_path / "out")
    base = ResultsStore(tmp_path / "results").get(run_keys.baseline_key(cfg))
    assert len(record.fidelity["per_seq"]["kl"]) == 3 and record.fidelity["seq_len"] == 8
    assert (
        base.fidelity["kl"] == {"value": 0.0, "low": 0.0, "high": 0.0}
        and base.fidelity["top1"]["value"] == 100
    )
    assert record.fidelity["kl"]["value"] > 0
    # The pruned run's original is the baseline model: the same perplexity on the same sequences.
    assert record.fidelity["ppl_original"]["value"] == pytest.approx(base.fidelity["ppl"]["value"], rel=1e-5)
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        other = compose("run", overrides=[*tiny_run, "method.n=2", "fidelity.sequences=4"])
    assert run_keys.run_key(other) != run_keys.run_key(cfg)  # the held-out set decides the record's numbers


def test_a_pair_that_does_not_fit_is_timed_one_after_the_other_and_still_compared_for_fidelity(
    tmp_path, tiny_run, monkeypatch
):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("run", overrides=[*tiny_run, "method.n=2"])
    fitting = run_app.run(cfg, tmp_path / "out")
    monkeypatch.setattr(run_app.timing, "pair_fits", lambda *args: False)
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("run", overrides=[*tiny_run, "method.n=2", f"results_dir={tmp_path / 'apart'}"])
    apart = run_app.run(cfg, tmp_path / "out2")
    assert fitting.speed.extra["alternated"] and not apart.speed.extra["alternated"]
    # The same pruned model against the same original: the pruned one moved to the CPU changes no number.
    assert apart.fidelity["per_seq"]["kl"] == pytest.approx(fitting.fidelity["per_seq"]["kl"], rel=1e-6)
