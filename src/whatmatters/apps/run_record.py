"""The record a run stores: what it measured, under its key, with the versions and weights behind it.

Kept apart from the run's steps (apps.run) so the record's shape is read in one place: the baseline's and a
pruned run's records share their identity fields, and a record that does not parse fails here, before the
store or a table sees it.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from importlib.metadata import version

import lm_eval
import torch
import transformers
from omegaconf import DictConfig, OmegaConf

from whatmatters import data, models
from whatmatters.apps import run_keys
from whatmatters.measure import clock, speed
from whatmatters.method import analysis, quant
from whatmatters.method.drop import DropResult
from whatmatters.records import metrics
from whatmatters.records.store import RunRecord
from whatmatters.report.labels import run_name


def _versions() -> dict:
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "lm_eval": lm_eval.__version__,
        "whatmatters": version("whatmatters"),
        "machine": clock.machine_name("cpu"),  # the host; its bf16 ISA decides CPU bfloat16 rounding
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }


def _identity(cfg: DictConfig, key: str) -> dict:
    """The fields every record carries: its key, model, experiments, creation time, versions, weights."""
    return {
        "key": key,
        "model": cfg.model.name,
        "experiments": [cfg.experiment_name] if cfg.experiment_name else [],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": _versions(),
        "weights": models.fingerprint(cfg.model.name_or_path, cfg.model.get("revision")),  # as in the key
    }


def _quant(cfg: DictConfig, qspec: quant.QuantSpec) -> dict | None:
    return OmegaConf.to_container(cfg.quant, resolve=True) if qspec.enabled else None


def fidelity(cfg: DictConfig, original, pruned, tokenizer) -> dict | None:
    """KL(original || pruned), perplexity and top-1 agreement on held-out text, per sequence and summarized
    with intervals (`fidelity: null` in the config skips it). The baseline is its own original (KL 0)."""
    spec = cfg.get("fidelity")
    if spec is None:
        return None
    ids = data.heldout_ids(tokenizer, spec.sequences, spec.seq_len)
    per_seq = analysis.fidelity(original, pruned, ids, spec.batch_size)
    summary = metrics.fidelity_summary(per_seq, seed=cfg.seed)
    return {"corpus": "wikipedia (held out)", **OmegaConf.to_container(spec), **summary, "per_seq": per_seq}


def baseline_record(cfg: DictConfig, key: str, model, measured: dict, qspec: quant.QuantSpec, start: float):
    """The unpruned model's typed record: `measured` holds its eval, timing, fidelity and the timing job."""
    size = model.num_parameters()
    record = _identity(cfg, key) | dict(
        name=f"{cfg.model.name}-baseline",
        config=run_keys.key_spec(cfg, "model", "eval", "speed"),
        method={"target": "none"},
        mode=None,
        criterion=None,
        dropped=0,
        num_layers=model.config.num_hidden_layers,
        eval=measured["eval"],
        speed=speed.baseline_record(measured["timing"]),
        fidelity=measured["fidelity"],
        sdr=None,
        quant=_quant(cfg, qspec),
        params={"before": size, "after": size} | quant.describe(model, qspec),
        wall_s=round(time.perf_counter() - start, 1),
    )
    if not qspec.has_kernel(measured["job"].device):
        record["speed"] = speed.untimed(record["speed"], qspec, measured["job"].device)
    return RunRecord.from_dict(record)


def _delta_se(base: RunRecord, accuracy: dict) -> float | None:
    """The paired SE of the run's Avg change, which SDR's interval carries (None: records not pairable)."""
    try:
        return metrics.paired_difference(base.eval, accuracy)[1]
    except metrics.UnpairedError:
        return None


def pruned_record(
    cfg: DictConfig,
    key: str,
    base: RunRecord,
    result: DropResult,
    measured: dict,
    qspec: quant.QuantSpec,
    start: float,
) -> RunRecord:
    """The typed record of a finished run, named by `labels.run_name` like every table and figure names it."""
    accuracy, pair, job = measured["eval"], measured["pair"], measured["job"]
    record = _identity(cfg, key) | dict(
        config=OmegaConf.to_container(cfg, resolve=True),
        # The repair and heal specs ride in the method, so tables and figures tell those runs apart.
        method=OmegaConf.to_container(cfg.method, resolve=True)
        | run_keys.repair_part(cfg)
        | run_keys.heal_part(cfg),
        repair=measured["repair"],
        heal=measured["heal"],
        mode=cfg.mode,
        criterion=cfg.criterion,
        dropped=len(result.plan.attn) + len(result.plan.mlp) + len(result.plan.blocks),
        num_layers=result.plan.num_layers,
        plan=result.plan.to_dict(),
        steps=result.steps,
        forward_equivalents=result.forward_equivalents,
        scores={k: getattr(result.scores, k) for k in ("attn", "mlp", "block")},
        eval=accuracy,
        speed=pair.record(measured["profile"], result.plan),
        fidelity=measured["fidelity"],
        baseline_avg=base.eval.avg,
        sdr=metrics.sdr_estimate(
            base.eval.avg, accuracy["avg"], pair.speedups()["generate"], _delta_se(base, accuracy)
        ),
        quant=_quant(cfg, qspec),
        params=measured["params"],
        wall_s=round(time.perf_counter() - start, 1),
    )
    if not qspec.has_kernel(job.device):
        record |= {"speed": speed.untimed(record["speed"], qspec, job.device), "sdr": None}
    parsed = RunRecord.from_dict(record)
    parsed.name = run_name(parsed)
    return parsed
