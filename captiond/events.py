"""The transcript events every engine emits, and the line updates the reconciler makes of them.

Engines (local whisper, OpenAI realtime, OpenAI translate) speak only these four events::

    ItemCommitted   an utterance was cut: its id, the id before it, its place in the audio stream
    ItemPartial     the text so far for an item (replaces earlier partial text)
    ItemCompleted   the final text, optionally with word timings
    ItemFailed      the item will get no text; it settles its slot so later lines flow

They may arrive in any order and more than once (the OpenAI service sends deltas before
``committed`` and completions out of order). :mod:`captiond.transcript.reconciler` turns them
into :class:`LineUpdate` values in transcript order; the store, the terminal, the overlay feed
and the live subtitle writer all consume those updates and nothing else.

Besides the events, engines report what they could not caption: a :class:`Gap` (speech lost,
e.g. an outage buffer overflowing) and a :class:`DroppedUtterance` (an utterance cut and then
given no text, and why). Both live here, below the engines and the protocol cores, so the
:class:`~captiond.engines.base.Engine` protocol names them without importing any engine.

Times are milliseconds from the start of the captiond session's audio stream, so subtitles line
up with a recording started together with the session.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Union

#: The track of the spoken-language transcript; translations use their language code.
ORIGINAL = "original"


@dataclass(frozen=True, slots=True)
class Word:
    """One word with its place in the stream (ms) and the engine's confidence (0..1)."""

    text: str
    start_ms: int
    end_ms: int
    probability: float = 1.0


@dataclass(frozen=True, slots=True)
class ItemCommitted:
    """An utterance was committed: it follows ``previous_item_id`` (None: first of its chain)."""

    item_id: str
    previous_item_id: str | None
    audio_start_ms: int
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class ItemPartial:
    """Text so far for an item. ``stable`` is how many leading characters will not change."""

    item_id: str
    text: str
    stable: int = 0


@dataclass(frozen=True, slots=True)
class ItemCompleted:
    """The final text of an item."""

    item_id: str
    text: str
    words: tuple[Word, ...] = ()
    language: str | None = None


@dataclass(frozen=True, slots=True)
class ItemFailed:
    """The item will get no text (engine error, timeout, or audio lost)."""

    item_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class DroppedUtterance:
    """Audio an engine cut as an utterance and then gave no text (or trimmed), and why."""

    item_id: str
    start_ms: int
    end_ms: int
    #: noise (too little speech), no_speech, phantom, repetition, punctuation, empty, and
    #: trimmed_* for a piece cut from a line that kept its text (trimmed_overlap, ...)
    reason: str
    text: str = ""


TranscriptEvent = Union[ItemCommitted, ItemPartial, ItemCompleted, ItemFailed]


@dataclass(frozen=True, slots=True)
class Gap:
    """Speech that was not transcribed, in stream milliseconds."""

    start_ms: int
    end_ms: int
    reason: str


class LineStatus(str, enum.Enum):
    PARTIAL = "partial"
    FINAL = "final"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Line:
    """One caption line as the store, the feed and the exports see it.

    ``seq`` is the line's position in its chain (0, 1, 2, ...); lines of different channels
    interleave by ``audio_start_ms``.
    """

    item_id: str
    previous_item_id: str | None
    seq: int
    audio_start_ms: int
    audio_end_ms: int
    text: str
    status: LineStatus
    stable: int = 0
    words: tuple[Word, ...] = ()
    language: str | None = None
    error: str | None = None
    # Set by the pipeline that owns the chain, not by the reconciler's events.
    channel: str = ""
    speaker: str | None = None
    track: str = ORIGINAL
    engine: str = ""


class UpdateKind(str, enum.Enum):
    ADDED = "added"  # the line has a place in the transcript for the first time
    UPDATED = "updated"  # partial text or times changed
    FINALISED = "finalised"  # final text (or failure) is known; the line will not change again
    REMOVED = "removed"  # the line is gone (e.g. a final with no text: silence, hallucination)


@dataclass(frozen=True, slots=True)
class LineUpdate:
    kind: UpdateKind
    line: Line
    session_id: int | None = field(default=None)
