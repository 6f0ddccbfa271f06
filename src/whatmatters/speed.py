"""What dropping buys: speed, KV cache and memory of original vs pruned models on one generation job.

The paper's speedup is time(original) / time(pruned) for the same `generate` job (bf16, one GPU, batch as
large as fits, 2048 prompt + 2048 new tokens). Here one timed `generate` per repeat gives all three times:

* **prefill**: the first forward of `generate` (the whole prompt, fresh cache);
* **decode**: the other G - 1 forwards (one token each, through the KV cache), per token;
* **generate**: the whole call, sampling and bookkeeping included (the paper's number).

Forward hooks on the model read the clock, after a device sync, when each forward starts and ends. Timing
inside the real `generate` rather than a hand-written decode loop measures exactly the paper's job, with
no second implementation to keep in step with transformers. The syncs cost little: in transformers 5.23
greedy `generate` already waits for the device after every step to check the stopping criteria (it defers
that only on MPS), so the host cannot run ahead anyway.

Also here: the KV cache measured and analytic (and Table 4), a memory estimate checked before any run,
the ideal speedup from a per-module time profile, the speedup degradation ratio (SDR), and the comparison
behind `experiments/speed.py`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import platform
import re
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import pandas as pd
import psutil
import torch
import transformers
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm import tqdm
from transformers import PreTrainedConfig, PreTrainedModel
from transformers.cache_utils import Cache, get_layer_types_and_kwargs

from whatmatters import models, shapes
from whatmatters.adapters import adapter_for
from whatmatters.plans import Plan
from whatmatters.surgery import apply_plan

GiB = 2**30


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Job:
    """One generation job: B prompts of P random tokens, G greedy new tokens, timed R times after warm-up.

    Speedups compare timings of the same job only, so every field that changes the work is here.
    """

    batch_size: int
    prompt_len: int
    new_tokens: int
    dtype: str = "float32"
    device: str = "cpu"
    repeats: int = 3
    warmup: int = 1
    seed: int = 0  # of the random prompt: original and pruned models read the same tokens

    def __post_init__(self) -> None:
        for name in ("batch_size", "prompt_len", "new_tokens", "repeats"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Job {name} must be a positive integer, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ValueError(f"Job warmup must be >= 0, got {self.warmup}")
        if self.dtype not in models.DTYPES:
            raise ValueError(f"Unknown dtype {self.dtype!r}; choose one of {sorted(models.DTYPES)}")

    @property
    def cached_tokens(self) -> int:
        """Tokens in the KV cache after `generate`: the last new token is returned but never fed back."""
        return self.prompt_len + self.new_tokens - 1


# ---------------------------------------------------------------------------------------------
# KV cache: measured and analytic
# ---------------------------------------------------------------------------------------------
def measured_cache(cache: Cache) -> tuple[int, int]:
    """(bytes of every key and value tensor, number of cache layers) of a cache after `generate`.

    Bytes are numel x element size of what each layer holds. A sliding layer's tensors are views into the
    last step's concatenation, whose storage keeps one token more (the one that slid out); that is a detail
    of the transformers implementation, not cache the model needs, so it is not counted.
    """
    size = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    return size, len(cache.layers)


def kv_layer_bytes(config: PreTrainedConfig, batch_size: int, seq_len: int, dtype: str) -> list[int]:
    """Analytic bytes of each KV-cache layer holding `seq_len` tokens: 2 x B x KV heads x head dim x tokens.

    The layers are those the model's caches get (`get_text_config(decoder=True)`: for a pruned model, one
    per kept attention). A full-attention layer holds every token. A sliding-window layer of window W holds
    min(seq_len, W - 1): the current token completes the window, so transformers' `DynamicSlidingWindowLayer`
    (what `generate` uses) keeps only the last W - 1 between steps; a static cache would hold W. With P + G
    beyond the window, dropping a sliding attention therefore saves less cache than dropping a full one.
    """
    text = config.get_text_config(decoder=True)
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    kv_heads = getattr(text, "num_key_value_heads", None) or text.num_attention_heads
    per_token = 2 * batch_size * kv_heads * head_dim * models.DTYPES[dtype].itemsize
    # transformers' own reading of the config decides which layers slide, so analytic and cache agree on it.
    _, layer_kwargs = get_layer_types_and_kwargs(text)
    sizes = []
    for kwargs in layer_kwargs:
        window = kwargs.get("sliding_window")
        sizes.append(per_token * (seq_len if window is None else min(seq_len, window - 1)))
    return sizes


# Table 4 of the paper: (model, batch size, attention layers original -> kept, GB original -> pruned).
# The paper states the kept layer count for three models only; None where it does not.
PAPER_TABLE4 = (
    ("mistral-7b", 64, 32, 20, 16, 10),
    ("llama2-13b", 32, 40, 20, 52, 26),
    ("llama2-70b", 32, 80, 40, 20, 10),
    ("llama3-8b", 64, 32, None, 16, 10),
    ("llama3-70b", 32, 80, None, 20, 10),
)


def table4(seq_len: int = 2048, dtype: str = "float16") -> list[dict]:
    """Table 4 rows: analytic KV cache of each paper model, original, with half the attentions dropped and
    with the paper's kept count, next to the paper's own figures (in separate `paper_*` columns).

    Analytic GiB (2^30 bytes) reproduce the paper's "GB" exactly for Mistral-7B (16 -> 10 at 20 of 32
    layers), Llama-2-70B and Llama-3-70B (20 -> 10), and Llama-3-8B's 16. They disagree in two places:
    Llama-2-13B (40 KV heads, no GQA) is 50 GiB = 53.7 GB analytic, where the paper says 52 (and 25 GiB
    vs 26 at 20 layers), neither unit matching; Llama-3-8B's pruned 10 GB is 20 of 32 layers (Attn-12),
    not half (8 GiB). Every figure assumes seq_len tokens of every layer; none of these models slides
    within 2048 tokens (Mistral's window is 4096).
    """
    rows = []
    for name, batch, layers, paper_kept, paper_gb, paper_pruned_gb in PAPER_TABLE4:
        per_layer = kv_layer_bytes(shapes.config(name), batch, seq_len, dtype)
        assert len(per_layer) == layers, f"{name}: {len(per_layer)} cache layers, the paper says {layers}"
        half = timing_plan(f"attn-{layers // 2}", layers)
        at_paper_kept = None if paper_kept is None else _kept_gib(per_layer, range(paper_kept, layers))
        rows.append(
            {
                "model": name,
                "batch_size": batch,
                "seq_len": seq_len,
                "layers": layers,
                "analytic_gib": _kept_gib(per_layer, ()),
                "half_layers": layers - len(half.attn),
                "analytic_half_gib": _kept_gib(per_layer, half.attn),
                "analytic_paper_kept_gib": at_paper_kept,
                "paper_kept_layers": paper_kept,
                "paper_gb": paper_gb,
                "paper_pruned_gb": paper_pruned_gb,
            }
        )
    return rows


def _kept_gib(per_layer: list[int], dropped: Sequence[int]) -> float:
    return sum(size for i, size in enumerate(per_layer) if i not in dropped) / GiB


# ---------------------------------------------------------------------------------------------
# Memory: estimate before running, measure the peak while running
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a job needs on its device: weights, KV cache (P + G tokens) and a rough activation peak."""

    weights: int
    kv_cache: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.activations


def estimate_memory(model: PreTrainedModel, job: Job) -> MemoryEstimate:
    """Estimate what `job` needs on `model` (works on a `meta` model: nothing is allocated).

    Activations, roughly: the prefill dominates; one layer at a time is alive in inference, with about 6
    hidden-size tensors and 3 intermediate-size ones (gate, up, their product) per prompt token; eager
    attention adds the P x P scores and their softmax per head (sdpa kernels do not materialise them); and
    the last-token logits in the model dtype and in float32.
    """
    text = model.config.get_text_config(decoder=True)
    size = models.DTYPES[job.dtype].itemsize
    tensors = [*model.parameters(), *model.buffers()]
    weights = sum(t.numel() * t.element_size() for t in tensors)
    kv = sum(kv_layer_bytes(model.config, job.batch_size, job.prompt_len + job.new_tokens, job.dtype))
    tokens = job.batch_size * job.prompt_len
    activations = tokens * (6 * text.hidden_size + 3 * text.intermediate_size) * size
    if text._attn_implementation == "eager":
        activations += 2 * tokens * text.num_attention_heads * job.prompt_len * size
    activations += job.batch_size * text.vocab_size * (size + 4)
    return MemoryEstimate(weights, kv, activations)


def free_memory(device: str) -> int | None:
    """Bytes a new allocation can still get on `device`; None where we cannot tell."""
    dev = torch.device(device)
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        # Memory PyTorch reserved but does not use is free to this process too.
        return free + torch.cuda.memory_reserved(dev) - torch.cuda.memory_allocated(dev)
    if dev.type == "cpu":
        return psutil.virtual_memory().available  # psutil comes with accelerate
    return None


def ensure_fits(estimate: MemoryEstimate, device: str, resident: int = 0) -> None:
    """Raise before a job that cannot fit: `resident` bytes of the estimate (loaded weights) are in place."""
    free = free_memory(device)
    need = estimate.total - resident
    if free is not None and need > free:
        raise MemoryError(
            f"The job needs about {estimate.total / GiB:.2f} GiB on {device} (weights "
            f"{estimate.weights / GiB:.2f}, KV cache {estimate.kv_cache / GiB:.2f}, activations ~"
            f"{estimate.activations / GiB:.2f}; {resident / GiB:.2f} already loaded) but only "
            f"{free / GiB:.2f} GiB are free: lower speed.batch_size, prompt_len or new_tokens."
        )


def _reset_peak(device: torch.device) -> bool:
    """Start a new peak-memory window; False where the peak cannot be reset (so must not be read)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    if device.type == "cpu":
        # Linux: writing 5 to clear_refs resets the process's peak resident set size (VmHWM).
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            return False
        return True
    return False


def _peak(device: torch.device) -> int:
    """Peak bytes since `_reset_peak`: allocated by PyTorch on a GPU; on CPU (Linux) the process's peak
    resident set size, weights, Python and all: a best effort."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"^VmHWM:\s+(\d+) kB", status, re.MULTILINE).group(1)) * 1024


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------
def _now(device: torch.device) -> float:
    """Wall clock once the device has finished the work queued so far."""
    if device.type != "cpu":
        torch.accelerator.synchronize(device)
    return time.perf_counter()


@contextlib.contextmanager
def _spans(first: nn.Module, last: nn.Module, device: torch.device) -> Iterator[list[float]]:
    """Seconds of each run from a call of `first` to the return of `last` (the same module: each call)."""
    times: list[float] = []
    starts: list[float] = []

    def begin(*_) -> None:
        starts.append(_now(device))

    def end(*_) -> None:
        times.append(_now(device) - starts.pop())

    handles = [first.register_forward_pre_hook(begin), last.register_forward_hook(end)]
    try:
        yield times
    finally:
        for handle in handles:
            handle.remove()


def _prompt(model: PreTrainedModel, job: Job) -> torch.Tensor:
    """(B, P) random token ids, the same for every model of the job; timing does not depend on the text."""
    vocab = model.config.get_text_config(decoder=True).vocab_size
    generator = torch.Generator().manual_seed(job.seed)
    return torch.randint(vocab, (job.batch_size, job.prompt_len), generator=generator).to(job.device)


def _generate(model: PreTrainedModel, ids: torch.Tensor, job: Job) -> Cache:
    """Greedy `generate` of exactly G new tokens (min = max: no early stop); returns its KV cache."""
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        min_new_tokens=job.new_tokens,
        max_new_tokens=job.new_tokens,
        pad_token_id=0,  # never written (no sequence ends early); set so generate does not warn
        return_dict_in_generate=True,
    )
    return out.past_key_values


