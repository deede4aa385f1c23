"""Echo guard for the two-sided call: drop "Me" lines that are the speakers heard by the mic.

Without a headset the microphone picks up what the speakers play, so the mic channel
transcribes the other side a second time. :class:`EchoGuard` sits between the reconcilers and
the store: a final mic line whose words match a final system line close to it in time is
turned into a removal (stored with no text, so no export shows it). Either line may be
final first, so the guard checks both ways and keeps a short, bounded memory of each side.

Pure: no clock, no I/O; times are the lines' positions on the stream clock.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass, replace
from difflib import SequenceMatcher

from captiond.events import Line, LineStatus, LineUpdate, UpdateKind

#: Lines of each side remembered for matching (older ones are forgotten first).
MEMORY_LINES = 64
#: Mic lines shorter than this (in words) must equal a system line to count as echo: a short
#: "yes" or "okay" is too common to drop on a partial match.
MIN_FUZZY_WORDS = 3
#: Why a removed line is gone (stored in its ``error`` column).
ECHO_REASON = "echo of system audio"

_WORD_RE = re.compile(r"[\w']+")


def words(text: str) -> list[str]:
    """Lowercased words without punctuation."""
    return [w.strip("'") for w in _WORD_RE.findall(text.lower()) if w.strip("'")]


def echo_score(mine: list[str], theirs: list[str]) -> float:
    """Share of the mic line's words found, in order, in the system line (0..1)."""
    if not mine or not theirs:
        return 0.0
    if len(mine) < MIN_FUZZY_WORDS:
        return 1.0 if mine == theirs else 0.0
    blocks = SequenceMatcher(None, mine, theirs, autojunk=False).get_matching_blocks()
    return sum(b.size for b in blocks) / len(mine)


def near(a: Line, b: Line, window_ms: int) -> bool:
    """The two lines' audio spans overlap, or lie at most ``window_ms`` apart."""
    gap = max(a.audio_start_ms - b.audio_end_ms, b.audio_start_ms - a.audio_end_ms)
    return gap <= window_ms


def is_echo(mine: Line, theirs: Line, *, window_ms: int, threshold: float) -> bool:
    """Whether mic line ``mine`` repeats system line ``theirs`` (close in time, same words)."""
    return near(mine, theirs, window_ms) and echo_score(words(mine.text), words(theirs.text)) >= threshold


@dataclass
class EchoGuard:
    """Filters line updates: ``guard(update) -> updates to deliver instead``."""

    me_channel: str
    them_channel: str
    window_ms: int
    threshold: float
    dropped: int = 0

    def __post_init__(self) -> None:
        self._mine: deque[Line] = deque(maxlen=MEMORY_LINES)
        self._theirs: deque[Line] = deque(maxlen=MEMORY_LINES)

    def _removal(self, line: Line) -> LineUpdate:
        self.dropped += 1
        gone = replace(line, text="", words=(), error=ECHO_REASON)
        return LineUpdate(UpdateKind.REMOVED, gone)

    def __call__(self, update: LineUpdate) -> list[LineUpdate]:
        line = update.line
        final = (
            line.status is LineStatus.FINAL
            and update.kind is not UpdateKind.REMOVED
            and bool(line.text)
        )
        if not final:
            return [update]
        if line.channel == self.me_channel:
            for theirs in self._theirs:
                if is_echo(line, theirs, window_ms=self.window_ms, threshold=self.threshold):
                    return [self._removal(line)]
            self._mine.append(line)
            return [update]
        if line.channel == self.them_channel:
            self._theirs.append(line)
            out = [update]
            for mine in list(self._mine):
                if is_echo(mine, line, window_ms=self.window_ms, threshold=self.threshold):
                    self._mine.remove(mine)
                    out.append(self._removal(mine))
            return out
        return [update]
