"""lm-eval hooks for the embedded tasks: pure functions named by the task YAMLs (`!function utils.x`)."""

from __future__ import annotations

import json
from pathlib import Path

import datasets

HERE = Path(__file__).parent


def load_jsonl(file: str, **_metadata) -> datasets.DatasetDict:
    """The task's JSONL (next to this file) as its test split; no network, no datasets cache.

    lm-eval passes the task's metadata as keyword arguments too; they are not needed here.
    """
    rows = [json.loads(line) for line in (HERE / file).read_text(encoding="utf-8").splitlines()]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def perplexity_results(doc: dict, results: list[float]) -> dict[str, tuple[float, int]]:
    """Rolling log-likelihood paired with the word and byte counts that lm-eval's perplexities divide by."""
    (loglikelihood,) = results
    n_bytes = len(doc["text"].encode("utf-8"))
    return {
        "word_perplexity": (loglikelihood, len(doc["text"].split())),
        "byte_perplexity": (loglikelihood, n_bytes),
        "bits_per_byte": (loglikelihood, n_bytes),
    }
