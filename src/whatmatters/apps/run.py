"""One experiment run (experiments/run.py): score, plan, drop, evaluate, time, record, log.

Every run is keyed by a hash of the config that determines its numbers. A finished key is skipped,
so re-running a sweep costs seconds and a killed sweep resumes where it stopped. The unpruned
baseline of a (model, eval suite, speed job) is one record of its own, computed once and reused
by every run for its SDR; one-shot scores of a (model, data, criterion) are cached likewise.
Many workers can share one store: a run claims its key first and skips a key another live worker holds;
the baseline and the score cache are computed by one worker while the others wait (records.claims).
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path

from omegaconf import DictConfig

from whatmatters import data
from whatmatters.apps import run_keys, tracking, validate
from whatmatters.apps.common import (
    apply_cell,
    apply_method,
    load_model,
    load_with_data,
    method_scores,
    save_scores,
    with_experiment_name,
)
from whatmatters.apps.preempt import stop_on_sigterm
from whatmatters.apps.run_record import baseline_record, fidelity, pruned_record
from whatmatters.eval import evaluate
from whatmatters.measure import budget, memory, speed, timing
from whatmatters.measure.job import Job, job_for_quant, job_from_config
from whatmatters.method import heal, quant, repair
from whatmatters.method.drop import DropResult
from whatmatters.method.plans import Plan
from whatmatters.method.scores import Scores
from whatmatters.method.surgery import apply_plan
from whatmatters.records import claims
from whatmatters.records.store import ResultsStore, RunRecord


def baseline(cfg: DictConfig, store: ResultsStore, out_dir: Path) -> RunRecord:
    """The unpruned model's record for this (model, suite, job): read from the store, or measured once."""
    key = run_keys.baseline_key(cfg)
    if (stored := store.get(key)) is not None:
        return stored
    with store.hold(key):  # one worker measures it; the others wait, then read it
        if (stored := store.get(key)) is not None:
            return stored
        return _measure_baseline(cfg, store, key, out_dir)


def _measure_baseline(cfg: DictConfig, store: ResultsStore, key: str, out_dir: Path) -> RunRecord:
    """Evaluate and time the unpruned model, and store its record under `key` (held by this worker)."""
    print(f"[baseline] {key}: measuring the unpruned model", flush=True)
    start = time.perf_counter()
    model, tokenizer = load_model(cfg)
    qspec = quant.QuantSpec.from_config(cfg)
    quant.quantize(model, qspec)
    job = job_for_quant(job_from_config(cfg.speed, str(model.device), cfg.seed), qspec)
    measured: dict = {"job": job, "timing": timing.measure(model, job, "none")}
    measured["eval"] = evaluate.run_suite(model, tokenizer, cfg.eval, seed=cfg.seed).to_dict()
    measured["fidelity"] = fidelity(cfg, model, model, tokenizer)
    record = baseline_record(cfg, key, model, measured, qspec, start)
    store.put(record)
    tracking.log_run(record, cfg.wandb.mode, cfg.wandb.project, cfg.wandb.entity, out_dir / "baseline")
    return record


def _one_shot_scores(cfg: DictConfig, store: ResultsStore, model, ids) -> Scores:
    """Scores of the original model, computed once per (model, data, criterion) and reused; a corrupt cache
    file is reported and recomputed (it is a cache: the scores are a pure function of its key)."""
    path = store.root / "scores" / f"{run_keys.scores_key(cfg)}.json"
    if (cached := _cached_scores(path)) is not None:
        return cached
    with claims.Claim.wait(path):  # one worker scores; the others wait, then read its file
        if (cached := _cached_scores(path)) is not None:
            return cached
        print(f"[scores] {path.stem}: scoring the original model", flush=True)
        scores = method_scores(cfg, model, ids)
        scores.save(path)
        return scores


def _cached_scores(path: Path) -> Scores | None:
    if not path.exists():
        return None
    try:
        return Scores.load(path)
    except ValueError as err:
        warnings.warn(f"Recomputing the score cache: {err}", stacklevel=2)
        return None


def _budget_drop(cfg: DictConfig, model, scores: Scores, job: Job) -> DropResult:
    """Drop what `method.budget` asks (budget.py); the plan holds the predicted cost, the record the real."""
    wanted = budget.Budget(cfg.method.budget.kind, float(cfg.method.budget.target))
    costs = budget.costs_for(wanted.kind, model, job)  # of the original: the model is not cut yet
    plan = budget.budget_plan(scores, wanted, costs, cfg.method.target)
    apply_plan(model, plan)
    return DropResult(plan, scores, forward_equivalents=scores.meta.get("forward_equivalents", 1.0))


