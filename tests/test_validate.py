"""Bad input fails before any model loads, in seconds, naming the field, the value, the range and the fix."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from whatmatters.apps import drop as drop_app
from whatmatters.apps import run as run_app
from whatmatters.apps import score as score_app
from whatmatters.apps import validate
from whatmatters.apps.validate import ConfigError
from whatmatters.shapes import mistral_7b

ROOT = Path(__file__).parents[1]


@pytest.fixture
def tiny(tmp_path, tiny_llama_dir) -> list[str]:
    """Overrides for the tiny 4-layer Llama (context 256) and an [4, 16] token file."""
    ids = tmp_path / "ids.pt"
    torch.save(torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0)), ids)
    return [
        f"model.name_or_path={tiny_llama_dir}",
        "model.name=tiny-llama",
        "data=tokens",
        f"data.path={ids}",
        "data.n=4",
        "data.seq_len=16",
        "eval.suite=[wm_cloze]",
        "device=cpu",
        "wandb.mode=disabled",
        f"results_dir={tmp_path / 'results'}",
    ]


@pytest.fixture
def no_load(monkeypatch) -> list:
    """Records any attempt to load model weights; the checks must fail before one."""
    loaded: list = []
    monkeypatch.setattr("whatmatters.models.load", lambda *a, **k: loaded.append(a))
    return loaded


RUN_ONLY = ("eval", "wandb", "results_dir")  # groups and keys that only conf/run.yaml has


def config(app: str, overrides: list[str]):
    if app != "run":
        overrides = [o for o in overrides if not o.startswith(RUN_ONLY)]
    if app != "score":
        overrides = ["method.n=2", *overrides]  # the default 8 does not fit the 4-layer model
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(app, overrides=overrides)


APP = {"run": run_app.run, "drop": drop_app.drop, "score": score_app.score}


@pytest.mark.parametrize(
    ("app", "bad", "message"),
    [
        (
            "run",
            ["method.n=null", "method.ratio=1.5"],
            r"method.ratio=1.5 is not valid: a fraction in \(0, 1\]",
        ),
        ("run", ["method.n=31"], r"method.n=31 is not valid: 1..4 for attn .*Fix: method.n=4"),
        ("drop", ["method=block", "method.n=4"], r"method.n=4 is not valid: 1..3 for block"),
        ("run", ["method=joint", "method.n=9"], r"method.n=9 is not valid: 1..8 for joint"),
        ("run", ["data.n=-1"], r"data.n=-1 is not valid: a whole number >= 1"),
        ("run", ["data.seq_len=100000"], r"data.seq_len=100000 is not valid: 1..256 \(the model's context"),
        ("run", ["method.n=0"], r"method.n=0 is not valid: 1..4: n=0 drops nothing. The unpruned baseline"),
        ("run", ["criterion=entropy"], r"criterion='entropy' is not valid: one of \['cosine'"),
        ("run", ["method.target=heads"], r"method.target='heads' is not valid: one of \('block'"),
        ("run", ["mode=greedy"], r"mode='greedy' is not valid: one of \('one_shot', 'iterative'\)"),
        ("run", ["method.consecutive=true"], r"method.consecutive=True is not valid: false for target attn"),
        (
            "run",
            ["method=block", "method.consecutive=true", "method.angular=first"],
            r"method.angular='first'",
        ),
        ("run", ["method=mlp", "method.remove_residual=true"], r"method.remove_residual=True .* false for"),
        ("run", ["method.ratio=0.5"], r"method.n=2 is not valid: exactly one of method.n and method.ratio"),
        ("run", ["data.n=5"], r"data.n=5, data.seq_len=16.*has 4 rows"),
        ("run", ["speed.dtype=bfloat16"], r"speed.dtype='bfloat16' is not valid: the model's dtype"),
        (
            "drop",
            ["mode=iterative", "scores_path=x.json"],
            r"scores_path='x.json' is not valid: null in iterative",
        ),
        (
            "drop",
            ["scores_path=missing.json"],
            r"scores_path='missing.json' is not valid: an existing scores.json",
        ),
        ("score", ["angular=first"], r"angular='first' is not valid: one of \('mean', 'last_token'\)"),
        ("score", ["batch_size=0"], r"batch_size=0 is not valid: a whole number >= 1"),
        ("score", ["device=tpu"], r"device='tpu' is not valid: auto, cpu, mps, cuda or cuda:N"),
        ("run", ["device=cuda:7"], r"device='cuda:7' is not valid: (a GPU index below|cpu or auto: this)"),
        ("run", ["batch_size=0"], r"batch_size=0 is not valid: a whole number >= 1"),
        ("run", ["model.dtype=float8"], r"model.dtype='float8' is not valid: one of \['bfloat16'"),
        (
            "run",
            ["speed.repeats=0"],
            r"speed.repeats=0 is not valid: a whole number >= 1.*Fix: speed.repeats=1",
        ),
        ("run", ["speed.new_tokens=0"], r"speed.new_tokens=0 is not valid: a whole number >= 1"),
        ("run", ["speed.blocks=0"], r"speed.blocks=0 is not valid: a whole number >= 1.*Fix: speed.blocks=1"),
        ("run", ["speed.prompt_len=-8"], r"speed.prompt_len=-8 is not valid: a whole number >= 1"),
        ("run", ["speed.batch_size=1.5"], r"speed.batch_size=1.5 is not valid: a whole number >= 1"),
        (
            "run",
            ["speed.warmup=-1"],
            r"speed.warmup=-1 is not valid: a whole number >= 0.*Fix: speed.warmup=1",
        ),
        (
            "run",
            ["results_dir=/proc/x/results"],
            r"results_dir='/proc/x/results' is not valid: a folder this process can write \(/proc refuses",
        ),
        ("run", ["heal=lora", "heal.steps=0"], r"heal.steps=0 is not valid: a whole number >= 1"),
    ],
)
def test_bad_input_fails_before_loading_and_writes_nothing(app, bad, message, tiny, no_load, tmp_path):
    cfg = config(app, [*tiny, *bad])
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=message) as err:
        APP[app](cfg, tmp_path / "out")
    assert time.perf_counter() - start < 15
    assert "Fix: " in str(err.value)  # field=value (matched above), the valid range, and the fix
    assert not no_load
    assert not (tmp_path / "out").exists() and not (tmp_path / "results").exists()


def test_a_results_dir_that_is_a_file_fails_naming_it(tiny, no_load, tmp_path):
    (tmp_path / "taken").write_text("not a folder")
    with pytest.raises(
        ConfigError, match=r"results_dir='.*taken/results' is not valid: a folder path \(.*taken is a"
    ):
        run_app.run(config("run", [*tiny, f"results_dir={tmp_path / 'taken' / 'results'}"]), tmp_path / "out")
    assert not no_load


@pytest.fixture
def submitit_job(monkeypatch):
    """A run config as a submitit job sees it: Hydra's runtime config (with its launcher) set, offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    instance = HydraConfig.instance()
    saved = instance.cfg

    def as_job(*overrides: str):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("run", overrides=list(overrides), return_hydra_config=True)
        instance.set_config(cfg)
        with open_dict(cfg):
            del cfg["hydra"]
        return cfg

    yield as_job
    instance.cfg = saved


