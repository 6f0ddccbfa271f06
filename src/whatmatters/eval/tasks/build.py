"""Build the embedded suite's JSONL from gensim's Wikipedia articles: the same seed gives the same bytes.

Three proxies for kinds of benchmark the paper uses, on articles that calibration never reads:

    wm_cloze     a passage ending before its last word; 4 choices (LAMBADA-like). The 3 distractors
                 follow the same word elsewhere in the article ("... of the ___"), so every choice is
                 grammatical and on topic and only the passage tells them apart.
    wm_nextsent  a sentence and 4 candidates for the next one: the true one and 3 sentences of
                 similar length from the same article (HellaSwag-like)
    wm_ppl       whole paragraphs for word perplexity (wikitext-like), held out from both MC tasks

Only prose is used: a paragraph line counts when it holds at least two sentences and every one of them
starts with a capital, ends with a period and carries none of the debris markup removal leaves.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

from whatmatters.data import wiki_pages

# Sized so one evaluation of SmolLM2-135M (float32, 2 CPU cores) takes about 2 minutes; see README.md.
SIZES = {"wm_cloze": 1000, "wm_nextsent": 250, "wm_ppl": 50}
SEED = 1234
CLOZE_MAX_WORDS = 30  # a passage: the cloze sentence and as many before it (same paragraph) as fit
NEXT_MAX_WORDS = 18  # each sentence of a next-sentence item: the context is scored once per choice
PPL_WORDS = (40, 120)  # paragraph lengths for perplexity
MIN_COUNT = 10  # cloze words occur this often in the articles: such words are mostly single BPE tokens

# After . ! ? (maybe closing a quote or bracket), before a capital (maybe opening one).
_BOUNDARY = re.compile(r"(?:(?<=[.!?])|(?<=[.!?][\"')\u201d]))\s+(?=[\"(\u201c]?[A-Z])")
# A period after these ends no sentence ("Mr. Smith", "U.S. Army", "J. R. R. Tolkien": single letters too).
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "no", "nos", "vol", "inc", "ltd", "co", "corp",
    "gen", "col", "lt", "sgt", "capt", "rev", "prof", "mt", "ft", "ca", "approx", "fig", "e.g", "i.e",
    "u.s", "u.k", "u.n", "a.d", "b.c", "jan", "feb", "mar", "apr", "aug", "sep", "sept", "oct", "nov", "dec",
}  # fmt: skip
# What filter_wiki leaves where it removed templates, math or foreign script ("the Greek , i.e.").
_DEBRIS = re.compile(r" [,.;:)]|\( |\(\)|[=|{}\[\]<>_\\^~]|http|\s-\s-|\.\.")
_SENTENCE = re.compile(r"[A-Z][^\n]*[a-z0-9)]\.")
_LAST_WORD = re.compile(r"^(.* )([a-z]+)\.$")
_WORD = re.compile(r"\b[a-z]+\b")  # a lowercase word, not the tail of "Alberta"
_TOKEN = re.compile(r"[A-Za-z]+")
# Frequent but never a sensible last word or distractor.
_FUNCTION_WORDS = {
    "that", "this", "with", "from", "which", "have", "were", "their", "also", "been", "they", "than",
    "into", "some", "only", "when", "what", "where", "there", "these", "those", "them", "then", "such",
    "most", "more", "many", "much", "other", "over", "after", "about", "while", "being", "both", "each",
    "could", "would", "should", "will", "shall", "must", "does", "done", "made", "make", "very", "well",
    "just", "even", "still", "like", "within", "without", "upon", "between", "during", "through", "under",
    "until", "since", "because", "although", "though", "whose", "whom", "either", "neither",
}  # fmt: skip


@dataclass(frozen=True)
class Sentence:
    text: str
    line: int  # index of its paragraph line in the article: items never cross paragraphs


def sentences(line: str) -> list[str]:
    """The sentences of one paragraph line, split only where a sentence likely ends."""
    out, start = [], 0
    for m in _BOUNDARY.finditer(line):
        last = line[start : m.start()].rsplit(None, 1)[-1].strip("\"')\u201d").rstrip(".!?").lower()
        if len(last) > 1 and last not in _ABBREVIATIONS:
            out.append(line[start : m.start()].strip())
            start = m.end()
    return [*out, line[start:].strip()]


def is_prose(sentence: str) -> bool:
    """A clean declarative sentence of 6 to 60 words."""
    return (
        bool(_SENTENCE.fullmatch(sentence))
        and 6 <= len(sentence.split()) <= 60
        and not _DEBRIS.search(sentence)
    )


def prose_lines(text: str) -> list[list[str]]:
    """The sentences of each paragraph line that is prose; [] for the others (lists, tables, captions)."""
    out = []
    for line in text.split("\n"):
        sents = sentences(line)
        out.append(sents if len(sents) >= 2 and all(map(is_prose, sents)) else [])
    return out


def build(out_dir: str | Path, seed: int = SEED, sizes: dict[str, int] = SIZES) -> dict[str, Path]:
    """Write wm_cloze.jsonl, wm_nextsent.jsonl and wm_ppl.jsonl into `out_dir`; return their paths."""
    rng = random.Random(seed)
    articles = [(title, prose_lines(text)) for title, text in wiki_pages()]
    # Perplexity paragraphs first, then removed, so no multiple-choice item reads them.
    pool = [
        (a, i)
        for a, (_, lines) in enumerate(articles)
        for i, sents in enumerate(lines)
        if sents and PPL_WORDS[0] <= len(" ".join(sents).split()) <= PPL_WORDS[1]
    ]
    held = sorted(rng.sample(pool, sizes["wm_ppl"]))
    ppl = [{"title": articles[a][0], "text": " ".join(articles[a][1][i])} for a, i in held]
    for a, i in held:
        articles[a][1][i] = []

    counts = Counter(w for _, lines in articles for sents in lines for s in sents for w in _WORD.findall(s))
    vocab = {w for w, c in counts.items() if c >= MIN_COUNT and len(w) >= 4 and w not in _FUNCTION_WORDS}
    cloze, nextsent = [], []
    for title, lines in articles:
        sents = [Sentence(s, i) for i, line in enumerate(lines) for s in line]
        cloze += _cloze_items(title, sents, vocab, rng)
        nextsent += _nextsent_items(title, sents, rng)
    rows = {
        "wm_cloze": rng.sample(cloze, sizes["wm_cloze"]),
        "wm_nextsent": rng.sample(nextsent, sizes["wm_nextsent"]),
        "wm_ppl": ppl,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for task, items in rows.items():
        paths[task] = out / f"{task}.jsonl"
        lines = [
            json.dumps({"id": f"{task}-{k:04d}", **item}, ensure_ascii=False) for k, item in enumerate(items)
        ]
        paths[task].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


def _with_answer(true: str, others: list[str], rng: random.Random) -> dict:
    """The choices in random order and the index of the true one."""
    choices = [true, *others]
    rng.shuffle(choices)
    return {"choices": choices, "label": choices.index(true)}


def _cloze_items(title: str, sents: list[Sentence], vocab: set[str], rng: random.Random) -> list[dict]:
    """Every sentence ending in a vocabulary word, as a passage without that word and 4 choices."""
    followers: dict[str, set[str]] = {}  # word -> vocabulary words that follow it in this article
    for s in sents:
        for prev, word in pairwise(_TOKEN.findall(s.text)):
            if word in vocab:
                followers.setdefault(prev.lower(), set()).add(word)
    items = []
    for k, cur in enumerate(sents):
        m = _LAST_WORD.match(cur.text)
        if not m or m.group(2) not in vocab or len(cur.text.split()) < 10:
            continue
        word, head = m.group(2), m.group(1).rstrip()
        pool = sorted(followers[_TOKEN.findall(head)[-1].lower()] - {word})
        if len(pool) < 3:
            continue
        # Prefer words of the same paragraph: on topic, so only the passage's meaning rules them out.
        near = set(_WORD.findall(" ".join(s.text for s in sents if s.line == cur.line)))
        picks = rng.sample([w for w in pool if w in near], min(3, sum(w in near for w in pool)))
        picks += rng.sample([w for w in pool if w not in picks], 3 - len(picks))
        passage = [head]
        for prev in reversed(sents[:k]):
            if prev.line != cur.line or len(" ".join([prev.text, *passage]).split()) > CLOZE_MAX_WORDS:
                break
            passage.insert(0, prev.text)
        items.append({"title": title, "context": " ".join(passage), **_with_answer(word, picks, rng)})
    return items


def _nextsent_items(title: str, sents: list[Sentence], rng: random.Random) -> list[dict]:
    """Each pair of consecutive short sentences, against 3 sentences of the article of similar length."""
    short = [s for s in sents if len(s.text.split()) <= NEXT_MAX_WORDS]
    items = []
    for cur, nxt in pairwise(sents):
        if cur.line != nxt.line or cur not in short or nxt not in short:
            continue
        n = len(nxt.text)
        pool = [s.text for s in short if s not in (cur, nxt) and 0.67 * n <= len(s.text) <= 1.5 * n]
        if len(pool) >= 3:
            items.append(
                {"title": title, "context": cur.text, **_with_answer(nxt.text, rng.sample(pool, 3), rng)}
            )
    return items
