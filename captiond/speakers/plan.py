"""Planning a diarization run [pure]: chunks, cleaning what the service returns, one label per
person across chunks, and the reference clips that carry identity from chunk to chunk.

The diarizing model labels the speakers of each request on its own (``A``, ``B``, ... in
order of appearance) unless told who is known: up to :data:`MAX_KNOWN` names, each with a
2-10 s clip. A run keeps one set of *session labels* (``Speaker 1``, ``Speaker 2``, ... or
the name of a known speaker): for every chunk after the first, the longest solo stretches of
the labels heard so far become the chunk's known speakers, so a person keeps their label;
someone new gets the next number.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from captiond.speakers.attribute import Turn

#: Known speakers one request may name (the API's limit).
MAX_KNOWN = 4
#: Length of a reference clip (the API's limits, with a margin at the top).
CLIP_MIN_MS = 2_000
CLIP_MAX_MS = 8_000
#: Label of a person first heard in this session, numbered from 1.
LABEL_PREFIX = "Speaker "


@dataclass(frozen=True)
class Chunk:
    index: int
    start_ms: int
    end_ms: int


def plan_chunks(duration_ms: int, chunk_ms: int) -> list[Chunk]:
    """The session's audio in chunks of at most ``chunk_ms``, of equal length."""
    if duration_ms <= 0:
        return []
    n = max(1, math.ceil(duration_ms / chunk_ms))
    size = math.ceil(duration_ms / n)
    return [Chunk(i, i * size, min(duration_ms, (i + 1) * size)) for i in range(n)]


@dataclass(frozen=True)
class RawSegment:
    """One segment as the service returned it (seconds from the chunk's start)."""

    start: float
    end: float
    speaker: str
    text: str


def clean(segments: Iterable[RawSegment], chunk: Chunk) -> list[tuple[int, int, str, str]]:
    """Segments on the session clock, clipped to the chunk; empty, inverted or non-finite
    ones dropped (the service has returned times past the end of the audio)."""
    out: list[tuple[int, int, str, str]] = []
    length = chunk.end_ms - chunk.start_ms
    for s in segments:
        if not (math.isfinite(s.start) and math.isfinite(s.end)):
            continue
        lo = max(0, min(length, round(s.start * 1000)))
        hi = max(0, min(length, round(s.end * 1000)))
        if hi <= lo or not s.speaker.strip():
            continue
        out.append((chunk.start_ms + lo, chunk.start_ms + hi, s.speaker.strip()[:64], s.text))
    out.sort()
    return out


class Labels:
    """Session labels from per-request labels."""

    def __init__(self, names: Sequence[str] = ()) -> None:
        self.known = list(names)  # stored known speakers, by name
        self.count = 0

    def taken(self, existing: Iterable[str]) -> None:
        """Labels already in stored turns (a resumed run numbers on after them)."""
        for label in existing:
            if label.startswith(LABEL_PREFIX) and label[len(LABEL_PREFIX):].isdigit():
                self.count = max(self.count, int(label[len(LABEL_PREFIX):]))

    def map(self, segments: Sequence[tuple[int, int, str, str]], sent: Sequence[str]
            ) -> list[tuple[int, int, str, str]]:
        """One chunk's segments relabelled: a name we sent stays; any other label (``A``, a
        name we did not send) is a new person of this session."""
        fresh: dict[str, str] = {}
        out = []
        for a, b, label, text in segments:
            if label in sent:
                who = label
            else:
                if label not in fresh:
                    self.count += 1
                    fresh[label] = f"{LABEL_PREFIX}{self.count}"
                who = fresh[label]
            out.append((a, b, who, text))
        return out


def solo_stretches(turns: Sequence[Turn]) -> dict[str, tuple[int, int]]:
    """Each label's longest stretch where no one else talks, cut to :data:`CLIP_MAX_MS`
    (only stretches of at least :data:`CLIP_MIN_MS`)."""
    best: dict[str, tuple[int, int]] = {}
    ordered = sorted(turns, key=lambda t: t.start_ms)
    for t in ordered:
        lo, hi = t.start_ms, t.end_ms
        for o in ordered:
            if o.speaker == t.speaker or o.end_ms <= lo or o.start_ms >= hi:
                continue
            # Keep the longer side of the other's turn.
            left, right = (lo, o.start_ms), (o.end_ms, hi)
            lo, hi = max(left, right, key=lambda r: r[1] - r[0])
            if hi <= lo:
                break
        if hi - lo < CLIP_MIN_MS:
            continue
        hi = min(hi, lo + CLIP_MAX_MS)
        old = best.get(t.speaker)
        if old is None or hi - lo > old[1] - old[0]:
            best[t.speaker] = (lo, hi)
    return best


def choose_references(turns: Sequence[Turn], named: Sequence[str], *,
                      clips: dict[str, tuple[int, int]]) -> list[str]:
    """The labels to send as known speakers with the next chunk, at most :data:`MAX_KNOWN`:
    stored known speakers first, then the session's labels that have a clip, those who
    spoke most recently first."""
    chosen = list(named)[:MAX_KNOWN]
    last: dict[str, int] = {}
    for t in turns:
        last[t.speaker] = max(last.get(t.speaker, 0), t.end_ms)
    for label in sorted(last, key=lambda s: -last[s]):
        if len(chosen) >= MAX_KNOWN:
            break
        if label not in chosen and label in clips:
            chosen.append(label)
    return chosen