@pytest.mark.parametrize(
    ("launcher", "bad", "message"),
    [
        (
            "slurm_llama3-70b",
            "hydra.launcher.mem_gb=64",
            r"hydra.launcher.mem_gb=64 is not valid: >= 142 GB, a copy of llama3-70b's bfloat16 weights. "
            r"Fix: hydra/launcher=slurm_llama3-70b .* or hydra.launcher.mem_gb=174",
        ),
        (
            "submitit_local",
            "hydra.launcher.timeout_min=0",
            r"hydra.launcher.timeout_min=0 is not valid: a whole",
        ),
    ],
)
def test_a_submitit_job_too_small_for_its_model_fails_before_loading(
    launcher, bad, message, submitit_job, no_load, tmp_path
):
    cfg = submitit_job("model=llama3-70b", f"hydra/launcher={launcher}", bad, f"results_dir={tmp_path}")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=message):
        run_app.run(cfg, tmp_path / "out")
    assert time.perf_counter() - start < 15
    assert not no_load


def test_the_model_s_own_launcher_config_passes_the_launcher_check(submitit_job, tmp_path):
    cfg = submitit_job("model=llama3-70b", "hydra/launcher=slurm_llama3-70b", f"results_dir={tmp_path}")
    assert validate.check(cfg, "run").num_layers == 80


