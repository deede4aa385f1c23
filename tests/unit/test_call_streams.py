"""The two-sided call without audio: how --source becomes streams, the echo guard, and how
subtitles name the speakers."""

from __future__ import annotations

from pathlib import Path

import pysubs2
import pytest
import webvtt
from hypothesis import given
from hypothesis import strategies as st

from captiond.config import parse
from captiond.daemon import Daemon, plan_streams
from captiond.errors import AudioError, ConfigError
from captiond.events import Line, LineStatus, LineUpdate, UpdateKind
from captiond.exports.cues import Cue
from captiond.exports.subtitles import render
from captiond.transcript.echo import ECHO_REASON, EchoGuard, echo_score, is_echo, words

# -- --source to streams -----------------------------------------------------------------


def test_single_source_keeps_one_unlabelled_stream() -> None:
    """`mic` or `system:X` alone: one stream, no channel or speaker (a single-source session)."""
    (plan,) = plan_streams("system:alsa_output.usb")
    assert (plan.spec.kind, plan.spec.arg, plan.channel, plan.speaker) == ("system", "alsa_output.usb", "", None)


def test_mic_plus_system_is_me_and_them() -> None:
    """`mic:DEV+system:SINK`: a "mic" stream labelled Me and a "system" stream labelled Them;
    the labels come from the settings."""
    plans = plan_streams("mic:USB Headset+system:alsa_output.pci")
    assert [(p.spec.kind, p.spec.arg, p.channel, p.speaker) for p in plans] == [
        ("mic", "USB Headset", "mic", "Me"),
        ("system", "alsa_output.pci", "system", "Them"),
    ]
    plans = plan_streams("system+mic:pulse:vmic", me="Ana", them="Customer")
    assert [(p.channel, p.speaker) for p in plans] == [("system", "Customer"), ("mic", "Ana")]
    assert [p.channel for p in plan_streams("mic:1+mic:2")] == ["mic", "mic2"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mic+", r"empty source in 'mic\+'"),
        ("mic+stdin", "stdin cannot be one of several sources"),
        ("mic+speakers", "unknown audio source 'speakers'"),
        ("mic+system+mic+system+mic", "at most 4 at once"),
    ],
)
def test_bad_combined_sources_say_why(text: str, message: str) -> None:
    """A malformed combination names the problem."""
    with pytest.raises(AudioError, match=message):
        plan_streams(text)


def test_labels_are_settings() -> None:
    """call.me_label / call.them_label are checked settings (empty is refused)."""
    cfg = parse("[call]\nme_label = 'Ana'\n", env={})
    assert (cfg["call.me_label"], cfg["call.them_label"], cfg["call.echo_guard"]) == ("Ana", "Them", False)
    with pytest.raises(ConfigError, match="call.them_label"):
        parse("[call]\nthem_label = ''\n", env={})


def test_daemon_guards_echo_only_when_asked_and_both_sides_run() -> None:
    """The echo guard is off by default; on, it needs a mic and a system channel."""

    class _S:  # the daemon only reads .channel here
        def __init__(self, channel: str) -> None:
            self.channel = channel

    both = [_S("mic"), _S("system")]
    assert Daemon(parse("", env={})).echo_guard(both) is None  # type: ignore[arg-type]
    on = parse("[call]\necho_guard = true\necho_window_s = 2.5\n", env={})
    guard = Daemon(on).echo_guard(both)  # type: ignore[arg-type]
    assert guard is not None and guard.window_ms == 2_500
    assert Daemon(on).echo_guard([_S("")]) is None  # type: ignore[arg-type]


# -- echo guard --------------------------------------------------------------------------


def line(channel: str, text: str, start: int, end: int, *, item: str = "", status: LineStatus = LineStatus.FINAL) -> Line:
    return Line(item or f"{channel}-{start}", None, 0, start, end, text, status, channel=channel)


def final(ln: Line) -> LineUpdate:
    return LineUpdate(UpdateKind.FINALISED, ln)


def guard() -> EchoGuard:
    return EchoGuard("mic", "system", window_ms=3_000, threshold=0.7)


def test_echo_score_counts_mic_words_found_in_order() -> None:
    """All of the mic's words inside the system line: 1; unrelated: low; short lines exact."""
    them = words("So the budget for next quarter is approved, thanks everyone.")
    assert echo_score(words("the budget for next quarter"), them) == 1.0
    assert echo_score(words("I think we should wait a week"), them) < 0.3
    assert echo_score(words("thanks"), words("thanks")) == 1.0
    assert echo_score(words("thanks"), them) == 0.0  # too short to drop on a partial match