def _check_model(model: PreTrainedModel, job: Job) -> torch.device:
    """The model's device, after checking it runs the job's dtype on the job's device."""
    param = next(model.parameters())
    device = torch.device(job.device)
    if param.dtype != models.DTYPES[job.dtype] or param.device.type != device.type:
        raise ValueError(
            f"The model is {param.dtype} on {param.device}, the job {job.dtype} on {job.device}: "
            "build or load the model with the job's dtype and device"
        )
    return param.device


def _noop() -> None:
    pass


@dataclass
class Timing:
    """One model's runs of a job: seconds per repeat, and memory and cache after the last repeat."""

    job: Job
    label: str
    prefill_runs: list[float]
    decode_runs: list[float] | None  # seconds per new token after the first; None when G = 1
    generate_runs: list[float]
    peak_memory_bytes: int | None
    kv_cache_bytes: int
    kv_cache_layers: int
    kv_analytic_bytes: int
    params: int

    @property
    def prefill_s(self) -> float:
        return statistics.median(self.prefill_runs)

    @property
    def decode_s(self) -> float | None:
        """Median seconds per decoded token."""
        return None if self.decode_runs is None else statistics.median(self.decode_runs)

    @property
    def generate_s(self) -> float:
        return statistics.median(self.generate_runs)