def test_an_unknown_eval_task_fails_before_loading(tiny, no_load, tmp_path):
    from whatmatters.eval.evaluate import EvalError

    with pytest.raises(EvalError, match="nope"):
        run_app.run(config("run", [*tiny, "eval.suite=[nope]"]), tmp_path / "out")
    assert not no_load


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_asking_for_a_gpu_on_a_machine_without_one_fails_naming_the_fix(tiny, no_load, tmp_path):
    with pytest.raises(
        ConfigError, match="device='cuda' is not valid: cpu or auto: this machine has no CUDA"
    ):
        score_app.score(config("score", [*tiny, "device=cuda"]), tmp_path / "out")


def test_a_calibration_set_larger_than_the_corpus_fails_with_its_size(tiny, no_load, tmp_path):
    lee = [o for o in tiny if not o.startswith(("data=", "data.path"))] + ["data=lee", "data.n=20000"]
    lee = [o for o in lee if o != "data.n=4"]
    with pytest.raises(ConfigError, match=r"data.n=20000, data.seq_len=16, data.source='lee'.*tokens but"):
        score_app.score(config("score", lee), tmp_path / "out")


def test_the_iterative_cache_is_sized_before_scoring(tiny, no_load, tmp_path, monkeypatch):
    class Small:
        available = 1000  # bytes: far less than 4 layers x 4 x 16 tokens x 32 dims x 4 bytes = 32 KiB

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Small)
    with pytest.raises(ConfigError, match=r"data.n=4 is not valid: at most 0 samples .* needs 0.0 GiB"):
        run_app.run(config("run", [*tiny, "mode=iterative"]), tmp_path / "out")


def test_the_cache_estimate_matches_the_issue_figure_for_mistral_7b():
    # 32 layers x 128 x 2048 tokens x 4096 dims x 2 bytes (bf16) = 68.7 GB, the issue's ~69 GB.
    assert validate.stream_cache_bytes(mistral_7b(), 128, 2048, "bfloat16") == pytest.approx(68.7e9, rel=1e-3)


def test_a_paper_model_is_checked_offline_from_its_known_shape(no_load, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = config("run", ["model=llama3-70b", "method.n=81", f"results_dir={tmp_path}", "wandb.mode=disabled"])
    with pytest.raises(ConfigError, match="method.n=81 is not valid: 1..80"):
        run_app.run(cfg, tmp_path / "out")


def test_a_good_config_passes_and_reports_what_it_will_drop(tiny):
    checked = validate.check(
        config("run", [*tiny, "method=joint", "method.n=null", "method.ratio=0.25"]), "run"
    )
    assert checked == validate.Checked(num_layers=4, count=2)


@pytest.mark.slow
def test_the_cli_rejects_a_bad_ratio_within_15_seconds(tiny, tmp_path):
    cmd = [sys.executable, "experiments/run.py", *tiny, "method.n=null", "method.ratio=1.5"]
    cmd.append(f"hydra.run.dir={tmp_path / 'hydra'}")
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env=os.environ)
    elapsed = time.perf_counter() - start
    assert out.returncode != 0
    assert "method.ratio=1.5 is not valid: a fraction in (0, 1]" in out.stderr + out.stdout
    assert "Fix: method.ratio=0.25" in out.stderr + out.stdout
    assert elapsed < 15, elapsed
    assert not (tmp_path / "results").exists()
