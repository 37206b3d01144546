"""helios's tokenizer against llama.cpp's own test vectors, and round trips."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helios_core.model import Model
from tests.conftest import VOCAB_MODELS

SEPARATOR = b"\n__ggml_vocab_test__\n"
VECTOR_MODELS = sorted(p for p in VOCAB_MODELS.glob("ggml-vocab-*.gguf") if p.with_suffix(".gguf.inp").exists())


def read_vectors(gguf) -> list[tuple[bytes, list[int]]]:
    """Pairs of (input bytes, expected ids), split as upstream's test-tokenizer-0 splits them."""
    raw = gguf.with_suffix(".gguf.inp").read_bytes()
    inputs = raw.split(SEPARATOR)
    if inputs and inputs[-1] == b"":
        inputs.pop()
    outputs = gguf.with_suffix(".gguf.out").read_text().splitlines()
    assert len(inputs) == len(outputs), f"{gguf.name}: .inp and .out disagree on the number of tests"
    return [(text, [int(t) for t in line.split()]) for text, line in zip(inputs, outputs, strict=True)]


def test_upstream_vector_files_are_present():
    assert len(VECTOR_MODELS) >= 10


@pytest.mark.parametrize("gguf", VECTOR_MODELS, ids=lambda p: p.name.removeprefix("ggml-vocab-").removesuffix(".gguf"))
def test_tokenize_matches_upstream_vectors(gguf):
    with Model(gguf, vocab_only=True) as model:
        failures = []
        for text, expected in read_vectors(gguf):
            got = model.vocab.tokenize(text, add_special=False, parse_special=False)
            if got != expected:
                failures.append((text[:40], expected[:12], got[:12]))
        assert failures == []


def test_detokenize_round_trips_on_the_default_model(model):
    text = "Hello, world! Ünïcödé, 日本語, emoji 🦙 and  double  spaces\n\ttabs."
    tokens = model.vocab.tokenize(text, add_special=False)
    assert model.vocab.detokenize(tokens) == text


@settings(max_examples=150, deadline=None)
@given(st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=60))
def test_detokenize_inverts_tokenize_for_any_text(model, text):
    tokens = model.vocab.tokenize(text, add_special=False)
    assert model.vocab.detokenize(tokens) == text


def test_pieces_concatenate_to_the_detokenized_bytes(model):
    text = "Zürich 🦙 naïve café"
    tokens = model.vocab.tokenize(text, add_special=False)
    joined = b"".join(model.vocab.token_to_piece(t) for t in tokens)
    assert joined.decode("utf-8") == text


def test_bos_is_added_only_when_asked(model):
    with_bos = model.vocab.tokenize("hi")
    without = model.vocab.tokenize("hi", add_special=False)
    assert with_bos == [model.vocab.bos] + without


def test_control_tokens_parse_only_with_parse_special(model):
    parsed = model.vocab.tokenize("<start_of_turn>user", add_special=False, parse_special=True)
    literal = model.vocab.tokenize("<start_of_turn>user", add_special=False, parse_special=False)
    assert model.vocab.is_control(parsed[0])
    assert len(literal) > len(parsed)


def test_end_of_generation_tokens(model):
    vocab = model.vocab
    assert vocab.is_eog(vocab.eos)
    end_of_turn = vocab.tokenize("<end_of_turn>", add_special=False, parse_special=True)[0]
    assert vocab.is_eog(end_of_turn)
    assert not vocab.is_eog(vocab.tokenize("hello", add_special=False)[0])
