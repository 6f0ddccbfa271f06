"""The clock inside a real `generate`: device-synced time, forward spans read by hooks, the random prompt
and the greedy call of exactly G new tokens that every timing in `timing` measures.

Forward hooks on the model read the clock, after a device sync, when each forward starts and ends. Timing
inside the real `generate` rather than a hand-written decode loop measures exactly the paper's job, with
no second implementation to keep in step with transformers. The syncs cost little: in transformers 5.23
greedy `generate` already waits for the device after every step to check the stopping criteria.
"""

from __future__ import annotations

import contextlib
import platform
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.cache_utils import Cache

from whatmatters import models

if TYPE_CHECKING:
    from whatmatters.measure.job import Job

# The instruction sets that pick oneDNN's bfloat16 kernels on x86: hosts that differ here round bfloat16
# matmuls differently, so a near-tie doc can flip between them under one run key.
BF16_ISA = ("amx_bf16", "avx512_bf16")


def now(device: torch.device) -> float:
    """Wall clock once the device has finished the work queued so far."""
    if device.type != "cpu":
        torch.accelerator.synchronize(device)
    return time.perf_counter()


@contextlib.contextmanager
def spans(first: nn.Module, last: nn.Module, device: torch.device) -> Iterator[list[float]]:
    """Seconds of each run from a call of `first` to the return of `last` (the same module: each call)."""
    times: list[float] = []
    starts: list[float] = []

    def begin(*_) -> None:
        starts.append(now(device))

    def end(*_) -> None:
        times.append(now(device) - starts.pop())

    handles = [first.register_forward_pre_hook(begin), last.register_forward_hook(end)]
    try:
        yield times
    finally:
        for handle in handles:
            handle.remove()


def random_prompt(model: PreTrainedModel, job: Job) -> torch.Tensor:
    """(B, P) random token ids, the same for every model of the job; timing does not depend on the text."""
    vocab = model.config.get_text_config(decoder=True).vocab_size
    generator = torch.Generator().manual_seed(job.seed)
    return torch.randint(vocab, (job.batch_size, job.prompt_len), generator=generator).to(job.device)


def generate_exactly(model: PreTrainedModel, ids: torch.Tensor, job: Job) -> Cache:
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


def check_model(model: PreTrainedModel, job: Job) -> torch.device:
    """The model's device, after checking it runs the job's dtype on the job's device."""
    param = next(model.parameters())
    device = torch.device(job.device)
    if param.dtype != models.DTYPES[job.dtype] or param.device.type != device.type:
        raise ValueError(
            f"The model is {param.dtype} on {param.device}, the job {job.dtype} on {job.device}: "
            "build or load the model with the job's dtype and device"
        )
    return param.device


def cpu_name(cpuinfo: str) -> str:
    """`model name` of a /proc/cpuinfo text plus its bfloat16 instruction sets, e.g. `Intel(R) Xeon(R)
    Processor [amx_bf16 avx512_bf16]`; empty when the text has no model name."""
    fields = {
        k.strip(): v.strip() for k, v in (line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    }
    if not fields.get("model name"):
        return ""
    flags = set(fields.get("flags", "").split())
    return f"{fields['model name']} [{' '.join(f for f in BF16_ISA if f in flags) or 'no bf16 ISA'}]"


def machine_name(device: str | torch.device) -> str:
    """What produced a timing or a score: the GPU's name, else the CPU's with its bfloat16 instruction sets
    (Linux), else Python's guess. Records keep it: times and bfloat16 results depend on it."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo") as f:
            name = cpu_name(f.read())
    except OSError:
        name = ""
    return name or platform.processor() or platform.machine()
