"""Keys that cannot collide: a stored record or cached score is reused only for exactly the same inputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from whatmatters.apps import run_keys

ROOT = Path(__file__).parents[1]


@pytest.fixture
def base(tmp_path, tiny_llama_dir) -> list[str]:
    return [
        f"model.name_or_path={tiny_llama_dir}",
        "model.name=tiny-llama",
        "eval.suite=[wm_cloze]",
        "device=cpu",
        "method.n=2",
        f"results_dir={tmp_path / 'results'}",
    ]


def cfg(base: list[str], *extra: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("run", overrides=[*base, *extra])


def test_score_cache_key_covers_the_angular_setting_of_span_runs(base):
    plain = run_keys.scores_key(cfg(base, "method=block"))
    span = run_keys.scores_key(cfg(base, "method=block", "method.consecutive=true"))
    last = run_keys.scores_key(
        cfg(base, "method=block", "method.consecutive=true", "method.angular=last_token")
    )
    assert len({plain, span, last}) == 3
    # Without a span the angular setting computes nothing, so it must not split the cache.
    assert run_keys.scores_key(cfg(base, "method.angular=last_token")) == run_keys.scores_key(cfg(base))


def test_score_cache_key_covers_the_scoring_batch_size(base):
    assert run_keys.scores_key(cfg(base, "batch_size=4")) != run_keys.scores_key(cfg(base))


@pytest.mark.parametrize(
    "change",
    [
        ["model.dtype=bfloat16"],
        ["model.revision=step-1000"],
        ["model.device_map=auto"],
        ["eval.limit=10"],
        ["eval.suite=[wm_nextsent]"],
        ["method.angular=last_token", "method=block", "method.consecutive=true"],
        ["batch_size=2"],
    ],
)
def test_run_and_baseline_keys_change_with_what_changes_the_numbers(base, change):
    before, after = cfg(base), cfg(base, *change)
    assert run_keys.run_key(after) != run_keys.run_key(before)
    if not any(c.startswith(("method", "batch_size")) for c in change):
        assert run_keys.baseline_key(after) != run_keys.baseline_key(before)


def test_run_key_covers_the_device_type(base, monkeypatch):
    cpu = run_keys.run_key(cfg(base))
    monkeypatch.setattr("whatmatters.models.device_for", lambda name: "cuda")
    assert run_keys.run_key(cfg(base)) != cpu


def test_run_key_covers_the_package_version(base, monkeypatch):
    now = run_keys.run_key(cfg(base))
    monkeypatch.setattr(run_keys, "version", lambda name: "9.9.9")
    assert run_keys.run_key(cfg(base)) != now


def test_run_key_covers_the_weights_at_the_same_path(base, tiny_llama_dir):
    before = run_keys.run_key(cfg(base))
    config = json.loads((tiny_llama_dir / "config.json").read_text())
    (tiny_llama_dir / "config.json").write_text(json.dumps(config | {"rms_norm_eps": 1e-3}))
    changed_config = run_keys.run_key(cfg(base))
    with (tiny_llama_dir / "model.safetensors").open("ab") as f:
        f.write(b"\0" * 8)  # other weights of another size: a re-saved or swapped checkpoint
    assert len({before, changed_config, run_keys.run_key(cfg(base))}) == 3


def test_the_keys_record_what_they_cover(base):
    spec = run_keys.key_spec(cfg(base), "model", "data", "eval")
    assert spec["device_type"] == "cpu" and spec["version"]
    assert set(spec["weights"]) >= {"path", "config_sha256", "weights"}
    assert spec["eval_tasks"][0]["name"] == "wm_cloze" and "shots" in spec["eval_tasks"][0]


def test_repair_enters_the_run_key_only_when_on_and_a_heal_run_starts_from_the_repaired_model(base):
    plain = cfg(base)
    assert run_keys.run_key(cfg(base, "repair=none")) == run_keys.run_key(plain)  # stored runs keep keys
    linear, magnitude = cfg(base, "repair=linear"), cfg(base, "repair=magnitude")
    ridge = cfg(base, "repair=linear", "repair.ridge=0.1")
    assert len({run_keys.run_key(c) for c in (plain, linear, magnitude, ridge)}) == 4
    # magnitude uses no ridge, so a ridge value does not split its key
    assert run_keys.run_key(cfg(base, "repair=magnitude", "+repair.ridge=0.1")) == run_keys.run_key(magnitude)
    healed = cfg(base, "repair=linear", "heal=last_layers")
    assert run_keys.unhealed_key(healed) == run_keys.run_key(linear)
    assert run_keys.run_key(cfg(base, "heal=last_layers")) != run_keys.run_key(cfg(base, "heal=lora"))