def measure(
    model: PreTrainedModel, job: Job, label: str = "none", tick: Callable[[], None] = _noop
) -> Timing:
    """Run `job` on `model`: warm-up, then R timed `generate` calls; `tick` after each call (progress)."""
    device = _check_model(model, job)
    estimate = estimate_memory(model, job)
    ensure_fits(estimate, job.device, resident=estimate.weights)
    ids = _prompt(model, job)
    for _ in range(job.warmup):
        _generate(model, ids, job)
        tick()
    prefill, decode, whole, peaks = [], [], [], []
    for _ in range(job.repeats):
        resettable = _reset_peak(device)
        with _spans(model, model, device) as forwards:
            start = _now(device)
            cache = _generate(model, ids, job)
            whole.append(_now(device) - start)
        if len(forwards) != job.new_tokens:
            raise RuntimeError(
                f"generate ran {len(forwards)} forwards for {job.new_tokens} new tokens; expected a prefill "
                "and one per further token (chunked prefill or deferred stopping would break the timing)"
            )
        peaks.append(_peak(device) if resettable else None)
        prefill.append(forwards[0])
        if job.new_tokens > 1:
            decode.append(sum(forwards[1:]) / (job.new_tokens - 1))
        tick()
    kv_bytes, kv_layers = measured_cache(cache)
    return Timing(
        job=job,
        label=label,
        prefill_runs=prefill,
        decode_runs=decode or None,
        generate_runs=whole,
        peak_memory_bytes=None if None in peaks else max(peaks),
        kv_cache_bytes=kv_bytes,
        kv_cache_layers=kv_layers,
        kv_analytic_bytes=sum(kv_layer_bytes(model.config, job.batch_size, job.cached_tokens, job.dtype)),
        params=sum(p.numel() for p in model.parameters()),
    )