def _unhealed(cfg: DictConfig, store: ResultsStore, plan: Plan, qspec: quant.QuantSpec) -> RunRecord | None:
    """The same run without healing when the store has it and it evaluated the very model healing starts
    from (same plan, not quantized after the cut): its accuracy is the heal run's "before" (a heal sweep
    runs heal=none first), so the same model is not evaluated twice."""
    if not heal.HealSpec.from_config(cfg).enabled or (qspec.enabled and not qspec.before_drop):
        return None
    record = store.get(run_keys.unhealed_key(cfg))
    return record if record is not None and Plan.from_dict(record.plan) == plan else None


def _healing(cfg: DictConfig, model, tokenizer, unhealed: RunRecord | None) -> dict | None:
    """With heal.enabled: the pruned model's accuracy (the unhealed run's record where there is one, else
    evaluated here), then LoRA-heal it in place; returns the before numbers."""
    spec = heal.HealSpec.from_config(cfg)
    if not spec.enabled:
        return None
    before = (
        unhealed.to_dict()["eval"]
        if unhealed is not None
        else evaluate.run_suite(model, tokenizer, cfg.eval, seed=cfg.seed).to_dict()
    )
    ids = data.calibration_ids(tokenizer, cfg.data.source, spec.n, spec.seq_len, cfg.data.path)
    start = time.perf_counter()
    losses = heal.heal(model, ids, spec)
    wall_s = round(time.perf_counter() - start, 1)
    source = unhealed.key if unhealed is not None else None
    return {**spec.to_dict(), **losses, "wall_s": wall_s, "eval_before": before, "eval_before_record": source}


def _repairing(cfg: DictConfig, model, tokenizer) -> dict | None:
    """With a `repair` configured: fit it on calibration text against a freshly loaded original (read, then
    freed) and fuse it into the pruned model's weights (repair.py); returns what the record keeps."""
    spec = repair.RepairSpec.from_config(cfg)
    if not spec.enabled:
        return None
    ids = data.calibration_ids(tokenizer, cfg.data.source, spec.n, spec.seq_len, cfg.data.path)
    original = load_model(cfg)[0]
    _, summary = repair.repair(model, original, ids, spec)
    del original
    memory.release(str(model.device))
    return summary


def _join(store: ResultsStore, record: RunRecord, experiment: str | None) -> RunRecord:
    """A finished run that another experiment's grid also holds (Attn-8 is in Tables 1 and 2) is tagged
    with that experiment too, so its table shows it without running it again."""
    if experiment and experiment not in record.experiments:
        with store.hold(record.key):  # read-modify-write: a tag another worker adds is not lost
            record = store.get(record.key) or record
            if experiment not in record.experiments:
                record.experiments.append(experiment)
                store.put(record)
    return record


def prepare(cfg: DictConfig) -> tuple[DictConfig, validate.Checked]:
    """The config a run executes (a paper-table cell expanded to its method, the chosen experiment named),
    checked before anything loads or is written: a bad value fails here in seconds (validate.check)."""
    cfg = with_experiment_name(apply_cell(cfg))
    return cfg, validate.check(cfg, "run")


def dry_run(cfg: DictConfig) -> str:
    """The run this config would make, one line (model, method, n, mode, criterion), after the checks."""
    cfg, checked = prepare(cfg)
    m = cfg.method
    n = m.n if m.n is not None else checked.count
    amount = f"n={n}" if m.ratio is None else f"n={n if n is not None else '?'} (ratio {m.ratio})"
    layers = f"of {checked.num_layers} layers" if checked.num_layers else "layers unknown"
    extras = [x for x in ("span" * bool(m.consecutive), "no-residual" * bool(m.remove_residual)) if x]
    if m.get("budget"):
        extras.append(f"budget {m.budget.kind}={m.budget.target}")
    if run_keys.repair_part(cfg):
        extras.append(f"repair={cfg.repair.kind}")
    if run_keys.heal_part(cfg):
        extras.append(f"heal={heal.HealSpec.from_config(cfg).kind}")
    if (qspec := quant.QuantSpec.from_config(cfg)).enabled:
        extras.append(f"quant={qspec.scheme} ({qspec.order})")
    return "  ".join(
        [f"[dry run] {cfg.model.name}", m.target, amount, cfg.mode, cfg.criterion, layers, *extras]
    )


def _prune(
    cfg: DictConfig, store: ResultsStore, model, tokenizer, ids, job: Job, qspec: quant.QuantSpec
) -> tuple[DropResult, dict]:
    """Quantize (before or after the drop, as configured), drop, repair, heal: the model is changed in place.
    Returns the drop and what the record keeps of the repair and the healing (None where off)."""
    if qspec.before_drop:
        quant.quantize(model, qspec)
    scores = None if cfg.mode == "iterative" else _one_shot_scores(cfg, store, model, ids)
    if cfg.method.get("budget"):
        result = _budget_drop(cfg, model, scores, job)
    else:
        result = apply_method(cfg, model, ids, scores)
    repaired = _repairing(cfg, model, tokenizer)
    healing = _healing(cfg, model, tokenizer, _unhealed(cfg, store, result.plan, qspec))
    if not qspec.before_drop:
        quant.quantize(model, qspec)
    return result, {"repair": repaired, "heal": healing}


