"""PrefixSharingLM: stock HFLM's log-likelihoods and is_greedy, with every shared prefix computed once."""

from __future__ import annotations

import random

import pytest
import torch
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
from transformers import AutoTokenizer

from conftest import tiny_model
from whatmatters.eval.fastlm import PrefixSharingLM
from whatmatters.eval.prefix_tree import radix_tree
from whatmatters.method.plans import Plan
from whatmatters.method.surgery import apply_plan

MAX_LENGTH = 48  # short, so some requests are truncated from the left as HFLM truncates them
TOL = 1e-4


def words(rng: random.Random, n: int) -> str:
    return " ".join(f"w{rng.randrange(2, 128)}" for _ in range(n))


def mixed_requests(seed: int = 0) -> list[Instance]:
    """Docs sharing a few-shot preamble, docs without it, shared contexts with 1..5-token continuations
    (some a prefix of another), exact duplicates, an empty context, and windows past MAX_LENGTH."""
    rng = random.Random(seed)
    preamble = words(rng, 20)
    pairs = []
    for doc in range(8):
        context = f"{preamble} {words(rng, rng.randrange(1, 12))}" if doc < 6 else words(rng, 6)
        endings = [words(rng, rng.randrange(1, 6)) for _ in range(3)]
        endings.append(endings[0].split()[0])  # a one-token prefix of another ending
        pairs += [(context, " " + e) for e in endings]
    pairs.append((f"{preamble} {words(rng, 40)}", " " + words(rng, 4)))  # truncated past MAX_LENGTH
    pairs.append(("", words(rng, 3)))  # empty context: HFLM prepends its prefix token
    pairs += pairs[:3]  # duplicates
    return [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]


def both(model, tok, batch_size: int = 3) -> tuple[HFLM, PrefixSharingLM]:
    kwargs = dict(pretrained=model, tokenizer=tok, batch_size=batch_size, max_length=MAX_LENGTH)
    return HFLM(**kwargs), PrefixSharingLM(**kwargs)


def assert_same(stock: list, fast: list) -> None:
    assert len(stock) == len(fast)
    worst = max(abs(a[0] - b[0]) for a, b in zip(stock, fast, strict=True))
    assert worst < TOL, f"max |delta loglik| = {worst}"
    assert [a[1] for a in stock] == [b[1] for b in fast]


