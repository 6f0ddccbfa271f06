"""The export app (experiments/export.py): a pruned model -> a GGUF file for llama.cpp and a `nemotron-nas`
folder for vLLM / SGLang / TensorRT-LLM.

The pruned model comes from one of three sources, told apart by `source`:
* a plan label (`attn-8`, `joint-0.25`; `method.plans.parse_label`): score `model` on `data` with `criterion`
  and drop one-shot, as the drop app does;
* a folder written by the drop app (`outputs/drop/.../model`): the pruned model as saved;
* a run record key of the results store (`results/<key>.json`): the record's model cut to its plan.
Every option is checked before a model loads.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from omegaconf import DictConfig
from transformers import AutoConfig, PreTrainedModel, PreTrainedTokenizerBase

from whatmatters import data, models
from whatmatters.apps.config_checks import check_common, check_data, fail
from whatmatters.export import gguf_export, nemotron
from whatmatters.export.layers import LLAMA_FAMILY, ExportError, export_layers, model_plan
from whatmatters.files import atomic_write_text
from whatmatters.method.drop import one_shot_drop
from whatmatters.method.plans import AmountError, MethodSpec, Plan, drop_count, parse_label, target_kinds
from whatmatters.method.scores import compute_scores
from whatmatters.method.surgery import PREFIX, apply_plan
from whatmatters.records.store import ResultsStore, RunRecord

FORMATS = ("gguf", "nemotron")
NEMOTRON_DTYPES = ("float32", "bfloat16", "float16")


def source_kind(source: str) -> str:
    """`label`, `folder` or `record`: what `source` names (a label wins over a folder of the same name)."""
    try:
        parse_label(source)
        return "label"
    except ValueError:
        return "folder" if ("/" in source or Path(source).exists()) else "record"


def check(cfg: DictConfig) -> str:
    """Every option, before any model loads; returns the source kind. Raises ConfigError (field, value,
    valid range, fix)."""
    check_common(cfg)
    formats = list(cfg.formats)
    if not formats or not set(formats) <= set(FORMATS):
        fail("formats", formats, f"a non-empty list from {FORMATS}", "formats=[gguf,nemotron]")
    if cfg.gguf.dtype not in gguf_export.DTYPES:
        fail("gguf.dtype", cfg.gguf.dtype, f"one of {gguf_export.DTYPES}", "gguf.dtype=f16")
    if "gguf" in formats and cfg.gguf.dtype in gguf_export.QUANTIZED:
        try:
            from whatmatters.export import llamacpp

            llamacpp.require()
        except ImportError:
            fail(
                "gguf.dtype",
                cfg.gguf.dtype,
                f"f32, f16 or bf16 without llama.cpp's binding ({cfg.gguf.dtype} uses its quantizer)",
                "run `make setup-serve`, or gguf.dtype=f16",
            )
    if not isinstance(cfg.gguf.tokenizer_pre, str) or not cfg.gguf.tokenizer_pre:
        fail(
            "gguf.tokenizer_pre",
            cfg.gguf.tokenizer_pre,
            "llama.cpp's pre-tokenizer name for this tokenizer",
            "gguf.tokenizer_pre=smollm (SmolLM2), llama-bpe (Llama-3)",
        )
    if cfg.nemotron.dtype not in NEMOTRON_DTYPES:
        fail("nemotron.dtype", cfg.nemotron.dtype, f"one of {NEMOTRON_DTYPES}", "nemotron.dtype=bfloat16")
    kind = source_kind(str(cfg.source))
    if kind == "label":
        config = models.model_config(cfg.model.name_or_path, cfg.model.get("revision"), shape=cfg.model.name)
        check_data(cfg, config)
        target, n, ratio = parse_label(cfg.source)
        try:
            drop_count(target, None if config is None else config.num_hidden_layers, n, ratio)
        except AmountError as err:
            fail("source", cfg.source, str(err), "a label such as attn-8 (see conf/export.yaml)")
    elif kind == "folder":
        if not (Path(cfg.source) / "config.json").is_file():
            fail(
                "source",
                cfg.source,
                "a plan label (attn-8), a saved model folder with config.json, or a run record key",
                "give the `model` folder the drop app wrote (outputs/drop/.../model)",
            )
        config = AutoConfig.from_pretrained(cfg.source)
    else:
        record = _record(cfg)
        config = models.model_config(record.config["model"]["name_or_path"])
    plan = record.plan if kind == "record" else getattr(config, "drop_plan", None)
    if config is not None:
        _check_config(cfg, config, plan)
    return kind


def _check_config(cfg: DictConfig, config, plan: dict | None) -> None:
    """What the model's config.json and a known plan (saved or recorded) already rule out, before loading."""
    model_type = config.model_type.removeprefix(PREFIX)
    if model_type not in LLAMA_FAMILY:
        fail(
            "source",
            cfg.source,
            f"a Llama-family model ({LLAMA_FAMILY}); this one is {model_type!r}",
            "export a Llama-family model",
        )
    if "nemotron" in cfg.formats:
        try:
            nemotron.ffn_mult(config.intermediate_size, config.hidden_size)
        except ExportError as err:
            fail("formats", list(cfg.formats), str(err), "formats=[gguf]")
    if plan is not None:
        try:
            layers = export_layers(Plan.from_dict(plan))
        except ExportError as err:
            fail("source", cfg.source, str(err), "export another pruned model")
        if "nemotron" in cfg.formats and not layers[0].attn:
            fail(
                "formats",
                list(cfg.formats),
                f"without nemotron for a plan that drops the first written layer's attention (layer "
                f"{layers[0].source}; vLLM cannot run an MLP before any attention)",
                "formats=[gguf]",
            )


