"""What a person at a terminal sees of a running session: finals as lines, the partial being
spoken on one live line, and the daemon's status line while nobody speaks."""

from __future__ import annotations

import contextlib
import os
from typing import TextIO

from captiond.events import LineStatus, LineUpdate, UpdateKind
from captiond.timefmt import clock


def format_clock(ms: int) -> str:
    """``01:02:03`` (the shared formatter)."""
    return clock(ms)


class TerminalView:
    """Finals as lines on ``out``; on a terminal, the partial being spoken on one live line."""

    def __init__(self, out: TextIO, *, live: bool | None = None) -> None:
        self.out = out
        self.live = out.isatty() if live is None else live
        self._partial_shown = False
        self._status_shown = False

    def __call__(self, update: LineUpdate) -> None:
        line = update.line
        if line.track != "original":
            return
        who = f"{line.speaker}: " if line.speaker else ""
        if line.status is LineStatus.FINAL and update.kind is not UpdateKind.REMOVED:
            if line.text:
                self._clear()
                self.out.write(f"[{format_clock(line.audio_start_ms)}] {who}{line.text}\n")
                self.out.flush()
        elif update.kind is UpdateKind.REMOVED:
            self._clear()
        elif self.live and line.status is LineStatus.PARTIAL and line.text:
            width = self._width()
            text = f"… {who}{line.text}"
            if len(text) > width:
                text = "…" + text[-(width - 1) :]
            self.out.write("\r\033[K" + text)
            self.out.flush()
            self._partial_shown = True

    def status(self, text: str) -> None:
        """On a terminal, the daemon's status line (engine, lag, cost) while nobody speaks."""
        if self.live and not self._partial_shown:
            self.out.write("\r\033[K\033[2m" + text[: self._width()] + "\033[0m")
            self.out.flush()
            self._status_shown = True

    def _width(self) -> int:
        with contextlib.suppress(OSError, ValueError):
            return os.get_terminal_size(self.out.fileno()).columns - 1
        return 100

    def _clear(self) -> None:
        if self._partial_shown or self._status_shown:
            self.out.write("\r\033[K")
            self._partial_shown = self._status_shown = False