@pytest.fixture
def tok(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def test_radix_tree_splits_at_branch_points_and_ends_each_window_once():
    seqs = sorted({(1, 2, 3, 4), (1, 2, 3), (1, 2, 5), (6,)})
    root, ends = radix_tree(seqs)
    assert [(c.start, c.end) for c in root.children] == [(0, 2), (0, 1)]
    for seq, end in zip(seqs, ends, strict=True):
        assert end.end == len(seq) and seqs[end.rep][: end.end] == seq
    shared = root.children[0]
    assert sorted((c.start, c.end) for c in shared.children) == [(2, 3), (2, 3)]


def test_loglikelihoods_match_hflm_on_every_family(family, tok):
    stock, fast = both(tiny_model(family), tok)
    requests = mixed_requests()
    assert_same(stock.loglikelihood(requests), fast.loglikelihood(requests))


@pytest.mark.parametrize("batch_size", [1, 64])
def test_loglikelihoods_match_hflm_at_any_batch_size(tok, batch_size):
    stock, fast = both(tiny_model("gemma3_text"), tok, batch_size)
    requests = mixed_requests(seed=batch_size)
    assert_same(stock.loglikelihood(requests), fast.loglikelihood(requests))


@pytest.mark.parametrize(
    "plan",
    [Plan(4, attn=(1,), blocks=(2,)), Plan(4, attn=(0, 2), mlp=(1,)), Plan(4, attn=(0, 1, 2, 3))],
    ids=["attn-and-block", "attn-and-mlp", "no-attention-left"],
)
@pytest.mark.parametrize("model_type", ["llama", "gemma2"])
def test_pruned_models_match_hflm(tok, plan, model_type):
    stock, fast = both(apply_plan(tiny_model(model_type), plan), tok)
    requests = mixed_requests(seed=1)
    assert_same(stock.loglikelihood(requests), fast.loglikelihood(requests))


def test_rolling_loglikelihood_matches_hflm(tok):
    stock, fast = both(tiny_model("gemma2"), tok)
    rng = random.Random(3)
    requests = [
        Instance("loglikelihood_rolling", {}, (words(rng, n),), i) for i, n in enumerate((5, 60, 130))
    ]
    got, want = fast.loglikelihood_rolling(requests), stock.loglikelihood_rolling(requests)
    assert max(abs(a - b) for a, b in zip(want, got, strict=True)) < TOL


def test_shared_preamble_and_contexts_are_computed_once(tok):
    """Tokens run = preamble once + each doc's own tokens once + each ending's own tokens, nothing more."""
    _, fast = both(tiny_model("llama"), tok)
    preamble, docs = list(range(2, 22)), [[30 + d, 40 + d, 50 + d] for d in range(5)]
    endings = [[60 + k, 70 + k, 80 + k] for k in range(4)]  # distinct first tokens: one branch per ending
    requests = [(None, preamble + doc, ending) for doc in docs for ending in endings]
    fast._loglikelihood_tokens(requests)
    own_ending_tokens = len(docs) * sum(len(e) - 1 for e in endings)  # the last token is only a target
    assert fast.tokens_computed == len(preamble) + sum(map(len, docs)) + own_ending_tokens
    stock_tokens = sum(len(c) + len(e) - 1 for _, c, e in requests)
    assert stock_tokens > 6 * fast.tokens_computed


def test_answer_choices_of_many_docs_share_one_forward(tok):
    """Leaves under different docs are batched together over left-padded prefixes, with HFLM's answers."""
    stock, fast = both(tiny_model("llama"), tok, batch_size=64)
    preamble = list(range(2, 12))
    docs = [[20 + d] + [40 + d] * d for d in range(6)]  # distinct first tokens, 1..6 tokens: ragged prefixes
    endings = [[60 + k] + [70 + k] * (k % 3) for k in range(4)]  # leaves of 0..2 own tokens
    requests = [
        ((f"{d}", f"{k}"), preamble + doc, e) for d, doc in enumerate(docs) for k, e in enumerate(endings)
    ]
    assert_same(stock._loglikelihood_tokens(requests), fast._loglikelihood_tokens(requests))
    assert fast.forwards == 3  # the preamble, the docs' contexts, all docs' endings: not one forward per doc


def test_unsupported_cache_layout_is_refused_before_any_forward(tok, monkeypatch):
    from transformers import cache_utils

    _, fast = both(tiny_model("llama"), tok)
    monkeypatch.setitem(
        cache_utils.DYNAMIC_LAYER_TYPE_MAPPING, "full_attention", cache_utils.DynamicIndexedLayer
    )
    with pytest.raises(ValueError, match="DynamicIndexedLayer; evaluate it with lm_eval's HFLM instead"):
        fast._check_cache_layout()


@pytest.mark.slow
def test_embedded_default_matches_hflm():
    from whatmatters.models import load

    model, tok = load("embedded:smollm2-135m")
    requests = mixed_requests(seed=7)
    rng = random.Random(7)
    shots = " ".join(f"Q: {rng.random():.3f} A: yes." for _ in range(12))
    requests += [
        Instance("loglikelihood", {}, (f"{shots} Q: {q} A:", f" {a}"), len(requests) + i)
        for i, (q, a) in enumerate(
            [("sky", "blue"), ("sky", "green sea"), ("grass", "green"), ("grass", "no")]
        )
    ]
    kwargs = dict(pretrained=model, tokenizer=tok, batch_size=4, max_length=96)
    stock, fast = HFLM(**kwargs), PrefixSharingLM(**kwargs)
    with torch.no_grad():
        assert_same(stock.loglikelihood(requests), fast.loglikelihood(requests))
