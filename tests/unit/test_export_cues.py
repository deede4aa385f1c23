"""The cue builder: limits hold for any transcript, or the QC says why they cannot."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from captiond.exports.cues import (
    CueLimits,
    SourceLine,
    TimedWord,
    break_lines,
    build_cues,
    check,
    qc_report,
    segment_line,
)

LIMITS = CueLimits()

_word = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyzé", min_size=1, max_size=12),
    st.sampled_from(["the", "a", "and", "but", "Alice", "Bob", "okay,", "done.", "why?", "—"]),
    st.text(alphabet="xyz", min_size=43, max_size=70),  # longer than any line
)


@st.composite
def source_lines(draw: st.DrawFn) -> SourceLine:
    tokens = draw(st.lists(_word, min_size=1, max_size=60))
    start = draw(st.integers(0, 4 * 3_600_000))
    duration = draw(st.integers(0, 40_000))
    words: tuple[TimedWord, ...] = ()
    if draw(st.booleans()):
        # word timings as an engine gives them: leading spaces, increasing, inside the line
        offsets = sorted(draw(st.lists(st.integers(0, duration), min_size=len(tokens),
                                       max_size=len(tokens))))
        words = tuple(TimedWord(f" {t}", start + o, start + o + draw(st.integers(0, 800)))
                      for t, o in zip(tokens, offsets))
        if draw(st.booleans()):
            # timings that do not spell the text (an engine that edited its words, times out
            # of the line): the builder must fall back to proportional times or clamp
            words = words[1:] if draw(st.booleans()) else tuple(
                TimedWord(w.text, w.start_ms - 5_000, w.end_ms + 50_000) for w in words)
    return SourceLine(start, start + duration, " ".join(tokens), words=words,
                      speaker=draw(st.sampled_from([None, "Alice", "Bob"])))


def assert_within_limits(cues, limits: CueLimits) -> None:
    for i, cue in enumerate(cues):
        assert cue.end_ms > cue.start_ms >= 0
        assert limits.min_duration_ms <= cue.duration_ms <= limits.max_duration_ms
        assert 1 <= len(cue.lines) <= limits.max_lines
        for line in cue.lines:
            assert line and line == line.strip()
            # only a single word longer than a line may exceed it, and then it stands alone
            assert len(line) <= limits.max_line_chars or " " not in line, line
        if i:
            assert cue.start_ms >= cues[i - 1].end_ms + limits.min_gap_ms
    for p in check(cues, limits):
        assert p.rule in {"line_length", "reading_speed", "delayed"}, str(p)
        assert p.cause, f"unexplained problem: {p}"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(source_lines(), max_size=25))
def test_random_transcripts_keep_the_limits(lines):
    """Any transcript: sorted, non-overlapping cues within every limit, or a QC cause."""
    cues = build_cues(lines, LIMITS)
    assert_within_limits(cues, LIMITS)
    assert Counter(w for c in cues for w in c.text.split()) == Counter(
        w for ln in lines for w in ln.text.split())


@settings(max_examples=100, deadline=None)
@given(st.lists(source_lines(), max_size=10),
       st.integers(20, 60), st.integers(1, 3), st.floats(8, 30))
def test_other_limits_are_kept_too(lines, chars, nlines, cps):
    """Configured limits (line length, lines, reading speed) are honoured like the defaults."""
    limits = CueLimits(max_line_chars=chars, max_lines=nlines, max_cps=cps)
    assert_within_limits(build_cues(lines, limits), limits)


@settings(max_examples=200, deadline=None)
@given(st.lists(source_lines(), max_size=12))
def test_reading_speed_is_kept_when_timing_allows(lines):
    """A cue is too fast only when the next cue follows at the minimum gap or it is 7 s long."""
    cues = build_cues(lines, LIMITS)
    for i, cue in enumerate(cues):
        if cue.cps > LIMITS.max_cps + 0.05:
            nxt = cues[i + 1] if i + 1 < len(cues) else None
            assert (nxt is not None and nxt.start_ms == cue.end_ms + LIMITS.min_gap_ms) or (
                cue.duration_ms == LIMITS.max_duration_ms), cue


def test_long_utterance_splits_at_word_times():
    """With word timings, each cue starts when its first word was spoken."""
    tokens = ["we", "looked", "at", "the", "numbers", "for", "the", "third", "quarter", "and", "they", "are", "better", "than", "expected,", "so", "the", "board", "agreed", "to", "fund", "the", "second", "phase", "of", "the", "project"]
    words = tuple(TimedWord(t, 10_000 + i * 500, 10_000 + i * 500 + 400)
                  for i, t in enumerate(tokens))
    line = SourceLine(10_000, 10_000 + len(tokens) * 500, " ".join(tokens), words=words)
    cues = build_cues([line])
    assert len(cues) >= 2
    starts = {w.start_ms: w.text for w in words}
    for cue in cues:
        assert starts[cue.speech_start_ms] == cue.text.split()[0]


def test_without_word_times_split_is_proportional():
    """Without word timings a cue's start is proportional to the text before it."""
    text = "a" * 40 + " " + "b" * 40 + " " + "c" * 40 + " " + "d" * 40
    chunks = segment_line(SourceLine(0, 12_000, text), LIMITS)
    assert [len(c.lines) for c in chunks] == [2, 2]
    assert chunks[1].start_ms == pytest.approx(6_000, abs=100)


