"""SRT/WebVTT files captiond writes, read back by independent parsers, ffmpeg and Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from subtitle_readers import (
    ChromiumReader,
    expected,
    ffmpeg_convert,
    read_chromium,
    read_pysubs2,
    read_srt,
    read_webvtt,
    verify_file,
)

from captiond.exports.cues import SourceLine, TimedWord, build_cues, check
from captiond.exports.subtitles import render, srt_time, vtt_time


def meeting_lines() -> list[SourceLine]:
    """A short meeting with awkward text: long utterances, markup-like characters, Unicode,
    an overlapping second speaker, word timings on one line, a word too long for a line."""
    long_text = (
        "Okay, so the plan for this week is that Alice will update the documentation by "
        "Friday, and Bob is going to review the pull request for the new export feature "
        "before the release on Monday."
    )
    tokens = long_text.split()
    words = tuple(
        TimedWord(f" {t}", 2_000 + i * 380, 2_000 + i * 380 + 300) for i, t in enumerate(tokens)
    )
    return [
        SourceLine(0, 1_500, "Good morning, everyone.", speaker="Carol"),
        SourceLine(2_000, 2_000 + len(tokens) * 380, long_text, words=words, speaker="Carol"),
        SourceLine(15_000, 16_000, "Sounds good.", channel="remote", speaker="Alice"),
        SourceLine(15_200, 17_000, "Tom & Jerry <script> say --> “bonjour” à tous, naïve café.",
                   speaker="Bob"),
        SourceLine(18_000, 30_000, "We decided: ship it. " * 6, speaker="Carol"),
        SourceLine(31_000, 33_000, "See https://example.com/a-very-long-path/that/never/ends/x "
                                   "for details."),
        SourceLine(3_600_000 + 123, 3_600_000 + 2_456, "One hour in."),
    ]


@pytest.fixture(scope="module")
def cues():
    return build_cues(meeting_lines())


def test_clock_formats():
    """Times are written HH:MM:SS with a comma (SRT) or a dot (WebVTT) before milliseconds."""
    assert srt_time(3_723_456) == "01:02:03,456"
    assert vtt_time(3_723_456) == "01:02:03.456"
    assert vtt_time(-5) == "00:00:00.000"


def test_fixture_cues_meet_limits_or_are_explained(cues):
    """The fixture exercises splitting; only unavoidable problems are reported, with causes."""
    assert len(cues) >= 10
    problems = check(cues)
    assert problems, "the long URL must be reported"
    assert all(p.cause for p in problems), [str(p) for p in problems]
    assert {p.rule for p in problems} <= {"line_length", "reading_speed", "delayed"}


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_two_parsers_agree_with_written_cues(cues, tmp_path: Path, fmt: str):
    """pysubs2 and srt/webvtt-py each read back every cue with its exact times and text."""
    path = tmp_path / f"meeting.{fmt}"
    path.write_text(render(cues, fmt), encoding="utf-8")  # type: ignore[arg-type]
    want = expected(cues, fmt)
    assert read_pysubs2(path) == want
    if fmt == "srt":
        assert read_srt(path) == want
    assert read_webvtt(path) == want


@pytest.mark.parametrize(("fmt", "to"), [("srt", "vtt"), ("vtt", "srt"), ("srt", "ass")])
def test_ffmpeg_converts_with_same_cues(cues, tmp_path: Path, fmt: str, to: str):
    """ffmpeg converts the file without error; the result has the same cue count and times."""
    src = tmp_path / f"meeting.{fmt}"
    src.write_text(render(cues, fmt), encoding="utf-8")  # type: ignore[arg-type]
    out = ffmpeg_convert(src, tmp_path / f"converted.{to}")
    # SRT has no escaping: ffmpeg writes "<script>" raw and pysubs2 would drop it as a tag,
    # so its SRT output is read with the literal `srt` parser.
    got = read_srt(out) if to == "srt" else read_pysubs2(out)
    want = expected(cues, fmt)
    assert len(got) == len(want)
    if to == "ass":  # ASS keeps centiseconds
        assert all(abs(g[0] - w[0]) <= 10 and abs(g[1] - w[1]) <= 10 for g, w in zip(got, want))
    else:
        assert [(g[0], g[1]) for g in got] == [(w[0], w[1]) for w in want]
        assert [g[2].split() for g in got] == [w[2].split() for w in want]


def test_chromium_track_cues_match(cues, tmp_path: Path):
    """Headless Chromium loads the WebVTT through <track>: same cues, times and text."""
    path = tmp_path / "meeting.vtt"
    path.write_text(render(cues, "vtt", header="Weekly sync"), encoding="utf-8")
    assert read_chromium(path) == expected(cues, "vtt")


def test_vtt_escapes_markup():
    """Text that looks like markup or a timing arrow is escaped in WebVTT, replaced in SRT."""
    cue_list = build_cues([SourceLine(0, 2_000, "a <b> & c --> d")])
    vtt = render(cue_list, "vtt")
    assert "a &lt;b&gt; &amp; c --&gt; d" in vtt
    assert vtt.count("-->") == 1
    srt_out = render(cue_list, "srt")
    assert "a ‹b› & c --› d" in srt_out


_speech_text = st.lists(
    st.sampled_from(list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789 .,;:!?'\"-&<>()"
                         "éüñßçø€£—…’“”«»") + ["日本", "Ελ", "привет", " --> ", "&amp;"]),
    min_size=1, max_size=120,
).map("".join).filter(lambda t: t.strip())


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    with ChromiumReader(folder) as reader:
        yield reader


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 36_000_000), st.integers(0, 9_000), _speech_text),
                min_size=1, max_size=12))
def test_random_text_survives_every_reader(browser, lines):
    """Random speech-like text (markup characters, Unicode, arrows) written as SRT and WebVTT
    is read back identically by pysubs2, srt/webvtt-py, ffmpeg and Chromium."""
    cue_list = build_cues([SourceLine(s, s + d, t) for s, d, t in lines])
    folder = browser.folder / f"case-{len(list(browser.folder.iterdir()))}"
    folder.mkdir()
    for fmt in ("srt", "vtt"):
        path = folder / f"random.{fmt}"
        path.write_text(render(cue_list, fmt), encoding="utf-8")  # type: ignore[arg-type]
        assert verify_file(path, browser=browser) == expected(cue_list, fmt)
