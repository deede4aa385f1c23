"""The terminal view: finals as lines, the partial and the status on one live line."""

from __future__ import annotations

import io

from captiond.daemon import TerminalView
from captiond.events import Line, LineStatus, LineUpdate, UpdateKind


def update(kind: UpdateKind, text: str, status: LineStatus, speaker: str | None = None) -> LineUpdate:
    return LineUpdate(kind, Line("a", None, 0, 61_000, 62_000, text, status, speaker=speaker))


def test_partial_then_final_then_status() -> None:
    """A partial is drawn in place, the final replaces it as a timestamped line, and the status
    line only shows while nobody speaks."""
    out = io.StringIO()
    view = TerminalView(out, live=True)
    view(update(UpdateKind.ADDED, "hello wor", LineStatus.PARTIAL, "Me"))
    view.status("captioning: engine local")  # a partial is showing: the status waits
    assert out.getvalue() == "\r\033[K… Me: hello wor"
    view(update(UpdateKind.FINALISED, "Hello world.", LineStatus.FINAL, "Me"))
    assert out.getvalue().endswith("\r\033[K[00:01:01] Me: Hello world.\n")
    view.status("captioning: engine local, $0.002")
    assert out.getvalue().endswith("\033[2mcaptioning: engine local, $0.002\033[0m")


def test_not_a_terminal_prints_finals_only() -> None:
    """Piped output gets finals only: no partials, no status, no escape codes."""
    out = io.StringIO()
    view = TerminalView(out, live=False)
    view(update(UpdateKind.ADDED, "hello wor", LineStatus.PARTIAL))
    view.status("captioning")
    view(update(UpdateKind.FINALISED, "Hello world.", LineStatus.FINAL))
    view(update(UpdateKind.REMOVED, "", LineStatus.FINAL))
    assert out.getvalue() == "[00:01:01] Hello world.\n"
