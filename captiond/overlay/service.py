"""The overlay as a daemon service: started with ``captiond run``, closed at shutdown.

:func:`overlay_service` is one of :func:`captiond.daemon.default_services`. It serves the
daemon's own :class:`~captiond.feed.Feed` and the JSON API the daemon mounts; batch runs
(``transcribe``, ``run --fast``) do not start it, so they never compete for the port with a
running daemon.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from captiond.overlay.server import HttpHandler, OverlayServer

if TYPE_CHECKING:
    from captiond.daemon import Daemon


def daemon_status(daemon: Daemon) -> dict[str, Any]:
    """The public part of the daemon's status (numbers and names, never sources or paths)."""
    stats = daemon.stats()
    session = daemon.session
    names = sorted({s.engine.name for s in session.streams}) if session is not None else []
    status = {
        "state": "captioning" if session is not None and session.session_id else "starting",
        "engine": ",".join(names) or None,
        "session": stats.get("session"),
        "uptime_s": stats.get("uptime_s"),
        "audio_s": stats.get("audio_s"),
        "finals": stats.get("finals"),
        "lag_s": stats.get("lag_s"),
    }
    # The caption outputs in one line, when there are any: "obs ok, youtube failing (HTTP 503)".
    summary = daemon.outputs.summary() if daemon.outputs is not None else ""
    if summary:
        status["outputs_summary"] = summary
    return status


def overlay_service(
    daemon: Daemon, http_handlers: dict[str, HttpHandler] | None = None
) -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]] | None:
    """``(start, close)`` for the overlay server of a live daemon, or None when not wanted."""
    if not daemon.cfg["overlay.enabled"] or not daemon.realtime:
        return None
    handlers = http_handlers if http_handlers is not None else getattr(daemon, "http_handlers", None)
    server = OverlayServer(daemon.cfg, daemon.feed, lambda: daemon_status(daemon), handlers)
    daemon.overlay = server  # type: ignore[attr-defined]  # for status lines and tests
    return server.start, server.close
