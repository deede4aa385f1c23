"""SRT and WebVTT text for cues [pure].

Both writers produce UTF-8 text with ``\\n`` line ends (every parser we test accepts it) and
stream: :func:`iter_srt` / :func:`iter_vtt` yield one cue at a time, so an eight-hour session
never needs its whole file in memory twice.

Text is made safe for each format: WebVTT needs ``&``, ``<`` and ``>`` escaped (and a cue
text must not contain ``-->``); SRT has no escaping, so ``<``/``>`` and ``{``/``}`` (which
players read as formatting tags) are replaced by similar-looking characters.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Literal

from captiond.exports.cues import Cue
from captiond.timefmt import clock

Format = Literal["srt", "vtt"]
FORMATS: tuple[Format, ...] = ("srt", "vtt")

_SRT_SAFE = str.maketrans({"<": "‹", ">": "›", "{": "(", "}": ")"})


def srt_time(ms: int) -> str:
    """``01:02:03,456``"""
    return clock(ms, ",")


def vtt_time(ms: int) -> str:
    """``01:02:03.456`` (hours always written, so every reader agrees)."""
    return clock(ms, ".")


def _clean(line: str) -> str:
    # A blank line ends a cue in both formats; our lines never are, but be safe.
    return " ".join(line.split()) or "…"


def srt_text(line: str) -> str:
    return _clean(line).translate(_SRT_SAFE)


def vtt_text(line: str) -> str:
    return _clean(line).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def vtt_voice(name: str) -> str:
    """A speaker name as a WebVTT voice annotation (no tag characters, one line)."""
    return " ".join(name.replace(">", "›").replace("<", "‹").replace("&", "&amp;").split()) or "?"


def iter_srt(cues: Iterable[Cue], *, speakers: bool = False) -> Iterator[str]:
    """SRT; with ``speakers`` (a two-sided call: Me / Them), a cue with a speaker starts
    ``NAME: ``."""
    for number, cue in enumerate(cues, 1):
        lines = list(cue.lines)
        if speakers and cue.speaker and lines:
            lines[0] = f"{cue.speaker}: {lines[0]}"
        body = "\n".join(srt_text(line) for line in lines)
        yield f"{number}\n{srt_time(cue.start_ms)} --> {srt_time(cue.end_ms)}\n{body}\n\n"


def iter_vtt(cues: Iterable[Cue], *, header: str = "", speakers: bool = False) -> Iterator[str]:
    """WebVTT; ``header`` (one line, no ``-->``) goes after ``WEBVTT`` as its title; with
    ``speakers``, a cue with a speaker is a voice span ``<v NAME>``."""
    title = " ".join(header.replace("-->", "->").split())
    yield f"WEBVTT - {title}\n\n" if title else "WEBVTT\n\n"
    for number, cue in enumerate(cues, 1):
        body = "\n".join(vtt_text(line) for line in cue.lines)
        if speakers and cue.speaker:
            # A WebVTT voice span: players show (or style) the speaker's name.
            body = f"<v {vtt_voice(cue.speaker)}>{body}</v>"
        yield f"{number}\n{vtt_time(cue.start_ms)} --> {vtt_time(cue.end_ms)}\n{body}\n\n"


def render(cues: Iterable[Cue], fmt: Format, *, header: str = "", speakers: bool = False) -> str:
    if fmt == "srt":
        return "".join(iter_srt(cues, speakers=speakers))
    if fmt == "vtt":
        return "".join(iter_vtt(cues, header=header, speakers=speakers))
    raise ValueError(f"unknown subtitle format {fmt!r} (use srt or vtt)")