def test_mic_line_repeating_the_speakers_is_dropped() -> None:
    """A mic final matching a system final close in time becomes a removal with no text."""
    g = guard()
    them = line("system", "The budget for next quarter is approved.", 10_000, 13_000)
    assert g(final(them)) == [final(them)]
    me = line("mic", "the budget for next quarter is approved", 10_300, 13_200)
    (out,) = g(final(me))
    assert out.kind is UpdateKind.REMOVED
    assert (out.line.item_id, out.line.text, out.line.error) == (me.item_id, "", ECHO_REASON)
    assert g.dropped == 1


def test_mic_final_first_is_removed_when_the_system_line_arrives() -> None:
    """Order does not matter: when the system line comes later, the mic echo is withdrawn."""
    g = guard()
    me = line("mic", "the budget for next quarter is approved", 10_300, 13_200)
    assert g(final(me)) == [final(me)]
    them = line("system", "The budget for next quarter is approved.", 10_000, 13_000)
    out = g(final(them))
    assert out[0] == final(them)
    assert [(u.kind, u.line.item_id, u.line.text) for u in out[1:]] == [(UpdateKind.REMOVED, me.item_id, "")]
    assert g(final(line("system", "the budget for next quarter is approved", 10_000, 13_000, item="s2"))) == [
        final(line("system", "the budget for next quarter is approved", 10_000, 13_000, item="s2"))
    ]  # the mic line is withdrawn once only


def test_own_speech_and_far_apart_repeats_are_kept() -> None:
    """What I say myself, or the same words minutes later (a quote), stays."""
    g = guard()
    g(final(line("system", "The budget for next quarter is approved.", 10_000, 13_000)))
    mine = line("mic", "great, then I will send the invoice today", 13_500, 15_000)
    assert g(final(mine)) == [final(mine)]
    later = line("mic", "the budget for next quarter is approved", 60_000, 63_000)
    assert g(final(later)) == [final(later)]
    partial = line("mic", "the budget for next quarter", 10_300, 12_000, status=LineStatus.PARTIAL)
    assert g(LineUpdate(UpdateKind.UPDATED, partial)) == [LineUpdate(UpdateKind.UPDATED, partial)]


@given(
    st.lists(st.sampled_from("the budget for next quarter is approved we ship on friday".split()), min_size=3, max_size=12),
    st.integers(0, 100_000),
    st.integers(0, 10_000),
)
def test_is_echo_needs_time_and_words(ws: list[str], start: int, offset: int) -> None:
    """A line always echoes itself when close in time, and never beyond the window."""
    text = " ".join(ws)
    them = line("system", text, start, start + 2_000)
    near = line("mic", text, start + offset % 3_000, start + offset % 3_000 + 2_000)
    far = line("mic", text, start + 5_001 + offset, start + 7_001 + offset)
    assert is_echo(near, them, window_ms=3_000, threshold=1.0)
    assert not is_echo(far, them, window_ms=3_000, threshold=0.1)


# -- subtitles name the speakers ---------------------------------------------------------


def test_subtitles_name_speakers_of_a_call(tmp_path: Path) -> None:
    """With speakers on, SRT cues start "Me: " and WebVTT cues are voice spans that
    webvtt-py and pysubs2 read back; off (one-channel sessions), the text is unchanged."""
    cues = [
        Cue(0, 1_500, ("Can you hear me?",), "Me"),
        Cue(1_600, 3_000, ("Yes, loud and clear", "thanks."), "Them"),
    ]
    srt = render(cues, "srt", speakers=True)
    assert "Me: Can you hear me?" in srt and "Them: Yes, loud and clear\nthanks." in srt
    assert "Me:" not in render(cues, "srt")
    path = tmp_path / "call.vtt"
    path.write_text(render(cues, "vtt", speakers=True), encoding="utf-8")
    read = webvtt.read(str(path))
    assert [(c.voice, c.text) for c in read] == [
        ("Me", "Can you hear me?"),
        ("Them", "Yes, loud and clear\nthanks."),
    ]
    subs = pysubs2.load(str(path))
    assert [e.plaintext for e in subs] == ["Can you hear me?", "Yes, loud and clear\nthanks."]