METRICS = ("prefill_s", "decode_s", "generate_s")


def speedup(baseline: Timing, pruned: Timing) -> dict[str, float | None]:
    """time(original) / time(pruned) per metric, for timings of the same job only."""
    if baseline.job != pruned.job:
        raise ValueError(f"speedup baseline from a different job: {baseline.job} vs {pruned.job}")
    ratios = {}
    for metric in METRICS:
        base, new = getattr(baseline, metric), getattr(pruned, metric)
        ratios[metric] = None if base is None or new is None else base / new
    return ratios


# ---------------------------------------------------------------------------------------------
# Ideal speedup: what removing a module's time would give
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Profile:
    """Seconds spent in each layer's attention branch, MLP branch and whole block during one `generate`.

    A branch is timed from its pre-norm's call to its output (Gemma2/3: the post-norm), i.e. everything a
    drop removes. Every timed module syncs the device twice, which inflates the module times a little
    against the rest: the ideal speedup is an upper-side approximation.
    """

    total_s: float
    attn_s: tuple[float, ...]
    mlp_s: tuple[float, ...]
    block_s: tuple[float, ...]

    def shares(self) -> dict[str, float]:
        """Fractions of the `generate` time in attention, MLP and the rest (residual adds, embeddings, final
        norm, head, sampling, Python)."""
        attn, mlp = sum(self.attn_s) / self.total_s, sum(self.mlp_s) / self.total_s
        return {"attn": attn, "mlp": mlp, "rest": 1.0 - attn - mlp}


