"""Healing: LoRA lowers the calibration loss, and the merged model reloads exactly, still pruned."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from test_experiment import tiny_run  # noqa: F401  (the fixture: a tiny model, data, eval and speed job)
from transformers import AutoModelForCausalLM

import whatmatters.method.surgery  # noqa: F401  (registers the pruned classes with the Auto classes)
from conftest import tiny_model
from whatmatters.apps import run as run_app
from whatmatters.apps import run_keys, validate
from whatmatters.apps.validate import ConfigError
from whatmatters.method.heal import HealSpec, heal
from whatmatters.method.plans import Plan
from whatmatters.method.surgery import DroppedAttention, DroppedMLP, apply_plan

ROOT = Path(__file__).parents[1]


def test_healed_pruned_model_reloads_with_identical_logits_and_stays_pruned(tmp_path):
    model = apply_plan(tiny_model("llama"), Plan(4, attn=[1, 2], mlp=[3], blocks=[0]))
    params = model.num_parameters()
    ids = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    spec = HealSpec(enabled=True, rank=4, steps=30, lr=3e-3, n=4, seq_len=16)
    out = heal(model, ids, spec, progress=False)
    assert out["loss_after"] < out["loss_before"]  # LoRA fits the calibration text
    assert out["lora_params"] > 0 and model.num_parameters() == params  # merged: no adapter weights left
    assert not any("lora" in name for name, _ in model.named_parameters())
    model.save_pretrained(tmp_path / "healed")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "healed", attn_implementation="eager").eval()
    assert reloaded.config.drop_plan["attn"] == [1, 2] and reloaded.config.drop_plan["blocks"] == [0]
    layers = reloaded.model.layers  # blocks 1, 2, 3 of the original
    assert isinstance(layers[0].self_attn, DroppedAttention) and isinstance(
        layers[1].self_attn, DroppedAttention
    )
    assert isinstance(layers[2].mlp, DroppedMLP) and reloaded.num_parameters() == params
    with torch.no_grad():
        assert torch.equal(model(ids).logits, reloaded(ids).logits)


def test_a_healed_run_records_accuracy_before_and_after_and_its_own_key(tmp_path, tiny_run):  # noqa: F811
    heal_args = ["heal=lora", "heal.steps=3", "heal.n=2", "heal.seq_len=16", "heal.rank=2"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        plain = compose("run", overrides=[*tiny_run, "method.n=2"])
        healed = compose("run", overrides=[*tiny_run, "method.n=2", *heal_args])
        bad = compose("run", overrides=[*tiny_run, "method.n=2", *heal_args, "heal.rank=0"])
    assert run_keys.run_key(plain) != run_keys.run_key(healed)
    with pytest.raises(ConfigError, match=r"heal.rank=0 is not valid"):
        validate.check(bad, "run")
    record = run_app.run(healed, tmp_path / "out")
    info = record.extra["heal"]
    assert info["eval_before"]["tasks"].keys() == record.eval.tasks.keys()
    assert len(info["train_losses"]) == 3 and info["loss_after"] < info["loss_before"]
    assert record.name.endswith("healed") and record.method.extra["heal"]["rank"] == 2
    assert record.plan["attn"] and record.params["after"] < record.params["before"]  # healing kept the cut


def test_a_heal_run_after_its_unhealed_run_takes_the_before_accuracy_from_that_record(tmp_path, tiny_run):  # noqa: F811
    heal_args = ["heal=lora", "heal.steps=2", "heal.n=2", "heal.seq_len=16", "heal.rank=2"]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        plain = compose("run", overrides=[*tiny_run, "method.n=2"])
        healed = compose("run", overrides=[*tiny_run, "method.n=2", *heal_args])
    assert run_keys.unhealed_key(healed) == run_keys.run_key(plain)
    unhealed = run_app.run(plain, tmp_path / "plain")
    info = run_app.run(healed, tmp_path / "healed").extra["heal"]
    assert info["eval_before_record"] == unhealed.key
    assert info["eval_before"] == unhealed.to_dict()["eval"]  # the same model's numbers, not evaluated again


@pytest.mark.parametrize("tied", [False, True])
def test_last_layers_heal_changes_only_the_last_kept_layers_and_lm_head(tied):
    """heal=last_layers: the last `layers` kept decoder layers and lm_head train, nothing else moves (a tied
    lm_head is the input embedding, so that one matrix moves too, and the record says so)."""
    model = apply_plan(tiny_model("llama", tie_word_embeddings=tied), Plan(4, blocks=[3], attn=[1]))
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    ids = torch.randint(0, 128, (4, 16), generator=torch.Generator().manual_seed(0))
    spec = HealSpec(enabled=True, kind="last_layers", layers=2, steps=5, lr=1e-2, n=4, seq_len=16)
    out = heal(model, ids, spec, progress=False)
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    prefixes = ("model.layers.1.", "model.layers.2.", "lm_head.", *(("model.embed_tokens.",) if tied else ()))
    assert changed == {name for name in before if name.startswith(prefixes)}
    assert out["trained_layers"] == [1, 2]  # the original layer numbers: block 3 is gone
    assert out["tied_head"] is tied
    assert out["loss_after"] < out["loss_before"]


def test_last_layers_heal_keys_differ_from_lora_and_lora_keys_are_unchanged():
    lora = HealSpec(enabled=True)
    assert "kind" not in lora.to_dict() and "layers" not in lora.to_dict()  # stored LoRA runs keep their keys
    last = HealSpec(enabled=True, kind="last_layers").to_dict()
    assert last["kind"] == "last_layers" and "rank" not in last and "target_modules" not in last
