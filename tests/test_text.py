"""Incremental detokenizing and streaming stop strings."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from helios_core.text import IncrementalDetokenizer, StopMatcher, truncate_at_stop


def stream(pieces: list[str], stops: list[str]) -> str:
    matcher = StopMatcher(stops)
    out = []
    for piece in pieces:
        text, stopped = matcher.feed(piece)
        out.append(text)
        if stopped:
            return "".join(out)
    return "".join(out) + matcher.flush()


@st.composite
def text_cut_into_pieces(draw):
    alphabet = st.sampled_from("ab c\n🦙é")
    text = draw(st.text(alphabet, max_size=40))
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=12)))
    bounds = [0, *cuts, len(text)]
    pieces = [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    stops = draw(st.lists(st.text(alphabet, min_size=1, max_size=4), max_size=4))
    return text, pieces, stops


@settings(max_examples=600, deadline=None)
@given(text_cut_into_pieces())
def test_streamed_pieces_concatenate_to_the_non_streamed_result(case):
    text, pieces, stops = case
    assert stream(pieces, stops) == truncate_at_stop(text, stops)


def test_held_back_text_is_released_once_it_cannot_match():
    matcher = StopMatcher(["</s>"])
    assert matcher.feed("hello <") == ("hello ", False)
    assert matcher.feed("/") == ("", False)
    assert matcher.feed("x") == ("</x", False)


def test_a_stop_spanning_pieces_is_removed():
    assert stream(["The end", "<", "/s", ">", " more"], ["</s>"]) == "The end"


def test_the_first_stop_to_appear_wins():
    assert truncate_at_stop("one two three", ["three", "two"]) == "one "
    assert truncate_at_stop("xbcd", ["bcd", "c"]) == "xb"  # "c" is complete before "bcd"


def test_no_stops_passes_text_through():
    assert stream(["a", "b"], []) == "ab"


class FakeVocab:
    def __init__(self, pieces: dict[int, bytes]):
        self.pieces = pieces
        self.whole_texts: dict[int, str] = {}  # the piece table the detokenizer fills, as on a Vocab

    def token_to_piece(self, token: int) -> bytes:
        return self.pieces[token]


def test_split_utf8_characters_are_held_until_complete():
    llama = "🦙".encode()
    vocab = FakeVocab({0: b"hi ", 1: llama[:1], 2: llama[1:3], 3: llama[3:], 4: "日".encode()})
    detok = IncrementalDetokenizer(vocab)
    assert [detok.feed(t) for t in [0, 1, 2, 3, 4]] == ["hi ", "", "", "🦙", "日"]
    assert detok.flush() == ""


def test_an_unfinished_character_at_the_end_becomes_a_replacement():
    detok = IncrementalDetokenizer(FakeVocab({0: "é".encode()[:1]}))
    assert detok.feed(0) == ""
    assert detok.flush() == "\ufffd"


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30), st.data())
def test_pieces_are_valid_and_concatenate_to_the_text(text, data):
    raw = text.encode()
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=10)))
    bounds = [0, *cuts, len(raw)]
    vocab = FakeVocab({i: raw[a:b] for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False))})
    detok = IncrementalDetokenizer(vocab)
    pieces = [detok.feed(i) for i in range(len(bounds) - 1)] + [detok.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces) or "\ufffd" in text


class CountingVocab(FakeVocab):
    def __init__(self, pieces: dict[int, bytes]):
        super().__init__(pieces)
        self.calls = 0

    def token_to_piece(self, token: int) -> bytes:
        self.calls += 1
        return super().token_to_piece(token)


def test_a_whole_character_token_is_decoded_once_per_vocabulary():
    vocab = CountingVocab({0: b"hi", 1: " 日".encode()})
    first, second = IncrementalDetokenizer(vocab), IncrementalDetokenizer(vocab)
    assert [first.feed(0), first.feed(1), second.feed(0), second.feed(1), second.feed(0)] == ["hi", " 日"] * 2 + ["hi"]
    assert vocab.calls == 2


def test_a_token_that_completes_a_split_character_is_not_answered_from_the_table():
    e_acute = "é".encode()
    detok = IncrementalDetokenizer(FakeVocab({0: e_acute[:1], 1: e_acute[1:]}))
    assert detok.feed(1) == "\ufffd"  # a lone continuation byte, from a clean state: kept in the table
    assert [detok.feed(0), detok.feed(1), detok.feed(1)] == ["", "é", "\ufffd"]