def profile(model: PreTrainedModel, job: Job) -> Profile:
    """Time every attention, MLP and block of an original (unpruned, warmed-up) model over one `generate`."""
    if hasattr(model.config, "drop_plan"):
        raise ValueError("Profile the original model: plans and ideal speedups index its layers")
    device = _check_model(model, job)
    adapter = adapter_for(model)
    ids = _prompt(model, job)
    with contextlib.ExitStack() as stack:
        spans = {"attn": [], "mlp": [], "block": []}
        for layer in adapter.layers(model):
            for kind in ("attn", "mlp"):
                branch = adapter.branch(kind)
                first, last = layer.get_submodule(branch.norm), layer.get_submodule(branch.output)
                spans[kind].append(stack.enter_context(_spans(first, last, device)))
            spans["block"].append(stack.enter_context(_spans(layer, layer, device)))
        start = _now(device)
        _generate(model, ids, job)
        total = _now(device) - start
    attn, mlp, block = (tuple(sum(times) for times in spans[kind]) for kind in ("attn", "mlp", "block"))
    return Profile(total, attn, mlp, block)


def ideal_speedup(prof: Profile, plan: Plan) -> float:
    """1 / (1 - share of the time spent in the modules `plan` removes)."""
    if plan.num_layers != len(prof.block_s):
        raise ValueError(f"The plan is for {plan.num_layers} layers, the profile has {len(prof.block_s)}")
    removed = sum(prof.attn_s[i] for i in plan.attn) + sum(prof.mlp_s[i] for i in plan.mlp)
    removed += sum(prof.block_s[i] for i in plan.blocks)
    return prof.total_s / (prof.total_s - removed)


# ---------------------------------------------------------------------------------------------
# Speedup degradation ratio
# ---------------------------------------------------------------------------------------------
def sdr(baseline_avg: float, pruned_avg: float, speedup: float) -> float:
    """gamma = delta-Avg / delta-Speedup: accuracy points lost per percent of speedup (lower is better).

    delta-Avg = baseline - pruned average score in absolute points; delta-Speedup = (speedup - 1) x 100.
    """
    gained = (speedup - 1.0) * 100.0
    if gained == 0.0:
        raise ValueError("SDR is undefined at speedup 1.0: the plan gained no speed to trade accuracy for")
    return (baseline_avg - pruned_avg) / gained


# ---------------------------------------------------------------------------------------------
# Plans for timing, and the original-vs-pruned comparison
# ---------------------------------------------------------------------------------------------
def timing_plan(label: str, num_layers: int) -> Plan:
    """`none` or `kind-n` (kind: attn, mlp, block) -> a plan dropping the deepest n modules of that kind.

    For speed only the count matters (every layer costs the same), except in models mixing sliding and
    full attention, where the cache saved depends on which kind goes. The deepest layers are the paper's
    usual choice (its scores find deep attention most redundant), so these plans time like its plans.
    """
    if label == "none":
        return Plan(num_layers, meta={"label": label})
    match = re.fullmatch(r"(attn|mlp|block)-(\d+)", label)
    if match is None:
        raise ValueError(f"Unknown plan {label!r}; use none or kind-n with kind attn, mlp or block (attn-8)")
    kind, n = match.group(1), int(match.group(2))
    if n > num_layers:
        raise ValueError(f"Plan {label} drops {n} {kind} modules of a {num_layers}-layer model")
    deepest = range(num_layers - n, num_layers)
    field_name = "blocks" if kind == "block" else kind
    return Plan(num_layers, **{field_name: deepest}, meta={"label": label})


