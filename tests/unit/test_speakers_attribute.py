"""The attribution core [pure]: turns + lines -> labelled lines, split at changes of speaker."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from captiond.speakers.attribute import (
    MIN_PIECE_MS,
    LineIn,
    Turn,
    Word,
    attribute,
    correct_share,
    coverage,
)

SPEAKERS = ("A", "B", "C")


@st.composite
def talk(draw):  # type: ignore[no-untyped-def]
    """Back-to-back turns (no overlap), and lines cut from the same time with word times."""
    turns, t = [], 0
    for _ in range(draw(st.integers(1, 8))):
        length = draw(st.integers(300, 8_000))
        turns.append(Turn(t, t + length, draw(st.sampled_from(SPEAKERS))))
        t += length + draw(st.integers(0, 800))
    lines, pos, key = [], 0, 0
    while pos < t:
        length = draw(st.integers(200, 9_000))
        n = draw(st.integers(1, 12))
        step = max(1, length // n)
        words = tuple(Word(pos + i * step, pos + (i + 1) * step, f"w{key}_{i}") for i in range(n))
        with_words = draw(st.booleans())
        lines.append(LineIn(key, pos, pos + length, " ".join(w.word for w in words),
                            words if with_words else ()))
        key += 1
        pos += length + draw(st.integers(0, 1_500))
    return turns, lines


@settings(max_examples=300, deadline=None)
@given(talk())
def test_no_word_and_no_time_is_lost_or_invented(case) -> None:  # type: ignore[no-untyped-def]
    """Every line's pieces tile its time end to end and hold its words in order."""
    turns, lines = case
    for line, out in zip(lines, attribute(turns, lines), strict=True):
        assert out.key == line.key
        assert out.pieces[0].start_ms == line.start_ms and out.pieces[-1].end_ms == line.end_ms
        for a, b in zip(out.pieces, out.pieces[1:], strict=False):
            assert a.end_ms == b.start_ms and a.speaker != b.speaker
        assert " ".join(p.text for p in out.pieces).split() == line.text.split()


@settings(max_examples=300, deadline=None)
@given(talk())
def test_an_unsplit_line_gets_the_speaker_covering_most_of_it(case) -> None:  # type: ignore[no-untyped-def]
    """A line left whole is labelled with the speaker whose turns cover most of it."""
    turns, lines = case
    for line, out in zip(lines, attribute(turns, lines), strict=True):
        cov = coverage(turns, line.start_ms, line.end_ms)
        if len(out.pieces) == 1 and cov:
            assert cov[out.pieces[0].speaker] == max(cov.values())


@settings(max_examples=300, deadline=None)
@given(talk())
def test_splits_only_at_real_changes(case) -> None:  # type: ignore[no-untyped-def]
    """A piece of a split line is mostly its own speaker's time."""
    turns, lines = case
    for out in attribute(turns, lines):
        if len(out.pieces) < 2:
            continue
        for p in out.pieces:
            cov = coverage(turns, p.start_ms, p.end_ms)
            assert cov.get(p.speaker, 0) == max(cov.values())


def test_a_line_across_a_change_is_split_at_the_change() -> None:
    """Ann 0-5 s, Bob 5-10 s; one line 1-9 s without word times: two pieces at 5 s, words
    shared by time."""
    turns = [Turn(0, 5_000, "Ann"), Turn(5_000, 10_000, "Bob")]
    [out] = attribute(turns, [LineIn(1, 1_000, 9_000, "one two three four five six seven eight")])
    assert [(p.start_ms, p.end_ms, p.speaker, p.text) for p in out.pieces] == [
        (1_000, 5_000, "Ann", "one two three four"),
        (5_000, 9_000, "Bob", "five six seven eight")]


def test_a_short_interjection_does_not_split_a_line() -> None:
    """Bob's half-second "yeah" inside Ann's sentence leaves the line whole and Ann's."""
    turns = [Turn(0, 3_000, "Ann"), Turn(3_000, 3_500, "Bob"), Turn(3_500, 7_000, "Ann")]
    [out] = attribute(turns, [LineIn(1, 0, 7_000, "a long sentence of ann")])
    assert len(out.pieces) == 1 and out.pieces[0].speaker == "Ann"
    assert MIN_PIECE_MS > 500


def test_overlapping_and_out_of_range_turns_are_harmless() -> None:
    """Turns that overlap, or lie far from any line, neither crash nor mislabel."""
    turns = [Turn(0, 6_000, "A"), Turn(2_000, 3_000, "B"), Turn(-5_000, -1_000, "C"),
             Turn(90_000, 99_000, "C")]
    out = attribute(turns, [LineIn(1, 0, 6_000, "x y z"), LineIn(2, 50_000, 51_000, "q")])
    assert out[0].pieces[0].speaker == "A" and len(out[0].pieces) == 1
    assert out[1].pieces[0].speaker is None  # nobody near: left unlabelled


def test_correct_share_scores_line_time() -> None:
    """The score counts line time where the labelled speaker is talking."""
    truth = [Turn(0, 4_000, "A"), Turn(4_000, 8_000, "B")]
    out = attribute([Turn(0, 8_000, "A")], [LineIn(1, 0, 8_000, "a b c d")])
    assert correct_share(truth, out) == (4_000, 8_000)