def _record(cfg: DictConfig) -> RunRecord:
    record = ResultsStore(cfg.results_dir).get(str(cfg.source))
    if record is None:
        fail(
            "source",
            cfg.source,
            f"a plan label (attn-8), a saved model folder, or a key of a record in {cfg.results_dir}/",
            "use a label, a folder, or a key listed in results_dir",
        )
    if record.plan is None:
        fail("source", cfg.source, "a record with a plan (this one is a baseline)", "pick a pruned run's key")
    healed = (record.config.get("heal") or {}).get("enabled")
    quant = (record.config.get("quant") or {}).get("scheme", "none")
    if healed or quant != "none":
        fail(
            "source",
            cfg.source,
            f"a record of an unhealed, unquantized run (this one: heal {bool(healed)}, quant {quant}); its "
            "weights are not in the store",
            "export the folder the drop app saved for it, or an unhealed run's key",
        )
    return record


def pruned_model(cfg: DictConfig, kind: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """The pruned model the source names, float32 on CPU: exported weights are converted from it."""
    if kind == "folder":
        return models.load(cfg.source, "float32", "cpu")
    if kind == "record":
        record = _record(cfg)
        model_cfg = record.config["model"]
        model, tokenizer = models.load(
            model_cfg["name_or_path"], "float32", "cpu", revision=model_cfg.get("revision")
        )
        return apply_plan(model, Plan.from_dict(record.plan)), tokenizer
    model, tokenizer = models.load(
        cfg.model.name_or_path, "float32", "cpu", revision=cfg.model.get("revision")
    )
    target, n, ratio = parse_label(cfg.source)
    d = cfg.data
    ids = data.calibration_ids(tokenizer, d.source, d.n, d.seq_len, d.path)
    scores = compute_scores(
        model,
        ids,
        batch_size=cfg.batch_size,
        criterion=cfg.criterion,
        seed=cfg.seed,
        kinds=target_kinds(target),
    )
    one_shot_drop(model, scores, MethodSpec(target, n, ratio))
    return model, tokenizer


def export(cfg: DictConfig, out_dir: Path) -> dict:
    """Check, build the pruned model, write each format into `out_dir`; returns the summary (summary.json)."""
    start = time.perf_counter()
    kind = check(cfg)
    model, tokenizer = pruned_model(cfg, kind)
    formats = list(cfg.formats)
    # Both layouts before either file: a plan one format refuses writes nothing.
    shape, _ = gguf_export.layout(model)
    if "nemotron" in formats:
        nemotron.block_configs(model)
    name = f"{cfg.model.name if kind == 'label' else Path(str(cfg.source)).name} {cfg.source}"
    out: dict = {"source": str(cfg.source), "source_kind": kind, "plan": model_plan(model).to_dict()}
    if "gguf" in formats:
        path = out_dir / f"model-{cfg.gguf.dtype}.gguf"
        gguf_export.write_gguf(model, tokenizer, path, cfg.gguf.dtype, cfg.gguf.tokenizer_pre, name)
        out["gguf"] = {
            "path": str(path),
            "arch": shape.arch,
            "layers": len(shape.head_count),
            "dummy_first_layer": shape.dummy_first,
            "head_count_kv": shape.head_count_kv,
            "feed_forward_length": shape.feed_forward_length,
            # KV heads kept over the original's: the KV cache ratio llama.cpp allocates (flash attention on).
            "kv_ratio": sum(shape.head_count_kv)
            / (model_plan(model).num_layers * model.config.num_key_value_heads),
            "bytes": path.stat().st_size,
        }
    if "nemotron" in formats:
        folder = out_dir / "nemotron-nas"
        configs = nemotron.write_nemotron(model, tokenizer, folder, cfg.nemotron.dtype)
        out["nemotron"] = {"path": str(folder), "layers": len(configs)}
    out["wall_s"] = round(time.perf_counter() - start, 1)
    atomic_write_text(out_dir / "summary.json", json.dumps(out, indent=1))
    return out


def export_summary(out: dict) -> str:
    """One screen: what was dropped and what each format became."""
    plan = out["plan"]
    lines = [
        f"{out['source']} ({out['source_kind']}): attention dropped {plan['attn']}, "
        f"MLP dropped {plan['mlp']}, blocks dropped {plan['blocks']}"
    ]
    if "gguf" in out:
        g = out["gguf"]
        extra = ", a dummy first layer (layer-0 attention dropped)" if g["dummy_first_layer"] else ""
        lines.append(
            f"  GGUF {g['arch']}, {g['layers']} layers{extra}, KV cache {g['kv_ratio']:.4f} of the original, "
            f"{g['bytes'] / 2**20:.0f} MiB: {g['path']}"
        )
    if "nemotron" in out:
        n = out["nemotron"]
        lines.append(
            f"  nemotron-nas folder, {n['layers']} layers (load with trust_remote_code=True): {n['path']}"
        )
    return "\n".join(lines)
