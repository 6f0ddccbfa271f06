"""Past one machine: the Slurm launcher configs match the paper models' shapes; sweeps through submitit's
local launcher, two sweeps at once on one store, and a SIGTERM'd run, as real processes on the tiny model."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from test_experiment import TINY_RUN

from whatmatters import shapes
from whatmatters.apps import cluster
from whatmatters.records.store import ResultsStore, read_record

ROOT = Path(__file__).parents[1]


def test_the_committed_launcher_configs_are_the_ones_the_model_shapes_give(tmp_path):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("launcher_configs")
    written = cluster.write_launcher_configs(cfg, tmp_path)
    assert [p.name for p in written] == [f"slurm_{m}.yaml" for m in shapes.SHAPES]
    for path in written:
        committed = ROOT / "conf" / "hydra" / "launcher" / path.name
        assert committed.read_text() == path.read_text(), f"{committed} is stale: run make launcher-configs"


def test_a_70b_job_gets_the_fewest_gpus_its_run_fits_and_host_memory_for_a_copy_of_its_weights():
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("launcher_configs")
        launcher = compose("run", overrides=["hydra/launcher=slurm_llama3-70b"], return_hydra_config=True)
    shape = cluster.job_shape("llama3-70b", cfg.speed)
    need = shape["need_gb"] * 1.1  # weights, the paper job's KV cache and activations, plus headroom
    assert (shape["gpus_per_node"] - 1) * 80 < need <= shape["gpus_per_node"] * 80
    assert shape["need_gb"] > 2 * shape["params_b"]  # more than the bfloat16 weights alone
    assert shape["mem_gb"] > 2 * shape["params_b"]
    assert launcher.hydra.launcher.gpus_per_node == shape["gpus_per_node"]
    assert launcher.hydra.launcher._target_.endswith("SlurmLauncher")


@pytest.fixture
def tiny_sweep(tmp_path, tiny_llama_dir) -> list[str]:
    ids = tmp_path / "ids.pt"
    torch.save(torch.randint(0, 128, (2, 16), generator=torch.Generator().manual_seed(0)), ids)
    return [f"model.name_or_path={tiny_llama_dir}", "model.name=tiny-llama", f"data.path={ids}", *TINY_RUN]


def _sweep(args: list[str], results: Path, sweep_dir: Path) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "experiments/run.py",
        *args,
        f"results_dir={results}",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen) -> str:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    return out


def _leftovers(results: Path) -> list[str]:
    """Claim files, temporary files and stale-claim tombs anywhere in the store."""
    return [
        p.name for p in results.rglob("*") if p.is_file() and (p.name.startswith(".") or "claim" in p.name)
    ]


@pytest.mark.slow
def test_a_submitit_local_sweep_writes_the_same_three_records_as_the_basic_launcher(tmp_path, tiny_sweep):
    sweep = ["-m", "method.n=1,2,3", *tiny_sweep]
    local = _sweep([*sweep, "hydra/launcher=submitit_local"], tmp_path / "local", tmp_path / "ml")
    _finish(local)  # three jobs at once, each its own process: they share the baseline and the scores
    _finish(_sweep(sweep, tmp_path / "basic", tmp_path / "mb"))
    keys = {name: sorted(p.stem for p in (tmp_path / name).glob("*.json")) for name in ("local", "basic")}
    assert keys["local"] == keys["basic"] and len(keys["local"]) == 4  # 3 runs + their baseline
    assert sorted(r.dropped for r in ResultsStore(tmp_path / "local").records()) == [0, 1, 2, 3]
    jobs = [p for p in (tmp_path / "ml" / ".submitit").iterdir() if p.name.isdigit()]
    assert len(jobs) == 3  # each run a job (a process) of its own
    assert not _leftovers(tmp_path / "local")


@pytest.mark.slow
def test_two_sweeps_at_once_on_one_store_compute_every_key_once(tmp_path, tiny_sweep):
    results = tmp_path / "results"
    a = _sweep(["-m", "method.n=1,2,3", *tiny_sweep], results, tmp_path / "a")
    b = _sweep(["-m", "method.n=3,2,1", *tiny_sweep], results, tmp_path / "b")  # same keys, other order
    log = _finish(a) + _finish(b)
    records = [read_record(p) for p in sorted(results.glob("*.json"))]  # every file whole
    assert sorted(r.dropped for r in records) == [0, 1, 2, 3]
    runs = [r.key for r in records if r.dropped]
    assert all(log.count(f"[run] {key}") == 1 for key in runs), log  # each computed once, by one sweep
    assert log.count("[baseline]") == 1 and log.count("[scores]") == 1, log
    assert sum(log.count(f"[{word}] {key}") for key in runs for word in ("skip", "busy")) == 3
    assert len(list((results / "scores").glob("*.json"))) == 1
    assert not _leftovers(results)


@pytest.mark.slow
def test_sigterm_stops_a_run_cleanly_and_a_rerun_resumes_it(tmp_path, tiny_sweep):
    results = tmp_path / "results"
    args = [*tiny_sweep, "method.n=2", f"hydra.run.dir={tmp_path / 'out'}"]
    proc = _sweep(args, results, tmp_path / "m")
    lines = []
    for line in proc.stdout:  # SIGTERM once the run holds its key and is measuring the baseline
        lines.append(line)
        if line.startswith("[baseline]"):
            proc.send_signal(signal.SIGTERM)
            break
    out = "".join(lines) + proc.communicate(timeout=120)[0]
    assert proc.returncode == 128 + signal.SIGTERM, out[-3000:]
    assert "[stop] SIGTERM" in out
    assert not list(results.glob("*.json")) and not _leftovers(results)  # nothing partial, no claim left
    again = _finish(_sweep(args, results, tmp_path / "m2"))
    assert "[run]" in again and "[baseline]" in again  # resumed from the start of that key
    assert sorted(r.dropped for r in ResultsStore(results).records()) == [0, 2]
    assert not _leftovers(results)
