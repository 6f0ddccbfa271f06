"""Calibration ids and Wikipedia pages, offline, with a tiny tokenizer trained in memory."""

from __future__ import annotations

import datasets
import pytest
import torch
from gensim.test.utils import datapath
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from whatmatters.data import DataError, calibration_ids, wiki_pages

LEE = datapath("lee_background.cor")


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE (no unknown tokens) that, like Llama's, adds BOS unless told not to."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<bos>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["the cat sat on the mat", "a news story about the bushfire"], trainer)
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>")


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def pages() -> list[tuple[str, str]]:
    return wiki_pages()


def stream(tok: PreTrainedTokenizerFast, docs: list[str]) -> list[int]:
    """The documents tokenized one by one, without BOS, joined by EOS: the paper's calibration stream."""
    out: list[int] = []
    for i, doc in enumerate(docs):
        out += ([tok.eos_token_id] if i else []) + tok.encode(doc, add_special_tokens=False)
    return out


def test_lee_ids_have_the_requested_shape_and_are_deterministic(tok):
    ids = calibration_ids(tok, "lee", n=4, seq_len=64)
    assert ids.shape == (4, 64) and ids.dtype == torch.long
    assert torch.equal(ids, calibration_ids(tok, "lee", n=4, seq_len=64))


def test_lee_chunks_are_consecutive_slices_of_the_eos_joined_stream_without_bos(tok):
    with open(LEE, encoding="utf-8") as f:
        docs = f.read().splitlines()
    n, seq_len = 8, 1000  # long enough to cross several document boundaries
    expected = torch.tensor(stream(tok, docs)[: n * seq_len]).view(n, seq_len)
    ids = calibration_ids(tok, "lee", n=n, seq_len=seq_len)
    assert torch.equal(ids, expected)
    assert tok("x")["input_ids"][0] == tok.bos_token_id  # BOS is absent only because it is asked for
    assert (ids == tok.eos_token_id).sum() >= 2 and not (ids == tok.bos_token_id).any()


def test_text_file_documents_are_separated_by_blank_lines(tok, tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("first line\nsame document\n\n\n  second document\n\n", encoding="utf-8")
    expected = stream(tok, ["first line\nsame document", "second document"])
    ids = calibration_ids(tok, "text", n=1, seq_len=len(expected), path=str(path))
    assert ids.tolist() == [expected]
    assert calibration_ids(tok, "text", n=2, seq_len=5, path=str(path)).flatten().tolist() == expected[:10]


def test_tokens_file_rows_are_returned_exactly_as_given(tok, tmp_path):
    saved = torch.randint(0, len(tok), (5, 16))
    torch.save(saved, tmp_path / "ids.pt")
    assert torch.equal(
        calibration_ids(tok, "tokens", n=3, seq_len=16, path=str(tmp_path / "ids.pt")), saved[:3]
    )


def test_c4_reads_the_papers_validation_shard(tok, monkeypatch):
    calls = []
    docs = ["a web page", "another web page", "a third"]

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        return [{"text": doc, "timestamp": "2019"} for doc in docs]

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    expected = stream(tok, docs)[:12]
    assert calibration_ids(tok, "c4", n=2, seq_len=6).flatten().tolist() == expected
    assert calls == [
        (
            ("allenai/c4",),
            {"data_files": {"validation": "en/c4-validation.00000-of-00008.json.gz"}, "split": "validation"},
        )
    ]


def test_c4_offline_raises_a_data_error_naming_the_offline_sources(tok, monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'allenai/c4' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match="network") as err:
        calibration_ids(tok, "c4", n=1, seq_len=8)
    assert "data=lee" in str(err.value) and "data.path=" in str(err.value)


@pytest.mark.parametrize(
    "source, n, seq_len, saved, message",
    [
        ("lee", 0, 8, None, "n=0"),
        ("lee", 2, -1, None, "seq_len=-1"),
        ("wikitext", 2, 8, None, "'wikitext'.*lee, hellaswag, c4, text, tokens"),
        ("lee", 1000, 1000, None, r"has \d+ tokens.*= 1000000 are needed.*smaller n or seq_len"),
        ("tokens", 2, 8, torch.zeros(16).long(), "2-D"),
        ("tokens", 2, 8, torch.zeros(2, 8).int(), r"torch.int32.*\.long\(\)"),
        ("tokens", 2, 8, torch.zeros(2, 9).long(), "rows of 9 tokens but seq_len=8"),
        ("tokens", 3, 8, torch.zeros(2, 8).long(), "2 rows but n=3"),
        ("tokens", 2, 8, torch.full((2, 8), 999), r"max id 999 but the tokenizer's vocab size is \d+"),
    ],
    ids=["n", "seq_len", "source", "too-short", "1-D", "int32", "length", "rows", "vocab"],
)
def test_a_bad_request_raises_a_data_error_naming_the_problem(
    tok, tmp_path, source, n, seq_len, saved, message
):
    path = None
    if saved is not None:
        path = str(tmp_path / "ids.pt")
        torch.save(saved, path)
    with pytest.raises(DataError, match=message):
        calibration_ids(tok, source, n, seq_len, path)


@pytest.mark.parametrize("source", ["text", "tokens"])
def test_a_file_source_needs_an_existing_file(tok, tmp_path, source):
    with pytest.raises(DataError, match="set its path"):
        calibration_ids(tok, source, 2, 8)
    with pytest.raises(DataError, match="not found: .*nope"):
        calibration_ids(tok, source, 2, 8, path=str(tmp_path / "nope"))


def test_a_tokenizer_without_eos_cannot_join_documents(tok):
    no_eos = tiny_tokenizer()
    no_eos.eos_token = None
    with pytest.raises(DataError, match="EOS"):
        calibration_ids(no_eos, "lee", n=1, seq_len=8)


def test_wiki_pages_are_the_dumps_articles_without_redirects(pages):
    # The dump holds 206 pages: 99 redirects, one empty, 106 articles.
    assert len(pages) == 106
    assert len({title for title, _ in pages}) == len(pages)
    assert all(text and not text.startswith("#REDIRECT") for _, text in pages)
    assert sum(text.count("\n") for _, text in pages) > 10 * len(pages)  # paragraphs kept apart
    assert pages == wiki_pages()  # same order every time


def test_wiki_pages_carry_no_wiki_markup(pages):
    for title, text in pages:
        for markup in ("[[", "]]", "{{", "}}", "'''", "==", "|", "<ref", "File:", "px"):
            assert markup not in text, (title, markup)


def test_wiki_pages_share_no_text_with_the_lee_calibration_corpus(pages):
    def shingles(text: str, k: int = 8) -> set[tuple[str, ...]]:
        words = text.split()
        return {tuple(words[i : i + k]) for i in range(len(words) - k + 1)}

    with open(LEE, encoding="utf-8") as f:
        lee = shingles(f.read())
    assert not any(lee & shingles(text) for _, text in pages)