def test_breaks_at_natural_points():
    """Lines break after punctuation or before a conjunction, not after an article."""
    assert break_lines(["Thanks", "everyone", "for", "coming", "today,", "I", "know", "it", "is", "early", "in", "the", "morning"], LIMITS) == ("Thanks everyone for coming today,",
                                             "I know it is early in the morning")
    assert break_lines(["We", "should", "probably", "move", "the", "big", "database", "migration", "to", "the", "next", "sprint"], LIMITS)[1].split()[0] != "sprint"
    lines = break_lines(["I", "reviewed", "the", "proposal", "yesterday", "evening", "and", "the", "budget", "looks", "fine"], LIMITS)
    assert lines == ("I reviewed the proposal yesterday evening", "and the budget looks fine")
    for a, _b in [break_lines(("x" * 20 + " the documentation team leads " + "y" * 20).split(),
                             LIMITS)]:
        assert not a.endswith(" the")


def test_short_cue_is_extended_for_reading():
    """A quick line stays up long enough to read at 17 characters/second when there is room."""
    text = "That is a really interesting point about the budget."
    cues = build_cues([SourceLine(1_000, 1_800, text), SourceLine(20_000, 20_300, "Next.")])
    assert cues[0].duration_ms >= len(text) * 1000 / 17
    assert cues[1].duration_ms == LIMITS.min_duration_ms


def test_overlapping_speakers_are_delayed_not_stacked():
    """Two channels at once: the second cue waits for the first (and QC says so when late)."""
    a = SourceLine(0, 6_000, "I think we should take the first option because it is cheaper")
    b = SourceLine(500, 1_500, "Agreed.")
    cues = build_cues([b, a])
    assert cues[0].text.startswith("I think")
    assert cues[1].start_ms == cues[0].end_ms + LIMITS.min_gap_ms
    assert any(p.rule in ("reading_speed", "delayed") for p in check(cues))


def test_qc_flags_impossible_word_and_foreign_cues():
    """QC names cues over the limits and why: a 60-character word; broken hand-made cues."""
    cues = build_cues([SourceLine(0, 3_000, "see " + "x" * 60 + " now")])
    report = qc_report(cues)
    assert "line_length" in report and "60 characters" in report
    from captiond.exports.cues import Cue
    bad = [Cue(0, 9_000, ("a",)), Cue(8_000, 8_000, ("b",)), Cue(100, 300, ("c",))]
    rules = {p.rule for p in check(bad)}
    assert {"duration", "timing", "order"} <= rules
    assert all(not p.cause for p in check(bad) if p.rule in {"duration", "order"})


def test_limits_are_validated():
    """Impossible limits are refused with the value named."""
    with pytest.raises(ValueError, match="max_lines"):
        CueLimits(max_lines=5)
    with pytest.raises(ValueError, match="min_duration_ms"):
        CueLimits(min_duration_ms=8_000)