def _time_pair(
    cfg: DictConfig, model, original_bytes: int, job: Job, qspec: quant.QuantSpec
) -> tuple[speed.PairTiming, object]:
    """The pruned model and a fresh original, timed alternately (A B A B ...) after all the heavy work, so
    load elsewhere on the machine hits both models' calls alike. When both do not fit on the device, the
    pruned model is timed alone first and then moved to the CPU (in place: the caller's model follows) to
    make room for the original; the fidelity pass still compares them, each on its own device.
    Returns the pair and the original model (its profile gives the ideal speedup)."""
    if timing.pair_fits(model, original_bytes, job):
        original_model = quant.quantize(load_model(cfg)[0], qspec)
        return speed.PairTiming(
            *timing.alternate(original_model, model, job), alternated=True
        ), original_model
    print(f"[speed] original and pruned do not fit together on {job.device}: timed one after the other")
    pruned = timing.measure(model, job, "pruned")
    model.to("cpu")
    memory.release(job.device)
    original_model = quant.quantize(load_model(cfg)[0], qspec)
    pair = speed.PairTiming(timing.measure(original_model, job, "none"), pruned, alternated=False)
    return pair, original_model


def run(cfg: DictConfig, out_dir: Path) -> RunRecord | None:
    """One config of the grid, end to end; returns its record (the stored one if it already ran), or None
    when another live worker is running the same key (the sweep moves on; its record lands in the store)."""
    cfg, _ = prepare(cfg)
    store = ResultsStore(cfg.results_dir)
    key = run_keys.run_key(cfg)
    if (stored := store.get(key)) is not None:
        print(f"[skip] {key} already in {store.root}")
        return _join(store, stored, cfg.experiment_name)
    with stop_on_sigterm():
        claim = store.claim(key)
        if claim is None:
            print(f"[busy] {key} is being run by {claims.describe(claims.holder(store.path(key)))}: skipped")
            return None
        with claim:
            if (stored := store.get(key)) is not None:  # finished between the check and the claim
                print(f"[skip] {key} already in {store.root}")
                return _join(store, stored, cfg.experiment_name)
            print(f"[run] {key} claimed by {claims.describe(claim.owner)}", flush=True)
            return _run(cfg, store, key, out_dir)


def _run(cfg: DictConfig, store: ResultsStore, key: str, out_dir: Path) -> RunRecord:
    """Baseline, prune, evaluate, time, store: the work of a claimed key."""
    base = baseline(cfg, store, out_dir)
    start = time.perf_counter()
    model, tokenizer, ids = load_with_data(cfg)
    qspec = quant.QuantSpec.from_config(cfg)
    job = job_for_quant(job_from_config(cfg.speed, str(model.device), cfg.seed), qspec)
    params_before, original_bytes = model.num_parameters(), memory.weight_bytes(model)
    result, changes = _prune(cfg, store, model, tokenizer, ids, job, qspec)
    save_scores(cfg, result.scores, out_dir)
    measured = {
        "job": job,
        **changes,  # repair, heal
        "eval": evaluate.run_suite(model, tokenizer, cfg.eval, seed=cfg.seed).to_dict(),
    }
    measured["params"] = {"before": params_before, "after": model.num_parameters()} | quant.describe(
        model, qspec
    )
    measured["pair"], original_model = _time_pair(cfg, model, original_bytes, job, qspec)
    measured["profile"] = timing.profile(original_model, job)
    measured["fidelity"] = fidelity(cfg, original_model, model, tokenizer)
    record = pruned_record(cfg, key, base, result, measured, qspec, start)
    store.put(record)
    tracking.log_run(record, cfg.wandb.mode, cfg.wandb.project, cfg.wandb.entity, out_dir)
    return record


def summary(record: RunRecord) -> str:
    """One line per run for the sweep log: what was dropped, accuracy, speedup, KV, SDR."""
    nan = float("nan")
    speed_ = record.speed
    generate = speed_.speedup.get("generate") if speed_ else None
    sdr = record.sdr
    return (
        f"{record.name}: avg {record.eval.avg:.2f} "
        f"(baseline {record.baseline_avg if record.baseline_avg is not None else nan:.2f}), "
        f"speedup {generate.median if generate else nan:.3f}x, "
        f"KV {speed_.kv_ratio if speed_ and speed_.kv_ratio is not None else nan:.3f}, "
        f"SDR {'n/a' if sdr is None or sdr.value is None else f'{sdr.value:.3f}'}"
    )