@dataclass
class Comparison:
    """Timings of the original ("none") and each pruned model on one job, and the original's profile."""

    job: Job
    profile: Profile
    plans: dict[str, Plan]
    timings: dict[str, Timing] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """One row per plan: times, speedups (measured and ideal), KV cache and peak memory."""
        base = self.timings["none"]
        rows = []
        for label, timing in self.timings.items():
            ratios = speedup(base, timing)
            ideal = ideal_speedup(self.profile, self.plans[label])
            decode = timing.decode_s
            peak = timing.peak_memory_bytes
            rows.append(
                {
                    "plan": label,
                    "prefill_s": timing.prefill_s,
                    "decode_ms_per_token": None if decode is None else 1000 * decode,
                    "generate_s": timing.generate_s,
                    "speedup_prefill": ratios["prefill_s"],
                    "speedup_decode": ratios["decode_s"],
                    "speedup_generate": ratios["generate_s"],
                    "ideal_speedup": ideal,
                    "realized_over_ideal": ratios["generate_s"] / ideal,
                    "kv_cache_mib": timing.kv_cache_bytes / 2**20,
                    "kv_analytic_mib": timing.kv_analytic_bytes / 2**20,
                    "kv_ratio": timing.kv_cache_bytes / base.kv_cache_bytes if base.kv_cache_bytes else None,
                    "kv_layers": timing.kv_cache_layers,
                    "peak_memory_mib": None if peak is None else peak / 2**20,
                    "params_m": timing.params / 1e6,
                }
            )
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        """Everything measured, raw (every repeat), for the run's JSON record."""
        return {
            "job": asdict(self.job),
            "profile": asdict(self.profile) | {"shares": self.profile.shares()},
            "plans": {label: plan.to_dict() for label, plan in self.plans.items()},
            # The job is recorded once above.
            "timings": {
                label: {k: v for k, v in asdict(t).items() if k != "job"} for label, t in self.timings.items()
            },
        }


def compare(
    build: Callable[[], PreTrainedModel], labels: Sequence[str], job: Job, tick: Callable[[], None] = _noop
) -> Comparison:
    """Time the original and each plan of `labels` on `job`; `build()` makes a fresh original model.

    Each pruned model is cut from a fresh build rather than a copy, so only one model is in memory at a time.
    """
    model = build()
    layers = len(adapter_for(model).layers(model))
    plans = {label: timing_plan(label, layers) for label in ["none", *labels]}
    baseline = measure(model, job, "none", tick)
    comparison = Comparison(job, profile(model, job), plans, {"none": baseline})  # profiled warm
    tick()
    for label, plan in plans.items():
        if label == "none":
            continue
        del model
        release(job.device)
        model = apply_plan(build(), plan)
        comparison.timings[label] = measure(model, job, label, tick)
    return comparison


def release(device: str) -> None:
    """Return the last model's memory before building the next one."""
    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


# ---------------------------------------------------------------------------------------------
# The app (experiments/speed.py)
# ---------------------------------------------------------------------------------------------
def run(cfg: DictConfig, out_dir: Path) -> pd.DataFrame:
    """Compare the configured plans on the configured job; write speed.csv and speed.json into `out_dir`."""
    device = models.device_for(cfg.device)
    job = Job(**OmegaConf.to_container(cfg.speed), device=device, seed=cfg.seed)
    if cfg.shape:
        # Check on a weightless copy first: building a shape that cannot fit would fail only after minutes.
        ensure_fits(estimate_memory(shapes.build(cfg.shape, "meta", job.dtype), job), device)
        name, build = cfg.shape, partial(shapes.build, cfg.shape, device, job.dtype)
    else:
        name = cfg.model.name

        def build() -> PreTrainedModel:
            return models.load(cfg.model.name_or_path, job.dtype, device)[0]

    labels = [label for label in cfg.plans if label != "none"]
    runs_per_model = job.warmup + job.repeats
    with tqdm(total=(1 + len(labels)) * runs_per_model + 1, desc=f"speed {name}", unit="generate") as bar:
        comparison = compare(build, labels, job, tick=bar.update)
    table = comparison.table()
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "speed.csv", index=False)
    record = {
        "model": name,
        "weights": "random" if cfg.shape else cfg.model.name_or_path,
        # Times mean little without the machine and stack that produced them.
        "machine": torch.cuda.get_device_name(device)
        if device.startswith("cuda")
        else platform.processor() or platform.machine(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        **comparison.to_dict(),
    }
    (out_dir / "speed.json").write_text(json.dumps(record, indent=2))
    return table
